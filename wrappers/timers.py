"""One timer thread per process, so that delayed work never sleeps the application.

Why this exists: impairments delay datagrams (``delay=20ms``, ``reorder_delay``), but the application
that called ``sendto()`` must return at once, exactly as it would with a kernel and ``tc netem``.
The socket wrapper hands the delayed delivery to :func:`schedule` and returns; a single daemon thread
runs the callbacks when they are due.

Design choices, and why:

- **One thread, one heap** of ``(when, seq, handle)``. ``seq`` breaks ties, so callbacks scheduled for
  the same instant run in the order they were scheduled: two datagrams given the same delivery time stay
  in order on the wire.
- **Monotonic clock** (``time.monotonic``), the same clock the impairment deciders are given, so a fate's
  ``Delivery.at`` can be passed to :func:`schedule` unchanged. Wall-clock jumps never fire timers early.
- **Never early**: a callback runs when ``clock() >= when``; ``Condition.wait`` may wake up early, so the
  loop re-checks.
- **Callbacks run outside the lock**, so a callback may schedule or cancel other timers. Callbacks should
  be short (a ``send()`` on a unix socket); a slow one delays the ones behind it.
- **Exceptions are printed to stderr and swallowed**: one broken delivery must not stop every later
  delivery in the process.
- **Fork-safe**: the child of ``fork()`` has no timer thread and may have inherited a lock held by it.
  ``os.register_at_fork(after_in_child=...)`` gives every scheduler a fresh lock and an empty heap (the
  parent's pending timers belong to the parent: the child must not deliver the parent's delayed
  datagrams a second time); the thread is started again lazily on the next :func:`schedule`.
- **Lazy start**: no thread exists until something is scheduled, so a process without impairments pays
  nothing.
"""

from __future__ import annotations

import heapq
import itertools
import os
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable

__all__ = [
    "Scheduler",
    "TimerHandle",
    "schedule",
    "call_later",
    "cancel",
    "now",
    "default_scheduler",
    "get_scheduler",
]

Clock = Callable[[], float]


class TimerHandle:
    """A scheduled callback; pass it to :func:`cancel`. ``when`` is in the scheduler's clock."""

    __slots__ = ("when", "seq", "callback", "cancelled", "done")

    def __init__(self, when: float, seq: int, callback: Callable[[], object]) -> None:
        self.when = when
        self.seq = seq
        self.callback: Callable[[], object] | None = callback
        self.cancelled = False
        self.done = False

    def __lt__(self, other: TimerHandle) -> bool:
        return (self.when, self.seq) < (other.when, other.seq)

    def __repr__(self) -> str:
        state = "cancelled" if self.cancelled else "done" if self.done else "pending"
        return f"<TimerHandle #{self.seq} at {self.when:.6f} {state}>"


_schedulers: weakref.WeakSet[Scheduler] = weakref.WeakSet()


class Scheduler:
    """A heap of timers served by one lazily started daemon thread.

    The module keeps one default instance (:func:`schedule` / :func:`cancel` use it); tests create their
    own so that they can :meth:`close` them.
    """

    def __init__(self, name: str = "wirecheck-timers", clock: Clock = time.monotonic) -> None:
        self.name = name
        self.clock = clock
        self._reset()
        _schedulers.add(self)

    def _reset(self) -> None:
        # Called from __init__ and in a forked child: everything here is per process.
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[TimerHandle] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- public API -------------------------------------------------------------------------------
    def schedule(self, at: float, callback: Callable[[], object]) -> TimerHandle:
        """Run ``callback()`` on the timer thread once ``clock() >= at``. Returns a handle for cancel."""
        with self._cond:
            if self._closed:
                raise RuntimeError(f"{self.name}: scheduler is closed")
            handle = TimerHandle(at, next(self._seq), callback)
            heapq.heappush(self._heap, handle)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            elif self._heap[0] is handle:
                self._cond.notify()  # the new timer is the earliest: shorten the thread's wait
        return handle

    def call_later(self, delay: float, callback: Callable[[], object]) -> TimerHandle:
        """:meth:`schedule` relative to now."""
        return self.schedule(self.clock() + delay, callback)

    def cancel(self, handle: TimerHandle) -> bool:
        """Prevent a pending callback from running. True if it was still pending.

        The handle stays in the heap and is discarded when it reaches the top (lazy deletion keeps
        cancel O(1)).
        """
        with self._cond:
            if handle.cancelled or handle.done:
                return False
            handle.cancelled = True
            handle.callback = None
            return True

    def pending(self) -> int:
        """Number of timers not yet run nor cancelled (for tests and diagnostics)."""
        with self._cond:
            return sum(1 for h in self._heap if not h.cancelled)

    def close(self) -> None:
        """Stop the thread; pending timers are dropped. Mostly for tests."""
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    # -- the thread --------------------------------------------------------------------------------
    def _next_due(self) -> TimerHandle | None:
        """Block until a timer is due; None when closed. Called and returns with the lock held."""
        while True:
            if self._closed:
                return None
            if not self._heap:
                self._cond.wait()
                continue
            top = self._heap[0]
            if top.cancelled:
                heapq.heappop(self._heap)
                continue
            delay = top.when - self.clock()
            if delay <= 0:
                heapq.heappop(self._heap)
                top.done = True
                return top
            self._cond.wait(delay)

    def _run(self) -> None:
        while True:
            with self._cond:
                handle = self._next_due()
                if handle is None:
                    return
                callback, handle.callback = handle.callback, None
            if callback is None:  # cancelled between pop and here cannot happen, but stay safe
                continue
            try:
                callback()
            except Exception:
                sys.stderr.write(
                    f"{self.name}: timer callback {callback!r} raised; the timer thread continues:\n"
                    + traceback.format_exc()
                )
                sys.stderr.flush()


def _after_fork_in_child() -> None:
    for scheduler in list(_schedulers):
        scheduler._reset()


os.register_at_fork(after_in_child=_after_fork_in_child)

default_scheduler = Scheduler()

#: The clock every wrapper component uses for timers and impairment decisions.
now: Clock = time.monotonic


def get_scheduler() -> Scheduler:
    """The process's scheduler (the same object after a fork, with fresh state in the child)."""
    return default_scheduler


def schedule(at: float, callback: Callable[[], object]) -> TimerHandle:
    """Run ``callback()`` on the process's timer thread at monotonic time ``at`` (never before)."""
    return default_scheduler.schedule(at, callback)


def call_later(delay: float, callback: Callable[[], object]) -> TimerHandle:
    """Run ``callback()`` on the process's timer thread ``delay`` seconds from now."""
    return default_scheduler.call_later(delay, callback)


def cancel(handle: TimerHandle) -> bool:
    """Cancel a timer from :func:`schedule`; True if it had not run yet."""
    return default_scheduler.cancel(handle)
