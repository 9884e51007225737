"""READ, WRITE and FLUSH (MS-SMB2 §3.3.5.12, §3.3.5.13, §3.3.5.11).

Rules kept here: READ needs FILE_READ_DATA or FILE_EXECUTE and WRITE FILE_WRITE_DATA or
FILE_APPEND_DATA (else STATUS_ACCESS_DENIED); lengths are bounded by MaxRead/WriteSize and a
multi-credit request must be charged for its size (§3.3.5.2.5); offsets above INT64_MAX and bytes
at or past the largest file size are STATUS_INVALID_PARAMETER.  Data may travel through an RDMA
channel (:mod:`harness.smb.rdma_channel`).  A WRITE breaks other opens' read caches.  A range
another open locked (a WRITE: also one this open locked shared) is STATUS_FILE_LOCK_CONFLICT.
"""

from __future__ import annotations

from .. import change_notify as cn
from .. import messages as m
from .. import rdma_channel
from ..constants import Command, NtStatus
from ..header import Header
from . import notify, write_time
from .breaks import break_others
from .locking import check_io
from .model import Fail, Handler, Reply
from .opens import (
    READ_RIGHTS,
    WRITE_RIGHTS,
    open_for,
    os_error,
    share_of,
)

MAX_FILE_SIZE = 0xFFFFFFF0000  # Samba's MAXFILESIZE: no byte may be written at or past it

def _read(conn, session, tree, header, request: m.ReadRequest, related, encrypted) -> Reply:
    opened = open_for(session, tree, request.file_id, related)
    if opened.is_dir:
        raise Fail(NtStatus.INVALID_DEVICE_REQUEST, "READ on a directory")
    if not opened.access & READ_RIGHTS:
        raise Fail(NtStatus.ACCESS_DENIED, "no read access")
    if request.length > conn.max_size:
        raise Fail(NtStatus.INVALID_PARAMETER, "READ longer than MaxReadSize")
    descriptors = rdma_channel.read_channel(conn, request)  # None: data inline
    check_charge(conn, header, request.length)
    if request.offset > 0x7FFFFFFFFFFFFFFF or request.offset + request.length > 0x7FFFFFFFFFFFFFFF:
        raise Fail(NtStatus.INVALID_PARAMETER, "READ beyond the largest file offset")
    check_io(conn.state, opened, request.offset, request.length, write=False)
    data: bytes | memoryview
    try:
        if descriptors is not None:
            data = rdma_channel.pread(conn, share_of(opened), opened.handle, request.length, request.offset)
        else:
            data = share_of(opened).pread(opened.handle, request.length, request.offset)
    except OSError as exc:
        raise os_error(exc) from exc
    opened.position = request.offset + len(data)
    if (not data and request.length) or len(data) < request.minimum_count:
        raise Fail(NtStatus.END_OF_FILE, "end of file")
    if descriptors is not None:
        return Reply(NtStatus.SUCCESS, rdma_channel.send_read_data(conn, request, descriptors, data))
    return Reply(NtStatus.SUCCESS, m.ReadResponse(data=bytes(data)))  # bytes already: not copied


def check_charge(conn, header: Header, length: int) -> None:
    """§3.3.5.2.5: a multi-credit request must be charged ceil(length / 64 KiB) credits."""
    if conn.supports_multicredit and length > 65536:
        needed = (length - 1) // 65536 + 1
        if header.credit_charge < needed:
            raise Fail(NtStatus.INVALID_PARAMETER, f"CreditCharge {header.credit_charge} < {needed}")


def _write(conn, session, tree, header, request: m.WriteRequest, related, encrypted) -> Reply:
    opened = open_for(session, tree, request.file_id, related)
    if opened.is_dir:
        raise Fail(NtStatus.INVALID_DEVICE_REQUEST, "WRITE on a directory")
    if not opened.access & WRITE_RIGHTS:
        raise Fail(NtStatus.ACCESS_DENIED, "no write access")
    if len(request.data) > conn.max_size:
        raise Fail(NtStatus.INVALID_PARAMETER, "WRITE longer than MaxWriteSize")
    descriptors, rdma_length = rdma_channel.write_channel(conn, request)  # None: data inline
    length = rdma_length if descriptors is not None else len(request.data)
    check_charge(conn, header, length)
    offset = request.offset
    # Samba's limits (smbtorture smb2.rw.invalid): offsets above INT64_MAX are invalid, and no byte may
    # land at or past MAXFILESIZE (0xfffffff0000); an empty write is a no-op that succeeds.
    if offset > 0x7FFFFFFFFFFFFFFF or (length and offset + length > MAX_FILE_SIZE):
        raise Fail(NtStatus.INVALID_PARAMETER, "WRITE outside the file size limits")
    if not length:
        return Reply(NtStatus.SUCCESS, m.WriteResponse(count=0))
    check_io(conn.state, opened, offset, length, write=True)
    data = request.data if descriptors is None else rdma_channel.pull_write_data(conn, request, descriptors, length)
    try:
        kept = write_time.keep(opened)
        written = share_of(opened).pwrite(opened.handle, data, offset)
        write_time.after_write(conn.state, opened, kept)
    except OSError as exc:
        raise os_error(exc) from exc
    opened.position = offset + written
    break_others(conn, opened)
    notify.modified(conn.state, share_of(opened), opened.path, cn.SIZE | cn.LAST_WRITE)
    return Reply(NtStatus.SUCCESS, m.WriteResponse(count=written))


def _flush(conn, session, tree, header, request: m.FlushRequest, related, encrypted) -> Reply:
    opened = open_for(session, tree, request.file_id, related)
    if not opened.is_dir and not opened.access & (WRITE_RIGHTS):
        raise Fail(NtStatus.ACCESS_DENIED, "FLUSH needs write access")
    write_time.now(conn.state, opened)  # a pending write-time update happens now
    return Reply(NtStatus.SUCCESS, m.FlushResponse())


HANDLERS: dict[int, Handler] = {
    Command.READ: _read,
    Command.WRITE: _write,
    Command.FLUSH: _flush,
}
