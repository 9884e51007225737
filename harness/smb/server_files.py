"""The file commands of the server: CREATE, CLOSE, READ, WRITE, FLUSH, LOCK, QUERY_DIRECTORY,
QUERY_INFO, SET_INFO, IOCTL, CHANGE_NOTIFY and the break acknowledgments.

Why apart from :mod:`.server`: the connection module owns the protocol rules (credits, signing,
encryption, sessions); this one maps requests onto a :class:`~.vfs.LocalShare`.  Rules kept here:

- Generic access bits are mapped to file rights at CREATE (MS-SMB2 §3.3.5.9 via MS-FSCC); READ needs
  FILE_READ_DATA, WRITE needs FILE_WRITE_DATA or FILE_APPEND_DATA, else STATUS_ACCESS_DENIED.
- Share modes are checked against the other opens of the same path (STATUS_SHARING_VIOLATION).
- Oplocks are granted at most at level II and leases at most READ caching, so that a break to NONE
  never needs an acknowledgment (§3.3.4.6, §3.3.4.7); a WRITE through another open sends the break.
- CHANGE_NOTIFY goes asynchronous (interim STATUS_PENDING) and completes with
  STATUS_NOTIFY_ENUM_DIR on a change made through this server, STATUS_NOTIFY_CLEANUP on CLOSE and
  STATUS_CANCELLED on CANCEL.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import struct
from dataclasses import dataclass, fields

from . import durable, fscc, rdma_channel, replay
from . import messages as m
from .constants import (
    UNSOLICITED_MESSAGE_ID,
    AccessMask,
    CloseFlags,
    Command,
    CreateAction,
    CreateDisposition,
    CreateOptions,
    Dialect,
    FileAttributes,
    Fsctl,
    HeaderFlags,
    InfoType,
    LeaseState,
    NtStatus,
    OplockLevel,
    QueryDirectoryFlags,
    ShareAccess,
)
from .errors import SMBProtocolError
from .header import Header
from .messages.create_contexts import (
    MXAC,
    QFID,
    RQLS,
    LeaseV1,
    LeaseV2,
    MaximalAccessResponse,
    QueryOnDiskIdResponse,
    find_context,
)
from .server import FULL_ACCESS, Disconnect, Fail, Reply
from .vfs import ShareError, meta_from_stat, short_name

GENERIC_MAP = {
    AccessMask.GENERIC_READ: 0x00120089,
    AccessMask.GENERIC_WRITE: 0x00120116,
    AccessMask.GENERIC_EXECUTE: 0x001200A0,
    AccessMask.GENERIC_ALL: FULL_ACCESS,
    AccessMask.MAXIMUM_ALLOWED: FULL_ACCESS,
}
READ_RIGHTS = AccessMask.FILE_READ_DATA | AccessMask.FILE_EXECUTE
WRITE_RIGHTS = AccessMask.FILE_WRITE_DATA | AccessMask.FILE_APPEND_DATA
ALL_FF = b"\xff" * 16
MAX_FILE_SIZE = 0xFFFFFFF0000
FSCTL_CREATE_OR_GET_OBJECT_ID = 0x000900C0


@dataclass
class Open:
    persistent: int
    volatile: int
    path: str
    fd: int | None
    is_dir: bool
    access: int
    share_access: int
    session: object
    tree: object
    connection: object
    delete_on_close: bool = False
    dir_entries: list | None = None
    dir_pos: int = 0
    dir_pattern: str = "*"
    oplock: int = 0
    lease_key: bytes | None = None
    lease_state: int = 0
    lease_epoch: int = 0
    position: int = 0
    durable: durable.DurableInfo | None = None  # set when the open is durable (harness/smb/durable.py)
    channel_sequence: int = 0  # Open.ChannelSequence (harness/smb/replay.py)

    @property
    def file_id(self) -> bytes:
        return struct.pack("<QQ", self.persistent, self.volatile)


def _meta(conn, st: os.stat_result):
    """Stat in SMB terms, with what SET_INFO stored that POSIX cannot keep (creation time, change
    time, DOS attributes); Samba keeps these in an xattr, we keep them for the server's lifetime."""
    meta = meta_from_stat(st)
    override = conn.state.meta_overrides.get((st.st_dev, st.st_ino))
    if override:
        for name, value in override.items():
            setattr(meta, name, value)
    return meta


def _map_access(desired: int) -> int:
    granted = desired & 0x01FF01FF
    for bit, rights in GENERIC_MAP.items():
        if desired & bit:
            granted |= rights
    return granted


def _os_error(exc: OSError) -> Fail:
    table = {errno.ENOENT: NtStatus.OBJECT_NAME_NOT_FOUND, errno.EEXIST: NtStatus.OBJECT_NAME_COLLISION,
             errno.EACCES: NtStatus.ACCESS_DENIED, errno.EPERM: NtStatus.ACCESS_DENIED,
             errno.ENOTEMPTY: NtStatus.DIRECTORY_NOT_EMPTY, errno.ENOTDIR: NtStatus.OBJECT_PATH_NOT_FOUND,
             errno.EISDIR: NtStatus.FILE_IS_A_DIRECTORY, errno.ENOSPC: NtStatus.DISK_FULL,
             errno.ENAMETOOLONG: NtStatus.OBJECT_NAME_INVALID, errno.EINVAL: NtStatus.INVALID_PARAMETER,
             errno.EFBIG: NtStatus.INVALID_PARAMETER, errno.ELOOP: NtStatus.ACCESS_DENIED}
    return Fail(table.get(exc.errno, NtStatus.ACCESS_DENIED), str(exc))


def dispatch(conn, session, tree, header: Header, request, related, encrypted: bool) -> Reply:
    handler = _HANDLERS.get(header.command)
    if handler is None:
        raise Fail(NtStatus.NOT_SUPPORTED, f"command 0x{header.command:x}")
    replay.check_channel_sequence(conn, session, header, request, related)
    if tree.fs is None and header.command not in (Command.IOCTL, Command.ECHO, Command.CLOSE):
        if header.command == Command.CREATE:
            raise Fail(NtStatus.OBJECT_NAME_NOT_FOUND, "no pipes on IPC$")
        raise Fail(NtStatus.NOT_SUPPORTED, "IPC$ has no files")
    return handler(conn, session, tree, header, request, related, encrypted)


def _open_for(session, request_file_id: bytes, related) -> Open:
    file_id = related.file_id if request_file_id == ALL_FF else request_file_id
    persistent, volatile = struct.unpack("<QQ", file_id)
    found = session.opens.get(volatile)
    if found is None or found.persistent != persistent:
        raise Fail(NtStatus.FILE_CLOSED, "unknown FileId")
    return found


