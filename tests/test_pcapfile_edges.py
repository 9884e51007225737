"""wrappers.pcapfile at its edges: what each foreign header is called, a short writev resumed at every
boundary, the snaplen limit, the fallback lock's flock descriptor (same inode, close-on-exec, and its
fallback when /proc is not there), what a forked child resets, where the temporary file of an atomic creation lives,
the grace for a file another writer created empty, and a header that arrives while we take the lock.

Mutation testing of pcapfile.py showed these unchecked; tests/test_pcapfile.py covers the main paths.
"""

from __future__ import annotations

import fcntl
import gc
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from wrappers import pcapfile
from wrappers.pcapfile import SNAPLEN, PcapWriter, pcap_header

HEADER = pcap_header()


def _head(magic: bytes, rest: bytes = b"\x02\x00\x04\x00" + bytes(16)) -> bytes:
    return magic + rest


@pytest.mark.skipif(sys.byteorder != "little", reason="the byte strings below are little-endian files")
@pytest.mark.parametrize("head,found", [
    (_head(b"\x0a\x0d\x0d\x0a"), "a pcapng file"),
    (_head(b"\x4d\x3c\xb2\xa1"), "a pcap with nanosecond timestamps"),
    (_head(b"\xa1\xb2\xc3\xd4"), "a pcap in the other byte order"),
    (_head(b"\xa1\xb2\x3c\x4d"), "a pcap in the other byte order"),  # big-endian, nanoseconds
    (_head(b"\xa1\xb2\xc3\xd4", b"\x02\x01" + bytes(18)), "a pcap in the other byte order"),
    (_head(b"\x01\x02\x03\x04"), "magic bytes 01020304"),
    (_head(b"\xd4\xc3\xb2\xa1", b"\x02\x00\x03\x00" + bytes(16)), "a pcap of version 2.3"),
    (HEADER[:20] + (1).to_bytes(4, "little"), "a pcap with link type 1"),
    (HEADER, None),
])
def test_what_a_header_is_called(head, found):
    assert pcapfile._describe_header(head) == found


def test_short_writes_resume_at_every_boundary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """writev may write less than asked (disk full, a signal): the rest follows, nothing twice."""
    real = os.writev
    for step in (1, 2, 3, 4, 5, 7, 100):
        calls = []

        def short(fd, views, step=step, calls=calls):
            data = b"".join(bytes(v) for v in views)[:step]
            calls.append(len(data))
            return real(fd, [data])

        monkeypatch.setattr(os, "writev", short)
        path = tmp_path / f"out{step}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT)
        try:
            pcapfile._writev_all(fd, [b"abcd", b"", b"ef", bytearray(b"ghijk"), memoryview(b"l")])
        finally:
            os.close(fd)
        monkeypatch.setattr(os, "writev", real)
        assert path.read_bytes() == b"abcdefghijkl", step
        assert sum(calls) == 12 and all(calls), (step, calls)


def test_snaplen_is_the_limit(tmp_path: Path) -> None:
    with PcapWriter(tmp_path / "a.pcap") as w:
        w.write_packet([bytes(SNAPLEN)], ts=1.0)
        with pytest.raises(ValueError, match=f"^packet of {SNAPLEN + 1} bytes exceeds the snaplen {SNAPLEN}$"):
            w.write_packet([bytes(SNAPLEN), b"x"], ts=1.0)
    assert (tmp_path / "a.pcap").stat().st_size == 24 + 16 + SNAPLEN


