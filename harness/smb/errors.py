"""Every exception the SMB stack raises, under one root: :class:`SMBStackError`.

Why one root: a caller (an I/O adapter, a scenario operation, a test) that only wants to know "the
SMB exchange failed" catches ``SMBStackError`` and is sure not to let a protocol, status, auth or
reconnect failure slip past, nor to swallow an unrelated bug (``TypeError``, ``KeyError``).  The
branches say what went wrong, so a caller that cares can still tell them apart:

- :class:`SMBProtocolError`: malformed or unacceptable bytes.  Every decoding failure is one,
  carrying the NTSTATUS a server would answer with (MS-SMB2 §3.3.5.2: malformed requests get
  STATUS_INVALID_PARAMETER; a client that cannot parse a response treats it as
  STATUS_INVALID_NETWORK_RESPONSE), never ``struct.error`` or ``IndexError``.
- :class:`SMBStatusError`: well-formed, but the operation fails with an NTSTATUS (a server
  handler's answer, a share refusing a name, a client request the server failed).
- :class:`Disconnect`: the server must drop the connection without a reply (the spec's
  "disconnect", e.g. §3.3.5.2.1.1, §3.3.5.15.12).
- :class:`AuthError`: authentication failed (the server answers STATUS_LOGON_FAILURE).
- :class:`ReconnectError`: a client could not get its session and opens back after losing the
  transport (§3.2.4.4); the resilient client's failure derives from it.
"""

from __future__ import annotations

STATUS_INVALID_PARAMETER = 0xC000000D
STATUS_ACCESS_DENIED = 0xC0000022
STATUS_AUTH_TAG_MISMATCH = 0xC000A002


class SMBStackError(Exception):
    """The root: anything the SMB stack raises on purpose."""


class SMBProtocolError(SMBStackError):
    """Malformed or unacceptable SMB2 input.  ``status`` is the NTSTATUS to report for it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{message} (status 0x{status:08X})")
        self.status = status
        self.message = message


class SMBSignatureError(SMBProtocolError):
    """A message signature did not verify (§3.2.5.1.3 / §3.3.5.2.4: server answers ACCESS_DENIED)."""

    def __init__(self, message: str) -> None:
        super().__init__(STATUS_ACCESS_DENIED, message)


class SMBDecryptionError(SMBProtocolError):
    """A TRANSFORM_HEADER did not decrypt or failed its checks (§3.3.5.2.1.1: disconnect)."""

    def __init__(self, message: str) -> None:
        super().__init__(STATUS_AUTH_TAG_MISMATCH, message)


class SMBStatusError(SMBStackError):
    """An operation fails with ``status`` (an NTSTATUS); the message says why, for people."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message or f"0x{status:08X}")
        self.status = status


class Fail(SMBStatusError):
    """A server request fails with ``status`` (the server answers with an ERROR response)."""


class Disconnect(SMBStackError):
    """The server must drop the connection without a reply (the spec's "disconnect")."""


class AuthError(SMBStackError):
    """Authentication failed (the server answers STATUS_LOGON_FAILURE)."""


class MalformedTokenError(AuthError):
    """A security token the authentication code could not even parse (a timestamp out of range,
    a truncated structure): the server answers STATUS_INVALID_PARAMETER, as Samba does, rather
    than LOGON_FAILURE, which says the credentials were wrong."""


class ReconnectError(SMBStackError):
    """A client could not reconnect its session and durable opens after a transport loss."""


def malformed(message: str) -> SMBProtocolError:
    """The error for structurally invalid input (STATUS_INVALID_PARAMETER, §3.3.5.2)."""
    return SMBProtocolError(STATUS_INVALID_PARAMETER, message)
