"""Oplocks and leases on the wire: the server's side of :class:`harness.smb.caching.CachingTable`.

The table decides (what to grant, whom to break, when a waiting request may go on); this module
turns its answers into messages and waits:

- Break notifications (§3.3.4.6, §3.3.4.7): OPLOCK_BREAK with MessageId 0xFFFFFFFFFFFFFFFF,
  unsigned; an oplock break carries the open's SessionId, a lease break SessionId 0. An oplock break
  goes to the open's connection or another channel of its session; a lease break to a connection
  of the lease's client (ClientGuid). With no connection left: a detached durable open is closed
  when the break takes away what durability rests on (BATCH, HANDLE caching), else the break
  completes at once as if acknowledged, since nobody can answer it.
- A request that caused a break it must wait for (one taking WRITE away, or HANDLE for a sharing
  violation, rename or delete: the table's ``must_wait``) goes asynchronous: an interim
  STATUS_PENDING now (§3.3.4.2), the real response when every holder has acknowledged, closed its
  open, or run out of time (``expire`` at the break deadline, driven by
  the I/O adapter's timer through :func:`next_deadline` and :func:`on_timer`). The request is run
  again from the start then, so it meets the sharing rules with what the holders kept.
- OPLOCK_BREAK acknowledgments (§3.3.5.22) are checked by the table and answered with its status.

Open ids in the table are the opens' persistent FileIds (stable across a durable reconnect); lease
ids are (ClientGuid, LeaseKey) as in GlobalLeaseTableList.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import messages as m
from ..caching import Break, CachingTable, LeaseBreak, LeaseId, OplockBreak
from ..constants import UNSOLICITED_MESSAGE_ID, Command, HeaderFlags, NtStatus, OplockLevel
from ..errors import Fail
from ..header import Header
from ..messages.create_contexts import LeaseV1, LeaseV2
from .model import Open, Pending, Reply

Retry = Callable[[Pending], Reply]


@dataclass
class Waiting:
    """A request parked until the breaks on ``path`` are over; ``retry`` runs it again."""

    pending: Pending
    path: str
    retry: Retry
    lease: LeaseId | None = None
    open_id: int | None = None


def table(state) -> CachingTable:
    return state.caching


def now(state) -> float:
    return state.config.clock() / 1e9


def lease_id(conn, lease_key: bytes) -> LeaseId:
    return (bytes(conn.client_guid), bytes(lease_key))


def _opens_of(state, path: str) -> list[Open]:
    return list(state.opens_by_path.get(path, []))


def _find_open(state, open_id) -> Open | None:
    for opens in state.opens_by_path.values():
        for opened in opens:
            if opened.persistent == open_id:
                return opened
    return None


def sync(state) -> None:
    """Copy the table's state into the opens (durable records and reconnects read them there)."""
    caching = table(state)
    for opens in state.opens_by_path.values():
        for opened in opens:
            ident = caching.lease_of(opened.persistent)
            if ident is not None:
                opened.lease_state = caching.lease_state(ident)
                opened.lease_epoch = caching.lease_epoch(ident)
            else:
                opened.oplock = caching.oplock_level(opened.persistent)


def _live(connection) -> bool:
    return connection is not None and not connection.closed


def _oplock_target(opened: Open):
    if _live(opened.connection):
        return opened.connection
    session = opened.session
    for channel in ([session.connection, *session.channels] if session is not None else []):
        if _live(channel):
            return channel
    return None


#: How the server's open registry releases a detached open (opens.forget_detached). The registry
#: imports this module for its close bookkeeping, so it hands the function over when it is imported
#: (dependency inversion: this module never imports the registry).
_forget_detached: Callable[[Any, Open], None] | None = None


def set_detached_closer(forget: Callable[[Any, Open], None]) -> None:
    global _forget_detached
    _forget_detached = forget


def _close_detached(state, opened: Open) -> None:
    if opened.durable is not None:
        state.durable.remove(opened)
    table(state).close(opened.persistent)
    assert _forget_detached is not None, "harness.smb.server.opens registers the detached-open closer"
    _forget_detached(state, opened)


def _settle_oplock(state, event: OplockBreak, opened: Open) -> None:
    """§3.3.4.6: an oplock break no connection can carry completes now; a durable open losing BATCH
    is closed (its client could not take the break, so it must not find the handle again)."""
    if event.new_level < OplockLevel.BATCH and opened.durable is not None:
        _close_detached(state, opened)
    elif event.ack_required:
        table(state).ack_oplock(event.open_id, event.new_level)


def _settle_lease(state, event: LeaseBreak, holders: list[Open]) -> None:
    """§3.3.4.7: nobody can hear the break. A persistent open keeps its lease at the new state; any
    other holder is closed, so its client's reconnect finds nothing and the new open gets what it
    asked for (smbtorture smb2.durable-open.lease: RWH, as Windows and smbd grant it once the first
    client is gone)."""
    for holder in holders:
        if holder.durable is None or not holder.durable.persistent:
            _close_detached(state, holder)
    caching = table(state)
    if event.ack_required and caching.lease_state(event.lease):
        caching.ack_lease(event.lease, event.new_state)


