"""The I/O adapter: one daemon thread per process drives every SMB Direct carrier and timer.

Why a thread: MS-SMBD must answer keepalives, grant credits and run its negotiation and idle
timers whether or not the application is inside a socket call, exactly as smbdirect.ko would.
The application's socket is one end of a unix SOCK_SEQPACKET pair whose other end the engine
holds; the engine writes one wake byte while messages wait (level-triggered: a byte is there iff
the receive queue is non-empty) and shuts its end down when the connection is gone, so blocking,
timeouts, non-blocking mode, select/poll/epoll and asyncio work on the app's fd.

Everything that touches a Link's core runs under ``Engine.lock``; ``Engine.cond`` wakes callers
waiting for a negotiation, for send-queue room, or for an accept.
"""

from __future__ import annotations

import _socket
import os
import selectors
import socket
import threading
import time
from collections import deque
from typing import Any

from .core import PASSIVE, Params
from .link import Link, tune


def make_pair() -> tuple[Any, Any]:
    a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    b.setblocking(False)
    return a, b


class Listener:
    def __init__(self, engine: Engine, sock: Any, local: tuple, params: Params, backlog: int, recorder: Any,
                 peer_addr: Any):
        self.engine = engine
        self.sock = sock
        self.local = local
        self.params = params
        self.backlog = max(1, backlog)
        self.rec = recorder
        self.peer_addr = peer_addr  # callable: unix path -> emulated address
        self.pending: set[Link] = set()
        self.ready: deque[Link] = deque()
        self.app_wake: Any = None
        self.token_out = False
        self.closed = False

    def on_readable(self) -> None:
        for _ in range(16):
            try:
                fd, path = self.sock._accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            # A plain carrier, not socket.accept()'s: under the wrapper that builds the wrapper's
            # socket class, whose Python send/recvmsg every SEND of the connection would pass.
            conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET, 0, fd)
            if len(self.ready) + len(self.pending) >= self.backlog * 2:
                conn.close()
                continue
            tune(conn)
            peer = self.peer_addr(path) if path else None
            link = Link(self.engine, conn, PASSIVE, self.params, self.local, peer or self.local, self.rec)
            link.listener = self
            self.pending.add(link)
            self.engine.add(link)

    def established(self, link: Link) -> None:
        self.pending.discard(link)
        self.ready.append(link)
        self.signal()

    def discard(self, link: Link) -> None:
        self.pending.discard(link)

    def signal(self) -> None:
        if self.app_wake is None:
            return
        if self.ready and not self.token_out:
            try:
                self.app_wake.send(b"\1")
                self.token_out = True
            except OSError:
                pass

    def close(self) -> None:
        self.closed = True
        self.engine.forget_listener(self)
        try:
            self.sock.close()
        except OSError:
            pass
        for link in list(self.pending) + list(self.ready):
            link.close()
        self.pending.clear()
        self.ready.clear()


class Engine:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.sel = selectors.DefaultSelector()
        self.links: set[Link] = set()
        self.listeners: set[Listener] = set()
        self._wr: set[Link] = set()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name="wirecheck-smbdirect", daemon=True)
        self._thread.start()

    # -- registration (lock held by callers) -------------------------------------------------------
    def add(self, link: Link) -> None:
        self.links.add(link)
        self.sel.register(link.carrier, selectors.EVENT_READ, link)
        self.notify()

    def add_listener(self, lst: Listener) -> None:
        self.listeners.add(lst)
        self.sel.register(lst.sock, selectors.EVENT_READ, lst)
        self.notify()

    def forget(self, link: Link) -> None:
        if link in self.links:
            self.links.discard(link)
            self._wr.discard(link)
            try:
                self.sel.unregister(link.carrier)
            except (KeyError, ValueError, OSError):
                pass

    def forget_listener(self, lst: Listener) -> None:
        if lst in self.listeners:
            self.listeners.discard(lst)
            try:
                self.sel.unregister(lst.sock)
            except (KeyError, ValueError, OSError):
                pass

    def want_write(self, link: Link) -> None:
        if link not in self._wr and link in self.links:
            self._wr.add(link)
            try:
                self.sel.modify(link.carrier, selectors.EVENT_READ | selectors.EVENT_WRITE, link)
            except (KeyError, ValueError, OSError):
                pass

    def on_established(self, link: Link) -> None:
        if link.listener is not None:
            link.listener.established(link)
        self.cond.notify_all()

    def notify(self) -> None:
        self.cond.notify_all()
        if threading.current_thread() is not self._thread:
            try:
                self._wake_w.send(b"\0")
            except OSError:
                pass

    # -- the loop ------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self.lock:
                deadline = min((t for t in (lk.timer() for lk in self.links) if t is not None), default=None)
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            if timeout is not None:
                timeout = min(timeout, 3600.0)
            events = self.sel.select(timeout)
            with self.lock:
                for key, mask in events:
                    obj = key.data
                    if obj is None:
                        try:
                            while self._wake_r.recv(4096):
                                pass
                        except OSError:
                            pass
                        continue
                    if isinstance(obj, Listener):
                        if not obj.closed:
                            obj.on_readable()
                        continue
                    if obj.closed:
                        continue
                    if mask & selectors.EVENT_WRITE:
                        self._wr.discard(obj)
                        try:
                            self.sel.modify(obj.carrier, selectors.EVENT_READ, obj)
                        except (KeyError, ValueError, OSError):
                            pass
                        obj.flush()
                    if mask & selectors.EVENT_READ:
                        obj.on_readable()
                now = time.monotonic()
                for lk in list(self.links):
                    t = lk.timer()
                    if t is not None and t <= now:
                        lk.on_timer(now)
                self.cond.notify_all()


_engine: Engine | None = None
_engine_pid = 0
_engine_lock = threading.Lock()


def get_engine() -> Engine:
    global _engine, _engine_pid
    with _engine_lock:
        if _engine is None or _engine_pid != os.getpid():
            _engine = Engine()
            _engine_pid = os.getpid()
        return _engine
