"""threadutil.joined: a helper thread still running after the wait fails the test (a bare
``join(timeout)`` returns None either way, which is how a hung server thread went unnoticed)."""

from __future__ import annotations

import threading

import pytest
from threadutil import joined


def test_joined_fails_on_a_thread_still_running():
    release = threading.Event()
    t = threading.Thread(target=release.wait, name="stuck-helper", daemon=True)
    t.start()
    try:
        with pytest.raises(pytest.fail.Exception, match="stuck-helper still running"):
            joined(t, 0.05)
    finally:
        release.set()
        t.join(5)
    assert not t.is_alive()


def test_joined_passes_on_a_finished_thread():
    done = []
    t = threading.Thread(target=lambda: done.append(1))
    t.start()
    joined(t, 5)
    assert done == [1]
