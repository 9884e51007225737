"""Small messages: ECHO (§2.2.28, §2.2.29), CANCEL (§2.2.30), OPLOCK_BREAK in its oplock (§2.2.23.1,
§2.2.24.1, §2.2.25.1) and lease (§2.2.23.2, §2.2.24.2, §2.2.25.2) forms, and the ERROR response
(§2.2.2) with 3.1.1 error contexts (§2.2.2.1)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from ..constants import Command
from ..errors import malformed
from ..wire import U8, U16, U32, U64, ZERO16, Bytes16, check_structure_size, pad8, take, unpack_from
from .base import FixedMessage, Message, register

_EMPTY4 = struct.Struct("<H2x")


@register
@dataclass
class EchoRequest(FixedMessage):
    COMMAND: ClassVar[int] = Command.ECHO
    IS_RESPONSE: ClassVar[bool] = False
    STRUCTURE_SIZE: ClassVar[int] = 4
    _STRUCT: ClassVar[struct.Struct] = _EMPTY4
    _FIELDS: ClassVar[tuple[str, ...]] = ()


@register
@dataclass
class EchoResponse(FixedMessage):
    COMMAND: ClassVar[int] = Command.ECHO
    IS_RESPONSE: ClassVar[bool] = True
    STRUCTURE_SIZE: ClassVar[int] = 4
    _STRUCT: ClassVar[struct.Struct] = _EMPTY4
    _FIELDS: ClassVar[tuple[str, ...]] = ()


@register
@dataclass
class CancelRequest(FixedMessage):
    """§2.2.30.  No response; it reuses the MessageId (or AsyncId) of the request it cancels and
    consumes no credit.  Its GMAC signature sets the CANCEL bit of the nonce (§3.1.4.1)."""

    COMMAND: ClassVar[int] = Command.CANCEL
    IS_RESPONSE: ClassVar[bool] = False
    STRUCTURE_SIZE: ClassVar[int] = 4
    _STRUCT: ClassVar[struct.Struct] = _EMPTY4
    _FIELDS: ClassVar[tuple[str, ...]] = ()


_OPLOCK = struct.Struct("<HBx4x16s")


@register
@dataclass
class OplockBreakAcknowledgment(FixedMessage):
    """§2.2.24.1: client → server, OplockLevel(1) Reserved(1) Reserved2(4) FileId(16)."""

    COMMAND: ClassVar[int] = Command.OPLOCK_BREAK
    IS_RESPONSE: ClassVar[bool] = False
    STRUCTURE_SIZE: ClassVar[int] = 24
    _STRUCT: ClassVar[struct.Struct] = _OPLOCK
    _FIELDS: ClassVar[tuple[str, ...]] = ("oplock_level", "file_id")

    file_id: Bytes16 = ZERO16
    oplock_level: U8 = 0


@register
@dataclass
class OplockBreakNotification(FixedMessage):
    """§2.2.23.1 notification (MessageId 0xFFFF..., §3.3.4.6) and §2.2.25.1 response to an
    acknowledgment: the same 24 bytes, told apart by the header's MessageId."""

    COMMAND: ClassVar[int] = Command.OPLOCK_BREAK
    IS_RESPONSE: ClassVar[bool] = True
    STRUCTURE_SIZE: ClassVar[int] = 24
    _STRUCT: ClassVar[struct.Struct] = _OPLOCK
    _FIELDS: ClassVar[tuple[str, ...]] = ("oplock_level", "file_id")

    file_id: Bytes16 = ZERO16
    oplock_level: U8 = 0


OplockBreakResponse = OplockBreakNotification


@register
@dataclass
class LeaseBreakNotification(FixedMessage):
    """§2.2.23.2: NewEpoch(2) Flags(4, 0x1 ACK_REQUIRED) LeaseKey(16) CurrentLeaseState(4)
    NewLeaseState(4) BreakReason(4) AccessMaskHint(4) ShareMaskHint(4); SessionId 0, unsigned."""

    COMMAND: ClassVar[int] = Command.OPLOCK_BREAK
    IS_RESPONSE: ClassVar[bool] = True
    STRUCTURE_SIZE: ClassVar[int] = 44
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<HHI16sIIIII")
    _FIELDS: ClassVar[tuple[str, ...]] = ("new_epoch", "flags", "lease_key", "current_lease_state",
                                          "new_lease_state", "break_reason", "access_mask_hint", "share_mask_hint")

    lease_key: Bytes16 = ZERO16
    current_lease_state: U32 = 0
    new_lease_state: U32 = 0
    new_epoch: U16 = 0
    flags: U32 = 0
    break_reason: U32 = 0
    access_mask_hint: U32 = 0
    share_mask_hint: U32 = 0


