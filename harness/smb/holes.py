"""Holes in host files: where a file's data lies (SEEK_DATA/SEEK_HOLE) and giving a range's space
back (fallocate with FALLOC_FL_PUNCH_HOLE).

Why a module: :class:`~harness.smb.vfs.LocalShare` answers FSCTL_QUERY_ALLOCATED_RANGES and
FSCTL_SET_ZERO_DATA on a sparse file (MS-FSCC 2.3.33, 2.3.85) from what the host file system
really holds, as Samba's smbd does; Python has ``os.lseek(SEEK_DATA)`` but no punch-hole call, so
fallocate(2) is reached through ctypes here, away from the share's other file operations.

Every failure is an ``OSError``; :func:`punch_hole` raises one with EOPNOTSUPP where the host
cannot punch (no fallocate in its C library, or a file system that refuses), and the caller then
writes zeros instead.  :func:`data_ranges` treats a file system without SEEK_DATA as holding data
everywhere (what the lseek(2) fallback of such file systems says too).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os

FALLOC_FL_KEEP_SIZE = 0x01  # linux/falloc.h: the size stays what it was
FALLOC_FL_PUNCH_HOLE = 0x02  # deallocate; must be combined with KEEP_SIZE

_fallocate = None  # the C library's fallocate64/fallocate, found on first use; False: none


def _fallocate_call():
    global _fallocate
    if _fallocate is None:
        _fallocate = False
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            call = getattr(libc, "fallocate64", None) or getattr(libc, "fallocate", None)
        except (OSError, AttributeError):
            call = None
        if call is not None:
            call.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
            call.restype = ctypes.c_int
            _fallocate = call
    return _fallocate


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """fallocate(2); OSError(EOPNOTSUPP) where the C library has none."""
    call = _fallocate_call()
    if not call:
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))
    if call(fd, mode, offset, length) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Deallocate bytes [offset, offset+length) of ``fd`` without changing its size: they read as
    zeros, whole blocks inside the range give their space back, partial ones are zeroed."""
    if length > 0:
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)


REFUSED = (errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL)  # cannot punch here: write zeros


def data_ranges(fd: int, offset: int, end: int) -> list[tuple[int, int]]:
    """(offset, length) of each run of data the file system holds in [offset, end) of ``fd``, in
    order, clipped to the range; ``end`` should not pass the file's size."""
    ranges: list[tuple[int, int]] = []
    position = offset
    while position < end:
        try:
            data = os.lseek(fd, position, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data from here to the end of the file
                break
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP) and not ranges:
                return [(offset, end - offset)]  # no SEEK_DATA here: all data
            raise
        if data >= end:
            break
        hole = os.lseek(fd, data, os.SEEK_HOLE)  # the end of the file counts as a hole
        if hole <= data:
            raise OSError(errno.EIO, f"SEEK_HOLE {hole} at or before SEEK_DATA {data}")
        ranges.append((data, min(hole, end) - data))
        position = hole
    return ranges


__all__ = ["REFUSED", "data_ranges", "fallocate", "punch_hole", "FALLOC_FL_KEEP_SIZE", "FALLOC_FL_PUNCH_HOLE"]
