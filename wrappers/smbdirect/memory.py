"""Emulated RDMA memory: registered regions, the table the peer's "NIC" checks, and the copy.

Model.  Each connection end owns a *region table* in a memfd (4096 slots of 32 bytes) that it
passes to the peer when the connection starts; registering a buffer writes a slot (token, access,
address, length), invalidating clears it.  The peer's NIC, and only it, moves data: it looks the
token up in the owner's table, checks the access right and that ``[offset, offset + length)`` lies
inside the region, and copies with ``process_vm_readv``/``process_vm_writev`` (one-sided, as RDMA
is) or, where ptrace rules forbid that, through a memfd the owner made for the region (copied in at
registration whatever the access, copied back at invalidation for remote writes: a write-only
region must come back with the bytes the peer did not write unchanged, as with a real NIC, not as
the zeros of a fresh memfd).  Table updates and
accesses take a flock on the table (exclusive for the owner, shared for the accessor), so an
invalidation completes only after every access in flight and no access starts after it.

Tokens look like RNIC rkeys: a random per-table prefix, the slot number, an 8-bit key that changes
every time the slot is reused, so a stale token never matches.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import random
import struct
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .constants import RDMA_REMOTE_READ, RDMA_REMOTE_WRITE

SLOTS = 4096
_HEAD = struct.Struct("<8sII")  # magic, slots, prefix
_ENTRY = struct.Struct("<IIQQQ")  # token, flags, addr, length, owner pid (0: the pid the HELLO named)
VALID = 0x80000000
MAGIC = b"WCSMBDR1"
TABLE_SIZE = _HEAD.size + SLOTS * _ENTRY.size


class AccessError(OSError):
    """An RDMA access the RNIC refuses (bad token, no right, out of range): fatal for the connection."""

    def __init__(self, message: str):
        super().__init__(errno.EREMOTEIO, message)


# -- raw memory access ------------------------------------------------------------------------------
class _PyBuffer(ctypes.Structure):
    _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.c_void_p), ("len", ctypes.c_ssize_t),
                ("itemsize", ctypes.c_ssize_t), ("readonly", ctypes.c_int), ("ndim", ctypes.c_int),
                ("format", ctypes.c_char_p), ("shape", ctypes.c_void_p), ("strides", ctypes.c_void_p),
                ("suboffsets", ctypes.c_void_p), ("internal", ctypes.c_void_p)]


_GetBuffer = ctypes.pythonapi.PyObject_GetBuffer
_GetBuffer.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
_GetBuffer.restype = ctypes.c_int
_ReleaseBuffer = ctypes.pythonapi.PyBuffer_Release
_ReleaseBuffer.argtypes = [ctypes.POINTER(_PyBuffer)]
_ReleaseBuffer.restype = None
PyBUF_WRITABLE = 0x1
PyBUF_ND = 0x8  # C-contiguous


class Pinned:
    """A Python buffer held exported (it cannot move or be resized) with its address."""

    def __init__(self, obj: Any, writable: bool):
        self._view = _PyBuffer()
        flags = PyBUF_ND | (PyBUF_WRITABLE if writable else 0)
        try:
            _GetBuffer(obj, ctypes.byref(self._view), flags)
        except (BufferError, TypeError) as e:
            raise OSError(errno.EFAULT if writable else errno.EINVAL, f"buffer not usable: {e}") from None
        self.address = int(self._view.buf or 0)
        self.length = int(self._view.len)
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            _ReleaseBuffer(ctypes.byref(self._view))

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:
            pass


class _IOVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


_libc = ctypes.CDLL(None, use_errno=True)
for _name in ("process_vm_readv", "process_vm_writev"):
    _f = getattr(_libc, _name)
    _f.argtypes = [ctypes.c_int, ctypes.POINTER(_IOVec), ctypes.c_ulong, ctypes.POINTER(_IOVec), ctypes.c_ulong,
                   ctypes.c_ulong]
    _f.restype = ctypes.c_ssize_t


def vm_copy(pid: int, local_addr: int, remote_addr: int, length: int, write: bool) -> None:
    """Copy ``length`` bytes between our ``local_addr`` and ``remote_addr`` in process ``pid``."""
    fn = _libc.process_vm_writev if write else _libc.process_vm_readv
    done = 0
    while done < length:
        n = min(length - done, 1 << 30)
        liov = _IOVec(local_addr + done, n)
        riov = _IOVec(remote_addr + done, n)
        r = fn(pid, ctypes.byref(liov), 1, ctypes.byref(riov), 1, 0)
        if r < 0:
            e = ctypes.get_errno()
            raise OSError(e, f"process_vm_{'writev' if write else 'readv'}: {os.strerror(e)}")
        if r == 0:
            raise OSError(errno.EFAULT, "process_vm copied nothing")
        done += r


_PR_SET_PTRACER = 0x59616D61
_PR_SET_PTRACER_ANY = ctypes.c_ulong(-1).value


def allow_peer_access() -> None:
    """Under Yama ptrace_scope 1, let any process of ours reach this one (no-op elsewhere)."""
    try:
        _libc.prctl(_PR_SET_PTRACER, ctypes.c_ulong(_PR_SET_PTRACER_ANY), 0, 0, 0)
    except Exception:
        pass


def memfd(name: str, size: int) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    if size:
        os.ftruncate(fd, size)
    return fd


# -- the table ----------------------------------------------------------------------------------------
@dataclass
class Entry:
    token: int
    flags: int
    addr: int
    length: int
    pid: int = 0  # whose memory: 0 = the connection end's own process (the HELLO's pid)

    @property
    def valid(self) -> bool:
        return bool(self.flags & VALID)


class _TableFile:
    def __init__(self, fd: int, own: bool):
        self.fd = fd
        self.map = mmap.mmap(fd, TABLE_SIZE)
        # A fresh open file description, so our flock is not shared with the peer's copy of the fd.
        self.lock_fd = os.open(f"/proc/self/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
        self.own = own

    @contextmanager
    def locked(self, exclusive: bool):
        fcntl.flock(self.lock_fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(self.lock_fd, fcntl.LOCK_UN)

    def entry(self, slot: int) -> Entry:
        return Entry(*_ENTRY.unpack_from(self.map, _HEAD.size + slot * _ENTRY.size))

    def put(self, slot: int, e: Entry) -> None:
        _ENTRY.pack_into(self.map, _HEAD.size + slot * _ENTRY.size, e.token, e.flags, e.addr, e.length, e.pid)

    def close(self) -> None:
        for f in (lambda: self.map.close(), lambda: os.close(self.lock_fd), lambda: os.close(self.fd)):
            try:
                f()
            except (OSError, ValueError, BufferError):
                pass


@dataclass
class Registration:
    token: int
    slot: int
    addr: int
    length: int
    access: int
    pinned: Pinned | None  # None: another process's memory (a native program's, registered by the daemon)
    shadow_fd: int | None = None
    shadow: mmap.mmap | None = None


class LocalRegions:
    """The regions this end registered (owner side); ``fd`` goes to the peer."""

    def __init__(self, mode_memfd: bool = False):
        self.fd = memfd("smbdirect-mr-table", TABLE_SIZE)
        self.table = _TableFile(self.fd, own=True)
        self.prefix = random.getrandbits(12)
        _HEAD.pack_into(self.table.map, 0, MAGIC, SLOTS, self.prefix)
        self.memfd_mode = mode_memfd
        self.regs: dict[int, Registration] = {}
        self._free = list(range(SLOTS - 1, 0, -1))
        self._keys = [random.getrandbits(8) for _ in range(SLOTS)]
        self._lock = threading.Lock()
        self.closed = False

    def register(self, buffer: Any, access: int) -> Registration:
        if access & ~(RDMA_REMOTE_READ | RDMA_REMOTE_WRITE) or not access:
            raise OSError(errno.EINVAL, "access must be RDMA_REMOTE_READ and/or RDMA_REMOTE_WRITE")
        pinned = Pinned(buffer, writable=bool(access & RDMA_REMOTE_WRITE))
        if pinned.length == 0:
            pinned.release()
            raise OSError(errno.EINVAL, "cannot register an empty buffer")
        with self._lock:
            if self.closed:
                pinned.release()
                raise OSError(errno.ENOTCONN, "connection closed")
            if not self._free:
                pinned.release()
                raise OSError(errno.ENOMEM, "region table full")
            slot = self._free.pop()
            self._keys[slot] = (self._keys[slot] + 1) & 0xFF
            token = (self.prefix << 20) | (slot << 8) | self._keys[slot]
            reg = Registration(token, slot, pinned.address, pinned.length, access, pinned)
            if self.memfd_mode:
                reg.shadow_fd = memfd("smbdirect-mr", pinned.length)
                reg.shadow = mmap.mmap(reg.shadow_fd, pinned.length)
                ctypes.memmove(ctypes.addressof(ctypes.c_char.from_buffer(reg.shadow)), pinned.address,
                               pinned.length)
            with self.table.locked(True):
                self.table.put(slot, Entry(token, VALID | access, reg.addr, reg.length))
            self.regs[token] = reg
            return reg

    def register_foreign(self, pid: int, addr: int, length: int, access: int) -> Registration:
        """A region in another process's memory (``pid``), for a native program whose connection the
        QUIC/SMB Direct daemon runs: the peer's NIC copies with process_vm_* straight into that
        process, never through us. Only without memfd mode (the peer must be able to reach it)."""
        if access & ~(RDMA_REMOTE_READ | RDMA_REMOTE_WRITE) or not access:
            raise OSError(errno.EINVAL, "access must be RDMA_REMOTE_READ and/or RDMA_REMOTE_WRITE")
        if length <= 0 or addr <= 0 or pid <= 0:
            raise OSError(errno.EINVAL, "cannot register an empty buffer")
        if self.memfd_mode:
            raise OSError(errno.EOPNOTSUPP, "the peer cannot reach process memory (memfd mode): "
                                            "a native program's buffer cannot be registered")
        with self._lock:
            if self.closed:
                raise OSError(errno.ENOTCONN, "connection closed")
            if not self._free:
                raise OSError(errno.ENOMEM, "region table full")
            slot = self._free.pop()
            self._keys[slot] = (self._keys[slot] + 1) & 0xFF
            token = (self.prefix << 20) | (slot << 8) | self._keys[slot]
            reg = Registration(token, slot, addr, length, access, None)
            with self.table.locked(True):
                self.table.put(slot, Entry(token, VALID | access, addr, length, pid))
            self.regs[token] = reg
            return reg

    def invalidate(self, token: int) -> bool:
        """Make ``token`` useless (waits for accesses in flight); False if it was not valid."""
        with self._lock:
            reg = self.regs.pop(token, None)
            if reg is None:
                return False
            with self.table.locked(True):
                self.table.put(reg.slot, Entry(0, 0, 0, 0))
            self._finish(reg)
            self._free.append(reg.slot)
            return True

    def _finish(self, reg: Registration) -> None:
        if reg.shadow is not None:
            if reg.access & RDMA_REMOTE_WRITE:
                ctypes.memmove(reg.addr, ctypes.addressof(ctypes.c_char.from_buffer(reg.shadow)), reg.length)
            try:
                reg.shadow.close()
            except BufferError:
                pass
            os.close(reg.shadow_fd)  # type: ignore[arg-type]
        if reg.pinned is not None:
            reg.pinned.release()

    def close(self) -> None:
        with self._lock:
            self.closed = True
            with self.table.locked(True):
                for reg in self.regs.values():
                    self.table.put(reg.slot, Entry(0, 0, 0, 0))
            for reg in self.regs.values():
                self._finish(reg)
            self.regs.clear()
        self.table.close()


#: How long an access waits for a registered region's shared memory (memfd mode) to arrive.
SHADOW_WAIT = 2.0


class RemoteRegions:
    """The peer's table, as our NIC sees it: checks every access and moves the bytes."""

    def __init__(self, fd: int, pid: int, use_vm: bool):
        st = os.fstat(fd)
        if st.st_size != TABLE_SIZE:
            os.close(fd)
            raise OSError(errno.EPROTO, "peer region table has the wrong size")
        self.table = _TableFile(fd, own=False)
        magic, slots, _prefix = _HEAD.unpack_from(self.table.map, 0)
        if magic != MAGIC or slots != SLOTS:
            self.table.close()
            raise OSError(errno.EPROTO, "peer region table is not ours")
        self.pid = pid
        self.use_vm = use_vm
        self.shadows: dict[int, tuple[int, mmap.mmap]] = {}
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)

    def add_shadow(self, token: int, fd: int) -> None:
        self._sweep()
        size = os.fstat(fd).st_size
        m = mmap.mmap(fd, size) if size else None
        with self._lock:
            old = self.shadows.pop(token, None)
            if m is not None:
                self.shadows[token] = (fd, m)
            self._arrived.notify_all()
        if old is not None:
            self._drop(old)

    @staticmethod
    def _drop(item: tuple[int, mmap.mmap]) -> None:
        try:
            item[1].close()
        except BufferError:
            pass
        os.close(item[0])

    def _lookup(self, token: int, offset: int, length: int, need: int) -> Entry:
        slot = (token >> 8) & (SLOTS - 1)
        e = self.table.entry(slot)
        if not e.valid or e.token != token:
            self.forget(token)
            raise AccessError(f"token {token:#010x} is not (or no longer) registered")
        if not e.flags & need:
            raise AccessError(f"token {token:#010x} does not allow remote {'read' if need == RDMA_REMOTE_READ else 'write'}")
        if offset < e.addr or offset + length > e.addr + e.length or length < 0:
            raise AccessError(f"range {offset:#x}+{length} outside region {e.addr:#x}+{e.length} of token {token:#010x}")
        return e

    def access(self, token: int, offset: int, local_addr: int, length: int, write: bool) -> None:
        """RDMA WRITE (``write``: local -> peer) or READ (peer -> local) of one checked piece.

        In memfd mode a region's shared memory follows its registration on the connection (an
        MR_FD message the engine thread takes in). A token learned out of band (another socket, a
        pipe) can arrive first: then wait a little for the memory, as a NIC whose memory-region
        update is still in flight would, before calling the token bad."""
        need = RDMA_REMOTE_WRITE if write else RDMA_REMOTE_READ
        if not self.use_vm and length:
            deadline = time.monotonic() + SHADOW_WAIT
            with self._lock:
                while token not in self.shadows and (left := deadline - time.monotonic()) > 0:
                    with self.table.locked(False):
                        e = self.table.entry((token >> 8) & (SLOTS - 1))
                        if not e.valid or e.token != token:
                            break  # not registered at all: _lookup below says so
                    self._arrived.wait(min(left, 0.05))
        with self.table.locked(False):
            e = self._lookup(token, offset, length, need)
            if length == 0:
                return
            if self.use_vm:
                vm_copy(e.pid or self.pid, local_addr, offset, length, write)
                return
            with self._lock:
                sh = self.shadows.get(token)
            if sh is None:
                raise AccessError(f"token {token:#010x}: no shared memory for the region")
            anchor = ctypes.c_char.from_buffer(sh[1])  # keeps the mapping exported while we copy
            base = ctypes.addressof(anchor) + (offset - e.addr)
            if write:
                ctypes.memmove(base, local_addr, length)
            else:
                ctypes.memmove(local_addr, base, length)
            del anchor

    def _sweep(self) -> None:
        with self._lock:
            tokens = list(self.shadows)
        for t in tokens:
            e = self.table.entry((t >> 8) & (SLOTS - 1))
            if not e.valid or e.token != t:
                self.forget(t)

    def forget(self, token: int) -> None:
        with self._lock:
            old = self.shadows.pop(token, None)
        if old is not None:
            self._drop(old)

    def close(self) -> None:
        with self._lock:
            items = list(self.shadows.values())
            self.shadows.clear()
        for it in items:
            self._drop(it)
        self.table.close()
