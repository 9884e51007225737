"""CREATE (§2.2.13, §2.2.14), CLOSE (§2.2.15, §2.2.16) and FLUSH (§2.2.17, §2.2.18)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar

from ..constants import Command
from ..wire import (
    HEADER_SIZE,
    U8,
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
    unpack_from,
)
from .base import FixedMessage, Message, register
from .create_contexts import CreateContext, pack_create_contexts, unpack_create_contexts

_REQUEST = struct.Struct("<HBBIQ8xIIIIIHHII")
_RESPONSE = struct.Struct("<HBBIQQQQQQI4x16sII")


@register
@dataclass
class CreateRequest(Message):
    """§2.2.13.  Name (UTF-16, relative to the share, no leading backslash) at offset 0x78; the
    create-context chain follows at the next 8-aligned offset."""

    COMMAND: ClassVar[int] = Command.CREATE
    IS_RESPONSE: ClassVar[bool] = False
    STRUCTURE_SIZE: ClassVar[int] = 57

    name: Utf16 = ""
    desired_access: U32 = 0
    file_attributes: U32 = 0
    share_access: U32 = 0
    create_disposition: U32 = 0
    create_options: U32 = 0
    requested_oplock_level: U8 = 0
    impersonation_level: U32 = 2
    security_flags: U8 = 0
    smb_create_flags: U64 = 0
    contexts: list[CreateContext] = field(default_factory=list)

    def pack(self) -> bytes:
        name = encode_utf16(self.name)
        buffer = bytearray(name)
        contexts_offset = 0
        chain = pack_create_contexts(self.contexts) if self.contexts else b""
        if chain:
            buffer += bytes(pad8(_REQUEST.size + len(buffer)))
            contexts_offset = HEADER_SIZE + _REQUEST.size + len(buffer)
            buffer += chain
        fixed = _REQUEST.pack(self.STRUCTURE_SIZE, self.security_flags, self.requested_oplock_level,
                              self.impersonation_level, self.smb_create_flags, self.desired_access,
                              self.file_attributes, self.share_access, self.create_disposition,
                              self.create_options, HEADER_SIZE + _REQUEST.size, len(name), contexts_offset,
                              len(chain))
        return fixed + bytes(buffer or b"\x00")

    @classmethod
    def unpack(cls, body: bytes) -> CreateRequest:
        check_structure_size(body, cls.STRUCTURE_SIZE, "CREATE request")
        (_, security_flags, oplock, impersonation, create_flags, access, attributes, share, disposition,
         options, name_offset, name_length, ctx_offset, ctx_length) = unpack_from(_REQUEST, body, 0, "CREATE request")
        name = decode_utf16(body_slice(body, name_offset, name_length, "CREATE name", _REQUEST.size), "CREATE name")
        chain = body_slice(body, ctx_offset, ctx_length, "CREATE contexts", _REQUEST.size)
        contexts = unpack_create_contexts(chain) if chain else []
        return cls(name, access, attributes, share, disposition, options, oplock, impersonation, security_flags,
                   create_flags, contexts)


@register
@dataclass
class CreateResponse(Message):
    """§2.2.14.  Flags 0x01 = SMB2_CREATE_FLAG_REPARSEPOINT (3.1.1)."""

    COMMAND: ClassVar[int] = Command.CREATE
    IS_RESPONSE: ClassVar[bool] = True
    STRUCTURE_SIZE: ClassVar[int] = 89

    file_id: Bytes16 = ZERO16
    oplock_level: U8 = 0
    flags: U8 = 0
    create_action: U32 = 0
    creation_time: U64 = 0
    last_access_time: U64 = 0
    last_write_time: U64 = 0
    change_time: U64 = 0
    allocation_size: U64 = 0
    end_of_file: U64 = 0
    file_attributes: U32 = 0
    contexts: list[CreateContext] = field(default_factory=list)

    def pack(self) -> bytes:
        chain = pack_create_contexts(self.contexts) if self.contexts else b""
        offset = HEADER_SIZE + _RESPONSE.size if chain else 0
        fixed = _RESPONSE.pack(self.STRUCTURE_SIZE, self.oplock_level, self.flags, self.create_action,
                               self.creation_time, self.last_access_time, self.last_write_time, self.change_time,
                               self.allocation_size, self.end_of_file, self.file_attributes, self.file_id,
                               offset, len(chain))
        return fixed + (chain or b"\x00")

    @classmethod
    def unpack(cls, body: bytes) -> CreateResponse:
        check_structure_size(body, cls.STRUCTURE_SIZE, "CREATE response")
        (_, oplock, flags, action, ctime, atime, wtime, chtime, alloc, eof, attributes, file_id, ctx_offset,
         ctx_length) = unpack_from(_RESPONSE, body, 0, "CREATE response")
        chain = body_slice(body, ctx_offset, ctx_length, "CREATE response contexts", _RESPONSE.size)
        return cls(file_id, oplock, flags, action, ctime, atime, wtime, chtime, alloc, eof, attributes,
                   unpack_create_contexts(chain) if chain else [])


@register
@dataclass
class CloseRequest(FixedMessage):
    """§2.2.15: Flags(2, 0x1 POSTQUERY_ATTRIB) Reserved(4) FileId(16)."""

    COMMAND: ClassVar[int] = Command.CLOSE
    IS_RESPONSE: ClassVar[bool] = False
    STRUCTURE_SIZE: ClassVar[int] = 24
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<HH4x16s")
    _FIELDS: ClassVar[tuple[str, ...]] = ("flags", "file_id")

    file_id: Bytes16 = ZERO16
    flags: U16 = 0


@register
@dataclass
class CloseResponse(FixedMessage):
    """§2.2.16: attributes valid only with POSTQUERY_ATTRIB, else zero."""

    COMMAND: ClassVar[int] = Command.CLOSE
    IS_RESPONSE: ClassVar[bool] = True
    STRUCTURE_SIZE: ClassVar[int] = 60
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<HH4xQQQQQQI")
    _FIELDS: ClassVar[tuple[str, ...]] = ("flags", "creation_time", "last_access_time", "last_write_time",
                                          "change_time", "allocation_size", "end_of_file", "file_attributes")

    flags: U16 = 0
    creation_time: U64 = 0
    last_access_time: U64 = 0
    last_write_time: U64 = 0
    change_time: U64 = 0
    allocation_size: U64 = 0
    end_of_file: U64 = 0
    file_attributes: U32 = 0


@register
@dataclass
class FlushRequest(FixedMessage):
    """§2.2.17: Reserved1(2) Reserved2(4) FileId(16)."""

    COMMAND: ClassVar[int] = Command.FLUSH
    IS_RESPONSE: ClassVar[bool] = False
    STRUCTURE_SIZE: ClassVar[int] = 24
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<H2x4x16s")
    _FIELDS: ClassVar[tuple[str, ...]] = ("file_id",)

    file_id: Bytes16 = ZERO16


@register
@dataclass
class FlushResponse(FixedMessage):
    """§2.2.18."""

    COMMAND: ClassVar[int] = Command.FLUSH
    IS_RESPONSE: ClassVar[bool] = True
    STRUCTURE_SIZE: ClassVar[int] = 4
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<H2x")
    _FIELDS: ClassVar[tuple[str, ...]] = ()