_LEASE_ACK = struct.Struct("<H2xI16sIQ")


@register
@dataclass
class LeaseBreakAcknowledgment(FixedMessage):
    """§2.2.24.2: Reserved(2) Flags(4) LeaseKey(16) LeaseState(4) LeaseDuration(8)."""

    COMMAND: ClassVar[int] = Command.OPLOCK_BREAK
    IS_RESPONSE: ClassVar[bool] = False
    STRUCTURE_SIZE: ClassVar[int] = 36
    _STRUCT: ClassVar[struct.Struct] = _LEASE_ACK
    _FIELDS: ClassVar[tuple[str, ...]] = ("flags", "lease_key", "lease_state", "lease_duration")

    lease_key: Bytes16 = ZERO16
    lease_state: U32 = 0
    flags: U32 = 0
    lease_duration: U64 = 0


@register
@dataclass
class LeaseBreakResponse(FixedMessage):
    """§2.2.25.2: same layout as the acknowledgment."""

    COMMAND: ClassVar[int] = Command.OPLOCK_BREAK
    IS_RESPONSE: ClassVar[bool] = True
    STRUCTURE_SIZE: ClassVar[int] = 36
    _STRUCT: ClassVar[struct.Struct] = _LEASE_ACK
    _FIELDS: ClassVar[tuple[str, ...]] = ("flags", "lease_key", "lease_state", "lease_duration")

    lease_key: Bytes16 = ZERO16
    lease_state: U32 = 0
    flags: U32 = 0
    lease_duration: U64 = 0


@dataclass
class ErrorContext:
    """SMB2 ERROR Context (§2.2.2.1): ErrorDataLength(4) ErrorId(4) ErrorContextData."""

    error_id: U32 = 0
    data: bytes = b""


_ERROR = struct.Struct("<HBxI")
_ERROR_CONTEXT = struct.Struct("<II")


@dataclass
class ErrorResponse(Message):
    """§2.2.2, for any command.  ``error_data`` is raw; with ``error_context_count`` > 0 (3.1.1) it
    is a list of 8-aligned :class:`ErrorContext` (see :meth:`contexts` / :meth:`with_contexts`).
    An empty ErrorData is sent as one zero byte (StructureSize 9 counts it)."""

    COMMAND: ClassVar[int] = -1  # any
    IS_RESPONSE: ClassVar[bool] = True
    STRUCTURE_SIZE: ClassVar[int] = 9

    error_data: bytes = b""
    error_context_count: U8 = 0

    def pack(self) -> bytes:
        return _ERROR.pack(self.STRUCTURE_SIZE, self.error_context_count, len(self.error_data)) + (
            self.error_data or b"\x00")

    @classmethod
    def unpack(cls, body: bytes) -> ErrorResponse:
        check_structure_size(body, cls.STRUCTURE_SIZE, "ERROR response")
        _, count, byte_count = unpack_from(_ERROR, body, 0, "ERROR response")
        data = take(body, _ERROR.size, byte_count, "ERROR response ErrorData")
        return cls(data, count)

    def contexts(self) -> list[ErrorContext]:
        result = []
        position = 0
        for index in range(self.error_context_count):
            if index:
                position += pad8(position)
            length, error_id = unpack_from(_ERROR_CONTEXT, self.error_data, position, "ERROR context")
            result.append(ErrorContext(error_id, take(self.error_data, position + 8, length, "ERROR context data")))
            position += 8 + length
        return result

    @classmethod
    def with_contexts(cls, contexts: list[ErrorContext]) -> ErrorResponse:
        if len(contexts) > 255:
            raise malformed("ERROR response: at most 255 error contexts")
        out = bytearray()
        for index, context in enumerate(contexts):
            if index:
                out += bytes(pad8(len(out)))
            out += _ERROR_CONTEXT.pack(len(context.data), context.error_id) + context.data
        return cls(bytes(out), len(contexts))


