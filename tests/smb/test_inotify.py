"""harness/blocking/inotify.py: inotify events (as the kernel writes them) to FILE_NOTIFY actions."""

from __future__ import annotations

import os
import struct

import pytest

from harness.blocking import inotify as ino
from harness.smb import change_notify as cn


def event(wd: int, mask: int, cookie: int = 0, name: str = "") -> bytes:
    raw = name.encode() + b"\0" * (16 - len(name) % 16) if name else b""
    return struct.pack("iIII", wd, mask, cookie, len(raw)) + raw


@pytest.fixture
def watcher(tmp_path):
    w = ino.Inotify()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    w.watch(str(tmp_path), True)
    yield w, {d: wd for wd, d in w.directories.items()}, tmp_path
    w.close()


def test_events_become_actions(watcher):
    w, wds, root = watcher
    top, a, b = wds[str(root)], wds[str(root / "a")], wds[str(root / "b")]
    data = b"".join([
        event(top, ino.IN_CREATE, name="new.txt"),
        event(top, ino.IN_CREATE | ino.IN_ISDIR, name="dir"),
        event(top, ino.IN_DELETE, name="gone.txt"),
        event(top, ino.IN_MODIFY, name="new.txt"),
        event(top, ino.IN_MOVED_FROM, cookie=7, name="x"), event(top, ino.IN_MOVED_TO, cookie=7, name="y"),
        event(a, ino.IN_MOVED_FROM, cookie=8, name="m"), event(b, ino.IN_MOVED_TO, cookie=8, name="m"),
        event(a, ino.IN_MOVED_FROM, cookie=9, name="out"),  # moved out of the watched tree
        event(99, ino.IN_CREATE, name="unknown-wd"),
    ])
    (root / "dir").mkdir()
    got = [(c.action, os.path.relpath(c.path, root), c.filter_bits) for c in w.changes(data)]
    assert got == [
        (cn.ADDED, "new.txt", cn.FILE_NAME), (cn.ADDED, "dir", cn.DIR_NAME), (cn.REMOVED, "gone.txt", cn.FILE_NAME),
        (cn.MODIFIED, "new.txt", cn.SIZE | cn.LAST_WRITE),
        (cn.RENAMED_OLD_NAME, "x", cn.FILE_NAME), (cn.RENAMED_NEW_NAME, "y", cn.FILE_NAME),
        (cn.REMOVED, "a/m", cn.FILE_NAME), (cn.ADDED, "b/m", cn.FILE_NAME), (cn.REMOVED, "a/out", cn.FILE_NAME)]
    assert str(root / "dir") in w.directories.values()  # a new directory of a recursive watch is watched


def test_ignored_forgets_the_watch(watcher):
    w, wds, root = watcher
    a = wds[str(root / "a")]
    assert w.changes(event(a, ino.IN_IGNORED)) == []
    assert a not in w.directories and a not in w.recursive
