"""Direct TCP (MS-SMB2 §2.1, port 445) and NetBIOS session service (RFC 1002, port 139).

NetBIOS adds one exchange before SMB: the client sends SESSION REQUEST (called and calling names,
first-level encoded) and the server answers POSITIVE SESSION RESPONSE; either side may send
SESSION KEEP ALIVE at any time, which the receiver skips.  Names are not checked by our server
(it answers any called name, as Samba does for *SMBSERVER).
"""

from __future__ import annotations

import socket

from harness.smb.framing import Framing

from .base import Listener, TransportError
from .stream import NBSS_KEEPALIVE, NBSS_POSITIVE_RESPONSE, NBSS_SESSION_REQUEST, StreamTransport


def netbios_name(name: str, suffix: int = 0x20) -> bytes:
    """First-level encoding (RFC 1001 §14.1): 16 bytes (15 space-padded + suffix) as 32 half-ASCII
    letters, prefixed by the length 0x20 and terminated by the empty label."""
    raw = name.upper()[:15].ljust(15).encode("ascii", "replace") + bytes([suffix])
    encoded = bytes(ch for byte in raw for ch in (0x41 + (byte >> 4), 0x41 + (byte & 0xF)))
    return b"\x20" + encoded + b"\x00"


def _resolve(host: str, port: int) -> tuple:
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return info[0]


def connect_stream(host: str, port: int, kind: str = "tcp", timeout: float = 30.0, called_name: str = "*SMBSERVER",
                   calling_name: str = "WIRECHECK") -> StreamTransport:
    family, socktype, proto, _, address = _resolve(host, port)
    sock = socket.socket(family, socktype, proto)
    sock.settimeout(timeout)
    try:
        sock.connect(address)
    except OSError:
        sock.close()
        raise
    if kind == "tcp":
        return StreamTransport(sock, Framing.DIRECT_TCP, "tcp", io_timeout=timeout)
    transport = StreamTransport(sock, Framing.NBSS, "nbt", io_timeout=timeout)
    request = netbios_name(called_name) + netbios_name(calling_name, 0x00)
    transport.send_frame(bytes((NBSS_SESSION_REQUEST, 0)) + len(request).to_bytes(2, "big") + request)
    kind_byte, payload = transport.recv_frame(timeout)
    if kind_byte != NBSS_POSITIVE_RESPONSE:
        transport.close()
        raise TransportError(f"NetBIOS session refused: type 0x{kind_byte:02x} {payload.hex()}")
    return transport


class StreamListener(Listener):
    def __init__(self, host: str, port: int, kind: str = "tcp", backlog: int = 64, io_timeout: float = 120.0) -> None:
        family, socktype, proto, _, address = _resolve(host, port)
        self.sock = socket.socket(family, socktype, proto)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(address)
        self.sock.listen(backlog)
        self.address = self.sock.getsockname()
        self.kind = kind
        self.io_timeout = io_timeout

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self, timeout: float | None = None) -> StreamTransport:
        self.sock.settimeout(timeout)
        conn, _ = self.sock.accept()
        if self.kind == "tcp":
            return StreamTransport(conn, Framing.DIRECT_TCP, "tcp", io_timeout=self.io_timeout)
        transport = StreamTransport(conn, Framing.NBSS, "nbt", io_timeout=self.io_timeout)
        # The session request comes first (keepalives may precede it).
        while True:
            kind, _payload = transport.recv_frame(self.io_timeout)
            if kind == NBSS_KEEPALIVE:
                continue
            if kind != NBSS_SESSION_REQUEST:
                transport.close()
                raise TransportError(f"NetBIOS: expected SESSION REQUEST, got 0x{kind:02x}")
            transport.send_frame(bytes((NBSS_POSITIVE_RESPONSE, 0, 0, 0)))
            return transport

    def close(self) -> None:
        # shutdown first: a thread blocked in accept() keeps a closed socket listening until it
        # returns, and a server restarted on the same port would get EADDRINUSE meanwhile.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
