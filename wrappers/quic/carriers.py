"""Carriers: how one QUIC datagram travels between two emulated (or real) UDP endpoints.

Three carriers, chosen per socket (``WIRECHECK_QUIC_CARRIER`` = seqpacket | udp, default seqpacket):

* ``seqpacket`` (default, socket_wrapper 1.5 compatible): each QUIC path is one AF_UNIX SOCK_SEQPACKET
  connection; the listener is a SEQPACKET socket bound to the UDP name (``U``/``Y`` + iface + port),
  a client binds its own UDP name and connects. One message = one datagram, boundaries kept.
* ``udp`` (cwrap naming): AF_UNIX SOCK_DGRAM sockets at the same names, so a plain UDP QUIC peer
  running under socket_wrapper (aioquic asyncio, ngtcp2) can talk to us.
* real UDP when no socket directory is configured: a user-space quic.ko on the host's network.

Every carrier logs each datagram once, by the sender, into the run's pcap as UDP, and asks the
impairment layer for its fate (drop, delay, duplicate, corrupt) before it leaves.

A carrier object only moves bytes; ``loop.py`` owns the selector and decides which connection a
datagram belongs to (by path now; by destination connection ID when migration arrives, issue 10).
"""

from __future__ import annotations

import _socket
import errno
import os
import random
import socket
from collections.abc import Callable
from typing import Any

from .. import impair
from ..addressing import AUTOBIND_FIRST, AUTOBIND_LAST, parse_socket_name, socket_name
from ..config import Config
from ..recorder import recorder_for

CARRIERS = ("seqpacket", "udp", "real")


def carrier_kind(cfg: Config | None) -> str:
    if cfg is None:
        return "real"
    kind = os.environ.get("WIRECHECK_QUIC_CARRIER", "seqpacket") or "seqpacket"
    if kind not in ("seqpacket", "udp"):
        raise OSError(errno.EINVAL, f"WIRECHECK_QUIC_CARRIER={kind!r}: expected seqpacket or udp")
    return kind


class Addressing:
    """Emulated address <-> unix path for one configuration (the UDP letters, cwrap's rule)."""

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def path(self, family: int, host: str, port: int, *, local: bool) -> str:
        net = self.cfg.network
        iface = net.bind_iface(family, socket.SOCK_DGRAM, host) if local else net.remote_iface(family, host)
        return self.cfg.path(socket_name(family, socket.SOCK_DGRAM, iface, port))

    def addr_of(self, path: str) -> tuple | None:
        p = parse_socket_name(path)
        if p is None:
            return None
        host = self.cfg.network.iface_address(p.family, p.iface)
        return (host, p.port) if p.family == socket.AF_INET else (host, p.port, 0, 0)


class Wire:
    """Logging and impairment for datagrams leaving ``local`` for ``peer``."""

    def __init__(self, cfg: Config | None, local: tuple, peer: tuple, schedule: Callable[[float, Callable[[], None]], None]):
        self.rec = recorder_for(cfg.pcap_file, cfg.socket_dir) if cfg is not None else None
        self.local = local
        self.peer = peer
        self.schedule = schedule
        self.sent = 0
        self.full = 0  # datagrams dropped because the carrier was full

    def out(self, data: bytes, now: float, send: Callable[[bytes], None]) -> None:
        imp = impair.impairer_for("udp", self.local[:2], self.peer[:2], "out") if impair.current() else None
        if imp is None:
            self._emit(data, send)
            return
        fate = imp.decide(now, data)
        for d in fate.deliveries:
            payload = d.payload
            if d.at <= now:
                self._emit(payload, send)
            else:
                self.schedule(d.at, self._later(payload, send))

    def _later(self, payload: bytes, send: Callable[[bytes], None]) -> Callable[[], None]:
        return lambda: self._emit(payload, send)

    def _emit(self, data: bytes, send: Callable[[bytes], None]) -> None:
        if self.rec is not None:
            self.rec.udp(self.local, self.peer, data)
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


def bind_unix(sock: Any, addressing: Addressing, family: int, host: str, port: int) -> int:
    """Bind ``sock`` to the emulated name; port 0 takes a free ephemeral port. Returns the port."""
    if port:
        path = addressing.path(family, host, port, local=True)
        _claim(path, sock.type)
        sock.bind(path)
        return port
    start = random.randint(AUTOBIND_FIRST, AUTOBIND_LAST)
    span = AUTOBIND_LAST - AUTOBIND_FIRST + 1
    for i in range(span):
        p = AUTOBIND_FIRST + (start - AUTOBIND_FIRST + i) % span
        path = addressing.path(family, host, p, local=True)
        if os.path.lexists(path):
            continue
        try:
            sock.bind(path)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                continue
            raise
        return p
    raise OSError(errno.EADDRINUSE, "no free emulated port")


def seqpacket_listening(path: str) -> bool:
    """A live SEQPACKET *listener* owns ``path`` (sockdir.is_in_use knows stream and datagram names only)."""
    from ..sockdir import _SO_ACCEPTCON, bound_unix_sockets

    return any(t == 5 and flags & _SO_ACCEPTCON for t, _, flags in bound_unix_sockets().get(path, ()))


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


class SeqpacketPath:
    """One QUIC path as one SEQPACKET connection (client side connects, server side was accepted)."""

    def __init__(self, sock: Any, wire: Wire):
        self.sock = sock
        self.wire = wire
        self.peer = wire.peer

    def fileno(self) -> int:
        return int(self.sock.fileno())

    def send(self, data: bytes, now: float) -> None:
        self.wire.out(data, now, self._raw)

    def _raw(self, data: bytes) -> None:
        try:
            self.sock.send(data)
        except OSError:  # a full carrier drops the datagram, as a full UDP socket buffer does
            self.wire.full += 1

    def read(self) -> list[bytes]:
        out = []
        for _ in range(64):
            try:
                d = self.sock.recv(65536)
            except BlockingIOError:
                break
            except OSError:
                out.append(b"")
                break
            out.append(d)
            if not d:
                break
        return out

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


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

    def fileno(self) -> int:
        return int(self.sock.fileno())

    def dest(self, peer: tuple) -> Any:
        if self.addressing is None:
            return peer
        fam = socket.AF_INET6 if len(peer) == 4 else socket.AF_INET
        return self.addressing.path(fam, peer[0], peer[1], local=False)

    def read(self) -> list[tuple[bytes, tuple]]:
        out = []
        for _ in range(64):
            try:
                d, src = self.sock.recvfrom(65536)
            except BlockingIOError:
                break
            except OSError:
                break
            if self.addressing is not None:
                addr = self.addressing.addr_of(src) if isinstance(src, str) else None
                if addr is None:
                    continue
                src = addr
            out.append((d, src))
        return out

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class DatagramPath:
    def __init__(self, ep: DatagramEndpoint, peer: tuple, wire: Wire):
        self.ep = ep
        self.peer = peer
        self.wire = wire
        self._dest = ep.dest(peer)

    def send(self, data: bytes, now: float) -> None:
        self.wire.out(data, now, self._raw)

    def _raw(self, data: bytes) -> None:
        try:
            self.ep.sock.sendto(data, self._dest)
        except OSError:
            self.wire.full += 1

    def close(self) -> None:
        pass
