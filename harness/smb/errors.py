"""Exceptions raised by the SMB codec and crypto.

Every decoding failure is an :class:`SMBProtocolError` carrying the NTSTATUS a server would answer
with (MS-SMB2 §3.3.5.2: malformed requests get STATUS_INVALID_PARAMETER; a client that cannot parse a
response treats it as STATUS_INVALID_NETWORK_RESPONSE).  Callers therefore catch one type, never
``struct.error`` or ``IndexError``.
"""

from __future__ import annotations

STATUS_INVALID_PARAMETER = 0xC000000D
STATUS_ACCESS_DENIED = 0xC0000022
STATUS_AUTH_TAG_MISMATCH = 0xC000A002


class SMBProtocolError(Exception):
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


def malformed(message: str) -> SMBProtocolError:
    """The error for structurally invalid input (STATUS_INVALID_PARAMETER, §3.3.5.2)."""
    return SMBProtocolError(STATUS_INVALID_PARAMETER, message)
