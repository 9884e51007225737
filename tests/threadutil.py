"""Joining a test's helper thread so that a hung thread fails the test.

``thread.join(timeout)`` returns None whether the thread finished or not: a test that joins and
then checks results a thread may still be writing passes or fails by chance, and a server thread
stuck in accept() goes unnoticed.  ``joined`` joins and fails the test, naming the thread, when it
is still alive after ``timeout`` seconds."""

from __future__ import annotations

import threading

import pytest


def joined(thread: threading.Thread, timeout: float, what: str | None = None) -> None:
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"{what or thread.name} still running {timeout}s after the test waited for it")
