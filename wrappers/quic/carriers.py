"""Carriers: how one QUIC datagram travels between two emulated (or real) UDP endpoints.

Three carriers, chosen per socket (``WIRECHECK_QUIC_CARRIER`` = seqpacket | udp, default seqpacket):

* ``seqpacket`` (default, socket_wrapper 1.5 compatible): each QUIC path is one AF_UNIX SOCK_SEQPACKET
  connection; the listener is a SEQPACKET socket bound to the UDP name (``U``/``Y`` + iface + port),
  a client binds its own UDP name and connects. One message = one datagram, boundaries kept.
* ``udp`` (cwrap naming): AF_UNIX SOCK_DGRAM sockets at the same names, so a plain UDP QUIC peer
  running under socket_wrapper (aioquic asyncio, ngtcp2) can talk to us.
* real UDP when no socket directory is configured: a user-space quic.ko on the host's network.

Every carrier logs each datagram once, by the sender, into the run's pcap as UDP, and asks the
impairment layer for its fate (drop, delay, duplicate, corrupt, rebind) before it leaves.

NAT rebinding (``rebind=port@N|addr@N|both@N`` in an ``out:`` impairment): the sender's emulated
source changes under the connection, which does not know (its getsockname() stays, as behind a NAT).
On the seqpacket carrier a path that this side connected is re-opened from a new UDP name (new port,
or the next interface for ``addr``) to the same peer; the old connection stays readable, so nothing
in flight is lost. On the udp carrier the endpoint's datagram socket is re-bound the same way. The
peer's listener sees a new path whose packets carry a connection ID it issued and hands it to that
connection (arrivals.py); aioquic then validates the path (PATH_CHALLENGE/RESPONSE). A path the
peer opened (a server's accepted path) cannot move on this carrier: such a rebind is counted in
``Wire.rebinds_skipped`` and the datagram goes out unchanged.

A carrier object only moves bytes; ``loop.py`` owns the selector and ``arrivals.py`` decides which
connection a datagram on a new path belongs to (the Initial, or a known destination connection ID).
"""

from __future__ import annotations

import _socket
import errno
import os
import random
import socket
import time
from collections.abc import Callable
from typing import Any

from .. import dualstack, impair
from ..addressing import AUTOBIND_FIRST, AUTOBIND_LAST, parse_socket_name, socket_name
from ..config import Config
from ..recorder import recorder_for
from ..sockbase import _UCRED, _cred_pid

CARRIERS = ("seqpacket", "udp", "real")


def carrier_kind(cfg: Config | None) -> str:
    if cfg is None:
        return "real"
    kind = os.environ.get("WIRECHECK_QUIC_CARRIER", "seqpacket") or "seqpacket"
    if kind not in ("seqpacket", "udp"):
        raise OSError(errno.EINVAL, f"WIRECHECK_QUIC_CARRIER={kind!r}: expected seqpacket or udp")
    return kind


class Addressing:
    """Emulated address <-> unix path for one configuration (the UDP letters, cwrap's rule).

    With ``family`` (the QUIC socket's) and ``reach`` (the families its name answers to), names
    read back as that socket sees them: an IPv4 peer of an AF_INET6 socket as ``::ffff:a.b.c.d``
    (dualstack.peer_view). A v4-mapped host always names an IPv4 file.
    """

    def __init__(self, cfg: Config, family: int | None = None, reach: frozenset[int] = frozenset()):
        self.cfg = cfg
        self.family = family
        self.reach = reach

    def path(self, family: int, host: str, port: int, *, local: bool) -> str:
        net = self.cfg.network
        v4 = dualstack.v4_of_mapped(host) if family == socket.AF_INET6 else None
        if v4 is not None:
            family, host = socket.AF_INET, v4
        iface = net.bind_iface(family, socket.SOCK_DGRAM, host) if local else net.remote_iface(family, host)
        return self.cfg.path(socket_name(family, socket.SOCK_DGRAM, iface, port))

    def addr_of(self, path: str) -> tuple | None:
        if self.family is not None:
            return dualstack.peer_view(self.cfg.network, self.family, self.reach, path)
        p = parse_socket_name(path)
        if p is None:
            return None
        host = self.cfg.network.iface_address(p.family, p.iface)
        return (host, p.port) if p.family == socket.AF_INET else (host, p.port, 0, 0)


