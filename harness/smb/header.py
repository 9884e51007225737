"""SMB2 packet headers: the 64-byte sync/async header (§2.2.1), TRANSFORM_HEADER (§2.2.41) and
COMPRESSION_TRANSFORM_HEADER (§2.2.42, parsed only).

The SYNC and ASYNC forms differ only in bytes 32..39 (Reserved+TreeId vs AsyncId), selected by
SMB2_FLAGS_ASYNC_COMMAND; one dataclass holds both and packs whichever the flag selects.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .constants import PROTOCOL_ID_COMPRESSION, PROTOCOL_ID_SMB2, PROTOCOL_ID_TRANSFORM, HeaderFlags
from .errors import malformed
from .wire import U16, U32, U64, ZERO16, Bytes16, take, unpack_from

HEADER_SIZE = 64
TRANSFORM_HEADER_SIZE = 52
SIGNATURE_OFFSET = 48

_SYNC = struct.Struct("<4sHHIHHIIQIIQ16s")
_ASYNC = struct.Struct("<4sHHIHHIIQQQ16s")


@dataclass
class Header:
    """SMB2 packet header.  ``status`` holds bytes 8..11: Status in responses and 2.x requests,
    ChannelSequence(2)+Reserved(2) in 3.x requests (see :attr:`channel_sequence`)."""

    command: U16
    status: U32 = 0
    credit_charge: U16 = 0
    credits: U16 = 0  # CreditRequest in requests, CreditResponse in responses
    flags: U32 = 0
    next_command: U32 = 0
    message_id: U64 = 0
    process_id: U32 = 0  # SYNC only (Reserved; 0xFEFF by Windows clients)
    tree_id: U32 = 0  # SYNC only
    async_id: U64 = 0  # ASYNC only
    session_id: U64 = 0
    signature: Bytes16 = field(default=ZERO16)

    @property
    def is_async(self) -> bool:
        return bool(self.flags & HeaderFlags.ASYNC_COMMAND)

    @property
    def is_response(self) -> bool:
        return bool(self.flags & HeaderFlags.SERVER_TO_REDIR)

    @property
    def is_signed(self) -> bool:
        return bool(self.flags & HeaderFlags.SIGNED)

    @property
    def is_related(self) -> bool:
        return bool(self.flags & HeaderFlags.RELATED_OPERATIONS)

    @property
    def channel_sequence(self) -> int:
        """ChannelSequence of a 3.x request (§2.2.1.2): the low 16 bits of bytes 8..11."""
        return self.status & 0xFFFF

    @property
    def priority(self) -> int:
        """3.1.1 I/O priority 0..7 (§2.2.1.2, SMB2_FLAGS_PRIORITY_MASK)."""
        return (self.flags & HeaderFlags.PRIORITY_MASK) >> 4

    def pack(self) -> bytes:
        if len(self.signature) != 16:
            raise ValueError("signature must be 16 bytes")
        if self.is_async:
            return _ASYNC.pack(PROTOCOL_ID_SMB2, HEADER_SIZE, self.credit_charge, self.status, self.command,
                               self.credits, self.flags, self.next_command, self.message_id, self.async_id,
                               self.session_id, self.signature)
        return _SYNC.pack(PROTOCOL_ID_SMB2, HEADER_SIZE, self.credit_charge, self.status, self.command,
                          self.credits, self.flags, self.next_command, self.message_id, self.process_id,
                          self.tree_id, self.session_id, self.signature)

    @classmethod
    def unpack(cls, buf: bytes) -> Header:
        """Decode the header at the start of ``buf`` (which may hold more: the body, a compound).

        Checks ProtocolId, StructureSize and that NextCommand is 8-aligned and inside ``buf``
        (§3.3.5.2.7: a misaligned compound element is an error; §3.2.5.1.9 for responses).
        """
        if len(buf) < HEADER_SIZE:
            raise malformed(f"SMB2 header: {len(buf)} bytes, need {HEADER_SIZE}")
        protocol = bytes(buf[:4])
        if protocol != PROTOCOL_ID_SMB2:
            raise malformed(f"SMB2 header: ProtocolId {protocol.hex()} is not fe534d42")
        flags = unpack_from(struct.Struct("<I"), buf, 16, "SMB2 header")[0]
        if flags & HeaderFlags.ASYNC_COMMAND:
            (_, size, charge, status, command, credits, flags, next_command, message_id, async_id,
             session_id, signature) = _ASYNC.unpack_from(buf, 0)
            process_id = tree_id = 0
        else:
            (_, size, charge, status, command, credits, flags, next_command, message_id, process_id,
             tree_id, session_id, signature) = _SYNC.unpack_from(buf, 0)
            async_id = 0
        if size != HEADER_SIZE:
            raise malformed(f"SMB2 header: StructureSize {size}, expected 64")
        if next_command:
            if next_command % 8:
                raise malformed(f"SMB2 header: NextCommand {next_command} is not 8-byte aligned")
            if next_command < HEADER_SIZE or next_command > len(buf):
                raise malformed(f"SMB2 header: NextCommand {next_command} points outside the {len(buf)}-byte buffer")
        return cls(command=command, status=status, credit_charge=charge, credits=credits, flags=flags,
                   next_command=next_command, message_id=message_id, process_id=process_id, tree_id=tree_id,
                   async_id=async_id, session_id=session_id, signature=signature)


_TRANSFORM = struct.Struct("<4s16s16sIHHQ")


@dataclass
class TransformHeader:
    """SMB2 TRANSFORM_HEADER (§2.2.41).  ``nonce`` is the full 16-byte field: CCM uses the first 11
    bytes, GCM the first 12; the rest is reserved and zero.  ``flags`` is Flags (3.1.1) /
    EncryptionAlgorithm (3.0.x), 0x0001 in both cases."""

    signature: Bytes16 = field(default=ZERO16)
    nonce: Bytes16 = field(default=ZERO16)
    original_message_size: U32 = 0
    flags: U16 = 1
    session_id: U64 = 0
    reserved: U16 = 0

    def pack(self) -> bytes:
        return _TRANSFORM.pack(PROTOCOL_ID_TRANSFORM, self.signature, self.nonce, self.original_message_size,
                               self.reserved, self.flags, self.session_id)

    def aad(self) -> bytes:
        """The associated data of the AEAD: bytes 20..51, Nonce through SessionId (§3.1.4.3)."""
        return self.pack()[20:TRANSFORM_HEADER_SIZE]

    @classmethod
    def unpack(cls, buf: bytes) -> TransformHeader:
        protocol, signature, nonce, size, reserved, flags, session_id = unpack_from(
            _TRANSFORM, buf, 0, "TRANSFORM_HEADER")
        if protocol != PROTOCOL_ID_TRANSFORM:
            raise malformed(f"TRANSFORM_HEADER: ProtocolId {protocol.hex()} is not fd534d42")
        return cls(signature=signature, nonce=nonce, original_message_size=size, flags=flags,
                   session_id=session_id, reserved=reserved)


_COMPRESSION = struct.Struct("<4sIHHI")
_PAYLOAD = struct.Struct("<HHI")
COMPRESSION_FLAG_CHAINED = 0x0001


@dataclass
class CompressedPayload:
    """One chained payload (§2.2.42.2.1): its algorithm, flags and raw bytes (still compressed)."""

    algorithm: U16
    flags: U16
    data: bytes


@dataclass
class CompressionTransformHeader:
    """SMB2 COMPRESSION_TRANSFORM_HEADER (§2.2.42), decoded but not decompressed.

    Unchained: ``offset`` bytes of uncompressed data follow the header, then the compressed part
    (``payload``).  Chained: ``payloads`` lists the chained payload headers with their data."""

    original_size: U32
    algorithm: U16
    flags: U16
    offset: U32 = 0
    payload: bytes = b""
    payloads: list[CompressedPayload] = field(default_factory=list)

    @property
    def chained(self) -> bool:
        return bool(self.flags & COMPRESSION_FLAG_CHAINED)

    @classmethod
    def unpack(cls, buf: bytes) -> CompressionTransformHeader:
        protocol, original, algorithm, flags, offset_or_length = unpack_from(
            _COMPRESSION, buf, 0, "COMPRESSION_TRANSFORM_HEADER")
        if protocol != PROTOCOL_ID_COMPRESSION:
            raise malformed(f"COMPRESSION_TRANSFORM_HEADER: ProtocolId {protocol.hex()} is not fc534d42")
        if not flags & COMPRESSION_FLAG_CHAINED:
            if offset_or_length > len(buf) - _COMPRESSION.size:
                raise malformed("COMPRESSION_TRANSFORM_HEADER: Offset past the end of the message")
            return cls(original, algorithm, flags, offset=offset_or_length,
                       payload=bytes(buf[_COMPRESSION.size:]))
        # Chained (§2.2.42.2): the first payload header overlaps the last 8 bytes of the 16-byte header.
        payloads = []
        position = 8
        while position < len(buf):
            alg, pflags, length = unpack_from(_PAYLOAD, buf, position, "compression payload header")
            data = take(buf, position + _PAYLOAD.size, length, "compression payload")
            payloads.append(CompressedPayload(alg, pflags, data))
            position += _PAYLOAD.size + length
        return cls(original, algorithm, flags, payloads=payloads)


def classify(buf: bytes) -> bytes:
    """The ProtocolId of a received SMB message, after checking it is one SMB2 knows."""
    protocol = bytes(buf[:4])
    if protocol not in (PROTOCOL_ID_SMB2, PROTOCOL_ID_TRANSFORM, PROTOCOL_ID_COMPRESSION):
        raise malformed(f"unknown ProtocolId {protocol.hex()}")
    return protocol