# ---------------------------------------------------------------------------------------------- CREATE


def _sharing_conflict(a_access: int, a_share: int, b_access: int, b_share: int) -> bool:
    def one_way(access: int, share: int) -> bool:
        return bool((access & READ_RIGHTS and not share & ShareAccess.READ)
                    or (access & WRITE_RIGHTS and not share & ShareAccess.WRITE)
                    or (access & AccessMask.DELETE and not share & ShareAccess.DELETE))

    return one_way(a_access, b_share) or one_way(b_access, a_share)


def _create(conn, session, tree, header, request: m.CreateRequest, related, encrypted) -> Reply:
    state = conn.state
    options = request.create_options
    # A durable reconnect skips path validation and open execution (§3.3.5.9.7, .12): it comes first.
    expire_durable(state)
    try:
        intent = durable.parse_request(conn, request)
        if isinstance(intent, tuple):
            found = durable.find_reconnect(conn, session, request, intent[0], intent[1], state.durable)
            return _attach(conn, session, tree, found, durable.reconnect_contexts(found))
    except durable.Reject as exc:
        raise Fail(exc.status, str(exc)) from exc
    except SMBProtocolError as exc:
        raise Fail(NtStatus.INVALID_PARAMETER, str(exc)) from exc
    if options & CreateOptions.DIRECTORY_FILE and options & CreateOptions.NON_DIRECTORY_FILE:
        raise Fail(NtStatus.INVALID_PARAMETER, "both DIRECTORY_FILE and NON_DIRECTORY_FILE")
    if request.create_disposition > CreateDisposition.OVERWRITE_IF:
        raise Fail(NtStatus.INVALID_PARAMETER, "bad CreateDisposition")
    if request.impersonation_level > 3:
        raise Fail(NtStatus.BAD_IMPERSONATION_LEVEL, "bad ImpersonationLevel")
    if request.name.startswith("\\"):
        raise Fail(NtStatus.INVALID_PARAMETER, "CREATE name must be relative to the share")
    try:
        found = durable.find_replay(conn, header, request, intent, state.durable)
        if found is not None:
            return _attach(conn, session, tree, found, _replay_contexts(found), found.durable.create_action)
    except durable.Reject as exc:
        raise Fail(exc.status, str(exc)) from exc
    try:
        path = tree.fs.resolve(request.name)
    except ShareError as exc:
        raise Fail(exc.status, str(exc)) from exc
    granted = _map_access(request.desired_access)
    if not granted and not request.desired_access:
        raise Fail(NtStatus.ACCESS_DENIED, "DesiredAccess 0")
    disposition = request.create_disposition
    exists = os.path.exists(path)
    action = CreateAction.OPENED
    want_dir = bool(options & CreateOptions.DIRECTORY_FILE)
    try:
        if exists:
            st = os.stat(path)
            is_dir = os.path.isdir(path)
            if disposition == CreateDisposition.CREATE:
                raise Fail(NtStatus.OBJECT_NAME_COLLISION, "exists")
            if is_dir and options & CreateOptions.NON_DIRECTORY_FILE:
                raise Fail(NtStatus.FILE_IS_A_DIRECTORY, "is a directory")
            if not is_dir and want_dir:
                raise Fail(NtStatus.NOT_A_DIRECTORY, "not a directory")
            _check_sharing(state, path, granted, request.share_access)
            if disposition in (CreateDisposition.OVERWRITE, CreateDisposition.OVERWRITE_IF,
                               CreateDisposition.SUPERSEDE):
                if is_dir:
                    raise Fail(NtStatus.INVALID_PARAMETER, "cannot overwrite a directory")
                os.truncate(path, 0)
                action = CreateAction.SUPERSEDED if disposition == CreateDisposition.SUPERSEDE else CreateAction.OVERWRITTEN
        else:
            if disposition in (CreateDisposition.OPEN, CreateDisposition.OVERWRITE):
                raise Fail(NtStatus.OBJECT_NAME_NOT_FOUND, "no such file")
            if want_dir:
                if disposition not in (CreateDisposition.CREATE, CreateDisposition.OPEN_IF):
                    raise Fail(NtStatus.INVALID_PARAMETER, "directory with overwrite disposition")
                os.mkdir(path)
            else:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            is_dir = want_dir
            action = CreateAction.CREATED
            _notify_change(conn, os.path.dirname(path))
        if options & CreateOptions.DELETE_ON_CLOSE and not granted & AccessMask.DELETE:
            raise Fail(NtStatus.ACCESS_DENIED, "DELETE_ON_CLOSE without DELETE access")
        fd = None
        if not is_dir:
            flags = os.O_RDWR if granted & (WRITE_RIGHTS | AccessMask.DELETE) else os.O_RDONLY
            try:
                fd = os.open(path, flags)
            except OSError:
                fd = os.open(path, os.O_RDONLY)
        st = os.fstat(fd) if fd is not None else os.stat(path)
    except OSError as exc:
        raise _os_error(exc) from exc
    if action != CreateAction.OPENED and request.file_attributes:
        attributes = request.file_attributes & ~FileAttributes.DIRECTORY & ~FileAttributes.NORMAL
        if is_dir:
            attributes |= FileAttributes.DIRECTORY
        state.meta_overrides[(st.st_dev, st.st_ino)] = {"attributes": int(attributes or FileAttributes.ARCHIVE)}
    else:
        if action != CreateAction.OPENED:
            state.meta_overrides.pop((st.st_dev, st.st_ino), None)
    state.next_file_id += 1
    opened = Open(state.next_file_id, state.next_file_id, path, fd, is_dir, granted, request.share_access,
                  session, tree, conn, delete_on_close=bool(options & CreateOptions.DELETE_ON_CLOSE))
    session.opens[opened.volatile] = opened
    state.opens_by_path.setdefault(path, []).append(opened)
    contexts = []
    if find_context(request.contexts, MXAC):
        contexts.append(MaximalAccessResponse(0, FULL_ACCESS).to_context())
    if find_context(request.contexts, QFID):
        contexts.append(QueryOnDiskIdResponse(st.st_ino, st.st_dev).to_context())
    oplock = OplockLevel.NONE
    lease_request = find_context(request.contexts, RQLS)
    if request.requested_oplock_level == OplockLevel.LEASE and lease_request and conn.dialect >= Dialect.SMB_2_1 \
            and not is_dir:
        lease_cls = LeaseV2 if len(lease_request.data) == 52 else LeaseV1
        try:
            lease = lease_cls.from_context(lease_request)
        except SMBProtocolError as exc:
            raise Fail(NtStatus.INVALID_PARAMETER, str(exc)) from exc
        # HANDLE caching only when durability needs it (a durable open keeps it across a disconnect).
        cacheable = LeaseState.READ_CACHING | (LeaseState.HANDLE_CACHING if intent.version else 0)
        granted_state = lease.lease_state & cacheable
        opened.lease_key, opened.lease_state = lease.lease_key, granted_state
        lease.lease_state, lease.lease_flags, lease.lease_duration = granted_state, 0, 0
        if lease_cls is LeaseV2:
            opened.lease_epoch = lease.epoch + 1
            lease.epoch = opened.lease_epoch
        contexts.append(lease.to_context())
        oplock = OplockLevel.LEASE
    elif request.requested_oplock_level in (OplockLevel.II, OplockLevel.EXCLUSIVE, OplockLevel.BATCH) and not is_dir:
        oplock = OplockLevel.II
        if intent.version and request.requested_oplock_level == OplockLevel.BATCH \
                and len(state.opens_by_path.get(path, [])) == 1:
            oplock = OplockLevel.BATCH  # what a v1 durable open needs (§3.3.5.9.6)
        opened.oplock = oplock
    contexts += durable.grant(conn, session, tree, request, intent, opened, state.durable)
    if opened.durable is not None:
        opened.durable.create_action = int(action)  # a replayed CREATE answers with the original action
    meta = _meta(conn, st)
    response = m.CreateResponse(file_id=opened.file_id, oplock_level=oplock, create_action=action,
                                creation_time=meta.creation_time, last_access_time=meta.last_access_time,
                                last_write_time=meta.last_write_time, change_time=meta.change_time,
                                allocation_size=meta.allocation_size, end_of_file=meta.end_of_file,
                                file_attributes=meta.attributes, contexts=contexts)
    return Reply(NtStatus.SUCCESS, response, file_id=opened.file_id)


