"""Open bookkeeping shared by the file handlers: FileId lookup, access mapping, closing, durable
attach/detach.

Why apart from the handlers: CREATE, CLOSE, TREE_DISCONNECT, LOGOFF and a lost connection all end
or hand over opens, and every handler looks its open up by FileId; one module keeps the rules:

- A FileId of all 0xFF in a related compound element means the previous element's FileId
  (§3.3.5.2.7.2); an unknown or stale FileId is STATUS_FILE_CLOSED.
- Generic access bits are mapped to file rights at CREATE (§3.3.5.9 via MS-FSCC).
- LOGOFF and TREE_DISCONNECT close every open; a lost connection detaches durable opens instead,
  so a reconnect can claim them (§3.3.7.1).
- The last close of an open with delete-on-close removes the file and tells directory watchers.
"""

from __future__ import annotations

import errno
import os
import struct

from .. import messages as m
from ..constants import AccessMask, CreateAction, NtStatus, OplockLevel
from ..vfs import meta_from_stat
from .breaks import notify_change
from .model import ALL_FF, FULL_ACCESS, Fail, Open, Reply

GENERIC_MAP = {
    AccessMask.GENERIC_READ: 0x00120089,
    AccessMask.GENERIC_WRITE: 0x00120116,
    AccessMask.GENERIC_EXECUTE: 0x001200A0,
    AccessMask.GENERIC_ALL: FULL_ACCESS,
    AccessMask.MAXIMUM_ALLOWED: FULL_ACCESS,
}
READ_RIGHTS = AccessMask.FILE_READ_DATA | AccessMask.FILE_EXECUTE
WRITE_RIGHTS = AccessMask.FILE_WRITE_DATA | AccessMask.FILE_APPEND_DATA


def file_meta(conn, st: os.stat_result):
    """Stat in SMB terms, with what SET_INFO stored that POSIX cannot keep (creation time, change
    time, DOS attributes); Samba keeps these in an xattr, we keep them for the server's lifetime."""
    meta = meta_from_stat(st)
    override = conn.state.meta_overrides.get((st.st_dev, st.st_ino))
    if override:
        for name, value in override.items():
            setattr(meta, name, value)
    return meta


def map_access(desired: int) -> int:
    granted = desired & 0x01FF01FF
    for bit, rights in GENERIC_MAP.items():
        if desired & bit:
            granted |= rights
    return granted


def os_error(exc: OSError) -> Fail:
    table = {errno.ENOENT: NtStatus.OBJECT_NAME_NOT_FOUND, errno.EEXIST: NtStatus.OBJECT_NAME_COLLISION,
             errno.EACCES: NtStatus.ACCESS_DENIED, errno.EPERM: NtStatus.ACCESS_DENIED,
             errno.ENOTEMPTY: NtStatus.DIRECTORY_NOT_EMPTY, errno.ENOTDIR: NtStatus.OBJECT_PATH_NOT_FOUND,
             errno.EISDIR: NtStatus.FILE_IS_A_DIRECTORY, errno.ENOSPC: NtStatus.DISK_FULL,
             errno.ENAMETOOLONG: NtStatus.OBJECT_NAME_INVALID, errno.EINVAL: NtStatus.INVALID_PARAMETER,
             errno.EFBIG: NtStatus.INVALID_PARAMETER, errno.ELOOP: NtStatus.ACCESS_DENIED}
    return Fail(table.get(exc.errno, NtStatus.ACCESS_DENIED), str(exc))


def open_for(session, request_file_id: bytes, related) -> Open:
    file_id = related.file_id if request_file_id == ALL_FF else request_file_id
    persistent, volatile = struct.unpack("<QQ", file_id)
    found = session.opens.get(volatile)
    if found is None or found.persistent != persistent:
        raise Fail(NtStatus.FILE_CLOSED, "unknown FileId")
    return found


