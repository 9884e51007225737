"""CREATE and CLOSE (MS-SMB2 §3.3.5.9, §3.3.5.10): opening a name of the share, with the rules
that decide whether it may be opened.

Rules kept here, in the order a CREATE meets them:

- A durable reconnect (DHnC/DH2C) or a replayed DH2Q CREATE skips path validation and answers with
  the open it names (§3.3.5.9.7, .12; :mod:`harness.smb.durable`).
- Names are relative to the share and may not leave it (:mod:`harness.smb.vfs`); DIRECTORY_FILE
  with NON_DIRECTORY_FILE, a bad disposition or impersonation level are STATUS_INVALID_PARAMETER.
- A name with a stream part (``file:stream:$DATA``) is a stream's CREATE (:mod:`.streams`).
- An existing file is opened with the access its security descriptor grants (MAXIMUM_ALLOWED: all
  of it; :mod:`.file_security`); overwriting needs FILE_WRITE_DATA too, and a READONLY, HIDDEN or
  SYSTEM file may not be overwritten without asking for the same attributes (MS-FSA 2.1.5.1.2.2).
  A new file needs FILE_ADD_FILE / FILE_ADD_SUBDIRECTORY on its parent and gets the descriptor it
  inherits (or the SD create context's), the EAs of the EA create context, and its attributes with
  ARCHIVE.
- Share modes are checked against the other opens of the same name (STATUS_SHARING_VIOLATION); a
  detached durable open in the way is closed, since nobody could acknowledge its break.
- Before an existing file is opened, the caching of other opens is broken as the caching table
  says (:mod:`.oplocks`); while a break waits for its acknowledgment the CREATE is asynchronous and
  runs again from the start afterwards. Oplocks and leases are then granted by the same table.
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
    HeaderFlags,
    NtStatus,
    OplockLevel,
)
from ..errors import SMBProtocolError
from ..fscc_lists import split_stream
from ..messages.create_contexts import (
    ALSI,
    APP_INSTANCE_ID,
    MXAC,
    QFID,
    RQLS,
    TWRP,
    AppInstanceId,
    LeaseV1,
    LeaseV2,
    MaximalAccessResponse,
    QueryOnDiskIdResponse,
    find_context,
)
from ..vfs import ShareError
from . import file_security as fsec
from . import notify, oplocks, streams, write_time
from .model import Fail, Handler, Open, Pending, Reply
from .opens import (
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
    sharing_conflict,
    stat_open,
)

# A stat open for oplocks; for leases READ_CONTROL is one too (smbtorture smb2.oplock.statopen1 and
# smb2.lease.statopen4 disagree on READ_CONTROL exactly so).
STAT_RIGHTS = AccessMask.FILE_READ_ATTRIBUTES | AccessMask.FILE_WRITE_ATTRIBUTES | AccessMask.SYNCHRONIZE


def _create(conn, session, tree, header, request: m.CreateRequest, related, encrypted,
            waiting: Pending | None = None) -> Reply:
    """``waiting``: the Pending of a CREATE run again after the breaks it waited for (oplocks.py)."""
    state = conn.state
    options = request.create_options
    # MS-SMB2 3.3.5.9, create context validation: a context name shorter than 4 bytes is refused.
    if any(len(context.name) < 4 for context in request.contexts):
        raise Fail(NtStatus.INVALID_PARAMETER, "create context name shorter than 4 bytes")
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
    if _replay_of_waiting_create(conn, header, intent):
        # smbd's answer (its replay cache holds the CreateGuid while the original is in progress);
        # Windows answers ACCESS_DENIED (smbtorture smb2.replay.dhv2-pending1*-sane / -windows).
        raise Fail(NtStatus.FILE_NOT_AVAILABLE, "replay of a CREATE still waiting for a break")
    try:
        found = durable.find_replay(conn, header, request, intent, state.durable)
        if found is not None:
            return _replayed(conn, session, tree, request, found)
    except durable.Reject as exc:
        raise Fail(exc.status, str(exc)) from exc
    replayed = _replay_of_nondurable(conn, session, header, request, intent)
    if replayed is not None:
        return replayed
    try:
        base_name, stream = split_stream(request.name)
        path = tree.fs.resolve(base_name)
    except (ShareError, SMBProtocolError) as exc:
        raise Fail(exc.status, str(exc)) from exc
    granted = map_access(request.desired_access)
    if not granted and not request.desired_access:
        raise Fail(NtStatus.ACCESS_DENIED, "DesiredAccess 0")
    if stream is not None:
        return streams.create_stream(conn, session, tree, request, path, stream)
    fs = tree.fs
    creator, eas = fsec.new_file_contexts(request)
    allocation = _allocation_size(request)
    if find_context(request.contexts, TWRP):  # MS-SMB2 2.2.13.2.7: a previous version (snapshot) of the file
        raise Fail(NtStatus.OBJECT_NAME_NOT_FOUND, "no previous versions: the share keeps no snapshots")
    disposition = request.create_disposition
    lease = _lease_request(conn, request, path)
    app_instance = _close_previous_instance(conn, tree, request, path)
    # A "stat open" (attributes and SYNCHRONIZE only, READ_CONTROL too for leases) neither breaks nor gets an oplock next to
    # other opens unless it overwrites (MS-FSA 2.1.5.17; smbtorture smb2.oplock.statopen1).
    oplock_stat = not granted & ~STAT_RIGHTS
    lease_stat = not granted & ~(STAT_RIGHTS | AccessMask.READ_CONTROL)  # leases also let READ_CONTROL by
    overwrite = False
    old_attributes = 0
    exists = fs.exists(path)
    action = CreateAction.OPENED
    want_dir = bool(options & CreateOptions.DIRECTORY_FILE)
    try:
        if exists:
            is_dir = fs.is_dir(path)
            old_attributes = file_meta(conn, fs.stat(path)).attributes
            if disposition != CreateDisposition.CREATE:
                granted = fsec.existing_access(conn, session, fs, path, request.desired_access, old_attributes, is_dir)
                if disposition in (CreateDisposition.OVERWRITE, CreateDisposition.OVERWRITE_IF,
                                   CreateDisposition.SUPERSEDE) and not is_dir:
                    # replacing the data needs the right to write it, asked for or not (Samba, MS-FSA 2.1.5.1.2.1)
                    fsec.existing_access(conn, session, fs, path, AccessMask.FILE_WRITE_DATA, 0, is_dir)
            if disposition == CreateDisposition.CREATE:
                raise Fail(NtStatus.OBJECT_NAME_COLLISION, "exists")
            if is_dir and options & CreateOptions.NON_DIRECTORY_FILE:
                raise Fail(NtStatus.FILE_IS_A_DIRECTORY, "is a directory")
            if not is_dir and want_dir:
                raise Fail(NtStatus.NOT_A_DIRECTORY, "not a directory")
            if is_dir and request.name.upper().endswith("::$DATA"):
                # a directory has no default data stream; Windows' status depends on the options
                # (smbtorture smb2.streams.dir)
                raise Fail(NtStatus.NOT_A_DIRECTORY if want_dir else NtStatus.FILE_IS_A_DIRECTORY,
                           "a directory has no default data stream")
            overwrite = disposition in (CreateDisposition.OVERWRITE, CreateDisposition.OVERWRITE_IF,
                                        CreateDisposition.SUPERSEDE)
            ident = oplocks.lease_id(conn, lease.lease_key) if lease is not None else None
            conflicts = [o.persistent for o in state.opens_by_path.get(path, []) if o.stream is None
                         and sharing_conflict(granted, request.share_access, o.access, o.share_access)]
            if any((other.delete_on_close and other.stream is None) or other.deletes_file
                   for other in state.opens_by_path.get(path, [])):
                raise Fail(NtStatus.DELETE_PENDING, "delete pending")  # before any break (smb2.oplock.doc)
            if not oplock_stat or overwrite:  # an attributes-only open breaks nothing (batch8)
                oplocks.deliver(state, state.caching.before_open(
                    path, now=oplocks.now(state), lease=ident, overwrite=overwrite, sharing_conflicts=conflicts,
                    leases=not lease_stat or overwrite))
            if options & CreateOptions.DELETE_ON_CLOSE and not conflicts:  # a delete: HANDLE goes first
                oplocks.deliver(state, state.caching.before_rename_or_delete(path, None, now=oplocks.now(state),
                                                                             lease=ident))
            parked = oplocks.wait_or_go(
                conn, header, session, tree.tree_id, encrypted, path,
                lambda pending: _create(conn, session, tree, header, request, related, encrypted, pending),
                waiting, lease=ident)
            if parked is not None:
                if intent.version == 2 and parked.async_id in conn.pending:
                    conn.pending[parked.async_id].create_guid = intent.create_guid
                return parked
            _check_sharing(state, path, granted, request.share_access)
            streams.delete_conflict(state.opens_by_path.get(path, []), None, granted, request.share_access)
            if disposition in (CreateDisposition.OVERWRITE, CreateDisposition.OVERWRITE_IF,
                               CreateDisposition.SUPERSEDE):
                if is_dir:
                    raise Fail(NtStatus.INVALID_PARAMETER, "cannot overwrite a directory")
                check_overwrite(old_attributes, request.file_attributes)
                fs.truncate(path, 0)
                if eas is not None:
                    fs.extras(path).eas = {}
                    fsec.apply_eas(fs, path, eas)
                action = CreateAction.SUPERSEDED if disposition == CreateDisposition.SUPERSEDE else CreateAction.OVERWRITTEN
        else:
            if disposition in (CreateDisposition.OPEN, CreateDisposition.OVERWRITE):
                raise Fail(NtStatus.OBJECT_NAME_NOT_FOUND, "no such file")
            if want_dir and disposition not in (CreateDisposition.CREATE, CreateDisposition.OPEN_IF):
                raise Fail(NtStatus.INVALID_PARAMETER, "directory with overwrite disposition")
            granted = fsec.make_new(conn, session, fs, path, want_dir, request, creator, eas)
            is_dir = want_dir
            action = CreateAction.CREATED
            notify.added(state, fs, path, is_dir)
        if options & CreateOptions.DELETE_ON_CLOSE and not granted & AccessMask.DELETE:
            raise Fail(NtStatus.ACCESS_DENIED, "DELETE_ON_CLOSE without DELETE access")
        if (options & CreateOptions.DELETE_ON_CLOSE and action == CreateAction.OPENED and not is_dir
                and old_attributes & FileAttributes.READONLY):
            raise Fail(NtStatus.CANNOT_DELETE, "DELETE_ON_CLOSE on a read-only file")
        handle = None if is_dir else open_handle(fs, path, granted, fallback=True)
        st = fs.fstat(handle) if handle is not None else fs.stat(path)
    except OSError as exc:
        raise os_error(exc) from exc
    if action != CreateAction.OPENED:
        fsec.record_new(state, st, request.file_attributes, is_dir, created=action == CreateAction.CREATED,
                        allocation=allocation)
    state.next_file_id += 1
    opened = Open(state.next_file_id, state.next_file_id, path, handle, is_dir, granted, request.share_access,
                  session, tree, conn, delete_on_close=bool(options & CreateOptions.DELETE_ON_CLOSE), fs=fs)
    opened.app_instance_id = app_instance
    session.opens[opened.volatile] = opened
    state.opens_by_path.setdefault(path, []).append(opened)
    contexts = []
    if find_context(request.contexts, MXAC):
        maximal = fsec.maximal(conn, session, fs, path, file_meta(conn, st).attributes, is_dir)
        contexts.append(MaximalAccessResponse(0, maximal).to_context())
    if find_context(request.contexts, QFID):
        contexts.append(QueryOnDiskIdResponse(st.file_id, st.volume_id).to_context())
    requested = request.requested_oplock_level
    if oplock_stat and not overwrite and requested != OplockLevel.LEASE and len(state.opens_by_path[path]) > 1:
        requested = OplockLevel.NONE  # attributes only, next to other opens: no oplock (batch8, batch9a)
    oplock, lease_contexts = oplocks.grant(conn, opened, requested, lease if not is_dir else None,
                                           stat_open=lease_stat and not overwrite)
    contexts += lease_contexts
    contexts += durable.grant(conn, session, tree, request, intent, opened, state.durable)
    if opened.durable is not None:
        opened.durable.create_action = int(action)  # a replayed CREATE answers with the original action
    elif intent.version == 2 and intent.create_guid:
        opened.replay_key, opened.replay_action = (conn.client_guid, intent.create_guid), int(action)
    return create_reply(opened, file_meta(conn, st), oplock, action, contexts)


def _allocation_size(request: m.CreateRequest) -> int:
    """The AllocationSize of an SMB2_CREATE_ALLOCATION_SIZE context (MS-SMB2 2.2.13.2.6: one 8-byte
    little-endian count of bytes), 0 without one; a shorter context is INVALID_PARAMETER."""
    context = find_context(request.contexts, ALSI)
    if context is None:
        return 0
    if len(context.data) < 8:
        raise Fail(NtStatus.INVALID_PARAMETER, "AllocationSize context shorter than 8 bytes")
    return int.from_bytes(context.data[:8], "little")


def check_overwrite(old: int, requested: int) -> None:
    """MS-FSA 2.1.5.1.2.2: overwriting a HIDDEN or SYSTEM file must ask for the same attribute, and a
    READONLY file cannot be overwritten."""
    if old & FileAttributes.READONLY:
        raise Fail(NtStatus.ACCESS_DENIED, "overwrite of a read-only file")
    for bit in (FileAttributes.HIDDEN, FileAttributes.SYSTEM):
        if old & bit and not requested & bit:
            raise Fail(NtStatus.ACCESS_DENIED, f"overwrite of a {bit.name} file without {bit.name}")


def _close_previous_instance(conn, tree, request: m.CreateRequest, path: str) -> bytes | None:
    """§3.3.5.9.13: an open of the same file on the same share by another client (ClientGuid) with
    the same AppInstanceId is the previous instance of a failed-over application: it is closed, so
    that the new instance does not meet its sharing modes and caching (smbtorture
    smb2.durable-v2-open.app-instance). Returns the request's AppInstanceId (3.x only)."""
    context = find_context(request.contexts, APP_INSTANCE_ID)
    if context is None or conn.dialect < Dialect.SMB_3_0:
        return None
    try:
        app_instance = bytes(AppInstanceId.from_context(context).app_instance_id)
    except SMBProtocolError as exc:
        raise Fail(NtStatus.INVALID_PARAMETER, str(exc)) from exc
    state = conn.state
    for other in list(state.opens_by_path.get(path, [])):
        if other.app_instance_id != app_instance or (other.fs is not None and other.fs is not tree.fs):
            continue
        owner = other.connection.client_guid if other.connection is not None else (
            other.durable.client_guid if other.durable is not None else b"")
        if owner == conn.client_guid:
            continue
        if other.connection is None:  # detached durable open
            state.durable.remove(other)
            forget_detached(state, other)
        else:
            forget(other.connection, other)
    return app_instance