def _check_sharing(state, path: str, access: int, share: int) -> None:
    for other in list(state.opens_by_path.get(path, [])):
        if _sharing_conflict(access, share, other.access, other.share_access):
            if other.durable is not None and other.durable.detached_at is not None and not other.durable.persistent:
                # Its BATCH oplock / HANDLE lease would be broken, and nobody is there to acknowledge
                # the break: the detached durable open is closed and this CREATE proceeds.
                state.durable.remove(other)
                _forget_detached(state, other)
                continue
            raise Fail(NtStatus.SHARING_VIOLATION, "share mode conflict")
        if other.delete_on_close:
            raise Fail(NtStatus.DELETE_PENDING, "delete pending")


# ---------------------------------------------------------------------------------------------- CLOSE


def _forget(conn, opened: Open) -> None:
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
        _notify_change(conn, os.path.dirname(opened.path))


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
        _forget(conn, opened)


def _forget_detached(state, opened: Open) -> None:
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
    state.durable.expire(lambda opened: _forget_detached(state, opened))


def restore_open(state, record: dict, info) -> Open:
    """An open loaded from the durable state directory (server restart): detached, no fd yet."""
    opened = Open(record["persistent"], record["persistent"], record["path"], None, record["is_dir"],
                  record["access"], record["share_access"], None, None, None, oplock=record["oplock"],
                  lease_key=bytes.fromhex(record["lease_key"]) or None, lease_state=record["lease_state"],
                  lease_epoch=record["lease_epoch"], durable=info)
    state.opens_by_path.setdefault(opened.path, []).append(opened)
    return opened


def _attach(conn, session, tree, opened: Open, contexts: list, action: int = CreateAction.OPENED) -> Reply:
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
        _forget_detached(state, opened)
        raise Fail(NtStatus.OBJECT_NAME_NOT_FOUND, f"durable open's file is gone: {exc}") from exc
    state.durable.save()
    meta = _meta(conn, st)
    oplock = OplockLevel.LEASE if opened.lease_key is not None else opened.oplock
    response = m.CreateResponse(file_id=opened.file_id, oplock_level=oplock, create_action=action,
                                creation_time=meta.creation_time, last_access_time=meta.last_access_time,
                                last_write_time=meta.last_write_time, change_time=meta.change_time,
                                allocation_size=meta.allocation_size, end_of_file=meta.end_of_file,
                                file_attributes=meta.attributes, contexts=contexts)
    return Reply(NtStatus.SUCCESS, response, file_id=opened.file_id)


def _replay_contexts(opened: Open) -> list:
    """A replayed DH2Q gets the open's own timeout (§3.3.5.9.10) and its lease back."""
    info = opened.durable
    out = durable.reconnect_contexts(opened)
    out.append(durable.DurableHandleResponseV2(timeout=info.timeout_ms,
                                               flags=durable.DHANDLE_FLAG_PERSISTENT if info.persistent else 0)
               .to_context())
    return out


def close_tree_opens(conn, session, tree) -> None:
    for opened in list(session.opens.values()):
        if opened.tree is tree:
            _forget(conn, opened)


def _close(conn, session, tree, header, request: m.CloseRequest, related, encrypted) -> Reply:
    opened = _open_for(session, request.file_id, related)
    response = m.CloseResponse()
    if request.flags & CloseFlags.POSTQUERY_ATTRIB:
        try:
            meta = _meta(conn, os.fstat(opened.fd) if opened.fd is not None else os.stat(opened.path))
            response = m.CloseResponse(flags=CloseFlags.POSTQUERY_ATTRIB, creation_time=meta.creation_time,
                                       last_access_time=meta.last_access_time, last_write_time=meta.last_write_time,
                                       change_time=meta.change_time, allocation_size=meta.allocation_size,
                                       end_of_file=meta.end_of_file, file_attributes=meta.attributes)
        except OSError:
            pass
    _forget(conn, opened)
    return Reply(NtStatus.SUCCESS, response)


# ---------------------------------------------------------------------------------------------- READ / WRITE