class Wire:
    """Logging and impairment for datagrams leaving ``local`` for ``peer``."""

    def __init__(self, cfg: Config | None, local: tuple, peer: tuple, schedule: Callable[[float, Callable[[], None]], None]):
        self.cfg = cfg
        self.rec = recorder_for(cfg.pcap_file, cfg.socket_dir) if cfg is not None else None
        self.local = local
        self.peer = peer
        self.schedule = schedule
        self.sent = 0
        self.full = 0  # datagrams dropped because the carrier was full
        self.rebinder: Callable[[str], tuple | None] | None = None  # set by a path that can move
        self.rebinds = 0
        self.rebinds_skipped = 0
        self.in_flight_until = 0.0  # when the last delayed datagram leaves (the path stays open till then)

    def out(self, data: bytes, now: float, send: Callable[[bytes], None]) -> None:
        imp = impair.impairer_for("udp", self.local[:2], self.peer[:2], "out") if impair.current() else None
        if imp is None:
            self._emit(data, send)
            return
        fate = imp.decide(now, data)
        if fate.rebind:
            self.rebind(fate.rebind)
        for d in fate.deliveries:
            payload = d.payload
            if d.at <= now:
                self._emit(payload, send)
            else:
                self.in_flight_until = max(self.in_flight_until, d.at)
                self.schedule(d.at, self._later(payload, send))

    def inbound(self, data: list[bytes], now: float, peer: tuple | None = None) -> list[bytes]:
        """Datagrams received from ``peer`` (default: this wire's peer) after the ``in:`` impairments:
        dropped, corrupted or duplicated as they arrive. Delay and reordering belong on the sender's
        side (README): a datagram held back here could not make the fd readable later. The pcap keeps
        what the wire carried (recorded by the sender), so a datagram lost on arrival is in it."""
        if not impair.current():
            return data
        src = (peer or self.peer)[:2]
        out: list[bytes] = []
        for d in data:
            imp = impair.impairer_for("udp", self.local[:2], src, "in") if d else None
            if imp is None:
                out.append(d)
                continue
            out += [x.payload for x in imp.decide(now, d).deliveries]
        return out

    def rebind(self, kind: str) -> None:
        """NAT rebinding ("port", "addr" or "both"): the path re-opens from a new source and the
        flow's impairer follows it (its counters go on, the same rebind does not fire twice)."""
        new = self.rebinder(kind) if self.rebinder is not None else None
        if new is None:
            self.rebinds_skipped += 1
            return
        impair.rebound("udp", self.local[:2], new[:2])
        self.local = new
        self.rebinds += 1

    def _later(self, payload: bytes, send: Callable[[bytes], None]) -> Callable[[], None]:
        return lambda: self._emit(payload, send)

    def _emit(self, data: bytes, send: Callable[[bytes], None]) -> None:
        if self.rec is not None:
            self.rec.udp(*dualstack.wire_pair(self.cfg.network, self.local, self.peer, 0), data)  # type: ignore[union-attr]
        self.sent += 1
        send(data)


CARRIER_BUF = 4 * 1024 * 1024


def big_buffers(s: Any) -> None:
    """A full carrier drops datagrams (as a full UDP buffer does) and congestion control then backs
    off; aioquic sends a congestion window in one burst, so give carriers room for several."""
    for opt, force in ((_socket.SO_SNDBUF, 32), (_socket.SO_RCVBUF, 33)):  # SO_SNDBUFFORCE, SO_RCVBUFFORCE
        try:
            s.setsockopt(_socket.SOL_SOCKET, force, CARRIER_BUF)
        except OSError:
            try:
                s.setsockopt(_socket.SOL_SOCKET, opt, CARRIER_BUF)
            except OSError:
                pass


def _unix(kind: int) -> Any:
    s = _socket.socket(_socket.AF_UNIX, kind | _socket.SOCK_CLOEXEC, 0)
    s.setblocking(False)
    big_buffers(s)
    return s


def bind_unix(sock: Any, addressing: Addressing, family: int, host: str, port: int, *, twin: bool = False) -> int:
    """Bind ``sock`` to the emulated name; port 0 takes a free ephemeral port. Returns the port.

    ``twin``: a dual-stack socket, also reachable under the IPv4 name of the same interface and
    port (a hard link, dualstack.py); EADDRINUSE when either name is alive.
    """
    if port:
        path = addressing.path(family, host, port, local=True)
        _claim(path, sock.type)
        twin_path = dualstack.twin_name(path) if twin else None
        if twin_path:
            _claim(twin_path, sock.type)
        sock.bind(path)
        if twin_path:
            _link_or_unbind(sock, path, twin_path)
        return port
    start = random.randint(AUTOBIND_FIRST, AUTOBIND_LAST)
    span = AUTOBIND_LAST - AUTOBIND_FIRST + 1
    for i in range(span):
        p = AUTOBIND_FIRST + (start - AUTOBIND_FIRST + i) % span
        path = addressing.path(family, host, p, local=True)
        twin_path = dualstack.twin_name(path) if twin else None
        if os.path.lexists(path) or (twin_path and os.path.lexists(twin_path)):
            continue
        try:
            sock.bind(path)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                continue
            raise
        if twin_path:
            _link_or_unbind(sock, path, twin_path)
        return p
    raise OSError(errno.EADDRINUSE, "no free emulated port")


