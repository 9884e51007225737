"""TREE_CONNECT (§2.2.9, §2.2.10) incl. the 3.1.1 request extension (§2.2.9.1), and TREE_DISCONNECT
(§2.2.11, §2.2.12)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar

from ..constants import Command, TreeConnectFlags
from ..errors import malformed
from ..wire import (
    HEADER_SIZE,
    U8,
    U16,
    U32,
    Utf16,
    body_slice,
    check_structure_size,
    decode_utf16,
    encode_utf16,
    pad8,
    take,
    unpack_from,
)
from .base import FixedMessage, Message, register

_REQUEST = struct.Struct("<HHHH")
_EXTENSION = struct.Struct("<IH10x")
_CONTEXT = struct.Struct("<HHI")


@dataclass
class TreeConnectContext:
    """SMB2_TREE_CONNECT_CONTEXT (§2.2.9.2): type 1 is REMOTED_IDENTITY, kept raw here."""

    context_type: U16
    data: bytes = b""


@register
@dataclass
class TreeConnectRequest(Message):
    """§2.2.9.  With EXTENSION_PRESENT (3.1.1) Buffer starts with the 16-byte extension
    (TreeConnectContextOffset(4, from the start of this request) Count(2) Reserved(10)), then
    PathName, then the 8-aligned contexts; PathOffset/PathLength still describe the path."""

    COMMAND: ClassVar[int] = Command.TREE_CONNECT
    IS_RESPONSE: ClassVar[bool] = False
    STRUCTURE_SIZE: ClassVar[int] = 9

    path: Utf16 = ""
    flags: U16 = 0
    contexts: list[TreeConnectContext] = field(default_factory=list)

    @property
    def has_extension(self) -> bool:
        return bool(self.flags & TreeConnectFlags.EXTENSION_PRESENT)

    def pack(self) -> bytes:
        path = encode_utf16(self.path)
        if not self.has_extension:
            if self.contexts:
                raise ValueError("tree connect contexts need SMB2_TREE_CONNECT_FLAG_EXTENSION_PRESENT")
            return _REQUEST.pack(self.STRUCTURE_SIZE, self.flags, HEADER_SIZE + 8, len(path)) + (path or b"\x00")
        buffer = bytearray(path)
        context_start = 0
        if self.contexts:
            buffer += bytes(pad8(8 + _EXTENSION.size + len(buffer)))
            context_start = 8 + _EXTENSION.size + len(buffer)
            for index, context in enumerate(self.contexts):
                if index:
                    buffer += bytes(pad8(8 + _EXTENSION.size + len(buffer)))
                buffer += _CONTEXT.pack(context.context_type, len(context.data), 0) + context.data
        extension = _EXTENSION.pack(context_start, len(self.contexts))
        return (_REQUEST.pack(self.STRUCTURE_SIZE, self.flags, HEADER_SIZE + 8 + _EXTENSION.size, len(path))
                + extension + bytes(buffer))

    @classmethod
    def unpack(cls, body: bytes) -> TreeConnectRequest:
        check_structure_size(body, cls.STRUCTURE_SIZE, "TREE_CONNECT request")
        _, flags, offset, length = unpack_from(_REQUEST, body, 0, "TREE_CONNECT request")
        request = cls(flags=flags)
        minimum = 8
        if request.has_extension:
            context_offset, count = unpack_from(_EXTENSION, body, 8, "TREE_CONNECT request extension")
            minimum = 8 + _EXTENSION.size
            position = context_offset
            for index in range(count):
                if index:
                    position += pad8(position)
                if position < minimum:
                    raise malformed("TREE_CONNECT request: context offset inside the fixed part")
                ctype, dlen, _ = unpack_from(_CONTEXT, body, position, "TREE_CONNECT context")
                data = take(body, position + _CONTEXT.size, dlen, "TREE_CONNECT context data")
                request.contexts.append(TreeConnectContext(ctype, data))
                position += _CONTEXT.size + dlen
        request.path = decode_utf16(body_slice(body, offset, length, "TREE_CONNECT path", minimum), "TREE_CONNECT path")
        return request


@register
@dataclass
class TreeConnectResponse(FixedMessage):
    """§2.2.10: ShareType(1) Reserved(1) ShareFlags(4) Capabilities(4) MaximalAccess(4)."""

    COMMAND: ClassVar[int] = Command.TREE_CONNECT
    IS_RESPONSE: ClassVar[bool] = True
    STRUCTURE_SIZE: ClassVar[int] = 16
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<HBxIII")
    _FIELDS: ClassVar[tuple[str, ...]] = ("share_type", "share_flags", "capabilities", "maximal_access")

    share_type: U8 = 1
    share_flags: U32 = 0
    capabilities: U32 = 0
    maximal_access: U32 = 0


@register
@dataclass
class TreeDisconnectRequest(FixedMessage):
    """§2.2.11."""

    COMMAND: ClassVar[int] = Command.TREE_DISCONNECT
    IS_RESPONSE: ClassVar[bool] = False
    STRUCTURE_SIZE: ClassVar[int] = 4
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<H2x")
    _FIELDS: ClassVar[tuple[str, ...]] = ()


@register
@dataclass
class TreeDisconnectResponse(FixedMessage):
    """§2.2.12."""

    COMMAND: ClassVar[int] = Command.TREE_DISCONNECT
    IS_RESPONSE: ClassVar[bool] = True
    STRUCTURE_SIZE: ClassVar[int] = 4
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<H2x")
    _FIELDS: ClassVar[tuple[str, ...]] = ()
