"""Byte-range locks of one file: what SMB2 LOCK takes and what READ and WRITE must respect.

Sans-IO: a ``RangeLocks`` table answers "may this open lock / read / write this range now?",
keeps the blocking requests that wait, and tells its caller which of them became granted when
a range frees. It knows nothing of messages, connections or clocks; the server turns its answers
into LOCK responses (interim and final), READ/WRITE failures and CANCEL completions.

Rules (MS-SMB2 3.3.5.14, with the object store semantics Windows and Samba share):

==================================  ==============================================================
range                               [offset, offset + length); offset + length may not pass 2**64
                                    (STATUS_INVALID_LOCK_RANGE). A zero-length lock holds no byte:
                                    it conflicts only with a lock that strictly contains its offset.
shared vs shared                    never conflict, whoever owns them.
exclusive held by the same open,    a shared lock may stack on it (Samba's brl_conflict, Windows).
new shared on it
anything else overlapping           conflicts, even within one open (locks are not merged).
lock request, several elements      each element FAIL_IMMEDIATELY, else STATUS_INVALID_PARAMETER;
                                    an element that conflicts undoes the elements granted before it
                                    and fails with STATUS_LOCK_NOT_GRANTED.
lock request, one blocking element  a conflict queues it (the server answers STATUS_PENDING); it
                                    is granted when a release makes room (waiters are tried in
                                    arrival order; a new request is judged against held locks
                                    only, as Samba does), or ends with STATUS_CANCELLED on CANCEL
                                    and STATUS_RANGE_NOT_LOCKED on close of its open (Samba;
                                    smbtorture smb2.lock.cancel, "cancel by close").
unlock                              must name a lock this open holds with the same offset and
                                    length, else STATUS_RANGE_NOT_LOCKED (elements before it stay
                                    unlocked: 3.3.5.14.1 does not roll back); any flag besides
                                    UNLOCK (FAIL_IMMEDIATELY too) is STATUS_INVALID_PARAMETER.
READ                                refused by another open's exclusive lock on any byte of it.
WRITE                               refused by any other open's lock, and by the writer's own
                                    shared lock (a shared lock "disallows writes": smbtorture's
                                    LOCKTEST7 checks the same-handle case).
I/O refusal status                  STATUS_FILE_LOCK_CONFLICT.
==================================  ==============================================================
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field

from .constants import NtStatus

RANGE_END = 1 << 64

LOCKFLAG_SHARED = 0x01
LOCKFLAG_EXCLUSIVE = 0x02
LOCKFLAG_UNLOCK = 0x04
LOCKFLAG_FAIL_IMMEDIATELY = 0x10

#: The Flags combinations of a lock element MS-SMB2 2.2.26.1 defines.
VALID_LOCK_FLAGS = frozenset({
    LOCKFLAG_SHARED, LOCKFLAG_EXCLUSIVE, LOCKFLAG_SHARED | LOCKFLAG_FAIL_IMMEDIATELY,
    LOCKFLAG_EXCLUSIVE | LOCKFLAG_FAIL_IMMEDIATELY, LOCKFLAG_UNLOCK,
})


@dataclass(frozen=True)
class HeldLock:
    """One granted lock: who holds which bytes, how."""

    owner: Hashable
    offset: int
    length: int
    exclusive: bool


@dataclass(frozen=True)
class LockElement:
    """One element of a LOCK request, as the table needs it (MS-SMB2 2.2.26.1)."""

    offset: int
    length: int
    flags: int


@dataclass(frozen=True)
class Granted:
    """The request succeeded: answer STATUS_SUCCESS."""


@dataclass(frozen=True)
class Refused:
    """The request failed with ``status``; nothing it asked for is held."""

    status: NtStatus
    reason: str


@dataclass(frozen=True)
class Queued:
    """A blocking lock waits: answer STATUS_PENDING now, the final response when ``token`` ends."""

    token: Hashable


@dataclass(frozen=True)
class Completed:
    """A queued request ended (granted, or cancelled): send its final LOCK response."""

    token: Hashable
    status: NtStatus


LockOutcome = Granted | Refused | Queued


def _overlap(a_off: int, a_len: int, b_off: int, b_len: int) -> bool:
    """Do two ranges share a byte? A zero-length range overlaps a range strictly around its offset."""
    if a_len == 0 and b_len == 0:
        return False
    if a_len == 0:
        return b_off < a_off < b_off + b_len
    if b_len == 0:
        return a_off < b_off < a_off + a_len
    return a_off < b_off + b_len and b_off < a_off + a_len


def ranges_overlap(a_off: int, a_len: int, b_off: int, b_len: int) -> bool:
    """Public for tests and for callers that compare ranges (e.g. a lease break on WRITE)."""
    return _overlap(a_off, a_len, b_off, b_len)


def _lock_conflict(held: HeldLock, owner: Hashable, offset: int, length: int, exclusive: bool) -> bool:
    if not held.exclusive and not exclusive:
        return False
    if held.exclusive and not exclusive and held.owner == owner:
        return False
    return _overlap(held.offset, held.length, offset, length)


@dataclass
class _Waiter:
    token: Hashable
    owner: Hashable
    offset: int
    length: int
    exclusive: bool


@dataclass
class RangeLocks:
    """The byte-range locks of one file (one stream): held locks and the blocking requests."""

    held: list[HeldLock] = field(default_factory=list)
    waiting: list[_Waiter] = field(default_factory=list)

    # -- questions ----------------------------------------------------------------------------
    def _conflicts(self, owner: Hashable, offset: int, length: int, exclusive: bool) -> bool:
        return any(_lock_conflict(h, owner, offset, length, exclusive) for h in self.held)

    def check_io(self, owner: Hashable, offset: int, length: int, *, write: bool) -> NtStatus | None:
        """STATUS_FILE_LOCK_CONFLICT when a READ (``write=False``) or WRITE of the range is refused."""
        if length == 0:
            return None
        for h in self.held:
            if not _overlap(h.offset, h.length, offset, length):
                continue
            if write and (h.owner != owner or not h.exclusive):
                return NtStatus.FILE_LOCK_CONFLICT
            if not write and h.exclusive and h.owner != owner:
                return NtStatus.FILE_LOCK_CONFLICT
        return None

    def locks_of(self, owner: Hashable) -> list[HeldLock]:
        return [h for h in self.held if h.owner == owner]

    # -- requests -----------------------------------------------------------------------------
    def lock(self, owner: Hashable, elements: Sequence[LockElement], token: Hashable = None) -> LockOutcome:
        """A LOCK request whose first element is not an unlock (3.3.5.14.2).

        ``token`` names the request should it have to wait (the server uses the async id).
        """
        if not elements:
            return Refused(NtStatus.INVALID_PARAMETER, "LOCK without elements")
        blocking = [e for e in elements if not e.flags & LOCKFLAG_FAIL_IMMEDIATELY]
        if len(elements) > 1 and blocking:
            return Refused(NtStatus.INVALID_PARAMETER, "several lock elements, one of them blocking")
        taken: list[HeldLock] = []
        for e in elements:
            if e.flags & LOCKFLAG_UNLOCK or e.flags not in VALID_LOCK_FLAGS:
                self._undo(taken)
                return Refused(NtStatus.INVALID_PARAMETER, f"lock element flags {e.flags:#x}")
            if e.offset + e.length > RANGE_END:
                self._undo(taken)
                return Refused(NtStatus.INVALID_LOCK_RANGE, f"{e.offset:#x}+{e.length:#x} passes 2**64")
            exclusive = bool(e.flags & LOCKFLAG_EXCLUSIVE)
            if self._conflicts(owner, e.offset, e.length, exclusive):
                if e.flags & LOCKFLAG_FAIL_IMMEDIATELY:
                    self._undo(taken)
                    return Refused(NtStatus.LOCK_NOT_GRANTED, f"range {e.offset:#x}+{e.length:#x} is locked")
                if token is None:
                    return Refused(NtStatus.LOCK_NOT_GRANTED, "blocking lock without a token to wait on")
                self.waiting.append(_Waiter(token, owner, e.offset, e.length, exclusive))
                return Queued(token)
            lock = HeldLock(owner, e.offset, e.length, exclusive)
            self.held.append(lock)
            taken.append(lock)
        return Granted()

    def _undo(self, taken: Iterable[HeldLock]) -> None:
        for lock in taken:
            self.held.remove(lock)

    def unlock(self, owner: Hashable, elements: Sequence[LockElement]) -> tuple[NtStatus, list[Completed]]:
        """A LOCK request whose first element is an unlock (3.3.5.14.1); waiters that now fit."""
        status = NtStatus.SUCCESS
        for e in elements:
            # UNLOCK alone: smbtorture's smb2.lock.valid-request expects UNLOCK|FAIL_IMMEDIATELY to be
            # STATUS_INVALID_PARAMETER too (3.3.5.14.1 lets a server ignore the flag; Samba does not).
            if e.flags != LOCKFLAG_UNLOCK:
                status = NtStatus.INVALID_PARAMETER
                break
            match = self._match(owner, e.offset, e.length)
            if match is None:
                status = NtStatus.RANGE_NOT_LOCKED
                break
            self.held.remove(match)
        return status, self._wake()

    def _match(self, owner: Hashable, offset: int, length: int) -> HeldLock | None:
        # An exclusive lock goes first when a shared one is stacked on the same range.
        candidates = [h for h in self.held if h.owner == owner and h.offset == offset and h.length == length]
        candidates.sort(key=lambda h: not h.exclusive)
        return candidates[0] if candidates else None

    def cancel(self, token: Hashable) -> list[Completed]:
        """CANCEL of a waiting request: it ends with STATUS_CANCELLED (nothing if it is not waiting)."""
        for w in self.waiting:
            if w.token == token:
                self.waiting.remove(w)
                return [Completed(token, NtStatus.CANCELLED), *self._wake()]
        return []

    def release(self, owner: Hashable) -> list[Completed]:
        """The open closed: its locks go, its waiters end with STATUS_RANGE_NOT_LOCKED (what Samba
        answers a blocking lock whose handle closed), others' waiters may fit now."""
        self.held = [h for h in self.held if h.owner != owner]
        done = [Completed(w.token, NtStatus.RANGE_NOT_LOCKED) for w in self.waiting if w.owner == owner]
        self.waiting = [w for w in self.waiting if w.owner != owner]
        return done + self._wake()

    def _wake(self) -> list[Completed]:
        """Grant every waiter that fits now, in arrival order (an earlier grant may shut out a later one)."""
        done: list[Completed] = []
        still: list[_Waiter] = []
        for w in self.waiting:
            if self._conflicts(w.owner, w.offset, w.length, w.exclusive):
                still.append(w)
                continue
            self.held.append(HeldLock(w.owner, w.offset, w.length, w.exclusive))
            done.append(Completed(w.token, NtStatus.SUCCESS))
        self.waiting = still
        return done
