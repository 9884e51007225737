"""SET_INFO (MS-SMB2 §3.3.5.21): times and attributes, end of file, delete disposition, rename,
hard links, EAs, position, and the security descriptor (InfoType SECURITY).

Times and DOS attributes that POSIX cannot keep are stored for the server's lifetime (the
``meta_overrides`` of the server state).  Rename and delete need DELETE access; a non-empty
directory cannot be marked for deletion, nor can the share root or a READONLY file
(STATUS_CANNOT_DELETE).  A rename on a stream open, or to a ``:name``, renames the stream.
"""

from __future__ import annotations

from .. import change_notify as cn
from .. import fscc
from .. import messages as m
from ..constants import AccessMask, Command, FileAttributes, InfoType, NtStatus
from ..errors import SMBProtocolError
from ..vfs import ShareError
from . import file_security, notify, oplocks, streams, write_time
from .locking import move_locks
from .model import Fail, Handler, Open, Pending, Reply
from .opens import (
    WRITE_RIGHTS,
    file_meta,
    open_for,
    os_error,
    share_of,
    stat_open,
)


def _set_info(conn, session, tree, header, request: m.SetInfoRequest, related, encrypted,
              waiting: Pending | None = None) -> Reply:
    opened = open_for(session, tree, request.file_id, related)
    if request.info_type == InfoType.SECURITY:
        try:
            file_security.set_descriptor(conn, session, opened, share_of(opened), request.additional_information,
                                         request.buffer)
        except OSError as exc:
            raise os_error(exc) from exc
        return Reply(NtStatus.SUCCESS, m.SetInfoResponse())
    if request.info_type != InfoType.FILE:
        raise Fail(NtStatus.NOT_SUPPORTED if request.info_type == InfoType.FILESYSTEM else NtStatus.INVALID_PARAMETER,
                   "SET_INFO type")
    cls = request.file_info_class
    buf = request.buffer
    try:
        if cls == 4:
            basic = unpack_info(fscc.FileBasicInformation, buf)
            # MS-FSA 2.1.5.14.2: DIRECTORY on a file, TEMPORARY on a directory are invalid (checked
            # before anything changes)
            if (basic.file_attributes & ~0x7FB7 or (opened.is_dir and basic.file_attributes & FileAttributes.TEMPORARY)
                    or (not opened.is_dir and basic.file_attributes & FileAttributes.DIRECTORY)):
                raise Fail(NtStatus.INVALID_PARAMETER, "attributes that cannot be set")
            write_time.now(conn.state, opened)  # a pending update first, then what is asked
            share_of(opened).set_times(opened.path, _ns(basic.last_access_time), _ns(basic.last_write_time))
            write_time.user_set(conn.state, opened, basic.last_write_time)
            st = share_of(opened).stat(opened.path)
            override = conn.state.meta_overrides.setdefault((st.volume_id, st.file_id), {})
            if basic.creation_time not in (0, 0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFE):
                override["creation_time"] = basic.creation_time
            if basic.change_time not in (0, 0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFE):
                override["change_time"] = basic.change_time
            if basic.file_attributes:
                # SPARSE_FILE stays as it is: FSCTL_SET_SPARSE alone changes it (sparse.py)
                sparse = override.get("attributes", st.attributes) & FileAttributes.SPARSE_FILE
                attributes = (basic.file_attributes & ~FileAttributes.DIRECTORY & ~FileAttributes.NORMAL
                              & ~FileAttributes.SPARSE_FILE) | sparse
                if opened.is_dir:
                    attributes |= FileAttributes.DIRECTORY
                override["attributes"] = int(attributes or FileAttributes.NORMAL)
            notify.modified(conn.state, share_of(opened), opened.path, notify.basic_info_bits(basic))
        elif cls == 20:
            if opened.is_dir or not opened.access & WRITE_RIGHTS:
                raise Fail(NtStatus.ACCESS_DENIED if not opened.is_dir else NtStatus.INVALID_PARAMETER, "EOF")
            kept = write_time.keep(opened)
            share_of(opened).ftruncate(opened.handle, unpack_info(fscc.FileEndOfFileInformation, buf).end_of_file)
            write_time.after_end_of_file(conn.state, opened, kept)
            oplocks.on_write(conn, opened)
            notify.modified(conn.state, share_of(opened), opened.path, cn.SIZE | cn.LAST_WRITE)
        elif cls == 19:
            need(buf, 8)
            if opened.is_dir or not opened.access & WRITE_RIGHTS:
                raise Fail(NtStatus.ACCESS_DENIED if not opened.is_dir else NtStatus.INVALID_PARAMETER, "allocation")
            allocation = int.from_bytes(buf[:8], "little")
            if allocation < stat_open(opened).end_of_file:  # MS-FSA 2.1.5.14.1: the end of file follows it down
                kept = write_time.keep(opened)
                share_of(opened).ftruncate(opened.handle, allocation)
                write_time.after_write(conn.state, opened, kept)
                notify.modified(conn.state, share_of(opened), opened.path, cn.SIZE | cn.LAST_WRITE)
            st = stat_open(opened)
            conn.state.meta_overrides.setdefault((st.volume_id, st.file_id), {})["allocation_size"] = \
                -(-allocation // 4096) * 4096  # what the file keeps allocated, reported while it is more
            oplocks.on_write(conn, opened)  # allocation changes break read caches as a write does (batch12)
        elif cls in (13, 64):
            need(buf, 1 if cls == 13 else 4)
            delete = bool(buf[0] & 1)
            if delete and not opened.access & AccessMask.DELETE:
                raise Fail(NtStatus.ACCESS_DENIED, "no DELETE access")
            if delete and opened.is_dir and share_of(opened).listdir(opened.path):
                raise Fail(NtStatus.DIRECTORY_NOT_EMPTY, "directory not empty")
            if delete and opened.path == share_of(opened).root:
                raise Fail(NtStatus.CANNOT_DELETE, "share root")
            if (delete and not opened.is_dir and opened.stream is None
                    and file_meta(conn, stat_open(opened)).attributes & FileAttributes.READONLY):
                raise Fail(NtStatus.CANNOT_DELETE, "read-only file")
            if delete:
                parked = _break_handles(conn, session, tree, header, request, related, encrypted, opened, waiting)
                if parked is not None:
                    return parked
            opened.delete_on_close = delete
        elif cls == 10 and (opened.stream is not None or _names_stream(buf)):
            info = unpack_info(fscc.FileRenameInformation, buf)
            if not opened.access & AccessMask.DELETE:
                raise Fail(NtStatus.ACCESS_DENIED, "rename needs DELETE access")
            old_key = opened.stream_key
            streams.rename_stream(conn.state, opened, share_of(opened), info.file_name, bool(info.replace_if_exists))
            for other in conn.state.opens_by_path.get(opened.path, []):
                if other is not opened and other.stream_key == old_key:
                    other.stream = opened.stream
        elif cls == 11:
            _link(conn, opened, buf)
        elif cls == 15:
            if not opened.access & AccessMask.FILE_WRITE_EA:
                raise Fail(NtStatus.ACCESS_DENIED, "needs FILE_WRITE_EA")
            file_security.set_eas(share_of(opened), opened.path, buf)
            notify.modified(conn.state, share_of(opened), opened.path, cn.EA)
        elif cls == 10:
            parent = share_of(opened).parent(opened.path)
            if any(o.access & AccessMask.DELETE for o in conn.state.opens_by_path.get(parent, [])):
                # Windows and Samba: the parent directory open for DELETE blocks renames out of it,
                # before any break (smbtorture smb2.oplock.exclusive6, batch19, batch20).
                raise Fail(NtStatus.SHARING_VIOLATION, "parent directory open with DELETE access")
            parked = _break_handles(conn, session, tree, header, request, related, encrypted, opened, waiting)
            if parked is not None:
                return parked
            _rename(conn, tree, opened, buf)
        elif cls == 14:
            opened.position = unpack_info(fscc.FilePositionInformation, buf).current_byte_offset
        elif cls == 16:
            need(buf, 4)
            mode = int.from_bytes(buf[:4], "little")
            # MS-FSA 2.1.5.14.8: only these bits may be set, and not both synchronous modes
            if mode & ~0x36 or (mode & 0x30) == 0x30:
                raise Fail(NtStatus.INVALID_PARAMETER, f"FileModeInformation {mode:#x}")
            opened.mode = mode
        else:
            raise Fail(NtStatus.INVALID_INFO_CLASS, f"SET_INFO class {cls}")
    except OSError as exc:
        raise os_error(exc) from exc
    return Reply(NtStatus.SUCCESS, m.SetInfoResponse())


def _break_handles(conn, session, tree, header, request, related, encrypted, opened: Open,
                   waiting: Pending | None) -> Reply | None:
    """A rename or a delete first breaks other opens' HANDLE caching and BATCH oplocks so their
    clients may close them; it waits (asynchronously) for the acknowledgments. None: go on now."""
    oplocks.before_rename_or_delete(conn, opened)
    return oplocks.wait_or_go(
        conn, header, session, tree.tree_id, encrypted, opened.path,
        lambda pending: _set_info(conn, session, tree, header, request, related, encrypted, pending),
        waiting, open_id=opened.persistent, lease=conn.state.caching.lease_of(opened.persistent))


def need(buf: bytes, size: int) -> None:
    if len(buf) < size:
        raise Fail(NtStatus.INFO_LENGTH_MISMATCH, "SET_INFO buffer too small")


def unpack_info(cls, buf: bytes):
    try:
        return cls.unpack(buf)
    except SMBProtocolError as exc:
        raise Fail(NtStatus.INFO_LENGTH_MISMATCH, str(exc)) from exc


def _ns(filetime: int) -> int | None:
    """A FILE_BASIC_INFORMATION time in unix nanoseconds; None for 0, -1 and -2, which leave the
    time as it is (MS-FSCC §2.4.7: 0 "do not change", -1/-2 "stop/resume automatic updates")."""
    if filetime in (0, 0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFE):
        return None
    return fscc.filetime_to_unix_ns(filetime)


def _names_stream(buf: bytes) -> bool:
    """A rename of the file's own data to a stream name (``:name``) is a stream rename."""
    try:
        return fscc.FileRenameInformation.unpack(buf).file_name.startswith(":")
    except SMBProtocolError:
        return False


def _link(conn, opened: Open, buf: bytes) -> None:
    """FileLinkInformation (MS-FSCC §2.4.27.2, same layout as the rename class): a new name for the
    file.  A directory cannot be linked (STATUS_FILE_IS_A_DIRECTORY), a taken name needs
    ReplaceIfExists and may not be open (STATUS_ACCESS_DENIED), as in MS-FSA 2.1.5.14.6."""
    info = unpack_info(fscc.FileRenameInformation, buf)
    fs = share_of(opened)
    if opened.is_dir:
        raise Fail(NtStatus.FILE_IS_A_DIRECTORY, "a directory cannot be hard-linked")
    if opened.stream is not None or ":" in info.file_name:
        raise Fail(NtStatus.INVALID_PARAMETER, "hard link of or to a stream")
    try:
        target = fs.resolve(info.file_name.lstrip("\\"))
    except ShareError as exc:
        raise Fail(exc.status, str(exc)) from exc
    if fs.exists(target):
        if not info.replace_if_exists:
            raise Fail(NtStatus.OBJECT_NAME_COLLISION, "link target exists")
        if fs.is_dir(target) or conn.state.opens_by_path.get(target):
            raise Fail(NtStatus.ACCESS_DENIED, "link target is a directory or open")
        fs.remove(target)
        notify.removed(conn.state, fs, target, False)
    fs.link(opened.path, target)
    notify.added(conn.state, fs, target, False)


def _rename(conn, tree, opened: Open, buf: bytes) -> None:
    info = unpack_info(fscc.FileRenameInformation, buf)
    if not opened.access & AccessMask.DELETE:
        raise Fail(NtStatus.ACCESS_DENIED, "rename needs DELETE access")
    try:
        target = share_of(opened).resolve(info.file_name.lstrip("\\"))
    except ShareError as exc:
        raise Fail(exc.status, str(exc)) from exc
    fs = share_of(opened)
    if fs.exists(target) and not fs.same_file(target, opened.path):
        if not info.replace_if_exists:
            raise Fail(NtStatus.OBJECT_NAME_COLLISION, "rename target exists")
        if fs.is_dir(target):
            raise Fail(NtStatus.ACCESS_DENIED, "cannot replace a directory")
    old = opened.path
    fs.rename(old, target)
    state = conn.state
    oplocks.renamed(state, old, target)
    for other in state.opens_by_path.pop(old, []):
        other.path = target
        state.opens_by_path.setdefault(target, []).append(other)
    move_locks(state, old, target)
    notify.renamed(state, fs, old, target, opened.is_dir, through=opened)


HANDLERS: dict[int, Handler] = {
    Command.SET_INFO: _set_info,
}
