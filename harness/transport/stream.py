"""Framed PDUs over a stream socket: Direct TCP (port 445) and the NetBIOS session service (139).

Why the limit is checked on the 4-byte header: a peer that announces 16 MiB must not make us
allocate or read 16 MiB (an oversized frame is refused without being buffered), so the
length is compared with ``max_recv`` before the body is read, and the connection is then unusable.
Every blocking call has a timeout (``io_timeout`` for a started frame, the caller's for the next).
"""

from __future__ import annotations

import array
import fcntl
import select
import socket
import termios
from typing import cast

from harness.smb.framing import MAX_DIRECT_TCP, MAX_NBSS, Framing, frame

from .base import FrameTooLarge, Transport, TransportClosed, TransportError, TransportUnavailable

NBSS_SESSION_MESSAGE = 0x00
NBSS_SESSION_REQUEST = 0x81
NBSS_POSITIVE_RESPONSE = 0x82
NBSS_NEGATIVE_RESPONSE = 0x83
NBSS_RETARGET = 0x84
NBSS_KEEPALIVE = 0x85


class StreamTransport(Transport):
    def __init__(self, sock: socket.socket, framing: Framing = Framing.DIRECT_TCP, name: str = "tcp",
                 io_timeout: float = 60.0) -> None:
        self.sock = sock
        self.framing = framing
        self.name = name
        self.io_timeout = io_timeout
        self.max_recv = MAX_DIRECT_TCP if framing is Framing.DIRECT_TCP else MAX_NBSS
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        try:
            self.peer = sock.getpeername()
            self.local = sock.getsockname()
        except OSError:
            pass
        self._closed = False
        self._frame_left: int | None = None  # bytes of the frame being read still unread; None between frames

    # ---------------------------------------------------------------- sending

    def send_pdu(self, pdu: bytes, *, invalidate_token: int | None = None) -> None:
        if invalidate_token is not None:
            raise TransportUnavailable(f"{self.name} has no RDMA: no SEND with Invalidate")
        if len(pdu) < 65536:
            self.send_frame(frame(pdu, self.framing))
            return
        # Large PDUs: send the 4-byte header and the message from their own buffers (no 1 MiB copy).
        limit = 0xFFFFFF if self.framing is Framing.DIRECT_TCP else 0x1FFFF
        if len(pdu) > limit:
            raise ValueError(f"{len(pdu)} bytes do not fit the {self.framing.value} length")
        if self.framing is Framing.DIRECT_TCP:
            header = b"\x00" + len(pdu).to_bytes(3, "big")
        else:
            header = bytes((0, len(pdu) >> 16)) + (len(pdu) & 0xFFFF).to_bytes(2, "big")
        self._send_parts([header, pdu])

    def _send_parts(self, parts: list) -> None:
        if self._closed:
            raise TransportClosed("closed")
        self.sock.settimeout(self.io_timeout)
        views = [memoryview(p) for p in parts]
        try:
            while views:
                sent = self.sock.sendmsg(views)
                while views and sent >= len(views[0]):
                    sent -= len(views[0])
                    views.pop(0)
                if views and sent:
                    views[0] = views[0][sent:]
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise TransportClosed(str(exc)) from exc
        except OSError as exc:
            if isinstance(exc, TimeoutError):
                raise
            raise TransportError(str(exc)) from exc

    def send_frame(self, data: bytes) -> None:
        if self._closed:
            raise TransportClosed("closed")
        self.sock.settimeout(self.io_timeout)
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise TransportClosed(str(exc)) from exc
        except OSError as exc:
            if isinstance(exc, TimeoutError):
                raise
            raise TransportError(str(exc)) from exc

    # ---------------------------------------------------------------- receiving

    def _read_exact(self, count: int, first_timeout: float | None) -> bytes:
        buf = bytearray(count)
        view = memoryview(buf)
        got = 0
        self.sock.settimeout(first_timeout)
        while got < count:
            try:
                n = self.sock.recv_into(view[got:], count - got)
            except (ConnectionResetError, BrokenPipeError) as exc:
                raise TransportClosed(str(exc)) from exc
            except TimeoutError:
                raise
            except OSError as exc:
                raise TransportError(str(exc)) from exc
            if n == 0:
                raise TransportClosed("peer closed the connection" + (" mid-frame" if got else ""))
            got += n
            if self._frame_left is not None:
                self._frame_left -= n
            if got < count:
                self.sock.settimeout(self.io_timeout)
        # a bytearray: every consumer only needs bytes-like (slices, struct, memoryview), and a copy
        # into bytes would cost a pass over each 1 MiB READ/WRITE
        return cast(bytes, buf)

    def recv_frame(self, timeout: float | None = None) -> tuple[int, bytes]:
        """(frame type, payload); checks the limit before reading the payload."""
        header = self._read_exact(4, timeout)
        kind = header[0]
        if self.framing is Framing.DIRECT_TCP:
            if kind != 0:
                raise TransportError(f"Direct TCP frame type 0x{kind:02x}")
            length = int.from_bytes(header[1:4], "big")
        else:
            if header[1] & 0xFE:
                raise TransportError(f"NBSS flags 0x{header[1]:02x}")
            length = ((header[1] & 1) << 16) | int.from_bytes(header[2:4], "big")
        if length > self.max_recv:
            self.close()
            raise FrameTooLarge(f"frame of {length} bytes exceeds the limit of {self.max_recv}")
        if not length:
            return kind, b""
        self._frame_left = length
        try:
            return kind, self._read_exact(length, self.io_timeout)
        finally:
            self._frame_left = None

    def recv_pdu(self, timeout: float | None = None) -> bytes:
        while True:
            kind, payload = self.recv_frame(timeout)
            if kind == NBSS_SESSION_MESSAGE:
                return payload
            if kind == NBSS_KEEPALIVE and self.framing is Framing.NBSS:
                continue
            raise TransportError(f"unexpected frame type 0x{kind:02x}")

    def whole_pdu_waiting(self) -> bool:
        """The kernel holds the rest of the frame being read, or at least a next frame's 4-byte
        header (taken for the whole frame until the reader has read the header and knows the
        length: reading or peeking here could race the reader)."""
        if self._closed:
            return False
        try:
            unread = array.array("i", [0])
            fcntl.ioctl(self.sock.fileno(), termios.FIONREAD, unread)
        except (OSError, ValueError):
            return False
        left = self._frame_left
        return unread[0] >= (4 if left is None else left) > 0

    def peer_gone(self) -> bool:
        """The peer's FIN or RST has arrived and no byte is left unread (poll with POLLRDHUP, then
        FIONREAD): asked by another thread than the reader, so it only looks, it never reads."""
        if self._closed:
            return True
        try:
            poller = select.poll()
            poller.register(self.sock.fileno(), select.POLLIN | select.POLLRDHUP)
            events = poller.poll(0)
            if not events or not events[0][1] & (select.POLLRDHUP | select.POLLHUP | select.POLLERR):
                return False
            unread = array.array("i", [0])
            fcntl.ioctl(self.sock.fileno(), termios.FIONREAD, unread)
            return unread[0] == 0
        except (OSError, ValueError):
            return True  # the socket is already closed here

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
