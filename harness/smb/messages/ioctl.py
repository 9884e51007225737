"""IOCTL (§2.2.31, §2.2.32) and the FSCTL payloads the stack needs: VALIDATE_NEGOTIATE_INFO
(§2.2.31.4, §2.2.32.6) and NETWORK_INTERFACE_INFO (§2.2.32.5)."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import ClassVar

from ..constants import Command
from ..errors import malformed
from ..wire import (
    HEADER_SIZE,
    U16,
    U32,
    U64,
    ZERO16,
    Bytes16,
    body_slice,
    check_structure_size,
    pad8,
    take,
    unpack_from,
)
from .base import Message, register

_REQUEST = struct.Struct("<H2xI16sIIIIIII4x")
_RESPONSE = struct.Struct("<H2xI16sIIIII4x")


@register
@dataclass
class IoctlRequest(Message):
    """§2.2.31.  Input at 0x78; the request carries no output buffer (OutputOffset/Count 0).
    Flags 0x1 = SMB2_0_IOCTL_IS_FSCTL."""

    COMMAND: ClassVar[int] = Command.IOCTL
    IS_RESPONSE: ClassVar[bool] = False
    STRUCTURE_SIZE: ClassVar[int] = 57

    ctl_code: U32 = 0
    file_id: Bytes16 = ZERO16
    input: bytes = b""
    max_input_response: U32 = 0
    max_output_response: U32 = 0
    flags: U32 = 1
    output: bytes = b""

    def pack(self) -> bytes:
        start = HEADER_SIZE + _REQUEST.size
        buffer = bytearray(self.input)
        input_offset = start if self.input else 0
        output_offset = 0
        if self.output:
            buffer += bytes(pad8(len(buffer)))
            output_offset = start + len(buffer)
            buffer += self.output
        return _REQUEST.pack(self.STRUCTURE_SIZE, self.ctl_code, self.file_id, input_offset, len(self.input),
                             self.max_input_response, output_offset, len(self.output), self.max_output_response,
                             self.flags) + bytes(buffer or b"\x00")

    @classmethod
    def unpack(cls, body: bytes) -> IoctlRequest:
        check_structure_size(body, cls.STRUCTURE_SIZE, "IOCTL request")
        (_, ctl_code, file_id, in_offset, in_count, max_in, out_offset, out_count, max_out,
         flags) = unpack_from(_REQUEST, body, 0, "IOCTL request")
        data_in = body_slice(body, in_offset, in_count, "IOCTL input", _REQUEST.size)
        data_out = body_slice(body, out_offset, out_count, "IOCTL output", _REQUEST.size)
        return cls(ctl_code, file_id, data_in, max_in, max_out, flags, data_out)


@register
@dataclass
class IoctlResponse(Message):
    """§2.2.32.  Output follows the (usually empty) echoed input, 8-aligned."""

    COMMAND: ClassVar[int] = Command.IOCTL
    IS_RESPONSE: ClassVar[bool] = True
    STRUCTURE_SIZE: ClassVar[int] = 49

    ctl_code: U32 = 0
    file_id: Bytes16 = ZERO16
    output: bytes = b""
    input: bytes = b""
    flags: U32 = 0

    def pack(self) -> bytes:
        start = HEADER_SIZE + _RESPONSE.size
        buffer = bytearray(self.input)
        buffer += bytes(pad8(len(buffer)))
        output_offset = start + len(buffer)
        buffer += self.output
        return _RESPONSE.pack(self.STRUCTURE_SIZE, self.ctl_code, self.file_id, start, len(self.input),
                              output_offset, len(self.output), self.flags) + bytes(buffer or b"\x00")

    @classmethod
    def unpack(cls, body: bytes) -> IoctlResponse:
        check_structure_size(body, cls.STRUCTURE_SIZE, "IOCTL response")
        _, ctl_code, file_id, in_offset, in_count, out_offset, out_count, flags = unpack_from(
            _RESPONSE, body, 0, "IOCTL response")
        data_in = body_slice(body, in_offset, in_count, "IOCTL response input", _RESPONSE.size)
        data_out = body_slice(body, out_offset, out_count, "IOCTL response output", _RESPONSE.size)
        return cls(ctl_code, file_id, data_out, data_in, flags)


@dataclass
class ValidateNegotiateInfoRequest:
    """§2.2.31.4: Capabilities(4) Guid(16) SecurityMode(2) DialectCount(2) Dialects[]: the client's
    NEGOTIATE values, replayed signed so 3.0/3.0.2 can detect a downgrade."""

    capabilities: U32 = 0
    guid: Bytes16 = ZERO16
    security_mode: U16 = 0
    dialects: list[U16] = field(default_factory=list)

    def pack(self) -> bytes:
        return struct.pack(f"<I16sHH{len(self.dialects)}H", self.capabilities, self.guid, self.security_mode,
                           len(self.dialects), *self.dialects)

    @classmethod
    def unpack(cls, buf: bytes) -> ValidateNegotiateInfoRequest:
        caps, guid, mode, count = unpack_from(_VNI_REQUEST, buf, 0, "VALIDATE_NEGOTIATE_INFO request")
        raw = take(buf, _VNI_REQUEST.size, 2 * count, "VALIDATE_NEGOTIATE_INFO dialects")
        if len(raw) != 2 * count:
            raise malformed("VALIDATE_NEGOTIATE_INFO request: dialect array truncated")
        return cls(caps, guid, mode, list(struct.unpack(f"<{count}H", raw)))


_VNI_REQUEST = struct.Struct("<I16sHH")
_VNI_RESPONSE = struct.Struct("<I16sHH")


@dataclass
class ValidateNegotiateInfoResponse:
    """§2.2.32.6: Capabilities(4) Guid(16) SecurityMode(2) Dialect(2) as the server negotiated them."""

    capabilities: U32 = 0
    guid: Bytes16 = ZERO16
    security_mode: U16 = 0
    dialect: U16 = 0

    def pack(self) -> bytes:
        return _VNI_RESPONSE.pack(self.capabilities, self.guid, self.security_mode, self.dialect)

    @classmethod
    def unpack(cls, buf: bytes) -> ValidateNegotiateInfoResponse:
        return cls(*unpack_from(_VNI_RESPONSE, buf, 0, "VALIDATE_NEGOTIATE_INFO response"))


_IFACE = struct.Struct("<IIIIQ")
IFACE_SIZE = 152
AF_INET_WIRE = 0x0002
AF_INET6_WIRE = 0x0017


@dataclass
class NetworkInterfaceInfo:
    """§2.2.32.5: one 152-byte entry: Next(4) IfIndex(4) Capability(4) Reserved(4) LinkSpeed(8)
    SockAddr_Storage(128).  ``address`` is text ("127.0.0.1", "::1"); family/port/flow/scope are the
    SOCKADDR_IN(6) fields (port and address in network order on the wire, family LE)."""

    if_index: U32 = 1
    capability: U32 = 0
    link_speed: U64 = 0
    address: str = "0.0.0.0"
    port: U16 = 0
    flow_info: U32 = 0
    scope_id: U32 = 0

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.address

    def _sockaddr(self) -> bytes:
        if self.is_ipv6:
            raw = struct.pack("<H", AF_INET6_WIRE) + struct.pack(">HI", self.port, self.flow_info)
            raw += ipaddress.IPv6Address(self.address).packed + struct.pack(">I", self.scope_id)
        else:
            raw = struct.pack("<H", AF_INET_WIRE) + struct.pack(">H", self.port)
            raw += ipaddress.IPv4Address(self.address).packed + bytes(8)
        return raw.ljust(128, b"\x00")

    @staticmethod
    def pack_list(entries: list[NetworkInterfaceInfo]) -> bytes:
        out = bytearray()
        for index, entry in enumerate(entries):
            next_offset = IFACE_SIZE if index != len(entries) - 1 else 0
            out += _IFACE.pack(next_offset, entry.if_index, entry.capability, 0, entry.link_speed) + entry._sockaddr()
        return bytes(out)

    @staticmethod
    def unpack_list(buf: bytes) -> list[NetworkInterfaceInfo]:
        entries: list[NetworkInterfaceInfo] = []
        position = 0
        while buf[position:]:
            next_offset, if_index, capability, _r, speed = unpack_from(_IFACE, buf, position, "NETWORK_INTERFACE_INFO")
            storage = take(buf, position + _IFACE.size, 128, "NETWORK_INTERFACE_INFO SockAddr_Storage")
            if len(storage) != 128:
                raise malformed("NETWORK_INTERFACE_INFO: truncated SockAddr_Storage")
            family = struct.unpack_from("<H", storage)[0]
            if family == AF_INET_WIRE:
                (port,) = struct.unpack_from(">H", storage, 2)
                entry = NetworkInterfaceInfo(if_index, capability, speed,
                                             str(ipaddress.IPv4Address(storage[4:8])), port)
            elif family == AF_INET6_WIRE:
                port, flow = struct.unpack_from(">HI", storage, 2)
                (scope,) = struct.unpack_from(">I", storage, 24)
                entry = NetworkInterfaceInfo(if_index, capability, speed,
                                             str(ipaddress.IPv6Address(storage[8:24])), port, flow, scope)
            else:
                raise malformed(f"NETWORK_INTERFACE_INFO: unknown address family 0x{family:04x}")
            entries.append(entry)
            if not next_offset:
                break
            if next_offset % 8 or next_offset < IFACE_SIZE:
                raise malformed(f"NETWORK_INTERFACE_INFO: Next {next_offset} invalid")
            position += next_offset
        return entries
