"""Emulated UDP: sendto/recvfrom over unix datagram sockets, broadcast, impairments, NAT rebinding.

A datagram's source address is the sender's unix name, parsed back into (host, port). A UDP
connect() is deferred to the first send, as cwrap does. Impairment fates (impair/) are carried
out here: dropped, duplicated, corrupted, delayed on the timer thread, or sent from a rebound name.
The pcap records a datagram when it is delivered, by the sender if it logs, else by the receiver
(SCM_CREDENTIALS tells the receiver who sent it).
"""

from __future__ import annotations

import errno
import functools
import os
import socket as _socket_mod
import time
from typing import Any

from . import addressing, packets
from . import meta as metamod
from .addressing import parse_socket_name, sockaddr
from .dualstack import peer_view
from .sockbase import (
    _DGRAM_PATIENCE,
    _DGRAM_PATIENCE_NONBLOCKING,
    _MSG_DONTWAIT,
    _MSG_PEEK,
    _POLLIN,
    _SOL_SOCKET,
    _UCRED,
    AF_INET,
    AF_UNIX,
    SOCK_DGRAM,
    SOCK_STREAM,
    SocketParts,
    _autobind,
    _cred_pid,
    _orig_socket,
    _oserror,
    _schedule,
)


def _via_twin(twin: Any, payload: bytes, flags: int, path: str) -> bool:
    """Send from the twin-named socket; False when the receiver is a unix socket connected to our
    primary one (the kernel allows it only datagrams from that peer: EPERM), which then gets it
    from the primary name (our receivers read it back right; dualstack.py)."""
    try:
        twin.sendto(payload, flags | _MSG_DONTWAIT, path)
    except PermissionError:
        return False
    return True


