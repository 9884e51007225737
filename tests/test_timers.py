"""The timer thread: order, never early, cancel, exceptions, fork."""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Iterator

import pytest

from wrappers import timers
from wrappers.timers import Scheduler


@pytest.fixture
def sched() -> Iterator[Scheduler]:
    s = Scheduler(name="test-timers")
    yield s
    s.close()


def _wait_for(cond: threading.Event, timeout: float = 5.0) -> None:
    assert cond.wait(timeout), "timer callbacks did not run in time"


def test_callbacks_fire_in_time_order_not_schedule_order(sched: Scheduler) -> None:
    fired: list[int] = []
    done = threading.Event()
    t0 = time.monotonic()
    for i, delay in enumerate([0.06, 0.02, 0.04, 0.0]):
        sched.schedule(t0 + delay, lambda i=i: fired.append(i))
    sched.schedule(t0 + 0.08, done.set)
    _wait_for(done)
    assert fired == [3, 1, 2, 0]


def test_same_instant_keeps_scheduling_order(sched: Scheduler) -> None:
    fired: list[int] = []
    done = threading.Event()
    at = time.monotonic() + 0.02
    for i in range(50):
        sched.schedule(at, lambda i=i: fired.append(i))
    sched.schedule(at, done.set)
    _wait_for(done)
    assert fired == list(range(50))


def test_never_early(sched: Scheduler) -> None:
    lateness: list[float] = []
    done = threading.Event()
    start = time.monotonic()
    for k in range(10):
        at = start + 0.005 * k
        sched.schedule(at, lambda at=at: lateness.append(time.monotonic() - at))
    sched.schedule(start + 0.06, done.set)
    _wait_for(done)
    assert len(lateness) == 10
    assert min(lateness) >= 0.0


def test_earlier_timer_added_while_thread_waits(sched: Scheduler) -> None:
    # The thread is waiting for a far timer; a nearer one must still fire on time.
    fired = threading.Event()
    sched.call_later(30.0, lambda: None)
    time.sleep(0.01)
    t0 = time.monotonic()
    sched.call_later(0.01, fired.set)
    _wait_for(fired, timeout=2.0)
    assert time.monotonic() - t0 < 1.0


def test_cancel(sched: Scheduler) -> None:
    fired: list[str] = []
    done = threading.Event()
    a = sched.call_later(0.02, lambda: fired.append("a"))
    sched.call_later(0.02, lambda: fired.append("b"))
    sched.call_later(0.04, done.set)
    assert sched.cancel(a) is True
    assert sched.cancel(a) is False
    _wait_for(done)
    assert fired == ["b"]
    assert sched.pending() == 0


def test_cancel_after_run_returns_false(sched: Scheduler) -> None:
    done = threading.Event()
    h = sched.call_later(0.0, done.set)
    _wait_for(done)
    time.sleep(0.01)
    assert sched.cancel(h) is False


def test_exception_does_not_stop_the_next(sched: Scheduler, capfd: pytest.CaptureFixture[str]) -> None:
    fired: list[str] = []
    done = threading.Event()

    def boom() -> None:
        raise RuntimeError("boom in a timer")

    t0 = time.monotonic()
    sched.schedule(t0 + 0.01, boom)
    sched.schedule(t0 + 0.02, lambda: fired.append("after"))
    sched.schedule(t0 + 0.03, done.set)
    _wait_for(done)
    assert fired == ["after"]
    err = capfd.readouterr().err
    assert "boom in a timer" in err and "test-timers" in err


def test_callback_may_schedule_more(sched: Scheduler) -> None:
    done = threading.Event()
    sched.call_later(0.0, lambda: sched.call_later(0.01, done.set))
    _wait_for(done)


def test_closed_scheduler_refuses(sched: Scheduler) -> None:
    sched.close()
    with pytest.raises(RuntimeError):
        sched.call_later(0.0, lambda: None)


def test_no_thread_until_first_schedule() -> None:
    s = Scheduler(name="lazy")
    try:
        assert s._thread is None
        s.call_later(10.0, lambda: None)
        assert s._thread is not None and s._thread.daemon
    finally:
        s.close()


def test_module_level_functions() -> None:
    done = threading.Event()
    h = timers.schedule(timers.now() + 0.01, done.set)
    _wait_for(done)
    assert timers.cancel(h) is False
    other = timers.call_later(30.0, lambda: None)
    assert timers.cancel(other) is True


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_child_gets_fresh_scheduler(sched: Scheduler) -> None:
    # The parent has a running thread and a pending timer; the child must not inherit either, and must
    # be able to use timers (restarted lazily).
    sched.call_later(0.0, lambda: None)
    parent_pending = sched.call_later(30.0, lambda: None)
    time.sleep(0.02)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "fork() in a multi-threaded process"
        pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            ok = sched.pending() == 0 and sched._thread is None
            ev = threading.Event()
            sched.call_later(0.01, ev.set)
            ok = ok and ev.wait(2.0)
            code = 0 if ok else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert sched.cancel(parent_pending) is True  # the parent's timer is untouched


def test_get_scheduler_is_the_default() -> None:
    assert timers.get_scheduler() is timers.default_scheduler
