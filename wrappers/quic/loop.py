"""The engine's I/O adapter: one thread per process that owns carriers, app-pipe ends and timers.

Theory of operation. Each QUIC socket the application holds is one end of a unix SOCK_SEQPACKET
pair; the engine holds the other end (``Link.app``). Everything the application may read (stream
data, datagrams, events, "a connection is ready to accept") is written to that end as one message
per item, so blocking, timeouts, non-blocking mode, select/poll/epoll and asyncio work on the app's
fd with no special cases, and the pair's buffer gives back-pressure (items wait in ``Link.outq``).
When a connection ends, the engine shuts its end down after the last item: the app then reads EOF,
which is exactly "closed, queue empty" (ENOTCONN) and keeps the fd readable, as quic.ko's POLLHUP.

Calls from the application (send, options, handshake) run in the caller's thread under
``Engine.lock`` and flush datagrams inline; the engine thread runs the rest: datagrams arriving on
carriers, loss-recovery/ACK/idle/keepalive timers, and delayed (impaired) deliveries, whether or not
the application calls in. ``Engine.cond`` wakes callers blocked on stream limits, send space or the
handshake after every pass.

Paths. A link sends on ``Link.path``; a link whose peer moved also knows the peer's new path
(``Link.paths``, by peer address) and sends where aioquic addresses each datagram. An end that
migrates itself (a client, or a quic.ko server on the seqpacket carrier) sends on its new path at
once, forgets the peer paths it knew (everything goes on the new path) and keeps reading the old
ones until the first datagram arrives on the new one (then the migration is complete and the old
paths are closed; a server's paths at its first address stay, as its listener still holds that
address: ``Link.home_paths``). New paths towards us come from three places: a listener's arrivals (a known
destination connection ID: the client migrated or its NAT rebound), a client's rendezvous listener
(a server that moved, carriers.open_rendezvous) and a moved server's own listener on its new name.
A NAT rebinding is the carrier's business (carriers.py): the path object stays, its socket changes.
"""

from __future__ import annotations

import _socket
import heapq
import itertools
import os
import selectors
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

from . import core
from .core import ITEM, K_ACCEPT, K_DATA, K_WAKE, Connection, item

PIPE_BUF = 4 * 1024 * 1024


class Link:
    """One connection inside the engine: its core, its app-pipe end and its path."""

    _ids = itertools.count(1)

    def __init__(self, conn: Connection, app: Any, path: Any = None, peer: tuple | None = None):
        self.id = next(self._ids)
        self.core = conn
        self.app = app
        self.path = path
        self.peer = peer
        self.outq: deque[bytes] = deque()
        self.app_shut = False
        self.gone = False
        self.endpoint: Any = None
        self.paths: dict[Any, Any] = {}  # peer address -> path, for a server whose client moved
        self.old_paths: list[Any] = []  # a migrating client's previous paths, closed when it is done
        # A moved server's paths at its first address, which its listener still holds: open (and
        # read) until the connection ends. quic.ko finds a connection by its CID on the listener's
        # port, so a client whose validation of the new server address fails and that falls back
        # to the last validated one (RFC 9000 9.3.2) still reaches the server there.
        self.home_paths: list[Any] = []
        self.app_end: Any = None  # server side: the app end of the pair, until accept() takes it
        self.odcid: bytes | None = None
        self.open_path: Callable[[tuple], Any] | None = None  # client: a path to a new server address


class Listener:
    def __init__(self, app: Any, opts: core.Options, backlog: int):
        self.app = app
        self.opts = opts
        self.backlog = backlog
        self.queue: deque[Link] = deque()
        self.carrier: Any = None
        self.local: tuple = ()
        self.family = 0
        self.cfg: Any = None
        self.outq: deque[bytes] = deque()
        self.dropped = 0
        self.router: Any = None  # routing.Router: the listeners sharing this address:port
        self.listener_file: str | None = None  # another process's handoff socket (routing.py)


def make_pair() -> tuple[Any, Any]:
    """(app end, engine end) of a SEQPACKET pair with room for a burst of 64 KiB items."""
    a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    for s in (a, b):
        for opt in (_socket.SO_SNDBUF, _socket.SO_RCVBUF):
            try:
                s.setsockopt(_socket.SOL_SOCKET, opt, PIPE_BUF)
            except OSError:
                pass
    b.setblocking(False)
    return a, b