def _read(conn, session, tree, header, request: m.ReadRequest, related, encrypted) -> Reply:
    opened = _open_for(session, request.file_id, related)
    if opened.is_dir:
        raise Fail(NtStatus.INVALID_DEVICE_REQUEST, "READ on a directory")
    if not opened.access & READ_RIGHTS:
        raise Fail(NtStatus.ACCESS_DENIED, "no read access")
    if request.length > conn.max_size:
        raise Fail(NtStatus.INVALID_PARAMETER, "READ longer than MaxReadSize")
    descriptors = rdma_channel.read_channel(conn, request)  # None: data inline
    _check_charge(conn, header, request.length)
    if request.offset > 0x7FFFFFFFFFFFFFFF or request.offset + request.length > 0x7FFFFFFFFFFFFFFF:
        raise Fail(NtStatus.INVALID_PARAMETER, "READ beyond the largest file offset")
    try:
        if descriptors is not None:
            data = rdma_channel.pread(conn, opened.fd, request.length, request.offset)
        else:
            data = os.pread(opened.fd, request.length, request.offset)
    except OSError as exc:
        raise _os_error(exc) from exc
    opened.position = request.offset + len(data)
    if (not data and request.length) or len(data) < request.minimum_count:
        raise Fail(NtStatus.END_OF_FILE, "end of file")
    if descriptors is not None:
        return rdma_channel.send_read_data(conn, request, descriptors, data)
    return Reply(NtStatus.SUCCESS, m.ReadResponse(data=data))


def _check_charge(conn, header: Header, length: int) -> None:
    """§3.3.5.2.5: a multi-credit request must be charged ceil(length / 64 KiB) credits."""
    if conn.supports_multicredit and length > 65536:
        needed = (length - 1) // 65536 + 1
        if header.credit_charge < needed:
            raise Fail(NtStatus.INVALID_PARAMETER, f"CreditCharge {header.credit_charge} < {needed}")


def _write(conn, session, tree, header, request: m.WriteRequest, related, encrypted) -> Reply:
    opened = _open_for(session, request.file_id, related)
    if opened.is_dir:
        raise Fail(NtStatus.INVALID_DEVICE_REQUEST, "WRITE on a directory")
    if not opened.access & WRITE_RIGHTS:
        raise Fail(NtStatus.ACCESS_DENIED, "no write access")
    if len(request.data) > conn.max_size:
        raise Fail(NtStatus.INVALID_PARAMETER, "WRITE longer than MaxWriteSize")
    descriptors, rdma_length = rdma_channel.write_channel(conn, request)  # None: data inline
    length = rdma_length if descriptors is not None else len(request.data)
    _check_charge(conn, header, length)
    offset = request.offset
    # Samba's limits (smbtorture smb2.rw.invalid): offsets above INT64_MAX are invalid, and no byte may
    # land at or past MAXFILESIZE (0xfffffff0000); an empty write is a no-op that succeeds.
    if offset > 0x7FFFFFFFFFFFFFFF or (length and offset + length > MAX_FILE_SIZE):
        raise Fail(NtStatus.INVALID_PARAMETER, "WRITE outside the file size limits")
    if not length:
        return Reply(NtStatus.SUCCESS, m.WriteResponse(count=0))
    data = request.data if descriptors is None else rdma_channel.pull_write_data(conn, request, descriptors, length)
    try:
        written = os.pwrite(opened.fd, data, offset)
    except OSError as exc:
        raise _os_error(exc) from exc
    opened.position = offset + written
    _break_others(conn, opened)
    _notify_change(conn, os.path.dirname(opened.path))
    return Reply(NtStatus.SUCCESS, m.WriteResponse(count=written))


def _flush(conn, session, tree, header, request: m.FlushRequest, related, encrypted) -> Reply:
    opened = _open_for(session, request.file_id, related)
    if not opened.is_dir and not opened.access & (WRITE_RIGHTS):
        raise Fail(NtStatus.ACCESS_DENIED, "FLUSH needs write access")
    return Reply(NtStatus.SUCCESS, m.FlushResponse())


def _lock(conn, session, tree, header, request: m.LockRequest, related, encrypted) -> Reply:
    _open_for(session, request.file_id, related)
    if not request.locks:
        raise Fail(NtStatus.INVALID_PARAMETER, "LOCK without elements")
    return Reply(NtStatus.SUCCESS, m.LockResponse())


# ---------------------------------------------------------------------------------------------- breaks


def _break_others(conn, writer: Open) -> None:
    """A write invalidates other clients' read caches: break level II oplocks and READ leases to NONE.
    Neither break needs an acknowledgment (§3.3.4.6, §3.3.4.7), so nothing waits here."""
    for other in list(conn.state.opens_by_path.get(writer.path, [])):
        if other is writer:
            continue
        target = other.connection
        if target is None:  # a detached durable open: nobody to tell; its caches died with the client
            continue
        if other.oplock in (OplockLevel.II, OplockLevel.BATCH):
            other.oplock = OplockLevel.NONE
            header = Header(command=Command.OPLOCK_BREAK, flags=HeaderFlags.SERVER_TO_REDIR,
                            message_id=UNSOLICITED_MESSAGE_ID, session_id=other.session.session_id)
            body = m.OplockBreakNotification(file_id=other.file_id, oplock_level=OplockLevel.NONE)
            encrypt = other.session.encrypt_data or other.tree.encrypt
            target.send_unsolicited(header, body, other.session, encrypt)
        elif other.lease_state and other.lease_key != writer.lease_key:
            # READ caching goes; HANDLE caching (durability) survives a write (§3.3.4.7).
            current, other.lease_state = other.lease_state, other.lease_state & LeaseState.HANDLE_CACHING
            if current == other.lease_state:
                continue
            header = Header(command=Command.OPLOCK_BREAK, flags=HeaderFlags.SERVER_TO_REDIR,
                            message_id=UNSOLICITED_MESSAGE_ID, session_id=0)
            body = m.LeaseBreakNotification(lease_key=other.lease_key, current_lease_state=current,
                                            new_lease_state=other.lease_state, new_epoch=other.lease_epoch)
            target.send_unsolicited(header, body, None, False)


def _notify_change(conn, directory: str) -> None:
    state = conn.state
    for pending in list(state.watchers):
        if pending.open is not None and pending.open.path == directory:
            state.watchers.remove(pending)
            (pending.connection or pending.session.connection).complete_async(pending, NtStatus.NOTIFY_ENUM_DIR, m.ChangeNotifyResponse(b""))


def _change_notify(conn, session, tree, header, request: m.ChangeNotifyRequest, related, encrypted) -> Reply:
    opened = _open_for(session, request.file_id, related)
    if not opened.is_dir:
        raise Fail(NtStatus.INVALID_PARAMETER, "CHANGE_NOTIFY on a file")
    reply = conn.go_async(header, session, tree.tree_id, encrypted, opened)
    conn.state.watchers.append(conn.pending[reply.async_id])
    return reply


