"""Open bookkeeping shared by the file handlers: FileId lookup, access mapping, closing, durable
attach/detach.

Why apart from the handlers: CREATE, CLOSE, TREE_DISCONNECT, LOGOFF and a lost connection all end
or hand over opens, and every handler looks its open up by FileId; one module keeps the rules:

- A FileId of all 0xFF in a related compound element means the previous element's FileId
  (§3.3.5.2.7.2); an unknown or stale FileId, or one used on another tree connect than its open's,
  is STATUS_FILE_CLOSED.
- Generic access bits are mapped to file rights at CREATE (§3.3.5.9 via MS-FSCC).
- LOGOFF and TREE_DISCONNECT close every open; a lost connection detaches durable opens instead,
  so a reconnect can claim them (§3.3.7.1).
- The last close of an open with delete-on-close removes the file and tells directory watchers; an
  earlier close with delete-on-close leaves the delete pending on the opens that remain.
"""

from __future__ import annotations

import errno
import struct

from .. import messages as m
from ..constants import AccessMask, CreateAction, NtStatus, OplockLevel, ShareAccess
from ..vfs import FileMeta, Share
from . import notify, oplocks, write_time
from .locking import release_locks
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
DATA_RIGHTS = READ_RIGHTS | WRITE_RIGHTS | AccessMask.DELETE


def sharing_conflict(a_access: int, a_share: int, b_access: int, b_share: int) -> bool:
    """Two opens' access and share modes collide. An open without data access (attributes only)
    takes no part in sharing (MS-FSA 2.1.5.1.2; smbtorture smb2.oplock.exclusive4, batch8)."""
    if not a_access & DATA_RIGHTS or not b_access & DATA_RIGHTS:
        return False

    def one_way(access: int, share: int) -> bool:
        return bool((access & READ_RIGHTS and not share & ShareAccess.READ)
                    or (access & WRITE_RIGHTS and not share & ShareAccess.WRITE)
                    or (access & AccessMask.DELETE and not share & ShareAccess.DELETE))

    return one_way(a_access, b_share) or one_way(b_access, a_share)


def file_meta(conn, meta: FileMeta) -> FileMeta:
    """A share's metadata with what SET_INFO stored that POSIX cannot keep (creation time, change
    time, DOS attributes); Samba keeps these in an xattr, we keep them for the server's lifetime."""
    override = conn.state.meta_overrides.get((meta.volume_id, meta.file_id))
    if override:
        for name, value in override.items():
            if name == "allocation_size":  # SET_INFO FileAllocationInformation: at least this much
                value = max(value, meta.allocation_size) if not meta.is_dir else 0
            setattr(meta, name, value)
    return meta


def share_of(opened: Open) -> Share:
    """The share an open's path and handle belong to (set when it is created or claimed)."""
    if opened.fs is None:
        raise Fail(NtStatus.FILE_CLOSED, "open not claimed by a session")
    return opened.fs


def stat_open(opened: Open) -> FileMeta:
    """The share's metadata of an open: through its handle when it has one (follows a rename)."""
    fs = share_of(opened)
    return fs.fstat(opened.handle) if opened.handle is not None else fs.stat(opened.path)


def open_handle(fs: Share, path: str, access: int, fallback: bool) -> object:
    """The share's handle for an open granted ``access``: writable when the open may write or delete;
    with ``fallback`` a file the share will not open for writing is opened read-only (the access
    checks of READ/WRITE still apply to the open's granted access)."""
    writable = bool(access & (WRITE_RIGHTS | AccessMask.DELETE))
    try:
        return fs.open(path, writable)
    except OSError:
        if not (fallback and writable):
            raise
        return fs.open(path, False)


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
    return Fail(table.get(exc.errno or 0, NtStatus.ACCESS_DENIED), str(exc))


def open_for(session, tree, request_file_id: bytes, related) -> Open:
    """The open a request names by FileId, in ``session``'s open table (§3.3.5.2.7.2 for the
    related-compound FileId).  An open of the session that was made on another tree connect of it is
    not found either: Samba and Windows answer FILE_CLOSED for a FileId used with the wrong TreeId
    (smbtorture smb2.tcon writes through a second tree connect and expects a failure), although the
    lookup MS-SMB2 3.3.5.13 and its siblings describe keys on the session alone."""
    file_id = related.file_id if request_file_id == ALL_FF else request_file_id
    persistent, volatile = struct.unpack("<QQ", file_id)
    found = session.opens.get(volatile)
    if found is None or found.persistent != persistent:
        raise Fail(NtStatus.FILE_CLOSED, "unknown FileId")
    if found.tree is not tree:
        raise Fail(NtStatus.FILE_CLOSED, "FileId of another tree connect")
    return found


