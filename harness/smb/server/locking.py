"""LOCK (MS-SMB2 3.3.5.14) over the per-file :class:`~harness.smb.byterange.RangeLocks`, and the
byte-range checks READ and WRITE make.

Why a module of its own: a lock outlives the request that took it, is shared by every open of
the file whatever connection it came on, ends with the open that holds it, and a blocking lock
ends on another connection's unlock or close.  The rules of ranges live in
:mod:`harness.smb.byterange`; here they meet opens, async requests and sequence numbers:

- the file's lock table is found by the file's path and follows a rename (``move_locks``);
- a blocking lock that must wait answers STATUS_PENDING (an interim async response) and completes
  with SUCCESS when a range frees, STATUS_CANCELLED on CANCEL, STATUS_RANGE_NOT_LOCKED when its
  open closes (as Samba answers); a waiter of a connection that went away is dropped unanswered;
- LockSequenceIndex 1..64 names an entry of Open.LockSequenceArray; on a durable open, or on 3.x
  with multichannel, a request whose LockSequenceNumber equals the entry's succeeds without being
  processed again (a replay after a lost connection), a different number invalidates the entry;
  a processed lock or unlock stores its number (3.3.5.14.1, 3.3.5.14.2);
- a granted lock breaks other opens' read caches as a WRITE does (Windows breaks level II
  oplocks and READ leases on a byte-range lock).
"""

from __future__ import annotations

from .. import messages as m
from ..byterange import LOCKFLAG_UNLOCK, Completed, Granted, LockElement, Queued, RangeLocks, Refused
from ..constants import Capabilities, Dialect, NtStatus
from .breaks import break_others
from .model import Fail, Open, Reply

LOCK_SEQUENCE_ENTRIES = 64  # Open.LockSequenceArray (3.3.1.10)


def locks_of(state, path: str) -> RangeLocks:
    table = state.byte_locks.get(path)
    if table is None:
        table = state.byte_locks[path] = RangeLocks()
    return table


def owner_of(opened: Open) -> int:
    """The lock owner: the open itself (its FileId changes on a durable reconnect, the object not)."""
    return id(opened)


def check_io(state, opened: Open, offset: int, length: int, *, write: bool) -> None:
    """READ/WRITE of a range another open locked (or, for WRITE, that this open locked shared):
    STATUS_FILE_LOCK_CONFLICT (3.3.5.14.2: a shared lock disallows writes, an exclusive one reads
    and writes by other opens)."""
    table = state.byte_locks.get(opened.path)
    if table is None:
        return
    status = table.check_io(owner_of(opened), offset, length, write=write)
    if status is not None:
        raise Fail(status, f"{'WRITE' if write else 'READ'} {offset:#x}+{length:#x} meets a byte-range lock")


def _sequence_applies(conn, opened: Open) -> bool:
    if conn.dialect == Dialect.SMB_2_0_2:
        return False
    return opened.durable is not None or opened.resilient or (conn.dialect >= Dialect.SMB_3_0
                                          and bool(conn.server_capabilities & Capabilities.MULTI_CHANNEL))


def lock(conn, session, tree, header, request: m.LockRequest, encrypted: bool, opened: Open) -> Reply:
    """The LOCK request ``request`` on ``opened`` (found by the caller, 3.3.5.14)."""
    if not request.locks:
        raise Fail(NtStatus.INVALID_PARAMETER, "LOCK without elements")
    number, index = request.lock_sequence & 0xF, request.lock_sequence >> 4
    sequenced = _sequence_applies(conn, opened) and 1 <= index <= LOCK_SEQUENCE_ENTRIES
    if sequenced:
        if opened.lock_sequences.get(index) == number:
            return Reply(NtStatus.SUCCESS, m.LockResponse())  # a replay of a processed request
        opened.lock_sequences.pop(index, None)
    state = conn.state
    table = locks_of(state, opened.path)
    owner = owner_of(opened)
    elements = [LockElement(e.offset, e.length, e.flags) for e in request.locks]
    if elements[0].flags & LOCKFLAG_UNLOCK:
        status, completed = table.unlock(owner, elements)
        finish(state, completed)
        if status != NtStatus.SUCCESS:
            raise Fail(status, "unlock refused")
        if sequenced:
            opened.lock_sequences[index] = number
        return Reply(NtStatus.SUCCESS, m.LockResponse())
    token = object()
    outcome = table.lock(owner, elements, token)
    if isinstance(outcome, Refused):
        raise Fail(outcome.status, outcome.reason)
    if isinstance(outcome, Granted):
        if sequenced:
            opened.lock_sequences[index] = number
        break_read_caches(conn, opened)
        return Reply(NtStatus.SUCCESS, m.LockResponse())
    assert isinstance(outcome, Queued)
    reply = conn.go_async(header, session, tree.tree_id, encrypted, opened)
    pending = conn.pending[reply.async_id]
    state.lock_waiters[token] = (pending, opened, index if sequenced else 0, number)
    pending.on_cancel = lambda: finish(state, table.cancel(token))
    pending.on_drop = lambda: _drop(state, table, token)
    return reply


def break_read_caches(conn, opened: Open) -> None:
    """The hook a granted lock calls: other opens' level II oplocks and READ leases go, exactly as
    for a WRITE (the oplock/lease table's on-write rule names byte-range LOCK too).  Kept in one
    place so that the caching rules can change under it without touching the lock rules."""
    break_others(conn, opened)


def _drop(state, table: RangeLocks, token: object) -> None:
    """The waiter's connection went away: forget it, answer nobody, let others take the range."""
    state.lock_waiters.pop(token, None)
    table.waiting = [w for w in table.waiting if w.token != token]


def finish(state, completed: list[Completed]) -> None:
    """Send the final LOCK response of each waiter that ended."""
    for done in completed:
        entry = state.lock_waiters.pop(done.token, None)
        if entry is None:
            continue
        pending, opened, index, number = entry
        connection: object = pending.connection or pending.session.connection
        if done.status == NtStatus.SUCCESS:
            if index:
                opened.lock_sequences[index] = number
            if opened.connection is not None:
                break_read_caches(opened.connection, opened)
            connection.complete_async(pending, NtStatus.SUCCESS, m.LockResponse())  # type: ignore[attr-defined]
        else:
            connection.complete_async(pending, done.status, m.ErrorResponse())  # type: ignore[attr-defined]


def release_locks(state, opened: Open) -> None:
    """The open closed: its locks go, its waiters end (RANGE_NOT_LOCKED), others' waiters may be granted."""
    table = state.byte_locks.get(opened.path)
    if table is None:
        return
    finish(state, table.release(owner_of(opened)))
    if not table.held and not table.waiting:
        state.byte_locks.pop(opened.path, None)


def move_locks(state, old: str, new: str) -> None:
    """A rename: the file's locks follow it."""
    table = state.byte_locks.pop(old, None)
    if table is not None:
        state.byte_locks[new] = table


__all__ = ["lock", "check_io", "release_locks", "move_locks", "locks_of"]
