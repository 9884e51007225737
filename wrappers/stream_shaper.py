"""Carries out stream impairments (delay, cut) for one emulated TCP connection.

The decisions come from ``impair.StreamImpairer`` (sans-IO); this is the I/O half. Once a
connection is impaired, bytes the application sends go through a FIFO queue that the timer
thread drains into the unix socket when they are due, the way a kernel's send buffer holds bytes
the wire has not carried yet: the application is never slept, and the pcap records each chunk
when it actually goes out. A cut travels through the same queue, so it happens after the bytes
sent before it, and not before.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from .timers import get_scheduler

QUEUE_LIMIT = 4 * 1024 * 1024
"""Bytes an impaired connection may hold before send() pushes back (EAGAIN, or a wait)."""

_RETRY = 0.001


class StreamShaper:
    """The queue between an impaired connection's send() and its unix socket."""

    def __init__(self, push: Callable[[memoryview], int], cut: Callable[[str], None]):
        # push(view) sends without blocking and logs; returns bytes sent (0 when the socket is full).
        self._push = push
        self._cut = cut
        self._queue: deque[tuple[float, memoryview | str | Callable[[], object]]] = deque()
        self.queued = 0
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._scheduled: float | None = None
        self.failed: OSError | None = None

    def room(self) -> int:
        return max(0, QUEUE_LIMIT - self.queued)

    def wait_for_room(self, deadline: float | None) -> bool:
        with self._room:
            while self.queued >= QUEUE_LIMIT and self.failed is None:
                timeout = None if deadline is None else deadline - time.monotonic()
                if timeout is not None and timeout <= 0:
                    return False
                self._room.wait(timeout)
            return True

    def enqueue(self, at: float, data: bytes | None, then: str | Callable[[], object] | None = None) -> None:
        """Queue bytes due at `at`, then optionally a cut ("rst"/"blackhole") or another action
        (a shutdown) that must not overtake them. Items leave in order, never before their time."""
        with self._lock:
            if data:
                self._queue.append((at, memoryview(data)))
                self.queued += len(data)
            if then is not None:
                last = self._queue[-1][0] if self._queue else at
                self._queue.append((max(at, last), then))
        self.flush()

    @property
    def idle(self) -> bool:
        return not self._queue

    def flush(self) -> None:
        """Send what is due; reschedule for what is not (or for when the socket has room)."""
        retry_at: float | None = None
        with self._lock:
            now = time.monotonic()
            while self._queue:
                at, item = self._queue[0]
                if at > now:
                    retry_at = at
                    break
                if callable(item):
                    self._queue.popleft()
                    self._lock.release()
                    try:
                        item()
                    finally:
                        self._lock.acquire()
                    continue
                if isinstance(item, str):
                    self._queue.popleft()
                    self._queue.clear()
                    self.queued = 0
                    self._room.notify_all()
                    self._lock.release()
                    try:
                        self._cut(item)
                    finally:
                        self._lock.acquire()
                    break
                try:
                    n = self._push(item)
                except OSError as e:
                    self.failed = e
                    self._queue.clear()
                    self.queued = 0
                    self._room.notify_all()
                    break
                self.queued -= n
                self._room.notify_all()
                if n < len(item):
                    self._queue[0] = (at, item[n:])
                    retry_at = now + _RETRY
                    break
                self._queue.popleft()
            if retry_at is not None and (self._scheduled is None or retry_at < self._scheduled
                                         or self._scheduled <= now):
                self._scheduled = retry_at
                get_scheduler().schedule(retry_at, self._timer)

    def _timer(self) -> None:
        self._scheduled = None
        self.flush()

    def drain(self, timeout: float = 10.0) -> None:
        """Before close: give queued bytes their chance to go out (bounded)."""
        deadline = time.monotonic() + timeout
        while self._queue and self.failed is None and time.monotonic() < deadline:
            self.flush()
            if self._queue:
                time.sleep(_RETRY)