class DatagramMixin(SocketParts):
    """Part of WrappedSocket (socket_wrapper.py); self is the socket."""

    __slots__ = ()

    def _connect_dgram(self, address: Any) -> None:
        m = self._sw
        assert m is not None
        path, peer = self._remote(address, "connect")
        self._autobind(peer=peer)
        self._reach_out(path)
        m.peer, m.peer_path, m.unix_connected = peer, path, False
        try:
            _orig_socket.connect(self, path)
            m.unix_connected = True
        except OSError:
            pass  # deferred: the error surfaces on the first send, as with cwrap

    def sendto(self, data: Any, flags_or_addr: Any, addr: Any = None) -> int:  # type: ignore[override]
        if self._sw is None:
            if addr is None:
                return super().sendto(data, flags_or_addr)
            return super().sendto(data, flags_or_addr, addr)
        flags, address = (0, flags_or_addr) if addr is None else (flags_or_addr, addr)
        m = self._sw
        if m.sotype == SOCK_STREAM:
            if not m.unix_connected:
                raise _oserror(errno.ENOTCONN if address is not None else errno.EPIPE)
            return self.send(data, flags)
        if m.peer is not None:
            # A connected UDP socket ignores the destination, as cwrap does.
            return self._sendto_dgram(data, flags, m.peer_path, m.peer)  # type: ignore[arg-type]
        host = address[0] if isinstance(address, tuple) and address else None
        if m.family == AF_INET and host is not None and self._net.is_broadcast(AF_INET, str(host)):
            return self._broadcast(data, flags, address)
        path, peer = self._remote(address, "sendto")
        return self._sendto_dgram(data, flags, path, peer)

    def _broadcast(self, data: Any, flags: int, address: tuple) -> int:
        m = self._sw
        assert m is not None
        if not m.options.get((_SOL_SOCKET, _socket_mod.SO_BROADCAST)):
            raise _oserror(errno.EACCES, "SO_BROADCAST is not set")
        self._autobind()
        payload = bytes(data)
        port = address[1]
        for iface in range(1, addressing.MAX_IFACE + 1):
            path = self._path(AF_INET, iface, port)
            if os.path.exists(path):
                try:
                    _orig_socket.sendto(self, payload, flags | _MSG_DONTWAIT, path)
                except OSError:
                    pass
        if self._sw_rec is not None:
            with self._sw_rec.locked():
                self._sw_rec.udp(m.local, (self._net.ipv4_broadcast, port), payload)  # type: ignore[arg-type]
        return len(payload)

    def _sendto_dgram(self, data: Any, flags: int, path: str, peer: tuple) -> int:
        m = self._sw
        assert m is not None
        self._autobind(peer=peer)
        self._reach_out(path)
        payload = data if isinstance(data, bytes) else bytes(memoryview(data).cast("B"))
        imp = self._impairer("out", peer)
        if imp is None:
            self._deliver_dgram(payload, flags, path, peer, blocking=True)
            return len(payload)
        now = time.monotonic()
        fate = imp.decide(now, payload)
        if getattr(fate, "rebind", None):
            self._rebind(fate.rebind)
        for d in fate.deliveries:
            if d.at <= now:
                self._deliver_dgram(d.payload, flags, path, peer, blocking=True)
            else:
                _schedule(d.at, functools.partial(self._deliver_dgram, d.payload, flags, path, peer, blocking=False))
        return len(payload)

    def _deliver_dgram(self, payload: bytes, flags: int, path: str, peer: tuple, *, blocking: bool,
                       retry_until: float | None = None) -> None:
        m = self._sw
        assert m is not None
        if m.closed:
            return
        rec = self._sw_rec
        connected = m.peer is not None
        twin = self._twin_sender_for(path) if m.twin_path is not None else None
        # The record is built once, before the pcap lock and whatever retries a full receiver
        # queue costs: under the lock only the send and one append remain (its timestamp is taken
        # there, so timestamps still follow the order of the records).
        pkt = self._udp_record(peer, payload) if rec is not None else None

        def attempt() -> None:
            try:
                if twin is not None and _via_twin(twin, payload, flags, path):
                    pass  # a dual-stack socket speaking its twin's family (dualstack.py)
                elif connected:
                    if not m.unix_connected:
                        _orig_socket.connect(self, path)
                        m.unix_connected = True
                    _orig_socket.send(self, payload, flags | _MSG_DONTWAIT)
                else:
                    _orig_socket.sendto(self, payload, flags | _MSG_DONTWAIT, path)
            except FileNotFoundError:
                if rec is not None and pkt is not None:
                    rec.write([pkt])
                    rec.icmp_unreachable(pkt, m.family)
                raise _oserror(errno.EHOSTUNREACH) from None
            except OSError as e:
                if e.errno == errno.EPROTOTYPE:
                    raise _oserror(errno.EHOSTUNREACH, "not a datagram socket at that address") from None
                raise
            if rec is not None and pkt is not None:
                rec.writer.write_packet(pkt)

        def locked_attempt() -> None:
            if rec is None:
                return attempt()
            with rec.locked():
                return attempt()

        if not blocking:
            # A delayed datagram (timer thread, which must never block) that finds the receiver's
            # queue full tries again shortly, within the same patience a blocking send has: a
            # real UDP receive buffer holds far more than a unix queue's 10 datagrams.
            try:
                locked_attempt()
            except BlockingIOError:
                now = time.monotonic()
                until = now + _DGRAM_PATIENCE if retry_until is None else retry_until
                if now >= until:
                    m.receiver_drops += 1
                    return
                _schedule(now + 0.002, functools.partial(self._deliver_dgram, payload, flags, path, peer,
                                                         blocking=False, retry_until=until))
            except OSError:
                pass  # a delayed datagram that finds no receiver is lost, as on a wire
            return
        # A unix datagram receiver holds only net.unix.max_dgram_qlen (10) datagrams. Real UDP
        # never blocks the sender: it drops at the receiver. We wait a little for room (so a
        # reader that is merely slow loses nothing), then drop the datagram as UDP would.
        # A connected socket in non-blocking mode gets EAGAIN: poll() does see its peer's queue.
        nonblocking = self._sw_timeout == 0.0 or bool(flags & _MSG_DONTWAIT)
        if nonblocking and connected:
            return locked_attempt()
        patience = _DGRAM_PATIENCE_NONBLOCKING if nonblocking else _DGRAM_PATIENCE
        if self._sw_timeout:
            patience = min(patience, self._sw_timeout)
        deadline = time.monotonic() + patience
        delay = 0.0001
        spins = 0
        while True:
            try:
                return locked_attempt()
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    m.receiver_drops += 1
                    return None
                if spins < 200:
                    # The reader usually makes room within microseconds: yield the CPU first;
                    # sleeping at once leaves reader and writer idle in turn.
                    spins += 1
                    os.sched_yield()
                    continue
                time.sleep(delay)
                delay = min(delay * 2, 0.005)

    def _udp_record(self, peer: tuple, payload: Any) -> list:
        """The pcap record of a datagram to ``peer``; the packed endpoints are kept per socket for
        its last destination (a NAT rebinding or a bind changes ``m.local`` and so the key)."""
        m = self._sw
        assert m is not None
        cached = m.udp_ends
        if cached is not None and cached[0] == peer and cached[1] == m.local:
            ends = cached[2]
        else:
            ends = packets.udp_endpoints(*self._wire(peer))
            m.udp_ends = (peer, m.local, ends)
        if type(payload) is not bytes:
            payload = bytes(payload)
        return packets.udp_datagram(ends, payload)

    def _rebind(self, change: str) -> None:
        """NAT rebinding: the peer starts seeing this socket from a new port and/or address.

        The unix name is what the peer sees, so a new unix socket bound to the new name replaces
        the old one under the same fd number (dup2); getsockname() keeps the old address, as an
        application behind a NAT would see it.
        """
        m = self._sw
        assert m is not None
        old = m.bound_path
        iface = m.local_iface
        if change in ("addr", "both"):
            iface = iface % addressing.MAX_IFACE + 1
        fresh = _orig_socket(AF_UNIX, m.sotype | _socket_mod.SOCK_NONBLOCK, 0)
        for port in _autobind.candidates():
            if change == "addr":
                port = parse_socket_name(old).port if old else port  # type: ignore[union-attr]
            path = self._path(m.family, iface, port)
            if os.path.lexists(path):
                if change == "addr":
                    break
                continue
            try:
                fresh.bind(path)
            except OSError:
                continue
            _autobind.next = port + 1
            if self._sw_rec is not None:
                fresh.setsockopt(_SOL_SOCKET, _socket_mod.SO_PASSCRED, 1)
            if m.unix_connected and m.peer_path:
                try:
                    fresh.connect(m.peer_path)
                except OSError:
                    m.unix_connected = False
            metamod.forget(m)
            os.dup2(fresh.fileno(), self.fileno())
            fresh.close()
            m.bound_path = path
            m.bound_ino = os.stat(path).st_ino
            metamod.register(self.fileno(), m)
            if old:
                try:
                    os.unlink(old)
                except OSError:
                    pass
            return
        fresh.close()

    def _recv_dgram(self, bufsize: int, flags: int) -> tuple[bytes, Any]:
        m = self._sw
        assert m is not None
        if m.bound_path is None:
            self._autobind()
        if m.inbox and not flags & _MSG_PEEK:
            data, src = m.inbox.popleft()
            return data[:bufsize], src
        rec = self._sw_rec
        anc = _socket_mod.CMSG_SPACE(_UCRED.size) if rec is not None else 0
        # A blocking socket sleeps in the kernel: one recvmsg instead of a failing one and poll().
        blocking = self._sw_timeout is None and not flags & _MSG_DONTWAIT
        while True:
            msg = None
            if blocking:
                try:
                    msg = _orig_socket.recvmsg(self, max(bufsize, 1), anc, flags)
                except BlockingIOError:
                    pass  # a dup of this socket made the fd non-blocking: poll below
            if msg is None:
                msg = self._io(lambda: _orig_socket.recvmsg(self, max(bufsize, 1), anc, flags | _MSG_DONTWAIT),
                               _POLLIN, flags)
            data, ancdata, _flags, src_path = msg
            data = data[:bufsize] if bufsize else b""
            src = self._addr_of(src_path)
            if flags & _MSG_PEEK:
                return data, src
            imp = self._impairer("in", src)
            if imp is not None:
                # Incoming impairments drop, corrupt and duplicate; delays belong on the sender's
                # side (the README says why): a held datagram could not make the fd readable.
                fate = imp.decide(time.monotonic(), data)
                if not fate.deliveries:
                    continue
                data = fate.deliveries[0].payload
                m.inbox.extend((d.payload, src) for d in fate.deliveries[1:])
            if rec is not None and not rec.peer_logs(_cred_pid(ancdata)):
                local, remote = self._wire(src)
                with rec.locked():
                    rec.udp(remote, local, data)
            return data, src

    def _addr_of(self, unix_path: Any) -> tuple:
        m = self._sw
        assert m is not None
        view = peer_view(self._net, m.family, m.reach, unix_path) if isinstance(unix_path, str) and unix_path else None
        if view is None:
            return sockaddr(m.family, "0.0.0.0" if m.family == AF_INET else "::", 0)
        return view

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Any]:
        if self._sw is None:
            return super().recvfrom(bufsize, flags)
        if self._sw.sotype == SOCK_STREAM:
            return self.recv(bufsize, flags), None
        return self._recv_dgram(bufsize, flags)

    def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> tuple[int, Any]:
        if self._sw is None:
            return super().recvfrom_into(buffer, nbytes, flags)
        view = memoryview(buffer).cast("B")
        nbytes = nbytes or len(view)
        if self._sw.sotype == SOCK_STREAM:
            return self.recv_into(view, nbytes, flags), None
        data, src = self._recv_dgram(nbytes, flags)
        view[: len(data)] = data
        return len(data), src

    def sendmsg(self, buffers: Any, ancdata: Any = (), flags: int = 0, address: Any = None) -> int:  # type: ignore[override]
        if self._sw is None:
            for level, kind, payload in ancdata:
                if level == _SOL_SOCKET and kind == _socket_mod.SCM_RIGHTS:
                    metamod.export_fds(payload)
            if address is None:
                return super().sendmsg(buffers, ancdata, flags)
            return super().sendmsg(buffers, ancdata, flags, address)
        # SCM_RIGHTS/SCM_CREDENTIALS on an inet socket mean nothing; cwrap drops them silently.
        data = b"".join(bytes(memoryview(b).cast("B")) for b in buffers)
        if address is not None and self._sw.sotype == SOCK_DGRAM:
            return self.sendto(data, flags, address)
        return self.send(data, flags)

    def recvmsg(self, bufsize: int, ancbufsize: int = 0, flags: int = 0) -> tuple[bytes, list, int, Any]:
        if self._sw is None:
            return super().recvmsg(bufsize, ancbufsize, flags)
        if self._sw.sotype == SOCK_STREAM:
            data = self.recv(bufsize, flags)
            return data, [], 0, None
        data, src = self._recv_dgram(bufsize, flags)
        return data, [], 0, src

    def recvmsg_into(self, buffers: Any, ancbufsize: int = 0, flags: int = 0) -> tuple[int, list, int, Any]:
        if self._sw is None:
            return super().recvmsg_into(buffers, ancbufsize, flags)
        views = [memoryview(b).cast("B") for b in buffers]
        total = sum(len(v) for v in views)
        data, _anc, msg_flags, src = self.recvmsg(total, ancbufsize, flags)
        pos = 0
        for v in views:
            chunk = data[pos: pos + len(v)]
            v[: len(chunk)] = chunk
            pos += len(chunk)
        return len(data), [], msg_flags, src