def _lease_request(conn, request: m.CreateRequest, path: str) -> LeaseV1 | LeaseV2 | None:
    """The lease a CREATE asks for (2.1 and later), checked before anything changes: a lease key
    already used by this client for another file is STATUS_INVALID_PARAMETER (§3.3.5.9.8)."""
    context = find_context(request.contexts, RQLS)
    if request.requested_oplock_level != OplockLevel.LEASE or context is None or conn.dialect < Dialect.SMB_2_1:
        return None
    try:
        lease = (LeaseV2 if len(context.data) == 52 else LeaseV1).from_context(context)
    except SMBProtocolError as exc:
        raise Fail(NtStatus.INVALID_PARAMETER, str(exc)) from exc
    status = conn.state.caching.check_lease_key(oplocks.lease_id(conn, lease.lease_key), path)
    if status is not None:
        raise Fail(status, "lease key in use for another file")
    return lease


def _check_sharing(state, path: str, access: int, share: int, stream: str | None = None) -> None:
    """Share modes against the other opens of the same stream of the file (the file's own data:
    ``stream`` None); a delete pending on it is STATUS_DELETE_PENDING."""
    key = None if stream is None else stream.casefold()
    for other in list(state.opens_by_path.get(path, [])):
        if other.stream_key != key:
            continue
        if sharing_conflict(access, share, other.access, other.share_access):
            if other.durable is not None and other.durable.detached_at is not None and not other.durable.persistent:
                # Its BATCH oplock / HANDLE lease would be broken, and nobody is there to acknowledge
                # the break: the detached durable open is closed and this CREATE proceeds.
                state.durable.remove(other)
                forget_detached(state, other)
                continue
            raise Fail(NtStatus.SHARING_VIOLATION, "share mode conflict")
        if other.delete_on_close:
            raise Fail(NtStatus.DELETE_PENDING, "delete pending")


