"""LOCK, CHANGE_NOTIFY and the oplock/lease break acknowledgments (MS-SMB2 §3.3.5.14, §3.3.5.19,
§3.3.5.22).

The rules of LOCK live in :mod:`.locking` (over :mod:`harness.smb.byterange`) and those of
CHANGE_NOTIFY in :mod:`.notify` (over :mod:`harness.smb.change_notify`); this module finds the
open each request names and answers the break acknowledgments.
"""

from __future__ import annotations

from .. import messages as m
from ..constants import Command, NtStatus
from . import locking, notify, oplocks
from .model import Fail, Handler, Reply
from .opens import open_for
from .readwrite import check_charge


def _lock(conn, session, tree, header, request: m.LockRequest, related, encrypted) -> Reply:
    return locking.lock(conn, session, tree, header, request, encrypted, open_for(session, tree, request.file_id, related))


def _change_notify(conn, session, tree, header, request: m.ChangeNotifyRequest, related, encrypted) -> Reply:
    opened = open_for(session, tree, request.file_id, related)
    if request.output_buffer_length > conn.max_size:  # §3.3.5.19, in its order: the size, then the charge
        raise Fail(NtStatus.INVALID_PARAMETER, "OutputBufferLength above MaxTransactSize")
    check_charge(conn, header, request.output_buffer_length)
    return notify.change_notify(conn, session, tree, header, request, encrypted, opened)


def _oplock_break_ack(conn, session, tree, header, request, related, encrypted) -> Reply:
    """§3.3.5.22: an oplock or lease break acknowledgment, checked by the caching table (oplocks.py)."""
    if isinstance(request, m.LeaseBreakAcknowledgment):
        state = oplocks.ack_lease(conn, request.lease_key, request.lease_state)
        return Reply(NtStatus.SUCCESS, m.LeaseBreakResponse(lease_key=request.lease_key, lease_state=state))
    opened = open_for(session, tree, request.file_id, related)
    level = oplocks.ack_oplock(conn, opened, request.oplock_level)
    return Reply(NtStatus.SUCCESS, m.OplockBreakResponse(file_id=opened.file_id, oplock_level=level))


HANDLERS: dict[int, Handler] = {
    Command.LOCK: _lock,
    Command.CHANGE_NOTIFY: _change_notify,
    Command.OPLOCK_BREAK: _oplock_break_ack,
}