def _lease_target(holders: list[Open]):
    """§3.3.4.7: a connection of the lease's client: a holder's own, else another live channel of
    its session (multichannel: one channel gone does not make the client unreachable)."""
    return next((t for t in map(_oplock_target, holders) if t is not None), None)


def _lease_holders(state, lease: LeaseId) -> list[Open]:
    return [o for o in _all_opens(state) if table(state).lease_of(o.persistent) == lease]


def settle_unheard(state) -> None:
    """A connection has gone: breaks in flight that no remaining connection can acknowledge are
    settled now as §3.3.4.6-7 settle a break that could not be sent, instead of waiting out the
    acknowledgment timer. A client that disconnects right after its open was broken (smbtorture
    smb2.durable-open.oplock and .lease, where the second open can reach the server before the
    first connection's end) would otherwise hold the new open back for the whole break timeout."""
    for event in table(state).in_flight():
        if isinstance(event, OplockBreak):
            opened = _find_open(state, event.open_id)
            if opened is not None and (_oplock_target(opened) is None or opened.session is None):
                _settle_oplock(state, event, opened)
        else:
            holders = _lease_holders(state, event.lease)
            if holders and _lease_target(holders) is None:
                _settle_lease(state, event, holders)
    sync(state)


def deliver(state, events: list[Break]) -> None:
    """Send the table's break events (or settle them where nobody can hear them)."""
    for event in events:
        if isinstance(event, OplockBreak):
            opened = _find_open(state, event.open_id)
            if opened is None:
                continue
            target = _oplock_target(opened)
            if target is None or opened.session is None:
                _settle_oplock(state, event, opened)
                continue
            header = Header(command=Command.OPLOCK_BREAK, flags=HeaderFlags.SERVER_TO_REDIR,
                            message_id=UNSOLICITED_MESSAGE_ID, session_id=opened.session.session_id)
            body: m.Message = m.OplockBreakNotification(file_id=opened.file_id, oplock_level=event.new_level)
            target.send_unsolicited(header, body, None, False)
        elif isinstance(event, LeaseBreak):
            holders = _lease_holders(state, event.lease)
            target = _lease_target(holders)
            if target is None:
                _settle_lease(state, event, holders)
                continue
            header = Header(command=Command.OPLOCK_BREAK, flags=HeaderFlags.SERVER_TO_REDIR,
                            message_id=UNSOLICITED_MESSAGE_ID, session_id=0)
            body = m.LeaseBreakNotification(
                lease_key=event.lease[1], current_lease_state=event.current_state, new_lease_state=event.new_state,
                new_epoch=event.new_epoch, flags=1 if event.ack_required else 0)
            target.send_unsolicited(header, body, None, False)
    sync(state)


def _all_opens(state) -> list[Open]:
    return [o for opens in state.opens_by_path.values() for o in opens]


# -- requests that wait for acknowledgments ------------------------------------------------------

def wait_or_go(conn, header, session, tree_id: int, encrypted: bool, path: str, retry: Retry,
               waiting: Pending | None, *, lease: LeaseId | None = None, open_id=None) -> Reply | None:
    """None: go on now. Else the request waits for the breaks on ``path``: the interim reply (or,
    when it was already waiting, the same Pending parked again)."""
    if not table(conn.state).must_wait(path, lease=lease, open_id=open_id):
        return None
    if waiting is None:
        reply = conn.go_async(header, session, tree_id, encrypted)
        waiting = conn.pending[reply.async_id]
    else:
        reply = Reply(NtStatus.PENDING, m.ErrorResponse(), async_id=waiting.async_id)
    conn.state.waiting.append(Waiting(waiting, path, retry, lease, open_id))
    return reply


def resume(state) -> None:
    """Run again the requests whose breaks are over; complete them with what they answer now."""
    caching = table(state)
    progress = True
    while progress:
        progress = False
        for item in list(state.waiting):
            if caching.must_wait(item.path, lease=item.lease, open_id=item.open_id):
                continue
            state.waiting.remove(item)
            progress = True
            pending = item.pending
            connection = pending.connection
            if connection is None or connection.closed or pending.async_id not in connection.pending:
                continue
            try:
                reply = item.retry(pending)
            except Fail as exc:
                reply = Reply(exc.status, m.ErrorResponse())
            if reply.status == NtStatus.PENDING and reply.async_id == pending.async_id:
                continue  # parked again (a new break)
            connection.complete_async(pending, reply.status, reply.body)


def drop_waiting(state, pending: Pending | None = None, connection=None) -> None:
    """A waiting request was cancelled, or its connection is gone.  A DH2Q CREATE whose connection
    went stays parked, unanswerable (:func:`resume` drops it when its breaks are over): until then
    it is in progress, and a replay of it on another channel is told so (create.py; smbd does the
    same, smbtorture smb2.replay.dhv2-pending2*-sane)."""
    state.waiting = [w for w in state.waiting
                     if w.pending is not pending and (connection is None or w.pending.connection is not connection
                                                      or w.pending.create_guid)]


