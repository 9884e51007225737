"""READ (§2.2.19, §2.2.20), WRITE (§2.2.21, §2.2.22), LOCK (§2.2.26, §2.2.27) and the RDMA buffer
descriptor list that READ/WRITE carry in their channel info (SMBD §2.2.3.1).

For Channel RDMA_V1(_INVALIDATE) the channel info is an array of :class:`BufferDescriptorV1`; for
RDMA_TRANSFORM (3.1.1 WRITE) it is an SMB2_RDMA_TRANSFORM (§2.2.43).  The codec keeps channel info
as bytes and offers helpers to build/parse descriptor lists.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar

from ..constants import Command
from ..errors import malformed
from ..wire import (
    HEADER_SIZE,
    U8,
    U16,
    U32,
    U64,
    ZERO16,
    Bytes16,
    body_slice,
    check_structure_size,
    pad8,
    unpack_from,
)
from .base import FixedMessage, Message, register

_DESCRIPTOR = struct.Struct("<QII")


@dataclass
class BufferDescriptorV1:
    """SMB_DIRECT_BUFFER_DESCRIPTOR_V1: Offset(8) Token(4) Length(4) of one registered region."""

    offset: U64 = 0
    token: U32 = 0
    length: U32 = 0

    def pack(self) -> bytes:
        return _DESCRIPTOR.pack(self.offset, self.token, self.length)

    @staticmethod
    def pack_list(descriptors: list[BufferDescriptorV1]) -> bytes:
        return b"".join(descriptor.pack() for descriptor in descriptors)

    @staticmethod
    def unpack_list(buf: bytes) -> list[BufferDescriptorV1]:
        if len(buf) % _DESCRIPTOR.size:
            raise malformed(f"buffer descriptor list: {len(buf)} bytes is not a multiple of 16")
        return [BufferDescriptorV1(*item) for item in _DESCRIPTOR.iter_unpack(buf)]


_READ = struct.Struct("<HBBIQ16sIIIHH")
_READ_RESPONSE = struct.Struct("<HBxIII")
_WRITE = struct.Struct("<HHIQ16sIIHHI")
_WRITE_RESPONSE = struct.Struct("<H2xIIHH")


@register
@dataclass
class ReadRequest(Message):
    """§2.2.19.  ``padding`` is where the client asks the data to start in the response."""

    COMMAND: ClassVar[int] = Command.READ
    IS_RESPONSE: ClassVar[bool] = False
    STRUCTURE_SIZE: ClassVar[int] = 49

    file_id: Bytes16 = ZERO16
    length: U32 = 0
    offset: U64 = 0
    minimum_count: U32 = 0
    channel: U32 = 0
    remaining_bytes: U32 = 0
    flags: U8 = 0
    padding: U8 = 0x50
    channel_info: bytes = b""

    @property
    def descriptors(self) -> list[BufferDescriptorV1]:
        return BufferDescriptorV1.unpack_list(self.channel_info)

    def pack(self) -> bytes:
        info_offset = HEADER_SIZE + _READ.size if self.channel_info else 0
        return _READ.pack(self.STRUCTURE_SIZE, self.padding, self.flags, self.length, self.offset, self.file_id,
                          self.minimum_count, self.channel, self.remaining_bytes, info_offset,
                          len(self.channel_info)) + (self.channel_info or b"\x00")

    @classmethod
    def unpack(cls, body: bytes) -> ReadRequest:
        check_structure_size(body, cls.STRUCTURE_SIZE, "READ request")
        (_, padding, flags, length, offset, file_id, minimum, channel, remaining, info_offset,
         info_length) = unpack_from(_READ, body, 0, "READ request")
        info = body_slice(body, info_offset, info_length, "READ channel info", _READ.size)
        return cls(file_id, length, offset, minimum, channel, remaining, flags, padding, info)


@register
@dataclass
class ReadResponse(Message):
    """§2.2.20.  DataOffset is one byte; data normally starts right after the fixed part (0x50)."""

    COMMAND: ClassVar[int] = Command.READ
    IS_RESPONSE: ClassVar[bool] = True
    STRUCTURE_SIZE: ClassVar[int] = 17

    data: bytes = b""
    data_remaining: U32 = 0
    flags: U32 = 0

    def pack(self) -> bytes:
        return b"".join(self.pack_parts())

    def pack_parts(self) -> list[bytes]:
        """The fixed part and the data as separate buffers, so a sender can avoid copying the data."""
        return [_READ_RESPONSE.pack(self.STRUCTURE_SIZE, HEADER_SIZE + _READ_RESPONSE.size, len(self.data),
                                    self.data_remaining, self.flags), self.data or b"\x00"]

    @classmethod
    def unpack(cls, body: bytes) -> ReadResponse:
        check_structure_size(body, cls.STRUCTURE_SIZE, "READ response")
        _, data_offset, length, remaining, flags = unpack_from(_READ_RESPONSE, body, 0, "READ response")
        return cls(body_slice(body, data_offset, length, "READ data", _READ_RESPONSE.size), remaining, flags)


@register
@dataclass
class WriteRequest(Message):
    """§2.2.21.  Inline data at 0x70; with an RDMA channel Length and DataOffset are 0 and the
    descriptors (channel info) sit at 0x70 instead (§3.2.4.7, §3.3.5.13)."""

    COMMAND: ClassVar[int] = Command.WRITE
    IS_RESPONSE: ClassVar[bool] = False
    STRUCTURE_SIZE: ClassVar[int] = 49

    file_id: Bytes16 = ZERO16
    offset: U64 = 0
    data: bytes = b""
    channel: U32 = 0
    remaining_bytes: U32 = 0
    flags: U32 = 0
    channel_info: bytes = b""
    #: DataOffset as received (unpack only): an RDMA WRITE must carry 0 there (§3.3.5.13).
    received_data_offset: int | None = field(default=None, compare=False, repr=False)

    @property
    def descriptors(self) -> list[BufferDescriptorV1]:
        return BufferDescriptorV1.unpack_list(self.channel_info)

    def pack(self) -> bytes:
        start = HEADER_SIZE + _WRITE.size
        if self.data and not self.channel_info:  # the common case, one copy of the data
            return b"".join(self.pack_parts())
        buffer = bytearray(self.data)
        data_offset = start if (self.data or not self.channel_info) else 0
        info_offset = 0
        if self.channel_info:
            buffer += bytes(pad8(len(buffer)))
            info_offset = start + len(buffer)
            buffer += self.channel_info
        return _WRITE.pack(self.STRUCTURE_SIZE, data_offset, len(self.data), self.offset, self.file_id,
                           self.channel, self.remaining_bytes, info_offset, len(self.channel_info),
                           self.flags) + bytes(buffer or b"\x00")

    def pack_parts(self) -> list[bytes]:
        """Fixed part and inline data as separate buffers (a sender joins or sendmsg()s them)."""
        if not self.data or self.channel_info:
            return [self.pack()]
        return [_WRITE.pack(self.STRUCTURE_SIZE, HEADER_SIZE + _WRITE.size, len(self.data), self.offset, self.file_id,
                            self.channel, self.remaining_bytes, 0, 0, self.flags), self.data]

    @classmethod
    def unpack(cls, body: bytes) -> WriteRequest:
        check_structure_size(body, cls.STRUCTURE_SIZE, "WRITE request")
        (_, data_offset, length, offset, file_id, channel, remaining, info_offset, info_length,
         flags) = unpack_from(_WRITE, body, 0, "WRITE request")
        if isinstance(body, memoryview) and length:
            # Zero-copy for receivers that hand in a memoryview: ``data`` is a view into their buffer,
            # valid as long as that buffer (the server writes it to the file at once).
            relative = data_offset - HEADER_SIZE
            if relative < _WRITE.size or relative + length > len(body):
                raise malformed(f"WRITE data: {length} bytes at offset {data_offset} outside the message")
            data = body[relative:relative + length]
        else:
            data = body_slice(body, data_offset, length, "WRITE data", _WRITE.size)
        info = body_slice(body, info_offset, info_length, "WRITE channel info", _WRITE.size)
        return cls(file_id, offset, data, channel, remaining, flags, info, data_offset)


@register
@dataclass
class WriteResponse(FixedMessage):
    """§2.2.22: Count(4) Remaining(4, reserved) WriteChannelInfoOffset/Length(2+2, reserved)."""

    COMMAND: ClassVar[int] = Command.WRITE
    IS_RESPONSE: ClassVar[bool] = True
    STRUCTURE_SIZE: ClassVar[int] = 17
    _STRUCT: ClassVar[struct.Struct] = _WRITE_RESPONSE
    _FIELDS: ClassVar[tuple[str, ...]] = ("count", "remaining", "channel_info_offset", "channel_info_length")

    count: U32 = 0
    remaining: U32 = 0
    channel_info_offset: U16 = 0
    channel_info_length: U16 = 0


_LOCK = struct.Struct("<HHI16s")
_LOCK_ELEMENT = struct.Struct("<QQI4x")


@dataclass
class LockElement:
    """SMB2_LOCK_ELEMENT (§2.2.26.1): Offset(8) Length(8) Flags(4) Reserved(4)."""

    offset: U64 = 0
    length: U64 = 0
    flags: U32 = 0


@register
@dataclass
class LockRequest(Message):
    """§2.2.26.  ``lock_sequence``: LockSequenceNumber (low 4 bits) + LockSequenceIndex (28 bits)."""

    COMMAND: ClassVar[int] = Command.LOCK
    IS_RESPONSE: ClassVar[bool] = False
    STRUCTURE_SIZE: ClassVar[int] = 48

    file_id: Bytes16 = ZERO16
    locks: list[LockElement] = field(default_factory=list)
    lock_sequence: U32 = 0

    def pack(self) -> bytes:
        elements = b"".join(_LOCK_ELEMENT.pack(lock.offset, lock.length, lock.flags) for lock in self.locks)
        return _LOCK.pack(self.STRUCTURE_SIZE, len(self.locks), self.lock_sequence, self.file_id) + (
            elements or bytes(_LOCK_ELEMENT.size))

    @classmethod
    def unpack(cls, body: bytes) -> LockRequest:
        check_structure_size(body, cls.STRUCTURE_SIZE, "LOCK request")
        _, count, sequence, file_id = unpack_from(_LOCK, body, 0, "LOCK request")
        locks = [LockElement(*unpack_from(_LOCK_ELEMENT, body, _LOCK.size + index * _LOCK_ELEMENT.size, "LOCK element"))
                 for index in range(count)]
        return cls(file_id, locks, sequence)


@register
@dataclass
class LockResponse(FixedMessage):
    """§2.2.27."""

    COMMAND: ClassVar[int] = Command.LOCK
    IS_RESPONSE: ClassVar[bool] = True
    STRUCTURE_SIZE: ClassVar[int] = 4
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<H2x")
    _FIELDS: ClassVar[tuple[str, ...]] = ()


__all__ = ["BufferDescriptorV1", "ReadRequest", "ReadResponse", "WriteRequest", "WriteResponse", "LockElement",
           "LockRequest", "LockResponse", "U16"]
