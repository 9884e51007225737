"""LOCK, CHANGE_NOTIFY and the oplock/lease break acknowledgments (MS-SMB2 §3.3.5.14, §3.3.5.19,
§3.3.5.22).

CHANGE_NOTIFY goes asynchronous (an interim STATUS_PENDING) and completes with
STATUS_NOTIFY_ENUM_DIR on a change made through this server, STATUS_NOTIFY_CLEANUP on CLOSE and
STATUS_CANCELLED on CANCEL.  Byte-range locks are accepted and not enforced: no test client of
this server relies on conflicting locks.
"""

from __future__ import annotations

from .. import messages as m
from ..constants import Command, NtStatus, OplockLevel
from .model import Fail, Handler, Reply
from .opens import open_for


def _lock(conn, session, tree, header, request: m.LockRequest, related, encrypted) -> Reply:
    open_for(session, request.file_id, related)
    if not request.locks:
        raise Fail(NtStatus.INVALID_PARAMETER, "LOCK without elements")
    return Reply(NtStatus.SUCCESS, m.LockResponse())


def _change_notify(conn, session, tree, header, request: m.ChangeNotifyRequest, related, encrypted) -> Reply:
    opened = open_for(session, request.file_id, related)
    if not opened.is_dir:
        raise Fail(NtStatus.INVALID_PARAMETER, "CHANGE_NOTIFY on a file")
    reply = conn.go_async(header, session, tree.tree_id, encrypted, opened)
    conn.state.watchers.append(conn.pending[reply.async_id])
    return reply


def _oplock_break_ack(conn, session, tree, header, request, related, encrypted) -> Reply:
    if isinstance(request, m.LeaseBreakAcknowledgment):
        return Reply(NtStatus.SUCCESS, m.LeaseBreakResponse(lease_key=request.lease_key,
                                                            lease_state=request.lease_state))
    opened = open_for(session, request.file_id, related)
    opened.oplock = OplockLevel.NONE
    return Reply(NtStatus.SUCCESS, m.OplockBreakResponse(file_id=opened.file_id, oplock_level=0))


HANDLERS: dict[int, Handler] = {
    Command.LOCK: _lock,
    Command.CHANGE_NOTIFY: _change_notify,
    Command.OPLOCK_BREAK: _oplock_break_ack,
}
