"""CREATE and CLOSE (MS-SMB2 §3.3.5.9, §3.3.5.10): opening a name of the share, with the rules
that decide whether it may be opened.

Rules kept here, in the order a CREATE meets them:

- A durable reconnect (DHnC/DH2C) or a replayed DH2Q CREATE skips path validation and answers with
  the open it names (§3.3.5.9.7, .12; :mod:`harness.smb.durable`).
- Names are relative to the share and may not leave it (:mod:`harness.smb.vfs`); DIRECTORY_FILE
  with NON_DIRECTORY_FILE, a bad disposition or impersonation level are STATUS_INVALID_PARAMETER.
- Share modes are checked against the other opens of the same name (STATUS_SHARING_VIOLATION); a
  detached durable open in the way is closed, since nobody could acknowledge its break.
- Oplocks are granted at most at level II (BATCH for a v1 durable open) and leases at most READ
  (plus HANDLE for durability), so that a break never needs an acknowledgment (§3.3.4.6, §3.3.4.7).
"""

from __future__ import annotations

from .. import durable
from .. import messages as m
from ..constants import (
    AccessMask,
    CloseFlags,
    Command,
    CreateAction,
    CreateDisposition,
    CreateOptions,
    Dialect,
    FileAttributes,
    LeaseState,
    NtStatus,
    OplockLevel,
    ShareAccess,
)
from ..errors import SMBProtocolError
from ..messages.create_contexts import (
    MXAC,
    QFID,
    RQLS,
    LeaseV1,
    LeaseV2,
    MaximalAccessResponse,
    QueryOnDiskIdResponse,
    find_context,
)
from ..vfs import ShareError
from . import notify
from .model import FULL_ACCESS, Fail, Handler, Open, Reply
from .opens import (
    READ_RIGHTS,
    WRITE_RIGHTS,
    attach,
    create_reply,
    expire_durable,
    file_meta,
    forget,
    forget_detached,
    map_access,
    open_for,
    open_handle,
    os_error,
    stat_open,
)


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
            return attach(conn, session, tree, found, durable.reconnect_contexts(found))
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
            return attach(conn, session, tree, found, replay_contexts(found), found.durable.create_action)
    except durable.Reject as exc:
        raise Fail(exc.status, str(exc)) from exc
    try:
        path = tree.fs.resolve(request.name)
    except ShareError as exc:
        raise Fail(exc.status, str(exc)) from exc
    granted = map_access(request.desired_access)
    if not granted and not request.desired_access:
        raise Fail(NtStatus.ACCESS_DENIED, "DesiredAccess 0")
    fs = tree.fs
    disposition = request.create_disposition
    exists = fs.exists(path)
    action = CreateAction.OPENED
    want_dir = bool(options & CreateOptions.DIRECTORY_FILE)
    try:
        if exists:
            is_dir = fs.is_dir(path)
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
                fs.truncate(path, 0)
                action = CreateAction.SUPERSEDED if disposition == CreateDisposition.SUPERSEDE else CreateAction.OVERWRITTEN
        else:
            if disposition in (CreateDisposition.OPEN, CreateDisposition.OVERWRITE):
                raise Fail(NtStatus.OBJECT_NAME_NOT_FOUND, "no such file")
            if want_dir:
                if disposition not in (CreateDisposition.CREATE, CreateDisposition.OPEN_IF):
                    raise Fail(NtStatus.INVALID_PARAMETER, "directory with overwrite disposition")
                fs.mkdir(path)
            else:
                fs.create(path)
            is_dir = want_dir
            action = CreateAction.CREATED
            notify.added(state, fs, path, is_dir)
        if options & CreateOptions.DELETE_ON_CLOSE and not granted & AccessMask.DELETE:
            raise Fail(NtStatus.ACCESS_DENIED, "DELETE_ON_CLOSE without DELETE access")
        handle = None if is_dir else open_handle(fs, path, granted, fallback=True)
        st = fs.fstat(handle) if handle is not None else fs.stat(path)
    except OSError as exc:
        raise os_error(exc) from exc
    if action != CreateAction.OPENED and request.file_attributes:
        attributes = request.file_attributes & ~FileAttributes.DIRECTORY & ~FileAttributes.NORMAL
        if is_dir:
            attributes |= FileAttributes.DIRECTORY
        state.meta_overrides[(st.volume_id, st.file_id)] = {"attributes": int(attributes or FileAttributes.ARCHIVE)}
    else:
        if action != CreateAction.OPENED:
            state.meta_overrides.pop((st.volume_id, st.file_id), None)
    state.next_file_id += 1
    opened = Open(state.next_file_id, state.next_file_id, path, handle, is_dir, granted, request.share_access,
                  session, tree, conn, delete_on_close=bool(options & CreateOptions.DELETE_ON_CLOSE), fs=fs)
    session.opens[opened.volatile] = opened
    state.opens_by_path.setdefault(path, []).append(opened)
    contexts = []
    if find_context(request.contexts, MXAC):
        contexts.append(MaximalAccessResponse(0, FULL_ACCESS).to_context())
    if find_context(request.contexts, QFID):
        contexts.append(QueryOnDiskIdResponse(st.file_id, st.volume_id).to_context())
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
    return create_reply(opened, file_meta(conn, st), oplock, action, contexts)


def _check_sharing(state, path: str, access: int, share: int) -> None:
    for other in list(state.opens_by_path.get(path, [])):
        if _sharing_conflict(access, share, other.access, other.share_access):
            if other.durable is not None and other.durable.detached_at is not None and not other.durable.persistent:
                # Its BATCH oplock / HANDLE lease would be broken, and nobody is there to acknowledge
                # the break: the detached durable open is closed and this CREATE proceeds.
                state.durable.remove(other)
                forget_detached(state, other)
                continue
            raise Fail(NtStatus.SHARING_VIOLATION, "share mode conflict")
        if other.delete_on_close:
            raise Fail(NtStatus.DELETE_PENDING, "delete pending")


def replay_contexts(opened: Open) -> list:
    """A replayed DH2Q gets the open's own timeout (§3.3.5.9.10) and its lease back."""
    info = opened.durable
    if info is None:
        raise Fail(NtStatus.OBJECT_NAME_NOT_FOUND, "not a durable open")
    out = durable.reconnect_contexts(opened)
    out.append(durable.DurableHandleResponseV2(timeout=info.timeout_ms,
                                               flags=durable.DHANDLE_FLAG_PERSISTENT if info.persistent else 0)
               .to_context())
    return out


def _close(conn, session, tree, header, request: m.CloseRequest, related, encrypted) -> Reply:
    opened = open_for(session, request.file_id, related)
    response = m.CloseResponse()
    if request.flags & CloseFlags.POSTQUERY_ATTRIB:
        try:
            meta = file_meta(conn, stat_open(opened))
            response = m.CloseResponse(flags=CloseFlags.POSTQUERY_ATTRIB, creation_time=meta.creation_time,
                                       last_access_time=meta.last_access_time, last_write_time=meta.last_write_time,
                                       change_time=meta.change_time, allocation_size=meta.allocation_size,
                                       end_of_file=meta.end_of_file, file_attributes=meta.attributes)
        except OSError:
            pass
    forget(conn, opened)
    return Reply(NtStatus.SUCCESS, response)


HANDLERS: dict[int, Handler] = {
    Command.CREATE: _create,
    Command.CLOSE: _close,
}
