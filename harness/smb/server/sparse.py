"""Sparse files over IOCTL (MS-SMB2 3.3.5.15 hands these FSCTLs to the object store): FSCTL_SET_SPARSE
(MS-FSCC 2.3.64), FSCTL_QUERY_ALLOCATED_RANGES (MS-FSCC 2.3.33, MS-FSA 2.1.5.10.22) and
FSCTL_SET_ZERO_DATA (MS-FSCC 2.3.85).

Why a module: a sparse file is two things kept in two places, and these three requests are where
they meet.  Whether a file *is* sparse is its FILE_ATTRIBUTE_SPARSE_FILE, a DOS attribute POSIX
cannot keep: it lives with the others the server keeps for a file's lifetime (``meta_overrides``,
see opens.file_meta), so every open, QUERY_INFO and QUERY_DIRECTORY see it.  Only SET_SPARSE sets or
clears it: CREATE ignores it in FileAttributes and SET_INFO keeps it as it was (Windows and Samba
alike; smbtorture smb2.ioctl.sparse_file_attr).  Where the holes are is the share's
(:meth:`~harness.smb.vfs.Share.allocated_ranges`, :meth:`~harness.smb.vfs.Share.zero_range`): on
a host directory what SEEK_DATA/SEEK_HOLE find and fallocate(PUNCH_HOLE) makes, in memory a block
map.  Clearing the attribute leaves the holes where they are, as Samba does; a non-sparse file is
reported allocated throughout anyway.

The statuses are Samba 4.17's (smbtorture smb2.ioctl.sparse_*, which Windows passes too):

- SET_SPARSE: an open granted FILE_WRITE_DATA, FILE_APPEND_DATA or FILE_WRITE_ATTRIBUTES (any of
  them, as Windows Server 2008/2012 allow) else ACCESS_DENIED; a directory is INVALID_PARAMETER.
  The input is optional: none, or a first byte other than 0, sets; a longer buffer is fine.
- QUERY_ALLOCATED_RANGES needs FILE_READ_DATA; an input shorter than FILE_ALLOCATED_RANGE_BUFFER is
  INVALID_PARAMETER.  An empty range, an empty file or an offset at or past its end return no
  ranges; a range ending past MAXLONGLONG (an offset plus length that wraps, sparse_qar_overflow) is
  INVALID_PARAMETER.  A sparse file's ranges come from the share, a non-sparse file is one range
  from the offset to the range's or the file's end.  Byte-range locks do not apply (Windows does
  not check them).  Output that does not fit MaxOutputResponse: STATUS_BUFFER_OVERFLOW with the
  whole entries that fit, STATUS_BUFFER_TOO_SMALL when not even one does (MS-FSA 2.1.5.10.22;
  Samba answers BUFFER_TOO_SMALL to both, smbtorture only tests the second).
- SET_ZERO_DATA needs FILE_WRITE_DATA itself (APPEND_DATA or WRITE_ATTRIBUTES are not enough).
  FileOffset above BeyondFinalZero (or either above MAXLONGLONG) is INVALID_PARAMETER, an empty
  range succeeds at once.  The range is checked against byte-range locks as a WRITE is
  (FILE_LOCK_CONFLICT, locking.check_io), zeroed without changing the size, and deallocated when
  the file is sparse; it counts as a write of the file (write time, broken read caches,
  CHANGE_NOTIFY LAST_WRITE).
"""

from __future__ import annotations

import struct

from .. import change_notify as cn
from .. import messages as m
from ..constants import AccessMask, FileAttributes, NtStatus
from . import notify, write_time
from .breaks import break_others
from .locking import check_io
from .model import Fail, Open, Reply
from .opens import file_meta, os_error, share_of, stat_open

FILE_SUPPORTS_SPARSE_FILES = 0x00000040  # FileFsAttributeInformation.FileSystemAttributes (MS-FSCC 2.5.1)
MAX_OFFSET = 0x7FFFFFFFFFFFFFFF  # MAXLONGLONG: FileOffset and Length are signed 64-bit values
RANGE = struct.Struct("<QQ")  # FILE_ALLOCATED_RANGE_BUFFER; FILE_ZERO_DATA_INFORMATION has the same shape
SPARSE, NORMAL = int(FileAttributes.SPARSE_FILE), int(FileAttributes.NORMAL)
SET_SPARSE_RIGHTS = AccessMask.FILE_WRITE_DATA | AccessMask.FILE_APPEND_DATA | AccessMask.FILE_WRITE_ATTRIBUTES


def is_sparse(conn, opened: Open) -> bool:
    return bool(file_meta(conn, stat_open(opened)).attributes & SPARSE)


def _done(request: m.IoctlRequest, opened: Open, output: bytes = b"", status: int = NtStatus.SUCCESS) -> Reply:
    return Reply(status, m.IoctlResponse(request.ctl_code, opened.file_id, output, b"", 0))


