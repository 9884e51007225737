"""Stream data and events of a QuicSocket: sendmsg/recvmsg and their short forms, in quic.ko's order.

Part of QuicSocket (sock.py), split off so that each file holds one concern: here the data path. The
receive queue keeps quic.ko's order (an event that arrives while stream data is queued moves ahead of
that data, handshake items ahead of both); a partial read keeps the rest at the head.
"""

from __future__ import annotations

import _socket
import errno
import select
import socket
import time
from collections import deque
from typing import Any

from . import constants as C
from . import uapi
from .core import (
    ITEM,
    K_DATA,
    K_DGRAM,
    K_EVENT,
    K_HS,
    K_PURGE,
    K_WAKE,
    err,
)
from .sockparts import QuicSocketParts

SOL_SOCKET = socket.SOL_SOCKET


#: What a socket holds outside the engine's pair, in bytes and in items (each one message: a STREAM
#: frame's data, an event, a datagram or a handshake message): with the pair's own buffer, the
#: receive buffer (quic.ko's default rcvbuf is 1 MiB).
QUEUE_BYTES = 1 << 20
QUEUE_ITEMS = 1024


def _joined(buffers: Any) -> bytes:
    """The message as one bytes object, copied once: a 1 MiB SMB WRITE handed over as header and body
    was copied twice (each buffer, then the join). One bytes buffer is used as it is."""
    if isinstance(buffers, (bytes, bytearray)):
        return bytes(buffers)
    if not isinstance(buffers, (list, tuple)):
        buffers = list(buffers)  # an iterator: join and the fallback must both see every buffer
    try:
        return b"".join(buffers)
    except TypeError:  # what bytes() takes and join does not (an int, a non-contiguous buffer...)
        return b"".join(bytes(b) for b in buffers)