def _oplock_break_ack(conn, session, tree, header, request, related, encrypted) -> Reply:
    if isinstance(request, m.LeaseBreakAcknowledgment):
        return Reply(NtStatus.SUCCESS, m.LeaseBreakResponse(lease_key=request.lease_key,
                                                            lease_state=request.lease_state))
    opened = _open_for(session, request.file_id, related)
    opened.oplock = OplockLevel.NONE
    return Reply(NtStatus.SUCCESS, m.OplockBreakResponse(file_id=opened.file_id, oplock_level=0))


# ---------------------------------------------------------------------------------------------- QUERY_DIRECTORY


def _match(pattern: str, name: str) -> bool:
    if pattern in ("*", "", "*.*"):
        return True
    translated = pattern.replace("<", "*").replace(">", "?").replace('"', ".")
    return fnmatch.fnmatchcase(name.lower(), translated.lower())


def _entry(conn, info_class: int, name: str, st: os.stat_result, index: int):
    cls = fscc.DIRECTORY_CLASSES.get(info_class)
    if cls is None:
        raise Fail(NtStatus.INVALID_INFO_CLASS, f"directory class {info_class}")
    meta = _meta(conn, st)
    values = dict(file_name=name, file_index=0, creation_time=meta.creation_time,
                  last_access_time=meta.last_access_time, last_write_time=meta.last_write_time,
                  change_time=meta.change_time, end_of_file=meta.end_of_file, allocation_size=meta.allocation_size,
                  file_attributes=meta.attributes, ea_size=0, short_name=short_name(name), file_id=st.st_ino)
    names = {f.name for f in fields(cls)}
    return cls(**{key: value for key, value in values.items() if key in names})


def _query_directory(conn, session, tree, header, request: m.QueryDirectoryRequest, related, encrypted) -> Reply:
    opened = _open_for(session, request.file_id, related)
    if not opened.is_dir:
        raise Fail(NtStatus.INVALID_PARAMETER, "QUERY_DIRECTORY on a file")
    if request.file_information_class not in fscc.DIRECTORY_CLASSES:
        raise Fail(NtStatus.INVALID_INFO_CLASS, "directory class")
    if request.output_buffer_length > conn.max_size:
        raise Fail(NtStatus.INVALID_PARAMETER, "OutputBufferLength > MaxTransactSize")
    restart = request.flags & (QueryDirectoryFlags.RESTART_SCANS | QueryDirectoryFlags.REOPEN)
    first = opened.dir_entries is None or restart
    if first:
        pattern = request.file_name or "*"
        opened.dir_pattern = pattern
        try:
            names = [".", ".."] + sorted(os.listdir(opened.path))
        except OSError as exc:
            raise _os_error(exc) from exc
        opened.dir_entries = [n for n in names if _match(pattern, n)]
        opened.dir_pos = 0
    entries = []
    size = 0
    limit = request.output_buffer_length
    while opened.dir_pos < len(opened.dir_entries):
        name = opened.dir_entries[opened.dir_pos]
        full = opened.path if name == "." else (
            os.path.dirname(opened.path) if name == ".." and opened.path != tree.fs.root else
            (tree.fs.root if name == ".." else os.path.join(opened.path, name)))
        try:
            st = os.stat(full)
            tree.fs.check_inside(os.path.realpath(full))
        except (OSError, ShareError):
            opened.dir_pos += 1
            continue
        entry = _entry(conn, request.file_information_class, name, st, opened.dir_pos)
        packed = len(entry.pack_entry(0))
        aligned = size + (-size % 8)
        if aligned + packed > limit:
            if not entries:
                raise Fail(NtStatus.INFO_LENGTH_MISMATCH if first else NtStatus.BUFFER_OVERFLOW, "buffer too small")
            break
        entries.append(entry)
        size = aligned + packed
        opened.dir_pos += 1
        if request.flags & QueryDirectoryFlags.RETURN_SINGLE_ENTRY:
            break
    if not entries:
        raise Fail(NtStatus.NO_SUCH_FILE if first else NtStatus.NO_MORE_FILES, "no more entries")
    return Reply(NtStatus.SUCCESS, m.QueryDirectoryResponse(fscc.pack_directory_entries(entries)))


# ---------------------------------------------------------------------------------------------- QUERY_INFO / SET_INFO


def _security_descriptor() -> bytes:
    """A self-relative descriptor: owner and group S-1-1-0 (Everyone), DACL granting Everyone all."""
    everyone = bytes([1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0])
    ace = struct.pack("<BBHI", 0, 0, 8 + len(everyone), FULL_ACCESS) + everyone
    acl = struct.pack("<BBHHH", 2, 0, 8 + len(ace), 1, 0) + ace
    owner_at = 20
    group_at = owner_at + len(everyone)
    dacl_at = group_at + len(everyone)
    header = struct.pack("<BBHIIII", 1, 0, 0x8004, owner_at, group_at, 0, dacl_at)
    return header + everyone + everyone + acl


def _file_info(conn, tree, opened: Open, info_class: int) -> tuple[bytes, bool]:
    """(packed info, variable-length?)"""
    st = os.fstat(opened.fd) if opened.fd is not None else os.stat(opened.path)
    meta = _meta(conn, st)
    basic = fscc.FileBasicInformation(meta.creation_time, meta.last_access_time, meta.last_write_time,
                                      meta.change_time, meta.attributes)
    standard = fscc.FileStandardInformation(meta.allocation_size, meta.end_of_file, meta.nlink,
                                            int(opened.delete_on_close), int(meta.is_dir))
    name = "\\" + tree.fs.relative(opened.path)
    if info_class == 4:
        return basic.pack(), False
    if info_class == 5:
        return standard.pack(), False
    if info_class == 6:
        return fscc.FileInternalInformation(st.st_ino).pack(), False
    if info_class == 7:
        return fscc.FileEaInformation(0).pack(), False
    if info_class == 8:
        return fscc.FileAccessInformation(opened.access).pack(), False
    if info_class == 9:
        return fscc.FileNameInformation(name).pack(), True
    if info_class == 21:  # FileAlternateNameInformation: the same 8.3 alias QUERY_DIRECTORY reports
        return fscc.FileNameInformation(short_name(os.path.basename(opened.path))).pack(), True
    if info_class == 48:  # FileNormalizedNameInformation: share-relative, no leading separator
        return fscc.FileNameInformation(tree.fs.relative(opened.path)).pack(), True
    if info_class == 14:
        return fscc.FilePositionInformation(opened.position).pack(), False
    if info_class == 16:
        return fscc.FileModeInformation(0).pack(), False
    if info_class == 17:
        return fscc.FileAlignmentInformation(0).pack(), False
    if info_class == 18:
        return fscc.FileAllInformation(basic, standard, fscc.FileInternalInformation(st.st_ino),
                                       fscc.FileEaInformation(0), fscc.FileAccessInformation(opened.access),
                                       fscc.FilePositionInformation(opened.position), fscc.FileModeInformation(0),
                                       fscc.FileAlignmentInformation(0), fscc.FileNameInformation(name)).pack(), True
    if info_class == 22:
        if meta.is_dir:
            return b"", True
        stream = "::$DATA".encode("utf-16-le")
        return struct.pack("<IIQQ", 0, len(stream), meta.end_of_file, meta.allocation_size) + stream, True
    if info_class == 34:
        return fscc.FileNetworkOpenInformation(meta.creation_time, meta.last_access_time, meta.last_write_time,
                                               meta.change_time, meta.allocation_size, meta.end_of_file,
                                               meta.attributes).pack(), False
    if info_class == 35:
        return fscc.FileAttributeTagInformation(meta.attributes, 0).pack(), False
    if info_class == 28:  # FileCompressionInformation: size, format, shifts, reserved
        return struct.pack("<QHBBB3x", meta.end_of_file, 0, 0, 0, 0), False
    raise Fail(NtStatus.INVALID_INFO_CLASS if info_class in (1, 2, 3, 12, 37, 38) or info_class > 75
               else NtStatus.NOT_SUPPORTED, f"file info class {info_class}")


