"""wrappers.pcapfile: the file header, atomic creation, refusing foreign files, and many
processes appending to one capture without tearing records or breaking the lock."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import struct
import sys
import threading
import time
from pathlib import Path

import pytest
import tsharkutil
from scapy.utils import RawPcapReader

from wrappers import pcapfile
from wrappers.packets import build_udp, packet_bytes
from wrappers.pcapfile import PcapWriter, get_writer

# Ports without a Wireshark dissector, so that tshark shows plain data and finds nothing malformed.
SRC, DST = ("127.0.0.21", 50001), ("127.0.0.10", 50000)


def records(path: Path) -> list[tuple[bytes, int, int]]:
    """(packet, sec, usec) for every record, read independently of our writer by scapy.

    (scapy returns at most 65535 bytes of a record; the rest is skipped, not misread.)
    """
    out = []
    with RawPcapReader(str(path)) as reader:
        assert reader.linktype == 101
        for data, meta in reader:
            assert meta.caplen == meta.wirelen
            assert len(data) == min(meta.caplen, 65535)
            out.append((data, meta.sec, meta.usec))
    return out


# ---------------------------------------------------------------------------------------------
# header and creation


def test_header_bytes(tmp_path: Path) -> None:
    path = tmp_path / "a.pcap"
    PcapWriter(path).close()
    order = sys.byteorder  # host byte order, like libpcap and cwrap
    expected = (
        (0xA1B2C3D4).to_bytes(4, order)  # magic: microsecond timestamps
        + (2).to_bytes(2, order) + (4).to_bytes(2, order)  # version 2.4
        + bytes(8)  # thiszone, sigfigs
        + (262144).to_bytes(4, order)  # snaplen
        + (101).to_bytes(4, order)  # LINKTYPE_RAW
    )  # fmt: skip
    assert path.read_bytes() == expected
    if order == "little":
        assert expected.hex() == "d4c3b2a1" "0200" "0400" "00000000" "00000000" "00000400" "65000000"
    assert path.stat().st_mode & 0o777 == 0o644
    assert os.listdir(tmp_path) == ["a.pcap"], "temporary file left behind"


def test_creation_links_a_complete_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The name appears through link() of a file that already holds the header, never empty."""
    path = tmp_path / "a.pcap"
    seen = []
    real_link = os.link

    def spy_link(src: str, dst: str, *args: object, **kwargs: object) -> None:
        seen.append((Path(src).read_bytes(), os.path.lexists(dst)))
        real_link(src, dst)

    monkeypatch.setattr(pcapfile.os, "link", spy_link)
    PcapWriter(path).close()
    assert seen == [(pcapfile.pcap_header(), False)]


def test_losing_the_creation_race_appends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """If another process creates the file between our check and our link(), we append to it."""
    path = tmp_path / "a.pcap"
    with PcapWriter(path) as w:
        w.write_packet(build_udp(SRC, DST, b"first"))
    monkeypatch.setattr(pcapfile.os.path, "lexists", lambda p: False)  # "it did not exist yet"
    with PcapWriter(path) as w:
        w.write_packet(build_udp(SRC, DST, b"second"))
    assert [r[0][28:] for r in records(path)] == [b"first", b"second"]
    assert sorted(os.listdir(tmp_path)) == ["a.pcap"]


def test_existing_file_is_appended_not_truncated(tmp_path: Path) -> None:
    path = tmp_path / "a.pcap"
    with PcapWriter(path) as w:
        w.write_packet(build_udp(SRC, DST, b"one"))
    size = path.stat().st_size
    with PcapWriter(path) as w:
        w.write_packet(build_udp(SRC, DST, b"two"))
    assert path.stat().st_size > size
    assert [r[0][28:] for r in records(path)] == [b"one", b"two"]
    assert path.read_bytes().count(pcapfile.pcap_header()) == 1


