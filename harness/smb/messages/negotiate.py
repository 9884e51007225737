"""NEGOTIATE request/response (§2.2.3, §2.2.4) and the 3.1.1 negotiate contexts (§2.2.3.1, §2.2.4.1).

Contexts are 8-byte aligned relative to the SMB2 header; the last one is not padded.  Unknown context
types are kept as :class:`RawNegotiateContext` because §3.3.5.4 / §3.2.5.2 require receivers to ignore
them, not to fail.  This module only encodes; which contexts are *allowed* where (counts,
duplicates, responses only to what was asked: §3.3.5.4) is the state machines' job.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar

from ..constants import Command, Dialect, NegotiateContextType
from ..errors import malformed
from ..wire import (
    HEADER_SIZE,
    U16,
    U32,
    U64,
    ZERO16,
    Bytes16,
    Utf16,
    body_slice,
    check_structure_size,
    decode_utf16,
    encode_utf16,
    pad8,
    take,
    unpack_from,
)
from .base import Message, register

_CTX_HEADER = struct.Struct("<HHI")


class NegotiateContext:
    """Base of typed contexts: subclasses define CONTEXT_TYPE, pack_data and unpack_data."""

    CONTEXT_TYPE: ClassVar[int]

    @property
    def context_type(self) -> int:
        return self.CONTEXT_TYPE

    def pack_data(self) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def unpack_data(cls, data: bytes) -> NegotiateContext:  # pragma: no cover - abstract
        raise NotImplementedError


def _u16_list(data: bytes, offset: int, count: int, what: str) -> list[int]:
    raw = take(data, offset, 2 * count, what)
    if len(raw) != 2 * count:
        raise malformed(f"{what}: {count} ids announced, fewer present")
    return list(struct.unpack(f"<{count}H", raw))


@dataclass
class PreauthIntegrityCapabilities(NegotiateContext):
    """§2.2.3.1.1: HashAlgorithmCount(2) SaltLength(2) HashAlgorithms[] Salt."""

    CONTEXT_TYPE: ClassVar[int] = NegotiateContextType.PREAUTH_INTEGRITY_CAPABILITIES
    hash_algorithms: list[U16] = field(default_factory=lambda: [1])
    salt: bytes = b""

    def pack_data(self) -> bytes:
        return (struct.pack("<HH", len(self.hash_algorithms), len(self.salt))
                + struct.pack(f"<{len(self.hash_algorithms)}H", *self.hash_algorithms) + self.salt)

    @classmethod
    def unpack_data(cls, data: bytes) -> PreauthIntegrityCapabilities:
        count, salt_length = unpack_from(_HH, data, 0, "PREAUTH_INTEGRITY_CAPABILITIES")
        algorithms = _u16_list(data, 4, count, "PREAUTH_INTEGRITY_CAPABILITIES")
        salt = take(data, 4 + 2 * count, salt_length, "PREAUTH_INTEGRITY_CAPABILITIES salt")
        return cls(algorithms, salt)


@dataclass
class EncryptionCapabilities(NegotiateContext):
    """§2.2.3.1.2: CipherCount(2) Ciphers[] in preference order; a response carries one (0 = none)."""

    CONTEXT_TYPE: ClassVar[int] = NegotiateContextType.ENCRYPTION_CAPABILITIES
    ciphers: list[U16] = field(default_factory=list)

    def pack_data(self) -> bytes:
        return struct.pack(f"<H{len(self.ciphers)}H", len(self.ciphers), *self.ciphers)

    @classmethod
    def unpack_data(cls, data: bytes) -> EncryptionCapabilities:
        (count,) = unpack_from(_H, data, 0, "ENCRYPTION_CAPABILITIES")
        return cls(_u16_list(data, 2, count, "ENCRYPTION_CAPABILITIES"))


@dataclass
class CompressionCapabilities(NegotiateContext):
    """§2.2.3.1.3: CompressionAlgorithmCount(2) Padding(2) Flags(4) CompressionAlgorithms[]."""

    CONTEXT_TYPE: ClassVar[int] = NegotiateContextType.COMPRESSION_CAPABILITIES
    algorithms: list[U16] = field(default_factory=list)
    flags: U32 = 0

    def pack_data(self) -> bytes:
        return struct.pack(f"<HHI{len(self.algorithms)}H", len(self.algorithms), 0, self.flags, *self.algorithms)

    @classmethod
    def unpack_data(cls, data: bytes) -> CompressionCapabilities:
        count, _padding, flags = unpack_from(_HHI, data, 0, "COMPRESSION_CAPABILITIES")
        return cls(_u16_list(data, 8, count, "COMPRESSION_CAPABILITIES"), flags)


@dataclass
class NetnameContext(NegotiateContext):
    """§2.2.3.1.4: the server name the client connects to, UTF-16LE without NUL."""

    CONTEXT_TYPE: ClassVar[int] = NegotiateContextType.NETNAME_NEGOTIATE_CONTEXT_ID
    net_name: Utf16 = ""

    def pack_data(self) -> bytes:
        return encode_utf16(self.net_name)

    @classmethod
    def unpack_data(cls, data: bytes) -> NetnameContext:
        return cls(decode_utf16(data, "NETNAME_NEGOTIATE_CONTEXT_ID"))


@dataclass
class TransportCapabilities(NegotiateContext):
    """§2.2.3.1.5: Flags(4), 0x1 = SMB2_ACCEPT_TRANSPORT_LEVEL_SECURITY (QUIC only)."""

    CONTEXT_TYPE: ClassVar[int] = NegotiateContextType.TRANSPORT_CAPABILITIES
    flags: U32 = 0

    def pack_data(self) -> bytes:
        return struct.pack("<I", self.flags)

    @classmethod
    def unpack_data(cls, data: bytes) -> TransportCapabilities:
        return cls(unpack_from(_I, data, 0, "TRANSPORT_CAPABILITIES")[0])


@dataclass
class RdmaTransformCapabilities(NegotiateContext):
    """§2.2.3.1.6: TransformCount(2) Reserved1(2) Reserved2(4) RDMATransformIds[]."""

    CONTEXT_TYPE: ClassVar[int] = NegotiateContextType.RDMA_TRANSFORM_CAPABILITIES
    transform_ids: list[U16] = field(default_factory=list)

    def pack_data(self) -> bytes:
        return struct.pack(f"<HHI{len(self.transform_ids)}H", len(self.transform_ids), 0, 0, *self.transform_ids)

    @classmethod
    def unpack_data(cls, data: bytes) -> RdmaTransformCapabilities:
        count, _r1, _r2 = unpack_from(_HHI, data, 0, "RDMA_TRANSFORM_CAPABILITIES")
        return cls(_u16_list(data, 8, count, "RDMA_TRANSFORM_CAPABILITIES"))


@dataclass
class SigningCapabilities(NegotiateContext):
    """§2.2.3.1.7: SigningAlgorithmCount(2) SigningAlgorithms[] in preference order."""

    CONTEXT_TYPE: ClassVar[int] = NegotiateContextType.SIGNING_CAPABILITIES
    algorithms: list[U16] = field(default_factory=list)

    def pack_data(self) -> bytes:
        return struct.pack(f"<H{len(self.algorithms)}H", len(self.algorithms), *self.algorithms)

    @classmethod
    def unpack_data(cls, data: bytes) -> SigningCapabilities:
        (count,) = unpack_from(_H, data, 0, "SIGNING_CAPABILITIES")
        return cls(_u16_list(data, 2, count, "SIGNING_CAPABILITIES"))


@dataclass
class RawNegotiateContext:
    """A context of a type this codec does not know; kept byte for byte (§3.3.5.4: ignore, don't fail)."""

    context_type: U16
    data: bytes = b""

    def pack_data(self) -> bytes:
        return self.data


NEGOTIATE_CONTEXT_TYPES: dict[int, type[NegotiateContext]] = {
    cls.CONTEXT_TYPE: cls
    for cls in (PreauthIntegrityCapabilities, EncryptionCapabilities, CompressionCapabilities, NetnameContext,
                TransportCapabilities, RdmaTransformCapabilities, SigningCapabilities)
}

AnyNegotiateContext = (PreauthIntegrityCapabilities | EncryptionCapabilities | CompressionCapabilities
                       | NetnameContext | TransportCapabilities | RdmaTransformCapabilities
                       | SigningCapabilities | RawNegotiateContext)


def pack_negotiate_contexts(contexts: list) -> bytes:
    """The context list, each entry but the last padded to 8 bytes (§2.2.3.1).  The caller places
    it at an 8-aligned offset."""
    out = bytearray()
    for index, context in enumerate(contexts):
        data = context.pack_data()
        if len(data) > 0xFFFF:
            raise ValueError("negotiate context data longer than 65535 bytes")
        out += _CTX_HEADER.pack(context.context_type, len(data), 0) + data
        if index != len(contexts) - 1:
            out += bytes(pad8(len(out)))
    return bytes(out)


def unpack_negotiate_contexts(buf: bytes, offset: int, count: int, what: str) -> list:
    """Decode ``count`` contexts starting at ``offset`` of ``buf`` (buf and offset share an origin)."""
    contexts: list = []
    position = offset
    for index in range(count):
        if index:
            position += pad8(position - offset)
        context_type, length, _reserved = unpack_from(_CTX_HEADER, buf, position, f"{what} context")
        data = take(buf, position + _CTX_HEADER.size, length, f"{what} context data")
        if len(data) != length:
            raise malformed(f"{what}: negotiate context data overruns the message")
        cls = NEGOTIATE_CONTEXT_TYPES.get(context_type)
        contexts.append(cls.unpack_data(data) if cls else RawNegotiateContext(context_type, data))
        position += _CTX_HEADER.size + length
    return contexts


_H = struct.Struct("<H")
_I = struct.Struct("<I")
_HH = struct.Struct("<HH")
_HHI = struct.Struct("<HHI")
_REQUEST = struct.Struct("<HHHHI16sIHH")
_RESPONSE = struct.Struct("<HHHH16sIIIIQQHHI")


@register
@dataclass
class NegotiateRequest(Message):
    """§2.2.3.  Bytes 28..35 are NegotiateContextOffset/Count/Reserved2 when 0x0311 is offered,
    else ClientStartTime (kept in ``client_start_time``)."""

    COMMAND: ClassVar[int] = Command.NEGOTIATE
    IS_RESPONSE: ClassVar[bool] = False
    STRUCTURE_SIZE: ClassVar[int] = 36

    dialects: list[U16] = field(default_factory=list)
    security_mode: U16 = 0
    capabilities: U32 = 0
    client_guid: Bytes16 = ZERO16
    contexts: list[AnyNegotiateContext] = field(default_factory=list)
    client_start_time: U64 = 0

    @property
    def offers_311(self) -> bool:
        return Dialect.SMB_3_1_1 in self.dialects

    def pack(self) -> bytes:
        dialects = struct.pack(f"<{len(self.dialects)}H", *self.dialects)
        fixed_end = self.STRUCTURE_SIZE + len(dialects)
        if self.offers_311:
            contexts = pack_negotiate_contexts(self.contexts)
            padding = bytes(pad8(HEADER_SIZE + fixed_end)) if contexts else b""
            offset = HEADER_SIZE + fixed_end + len(padding) if contexts else 0
            tail = struct.pack("<IHH", offset, len(self.contexts), 0)
        else:
            if self.contexts:
                raise ValueError("negotiate contexts need dialect 0x0311 in the list (§2.2.3)")
            contexts = padding = b""
            tail = struct.pack("<Q", self.client_start_time)
        fixed = struct.pack("<HHHHI16s", self.STRUCTURE_SIZE, len(self.dialects), self.security_mode, 0,
                            self.capabilities, self.client_guid)
        return fixed + tail + dialects + padding + contexts

    @classmethod
    def unpack(cls, body: bytes) -> NegotiateRequest:
        check_structure_size(body, cls.STRUCTURE_SIZE, "NEGOTIATE request")
        _, count, security_mode, _r, capabilities, guid, ctx_offset, ctx_count, _r2 = unpack_from(
            _REQUEST, body, 0, "NEGOTIATE request")
        dialects = _u16_list(body, 36, count, "NEGOTIATE request dialects")
        request = cls(dialects, security_mode, capabilities, guid)
        if request.offers_311:
            if ctx_count:
                request.contexts = unpack_negotiate_contexts(
                    body, _context_start(ctx_offset, 36 + 2 * count, "NEGOTIATE request"), ctx_count,
                    "NEGOTIATE request")
        else:
            request.client_start_time = struct.unpack_from("<Q", body, 28)[0]
        return request


def _context_start(offset: int, fixed_end: int, what: str) -> int:
    relative = offset - HEADER_SIZE
    if relative < fixed_end:
        raise malformed(f"{what}: NegotiateContextOffset {offset} overlaps the fixed part")
    if offset % 8:
        raise malformed(f"{what}: NegotiateContextOffset {offset} is not 8-byte aligned")
    return relative


@register
@dataclass
class NegotiateResponse(Message):
    """§2.2.4.  NegotiateContextCount/Offset are meaningful only when DialectRevision is 0x0311."""

    COMMAND: ClassVar[int] = Command.NEGOTIATE
    IS_RESPONSE: ClassVar[bool] = True
    STRUCTURE_SIZE: ClassVar[int] = 65

    dialect_revision: U16 = 0
    security_mode: U16 = 0
    server_guid: Bytes16 = ZERO16
    capabilities: U32 = 0
    max_transact_size: U32 = 0
    max_read_size: U32 = 0
    max_write_size: U32 = 0
    system_time: U64 = 0
    server_start_time: U64 = 0
    security_buffer: bytes = b""
    contexts: list[AnyNegotiateContext] = field(default_factory=list)

    def pack(self) -> bytes:
        security_offset = HEADER_SIZE + 64
        out = bytearray(_RESPONSE.size)
        out += self.security_buffer
        if self.dialect_revision == Dialect.SMB_3_1_1 and self.contexts:
            out += bytes(pad8(HEADER_SIZE + len(out)))
            context_offset = HEADER_SIZE + len(out)
            out += pack_negotiate_contexts(self.contexts)
        elif self.contexts:
            raise ValueError("negotiate contexts need DialectRevision 0x0311 (§2.2.4)")
        else:
            context_offset = 0
            if not self.security_buffer:
                out += b"\x00"  # StructureSize 65 counts one byte of Buffer
        _RESPONSE.pack_into(out, 0, self.STRUCTURE_SIZE, self.security_mode, self.dialect_revision,
                            len(self.contexts), self.server_guid, self.capabilities, self.max_transact_size,
                            self.max_read_size, self.max_write_size, self.system_time, self.server_start_time,
                            security_offset, len(self.security_buffer), context_offset)
        return bytes(out)

    @classmethod
    def unpack(cls, body: bytes) -> NegotiateResponse:
        check_structure_size(body, cls.STRUCTURE_SIZE, "NEGOTIATE response")
        (_, security_mode, dialect, ctx_count, guid, capabilities, max_transact, max_read, max_write,
         system_time, start_time, sec_offset, sec_length, ctx_offset) = unpack_from(
            _RESPONSE, body, 0, "NEGOTIATE response")
        security = body_slice(body, sec_offset, sec_length, "NEGOTIATE response security buffer", 64)
        response = cls(dialect, security_mode, guid, capabilities, max_transact, max_read, max_write,
                       system_time, start_time, security)
        if dialect == Dialect.SMB_3_1_1 and ctx_count:
            response.contexts = unpack_negotiate_contexts(
                body, _context_start(ctx_offset, 64, "NEGOTIATE response"), ctx_count, "NEGOTIATE response")
        return response