def _replay_of_waiting_create(conn, header, intent) -> bool:
    """A replayed DH2Q CREATE whose original (same CreateGuid, same client) still waits for the
    breaks it caused: it is in progress, so there is no open to hand back yet."""
    if intent.version != 2 or not intent.create_guid or not header.flags & HeaderFlags.REPLAY_OPERATION:
        return False
    return any(item.pending.create_guid == intent.create_guid
               and getattr(item.pending.connection, "client_guid", None) == conn.client_guid
               for item in conn.state.waiting)


def _replay_of_nondurable(conn, session, header, request, intent) -> Reply | None:
    """A replayed DH2Q CREATE whose original was granted no durability (no BATCH oplock, no HANDLE
    lease): still the same open, with the original's answer, while it is open on this session.
    smbd keeps every DH2Q CreateGuid in its replay cache, durable or not (smbtorture
    smb2.replay.dhv2-pending1n-*: the replay after the original completed gets the same FileId)."""
    if intent.version != 2 or not intent.create_guid or not header.flags & HeaderFlags.REPLAY_OPERATION:
        return None
    key = (conn.client_guid, intent.create_guid)
    found = next((o for o in session.opens.values() if o.replay_key == key), None)
    if found is None:
        return None
    lease_ctx = find_context(request.contexts, RQLS) if request.requested_oplock_level == OplockLevel.LEASE else None
    if (lease_ctx is None) != (found.lease_key is None) or (
            lease_ctx is not None and len(lease_ctx.data) >= 16 and lease_ctx.data[:16] != found.lease_key):
        raise Fail(NtStatus.ACCESS_DENIED, "replay asks for another lease than the original")
    contexts = []
    if lease_ctx is not None and len(lease_ctx.data) == 52:
        contexts.append(LeaseV2(lease_key=found.lease_key, lease_state=found.lease_state,
                                epoch=found.lease_epoch).to_context())
    elif lease_ctx is not None:
        contexts.append(LeaseV1(lease_key=found.lease_key, lease_state=found.lease_state).to_context())
    try:
        st = stat_open(found)
    except OSError as exc:
        raise os_error(exc) from exc
    oplock = OplockLevel.LEASE if found.lease_key is not None else found.oplock
    return create_reply(found, file_meta(conn, st), oplock, found.replay_action, contexts)


def _replayed(conn, session, tree, request, found: Open) -> Reply:
    """The durable open a replayed DH2Q names.  A replay asking for a weaker oplock than the open holds
    is answered with that level, and without durability when the level could not have had it (the
    open keeps what it has; smbtorture smb2.replay.replay-dhv2-oplock2, as smbd and Windows)."""
    info = found.durable
    if info is None:
        raise Fail(NtStatus.OBJECT_NAME_NOT_FOUND, "not a durable open")
    requested = request.requested_oplock_level
    weaker = found.lease_key is None and requested != OplockLevel.LEASE and requested < found.oplock
    contexts = durable.reconnect_contexts(found) if weaker else replay_contexts(found)
    reply = attach(conn, session, tree, found, contexts, info.create_action)
    if weaker and isinstance(reply.body, m.CreateResponse):
        reply.body.oplock_level = requested
    return reply


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
    opened = open_for(session, tree, request.file_id, related)
    write_time.on_close(conn.state, opened)  # before POSTQUERY_ATTRIB reads the times
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