class QuicDataMixin(QuicSocketParts):
    """The send and receive calls of QuicSocket; self is the socket."""

    # -- sending ---------------------------------------------------------------------------------
    def sendmsg(self, buffers: Any, ancdata: Any = (), flags: int = 0, address: Any = None) -> int:  # type: ignore[override]
        if flags & ~C.SEND_FLAGS:
            raise err(errno.EINVAL, f"send flags {flags & ~C.SEND_FLAGS:#x} are not allowed")
        c = self._conn
        if self._state in (C.CLOSED, C.LISTENING) and c is None or c is not None and c.closed:
            raise err(errno.EPIPE)
        info: uapi.StreamInfo | None = None
        hs_level: int | None = None
        for level, ctype, cdata in ancdata or ():
            if level != C.SOL_QUIC:
                continue
            if ctype == C.QUIC_STREAM_INFO:
                info = uapi.StreamInfo.unpack(cdata)
                if info.stream_flags & ~C.STREAM_FLAGS:
                    raise err(errno.EINVAL, "bad stream_flags")
            elif ctype == C.QUIC_HANDSHAKE_INFO:
                hs_level = bytes(cdata)[0] if len(cdata) else 0
            else:
                raise err(errno.EINVAL, f"unknown SOL_QUIC cmsg {ctype}")
        data = _joined(buffers)
        assert c is not None
        if hs_level is not None:
            from . import raw

            return raw.send_handshake(self, hs_level, data, flags)
        nonblock = bool(flags & C.MSG_DONTWAIT) or self._timeout == 0.0
        if flags & C.MSG_QUIC_DATAGRAM:
            return int(self._engine_call(lambda: c.send_datagram(data)))
        if info is None:
            sid, sflags, has = -1, flags & C.STREAM_FLAGS, False
        else:
            sid, sflags, has = info.stream_id, info.stream_flags, True
        if c.is_client and c.quic is None and not c.closed:
            if self._remote_tp is not None and c.early_limits is None:
                c.early_limits = (self._remote_tp.max_streams_bidi, self._remote_tp.max_streams_uni)
            return int(self._engine_call(lambda: c.send_early(sid, sflags, data)))
        return int(self._blocking(lambda: c.send_stream(sid, sflags, data, has, nonblock), nonblock,
                                  self._send_timeout()))

    def send(self, data: Any, flags: int = 0) -> int:  # type: ignore[override]
        return self.sendmsg([data], (), flags)

    def sendall(self, data: Any, flags: int = 0) -> None:  # type: ignore[override]
        self.sendmsg([data], (), flags)

    def sendto(self, data: Any, flags_or_addr: Any, addr: Any = None) -> int:  # type: ignore[override]
        flags = flags_or_addr if isinstance(flags_or_addr, int) else 0
        return self.sendmsg([data], (), flags)

    # -- receiving -------------------------------------------------------------------------------
    def _wait_readable(self, deadline: float | None) -> None:
        if deadline is not None and deadline - time.monotonic() <= 0 or self._timeout == 0.0:
            raise err(errno.EAGAIN)
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        # Another thread may close the socket between the queue check and this wait (a server
        # thread reading while the test or the program tears the connection down): that is the
        # EBADF a kernel socket gives a read on a closed fd, not select()'s ValueError for fd -1.
        fd = self.fileno()
        if fd < 0:
            raise err(errno.EBADF, "the socket was closed")
        try:
            r, _, _ = select.select([fd], [], [], remaining)
        except (ValueError, OSError) as e:
            raise err(errno.EBADF, f"the socket was closed while waiting ({e})") from None
        if not r and deadline is not None and time.monotonic() >= deadline:
            raise err(errno.EAGAIN, "timed out")

    def _drain(self) -> None:
        """Move items from the engine's pair into this socket's queue, up to ``QUEUE_BYTES`` and
        ``QUEUE_ITEMS``: the engine returns stream credit as the pair takes items (loop.py), so what
        stays in the pair is what holds the sender back. Unbounded, a reader that calls in now and
        then (the QUIC daemon checks readiness on every arrival for a native program) would take
        everything, and a peer could send without limit to a program that reads nothing."""
        room = QUEUE_BYTES - sum(len(e[3]) for e in self._q) if self._q else QUEUE_BYTES
        while room > 0 and len(self._q) < QUEUE_ITEMS:
            try:
                m = _socket.socket.recv(self, 1 << 17)
            except BlockingIOError:
                return
            except OSError:
                self._eof = True
                return
            if not m:
                self._eof = True
                return
            kind, flags, sid = ITEM.unpack_from(m)
            if kind == K_WAKE:
                self._wake_out = False
                continue
            if kind == K_PURGE:
                head = self._nhs + self._nev
                keep = [e for i, e in enumerate(self._q) if i < head or not (e[0] == K_DATA and e[1] == sid)]
                self._q = deque(keep)
                continue
            entry = [kind, sid, flags, memoryview(m)[ITEM.size:]]
            if kind == K_HS:  # handshake messages go ahead of everything else, as quic.ko queues them
                self._q.insert(self._nhs, entry)
                self._nhs += 1
            elif kind == K_EVENT:
                self._q.insert(self._nhs + self._nev, entry)
                self._nev += 1
            else:
                self._q.append(entry)
            room -= len(entry[3])

    def recvmsg(self, bufsize: int = 65536, ancbufsize: int = 0, flags: int = 0) -> tuple[bytes, list, int, Any]:  # type: ignore[override]
        if self._state == C.LISTENING:
            raise err(errno.ENOTCONN)
        if self._link is None and not self._q:
            raise err(errno.ENOTCONN)
        c = self._conn
        if c is not None and not c.is_client and c.quic is None and not c.closed:
            from . import raw

            with self._engine.lock:  # an accepted socket read before any handshake: libquic's server
                raw.start(self)
        nonblock = bool(flags & C.MSG_DONTWAIT) or self._timeout == 0.0
        deadline = None if nonblock else self._deadline(self._timeout)
        while True:
            self._drain()
            if self._q:
                break
            if self._eof:
                raise err(errno.ENOTCONN)
            if nonblock:
                raise err(errno.EAGAIN)
            self._wait_readable(deadline)
        peek = bool(flags & C.MSG_PEEK)
        head = self._q[0]
        kind = head[0]
        msg_flags = 0
        anc: list = []
        if kind == K_HS:
            payload = head[3]
            out = bytes(payload[:bufsize])
            whole = len(payload) <= bufsize
            if whole:
                msg_flags |= C.MSG_EOR
            if ancbufsize >= socket.CMSG_SPACE(1):
                anc = [(C.SOL_QUIC, C.QUIC_HANDSHAKE_INFO, bytes([head[2]]))]
            else:
                msg_flags |= C.MSG_CTRUNC
            if not peek:
                if whole:
                    self._q.popleft()
                    self._nhs -= 1
                else:
                    head[3] = payload[bufsize:]
        elif kind in (K_EVENT, K_DGRAM):
            payload = head[3]
            out = bytes(payload[:bufsize])
            whole = len(payload) <= bufsize
            msg_flags |= C.MSG_QUIC_NOTIFICATION if kind == K_EVENT else C.MSG_QUIC_DATAGRAM
            if whole:
                msg_flags |= C.MSG_EOR
            if not peek:
                if whole:
                    self._q.popleft()
                    if kind == K_EVENT:
                        self._nev -= 1
                else:
                    head[3] = payload[bufsize:]
        else:
            sid = head[1]
            parts: list[bytes] = []
            room = bufsize
            fin = 0
            i = 0
            consumed: list[tuple[int, int]] = []
            while i < len(self._q) and room >= 0:
                e = self._q[i]
                if e[0] != K_DATA or e[1] != sid:
                    break
                take = e[3][:room]
                parts.append(bytes(take))
                room -= len(take)
                whole = len(take) == len(e[3])
                consumed.append((i, len(take)))
                if not whole:
                    break
                if e[2] & C.MSG_QUIC_STREAM_FIN:
                    fin = C.MSG_QUIC_STREAM_FIN
                    break
                i += 1
                if room == 0:
                    break
            out = b"".join(parts)
            if not peek:
                for idx, n in reversed(consumed):
                    e = self._q[idx]
                    if n == len(e[3]):
                        del self._q[idx]
                    else:
                        e[3] = e[3][n:]
            if ancbufsize >= uapi.STREAM_INFO_SPACE:
                anc = [(C.SOL_QUIC, C.QUIC_STREAM_INFO, uapi.StreamInfo(sid, fin).pack())]
            else:
                msg_flags |= C.MSG_CTRUNC | fin
            if fin:
                msg_flags |= C.MSG_EOR
        if self._q and not self._wake_out and self._link is not None:
            with self._engine.lock:
                # Re-read under the lock: close() in another thread drops the link and sets it to None.
                link = self._link
                if link is not None:
                    self._wake_out = True
                    self._engine.wake(link)
        return out, anc, msg_flags, self._peer

    def recv(self, bufsize: int = 65536, flags: int = 0) -> bytes:  # type: ignore[override]
        return self.recvmsg(bufsize, 0, flags)[0]

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        data = self.recvmsg(nbytes or len(view), 0, flags)[0]
        view[:len(data)] = data
        return len(data)

    def recvfrom(self, bufsize: int = 65536, flags: int = 0) -> tuple[bytes, Any]:  # type: ignore[override]
        d, _, _, a = self.recvmsg(bufsize, 0, flags)
        return d, a