def _link_or_unbind(sock: Any, path: str, twin_path: str) -> None:
    """Link the twin name; on failure the bound name goes (the caller closes the socket)."""
    try:
        dualstack.link_twin(path, twin_path)
    except OSError:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise


def unlink_name(name: str) -> None:
    """A carrier's bound name goes, its dual-stack twin first."""
    dualstack.unlink_twin_of(name)
    try:
        os.unlink(name)
    except OSError:
        pass


def bind_rebound(sock: Any, addressing: Addressing, current: str, kind: str) -> str | None:
    """Bind ``sock`` to the UDP name a NAT would give after rebinding ``current``: a new free port
    ("port"), the next interface with the same port ("addr", a free port if that name is taken), or
    both. Returns the new name, None when nothing is free."""
    from ..addressing import MAX_IFACE

    p = parse_socket_name(current)
    if p is None:
        return None
    iface = p.iface % MAX_IFACE + 1 if kind in ("addr", "both") else p.iface
    span = AUTOBIND_LAST - AUTOBIND_FIRST + 1
    start = random.randint(AUTOBIND_FIRST, AUTOBIND_LAST)
    ports = [p.port] if kind == "addr" else []
    ports += [AUTOBIND_FIRST + (start - AUTOBIND_FIRST + i) % span for i in range(span)]
    for port in ports:
        if port == p.port and iface == p.iface:
            continue
        path = addressing.cfg.path(socket_name(p.family, socket.SOCK_DGRAM, iface, port))
        if os.path.lexists(path):
            continue
        try:
            sock.bind(path)
        except OSError:
            continue
        return path
    return None


def seqpacket_listening(path: str, *, twins: bool = True) -> bool:
    """A live SEQPACKET *listener* owns ``path`` (sockdir.is_in_use knows stream and datagram names
    only), under its bound name or as a dual-stack twin of it."""
    from ..sockdir import _SO_ACCEPTCON, bound_unix_sockets

    if any(t == 5 and flags & _SO_ACCEPTCON for t, _, flags in bound_unix_sockets().get(path, ())):
        return True
    return twins and dualstack.linked_alive(path, lambda twin: seqpacket_listening(twin, twins=False))


def _claim(path: str, sotype: int) -> None:
    from ..sockdir import is_in_use

    if os.path.lexists(path):
        if sotype & 0xF == _socket.SOCK_SEQPACKET:
            in_use = seqpacket_listening(path)
        else:
            in_use = is_in_use(path, socket.SOCK_DGRAM)
        if in_use:
            raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


RENDEZVOUS = "~m"
OUTBOUND = "~p"  # a migrated server's outbound path socket: its UDP name is taken by its listener


def open_rendezvous(name: str) -> Any | None:
    """Next to a client path's UDP name, a SEQPACKET listener (``name~m``) where a peer that moves
    opens its new path to us: a unix connection can only be opened towards a listener, and the
    client's own name is a connected socket. Only a quic.ko server that migrates (setsockopt
    CONNECTION_MIGRATION after the handshake) uses it. None when it cannot be bound.

    The migrated server in turn listens on its new UDP name (so that the client can migrate again
    towards it) and opens its path from ``name~p``; ``peer_name`` reads either back."""
    s = _unix(_socket.SOCK_SEQPACKET)
    path = name + RENDEZVOUS
    try:
        if os.path.lexists(path) and not seqpacket_listening(path):
            os.unlink(path)
        s.bind(path)
        s.listen(8)
    except OSError:
        s.close()
        return None
    return s


def peer_name(name: str) -> str:
    """The UDP name a path's peer speaks for (a migrated server's outbound socket carries a suffix)."""
    return name[: -len(OUTBOUND)] if name.endswith(OUTBOUND) else name


