"""A classic-pcap writer that many processes and threads can append to at once.

One capture file per run collects the packets of every wrapped process (Python ones through this
module, C ones through cwrap's libsocket_wrapper, which writes the same format).  That works
because of three rules, all kept here:

* **The file never exists without its header.**  The 24-byte header is written to a temporary
  file in the same directory, which is then ``os.link()``-ed to the target name: the name appears
  atomically *with* its header.  Whoever loses the race gets EEXIST and just appends.  (cwrap
  creates the file with O_EXCL and writes the header afterwards, so another process can slip a
  record in before the header.)  An existing file is appended to, never truncated, and refused
  with a ValueError if it is not a pcap we can extend.
* **One record = one ``writev()`` on an ``O_APPEND`` descriptor** (or several whole records in one
  call).  The rule that makes this safe, and its limits: POSIX only promises that each O_APPEND
  write is positioned at the end of the file atomically (PIPE_BUF is a pipe rule and says nothing
  here).  Linux goes further for regular files on local file systems (ext4, xfs, btrfs, tmpfs):
  ``write``/``writev`` copies all its bytes while holding the inode lock (``i_rwsem``), so one call
  lands as one contiguous run that no other writer's bytes can split, whatever its size (up to
  MAX_RW_COUNT, just under 2 GiB, and IOV_MAX = 1024 buffers).  Records from different processes
  therefore interleave but are never torn.  A short write only happens when the disk is full, the
  file hits its size limit or a signal arrives; we then write the rest rather than drop it (that
  record may be split, but the file is broken anyway).  NFS emulates O_APPEND on the client and
  gives no such guarantee: keep captures on a local file system.
* **Causal order is the caller's to keep, with** ``writer.locked()``.  Appends are atomic but a
  process can be descheduled between its ``send()`` and the record of it, and the peer's reply
  could then be logged first.  The socket wrapper therefore holds ``writer.locked()`` around
  "send syscall + record write", and the receiver takes the same lock before logging, so a reply
  can never appear in the capture before the request that caused it.

**The lock.**  One mutual exclusion for every thread of every process that appends to one
capture file.  It is a robust, process-shared pthread mutex (``wrappers/_csum.c``) in a 64-byte
file under ``/dev/shm/wirecheck-pcap-locks/``, named after the capture's device and inode (the
file our descriptor appends to, not its name), which each writer maps on its first hold.  Why not
``flock`` on the capture any more: a hold cost two system calls, on every logged send, datagram,
handshake and close; the mutex costs two atomic instructions when nobody else holds it, and a
futex wait and wake when somebody does, as flock's wait queue did.  A waiter first yields the CPU
a few times: the usual holder is a peer that our own wake-up preempted on this CPU in the middle
of its short hold (a send wakes its receiver, which reacts and wants the lock), and a yield lets
it finish without two more context switches and a wake-up call.

Why order still holds.  The guarantee rests on one property only: while any thread anywhere
holds the lock, no other thread of any process that appends to the file holds it.  The mutex
gives that for all users that map the same lock file, and they all do: the file's name is a
function of the capture's inode, which every writer of the capture shares (a writer that opened
a replaced name writes to another inode, i.e. another capture, as before); it is created with
its mutex initialised in a private file and then ``link()``-ed into place, so no user ever sees
an uninitialised one, and a creator that loses the race uses the winner's.  Threads: the mutex
belongs to the thread that took it, so threads of one process exclude each other too (a waiting
thread sleeps without the GIL).  fork: the mapping is shared with the child, so parent and child
exclude each other; a lock a parent's thread holds at fork stays that thread's, and the child
waits for it like anyone else.  Death: a holder that dies (even by SIGKILL) is noticed by the
kernel (robust futex list); the next taker gets EOWNERDEAD, marks the mutex consistent and goes
on, as flock would have been released.  Whatever the holder had appended is whole (one
``writev`` each) or absent.  Atomicity of a record is not the lock's job at all: it is the
O_APPEND rule above, unchanged.  Hence "send, append" under the lock still happens as one step
for every other logger, and a reply, which can only be sent after its request arrived, can only
be logged after the request's record (tests/test_pcap_lock.py makes the requester stall between
its send and its record and checks every reply still follows).

Life of a lock file.  Each process that maps one also holds a shared ``flock`` on it, for as long
as the writer lives (children inherit it).  Whoever creates a new lock file first removes the
ones nobody holds (those of finished captures), under an exclusive ``flock`` across the unlink;
a process that opened a name just before it was removed notices after its own ``flock`` (the
name no longer leads to its inode) and starts over, so two users of one capture can never end
up on two lock files.  An inode number is only reused once the old file is closed everywhere,
so a leftover lock of a dead capture that a new capture inherits is free (or its holder is dead,
see above).

Where there is no shared lock (no ``/dev/shm``, or the C extension was not built) the lock is the
previous one: a ``threading.Lock`` plus ``flock(LOCK_EX)`` on a description of the capture of
this process's own.  All writers of a capture must then be of the same kind (one checkout, one
build): a flock user and a mutex user do not exclude each other.  If the lock file cannot be
made (``/dev/shm`` full, or not writable), the writer warns and falls back to flock.  Unlike
flock, a wait for the mutex is not interrupted by a signal (Ctrl-C acts once the lock is free).

fork: the child inherits the append descriptor, which stays safe thanks to O_APPEND.  With the
flock fallback, the threading lock is replaced in the child (another thread may have held it at
fork time), and the flock is taken on a descriptor the child opens for itself, because flock
locks belong to an open file description and a parent and child sharing one would not exclude
each other.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import struct
import sys
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import Sequence
from contextlib import AbstractContextManager

from .packets import Buffer

__all__ = ["LINKTYPE_RAW", "PCAP_MAGIC", "SNAPLEN", "PcapWriter", "get_writer", "pcap_header"]

PCAP_MAGIC = 0xA1B2C3D4  # microsecond timestamps; written in host byte order like libpcap
VERSION = (2, 4)
#: Records are never truncated; our largest packet (IPv6, 40 + 65535 bytes) fits in 262144,
#: Wireshark's own maximum for ordinary link types.
SNAPLEN = 262144
LINKTYPE_RAW = 101  # raw IPv4/IPv6, no link-layer header (cwrap uses the same)

_FILE_HEADER = struct.Struct("=IHHiIII")  # "=": host byte order, no padding
_RECORD_HEADER = struct.Struct("=IIII")

#: How long an empty existing file may stay empty before we write its header ourselves: another
#: writer (cwrap creates, then writes the header) may be between those two steps.
_EMPTY_FILE_GRACE = 0.2


def pcap_header(snaplen: int = SNAPLEN, linktype: int = LINKTYPE_RAW) -> bytes:
    """The 24-byte classic pcap file header, host byte order."""
    return _FILE_HEADER.pack(PCAP_MAGIC, *VERSION, 0, 0, snaplen, linktype)


def _describe_header(head: bytes) -> str | None:
    """None if ``head`` (24 bytes) starts a file we can append to, else what it is instead."""
    magic_le = int.from_bytes(head[:4], "little")
    magic = int.from_bytes(head[:4], sys.byteorder)
    if head[:4] == b"\x0a\x0d\x0d\x0a":
        return "a pcapng file"
    if magic == 0xA1B23C4D:
        return "a pcap with nanosecond timestamps"
    if magic_le in (0xA1B2C3D4, 0xD4C3B2A1, 0xA1B23C4D, 0x4D3CB2A1) and magic != PCAP_MAGIC:
        return "a pcap in the other byte order"
    if magic != PCAP_MAGIC:
        return f"magic bytes {head[:4].hex()}"
    _, major, minor, _, _, _, linktype = _FILE_HEADER.unpack(head)
    if (major, minor) != VERSION:
        return f"a pcap of version {major}.{minor}"
    if linktype != LINKTYPE_RAW:
        return f"a pcap with link type {linktype}"
    return None


def _refuse(path: str, found: str) -> ValueError:
    return ValueError(
        f"{path}: cannot append packets: found {found}; expected a classic pcap "
        f"(magic a1b2c3d4 in host byte order, microseconds, version 2.4) "
        f"with link type {LINKTYPE_RAW} (LINKTYPE_RAW). Delete the file or choose another path."
    )


#: The most buffers one writev() takes (Linux UIO_MAXIOV); longer record lists are written in
#: several calls, each ending on a record boundary.
IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024
#: Events of at most this many packets of two buffers each fit in one writev() (write_packets).
_FAST_PACKETS = IOV_MAX // 3


def _writev_all(fd: int, buffers: Sequence[Buffer], total: int = -1) -> None:
    """writev() everything.  On a regular file a single call writes it all; the loop is only there
    so that a short write (disk full, signal) resumes rather than silently dropping bytes."""
    written = os.writev(fd, buffers)
    if written == total:
        return  # the common case, without a single extra object
    views = [memoryview(b).cast("B") for b in buffers]
    while views:
        while views and written >= views[0].nbytes:
            written -= views[0].nbytes
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]
        if views:
            written = os.writev(fd, views)


def _timestamp(ts: float | None) -> tuple[int, int]:
    """(seconds, microseconds) of ``ts``, or of now."""
    if ts is None:
        return divmod(time.time_ns() // 1000, 1_000_000)
    return divmod(round(ts * 1_000_000), 1_000_000)


def _nbytes(buffer: Buffer) -> int:
    return len(buffer) if type(buffer) is bytes else memoryview(buffer).nbytes


class _Held:
    """``writer.locked()``: a plain context manager object (a generator-based one costs a few
    microseconds per record, and every logged send takes this lock)."""

    __slots__ = ("_writer",)

    def __init__(self, writer: PcapWriter) -> None:
        self._writer = writer

    def __enter__(self) -> None:
        shm = self._writer._shm
        if shm is not None:
            _c_lock_acquire(shm)  # the mutex is owned by a thread: it excludes threads too
        else:
            self._writer._acquire_slow()

    def __exit__(self, *exc: object) -> None:
        w = self._writer
        shm = w._shm
        if shm is not None:
            _c_lock_release(shm)
            return
        try:
            fcntl.flock(w._lock_fd, fcntl.LOCK_UN)  # type: ignore[arg-type]
        finally:
            w._thread_lock.release()


class PcapWriter:
    """Appends LINKTYPE_RAW records to one pcap file; safe across threads and processes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._fd: int | None = _open_for_append(self.path)
        self._thread_lock = threading.Lock()
        self._lock_fd: int | None = None  # this process's own description for flock
        self._shm: mmap.mmap | None = None  # the shared capture lock, once mapped
        self._shm_fd: int | None = None  # its file, held with a shared flock while mapped
        self._no_shm = False  # the shared lock could not be had: flock (see _acquire_slow)
        self._held = _Held(self)
        _live_writers.add(self)

    @property
    def closed(self) -> bool:
        return self._fd is None

    def fileno(self) -> int:
        if self._fd is None:
            raise ValueError(f"{self.path}: writer is closed")
        return self._fd

    def write_packet(self, buffers: Sequence[Buffer], ts: float | None = None) -> None:
        """Append one record holding the concatenation of ``buffers`` (from build_tcp/build_udp).

        ``ts`` is seconds since the epoch; by default the time of this call, so that under
        ``locked()`` the timestamps follow the order of the records.
        """
        fd = self._fd
        if fd is None:
            raise ValueError(f"{self.path}: writer is closed")
        sec, usec = divmod(time.time_ns() // 1000, 1_000_000) if ts is None else _timestamp(ts)
        if len(buffers) == 2:  # (headers, payload) from build_udp/build_tcp: the usual record
            head, payload = buffers
            length = (len(head) if type(head) is bytes else _nbytes(head)) \
                + (len(payload) if type(payload) is bytes else _nbytes(payload))
        else:
            length = sum(map(_nbytes, buffers))
        if length > SNAPLEN:
            raise ValueError(f"packet of {length} bytes exceeds the snaplen {SNAPLEN}")
        _writev_all(fd, [_RECORD_HEADER.pack(sec, usec, length, length), *buffers], _RECORD_HEADER.size + length)

    def write_packets(self, packets: Sequence[Sequence[Buffer]], ts: float | None = None) -> None:
        """Append one record per packet, all in one ``writev()`` (so all of them or, on a failing
        disk, a prefix), in the order given; each record gets the same timestamp (``ts`` or now)."""
        fd = self._fd
        if fd is None:
            raise ValueError(f"{self.path}: writer is closed")
        sec, usec = divmod(time.time_ns() // 1000, 1_000_000) if ts is None else _timestamp(ts)
        iov: list[Buffer] = []
        total = 0
        pack = _RECORD_HEADER.pack
        if type(packets) is list and len(packets) <= _FAST_PACKETS:
            # The usual event (a handshake, a FIN and its ACK, a send's segments): packets of two
            # buffers (headers, payload) from build_tcp/build_udp, few enough for one writev.
            for buffers in packets:
                if len(buffers) != 2:
                    break
                head, payload = buffers
                length = (len(head) if type(head) is bytes else _nbytes(head)) \
                    + (len(payload) if type(payload) is bytes else _nbytes(payload))
                if length > SNAPLEN:
                    raise ValueError(f"packet of {length} bytes exceeds the snaplen {SNAPLEN}")
                iov += (pack(sec, usec, length, length), head, payload)
                total += length
            else:
                if iov:
                    _writev_all(fd, iov, total + _RECORD_HEADER.size * len(packets))
                return
            iov, total = [], 0
        for buffers in packets:
            length = sum(map(_nbytes, buffers))
            if length > SNAPLEN:
                raise ValueError(f"packet of {length} bytes exceeds the snaplen {SNAPLEN}")
            if len(iov) + 1 + len(buffers) > IOV_MAX:
                _writev_all(fd, iov, total)  # a full batch: records stay whole and in order
                iov, total = [], 0
            iov.append(pack(sec, usec, length, length))
            iov.extend(buffers)
            total += _RECORD_HEADER.size + length
        if iov:
            _writev_all(fd, iov, total)

    def locked(self) -> AbstractContextManager[None]:
        """Exclusive access to the capture across threads and processes (not reentrant).

        Hold it around "send syscall + write_packet" so that the capture's order is causal.
        """
        return self._held

    def _acquire_slow(self) -> None:
        """The first hold in this process maps the shared lock; without one (no /dev/shm, no C
        extension) every hold comes here: the thread lock, then flock on our own description."""
        if _LOCK_DIR is not None and _c_lock_acquire is not None and not self._no_shm:
            with self._thread_lock:
                if self._shm is None and not self._no_shm:
                    try:
                        self._shm_fd, self._shm = _map_shared_lock(os.fstat(self.fileno()))
                    except OSError as e:
                        # /dev/shm full or not ours to write: flock still orders this process's
                        # records, but not against writers that use the shared lock.
                        warnings.warn(f"{self.path}: no shared capture lock ({e}); using flock, "
                                      "which does not order against other writers' shared lock",
                                      RuntimeWarning, stacklevel=3)
                        self._no_shm = True
            if self._shm is not None:
                _c_lock_acquire(self._shm)
                return
        self._thread_lock.acquire()
        try:
            fcntl.flock(self._lock_fd if self._lock_fd is not None else self._lock_descriptor(), fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise

    def _lock_descriptor(self) -> int:
        if self._lock_fd is None:
            fd = self.fileno()
            try:
                # A new open file description of the same inode, even if the name was unlinked.
                self._lock_fd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                self._lock_fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        return self._lock_fd

    def _after_fork_in_child(self) -> None:
        self._thread_lock = threading.Lock()
        if self._lock_fd is not None:
            # Shared with the parent: closing our copy does not release the parent's lock.
            os.close(self._lock_fd)
            self._lock_fd = None

    def close(self) -> None:
        """Close the descriptors.  Do not close a writer obtained from get_writer(): it is shared."""
        if self._shm is not None:
            with contextlib.suppress(BufferError):
                self._shm.close()
            self._shm = None
        for fd in (self._lock_fd, self._shm_fd, self._fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._lock_fd = self._shm_fd = None

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        return f"<PcapWriter {self.path!r}{' closed' if self.closed else ''}>"


def _open_for_append(path: str) -> int:
    """Return an O_APPEND descriptor on ``path``, creating it atomically with its header.

    The descriptor is opened read-write so that the header we validate is read through it: the
    file we check is the file we will append to, even if the name is replaced meanwhile.
    """
    if not os.path.lexists(path):
        _create_with_header(path)  # may lose the race to another process: fine
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
    try:
        _check_or_init_header(path, fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _create_with_header(path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    tmp_fd, tmp = tempfile.mkstemp(dir=directory, prefix=".pcap-", suffix=".tmp")
    try:
        os.fchmod(tmp_fd, 0o644)  # mkstemp's 0600 would hide the capture from other users
        _writev_all(tmp_fd, [pcap_header()])
        os.close(tmp_fd)
        tmp_fd = -1
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        if tmp_fd >= 0:
            os.close(tmp_fd)
        os.unlink(tmp)


def _check_or_init_header(path: str, fd: int) -> None:
    """Validate the header of an existing file; write it if the file is (still) empty."""
    deadline = time.monotonic() + _EMPTY_FILE_GRACE
    while not (head := os.pread(fd, _FILE_HEADER.size, 0)) and time.monotonic() < deadline:
        time.sleep(0.01)
    if not head:
        # A file somebody pre-created empty (mkstemp, touch).  Write the header under flock so
        # that two of our writers cannot both do it; re-check once we hold the lock.
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_size == 0:
                _writev_all(fd, [pcap_header()])
                return
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        head = os.pread(fd, _FILE_HEADER.size, 0)
    if len(head) < _FILE_HEADER.size:
        raise _refuse(path, f"a truncated file of {len(head)} bytes (a pcap header is {_FILE_HEADER.size})")
    problem = _describe_header(head)
    if problem is not None:
        raise _refuse(path, problem)


# ---------------------------------------------------------------------------------------------
# The shared capture lock

try:
    from ._csum import lock_acquire as _c_lock_acquire
    from ._csum import lock_init as _c_lock_init
    from ._csum import lock_release as _c_lock_release
    from ._csum import lock_size as _c_lock_size
except ImportError:  # no C compiler at install time: flock on the capture itself
    _c_lock_acquire = _c_lock_init = _c_lock_release = _c_lock_size = None  # type: ignore[assignment]

#: Where the shared locks live: one small file per capture file, named after the capture's device
#: and inode (the open file, not its name), on tmpfs; None where there is no /dev/shm.
_LOCK_DIR: str | None = "/dev/shm/wirecheck-pcap-locks" if os.path.isdir("/dev/shm") else None
_LOCK_BYTES = 64


def _lock_path(st: os.stat_result) -> str:
    return f"{_LOCK_DIR}/{st.st_dev:x}-{st.st_ino:x}.lock"


def _map_shared_lock(capture: os.stat_result) -> tuple[int, mmap.mmap]:
    """(fd, mapping) of the shared lock of the capture file ``capture``, created if need be.

    Every process that maps it holds a shared flock on its file for as long as it does (the
    descriptor stays open; forked children share it), so a lock file nobody holds is unused and
    may be removed (_sweep_unused_locks).  A file removed between our open and our flock is
    noticed (its name no longer leads to our inode) and we start over with the new one: all users
    of one capture therefore always map the same file.
    """
    _make_lock_dir(_LOCK_DIR)  # type: ignore[arg-type]
    path = _lock_path(capture)
    for _ in range(100):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            _create_shared_lock(path)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            st = os.fstat(fd)
            try:
                same = os.stat(path).st_ino == st.st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            if st.st_size != _LOCK_BYTES:
                raise ValueError(f"{path}: not a capture lock ({st.st_size} bytes); remove it")
            return fd, mmap.mmap(fd, _LOCK_BYTES)
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
    raise OSError(errno.EAGAIN, f"{path}: the capture lock keeps being replaced")


def _make_lock_dir(directory: str) -> None:
    """The lock directory, sticky and world-writable like /tmp: writers of one capture may run as
    different users, and each must be able to create the lock of a new capture."""
    if os.path.isdir(directory):
        return
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory)
        os.chmod(directory, 0o1777)


def _create_shared_lock(path: str) -> None:
    """Initialise a lock in a private file, then link it in place: the name never shows an
    uninitialised mutex.  Who loses the race to another creator just uses theirs."""
    directory = os.path.dirname(path)
    _sweep_unused_locks(directory)
    tmp_fd, tmp = tempfile.mkstemp(dir=directory, prefix=".lock-", suffix=".tmp")
    try:
        os.fchmod(tmp_fd, 0o666)  # writers of one capture may run as different users
        # Written, not ftruncate()d: a full tmpfs then fails here with ENOSPC instead of killing
        # us with SIGBUS when the mapping first touches a page that cannot be had.
        _writev_all(tmp_fd, [bytes(_LOCK_BYTES)], _LOCK_BYTES)
        with mmap.mmap(tmp_fd, _LOCK_BYTES) as m:
            _c_lock_init(m)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        os.close(tmp_fd)
        os.unlink(tmp)


def _sweep_unused_locks(directory: str) -> None:
    """Remove the lock files no process maps (no shared flock on them): those of captures that are
    finished.  Runs when a new lock is made, so the directory holds about one file per capture in
    use.  The exclusive flock is held across the unlink, so nobody can start using a file we
    remove without noticing (see _map_shared_lock)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not name.endswith(".lock"):
            continue
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                os.unlink(path)
        except OSError:
            pass  # in use, or already gone
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------------------------
# One writer per file per process

_live_writers: weakref.WeakSet[PcapWriter] = weakref.WeakSet()
_shared: dict[str, PcapWriter] = {}
_shared_lock = threading.Lock()


def get_writer(path: str | os.PathLike[str]) -> PcapWriter:
    """The process-wide writer for ``path`` (keyed by realpath), created on first use.

    Every emulated socket of a process logs through the same writer, so they share one descriptor
    and one lock.  Survives fork (the child keeps using the inherited descriptor).
    """
    key = os.path.realpath(path)
    with _shared_lock:
        writer = _shared.get(key)
        if writer is None or writer.closed:
            writer = _shared[key] = PcapWriter(key)
        return writer


def _after_fork_in_child() -> None:
    global _shared_lock
    _shared_lock = threading.Lock()
    for writer in list(_live_writers):
        writer._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
