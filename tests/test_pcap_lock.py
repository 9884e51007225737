"""The capture lock (wrappers/pcapfile.py): the shared robust mutex every writer of one capture maps,
its file's life (named after the capture's inode, swept once nobody maps it), the flock fallback,
and what the lock is for: no reply in the capture before its request, across processes, even when
the requester is held up between its send and its record.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import stat
import threading
import time
from pathlib import Path

import pytest
from scapy.utils import RawPcapReader
from wrapfix import activated_in, socket_dir

from wrappers import pcapfile
from wrappers.pcapfile import PcapWriter

needs_c = pytest.mark.skipif(pcapfile._c_lock_acquire is None, reason="the C extension is not built")


@pytest.fixture
def locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "locks"
    monkeypatch.setattr(pcapfile, "_LOCK_DIR", str(d))
    return d


def _lock_file(locks: Path, capture: Path) -> Path:
    st = capture.stat()
    return locks / f"{st.st_dev:x}-{st.st_ino:x}.lock"


@needs_c
def test_lock_file_is_named_after_the_capture_and_shared_by_its_writers(tmp_path: Path, locks: Path) -> None:
    a, b = PcapWriter(tmp_path / "a.pcap"), PcapWriter(tmp_path / "a.pcap")
    other = PcapWriter(tmp_path / "b.pcap")
    for w in (a, b, other):
        with w.locked():
            pass
    f = _lock_file(locks, tmp_path / "a.pcap")
    st = f.stat()
    assert stat.S_IMODE(st.st_mode) == 0o666 and st.st_size == pcapfile._LOCK_BYTES
    assert os.fstat(a._shm_fd).st_ino == os.fstat(b._shm_fd).st_ino == st.st_ino  # type: ignore[arg-type]
    assert os.fstat(other._shm_fd).st_ino != st.st_ino  # type: ignore[arg-type]
    with a.locked():  # one mutex for both writers, whichever object takes it
        assert pcapfile._c_lock_acquire(b._shm, False) is None
    assert pcapfile._c_lock_acquire(b._shm, False) is False
    pcapfile._c_lock_release(b._shm)
    for w in (a, b, other):
        w.close()


@needs_c
def test_unused_lock_files_are_swept_and_used_ones_kept(tmp_path: Path, locks: Path) -> None:
    used = PcapWriter(tmp_path / "used.pcap")
    with used.locked():
        pass
    locks.joinpath("ffff-1.lock").write_bytes(bytes(pcapfile._LOCK_BYTES))  # a finished capture's
    locks.joinpath("notes.txt").write_text("not ours")
    fresh = PcapWriter(tmp_path / "fresh.pcap")
    with fresh.locked():  # creating its lock sweeps
        pass
    names = sorted(p.name for p in locks.iterdir())
    assert names == sorted([_lock_file(locks, tmp_path / "used.pcap").name,
                            _lock_file(locks, tmp_path / "fresh.pcap").name, "notes.txt"])
    used.close()
    fresh.close()


@needs_c
def test_a_lock_file_of_another_size_is_refused(tmp_path: Path, locks: Path) -> None:
    w = PcapWriter(tmp_path / "a.pcap")
    locks.mkdir()
    _lock_file(locks, tmp_path / "a.pcap").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a capture lock"):
        with w.locked():
            pass
    w.close()


def test_without_the_c_extension_flock_is_used(tmp_path: Path, locks: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pcapfile, "_c_lock_acquire", None)
    w = PcapWriter(tmp_path / "a.pcap")
    with w.locked():
        assert w._shm is None and w._lock_fd is not None
    assert not locks.exists()
    w.close()


@needs_c
def test_lock_directory_is_open_to_every_user(tmp_path: Path, locks: Path) -> None:
    w = PcapWriter(tmp_path / "a.pcap")
    with w.locked():
        pass
    assert stat.S_IMODE(locks.stat().st_mode) == 0o1777
    w.close()


@needs_c
def test_no_lock_file_falls_back_to_flock_with_a_warning(tmp_path: Path, locks: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def full(_capture: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pcapfile, "_map_shared_lock", full)
    w = PcapWriter(tmp_path / "a.pcap")
    with pytest.warns(RuntimeWarning, match="no shared capture lock"):
        with w.locked():
            assert w._shm is None and w._lock_fd is not None
    with w.locked():  # decided once: no second warning, still flock
        assert w._shm is None
    w.close()


@needs_c
def test_a_holder_that_dies_does_not_block_the_others(tmp_path: Path, locks: Path) -> None:
    w = PcapWriter(tmp_path / "a.pcap")
    with w.locked():
        pass
    pid = os.fork()
    if pid == 0:
        w.locked().__enter__()
        os._exit(0)  # dies holding the lock
    os.waitpid(pid, 0)
    got = []

    def take() -> None:
        got.append(pcapfile._c_lock_acquire(w._shm))
        pcapfile._c_lock_release(w._shm)  # by the thread that took it: the mutex is a thread's

    t = threading.Thread(target=take, daemon=True)
    t.start()
    t.join(10)
    assert got == [True]  # taken over from the dead holder
    with w.locked():  # and consistent again
        pass
    w.close()


# ---------------------------------------------------------------------------------------------
# causal order across processes

ROUNDS = 8
STALL = 0.01  # seconds the requester waits between its send and its record


def _echo_server(d: str, pcap: str, ready: object) -> None:
    with activated_in(d, iface=10, pcap=pcap):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.10", 7000))
        t = socket.socket()
        t.bind(("127.0.0.10", 7001))
        t.listen()
        ready.set()  # type: ignore[attr-defined]
        for _ in range(ROUNDS):
            data, src = u.recvfrom(100)
            u.sendto(b"rep" + data[3:], src)
        c, _ = t.accept()
        for _ in range(ROUNDS):
            data = c.recv(100)
            c.sendall(b"rep" + data[3:])
        c.recv(1)
        c.close()


def _payloads(path: Path) -> list[bytes]:
    out = []
    with RawPcapReader(str(path)) as reader:
        for data, _meta in reader:
            proto, ihl = data[9], (data[0] & 0x0F) * 4
            start = ihl + (8 if proto == 17 else (data[ihl + 12] >> 4) * 4)
            out.append(bytes(data[start:]))
    return out


def _stalled(method):
    def write(self, *args, **kwargs):
        time.sleep(STALL)  # the requester, descheduled after its send: the reply must wait
        return method(self, *args, **kwargs)

    return write


def test_no_reply_is_logged_before_its_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over emulated UDP and TCP between two logging processes, the requester stalls between each
    send and its record; the replier answers at once.  Every reply must still follow its request
    in the capture (without the lock around "send + record", each reply lands in the stall)."""
    pcap = tmp_path / "order.pcap"
    ctx = multiprocessing.get_context("fork")
    with socket_dir() as d:
        ready = ctx.Event()
        server = ctx.Process(target=_echo_server, args=(d, str(pcap), ready), daemon=True)
        server.start()
        try:
            assert ready.wait(20)
            with activated_in(d, iface=11, pcap=str(pcap)):
                monkeypatch.setattr(PcapWriter, "write_packet", _stalled(PcapWriter.write_packet))
                monkeypatch.setattr(PcapWriter, "write_packets", _stalled(PcapWriter.write_packets))
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                u.settimeout(20)
                for i in range(ROUNDS):
                    u.sendto(b"req%d" % i, ("127.0.0.10", 7000))
                    assert u.recvfrom(100)[0] == b"rep%d" % i
                t = socket.create_connection(("127.0.0.10", 7001), timeout=20)
                for i in range(ROUNDS):
                    t.sendall(b"REQ%d" % i)
                    assert t.recv(100) == b"rep%d" % i
                t.close()
                u.close()
                monkeypatch.undo()
            server.join(20)
            assert server.exitcode == 0
        finally:
            if server.is_alive():
                server.kill()
    payloads = _payloads(pcap)
    for i in range(ROUNDS):
        for req in (b"req%d" % i, b"REQ%d" % i):
            assert payloads.count(req) == 1, (req, payloads)
        reps = [n for n, p in enumerate(payloads) if p == b"rep%d" % i]
        assert len(reps) == 2, payloads
        assert payloads.index(b"req%d" % i) < reps[0] and payloads.index(b"REQ%d" % i) < reps[1], payloads
