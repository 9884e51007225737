"""How one SMB2 message is framed on each transport (MS-SMB2 §2.1, MS-SMBD §2.2.3), as pure
functions and a sans-IO deframer.  The transports call these; nothing here touches a socket.

- Direct TCP (445) and QUIC: ``0x00`` + 24-bit big-endian length (§2.1).
- NetBIOS session service (139): type byte, flags byte whose bit 0 is length bit 16, 16-bit length:
  17 bits in all (RFC 1002).
- SMB Direct: no header at all; the SMB2 message is the SMBD data-transfer payload (MS-SMBD §2.2.3).
"""

from __future__ import annotations

from enum import Enum

from .errors import malformed

MAX_DIRECT_TCP = 0xFFFFFF
MAX_NBSS = 0x1FFFF
NBSS_SESSION_MESSAGE = 0x00


class Framing(Enum):
    DIRECT_TCP = "direct_tcp"  # also QUIC
    NBSS = "nbss"
    SMB_DIRECT = "smb_direct"


def frame(message: bytes, framing: Framing = Framing.DIRECT_TCP) -> bytes:
    length = len(message)
    if framing is Framing.SMB_DIRECT:
        return bytes(message)
    if framing is Framing.DIRECT_TCP:
        if length > MAX_DIRECT_TCP:
            raise ValueError(f"{length} bytes do not fit the 24-bit Direct-TCP length")
        return b"\x00" + length.to_bytes(3, "big") + message
    if length > MAX_NBSS:
        raise ValueError(f"{length} bytes do not fit the 17-bit NBSS length")
    return bytes((NBSS_SESSION_MESSAGE, length >> 16)) + (length & 0xFFFF).to_bytes(2, "big") + message


def frame_length(prefix: bytes, framing: Framing = Framing.DIRECT_TCP) -> tuple[int, int]:
    """(message type, payload length) from a 4-byte transport header."""
    if len(prefix) < 4:
        raise malformed("transport header: need 4 bytes")
    if framing is Framing.DIRECT_TCP:
        if prefix[0] != 0:
            raise malformed(f"Direct TCP: first byte 0x{prefix[0]:02x}, must be 0")
        return 0, int.from_bytes(prefix[1:4], "big")
    if framing is Framing.NBSS:
        if prefix[1] & 0xFE:
            raise malformed(f"NBSS: reserved flag bits set (0x{prefix[1]:02x})")
        return prefix[0], ((prefix[1] & 1) << 16) | int.from_bytes(prefix[2:4], "big")
    raise ValueError("SMB Direct messages have no transport header")


class Deframer:
    """Accumulates stream bytes and yields whole messages: ``feed(data)`` returns the list of
    (type, payload) that are complete.  Sans-IO: the caller reads the socket."""

    def __init__(self, framing: Framing = Framing.DIRECT_TCP) -> None:
        if framing is Framing.SMB_DIRECT:
            raise ValueError("SMB Direct is message-oriented: no deframing")
        self.framing = framing
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buffer += data
        messages = []
        while len(self._buffer) >= 4:
            kind, length = frame_length(bytes(self._buffer[:4]), self.framing)
            if len(self._buffer) < 4 + length:
                break
            messages.append((kind, bytes(self._buffer[4 : 4 + length])))
            del self._buffer[: 4 + length]
        return messages