class SeqpacketPath:
    """One QUIC path as one SEQPACKET connection (client side connects, server side was accepted).

    A path this side connected (``remote`` given) can be rebound by the impairment layer: it then
    holds the old connections in ``olds`` and reads them too until the peer closes them; the
    engine watches every fd through ``watch_fd``/``unwatch_fd`` (set by whoever watches the path).
    """

    def __init__(self, sock: Any, wire: Wire, remote: str | None = None, addressing: Addressing | None = None):
        self.sock = sock
        self.wire = wire
        self.peer = wire.peer
        self.remote = remote
        self.addressing = addressing
        self.olds: list[Any] = []
        self.rendezvous: Any = None  # client: where a migrating server connects (open_rendezvous)
        self.switch_local: tuple | None = None  # server: the preferred address this path arrives at
        self.watch_fd: Callable[[int], None] | None = None
        self.unwatch_fd: Callable[[int], None] | None = None
        if remote is not None and addressing is not None:
            wire.rebinder = self.rebind

    def fileno(self) -> int:
        return int(self.sock.fileno())

    def fds(self) -> list[int]:
        socks = (self.sock, *self.olds) + ((self.rendezvous,) if self.rendezvous is not None else ())
        return [int(s.fileno()) for s in socks if s.fileno() >= 0]

    def rebind(self, kind: str) -> tuple | None:
        assert self.remote is not None and self.addressing is not None
        new = _unix(_socket.SOCK_SEQPACKET)
        name = bind_rebound(new, self.addressing, self.sock.getsockname(), kind)
        if name is None:
            new.close()
            return None
        try:
            new.connect(self.remote)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            new.close()
            return None
        self.olds.append(self.sock)
        self.sock = new
        if self.watch_fd is not None:
            self.watch_fd(int(new.fileno()))
        return self.addressing.addr_of(name)

    def send(self, data: bytes, now: float) -> None:
        self.wire.out(data, now, self._raw)

    def _raw(self, data: bytes) -> None:
        try:
            self.sock.send(data)
        except OSError:  # a full carrier drops the datagram, as a full UDP socket buffer does
            self.wire.full += 1

    def read(self) -> list[bytes]:
        out: list[bytes] = []
        for old in list(self.olds):  # a rebound path's old connection: EOF just ends it
            got = _recv_some(old)
            out += [d for d in got if d]
            if b"" in got:
                self._drop_old(old)
        got = _recv_some(self.sock)
        return self.wire.inbound(out + got, time.monotonic())

    def _drop_old(self, old: Any) -> None:
        self.olds.remove(old)
        if self.unwatch_fd is not None and old.fileno() >= 0:
            self.unwatch_fd(int(old.fileno()))
        try:
            old.close()
        except OSError:
            pass

    def close(self) -> None:
        for old in list(self.olds):
            self._drop_old(old)
        if self.rendezvous is not None:
            r, self.rendezvous = self.rendezvous, None
            try:
                name = r.getsockname()
                r.close()
                if name:
                    os.unlink(name)
            except OSError:
                pass
        try:
            self.sock.close()
        except OSError:
            pass


def _recv_some(sock: Any) -> list[bytes]:
    """Up to 64 datagrams; b"" last on EOF or a dead connection.

    A peer that closes its end while datagrams of ours sit unread in it (a client that hangs up
    right after its handshake, before reading the server's last flight) leaves ECONNRESET on our
    end, and Linux reports that error once, *before* the datagrams the peer sent ahead of its close
    (its Finished, its CONNECTION_CLOSE). They are still queued: read on, the end comes as EOF."""
    out = []
    for _ in range(64):
        try:
            d = sock.recv(65536)
        except BlockingIOError:
            break
        except ConnectionResetError:
            continue
        except OSError:
            out.append(b"")
            break
        out.append(d)
        if not d:
            break
    return out


_CRED_SPACE = _socket.CMSG_SPACE(_UCRED.size)