def _fs_info(tree, info_class: int) -> tuple[bytes, bool]:
    vfs = tree.fs.statvfs()
    if info_class == 1:
        return fscc.FileFsVolumeInformation(0, 0x57495245, 0, "wirecheck").pack(), True
    if info_class == 3:
        return fscc.FileFsSizeInformation(vfs.f_blocks, vfs.f_bavail, 1, vfs.f_frsize).pack(), False
    if info_class == 7:
        return fscc.FileFsFullSizeInformation(vfs.f_blocks, vfs.f_bavail, vfs.f_bfree, 1, vfs.f_frsize).pack(), False
    if info_class == 5:
        return fscc.FileFsAttributeInformation(0x0000000F, 255, "NTFS").pack(), True
    if info_class == 4:
        return fscc.FileFsDeviceInformation(7, 0x20).pack(), False
    if info_class == 11:  # FileFsSectorSizeInformation (MS-FSCC §2.5.8)
        return struct.pack("<IIIIIIII", 512, 512, 512, 512, 0x0000000B, 0, 0, 0)[:28], False
    if info_class == 6:  # FileFsControlInformation
        return struct.pack("<QQQQQI4x", 0, 0, 0, 0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF, 0), False
    if info_class == 8:  # FileFsObjectIdInformation
        return bytes(64), False
    raise Fail(NtStatus.INVALID_INFO_CLASS, f"fs info class {info_class}")


def _query_info(conn, session, tree, header, request: m.QueryInfoRequest, related, encrypted) -> Reply:
    opened = _open_for(session, request.file_id, related)
    if request.output_buffer_length > conn.max_size:
        raise Fail(NtStatus.INVALID_PARAMETER, "OutputBufferLength > MaxTransactSize")
    if (request.info_type == InfoType.FILE and request.file_info_class in (4, 18, 34, 35)
            and not opened.access & AccessMask.FILE_READ_ATTRIBUTES):
        raise Fail(NtStatus.ACCESS_DENIED, "needs FILE_READ_ATTRIBUTES")
    try:
        if request.info_type == InfoType.FILE:
            data, variable = _file_info(conn, tree, opened, request.file_info_class)
        elif request.info_type == InfoType.FILESYSTEM:
            data, variable = _fs_info(tree, request.file_info_class)
        elif request.info_type == InfoType.SECURITY:
            data = _security_descriptor()
            if len(data) > request.output_buffer_length:
                return Reply(NtStatus.BUFFER_TOO_SMALL, m.ErrorResponse(struct.pack("<I", len(data))))
            return Reply(NtStatus.SUCCESS, m.QueryInfoResponse(data))
        elif request.info_type == InfoType.QUOTA:
            raise Fail(NtStatus.NOT_SUPPORTED, "quotas")
        else:
            raise Fail(NtStatus.INVALID_PARAMETER, "InfoType")
    except OSError as exc:
        raise _os_error(exc) from exc
    minimum = _MIN_SIZES.get((request.info_type, request.file_info_class), 0 if variable else len(data))
    if request.output_buffer_length < minimum:
        raise Fail(NtStatus.INFO_LENGTH_MISMATCH, "buffer smaller than the fixed part")
    if len(data) > request.output_buffer_length:
        return Reply(NtStatus.BUFFER_OVERFLOW, m.QueryInfoResponse(data[: request.output_buffer_length]))
    return Reply(NtStatus.SUCCESS, m.QueryInfoResponse(data))


# Fixed parts of the variable-length classes: a buffer smaller than these is INFO_LENGTH_MISMATCH,
# a larger one that still cannot hold the name gets BUFFER_OVERFLOW and truncated data (MS-FSCC §2.4).
# The sizes are Windows' (as smbtorture smb2.getinfo.q*_buffercheck expects them), a little above
# the structures' fixed parts.
_MIN_SIZES = {(InfoType.FILE, 9): 8, (InfoType.FILE, 18): 104, (InfoType.FILE, 21): 8, (InfoType.FILE, 22): 32,
              (InfoType.FILE, 48): 8, (InfoType.FILESYSTEM, 1): 24, (InfoType.FILESYSTEM, 5): 16}


