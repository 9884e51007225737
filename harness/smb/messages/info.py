"""QUERY_DIRECTORY (§2.2.33, §2.2.34), CHANGE_NOTIFY (§2.2.35, §2.2.36), QUERY_INFO (§2.2.37,
§2.2.38) and SET_INFO (§2.2.39, §2.2.40).

The information buffers themselves are MS-FSCC structures, decoded by :mod:`harness.smb.fscc`; these
messages carry them as bytes because the class to use depends on the request (InfoType/class).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from ..constants import Command
from ..wire import (
    HEADER_SIZE,
    U8,
    U16,
    U32,
    ZERO16,
    Bytes16,
    Utf16,
    body_slice,
    check_structure_size,
    decode_utf16,
    encode_utf16,
    unpack_from,
)
from .base import FixedMessage, Message, register

_QUERY_DIRECTORY = struct.Struct("<HBBI16sHHI")
_BUFFER_RESPONSE = struct.Struct("<HHI")
_CHANGE_NOTIFY = struct.Struct("<HHI16sI4x")
_QUERY_INFO = struct.Struct("<HBBIH2xIII16s")
_SET_INFO = struct.Struct("<HBBIH2xI16s")


@register
@dataclass
class QueryDirectoryRequest(Message):
    """§2.2.33: a search pattern (e.g. ``*``) at offset 0x60 and the output size the client accepts."""

    COMMAND: ClassVar[int] = Command.QUERY_DIRECTORY
    IS_RESPONSE: ClassVar[bool] = False
    STRUCTURE_SIZE: ClassVar[int] = 33

    file_id: Bytes16 = ZERO16
    file_information_class: U8 = 0
    flags: U8 = 0
    file_index: U32 = 0
    file_name: Utf16 = ""
    output_buffer_length: U32 = 0

    def pack(self) -> bytes:
        name = encode_utf16(self.file_name)
        return _QUERY_DIRECTORY.pack(self.STRUCTURE_SIZE, self.file_information_class, self.flags, self.file_index,
                                     self.file_id, HEADER_SIZE + _QUERY_DIRECTORY.size, len(name),
                                     self.output_buffer_length) + (name or b"\x00")

    @classmethod
    def unpack(cls, body: bytes) -> QueryDirectoryRequest:
        check_structure_size(body, cls.STRUCTURE_SIZE, "QUERY_DIRECTORY request")
        _, info_class, flags, index, file_id, offset, length, output_length = unpack_from(
            _QUERY_DIRECTORY, body, 0, "QUERY_DIRECTORY request")
        name = decode_utf16(body_slice(body, offset, length, "QUERY_DIRECTORY name", _QUERY_DIRECTORY.size),
                            "QUERY_DIRECTORY name")
        return cls(file_id, info_class, flags, index, name, output_length)


@dataclass
class _BufferResponse(Message):
    """StructureSize(2)=9, OutputBufferOffset(2), OutputBufferLength(4), Buffer: the shape shared by
    the QUERY_DIRECTORY, CHANGE_NOTIFY and QUERY_INFO responses."""

    STRUCTURE_SIZE: ClassVar[int] = 9
    IS_RESPONSE: ClassVar[bool] = True
    output: bytes = b""

    def pack(self) -> bytes:
        return _BUFFER_RESPONSE.pack(self.STRUCTURE_SIZE, HEADER_SIZE + _BUFFER_RESPONSE.size,
                                     len(self.output)) + (self.output or b"\x00")

    @classmethod
    def unpack(cls, body: bytes):
        check_structure_size(body, cls.STRUCTURE_SIZE, cls.__name__)
        _, offset, length = unpack_from(_BUFFER_RESPONSE, body, 0, cls.__name__)
        return cls(body_slice(body, offset, length, f"{cls.__name__} buffer", _BUFFER_RESPONSE.size))


@register
@dataclass
class QueryDirectoryResponse(_BufferResponse):
    """§2.2.34: a chain of FSCC directory entries (see fscc.unpack_directory_entries)."""

    COMMAND: ClassVar[int] = Command.QUERY_DIRECTORY
    output: bytes = b""


@register
@dataclass
class ChangeNotifyRequest(FixedMessage):
    """§2.2.35: Flags(2, 0x1 WATCH_TREE) OutputBufferLength(4) FileId(16) CompletionFilter(4) Reserved(4)."""

    COMMAND: ClassVar[int] = Command.CHANGE_NOTIFY
    IS_RESPONSE: ClassVar[bool] = False
    STRUCTURE_SIZE: ClassVar[int] = 32
    _STRUCT: ClassVar[struct.Struct] = _CHANGE_NOTIFY
    _FIELDS: ClassVar[tuple[str, ...]] = ("flags", "output_buffer_length", "file_id", "completion_filter")

    file_id: Bytes16 = ZERO16
    flags: U16 = 0
    output_buffer_length: U32 = 0
    completion_filter: U32 = 0


@register
@dataclass
class ChangeNotifyResponse(_BufferResponse):
    """§2.2.36: FILE_NOTIFY_INFORMATION entries (MS-FSCC §2.7.1), raw."""

    COMMAND: ClassVar[int] = Command.CHANGE_NOTIFY
    output: bytes = b""


@register
@dataclass
class QueryInfoRequest(Message):
    """§2.2.37.  The input buffer is used by quota queries and FileFullEaInformation."""

    COMMAND: ClassVar[int] = Command.QUERY_INFO
    IS_RESPONSE: ClassVar[bool] = False
    STRUCTURE_SIZE: ClassVar[int] = 41

    file_id: Bytes16 = ZERO16
    info_type: U8 = 0
    file_info_class: U8 = 0
    output_buffer_length: U32 = 0
    additional_information: U32 = 0
    flags: U32 = 0
    input_buffer: bytes = b""

    def pack(self) -> bytes:
        offset = HEADER_SIZE + _QUERY_INFO.size if self.input_buffer else 0
        return _QUERY_INFO.pack(self.STRUCTURE_SIZE, self.info_type, self.file_info_class, self.output_buffer_length,
                                offset, len(self.input_buffer), self.additional_information, self.flags,
                                self.file_id) + (self.input_buffer or b"\x00")

    @classmethod
    def unpack(cls, body: bytes) -> QueryInfoRequest:
        check_structure_size(body, cls.STRUCTURE_SIZE, "QUERY_INFO request")
        _, info_type, info_class, output_length, offset, length, additional, flags, file_id = unpack_from(
            _QUERY_INFO, body, 0, "QUERY_INFO request")
        data = body_slice(body, offset, length, "QUERY_INFO input", _QUERY_INFO.size)
        return cls(file_id, info_type, info_class, output_length, additional, flags, data)


@register
@dataclass
class QueryInfoResponse(_BufferResponse):
    """§2.2.38: one FSCC information structure (or a security descriptor / quota list)."""

    COMMAND: ClassVar[int] = Command.QUERY_INFO
    output: bytes = b""


@register
@dataclass
class SetInfoRequest(Message):
    """§2.2.39."""

    COMMAND: ClassVar[int] = Command.SET_INFO
    IS_RESPONSE: ClassVar[bool] = False
    STRUCTURE_SIZE: ClassVar[int] = 33

    file_id: Bytes16 = ZERO16
    info_type: U8 = 0
    file_info_class: U8 = 0
    additional_information: U32 = 0
    buffer: bytes = b""

    def pack(self) -> bytes:
        return _SET_INFO.pack(self.STRUCTURE_SIZE, self.info_type, self.file_info_class, len(self.buffer),
                              HEADER_SIZE + _SET_INFO.size, self.additional_information,
                              self.file_id) + (self.buffer or b"\x00")

    @classmethod
    def unpack(cls, body: bytes) -> SetInfoRequest:
        check_structure_size(body, cls.STRUCTURE_SIZE, "SET_INFO request")
        _, info_type, info_class, length, offset, additional, file_id = unpack_from(
            _SET_INFO, body, 0, "SET_INFO request")
        return cls(file_id, info_type, info_class, additional,
                   body_slice(body, offset, length, "SET_INFO buffer", _SET_INFO.size))


@register
@dataclass
class SetInfoResponse(FixedMessage):
    """§2.2.40: StructureSize only."""

    COMMAND: ClassVar[int] = Command.SET_INFO
    IS_RESPONSE: ClassVar[bool] = True
    STRUCTURE_SIZE: ClassVar[int] = 2
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<H")
    _FIELDS: ClassVar[tuple[str, ...]] = ()