class DatagramEndpoint:
    """One bound UDP endpoint (emulated AF_UNIX DGRAM or real UDP) shared by every connection on it."""

    def __init__(self, sock: Any, local: tuple, addressing: Addressing | None):
        self.sock = sock
        self.local = local
        self.addressing = addressing
        self.refs = 0
        self.links: dict[tuple, Any] = {}
        self.paths: dict[tuple, Any] = {}
        self.listener: Any = None
        self.dropped = 0
        self.olds: list[Any] = []  # sockets of the names this endpoint had before a rebind
        self.twin: str | None = None  # a dual-stack endpoint's second name (dualstack.py)
        self.twin_sender: Any = None
        self.watch_fd: Callable[[int], None] | None = None
        self.unwatch_fd: Callable[[int], None] | None = None
        # Emulated UDP: a native peer under cwrap without SOCKET_WRAPPER_PCAP_FILE does not log its
        # sends, so we record what we receive from it (known by the sender's pid, SO_PASSCRED), as
        # wrappers/dgram.py does; a peer of ours logs its own sends.
        self.rec: Any = None
        if addressing is not None and addressing.cfg.pcap_file:
            self.rec = recorder_for(addressing.cfg.pcap_file, addressing.cfg.socket_dir)
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_PASSCRED, 1)

    def fileno(self) -> int:
        return int(self.sock.fileno())

    def fds(self) -> list[int]:
        return [int(s.fileno()) for s in (self.sock, *self.olds) if s.fileno() >= 0]

    def rebind(self, kind: str) -> tuple | None:
        """NAT rebinding of an emulated client endpoint (a listener's endpoint stays put): a new
        socket at the new name sends from now on; the old one is still read (late replies)."""
        if self.addressing is None or self.listener is not None:
            return None
        new = _unix(_socket.SOCK_DGRAM)
        name = bind_rebound(new, self.addressing, self.sock.getsockname(), kind)
        local = self.addressing.addr_of(name) if name is not None else None
        if local is None:
            new.close()
            return None
        self.olds.append(self.sock)
        self.sock = new
        self.local = local
        for path in self.paths.values():
            path.wire.local = local
        if self.watch_fd is not None:
            self.watch_fd(int(new.fileno()))
        return local

    def sendto(self, data: bytes, dest: Any) -> None:
        """Send from this endpoint; to the family of a dual-stack endpoint's twin name, from a socket
        bearing that name, so that the receiver (cwrap's too) sees the family it was sent by."""
        if self.twin is not None and isinstance(dest, str) and \
                dualstack.family_of_name(dest) == dualstack.family_of_name(self.twin):
            if self.twin_sender is None:
                self.twin_sender = dualstack.open_twin_sender(self.twin, _socket.SOCK_DGRAM) or False
            if self.twin_sender:
                try:
                    self.twin_sender.sendto(data, dest)
                    return
                except PermissionError:
                    pass  # a receiver connected to our primary name takes datagrams from it only
        self.sock.sendto(data, dest)

    def dest(self, peer: tuple) -> Any:
        if self.addressing is None:
            return peer
        fam = socket.AF_INET6 if len(peer) == 4 else socket.AF_INET
        return self.addressing.path(fam, peer[0], peer[1], local=False)

    def read(self) -> list[tuple[bytes, tuple]]:
        out: list[tuple[bytes, tuple]] = []
        for sock in (*self.olds, self.sock):
            out += self._read_one(sock)
        return out

    def _read_one(self, sock: Any) -> list[tuple[bytes, tuple]]:
        out = []
        rec = self.rec
        for _ in range(64):
            pid = None
            try:
                if rec is not None:
                    d, anc, _flags, src = sock.recvmsg(65536, _CRED_SPACE)
                    pid = _cred_pid(anc)
                else:
                    d, src = sock.recvfrom(65536)
            except BlockingIOError:
                break
            except OSError:
                break
            if self.addressing is not None:
                addr = self.addressing.addr_of(src) if isinstance(src, str) else None
                if addr is None:
                    continue
                src = addr
            if rec is not None and not rec.peer_logs(pid):
                local, remote = dualstack.wire_pair(self.addressing.cfg.network, self.local, src, 0)  # type: ignore[union-attr]
                with rec.locked():
                    rec.udp(remote, local, d)
            if impair.current():
                now = time.monotonic()
                imp = impair.impairer_for("udp", self.local[:2], src[:2], "in")
                if imp is not None:
                    out += [(x.payload, src) for x in imp.decide(now, d).deliveries]
                    continue
            out.append((d, src))
        return out

    def close(self) -> None:
        if self.twin_sender:
            dualstack.close_twin_sender(self.twin_sender)
        self.twin_sender = None
        for sock in (*self.olds, self.sock):
            if self.unwatch_fd is not None and sock.fileno() >= 0:
                self.unwatch_fd(int(sock.fileno()))
            try:
                sock.close()
            except OSError:
                pass
        self.olds.clear()


class DatagramPath:
    def __init__(self, ep: DatagramEndpoint, peer: tuple, wire: Wire):
        self.ep = ep
        self.peer = peer
        self.wire = wire
        self._dest = ep.dest(peer)
        if ep.addressing is not None and ep.listener is None:
            wire.rebinder = ep.rebind

    def send(self, data: bytes, now: float) -> None:
        self.wire.out(data, now, self._raw)

    def _raw(self, data: bytes) -> None:
        try:
            self.ep.sendto(data, self._dest)
        except OSError:
            self.wire.full += 1

    def close(self) -> None:
        pass