def set_sparse(conn, opened: Open, request: m.IoctlRequest) -> Reply:
    """FSCTL_SET_SPARSE: set or clear the file's FILE_ATTRIBUTE_SPARSE_FILE (FILE_SET_SPARSE_BUFFER:
    one Boolean byte, optional).  Watchers hear of an attribute change when the attribute changed."""
    if not opened.access & SET_SPARSE_RIGHTS:
        raise Fail(NtStatus.ACCESS_DENIED, "SET_SPARSE needs WRITE_DATA, APPEND_DATA or WRITE_ATTRIBUTES")
    if opened.is_dir:
        raise Fail(NtStatus.INVALID_PARAMETER, "no sparse directories")
    fs = share_of(opened)
    if not fs.sparse_files:
        raise Fail(NtStatus.INVALID_DEVICE_REQUEST, "the share keeps no holes")
    sparse = not request.input or request.input[0] != 0
    try:
        meta = file_meta(conn, stat_open(opened))
    except OSError as exc:
        raise os_error(exc) from exc
    if bool(meta.attributes & SPARSE) == sparse:
        return _done(request, opened)
    if sparse:
        attributes = meta.attributes & ~NORMAL | SPARSE
    else:  # NORMAL stands for no attribute at all
        attributes = meta.attributes & ~SPARSE or NORMAL
    conn.state.meta_overrides.setdefault((meta.volume_id, meta.file_id), {})["attributes"] = attributes
    notify.modified(conn.state, fs, opened.path, cn.ATTRIBUTES)
    return _done(request, opened)


def query_allocated_ranges(conn, opened: Open, request: m.IoctlRequest) -> Reply:
    """FSCTL_QUERY_ALLOCATED_RANGES: the FILE_ALLOCATED_RANGE_BUFFERs of the queried range that hold
    storage (see the module docstring for the rules)."""
    if not opened.access & AccessMask.FILE_READ_DATA:
        raise Fail(NtStatus.ACCESS_DENIED, "QUERY_ALLOCATED_RANGES needs READ_DATA")
    if len(request.input) < RANGE.size:
        raise Fail(NtStatus.INVALID_PARAMETER, "short FILE_ALLOCATED_RANGE_BUFFER")
    if opened.is_dir:
        raise Fail(NtStatus.INVALID_PARAMETER, "QUERY_ALLOCATED_RANGES on a directory")
    offset, length = RANGE.unpack_from(request.input)
    fs = share_of(opened)
    try:
        size = stat_open(opened).end_of_file
        if length == 0 or offset >= size:
            ranges = []
        elif offset + length > MAX_OFFSET:
            raise Fail(NtStatus.INVALID_PARAMETER, "FileOffset + Length beyond MAXLONGLONG")
        elif is_sparse(conn, opened):
            ranges = fs.allocated_ranges(opened.handle, offset, min(size, offset + length))
        else:
            ranges = [(offset, min(size, offset + length) - offset)]
    except OSError as exc:
        raise os_error(exc) from exc
    fitting = request.max_output_response // RANGE.size
    output = b"".join(RANGE.pack(start, count) for start, count in ranges[:fitting])
    if len(ranges) <= fitting:
        return _done(request, opened, output)
    if not fitting:
        raise Fail(NtStatus.BUFFER_TOO_SMALL, f"{len(ranges)} ranges, MaxOutputResponse {request.max_output_response}")
    return _done(request, opened, output, NtStatus.BUFFER_OVERFLOW)


def set_zero_data(conn, opened: Open, request: m.IoctlRequest) -> Reply:
    """FSCTL_SET_ZERO_DATA: bytes [FileOffset, BeyondFinalZero) read as zeros, deallocated in a
    sparse file (see the module docstring for the rules)."""
    if not opened.access & AccessMask.FILE_WRITE_DATA:
        raise Fail(NtStatus.ACCESS_DENIED, "SET_ZERO_DATA needs WRITE_DATA")
    if opened.is_dir:
        raise Fail(NtStatus.INVALID_PARAMETER, "SET_ZERO_DATA on a directory")
    if len(request.input) < RANGE.size:
        raise Fail(NtStatus.INVALID_PARAMETER, "short FILE_ZERO_DATA_INFORMATION")
    offset, beyond = RANGE.unpack_from(request.input)
    if offset > MAX_OFFSET or beyond > MAX_OFFSET or beyond < offset:
        raise Fail(NtStatus.INVALID_PARAMETER, f"zero data {offset:#x}..{beyond:#x}")
    if beyond == offset:
        return _done(request, opened)
    check_io(conn.state, opened, offset, beyond - offset, write=True)
    fs = share_of(opened)
    try:
        if offset >= stat_open(opened).end_of_file:
            return _done(request, opened)  # no byte of the file in the range: nothing changes
        kept = write_time.keep(opened)
        fs.zero_range(opened.handle, offset, beyond - offset, deallocate=is_sparse(conn, opened))
        write_time.after_write(conn.state, opened, kept)
    except OSError as exc:
        raise os_error(exc) from exc
    break_others(conn, opened)
    notify.modified(conn.state, fs, opened.path, cn.LAST_WRITE)
    return _done(request, opened)


__all__ = ["FILE_SUPPORTS_SPARSE_FILES", "query_allocated_ranges", "set_sparse", "set_zero_data"]
