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
import select
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
from .arrivals import accept_handoff, accept_moved_peer, accept_paths, accept_seqpacket, endpoint_for
from .connection_ids import ConnectionIds
from .core import (
    ITEM,
    K_ACCEPT,
    K_DATA,
    K_DGRAM,
    K_EVENT,
    K_HS,
    K_PURGE,
    K_WAKE,
    Blocked,
    Connection,
    Options,
    err,
)
from .loop import Engine, Link, Listener, get_engine, make_pair

SOL_SOCKET = socket.SOL_SOCKET


def _active_config() -> Any:
    from ..socket_wrapper import _active_config as ac

    return ac()


class QuicSocket(O.QuicOptionsMixin):
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

    def _watch_path(self, link: Link, path: Any, ep: Any) -> None:
        eng = self._engine
        if isinstance(path, CR.SeqpacketPath):
            reader = lambda: eng.path_readable(link, path)  # noqa: E731
            path.watch_fd = lambda fd: eng.watch(fd, reader)
            path.unwatch_fd = eng.unwatch
            eng.watch(path.fileno(), reader)
            if path.rendezvous is not None:
                eng.watch(path.rendezvous.fileno(), lambda: accept_moved_peer(eng, link, path))
        elif ep is not None:
            ep.links[path.peer] = link
            ep.paths[path.peer] = path

    def _migrate(self, new_local: tuple) -> None:
        """Client: bind a second path at ``new_local`` and move the connection onto it (the first
        packet back on it completes the migration: event, getsockname, old path closed)."""
        link, c = self._link, self._conn
        if link is None or c is None or self._peer is None:
            raise err(errno.EPIPE)
        if not self._is_client:
            self._migrate_server(link, c, new_local)
            return
        eng = self._engine
        with eng.lock:
            if c.migrating is not None:
                raise err(errno.EAGAIN, "a migration is in progress")
            path, local, ep = self._client_path(c.addr or self._peer, new_local)
            try:
                c.start_local_migration(local)
            except OSError:
                path.close()
                raise
            link.old_paths += [link.path, *link.paths.values()]  # everything goes on the new path now
            link.paths = {}
            link.path = path
            self._watch_path(link, path, ep)
            eng.flush(link)

    def _set_preferred(self, addr: tuple) -> None:
        """Server, before the handshake: quic.ko's preferred_address. The address is bound now (a
        listener for the client's new path, seqpacket carrier only) and announced in the transport
        parameters; aioquic's client validates it after the handshake and moves there."""
        if self._carrier != "seqpacket":
            raise err(errno.EOPNOTSUPP, f"a preferred address needs the seqpacket carrier, not {self._carrier}")
        link, c = self._link, self._conn
        from . import raw

        # raw mode: the engine may have started (the ClientHello arrived); the address goes into the
        # transport parameters the application's TLS fetches with TRANSPORT_PARAM_EXT later
        started = c is not None and c.quic is not None and not (raw.is_raw(self) and not c.handshake_done)
        if link is None or c is None or started:
            raise err(errno.EINVAL, "set the preferred address after accept() and before the handshake")
        if c.preferred_address is not None:
            raise err(errno.EAGAIN, "a preferred address is already set")
        import socket as so

        family = so.AF_INET6 if ":" in addr[0] else so.AF_INET
        addressing = CR.Addressing(self._cfg)
        lst = CR._unix(_socket.SOCK_SEQPACKET)
        try:
            port = CR.bind_unix(lst, addressing, family, addr[0], addr[1])
            lst.listen(8)
        except OSError:
            lst.close()
            raise
        local = addressing.addr_of(lst.getsockname()) or (addr[0], port)
        eng = self._engine
        with eng.lock:
            c.preferred_address = (local[0], local[1])
            if c.quic is not None:
                c.quic.preferred_address = c.preferred_address
            holder = CR.SeqpacketPath(lst, CR.Wire(self._cfg, local, c.addr, eng.schedule), addressing=addressing)
            holder.rendezvous = lst  # closed (and its name removed) with the connection
            link.old_paths.append(holder)
            eng.watch(lst.fileno(), lambda: accept_paths(eng, link, lst, addressing, local))

    def _open_path_to(self, link: Link, addr: tuple) -> Any:
        """Client, seqpacket carrier: a path from our current address to a new server address (its
        preferred address). Our UDP name is taken by the connected path, so the new socket is bound
        to ``name~p``, which the server reads back as our address (carriers.peer_name)."""
        cur = link.path
        if not isinstance(cur, CR.SeqpacketPath) or cur.addressing is None:
            return None
        eng = self._engine
        s = CR._unix(_socket.SOCK_SEQPACKET)
        try:
            name = cur.sock.getsockname() + CR.OUTBOUND
            CR._claim(name, _socket.SOCK_DGRAM)
            s.bind(name)
            import socket as so

            family = so.AF_INET6 if len(addr) == 4 or ":" in str(addr[0]) else so.AF_INET
            s.connect(cur.addressing.path(family, addr[0], addr[1], local=False))
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            s.close()
            return None
        path = CR.SeqpacketPath(s, CR.Wire(self._cfg, cur.wire.local, tuple(addr), eng.schedule))
        eng.watch(path.fileno(), lambda: eng.path_readable(link, path))
        return path

    def _migrate_server(self, link: Link, c: Any, new_local: tuple) -> None:
        """A quic.ko server moves to ``new_local`` after the handshake: a new path from that name to
        the client's rendezvous listener (carriers.open_rendezvous), a fresh destination CID, and the
        old paths kept until the first packet arrives on the new one (the client validates the new
        server address with PATH_CHALLENGE, aio/connection.py). Only the seqpacket carrier can open a path
        from the server's side; on the others this is EOPNOTSUPP."""
        if self._carrier != "seqpacket":
            raise err(errno.EOPNOTSUPP, f"server migration needs the seqpacket carrier, not {self._carrier}")
        eng = self._engine
        with eng.lock:
            if c.migrating is not None:
                raise err(errno.EAGAIN, "a migration is in progress")
            if c.closed or not c.handshake_done:
                raise err(errno.EPIPE)
            addressing = CR.Addressing(self._cfg)
            lst = CR._unix(_socket.SOCK_SEQPACKET)
            s = CR._unix(_socket.SOCK_SEQPACKET)
            try:
                port = CR.bind_unix(lst, addressing, self._qfamily, new_local[0], new_local[1])
                lst.listen(8)
                name = lst.getsockname()
                local = addressing.addr_of(name) or self._tuple(new_local[0], port)
                CR._claim(name + CR.OUTBOUND, _socket.SOCK_DGRAM)
                s.bind(name + CR.OUTBOUND)
                s.connect(addressing.path(self._qfamily, c.addr[0], c.addr[1], local=False) + CR.RENDEZVOUS)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                s.close()
                lst.close()
                raise err(e.errno or errno.EADDRNOTAVAIL, "cannot open a path from the new address to the peer") from e
            local = self._tuple(local[0], local[1])
            try:
                c.start_local_migration(local)
            except OSError:
                s.close()
                lst.close()
                raise
            path = CR.SeqpacketPath(s, CR.Wire(self._cfg, local, c.addr, eng.schedule), addressing=addressing)
            path.rendezvous = lst
            link.old_paths += [link.path, *link.paths.values()]
            link.paths = {}
            link.path = path
            self._watch_path(link, path, None)
            eng.flush(link)

    def _client_path(self, peer: tuple, local_addr: tuple | None = None) -> tuple[Any, tuple, Any]:
        eng = self._engine
        host = self._local[0] if self._local and not self._wildcard(self._local) else self._local_host()
        port = self._local[1] if self._local else 0
        if local_addr is not None:
            host, port = local_addr[0], local_addr[1]
        fam = self._qfamily
        if self._cfg is not None:
            # a v4-mapped peer: the path is IPv4, from this interface's IPv4 name (dualstack.py)
            try:
                fam, _ = dualstack.remote_plan(fam, peer[0], self._v6only,
                                               self._names(self._local[0])[2] if self._local else frozenset())
            except OSError as e:
                raise err(e.errno or errno.ENETUNREACH, e.strerror or "") from None
            if fam != self._qfamily:
                host = dualstack.v4_of_mapped(host) or self._cfg.network.my_address(fam)
        if self._carrier == "seqpacket":
            addressing = CR.Addressing(self._cfg, self._qfamily, frozenset({fam}))
            s = CR._unix(_socket.SOCK_SEQPACKET)
            try:
                port = CR.bind_unix(s, addressing, fam, host, port)
                local = addressing.addr_of(s.getsockname()) or self._tuple(host, port)
                remote_path = addressing.path(self._qfamily, peer[0], peer[1], local=False)
            except OSError:
                s.close()
                raise
            try:
                s.connect(remote_path)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                pass  # no listener: the handshake times out, as an unanswered Initial does
            wire = CR.Wire(self._cfg, local, peer, eng.schedule)
            path = CR.SeqpacketPath(s, wire, remote_path, addressing)
            path.rendezvous = CR.open_rendezvous(s.getsockname())
            return path, self._tuple(local[0], local[1]), None
        ep = endpoint_for(eng, self._carrier, fam, self._cfg, host, port, view=self._qfamily)
        ep.refs += 1
        wire = CR.Wire(self._cfg, ep.local, peer, eng.schedule)
        return CR.DatagramPath(ep, peer, wire), ep.local, ep

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
        data = b"".join(bytes(b) for b in buffers) if not isinstance(buffers, (bytes, bytearray)) else bytes(buffers)
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
        r, _, _ = select.select([self], [], [], remaining)
        if not r and deadline is not None and time.monotonic() >= deadline:
            raise err(errno.EAGAIN, "timed out")

    def _drain(self) -> None:
        while True:
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