@pytest.fixture
def flock_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback lock (no /dev/shm, no C extension): flock on a description of the capture."""
    monkeypatch.setattr(pcapfile, "_LOCK_DIR", None)


def _same_file_cloexec(w: PcapWriter) -> None:
    lock_fd = w._lock_fd
    assert lock_fd is not None
    assert os.fstat(lock_fd).st_ino == os.fstat(w.fileno()).st_ino
    assert fcntl.fcntl(lock_fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    assert fcntl.fcntl(lock_fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY


def test_lock_descriptor_follows_the_open_file_not_the_name(tmp_path: Path, flock_only: None) -> None:
    path = tmp_path / "a.pcap"
    w = PcapWriter(path)
    os.unlink(path)
    path.write_bytes(b"another file now")
    with w.locked():
        pass
    _same_file_cloexec(w)
    w.close()


def test_lock_descriptor_without_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flock_only: None) -> None:
    real = os.open

    def no_proc(p, *a, **k):
        if str(p).startswith("/proc/self/fd/"):
            raise FileNotFoundError(p)
        return real(p, *a, **k)

    w = PcapWriter(tmp_path / "a.pcap")
    monkeypatch.setattr(os, "open", no_proc)
    with w.locked():
        pass
    monkeypatch.setattr(os, "open", real)
    _same_file_cloexec(w)
    w.close()


def test_after_fork_in_child_resets_the_locks(tmp_path: Path, flock_only: None) -> None:
    """What the at-fork hook does in a child, run here directly (a forked child's own coverage is not
    recorded): a fresh thread lock, the lock descriptor shared with the parent closed and forgotten."""
    w = PcapWriter(tmp_path / "a.pcap")
    with w.locked():
        pass
    old_fd, old_lock = w._lock_fd, w._thread_lock
    assert old_fd is not None
    with old_lock:
        w._after_fork_in_child()
        assert w._lock_fd is None and w._thread_lock is not old_lock
        assert w._thread_lock.acquire(blocking=False)  # not the held one
        w._thread_lock.release()
    with pytest.raises(OSError):
        os.fstat(old_fd)
    w._after_fork_in_child()  # again, with no lock descriptor open: nothing to close
    assert w._lock_fd is None
    with w.locked():
        pass
    assert w._lock_fd is not None
    w.close()


def test_module_after_fork_resets_every_live_writer(tmp_path: Path, flock_only: None) -> None:
    a, b = PcapWriter(tmp_path / "a.pcap"), PcapWriter(tmp_path / "b.pcap")
    for w in (a, b):
        with w.locked():
            pass
    shared_lock = pcapfile._shared_lock
    pcapfile._after_fork_in_child()
    assert pcapfile._shared_lock is not shared_lock
    assert pcapfile._shared_lock.acquire(blocking=False)
    pcapfile._shared_lock.release()
    assert a._lock_fd is None and b._lock_fd is None
    a.close()
    b.close()


def test_repr(tmp_path: Path) -> None:
    w = PcapWriter(tmp_path / "a.pcap")
    assert repr(w) == f"<PcapWriter {str(tmp_path / 'a.pcap')!r}>"
    w.close()
    assert repr(w) == f"<PcapWriter {str(tmp_path / 'a.pcap')!r} closed>"


def test_del_swallows_a_failed_close(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    w = PcapWriter(tmp_path / "a.pcap")
    os.close(w.fileno())  # closed behind its back: its own close() now fails with EBADF
    del w
    gc.collect()
    assert seen == []


def test_creation_uses_a_hidden_temporary_file_beside_the_target(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Beside it: os.link cannot cross file systems; hidden (.pcap-*.tmp): a listing of the directory
    (a socket directory, say) never shows it as a name to parse."""
    linked = []
    real = os.link

    def spy(src, dst, *a, **k):
        linked.append((src, dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "link", spy)
    target = tmp_path / "sub" / "a.pcap"
    target.parent.mkdir()
    PcapWriter(target).close()
    (src, dst), = linked
    assert dst == str(target) and os.path.dirname(src) == str(target.parent)
    name = os.path.basename(src)
    assert name.startswith(".pcap-") and name.endswith(".tmp"), name
    assert sorted(os.listdir(target.parent)) == ["a.pcap"]


def test_creation_failure_closes_and_removes_the_temporary_file(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(fd, mode):
        raise PermissionError("fchmod refused")

    monkeypatch.setattr(os, "fchmod", fail)
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(PermissionError, match="fchmod refused"):
        PcapWriter(tmp_path / "a.pcap")
    assert os.listdir(tmp_path) == []
    assert set(os.listdir("/proc/self/fd")) <= before | {str(n) for n in range(3)}


def test_an_empty_file_gets_the_other_writers_header_within_the_grace(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """cwrap creates the file, then writes its header: we wait for it rather than write a second one.
    (The grace is widened here so that a loaded machine cannot delay the other writer past it.)"""
    monkeypatch.setattr(pcapfile, "_EMPTY_FILE_GRACE", 10.0)
    path = tmp_path / "a.pcap"
    path.write_bytes(b"")

    def late_header():
        time.sleep(0.05)
        with open(path, "ab") as f:
            f.write(HEADER)

    t = threading.Thread(target=late_header)
    t.start()
    w = PcapWriter(path)
    t.join(5)
    w.close()
    assert path.read_bytes() == HEADER


def test_a_header_written_while_we_take_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file stayed empty through the grace; another writer puts its header in before our flock: we
    read that header (and check it) instead of writing ours after it."""
    monkeypatch.setattr(pcapfile, "_EMPTY_FILE_GRACE", 0.0)
    real_flock = fcntl.flock
    for theirs, problem in ((HEADER, None), (b"\x0a\x0d\x0d\x0a" + bytes(20), "a pcapng file")):
        path = tmp_path / f"a{len(theirs)}{problem is None}.pcap"
        path.write_bytes(b"")
        first: list[int] = []

        def flock(fd, op, path=path, theirs=theirs, first=first):
            if op == fcntl.LOCK_EX and not first:
                first.append(fd)
                with open(path, "ab") as f:
                    f.write(theirs)
            return real_flock(fd, op)

        monkeypatch.setattr(pcapfile.fcntl, "flock", flock)
        if problem is None:
            PcapWriter(path).close()
        else:
            with pytest.raises(ValueError, match=f"found {problem}"):
                PcapWriter(path)
        monkeypatch.setattr(pcapfile.fcntl, "flock", real_flock)
        assert first and path.read_bytes() == theirs