class Engine:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.sel = selectors.DefaultSelector()
        self._rd, self._wr = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.sel.register(self._rd, selectors.EVENT_READ, (self._drain_kick, None))
        self.links: dict[int, Link] = {}
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._planned = 0.0
        self._thread = threading.Thread(target=self._run, name="wirecheck-quic", daemon=True)
        self._thread.start()

    # -- selector bookkeeping ---------------------------------------------------------------------
    def watch(self, fd: int, reader: Callable[[], None] | None, writer: Callable[[], None] | None = None) -> None:
        mask = (selectors.EVENT_READ if reader else 0) | (selectors.EVENT_WRITE if writer else 0)
        try:
            self.sel.unregister(fd)
        except (KeyError, ValueError):
            pass
        if mask:
            self.sel.register(fd, mask, (reader, writer))
        self.kick()

    def unwatch(self, fd: int) -> None:
        try:
            self.sel.unregister(fd)
        except (KeyError, ValueError, OSError):
            pass

    def kick(self) -> None:
        if threading.current_thread() is self._thread:
            return
        try:
            os.write(self._wr, b"x")
        except BlockingIOError:
            pass

    def _drain_kick(self) -> None:
        try:
            while os.read(self._rd, 4096):
                pass
        except BlockingIOError:
            pass

    def schedule(self, at: float, cb: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (at, next(self._seq), cb))
        if at < self._planned:
            self.kick()

    # -- connections ------------------------------------------------------------------------------
    def add_link(self, link: Link) -> None:
        self.links[link.id] = link
        self.watch(link.app.fileno(), lambda: self._app_readable(link))

    def flush(self, link: Link, now: float | None = None) -> None:
        """Send what the core has for the wire, queue what it has for the app (caller holds lock)."""
        now = time.monotonic() if now is None else now
        c = link.core
        if c.items:
            link.outq.extend(c.items)
            c.items = []
        self.push(link)  # first: what the app's pair takes is consumed and returns credit
        if link.path is not None and c.quic is not None:
            for d, addr in c.datagrams(now):
                self.path_for(link, addr).send(d, now)
        t = c.next_timer()
        if t is not None and t < self._planned:
            self.kick()
        self.cond.notify_all()

    def path_for(self, link: Link, addr: Any) -> Any:
        """Where a datagram aioquic addressed to ``addr`` goes: a known path, or for a client probing a
        server address it has no path to (the preferred address) a new one (``Link.open_path``)."""
        p = link.paths.get(addr)
        if p is not None:
            return p
        if (link.open_path is not None and addr is not None and link.path is not None
                and tuple(addr[:2]) != tuple(link.path.peer[:2])):
            p = link.open_path(addr)
            if p is not None:
                link.paths[addr] = p
                return p
        return link.path

    def push(self, link: Link) -> None:
        q = link.outq
        while q:
            try:
                link.app.send(q[0])
            except BlockingIOError:
                self.watch(link.app.fileno(), lambda: self._app_readable(link), lambda: self._app_writable(link))
                return
            except OSError:
                q.clear()
                break
            it = q.popleft()
            if it[0] == K_DATA:
                link.core.consumed(ITEM.unpack_from(it)[2], len(it) - ITEM.size)
        if link.core.closed and not link.app_shut:
            link.app_shut = True
            try:
                link.app.shutdown(_socket.SHUT_WR)
            except OSError:
                pass

    def wake(self, link: Link) -> None:
        link.outq.append(item(K_WAKE))
        self.flush(link)

    def _app_writable(self, link: Link) -> None:
        self.watch(link.app.fileno(), lambda: self._app_readable(link))
        self.flush(link)  # the app read: push more, and send the credit it returned

    def _app_readable(self, link: Link) -> None:
        # The app never writes; readable means its end was closed (close() or garbage collection).
        try:
            data = link.app.recv(16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.drop_link(link)

    def drop_link(self, link: Link, *, send_close: bool = True) -> None:
        if link.gone:
            return
        link.gone = True
        if send_close and not link.core.closed:
            link.core.close(time.monotonic())
            if link.path is not None and link.core.quic is not None:
                now = time.monotonic()
                for d, addr in link.core.datagrams(now):
                    self.path_for(link, addr).send(d, now)
        link.core.finish()
        self.unwatch(link.app.fileno())
        try:
            link.app.close()
        except OSError:
            pass
        self.links.pop(link.id, None)
        paths = list({id(p): p for p in [link.path, *link.paths.values(), *link.old_paths, *link.home_paths]
                      if p is not None}.values())
        # Datagrams an impairment delays are on the wire already: the last one (the close, often)
        # still reaches the peer, so the sockets that carry them close only after it has left.
        in_flight = max([getattr(getattr(p, "wire", None), "in_flight_until", 0.0) for p in paths] + [0.0])
        closing: list[Callable[[], None]] = []
        for path in paths:
            for fd in path.fds() if hasattr(path, "fds") else ([path.fileno()] if hasattr(path, "sock") else []):
                self.unwatch(fd)
            closing.append(path.close)
        ep = link.endpoint
        if ep is not None:
            ep.links.pop(link.peer, None)
            ep.paths.pop(link.peer, None)
            ep.refs -= 1
            if ep.refs <= 0 and ep.listener is None:
                for fd in ep.fds():
                    self.unwatch(fd)
                release_endpoint(ep)
                closing.append(ep.close)
        def close_all() -> None:
            for close in closing:
                close()

        if in_flight > time.monotonic():
            self.schedule(in_flight + 0.001, close_all)
        else:
            close_all()
        self.cond.notify_all()

    # -- inbound ----------------------------------------------------------------------------------
    def path_readable(self, link: Link, path: Any = None) -> None:
        path = path or link.path
        assert path is not None
        now = time.monotonic()
        for d in path.read():
            if not d:
                self.unwatch(path.fileno())
                break
            self.arrived(link, path, d, now)
        self.flush(link, now)

    def arrived(self, link: Link, path: Any, data: bytes, now: float) -> None:
        """One datagram for ``link`` on ``path``: the first one on a migrating client's new path
        completes the migration (the old paths are closed)."""
        c = link.core
        sw = getattr(path, "switch_local", None)
        if sw is not None and c.local_addr != sw:
            c.local_addr = sw  # the client moved to our preferred address
        if c.migrating is not None and path is link.path:
            c.local_migration_done()
            for old in link.old_paths:
                for fd in old.fds() if hasattr(old, "fds") else []:
                    self.unwatch(fd)
                old.close()
            link.old_paths.clear()
        c.receive(data, getattr(path, "peer", None) or link.peer, now)

    def deliver(self, link: Link, data: bytes, path: Any = None) -> None:
        now = time.monotonic()
        self.arrived(link, path or link.path, data, now)
        self.flush(link, now)

    def find_by_cid(self, dcid: bytes) -> Link | None:
        """The server connection that owns destination CID ``dcid`` (a new path of a known connection)."""
        for lk in self.links.values():
            q = lk.core.quic
            if q is not None and not lk.core.is_client and q.owns_host_cid(dcid):
                return lk
        return None

    def offer(self, lst: Listener, link: Link) -> None:
        """A new incoming connection: queue it and tell the listener's app fd."""
        if len(lst.queue) >= max(lst.backlog, 1):
            link.path.close() if link.path is not None else None
            return
        lst.queue.append(link)
        try:
            lst.app.send(item(K_ACCEPT, link.id))
        except OSError:
            pass
        self.cond.notify_all()

    # -- the thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self.lock:
                now = time.monotonic()
                due = [t for t in (lk.core.next_timer() for lk in list(self.links.values())) if t is not None]
                if self._timers:
                    due.append(self._timers[0][0])
                nxt = min(due) if due else now + 3600
                self._planned = nxt
            timeout = max(0.0, nxt - now)
            try:
                events = self.sel.select(timeout)
            except OSError:
                events = []
            with self.lock:
                for key, mask in events:
                    reader, writer = key.data
                    try:
                        if mask & selectors.EVENT_WRITE and writer:
                            writer()
                        if mask & selectors.EVENT_READ and reader:
                            reader()
                    except Exception:  # one bad connection must not stop the engine
                        traceback.print_exc()
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    _, _, cb = heapq.heappop(self._timers)
                    try:
                        cb()
                    except Exception:  # one failing timer must not stop the loop; say it, as above
                        traceback.print_exc()
                for lk in list(self.links.values()):
                    t = lk.core.next_timer()
                    if t is not None and t <= now:
                        try:
                            lk.core.timer(now)
                            self.flush(lk, now)
                        except Exception:
                            traceback.print_exc()
                self.cond.notify_all()


_endpoints: dict[tuple, Any] = {}


def release_endpoint(ep: Any) -> None:
    for k, v in list(_endpoints.items()):
        if v is ep:
            del _endpoints[k]


_engine: Engine | None = None
_engine_lock = threading.Lock()
_engine_pid = 0


def get_engine() -> Engine:
    global _engine, _engine_pid
    with _engine_lock:
        if _engine is None or _engine_pid != os.getpid():
            _engine = Engine()
            _engine_pid = os.getpid()
            _endpoints.clear()
            from . import routing

            routing.reset()
        return _engine
