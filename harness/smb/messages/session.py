"""SESSION_SETUP (§2.2.5, §2.2.6) and LOGOFF (§2.2.7, §2.2.8).

The security buffer is an opaque GSS-API/SPNEGO token: authentication belongs to pyspnego and the
session state machine, not to the codec.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from ..constants import Command
from ..wire import HEADER_SIZE, U8, U16, U32, U64, body_slice, check_structure_size, unpack_from
from .base import FixedMessage, Message, register

_REQUEST = struct.Struct("<HBBIIHHQ")
_RESPONSE = struct.Struct("<HHHH")


@register
@dataclass
class SessionSetupRequest(Message):
    """§2.2.5.  ``flags`` 0x01 = SMB2_SESSION_FLAG_BINDING (3.x multichannel)."""

    COMMAND: ClassVar[int] = Command.SESSION_SETUP
    IS_RESPONSE: ClassVar[bool] = False
    STRUCTURE_SIZE: ClassVar[int] = 25

    flags: U8 = 0
    security_mode: U8 = 0
    capabilities: U32 = 0
    channel: U32 = 0
    previous_session_id: U64 = 0
    security_buffer: bytes = b""

    def pack(self) -> bytes:
        return _REQUEST.pack(self.STRUCTURE_SIZE, self.flags, self.security_mode, self.capabilities, self.channel,
                             HEADER_SIZE + _REQUEST.size, len(self.security_buffer),
                             self.previous_session_id) + (self.security_buffer or b"\x00")

    @classmethod
    def unpack(cls, body: bytes) -> SessionSetupRequest:
        check_structure_size(body, cls.STRUCTURE_SIZE, "SESSION_SETUP request")
        _, flags, mode, caps, channel, offset, length, previous = unpack_from(
            _REQUEST, body, 0, "SESSION_SETUP request")
        token = body_slice(body, offset, length, "SESSION_SETUP request security buffer", _REQUEST.size)
        return cls(flags, mode, caps, channel, previous, token)


@register
@dataclass
class SessionSetupResponse(Message):
    """§2.2.6.  ``session_flags``: IS_GUEST 0x1, IS_NULL 0x2, ENCRYPT_DATA 0x4."""

    COMMAND: ClassVar[int] = Command.SESSION_SETUP
    IS_RESPONSE: ClassVar[bool] = True
    STRUCTURE_SIZE: ClassVar[int] = 9

    session_flags: U16 = 0
    security_buffer: bytes = b""

    def pack(self) -> bytes:
        return _RESPONSE.pack(self.STRUCTURE_SIZE, self.session_flags, HEADER_SIZE + _RESPONSE.size,
                              len(self.security_buffer)) + (self.security_buffer or b"\x00")

    @classmethod
    def unpack(cls, body: bytes) -> SessionSetupResponse:
        check_structure_size(body, cls.STRUCTURE_SIZE, "SESSION_SETUP response")
        _, flags, offset, length = unpack_from(_RESPONSE, body, 0, "SESSION_SETUP response")
        return cls(flags, body_slice(body, offset, length, "SESSION_SETUP response security buffer", 8))


_EMPTY4 = struct.Struct("<H2x")


@register
@dataclass
class LogoffRequest(FixedMessage):
    """§2.2.7: StructureSize(2) Reserved(2)."""

    COMMAND: ClassVar[int] = Command.LOGOFF
    IS_RESPONSE: ClassVar[bool] = False
    STRUCTURE_SIZE: ClassVar[int] = 4
    _STRUCT: ClassVar[struct.Struct] = _EMPTY4
    _FIELDS: ClassVar[tuple[str, ...]] = ()


@register
@dataclass
class LogoffResponse(FixedMessage):
    """§2.2.8."""

    COMMAND: ClassVar[int] = Command.LOGOFF
    IS_RESPONSE: ClassVar[bool] = True
    STRUCTURE_SIZE: ClassVar[int] = 4
    _STRUCT: ClassVar[struct.Struct] = _EMPTY4
    _FIELDS: ClassVar[tuple[str, ...]] = ()
