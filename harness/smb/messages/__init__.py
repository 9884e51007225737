"""SMB2 message bodies (MS-SMB2 §2.2), one module per command family, and :func:`decode_body`,
which picks the class for a (header, body) pair."""

from __future__ import annotations

import struct as _struct
from typing import cast

from ..constants import Command, NtStatus
from ..errors import malformed
from ..wire import unpack_from
from . import create, info, io, ioctl, misc, negotiate, session, tree  # noqa: F401  (registers classes)
from .base import REGISTRY, FixedMessage, Message, all_message_classes
from .create import CloseRequest, CloseResponse, CreateRequest, CreateResponse, FlushRequest, FlushResponse
from .create_contexts import CreateContext, pack_create_contexts, unpack_create_contexts
from .info import (
    ChangeNotifyRequest,
    ChangeNotifyResponse,
    QueryDirectoryRequest,
    QueryDirectoryResponse,
    QueryInfoRequest,
    QueryInfoResponse,
    SetInfoRequest,
    SetInfoResponse,
)
from .io import (
    BufferDescriptorV1,
    LockElement,
    LockRequest,
    LockResponse,
    ReadRequest,
    ReadResponse,
    WriteRequest,
    WriteResponse,
)
from .ioctl import (
    IoctlRequest,
    IoctlResponse,
    NetworkInterfaceInfo,
    ValidateNegotiateInfoRequest,
    ValidateNegotiateInfoResponse,
)
from .misc import (
    CancelRequest,
    EchoRequest,
    EchoResponse,
    ErrorContext,
    ErrorResponse,
    LeaseBreakAcknowledgment,
    LeaseBreakNotification,
    LeaseBreakResponse,
    OplockBreakAcknowledgment,
    OplockBreakNotification,
    OplockBreakResponse,
)
from .negotiate import (
    CompressionCapabilities,
    EncryptionCapabilities,
    NegotiateRequest,
    NegotiateResponse,
    NetnameContext,
    PreauthIntegrityCapabilities,
    RawNegotiateContext,
    RdmaTransformCapabilities,
    SigningCapabilities,
    TransportCapabilities,
)
from .session import LogoffRequest, LogoffResponse, SessionSetupRequest, SessionSetupResponse
from .tree import (
    TreeConnectContext,
    TreeConnectRequest,
    TreeConnectResponse,
    TreeDisconnectRequest,
    TreeDisconnectResponse,
)

_U16 = _struct.Struct("<H")

# Non-error statuses with which a command still returns its own response structure (§3.2.5.1.x):
# SESSION_SETUP continues with MORE_PROCESSING_REQUIRED; READ/QUERY_INFO/IOCTL/QUERY_DIRECTORY/
# CHANGE_NOTIFY may return partial data with BUFFER_OVERFLOW; CHANGE_NOTIFY also NOTIFY_ENUM_DIR.
_OWN_RESPONSE_STATUSES: dict[int, set[int]] = {
    Command.SESSION_SETUP: {NtStatus.MORE_PROCESSING_REQUIRED},
    Command.READ: {NtStatus.BUFFER_OVERFLOW},
    Command.QUERY_INFO: {NtStatus.BUFFER_OVERFLOW},
    # a server-side copy that stops at a bad chunk answers with an SRV_COPYCHUNK_RESPONSE (§3.3.5.15.6.1)
    Command.IOCTL: {NtStatus.BUFFER_OVERFLOW, NtStatus.INVALID_PARAMETER, NtStatus.INVALID_VIEW_SIZE,
                    NtStatus.FILE_LOCK_CONFLICT},
    Command.QUERY_DIRECTORY: {NtStatus.BUFFER_OVERFLOW},
    Command.CHANGE_NOTIFY: {NtStatus.BUFFER_OVERFLOW, NtStatus.NOTIFY_ENUM_DIR},
}


def is_error_response(command: int, status: int, body: bytes) -> bool:
    """Whether a response body is an SMB2 ERROR structure (§2.2.2) rather than the command's own.

    Interim STATUS_PENDING responses are ERROR structures too.  IOCTL may answer
    INVALID_PARAMETER with a full IOCTL response (copychunk limits, §3.3.5.15.6), hence the size check.
    """
    if status == NtStatus.SUCCESS:
        return False
    if status in _OWN_RESPONSE_STATUSES.get(command, ()):
        (size,) = unpack_from(_U16, body, 0, "response body")
        return size == 9 and command == Command.IOCTL
    return True


def decode_body(command: int, is_response: bool, data: bytes | memoryview, status: int = 0) -> Message:
    """Decode one body given its header's Command, direction and Status.

    ``data`` may be a memoryview of the received PDU: the decoders only slice it and unpack with
    ``struct``, which a view supports, so a 1 MiB READ or WRITE body is not copied to be decoded."""
    body = cast(bytes, data)
    if is_response and is_error_response(command, status, body):
        return ErrorResponse.unpack(body)
    candidates = REGISTRY.get((command, is_response))
    if not candidates:
        raise malformed(f"no decoder for command 0x{command:04x} ({'response' if is_response else 'request'})")
    if len(candidates) == 1:
        return candidates[0].unpack(body)
    (size,) = unpack_from(_U16, body, 0, "body")
    for cls in candidates:
        if cls.STRUCTURE_SIZE == size:
            return cls.unpack(body)
    raise malformed(f"command 0x{command:04x}: no structure of size {size}")



__all__ = [
    "BufferDescriptorV1",
    "CancelRequest",
    "ChangeNotifyRequest",
    "ChangeNotifyResponse",
    "CloseRequest",
    "CloseResponse",
    "CompressionCapabilities",
    "CreateContext",
    "CreateRequest",
    "CreateResponse",
    "EchoRequest",
    "EchoResponse",
    "EncryptionCapabilities",
    "ErrorContext",
    "ErrorResponse",
    "FixedMessage",
    "FlushRequest",
    "FlushResponse",
    "IoctlRequest",
    "IoctlResponse",
    "LeaseBreakAcknowledgment",
    "LeaseBreakNotification",
    "LeaseBreakResponse",
    "LockElement",
    "LockRequest",
    "LockResponse",
    "LogoffRequest",
    "LogoffResponse",
    "Message",
    "NegotiateRequest",
    "NegotiateResponse",
    "NetnameContext",
    "NetworkInterfaceInfo",
    "OplockBreakAcknowledgment",
    "OplockBreakNotification",
    "OplockBreakResponse",
    "PreauthIntegrityCapabilities",
    "QueryDirectoryRequest",
    "QueryDirectoryResponse",
    "QueryInfoRequest",
    "QueryInfoResponse",
    "REGISTRY",
    "RawNegotiateContext",
    "RdmaTransformCapabilities",
    "ReadRequest",
    "ReadResponse",
    "SessionSetupRequest",
    "SessionSetupResponse",
    "SetInfoRequest",
    "SetInfoResponse",
    "SigningCapabilities",
    "TransportCapabilities",
    "TreeConnectContext",
    "TreeConnectRequest",
    "TreeConnectResponse",
    "TreeDisconnectRequest",
    "TreeDisconnectResponse",
    "ValidateNegotiateInfoRequest",
    "ValidateNegotiateInfoResponse",
    "WriteRequest",
    "WriteResponse",
    "all_message_classes",
    "decode_body",
    "is_error_response",
    "pack_create_contexts",
    "unpack_create_contexts",
]