def _set_info(conn, session, tree, header, request: m.SetInfoRequest, related, encrypted) -> Reply:
    opened = _open_for(session, request.file_id, related)
    if request.info_type == InfoType.SECURITY:
        return Reply(NtStatus.SUCCESS, m.SetInfoResponse())
    if request.info_type != InfoType.FILE:
        raise Fail(NtStatus.NOT_SUPPORTED if request.info_type == InfoType.FILESYSTEM else NtStatus.INVALID_PARAMETER,
                   "SET_INFO type")
    cls = request.file_info_class
    buf = request.buffer
    try:
        if cls == 4:
            basic = _unpack(fscc.FileBasicInformation, buf)
            st = os.stat(opened.path)
            atime = _ns(basic.last_access_time, st.st_atime_ns)
            mtime = _ns(basic.last_write_time, st.st_mtime_ns)
            if (atime, mtime) != (st.st_atime_ns, st.st_mtime_ns):
                os.utime(opened.path, ns=(atime, mtime))
            override = conn.state.meta_overrides.setdefault((st.st_dev, st.st_ino), {})
            if basic.creation_time not in (0, 0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFE):
                override["creation_time"] = basic.creation_time
            if basic.change_time not in (0, 0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFE):
                override["change_time"] = basic.change_time
            if basic.file_attributes:
                attributes = basic.file_attributes & ~FileAttributes.DIRECTORY & ~FileAttributes.NORMAL
                if opened.is_dir:
                    attributes |= FileAttributes.DIRECTORY
                override["attributes"] = int(attributes or FileAttributes.ARCHIVE)
        elif cls == 20:
            if opened.is_dir or not opened.access & WRITE_RIGHTS:
                raise Fail(NtStatus.ACCESS_DENIED if not opened.is_dir else NtStatus.INVALID_PARAMETER, "EOF")
            os.ftruncate(opened.fd, _unpack(fscc.FileEndOfFileInformation, buf).end_of_file)
        elif cls == 19:
            _need(buf, 8)
        elif cls in (13, 64):
            _need(buf, 1 if cls == 13 else 4)
            delete = bool(buf[0] & 1)
            if delete and not opened.access & AccessMask.DELETE:
                raise Fail(NtStatus.ACCESS_DENIED, "no DELETE access")
            if delete and opened.is_dir and os.listdir(opened.path):
                raise Fail(NtStatus.DIRECTORY_NOT_EMPTY, "directory not empty")
            if delete and opened.path == tree.fs.root:
                raise Fail(NtStatus.CANNOT_DELETE, "share root")
            opened.delete_on_close = delete
        elif cls == 10:
            _rename(conn, tree, opened, buf)
        elif cls == 14:
            opened.position = _unpack(fscc.FilePositionInformation, buf).current_byte_offset
        elif cls == 16:
            _need(buf, 4)
        else:
            raise Fail(NtStatus.INVALID_INFO_CLASS, f"SET_INFO class {cls}")
    except OSError as exc:
        raise _os_error(exc) from exc
    return Reply(NtStatus.SUCCESS, m.SetInfoResponse())


def _need(buf: bytes, size: int) -> None:
    if len(buf) < size:
        raise Fail(NtStatus.INFO_LENGTH_MISMATCH, "SET_INFO buffer too small")


def _unpack(cls, buf: bytes):
    try:
        return cls.unpack(buf)
    except SMBProtocolError as exc:
        raise Fail(NtStatus.INFO_LENGTH_MISMATCH, str(exc)) from exc


def _ns(filetime: int, current: int) -> int:
    if filetime in (0, 0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFE):
        return current
    return fscc.filetime_to_unix_ns(filetime)


def _rename(conn, tree, opened: Open, buf: bytes) -> None:
    info = _unpack(fscc.FileRenameInformation, buf)
    if not opened.access & AccessMask.DELETE:
        raise Fail(NtStatus.ACCESS_DENIED, "rename needs DELETE access")
    try:
        target = tree.fs.resolve(info.file_name.lstrip("\\"))
    except ShareError as exc:
        raise Fail(exc.status, str(exc)) from exc
    if os.path.exists(target) and os.path.realpath(target) != os.path.realpath(opened.path):
        if not info.replace_if_exists:
            raise Fail(NtStatus.OBJECT_NAME_COLLISION, "rename target exists")
        if os.path.isdir(target):
            raise Fail(NtStatus.ACCESS_DENIED, "cannot replace a directory")
    old = opened.path
    os.rename(old, target)
    state = conn.state
    for other in state.opens_by_path.pop(old, []):
        other.path = target
        state.opens_by_path.setdefault(target, []).append(other)
    _notify_change(conn, os.path.dirname(old))
    _notify_change(conn, os.path.dirname(target))


# ---------------------------------------------------------------------------------------------- IOCTL


def _ioctl(conn, session, tree, header, request: m.IoctlRequest, related, encrypted) -> Reply:
    code = request.ctl_code
    if code == Fsctl.VALIDATE_NEGOTIATE_INFO:
        return _validate_negotiate(conn, request)
    if code == Fsctl.QUERY_NETWORK_INTERFACE_INFO:
        entries = conn.config.interfaces or [m.NetworkInterfaceInfo(1, 0, 1_000_000_000, "127.0.0.1")]
        output = m.NetworkInterfaceInfo.pack_list(entries)
        if len(output) > request.max_output_response:
            raise Fail(NtStatus.BUFFER_TOO_SMALL, "output buffer too small")
        return Reply(NtStatus.SUCCESS, m.IoctlResponse(code, ALL_FF, output, b"", 0))
    if code == FSCTL_CREATE_OR_GET_OBJECT_ID and tree.fs is not None:
        # FILE_OBJECTID_BUFFER (MS-FSCC 2.3.7, 2.1.3.1): ObjectId from the inode, the rest zero.
        # smbtorture smb2.replay uses it as its IOCTL for channel-sequence checks.
        opened = _open_for(session, request.file_id, related)
        st = os.fstat(opened.fd) if opened.fd is not None else os.stat(opened.path)
        output = struct.pack("<QQ", st.st_ino, st.st_dev) + bytes(48)
        if request.max_output_response < len(output):
            raise Fail(NtStatus.BUFFER_TOO_SMALL, "output buffer too small")
        return Reply(NtStatus.SUCCESS, m.IoctlResponse(code, opened.file_id, output, b"", 0))
    if code == Fsctl.SRV_REQUEST_RESUME_KEY and tree.fs is not None:
        opened = _open_for(session, request.file_id, related)
        output = opened.file_id + opened.file_id[:8] + struct.pack("<I", 0) + bytes(4)
        return Reply(NtStatus.SUCCESS, m.IoctlResponse(code, opened.file_id, output[:32], b"", 0))
    if code == FSCTL_GET_COMPRESSION and tree.fs is not None:
        _open_for(session, request.file_id, related)
        return Reply(NtStatus.SUCCESS, m.IoctlResponse(code, request.file_id, struct.pack("<H", 0), b"", 0))
    if code == FSCTL_SET_COMPRESSION and tree.fs is not None:
        _open_for(session, request.file_id, related)
        if len(request.input) < 2:
            raise Fail(NtStatus.INVALID_PARAMETER, "SET_COMPRESSION input")
        if struct.unpack_from("<H", request.input)[0] != 0:  # only COMPRESSION_FORMAT_NONE
            raise Fail(NtStatus.NOT_SUPPORTED, "no compression on this file system")
        return Reply(NtStatus.SUCCESS, m.IoctlResponse(code, request.file_id, b"", b"", 0))
    if code == Fsctl.FILE_LEVEL_TRIM and tree.fs is not None:
        _open_for(session, request.file_id, related)  # a hint; nothing to trim on a plain file system
        if len(request.input) < 8:
            raise Fail(NtStatus.INVALID_PARAMETER, "FILE_LEVEL_TRIM input")
        ranges = struct.unpack_from("<I", request.input, 4)[0]
        return Reply(NtStatus.SUCCESS, m.IoctlResponse(code, request.file_id, struct.pack("<I", ranges), b"", 0))
    if code in (Fsctl.SRV_COPYCHUNK, Fsctl.SRV_COPYCHUNK_WRITE) and tree.fs is not None:
        return _copychunk(conn, session, request, related)
    if code == Fsctl.PIPE_TRANSCEIVE or code == Fsctl.DFS_GET_REFERRALS or code == Fsctl.DFS_GET_REFERRALS_EX:
        raise Fail(NtStatus.NOT_FOUND if code != Fsctl.PIPE_TRANSCEIVE else NtStatus.NOT_SUPPORTED, "unsupported")
    raise Fail(NtStatus.INVALID_DEVICE_REQUEST, f"FSCTL 0x{code:08x}")


