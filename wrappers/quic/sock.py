"""The application's IPPROTO_QUIC socket: quic.ko's socket calls on top of the engine.

A ``QuicSocket`` is a real ``socket.socket`` whose fd is the app end of a SEQPACKET pair (see
``loop.py``); its option calls come from ``options.QuicOptionsMixin`` (the parts share
``sockparts.QuicSocketParts``). Reads come from that fd; everything else (send, options, handshake) calls the
engine under its lock. The receive queue is kept here, in quic.ko's order: items arrive from the
engine in order, and an event that arrives while stream data is queued moves ahead of that data
(as in quic.ko's receive queue). A partial read keeps the rest at the head; when items remain queued here after
a call, the engine is asked for a WAKE item so the fd stays readable for select/poll/asyncio.

State machine (quic.ko's sk_state): CLOSED --listen--> LISTENING --listen(0)--> CLOSED;
CLOSED --connect--> ESTABLISHING --handshake--> ESTABLISHED --close/shutdown/peer/idle--> CLOSED;
an accepted socket starts in ESTABLISHING. Errnos are the ones quic.ko returns for each call; nothing else escapes.
In raw mode (raw.py: the application runs TLS, as with libquic) ESTABLISHING becomes ESTABLISHED when
setsockopt(CRYPTO_SECRET) installs the second APP key, and the peer's CRYPTO bytes are queued ahead
of everything else, each with its crypto level in a HANDSHAKE_INFO cmsg.
"""

from __future__ import annotations

import _socket
import errno
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .. import dualstack
from ..addressing import Network
from ..socket_wrapper import _orig_socket as _OrigSocket  # socket.socket before any wrapping
from . import carriers as CR
from . import constants as C
from . import options as O
from . import routing, tlsext, uapi
from .arrivals import accept_handoff, accept_seqpacket, endpoint_for
from .configuration import path_datagram_size
from .connection_ids import ConnectionIds
from .core import (
    ITEM,
    K_ACCEPT,
    Blocked,
    Connection,
    Options,
    err,
)
from .loop import Engine, Link, Listener, get_engine, make_pair
from .sockdata import QuicDataMixin
from .sockpaths import QuicPathsMixin

SOL_SOCKET = socket.SOL_SOCKET


def _active_config() -> Any:
    from ..socket_wrapper import _active_config as ac

    return ac()