def test_empty_existing_file_gets_a_header(tmp_path: Path) -> None:
    """A pre-created empty file (mkstemp, touch) becomes a capture."""
    path = tmp_path / "a.pcap"
    path.touch()
    with PcapWriter(path) as w:
        w.write_packet(build_udp(SRC, DST, b"x"))
    assert path.read_bytes().startswith(pcapfile.pcap_header())
    assert len(records(path)) == 1


def _header(magic: int = 0xA1B2C3D4, major: int = 2, minor: int = 4, linktype: int = 101, order: str = "=") -> bytes:
    return struct.pack(order + "IHHiIII", magic, major, minor, 0, 0, 65535, linktype)


@pytest.mark.parametrize("content,found", [
    (b"hello, this is not a capture at all\n", "magic bytes 68656c6c"),
    (b"\x0a\x0d\x0d\x0a" + bytes(40), "pcapng"),
    (_header(magic=0xA1B23C4D), "nanosecond"),
    (_header(order="<" if sys.byteorder == "big" else ">"), "other byte order"),
    (_header(linktype=1), "link type 1"),
    (_header(major=1, minor=0), "version 1.0"),
    (_header()[:10], "truncated file of 10 bytes"),
    (b"\xd4", "truncated file of 1 bytes"),
], ids=["text", "pcapng", "nanosecond", "byteswapped", "ethernet", "version", "truncated", "one-byte"])  # fmt: skip
def test_foreign_file_is_refused(tmp_path: Path, content: bytes, found: str) -> None:
    path = tmp_path / "a.pcap"
    path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        PcapWriter(path)
    message = str(info.value)
    assert str(path) in message and found in message and "LINKTYPE_RAW" in message
    assert path.read_bytes() == content, "a refused file must not be modified"


def test_cwrap_style_file_is_accepted(tmp_path: Path) -> None:
    """cwrap writes snaplen 65535: any snaplen is fine to append to."""
    path = tmp_path / "a.pcap"
    path.write_bytes(_header())
    with PcapWriter(path) as w:
        w.write_packet(build_udp(SRC, DST, b"x"))
    assert len(records(path)) == 1


# ---------------------------------------------------------------------------------------------
# records


def test_record_header_and_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "a.pcap"
    bufs = build_udp(SRC, DST, memoryview(b"0123456789")[2:])
    with PcapWriter(path) as w:
        w.write_packet(bufs, ts=1700000000.25)
        w.write_packet(bufs, ts=1700000000.9999996)  # rounds up into the next second
        before = time.time()
        w.write_packet(bufs)
        after = time.time()
    (p1, s1, u1), (p2, s2, u2), (p3, s3, u3) = records(path)
    assert p1 == p2 == p3 == packet_bytes(bufs)
    assert (s1, u1) == (1700000000, 250000)
    assert (s2, u2) == (1700000001, 0)
    assert before - 1e-6 <= s3 + u3 / 1e6 <= after + 1e-6
    raw = path.read_bytes()[24:40]
    assert struct.unpack("=IIII", raw) == (1700000000, 250000, len(p1), len(p1))


def test_largest_packets_fit_the_snaplen(tmp_path: Path) -> None:
    path = tmp_path / "a.pcap"
    v6 = build_udp(("fd00::1", 1), ("fd00::2", 2), bytes(65527))
    with PcapWriter(path) as w:
        w.write_packet(v6)
    raw = path.read_bytes()
    caplen, wirelen = struct.unpack("=II", raw[24 + 8 : 24 + 16])
    assert caplen == wirelen == 40 + 65535 <= pcapfile.SNAPLEN
    assert raw[24 + 16 :] == packet_bytes(v6) and len(records(path)) == 1


def test_a_batch_longer_than_iov_max_is_written_whole_and_in_order(tmp_path: Path) -> None:
    """write_packets splits what one writev() cannot take on record boundaries: nothing lost,
    nothing reordered, every record with the batch's one timestamp."""
    path = tmp_path / "a.pcap"
    n = pcapfile.IOV_MAX + 7  # three buffers per record: several writev calls
    pkts = [build_udp(SRC, DST, struct.pack("!I", i)) for i in range(n)]
    with PcapWriter(path) as w:
        w.write_packets(pkts, ts=1700000000.5)
    got = records(path)
    assert [data for data, _, _ in got] == [packet_bytes(p) for p in pkts]
    assert {(sec, usec) for _, sec, usec in got} == {(1700000000, 500000)}