FSCTL_GET_COMPRESSION = 0x0009003C
FSCTL_SET_COMPRESSION = 0x0009C040
COPYCHUNK_MAX_CHUNKS = 256
COPYCHUNK_MAX_CHUNK = 1024 * 1024
COPYCHUNK_MAX_TOTAL = 16 * 1024 * 1024
INVALID_VIEW_SIZE = 0xC000001F


def _copychunk(conn, session, request: m.IoctlRequest, related) -> Reply:
    """FSCTL_SRV_COPYCHUNK(_WRITE) (§3.3.5.15.6): server-side copy between two opens of the session.
    Limit violations answer INVALID_PARAMETER *with* an IOCTL response carrying the limits."""
    target = _open_for(session, request.file_id, related)
    if request.max_output_response < 12:
        raise Fail(NtStatus.INVALID_PARAMETER, "MaxOutputResponse < 12")
    data = request.input
    if len(data) < 32:
        raise Fail(NtStatus.INVALID_PARAMETER, "short SRV_COPYCHUNK_COPY")
    key = data[:24]
    (count,) = struct.unpack_from("<I", data, 24)
    if len(data) < 32 + 24 * count:
        raise Fail(NtStatus.INVALID_PARAMETER, "chunk array truncated")
    chunks = [struct.unpack_from("<QQI", data, 32 + 24 * i) for i in range(count)]
    total = sum(length for _, _, length in chunks)
    if (count > COPYCHUNK_MAX_CHUNKS or any(length > COPYCHUNK_MAX_CHUNK or length == 0 for _, _, length in chunks)
            or total > COPYCHUNK_MAX_TOTAL):
        limits = struct.pack("<III", COPYCHUNK_MAX_CHUNKS, COPYCHUNK_MAX_CHUNK, COPYCHUNK_MAX_TOTAL)
        return Reply(NtStatus.INVALID_PARAMETER, m.IoctlResponse(request.ctl_code, target.file_id, limits, b"", 0))
    source = next((o for o in session.opens.values() if o.file_id == key[:16]), None)
    if source is None:
        raise Fail(NtStatus.OBJECT_NAME_NOT_FOUND, "unknown resume key")
    if source.is_dir or target.is_dir:
        raise Fail(NtStatus.INVALID_PARAMETER, "copychunk on a directory")
    if not source.access & AccessMask.FILE_READ_DATA:
        raise Fail(NtStatus.ACCESS_DENIED, "source not readable")
    if not target.access & WRITE_RIGHTS or (request.ctl_code == Fsctl.SRV_COPYCHUNK
                                            and not target.access & AccessMask.FILE_READ_DATA):
        raise Fail(NtStatus.ACCESS_DENIED, "target access")
    size = os.fstat(source.fd).st_size
    written = bytes_written = 0
    for source_offset, target_offset, length in chunks:
        if source_offset + length > size:
            raise Fail(INVALID_VIEW_SIZE, "chunk beyond the source's end")
        block = os.pread(source.fd, length, source_offset)
        os.pwrite(target.fd, block, target_offset)
        written += 1
        bytes_written += len(block)
    if chunks:
        _break_others(conn, target)
    output = struct.pack("<III", written, 0, bytes_written)
    return Reply(NtStatus.SUCCESS, m.IoctlResponse(request.ctl_code, target.file_id, output, b"", 0))


def _validate_negotiate(conn, request: m.IoctlRequest) -> Reply:
    """§3.3.5.15.12: any mismatch with what NEGOTIATE saw means a downgrade attack: disconnect."""
    if request.file_id != ALL_FF or request.flags != 1:
        raise Fail(NtStatus.INVALID_PARAMETER, "VALIDATE_NEGOTIATE_INFO needs FileId -1 and FSCTL")
    try:
        info = m.ValidateNegotiateInfoRequest.unpack(request.input)
    except SMBProtocolError as exc:
        raise Disconnect(str(exc)) from exc
    if request.max_output_response < 24:
        raise Fail(NtStatus.INVALID_PARAMETER, "MaxOutputResponse < 24")
    if (info.capabilities != conn.client_capabilities or info.guid != conn.client_guid
            or info.security_mode != conn.client_security_mode or sorted(info.dialects) != sorted(conn.client_dialects)):
        raise Disconnect("VALIDATE_NEGOTIATE_INFO mismatch")
    output = m.ValidateNegotiateInfoResponse(conn.server_capabilities, conn.config.server_guid,
                                             conn.server_security_mode, conn.dialect).pack()
    return Reply(NtStatus.SUCCESS, m.IoctlResponse(Fsctl.VALIDATE_NEGOTIATE_INFO, ALL_FF, output, b"", 0))


_HANDLERS = {
    Command.CREATE: _create,
    Command.CLOSE: _close,
    Command.READ: _read,
    Command.WRITE: _write,
    Command.FLUSH: _flush,
    Command.LOCK: _lock,
    Command.QUERY_DIRECTORY: _query_directory,
    Command.QUERY_INFO: _query_info,
    Command.SET_INFO: _set_info,
    Command.IOCTL: _ioctl,
    Command.CHANGE_NOTIFY: _change_notify,
    Command.OPLOCK_BREAK: _oplock_break_ack,
}

__all__ = ["Open", "close_session_opens", "close_tree_opens", "dispatch", "FileAttributes"]