class QuicSocket(QuicDataMixin, QuicPathsMixin, O.QuicOptionsMixin):
    """socket(AF_INET|AF_INET6, SOCK_DGRAM|SOCK_STREAM, IPPROTO_QUIC) with quic.ko semantics."""

    def __init__(self, family: int = socket.AF_INET, type: int = socket.SOCK_DGRAM, proto: int = C.IPPROTO_QUIC,
                 *, _app: Any = None, _cfg: Any = "auto"):
        if family not in (socket.AF_INET, socket.AF_INET6):
            raise err(errno.EAFNOSUPPORT)
        base = type & ~(socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        if base not in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            raise err(errno.EPROTONOSUPPORT)
        self._engine: Engine = get_engine()
        if _app is None:
            app, eng_end = make_pair()
        else:
            app, eng_end = _app, None
        _OrigSocket.__init__(self, socket.AF_UNIX, socket.SOCK_SEQPACKET, 0, app.detach())
        _socket.socket.settimeout(self, 0.0)
        self._eng_end = eng_end
        self._qfamily = family
        self._qtype = base
        self._timeout: float | None = 0.0 if type & socket.SOCK_NONBLOCK else socket.getdefaulttimeout()
        self._sndtimeo: float | None = None
        self._cfg = _active_config() if _cfg == "auto" else _cfg
        self._carrier = CR.carrier_kind(self._cfg)
        self._opts = Options()
        self._state = C.CLOSED
        self._local: tuple | None = None
        self._peer: tuple | None = None
        self._v6only = family == socket.AF_INET6 and dualstack.default_v6only()  # as the kernel: at socket()
        self._link: Link | None = None
        self._listener: Listener | None = None
        self._is_client: bool | None = None
        self._q: deque[list[Any]] = deque()
        self._nhs = 0  # raw handshake items at the head of the queue, then _nev events
        self._nev = 0
        self._eof = False
        self._wake_out = False
        self._remote_tp: uapi.TransportParam | None = None
        self._cids = ConnectionIds()
        self._ticket_secret = os.urandom(32)
        self.dropped = 0
        self._request_client_cert = False
        self._require_resumption = False

    # -- identity -----------------------------------------------------------------------------
    @property
    def family(self) -> socket.AddressFamily:  # type: ignore[override]
        return socket.AddressFamily(self._qfamily)

    @property
    def type(self) -> socket.SocketKind:  # type: ignore[override]
        return socket.SocketKind(self._qtype)

    @property
    def proto(self) -> int:  # type: ignore[override]
        return C.IPPROTO_QUIC

    @property
    def _conn(self) -> Connection | None:
        return self._link.core if self._link is not None else None

    @property
    def quic_state(self) -> int:
        c = self._conn
        if c is not None:
            return c.state
        return self._state

    def __repr__(self) -> str:
        return f"<QuicSocket fd={self.fileno()} state={self.quic_state} local={self._local} peer={self._peer}>"

    def quic_stats(self) -> dict[str, int]:
        """Datagrams this socket's connection (or listener) took in and dropped as undecodable."""
        c = self._conn
        if c is not None:
            return {"received": c.received, "dropped": c.dropped}
        lst = self._listener
        carrier = lst.carrier if lst is not None else None
        dropped = getattr(lst, "dropped", 0) + getattr(carrier, "dropped", 0) + getattr(
            getattr(lst, "router", None), "dropped", 0)
        return {"received": 0, "dropped": dropped}

    # -- timeouts -----------------------------------------------------------------------------
    def settimeout(self, value: float | None) -> None:
        self._timeout = value

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    def _deadline(self, timeout: float | None) -> float | None:
        return None if timeout is None else time.monotonic() + timeout

    # -- addresses ------------------------------------------------------------------------------
    def _parse(self, address: Any) -> tuple:
        if not isinstance(address, tuple) or len(address) < 2:
            raise err(errno.EINVAL, "bad address")
        host, port = address[0], int(address[1])
        if not 0 <= port <= 0xFFFF:
            raise err(errno.EINVAL, "bad port")
        if host in ("", "localhost"):
            host = "0.0.0.0" if self._qfamily == socket.AF_INET and host == "" else host
        try:
            if self._qfamily == socket.AF_INET:
                socket.inet_aton(host)
                return (host, port)
            socket.inet_pton(socket.AF_INET6, host.split("%")[0])
            return (dualstack.canonical(host), port, 0, 0)
        except OSError:
            raise err(errno.EINVAL, f"bad address {host!r}") from None

    def _wildcard(self, addr: tuple) -> bool:
        return addr[0] in ("0.0.0.0", "::", "", "::ffff:0.0.0.0")

    def _names(self, host: str) -> tuple[int, str, frozenset[int], CR.Addressing]:
        """How a bind to ``host`` is named on the carrier (dualstack.bind_plan) and the addressing
        that reads peers' names back as this socket sees them."""
        assert self._cfg is not None
        fam, name_host, reach = dualstack.bind_plan(self._cfg.network, self._qfamily, host, self._v6only)
        return fam, name_host, reach, CR.Addressing(self._cfg, self._qfamily, reach)

    def bind(self, address: Any) -> None:
        if self._local is not None:
            raise err(errno.EINVAL, "already bound")
        addr = self._parse(address)
        try:
            fam, host, _reach = dualstack.bind_plan(self._cfg.network if self._cfg else Network(),
                                                    self._qfamily, addr[0], self._v6only)
        except OSError as e:
            raise err(e.errno or errno.EINVAL, e.strerror or "") from None
        if self._cfg is not None and not self._wildcard((host,)):
            if self._cfg.network.iface_of(fam, host) is None:
                raise err(errno.EADDRNOTAVAIL)
        self._local = addr

    def getsockname(self) -> Any:
        c = self._conn
        if c is not None and c.local_addr is not None:
            return self._tuple(c.local_addr[0], c.local_addr[1])
        if self._local is None:
            return ("0.0.0.0", 0) if self._qfamily == socket.AF_INET else ("::", 0, 0, 0)
        return self._local

    def getpeername(self) -> Any:
        if self._peer is None:
            raise err(errno.ENOTCONN)
        c = self._conn
        if c is not None and c.addr is not None:
            return self._tuple(c.addr[0], c.addr[1])
        return self._peer

    def _local_host(self) -> str:
        host = self._local[0] if self._local else ""
        if self._cfg is not None and (not host or self._wildcard(self._local or ("",))):
            return str(self._cfg.network.my_address(self._qfamily))
        if not host or self._wildcard(self._local or ("",)):
            return "127.0.0.1" if self._qfamily == socket.AF_INET else "::1"
        return host

    def _tuple(self, host: str, port: int) -> tuple:
        if self._qfamily == socket.AF_INET:
            return (host, port)
        return (dualstack.mapped(host) if ":" not in host else host, port, 0, 0)

    # -- listen / accept -----------------------------------------------------------------------
    def listen(self, backlog: int = 128) -> None:
        if backlog == 0:
            if self._state != C.LISTENING:
                raise err(errno.EINVAL, "not listening")
            self._stop_listening()
            return
        if self._state == C.LISTENING:
            assert self._listener is not None
            self._listener.backlog = backlog
            return
        if self._state != C.CLOSED or self._link is not None:
            raise err(errno.EINVAL)
        eng = self._engine
        if self._eng_end is None:
            raise err(errno.EINVAL, "this socket has listened before")
        lst = Listener(self._eng_end, self._opts, backlog)
        self._eng_end = None
        lst.family = self._qfamily
        lst.cfg = self._cfg
        host = self._local[0] if self._local else ("0.0.0.0" if self._qfamily == socket.AF_INET else "::")
        port = self._local[1] if self._local else 0
        with eng.lock:
            sockdir = self._cfg.socket_dir if self._cfg is not None else None
            router = routing.router_for((self._carrier, self._qfamily, host, port, sockdir)) if port else None
            if router is not None:  # another listener of this process serves this address:port
                router.check(self._opts.alpn)
                if router.base:
                    routing.check_foreign(router.base, self._opts.alpn or ["\0"])
                lst.carrier = router.carrier
                lst.local = router.local
                router.add(lst)
                if router.base:
                    routing.publish(router, router.base)
            elif self._carrier == "seqpacket":
                fam, name_host, reach, addressing = self._names(host)
                s = CR._unix(_socket.SOCK_SEQPACKET)
                foreign = False
                try:
                    port = CR.bind_unix(s, addressing, fam, name_host, port, twin=len(reach) == 2)
                    s.listen(max(backlog, 16))
                except OSError as e:
                    if e.errno != errno.EADDRINUSE or not port:
                        s.close()
                        raise
                    # another process owns this address:port: share it by ALPN through a listener file
                    base = addressing.path(fam, name_host, port, local=True)
                    try:
                        routing.check_foreign(base, self._opts.alpn)
                        name = routing.listener_file(base, self._opts.alpn)
                        CR._claim(name, _socket.SOCK_SEQPACKET)
                        s.bind(name)
                        s.listen(max(backlog, 16))
                    except OSError:
                        s.close()
                        raise
                    with open(name + ".alpn", "w", encoding="utf-8") as f:
                        f.write(",".join(self._opts.alpn) + "\n")
                    foreign = True
                lst.carrier = s
                lst.local = self._tuple(host, port) if foreign else (
                    addressing.addr_of(s.getsockname()) or self._tuple(host, port))
                if foreign:
                    router = routing.Router((self._carrier, self._qfamily, host, port, sockdir), self._cfg)
                    router.carrier, router.local = s, lst.local
                    router.add(lst)
                    lst.listener_file = s.getsockname()
                    eng.watch(s.fileno(), lambda: accept_handoff(eng, router))
                else:
                    router = routing.new_router((self._carrier, self._qfamily, host, port, sockdir), self._cfg)
                    router.carrier, router.local = s, lst.local
                    router.add(lst)
                    routing.publish(router, s.getsockname())
                    eng.watch(s.fileno(), lambda: accept_seqpacket(eng, router, addressing))
            else:
                ep = endpoint_for(eng, self._carrier, self._qfamily, self._cfg, host, port, v6only=self._v6only)
                if ep.listener is not None:
                    raise err(errno.EADDRINUSE)
                router = routing.new_router((self._carrier, self._qfamily, host, ep.local[1], sockdir), self._cfg)
                router.carrier, router.local = ep, ep.local
                router.add(lst)
                ep.listener = router
                ep.refs += 1
                lst.carrier = ep
                lst.local = ep.local
                port = ep.local[1]
        self._local = self._tuple(host, port)
        self._listener = lst
        self._state = C.LISTENING

    def _stop_listening(self) -> None:
        lst = self._listener
        if lst is None:
            return
        eng = self._engine
        with eng.lock:
            router = getattr(lst, "router", None)
            last = router.remove(lst) if router is not None else True
            if router is not None and router.base:
                if last:
                    routing.unpublish(router.base)
                else:
                    routing.publish(router, router.base)
            lf = getattr(lst, "listener_file", None)
            if lf:
                for p in (lf + ".alpn",):
                    try:
                        os.unlink(p)
                    except OSError:
                        pass
            if not last:
                pass  # the other listeners on this address:port keep the carrier
            elif isinstance(lst.carrier, CR.DatagramEndpoint):
                lst.carrier.listener = None
                lst.carrier.refs -= 1
                if lst.carrier.refs <= 0:
                    eng.unwatch(lst.carrier.fileno())
                    lst.carrier.close()
                    from .loop import release_endpoint

                    release_endpoint(lst.carrier)
            elif lst.carrier is not None:
                eng.unwatch(lst.carrier.fileno())
                try:
                    name = lst.carrier.getsockname()
                    lst.carrier.close()
                    if name:
                        CR.unlink_name(name)
                except OSError:
                    pass
            for link in lst.queue:
                eng.drop_link(link, send_close=False)
            lst.queue.clear()
            try:  # a blocked accept() wakes up: EOF on the app fd reads as "not listening"
                lst.app.shutdown(_socket.SHUT_WR)
            except OSError:
                pass
        self._listener = None
        self._state = C.CLOSED

    def accept(self) -> tuple[QuicSocket, Any]:
        if self._state != C.LISTENING or self._listener is None:
            raise err(errno.EINVAL, "not listening")
        deadline = self._deadline(self._timeout)
        while True:
            try:
                m = _socket.socket.recv(self, 64)
            except BlockingIOError:
                self._wait_readable(deadline)
                continue
            if not m:
                raise err(errno.EINVAL, "not listening")
            kind, _, lid = ITEM.unpack_from(m)
            if kind != K_ACCEPT:
                continue
            with self._engine.lock:
                lst = self._listener
                link = None
                if lst is not None:
                    for lk in lst.queue:
                        if lk.id == lid:
                            link = lk
                            break
                    if link is not None:
                        lst.queue.remove(link)
                if link is None:
                    continue
                new = QuicSocket(self._qfamily, self._qtype, _app=link.app_end, _cfg=self._cfg)
                link.app_end = None
                new._opts = self._opts.copy()
                link.core.opts = new._opts
                new._timeout = self._timeout
                new._sndtimeo = self._sndtimeo
                new._local = lst.local if lst is not None else None
                if new._local is not None and self._cfg is not None and link.peer is not None:  # IPv4 peer, [::]
                    new._local = dualstack.accepted_local(self._cfg.network, self._qfamily, new._local,
                                                          self._cfg.network.default_iface, link.peer)
                new._peer = link.peer
                new._is_client = False
                new._state = C.ESTABLISHING
                new._link = link
                new._ticket_secret = self._ticket_secret
                self._engine.add_link(link)
                self._engine.flush(link)
                if new._opts.raw and not link.core.closed:
                    from . import raw

                    raw.start(new)  # the ClientHello is readable (and polls readable) at once
            return new, link.peer

    # -- connect ---------------------------------------------------------------------------------
    def connect(self, address: Any) -> None:
        if isinstance(address, tuple) and len(address) >= 1 and address[0] is None:
            raise err(errno.EOPNOTSUPP)
        if self._state == C.LISTENING or self._link is not None:
            raise err(errno.EINVAL, "already connected or listening")
        peer = self._parse(address)
        if self._wildcard(peer) or peer[1] == 0:
            raise err(errno.EINVAL, "cannot connect to a wildcard address")
        eng = self._engine
        conn = Connection(True, self._opts)
        conn.addr = peer
        with eng.lock:
            path, local, ep = self._client_path(peer)
        assert self._eng_end is not None
        link = Link(conn, self._eng_end, path, peer)
        link.endpoint = ep
        if self._carrier == "seqpacket":
            link.open_path = lambda addr, link=link: self._open_path_to(link, addr)
        self._eng_end = None
        self._local, self._peer, self._link = local, peer, link
        self._is_client = True
        self._state = C.ESTABLISHING
        with eng.lock:
            eng.add_link(link)
            self._watch_path(link, path, ep)

    def connect_ex(self, address: Any) -> int:
        try:
            self.connect(address)
        except OSError as e:
            return e.errno or errno.EINVAL
        return 0

    # -- handshake (called by handshake.py) --------------------------------------------------------
    def _ticket_key(self) -> bytes:
        """A server connection's SESSION_TICKET master key (options.py's get: set, or derived)."""
        if self._opts.ticket:
            return self._opts.ticket
        import hashlib

        return hashlib.sha512(self._ticket_secret + self.getpeername()[0].encode()).digest()

    def _handshake(self, configuration: Any, psk: bool, timeout: float | None, fetcher: Any = None,
                   ticket_key: bytes | None = None, early_data: bool = True) -> None:
        if self._state == C.LISTENING:
            raise err(errno.EINVAL, "handshake on a listening socket")
        link = self._link
        if link is None:
            raise err(errno.ENOTCONN, "connect() or accept() first")
        c = link.core
        if c.quic is not None:
            raise err(errno.EINVAL, "handshake already started")
        eng = self._engine
        deadline = self._deadline(timeout)
        with eng.lock:
            odcid = None
            if not c.is_client:
                odcid = link.odcid
            c.request_client_cert = getattr(self, "_request_client_cert", False)
            c.require_resumption = getattr(self, "_require_resumption", False)
            if not c.is_client:
                c.refuse_early = not early_data
                if ticket_key is not None:
                    c.ticket_handler = lambda t, k=ticket_key: tlsext.TicketStore.issue(k, t)
            c.path_datagram = path_datagram_size(self._carrier, self._qfamily)
            c.start(configuration, time.monotonic(), psk=psk, odcid=odcid, ticket_fetcher=fetcher)
            eng.flush(link)
            eng.kick()
            while not c.handshake_done:
                if c.closed:
                    raise err(errno.ECONNREFUSED, f"handshake failed: {c.handshake_error}")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise err(errno.ETIMEDOUT, "handshake timed out")
                eng.cond.wait(remaining if remaining is not None else 1.0)
        self._established(c)

    def _established(self, c: Connection) -> None:
        """The handshake completed (engine TLS, or the second APP key in raw mode)."""
        if self._state == C.ESTABLISHED:
            return
        self._state = C.ESTABLISHED
        self._cids = ConnectionIds(max(2, min(8, c.quic.remote_active_connection_id_limit or 7))
                                     if c.quic is not None else 7)
        c.cids = self._cids

    def set_raw_handshake(self) -> None:
        """Opt into quic.ko's raw handshake interface (raw.py): the application runs TLS."""
        from . import raw

        raw.enable(self)

    # -- engine calls -----------------------------------------------------------------------------
    def _engine_call(self, fn: Callable[[], Any]) -> Any:
        eng = self._engine
        with eng.lock:
            r = fn()
            if self._link is not None:
                eng.flush(self._link)
            return r

    def _blocking(self, fn: Callable[[], Any], nonblock: bool, timeout: float | None) -> Any:
        """Run ``fn`` under the engine lock, waiting on Blocked until the timeout (EAGAIN)."""
        eng = self._engine
        deadline = self._deadline(timeout)
        with eng.lock:
            while True:
                try:
                    r = fn()
                except Blocked as b:
                    if b.kind == "space" and nonblock:
                        raise err(errno.ENOSPC if b.enospc else errno.EAGAIN) from None
                    c = self._conn
                    if c is not None and c.closed:
                        raise err(errno.EPIPE) from None
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise err(errno.EAGAIN, "timed out") from None
                    eng.cond.wait(remaining if remaining is not None else 1.0)
                    continue
                if self._link is not None:
                    eng.flush(self._link)
                return r

    def _send_timeout(self) -> float | None:
        return self._sndtimeo if self._sndtimeo is not None else self._timeout

    def _stream_open(self, info: uapi.StreamInfo) -> int:
        if self._state == C.LISTENING or self._conn is None:
            raise err(errno.EPIPE)
        c = self._conn
        return int(self._blocking(lambda: c.stream_open(info), False, self._send_timeout()))

    def _local_event(self, etype: int, payload: bytes) -> None:
        c = self._conn
        if c is None:
            return
        with self._engine.lock:
            c._event(etype, payload)
            assert self._link is not None
            self._engine.flush(self._link)

    def _peer_tp(self) -> uapi.TransportParam:
        c = self._conn
        q = c.quic if c is not None else None
        if c is None or q is None or not c.handshake_done:
            return self._remote_tp or uapi.TransportParam(remote=1)
        return uapi.TransportParam(
            remote=1, **q.peer_transport_parameters(),
            max_streams_bidi=min(c.peer_init[0], 0xFFFF), max_streams_uni=min(c.peer_init[2], 0xFFFF),
            disable_1rtt_encryption=int(q.peer_disable_1rtt))

    # -- closing ---------------------------------------------------------------------------------
    def shutdown(self, how: int) -> None:
        link = self._link
        if self._state == C.LISTENING:
            self._stop_listening()
            return
        if link is None:
            raise err(errno.ENOTCONN)
        if how in (socket.SHUT_WR, socket.SHUT_RDWR):
            with self._engine.lock:
                link.core.close(time.monotonic())
                self._engine.flush(link)
        else:
            with self._engine.lock:
                link.core.closed = True
                link.core.state = C.CLOSED
                self._engine.flush(link)

    def close(self) -> None:
        lst = getattr(self, "_listener", None)
        if lst is not None:
            self._stop_listening()
            lst.app.close()
        link = getattr(self, "_link", None)
        if link is not None:
            with self._engine.lock:
                self._engine.drop_link(link)
            self._link = None
        eng_end = getattr(self, "_eng_end", None)
        if eng_end is not None:
            eng_end.close()
            self._eng_end = None
        super().close()

    def detach(self) -> int:
        raise err(errno.EOPNOTSUPP, "a QUIC socket cannot be detached")

    def dup(self) -> QuicSocket:
        raise err(errno.EOPNOTSUPP, "a QUIC socket cannot be duplicated")
