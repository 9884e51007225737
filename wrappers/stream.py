"""Emulated TCP: connection set-up, data, shutdown, and what the pcap shows of them.

Theory of operation: a connection is a unix stream socket pair; the pcap view is a TcpFlow
(tcplog.py) that both ends keep in step. Who records which segment follows recorder.py: the
sender records its data and FIN when it logs to the same pcap, else the receiver does. A send
that records takes the pcap lock around "send without blocking, write the record", so a reply
never precedes its request in the file. Impaired connections (impair/) send through a
StreamShaper queue (stream_shaper.py) that a timer drains, so delays never sleep the application;
a cut is an RST (both ends see ECONNRESET: the reset marker tells the peer it was no FIN) or a
silent blackhole.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import socket as _socket_mod
import time
from typing import Any

from . import impair, markers
from .dualstack import accepted_local, peer_view
from .meta import SocketMeta
from .sockbase import (
    _MSG_DONTWAIT,
    _MSG_PEEK,
    _POLLIN,
    _POLLOUT,
    _POLLRDHUP,
    _SIOCINQ,
    _SOL_SOCKET,
    _UCRED,
    AF_UNIX,
    SOCK_STREAM,
    SocketParts,
    _orig_socket,
    _oserror,
    _schedule,
)
from .tcplog import TcpFlow


class StreamMixin(SocketParts):
    """Part of WrappedSocket (socket_wrapper.py); self is the socket."""

    __slots__ = ()

    def listen(self, backlog: int = 128) -> None:
        if self._sw is None:
            return super().listen(backlog)
        m = self._sw
        if m.sotype != SOCK_STREAM:
            raise _oserror(errno.EOPNOTSUPP)
        self._autobind()
        _orig_socket.listen(self, backlog)
        m.listening = True

    def _connect_stream(self, address: Any) -> None:
        m = self._sw
        assert m is not None
        if m.unix_connected:
            raise _oserror(errno.EISCONN)
        if m.listening:
            raise _oserror(errno.EINVAL)
        path, peer = self._remote(address, "connect")
        self._autobind(peer=peer)
        rec = self._sw_rec
        # The handshake's records are built before the pcap lock is taken (a fresh flow's numbers
        # depend on nothing another process does): under the lock only the connect and one
        # append remain, so a peer that wants the lock (an acceptor closing at once) waits less.
        flow = handshake = None
        if rec is not None:
            flow = TcpFlow(*self._wire(peer))
            handshake = flow.handshake("local")

        def attempt() -> None:
            try:
                if rec is None:
                    _orig_socket.connect(self, path)
                else:
                    # Never wait for a listener's backlog while holding the pcap lock; the mode
                    # is switched outside the hold, which keeps only the connect and one append.
                    blocking = self._sw_timeout is None
                    if blocking:
                        _orig_socket.settimeout(self, 0.0)
                    try:
                        with rec.locked():
                            _orig_socket.connect(self, path)
                            self._connected(peer, path, flow, handshake)
                    finally:
                        if blocking:
                            _orig_socket.settimeout(self, None)
                    return
            except FileNotFoundError:
                self._log_failed_connect(peer)
                raise _oserror(errno.EHOSTUNREACH) from None
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EINPROGRESS):
                    raise BlockingIOError(errno.EAGAIN, "listener backlog full") from None
                if e.errno == errno.EPROTOTYPE:
                    raise _oserror(errno.EHOSTUNREACH, "not a stream socket at that address") from None
                raise
            self._connected(peer, path)

        # A full listener backlog is transient for TCP (SYN retries); wait for room even in
        # non-blocking mode, for at most the socket timeout or 3 s.
        deadline = time.monotonic() + (self._sw_timeout if self._sw_timeout else 3.0)
        while True:
            try:
                return attempt()
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError("timed out") from None
                time.sleep(0.001)

    def _connected(self, peer: tuple, path: str, flow: Any = None, handshake: Any = None) -> None:
        """The connection is up; with a pcap, log the handshake (``flow`` and its ``handshake``
        records when the caller built them ahead, under the pcap lock the caller holds)."""
        m = self._sw
        assert m is not None
        m.peer, m.peer_path, m.unix_connected = peer, path, True
        rec = self._sw_rec
        if rec is not None:
            if flow is None:
                flow = TcpFlow(*self._wire(peer))
                handshake = flow.handshake("local")
            m.peer_logs = None  # decided at the first receive: the acceptor may not be the listener's creator
            m.flow = flow
            rec.write(handshake)
        self._arm_timed_cut()

    def _log_failed_connect(self, peer: tuple) -> None:
        rec = self._sw_rec
        m = self._sw
        if rec is None or m is None or m.local is None:
            return
        syn = TcpFlow(*self._wire(peer)).handshake("local")[0]
        rec.write([syn])
        rec.icmp_unreachable(syn, m.family)

    def _peer_logs(self) -> bool:
        """Does the process at the other end log its own sends? (recorder.py)

        A client learns it lazily: SO_PEERCRED names the process that called listen(), which need
        not be the one that accepted (a listener passed to a worker), so the acceptor leaves its
        pid in .wirecheck/accepted/<client name> and the client reads it at its first receive.
        """
        m = self._sw
        assert m is not None
        if m.peer_logs is None:
            pid = markers.acceptor_of(m)
            m.peer_pid = pid if pid is not None else self._peer_pid()
            m.peer_logs = bool(self._sw_rec and self._sw_rec.peer_logs(m.peer_pid))
        return bool(m.peer_logs)

    def _peer_pid(self) -> int | None:
        try:
            cred = _orig_socket.getsockopt(self, _SOL_SOCKET, _socket_mod.SO_PEERCRED, _UCRED.size)
            return _UCRED.unpack(cred)[0] or None
        except OSError:
            return None

    def accept(self) -> tuple[Any, Any]:
        if self._sw is None:
            return super().accept()
        m = self._sw
        if not m.listening:
            raise _oserror(errno.EINVAL)
        fd, unix_addr = self._io(lambda: self._accept(), _POLLIN)  # type: ignore[attr-defined]
        peer = peer_view(self._net, m.family, m.reach, unix_addr) if isinstance(unix_addr, str) and unix_addr else None
        if peer is None:
            # cwrap cannot name an unbound client either; it fails accept() and the client sees a reset.
            os.close(fd)
            raise _oserror(errno.EINVAL, "connecting unix socket has no socket_wrapper name")
        child = type(self).__new__(type(self))
        child._sw_closed = False
        _orig_socket.__init__(child, AF_UNIX, m.sotype, 0, fd)
        local = accepted_local(self._net, m.family, m.local, m.local_iface, peer)
        cm = SocketMeta(m.family, m.sotype, m.proto, m.socket_dir, local=local, local_iface=m.local_iface,
                        peer=peer, peer_path=unix_addr, unix_connected=True, accepted=True,
                        bound_path=m.bound_path)  # the listener's name: never unlinked by a child
        cm.options = {k: v for k, v in m.options.items() if k[0] != _SOL_SOCKET}
        child._emulate(self._sw_cfg, cm, fresh=True)
        child._set_timeout(_socket_mod.getdefaulttimeout(), fresh=True)  # as CPython: the default, not the listener's
        if m.sotype == SOCK_STREAM:
            child._set_buffers()
        rec = child._sw_rec
        if rec is not None:
            cm.peer_pid = child._peer_pid()
            cm.peer_logs = rec.peer_logs(cm.peer_pid)
            if m.shared:
                # The client's SO_PEERCRED names whoever called listen(): tell it who accepted.
                markers.note_acceptor(cm)
            cm.flow = TcpFlow(*child._wire(peer))
            if cm.peer_logs:
                cm.flow.advance("in", 1)  # the client logged SYN, SYN/ACK, ACK: count the SYNs only
                cm.flow.advance("out", 1)
            else:
                with rec.locked():
                    rec.write(cm.flow.handshake("remote"))
        child._arm_timed_cut()
        return child, peer

    def _peer_logged_stream(self, m: SocketMeta) -> bool:
        """A blocking, logged connection whose peer logs what it sends (so receiving logs nothing,
        only counts), with nothing impaired, cut or finished: recv may sleep in the kernel."""
        return (m.peer_logs is True and self._sw_timeout is None and m.flow is not None and m.cut is None
                and not m.reset and not m.fin_seen and m.unix_connected and not m.listening
                and impair.current() is None)

    def _recv_peer_logged_into(self, buffer: Any, nbytes: int) -> int:
        """The receive fast path of a logged connection (see _peer_logged_stream): one blocking
        recv_into and the count the acks need, instead of poll + non-blocking recv; 0 sends the
        caller to the full path (EOF, or an fd a dup made non-blocking)."""
        m = self._sw
        assert m is not None and m.flow is not None
        try:
            n = _orig_socket.recv_into(self, buffer, nbytes)
        except BlockingIOError:
            return 0
        except ConnectionResetError:
            self._on_reset_received()
            raise
        if n:
            m.flow.note_received(n)
        return n

    def _stream_check_send(self) -> None:
        m = self._sw
        assert m is not None
        if not m.unix_connected:
            raise _oserror(errno.EPIPE if m.fin_sent else errno.ENOTCONN)
        if m.reset or m.cut == "rst":
            raise _oserror(errno.ECONNRESET)
        if m.fin_sent:
            raise _oserror(errno.EPIPE)

    def _plain_stream(self, m: SocketMeta) -> bool:
        """Nothing to log, impair or refuse: the fast paths may go straight to the kernel."""
        return (m.sotype == SOCK_STREAM and self._sw_rec is None and m.unix_connected and not m.fin_sent
                and not m.reset and m.cut is None and m.shaper is None and not m.listening
                and impair.current() is None)

    def _send_stream(self, data: Any, flags: int) -> int:
        m = self._sw
        assert m is not None
        self._stream_check_send()
        view = data if isinstance(data, bytes) else memoryview(data).cast("B")
        if m.shaper is not None or m.cut is not None:
            return self._send_shaped(view, flags, self._impairer("out"))
        imp = self._impairer("out")
        if imp is not None:
            return self._send_shaped(view, flags, imp)
        rec = self._sw_rec
        if rec is None:
            return self._io(lambda: _orig_socket.send(self, view, flags | _MSG_DONTWAIT), _POLLOUT, flags)

        def attempt() -> int:
            with rec.locked():
                n = _orig_socket.send(self, view, flags | _MSG_DONTWAIT)
                if m.flow is not None and n:
                    rec.write(m.flow.data("out", view[:n]))
                return n

        return self._io(attempt, _POLLOUT, flags)

    def _push(self, view: memoryview) -> int:
        """Send what the socket takes now, log it; 0 when full. (The shaper's way out.)"""
        m = self._sw
        assert m is not None
        rec = self._sw_rec
        try:
            if rec is None:
                return _orig_socket.send(self, view, _MSG_DONTWAIT)
            with rec.locked():
                n = _orig_socket.send(self, view, _MSG_DONTWAIT)
                if m.flow is not None and n:
                    rec.write(m.flow.data("out", view[:n]))
                return n
        except BlockingIOError:
            return 0

    def _send_shaped(self, view: Any, flags: int, imp: Any) -> int:
        """send() on an impaired connection: through the shaper's queue (stream_shaper.py)."""
        from .impair import StreamFate
        from .stream_shaper import StreamShaper

        m = self._sw
        assert m is not None
        if m.cut == "blackhole":
            return len(view)
        if m.cut == "rst" or m.reset:
            raise _oserror(errno.ECONNRESET)
        if m.shaper is None:
            m.shaper = StreamShaper(self._push, self._cut)
        shaper = m.shaper
        if shaper.failed is not None:
            raise shaper.failed
        if shaper.room() == 0:
            if self._sw_timeout == 0.0 or flags & _MSG_DONTWAIT:
                raise _oserror(errno.EAGAIN)
            if not shaper.wait_for_room(self._deadline()):
                raise TimeoutError("timed out")
        chunk = view[: shaper.room()]
        now = time.monotonic()
        fate = imp.on_send(now, len(chunk)) if imp is not None else StreamFate(len(chunk))
        if fate.allowed == 0 and fate.cut is not None and m.cut is not None:
            if m.cut == "rst":
                raise _oserror(errno.ECONNRESET)
            return len(chunk)
        shaper.enqueue(now + fate.delay, bytes(chunk[: fate.allowed]), fate.cut)
        return len(chunk)

    def _arm_timed_cut(self) -> None:
        """A cut at a time must happen even on an idle connection: a timer carries it out."""
        imp = self._impairer("out")
        deadline = getattr(imp, "cut_deadline", None)
        if deadline is None:
            return

        def fire() -> None:
            m = self._sw
            if m is None or m.closed or m.cut is not None:
                return
            kind = imp.cut_pending(time.monotonic())
            if kind is not None:
                from .stream_shaper import StreamShaper

                if m.shaper is None:
                    m.shaper = StreamShaper(self._push, self._cut)
                m.shaper.enqueue(time.monotonic(), None, kind)

        _schedule(deadline, fire)

    def _cut(self, how: str) -> None:
        """Cut the connection: "rst" resets both ends, "blackhole" silently stops all traffic."""
        m = self._sw
        assert m is not None
        if m.cut is not None:
            return
        m.cut = how
        if how == "rst":
            rec = self._sw_rec
            if rec is not None and m.flow is not None:
                with rec.locked():
                    rec.write(m.flow.rst("out"))
            markers.write_reset_marker(m)
            try:
                _orig_socket.shutdown(self, _socket_mod.SHUT_RDWR)
            except OSError:
                pass
            m.reset = True

    def sendall(self, data: Any, flags: int = 0) -> None:
        if self._sw is None:
            return super().sendall(data, flags)
        view = memoryview(data).cast("B")
        deadline = self._deadline()
        saved = self._sw_timeout
        try:
            while len(view):
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError("timed out")
                    self._sw_timeout = remaining if saved != 0.0 else 0.0
                n = self.send(view, flags)
                view = view[n:]
        finally:
            self._sw_timeout = saved

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        if self._sw is None:
            return super().sendfile(file, offset, count)
        return self._sendfile_use_send(file, offset, count)  # type: ignore[attr-defined]

    def _recv_stream_into(self, view: memoryview, nbytes: int, flags: int) -> int:
        m = self._sw
        assert m is not None
        if m.listening or (not m.unix_connected and not m.fin_seen):
            raise _oserror(errno.ENOTCONN)
        if m.cut == "rst":
            raise _oserror(errno.ECONNRESET)
        rec = self._sw_rec

        def attempt() -> int:
            if m.cut == "blackhole":
                # Bytes that reach a blackholed connection are swallowed; the reader just waits.
                _orig_socket.recv(self, 65536, _MSG_DONTWAIT)
                raise BlockingIOError(errno.EAGAIN, "blackholed")
            try:
                return _orig_socket.recv_into(self, view, nbytes, flags | _MSG_DONTWAIT)
            except ConnectionResetError:
                self._on_reset_received()
                raise

        n = None
        if self._sw_timeout is None and not flags & _MSG_DONTWAIT and m.cut is None and impair.current() is None:
            # A blocking socket sleeps in the kernel: one recv instead of a failing one and poll().
            try:
                n = _orig_socket.recv_into(self, view, nbytes, flags)
            except BlockingIOError:
                pass  # a dup of this socket made the fd non-blocking: poll below
            except ConnectionResetError:
                self._on_reset_received()
                raise
        if n is None:
            n = self._io(attempt, _POLLIN, flags)
        if flags & _MSG_PEEK:
            return n
        if n == 0 and nbytes:
            self._on_eof()
            return 0
        imp = self._impairer("in")
        if imp is not None:
            fate = imp.on_send(time.monotonic(), n)
            if fate.cut is not None:
                n = fate.allowed
                self._cut(fate.cut)
                if n == 0:
                    if fate.cut == "rst":
                        raise _oserror(errno.ECONNRESET)
                    return self._recv_stream_into(view, nbytes, flags)
        elif rec is not None and m.flow is not None:
            if self._peer_logs():
                m.flow.note_received(n)
            else:
                with rec.locked():
                    rec.write(m.flow.data("in", view[:n]))
        return n

    def _on_eof(self) -> None:
        m = self._sw
        assert m is not None
        if markers.reset_marker_exists(m):
            m.reset = True
            if self._sw_rec is not None and m.flow is not None and not self._peer_logs():
                with self._sw_rec.locked():
                    self._sw_rec.write(m.flow.rst("in"))
            raise _oserror(errno.ECONNRESET)
        if m.fin_seen:
            return
        m.fin_seen = True
        rec = self._sw_rec
        if rec is not None and m.flow is not None:
            if self._peer_logs():
                m.flow.note_received(1)
            else:
                with rec.locked():
                    rec.write(m.flow.fin("in", acked=True))

    def _on_reset_received(self) -> None:
        m = self._sw
        assert m is not None
        m.reset = True
        rec = self._sw_rec
        if rec is not None and m.flow is not None and not self._peer_logs():
            with rec.locked():
                rec.write(m.flow.rst("in"))

    def _inq(self) -> int:
        try:
            buf = fcntl.ioctl(self.fileno(), _SIOCINQ, b"\0\0\0\0")
            return int.from_bytes(buf, "little")
        except OSError:
            return 0

    def _log_fin_out_locked(self, closing: bool = False) -> None:
        """Our FIN (and the peer kernel's ACK of it), with the ack number the peer kernel would use.

        The caller holds the pcap lock and performs the real shutdown or close of the unix socket
        before it lets go of it. That pairing is what keeps a simultaneous close consistent: a
        peer that closes at the same moment either runs entirely before us (and we see its FIN
        through POLLRDHUP) or entirely after us (and it sees ours); it can never find our FIN in
        the capture while our socket still looks open to it (before, it then logged its own FIN
        acking one byte too few, and our ACK of that FIN showed as a keep-alive).

        The kernel acknowledges bytes it holds, read or not, so the ack counts what still sits in
        our receive queue (and the peer's FIN if it came); the flow's own counter is left alone,
        since those bytes are counted again when the application reads them. A close() with unread
        bytes is a RST, as Linux sends; a shutdown() never is.
        """
        m = self._sw
        assert m is not None
        rec = self._sw_rec
        if rec is None or m.flow is None or m.fin_sent:
            return
        if m.fin_seen:
            # Somebody read the peer's EOF, which a unix stream reports only once its queue is
            # empty, and nothing can follow a FIN: no unread bytes, no FIONREAD to ask.
            unread, peer_fin = 0, False
        else:
            # One poll says both whether the peer shut its side and whether anything is unread
            # (no POLLIN: nothing queued, no FIONREAD needed).
            p = select.poll()
            p.register(self.fileno(), _POLLIN | _POLLRDHUP)
            ready = p.poll(0)
            ev = ready[0][1] if ready else 0
            peer_fin = bool(ev & (_POLLRDHUP | select.POLLHUP))
            unread = self._inq() if ev & _POLLIN else 0
        counted = m.flow.remote_seq
        m.flow.note_received(unread + peer_fin)
        if closing and unread:
            rec.write(m.flow.rst("out"))
        else:
            rec.write(m.flow.fin("out", acked=True))
        m.flow.remote_seq = counted
        _after_fin_logged()

    def shutdown(self, how: int) -> None:
        if self._sw is None:
            return super().shutdown(how)
        m = self._sw
        if not m.unix_connected:
            raise _oserror(errno.ENOTCONN)
        if m.shaper is not None and not m.shaper.idle and how != _socket_mod.SHUT_RD:
            # Bytes still wait in the impairment queue: the FIN goes out after them, not before.
            m.shaper.enqueue(time.monotonic(), None, lambda: self._shutdown_now(how))
            return None
        return self._shutdown_now(how)

    def _shutdown_now(self, how: int) -> None:
        m = self._sw
        assert m is not None
        rec = self._sw_rec
        if (how in (_socket_mod.SHUT_WR, _socket_mod.SHUT_RDWR) and m.sotype == SOCK_STREAM and not m.fin_sent
                and rec is not None and m.flow is not None):
            # FIN record and the real shutdown under one lock hold: see _log_fin_out_locked.
            with rec.locked():
                self._log_fin_out_locked()
                m.fin_sent = True
                self._real_shutdown(how)
            return
        if how in (_socket_mod.SHUT_WR, _socket_mod.SHUT_RDWR) and m.sotype == SOCK_STREAM:
            m.fin_sent = True
        self._real_shutdown(how)

    def _real_shutdown(self, how: int) -> None:
        m = self._sw
        assert m is not None
        try:
            _orig_socket.shutdown(self, how)
        except OSError:
            if not m.cut:
                raise


def _after_fin_logged() -> None:
    """Test seam: runs between writing our FIN record and the real shutdown/close, lock held.

    Tests replace it with a pause to force the interleaving where the peer closes in exactly that
    window (tests/test_tcp_close.py); in production it does nothing.
    """