def forget(conn, opened: Open) -> None:
    state = conn.state
    write_time.on_close(state, opened)
    if opened.durable is not None:
        state.durable.remove(opened)
    if opened.session is not None:
        opened.session.opens.pop(opened.volatile, None)
    others = state.opens_by_path.get(opened.path, [])
    if opened in others:
        others.remove(opened)
    if not others:
        state.opens_by_path.pop(opened.path, None)
    oplocks.on_close(state, opened)
    fs = opened.fs
    if opened.handle is not None and fs is not None:
        fs.close(opened.handle)
        opened.handle = None
    release_locks(state, opened)  # its locks go, its blocking locks end (RANGE_NOT_LOCKED)
    notify.close_watch(state, opened)  # its CHANGE_NOTIFY requests end with NOTIFY_CLEANUP
    remaining = list(others)  # opens of any stream of the file
    others = [other for other in others if other.stream_key == opened.stream_key]  # the same stream's
    if opened.deletes_file and not remaining:
        opened.delete_on_close, opened.stream = True, None  # the file's delete waited for this open
    elif opened.deletes_file:
        for other in remaining:
            other.deletes_file = True
    if opened.delete_on_close and opened.stream is None and not others and remaining:
        # The file's own data is closed but streams of it are open: the file is deleted when the last
        # of them closes, and opens until then fail with STATUS_DELETE_PENDING (smb2.streams.delete).
        for other in remaining:
            other.deletes_file = True
        return
    if opened.delete_on_close and opened.stream is not None:
        if not others and fs is not None:
            try:
                fs.remove_stream(opened.path, opened.stream)
            except OSError:
                pass
        for other in others:
            other.delete_on_close = True
        return
    if opened.delete_on_close and others:
        # The delete is pending on the file, not on this open: it happens at the last close, and
        # opens until then fail with STATUS_DELETE_PENDING (MS-FSA 2.1.5.4: delete-on-close at
        # cleanup marks the file DeletePending).  Watchers of a directory hear it now.
        for other in others:
            other.delete_on_close = True
            notify.delete_pending(state, other)
    if opened.delete_on_close and not others and fs is not None:
        try:
            meta = fs.stat(opened.path)
            state.meta_overrides.pop((meta.volume_id, meta.file_id), None)
            if opened.is_dir:
                fs.rmdir(opened.path)
            else:
                fs.remove(opened.path)
        except OSError:
            return  # nothing was removed: nothing to report
        notify.removed(state, fs, opened.path, opened.is_dir)


def close_session_opens(conn, session, keep_durable: bool = False) -> None:
    """LOGOFF closes every open; a lost connection (``keep_durable``) detaches durable ones (§3.3.7.1)."""
    for opened in list(session.opens.values()):
        if keep_durable:
            volatile = opened.volatile
            connection = opened.connection
            waiting = [p for p in (connection.pending.values() if connection else ()) if p.open is opened]
            if conn.state.durable.detach(opened):
                for pending in waiting:  # its requests die with the connection, its locks stay
                    connection.pending.pop(pending.async_id, None)
                    if pending.on_drop is not None:
                        pending.on_drop()
                session.opens.pop(volatile, None)
                continue
        forget(conn, opened)  # waiting requests end (NOTIFY_CLEANUP, RANGE_NOT_LOCKED) if anyone listens


def forget_detached(state, opened: Open) -> None:
    """Release a detached durable open (expired, purged by a conflicting open)."""
    release_locks(state, opened)  # a detached durable open kept its byte-range locks until now
    others = state.opens_by_path.get(opened.path, [])
    if opened in others:
        others.remove(opened)
    if not others:
        state.opens_by_path.pop(opened.path, None)
    oplocks.on_close(state, opened)
    if opened.handle is not None and opened.fs is not None:
        opened.fs.close(opened.handle)
        opened.handle = None


oplocks.set_detached_closer(forget_detached)


def expire_durable(state) -> None:
    state.durable.expire(lambda opened: forget_detached(state, opened))


def restore_open(state, record: dict, info) -> Open:
    """An open loaded from the durable state directory (server restart): detached, no handle yet."""
    opened = Open(record["persistent"], record["persistent"], record["path"], None, record["is_dir"],
                  record["access"], record["share_access"], None, None, None, oplock=record["oplock"],
                  lease_key=bytes.fromhex(record["lease_key"]) or None, lease_state=record["lease_state"],
                  lease_epoch=record["lease_epoch"], durable=info)
    state.opens_by_path.setdefault(opened.path, []).append(opened)
    oplocks.adopt(state, opened, info.client_guid, info.lease_version)
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
    opened.tree = tree  # a replay may come on another tree connect of the same session
    if opened.durable is None:
        raise Fail(NtStatus.OBJECT_NAME_NOT_FOUND, "not a durable open")
    opened.connection = conn
    opened.durable.detached_at = None
    opened.fs = tree.fs
    try:
        if opened.handle is None and not opened.is_dir:
            opened.handle = open_handle(tree.fs, opened.path, opened.access, fallback=False)
        st = stat_open(opened)
    except OSError as exc:
        state.durable.remove(opened)
        forget_detached(state, opened)
        raise Fail(NtStatus.OBJECT_NAME_NOT_FOUND, f"durable open's file is gone: {exc}") from exc
    state.durable.save()
    oplock = OplockLevel.LEASE if opened.lease_key is not None else opened.oplock
    return create_reply(opened, file_meta(conn, st), oplock, action, contexts)


def create_reply(opened: Open, meta: FileMeta, oplock: int, action: int, contexts: list) -> Reply:
    """The CREATE response for an open (§2.2.14): its FileId, what was granted, the file's metadata."""
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