def forget(conn, opened: Open) -> None:
    state = conn.state
    if opened.durable is not None:
        state.durable.remove(opened)
    if opened.session is not None:
        opened.session.opens.pop(opened.volatile, None)
    others = state.opens_by_path.get(opened.path, [])
    if opened in others:
        others.remove(opened)
    if not others:
        state.opens_by_path.pop(opened.path, None)
    if opened.fd is not None:
        os.close(opened.fd)
        opened.fd = None
    for pending in list(opened.connection.pending.values() if opened.connection else ()):
        if pending.open is opened:
            state.watchers = [w for w in state.watchers if w is not pending]
            opened.connection.complete_async(pending, NtStatus.NOTIFY_CLEANUP, m.ChangeNotifyResponse(b""))
    if opened.delete_on_close and not others:
        try:
            st = os.lstat(opened.path)
            state.meta_overrides.pop((st.st_dev, st.st_ino), None)
            if opened.is_dir:
                os.rmdir(opened.path)
            else:
                os.unlink(opened.path)
        except OSError:
            pass
        notify_change(conn, os.path.dirname(opened.path))


def close_session_opens(conn, session, keep_durable: bool = False) -> None:
    """LOGOFF closes every open; a lost connection (``keep_durable``) detaches durable ones (§3.3.7.1)."""
    for opened in list(session.opens.values()):
        if keep_durable:
            volatile = opened.volatile
            for pending in list(opened.connection.pending.values() if opened.connection else ()):
                if pending.open is opened:
                    conn.state.watchers = [w for w in conn.state.watchers if w is not pending]
                    opened.connection.pending.pop(pending.async_id, None)
            if conn.state.durable.detach(opened):
                session.opens.pop(volatile, None)
                continue
        forget(conn, opened)


def forget_detached(state, opened: Open) -> None:
    """Release a detached durable open (expired, purged by a conflicting open)."""
    others = state.opens_by_path.get(opened.path, [])
    if opened in others:
        others.remove(opened)
    if not others:
        state.opens_by_path.pop(opened.path, None)
    if opened.fd is not None:
        os.close(opened.fd)
        opened.fd = None


def expire_durable(state) -> None:
    state.durable.expire(lambda opened: forget_detached(state, opened))


def restore_open(state, record: dict, info) -> Open:
    """An open loaded from the durable state directory (server restart): detached, no fd yet."""
    opened = Open(record["persistent"], record["persistent"], record["path"], None, record["is_dir"],
                  record["access"], record["share_access"], None, None, None, oplock=record["oplock"],
                  lease_key=bytes.fromhex(record["lease_key"]) or None, lease_state=record["lease_state"],
                  lease_epoch=record["lease_epoch"], durable=info)
    state.opens_by_path.setdefault(opened.path, []).append(opened)
    return opened


def attach(conn, session, tree, opened: Open, contexts: list, action: int = CreateAction.OPENED) -> Reply:
    """Hand a durable open to this session (reconnect, or a replayed CREATE): §3.3.5.9.7/.12."""
    state = conn.state
    if opened.session is not session:
        if opened.session is not None:  # replay from another session of the same client
            opened.session.opens.pop(opened.volatile, None)
        state.next_file_id += 1
        opened.volatile = state.next_file_id
        opened.session, opened.tree = session, tree
        session.opens[opened.volatile] = opened
    opened.connection = conn
    opened.durable.detached_at = None
    try:
        if opened.fd is None and not opened.is_dir:
            flags = os.O_RDWR if opened.access & (WRITE_RIGHTS | AccessMask.DELETE) else os.O_RDONLY
            opened.fd = os.open(opened.path, flags)
        st = os.fstat(opened.fd) if opened.fd is not None else os.stat(opened.path)
    except OSError as exc:
        state.durable.remove(opened)
        forget_detached(state, opened)
        raise Fail(NtStatus.OBJECT_NAME_NOT_FOUND, f"durable open's file is gone: {exc}") from exc
    state.durable.save()
    meta = file_meta(conn, st)
    oplock = OplockLevel.LEASE if opened.lease_key is not None else opened.oplock
    response = m.CreateResponse(file_id=opened.file_id, oplock_level=oplock, create_action=action,
                                creation_time=meta.creation_time, last_access_time=meta.last_access_time,
                                last_write_time=meta.last_write_time, change_time=meta.change_time,
                                allocation_size=meta.allocation_size, end_of_file=meta.end_of_file,
                                file_attributes=meta.attributes, contexts=contexts)
    return Reply(NtStatus.SUCCESS, response, file_id=opened.file_id)


def close_tree_opens(conn, session, tree) -> None:
    for opened in list(session.opens.values()):
        if opened.tree is tree:
            forget(conn, opened)