def next_deadline(state) -> float | None:
    """When :func:`on_timer` has work next (seconds on the server clock), None when nothing waits."""
    return table(state).next_deadline()


def on_timer(state) -> None:
    """Overdue acknowledgments: the holders are NONE now and the requests waiting for them go on."""
    if table(state).expire(now(state)):
        sync(state)
    resume(state)


# -- events of other handlers --------------------------------------------------------------------

def on_write(conn, opened: Open) -> None:
    """A WRITE, end-of-file change or byte-range lock through ``opened``: others' read caches go
    (no acknowledgment to wait for, §3.3.4.6/7)."""
    deliver(conn.state, table(conn.state).on_write(opened.path, opened.persistent, now=now(conn.state)))


def on_close(state, opened: Open) -> None:
    """The open is gone: its caching goes (a request waiting for its acknowledgment goes on at the
    next :func:`resume`, run after every request so that no handler is re-entered)."""
    table(state).close(opened.persistent)


def renamed(state, old: str, new: str) -> None:
    table(state).renamed(old, new)
    for item in state.waiting:
        if item.path == old:
            item.path = new


def before_rename_or_delete(conn, opened: Open) -> None:
    deliver(conn.state, table(conn.state).before_rename_or_delete(opened.path, opened.persistent,
                                                                  now=now(conn.state)))


# -- grants --------------------------------------------------------------------------------------

def grant(conn, opened: Open, requested: int, lease_context, stat_open: bool = False) -> tuple[int, list]:
    """Register a new open in the table; the OplockLevel and the lease response context."""
    caching = table(conn.state)
    if lease_context is None:
        level = caching.grant(opened.path, opened.persistent, requested=requested, is_dir=opened.is_dir,
                              stat_open=stat_open).oplock_level
        opened.oplock = level
        return level, []
    v2 = isinstance(lease_context, LeaseV2)
    ident = lease_id(conn, lease_context.lease_key)
    result = caching.grant(opened.path, opened.persistent, requested=OplockLevel.LEASE, lease=ident,
                           lease_state=lease_context.lease_state, lease_version=2 if v2 else 1,
                           lease_epoch=lease_context.epoch if v2 else 0, is_dir=opened.is_dir,
                           stat_open=stat_open)
    opened.lease_key, opened.lease_state, opened.lease_epoch = ident[1], result.lease_state, result.epoch
    # The response has the layout of the lease's version, which its first open chose, whatever this
    # request used (smbtorture smb2.lease.v2_epoch2, v2_epoch3); ParentLeaseKey is echoed.
    response: LeaseV1 | LeaseV2
    if result.version >= 2:
        response = LeaseV2(lease_key=ident[1], lease_state=result.lease_state, lease_flags=result.lease_flags,
                           parent_lease_key=lease_context.parent_lease_key if v2 else bytes(16),
                           epoch=result.epoch)
    else:
        response = LeaseV1(lease_key=ident[1], lease_state=result.lease_state, lease_flags=result.lease_flags)
    sync(conn.state)  # an upgrade changed the lease of the key's other opens too (a replay answers with it)
    return OplockLevel.LEASE, [response.to_context()]


def adopt(state, opened: Open, client_guid: bytes, lease_version: int) -> None:
    """A durable open loaded from the state directory keeps the caching it was granted."""
    ident = (bytes(client_guid), bytes(opened.lease_key)) if opened.lease_key is not None else None
    table(state).adopt(opened.path, opened.persistent, oplock_level=opened.oplock, lease=ident,
                       lease_state=opened.lease_state, lease_version=lease_version or 1,
                       epoch=opened.lease_epoch)



# -- OPLOCK_BREAK acknowledgments (§3.3.5.22): the handler is lock_notify.py's -------------------

def ack_lease(conn, lease_key: bytes, lease_state: int) -> int:
    """The lease acknowledgment checked by the table; the lease state afterwards, or Fail."""
    state = conn.state
    caching = table(state)
    status, new_state = caching.ack_lease(lease_id(conn, lease_key), lease_state, now(state))
    deliver(state, caching.take_followups())  # the next step of a two-step break (syncs the opens)
    if status != NtStatus.SUCCESS:
        raise Fail(status, "lease break acknowledgment")
    return new_state


def ack_oplock(conn, opened: Open, level: int) -> int:
    """The oplock acknowledgment checked by the table; the open's level afterwards, or Fail."""
    state = conn.state
    status, new_level = table(state).ack_oplock(opened.persistent, level)
    sync(state)
    if status != NtStatus.SUCCESS:
        raise Fail(status, "oplock break acknowledgment")
    return new_level


__all__ = ["Waiting", "adopt", "deliver", "grant", "next_deadline", "on_close", "on_timer",
           "on_write", "resume", "settle_unheard", "wait_or_go", "set_detached_closer", "ack_lease", "ack_oplock"]