def test_closed_writer_refuses(tmp_path: Path) -> None:
    w = PcapWriter(tmp_path / "a.pcap")
    w.close()
    with pytest.raises(ValueError, match="closed"):
        w.write_packet([b"x"])


def test_get_writer_shares_one_writer_per_realpath(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link").symlink_to(tmp_path)
    a = get_writer("a.pcap")
    assert get_writer(tmp_path / "a.pcap") is a
    assert get_writer(tmp_path / "link" / "a.pcap") is a
    assert get_writer(tmp_path / "b.pcap") is not a


# ---------------------------------------------------------------------------------------------
# locking


@pytest.fixture
def flock_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback lock, as where there is no /dev/shm or no C extension: flock on the capture."""
    monkeypatch.setattr(pcapfile, "_LOCK_DIR", None)


@pytest.fixture
def private_locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shared lock, its files in a directory of this test's own."""
    if pcapfile._c_lock_acquire is None:
        pytest.skip("the C extension is not built")
    locks = tmp_path / "locks"
    monkeypatch.setattr(pcapfile, "_LOCK_DIR", str(locks))
    return locks


def _in_child(check) -> int:
    """Run ``check()`` in a forked child; its return value is the exit code."""
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            code = check()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_shared_lock_excludes_other_processes(tmp_path: Path, private_locks: Path) -> None:
    w = PcapWriter(tmp_path / "a.pcap")
    with w.locked():
        assert _in_child(lambda: 0 if pcapfile._c_lock_acquire(w._shm, False) is None else 2) == 0
    assert _in_child(lambda: 0 if pcapfile._c_lock_acquire(w._shm, False) is False else 2) == 0
    with w.locked():  # the child exited holding it: the lock is taken over, not stuck
        pass
    w.close()


def test_lock_excludes_other_processes(tmp_path: Path, flock_only: None) -> None:
    path = tmp_path / "a.pcap"
    w = PcapWriter(path)
    probe = os.open(path, os.O_RDONLY)
    try:
        with w.locked():
            with pytest.raises(BlockingIOError):
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again
    finally:
        os.close(probe)
        w.close()


def test_lock_excludes_threads(tmp_path: Path) -> None:
    w = PcapWriter(tmp_path / "a.pcap")
    inside = []

    def worker(i: int) -> None:
        for _ in range(50):
            with w.locked():
                inside.append(i)
                assert len(inside) == 1
                inside.pop()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_shares_the_shared_lock_with_its_parent(tmp_path: Path, private_locks: Path) -> None:
    """The mapping survives fork: a child finds the lock a parent's thread holds taken."""
    w = get_writer(tmp_path / "a.pcap")
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with w.locked():
            holding.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    holding.wait(10)
    code = _in_child(lambda: 0 if pcapfile._c_lock_acquire(w._shm, False) is None else 2)
    release.set()
    t.join()
    assert code == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_locks_against_its_parent(tmp_path: Path, flock_only: None) -> None:
    """flock belongs to an open file description: a child must not share the parent's, or the lock
    would not exclude them.  And a thread lock held at fork time must not deadlock the child."""
    w = get_writer(tmp_path / "a.pcap")
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with w.locked():
            holding.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    holding.wait(10)
    pid = os.fork()
    if pid == 0:  # child: the thread lock was reset, the flock must still be the parent's
        code = 1
        try:
            if w._thread_lock.acquire(blocking=False):
                try:
                    fcntl.flock(w._lock_descriptor(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    code = 2  # acquired a lock the parent holds: broken
                except BlockingIOError:
                    code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    release.set()
    t.join()
    assert os.waitstatus_to_exitcode(status) == 0


# ---------------------------------------------------------------------------------------------
# many processes, one file

PROCESSES = 8
RECORDS = 300


def _append_many(path: str, proc: int, barrier: object) -> None:
    barrier.wait()  # type: ignore[attr-defined]  # everybody creates the file at the same moment
    writer = get_writer(path)
    batch = []
    for i in range(RECORDS):
        size = (proc * 7919 + i * 104729) % 4000  # varied sizes, up to a few pages
        body = struct.pack("!HH", proc, i) + bytes([proc * 16 + i % 16]) * size
        pkt = build_udp((f"127.0.0.{proc + 1}", SRC[1] + proc), DST, body)
        if proc % 2 == 0:
            writer.write_packet(pkt)
            continue
        # odd processes append batches of 1 to 5 records in one writev (Recorder.write's way)
        batch.append(pkt)
        if len(batch) == 1 + i % 5 or i == RECORDS - 1:
            writer.write_packets(batch)
            batch = []


@pytest.fixture(scope="module")
def concurrent_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("concurrent") / "many.pcap"
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    procs = [ctx.Process(target=_append_many, args=(str(path), p, barrier)) for p in range(PROCESSES)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * PROCESSES
    return path


def test_concurrent_appends_are_never_torn(concurrent_capture: Path) -> None:
    raw = concurrent_capture.read_bytes()
    assert raw.count(pcapfile.pcap_header()) == 1, "exactly one file header"
    seen: dict[int, list[int]] = {p: [] for p in range(PROCESSES)}
    total = 24
    for data, _, _ in records(concurrent_capture):
        total += 16 + len(data)
        body = data[28:]
        proc, i = struct.unpack("!HH", body[:4])
        assert body[4:] == bytes([proc * 16 + i % 16]) * (len(body) - 4), f"torn record {proc}/{i}"
        seen[proc].append(i)
    assert total == len(raw)
    assert seen == {p: list(range(RECORDS)) for p in range(PROCESSES)}, "lost or reordered records"


@pytest.mark.peer
def test_concurrent_capture_read_by_tshark(concurrent_capture: Path) -> None:
    assert tsharkutil.count_frames(concurrent_capture) == PROCESSES * RECORDS
    assert tsharkutil.problems(concurrent_capture) == []


def test_threads_share_one_writer_without_tearing(tmp_path: Path) -> None:
    path = tmp_path / "threads.pcap"
    writer = PcapWriter(path)

    def worker(t: int) -> None:
        for i in range(200):
            writer.write_packet(build_udp(SRC, DST, struct.pack("!HH", t, i) + bytes([t]) * (i * 37 % 3000)))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    seen: dict[int, list[int]] = {t: [] for t in range(4)}
    for data, _, _ in records(path):
        t, i = struct.unpack("!HH", data[28:32])
        assert data[32:] == bytes([t]) * (i * 37 % 3000)
        seen[t].append(i)
    assert seen == {t: list(range(200)) for t in range(4)}


def _pairs_under_lock(writer: PcapWriter, proc: int) -> None:
    for i in range(20):
        with writer.locked():
            writer.write_packet(build_udp(SRC, DST, b"begin %d %d" % (proc, i)))
            time.sleep(0.001)  # invite the others to cut in
            writer.write_packet(build_udp(SRC, DST, b"end %d %d" % (proc, i)))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_lock_keeps_pairs_together_across_forked_processes(tmp_path: Path) -> None:
    """Forked children inherit the writer; locked() must still exclude them from each other."""
    path = tmp_path / "pairs.pcap"
    writer = get_writer(path)
    with writer.locked():  # the parent has used the lock before forking
        pass
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_pairs_under_lock, args=(writer, p)) for p in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 4
    payloads = [data[28:].decode() for data, _, _ in records(path)]
    assert len(payloads) == 4 * 20 * 2
    for begin, end in zip(payloads[::2], payloads[1::2], strict=True):
        assert begin.split()[0] == "begin" and end == "end " + begin.split(" ", 1)[1]
