"""Oplocks and leases of the whole server: what to grant, what to break, when a waiting CREATE may go on.

Sans-IO: a ``CachingTable`` takes the server's questions ("a new open on this path: whom must I
break first?", "grant what?", "a write by this open", "an acknowledgment arrived", "it is now T")
and answers with small frozen events (``OplockBreak``, ``LeaseBreak``) that the server turns into
OPLOCK_BREAK notifications. Clocks are passed in (``now``), never read: a break that needs an
acknowledgment carries a deadline, and ``expire(now)`` breaks overdue holders to NONE, as a
Windows server does when the client stays silent (MS-SMB2 3.3.2.1, 3.3.2.5).

Rules (MS-SMB2 3.3.4.6-7, 3.3.5.9.8/11, 3.3.5.22, with the object store behaviour of MS-FSA
2.1.5.18 as Windows and Samba's smbd show it to smbtorture):

=========================================  ========================================================
event                                      effect on the holders of OTHER opens of the same file
=========================================  ========================================================
open                                       BATCH/EXCLUSIVE -> II (NONE if the open overwrites),
                                           acknowledgment required; a lease with WRITE loses WRITE
                                           (and READ if the open overwrites), acknowledgment
                                           required unless the lease was READ only; II / READ
                                           leases break to NONE without acknowledgment only when
                                           the open overwrites.
open that would meet a sharing violation   only a lease with HANDLE or a BATCH oplock of the
                                           conflicting open is broken (HANDLE goes, BATCH -> II);
                                           the CREATE re-checks sharing after the acknowledgment.
write, set end of file, byte-range lock    II oplocks (the writer's own too) and READ caching of
                                           other lease keys break to NONE (no wait: the write
                                           goes on at once).
rename or delete by another open           HANDLE caching (and BATCH) breaks first, then it runs.
acknowledgment missing at the deadline     the holder is NONE, the waiting CREATE goes on.
a lease already breaking                   nothing new is announced; what the request needs is
                                           kept, and the acknowledgment starts the next step at
                                           once (RH -> R with acknowledgment, then R -> NONE),
                                           the requests waiting until the steps are over.
=========================================  ========================================================

Who waits: a request waits for an acknowledgment only when the break takes WRITE away (BATCH and
EXCLUSIVE oplocks, leases with WRITE), or HANDLE for a sharing violation, rename or delete; a
lease break RH -> NONE for an overwrite wants its acknowledgment but the open goes on at once.

Grants: a lease state is one of R, RH, RW, RWH (anything else asks for nothing and gets NONE);
WRITE only to the only lease key with opens on the file, READ only next to an oplock; directories
get at most RH and no oplock. An oplock of BATCH or EXCLUSIVE only to the only open of the file,
else II, and none next to a lease with HANDLE. A second open with the same lease key shares the
lease and may upgrade it (never downgrade it) to a strict superset it can hold as asked (with
other lease keys on the file, asking for WRITE changes nothing); while the lease is breaking it
gets the current state with BREAK_IN_PROGRESS. Valid lease states on the wire (3.3.4.7): NONE,
R, RW, RH; a break that would leave HANDLE alone leaves NONE.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

from .constants import LeaseFlags, LeaseState, NtStatus, OplockLevel

R = int(LeaseState.READ_CACHING)
H = int(LeaseState.HANDLE_CACHING)
W = int(LeaseState.WRITE_CACHING)
VALID_LEASE_STATES = frozenset({0, R, R | H, R | W, R | W | H})

#: What a Windows server waits for an acknowledgment (MS-SMB2 3.3.2.1 <246>: 35 s) by default.
DEFAULT_BREAK_TIMEOUT = 35.0

LeaseId = tuple[bytes, bytes]  # (ClientGuid, LeaseKey): GlobalLeaseTableList lookup keys


def _wire_state(state: int) -> int:
    """A state a break may announce: HANDLE alone is none of NONE, R, RW, RH."""
    return 0 if state == H else state


@dataclass(frozen=True)
class OplockBreak:
    """Send an Oplock Break Notification (2.2.23.1) for ``open_id``."""

    open_id: Hashable
    new_level: int
    ack_required: bool


@dataclass(frozen=True)
class LeaseBreak:
    """Send a Lease Break Notification (2.2.23.2) to the lease's client."""

    lease: LeaseId
    current_state: int
    new_state: int
    new_epoch: int
    ack_required: bool


Break = OplockBreak | LeaseBreak


@dataclass(frozen=True)
class Grant:
    """What the CREATE response says: OplockLevel, and for a lease its state, flags and epoch."""

    oplock_level: int
    lease_state: int = 0
    lease_flags: int = 0
    epoch: int = 0
    version: int = 0  # the lease's version (its first open's): the response context's layout


@dataclass
class _Lease:
    ident: LeaseId
    path: str
    version: int
    state: int = 0
    epoch: int = 0
    breaking: bool = False
    break_to: int = 0
    deadline: float | None = None
    opens: set[Hashable] = field(default_factory=set)
    blocking: bool = False  # requests wait for this break's acknowledgment
    requested: int = 0  # while breaking: what every request since the break began asked it to keep


@dataclass
class _Oplock:
    open_id: Hashable
    path: str
    level: int
    breaking: bool = False
    break_to: int = 0
    deadline: float | None = None
    told_without_ack: bool = False  # the last break needed no acknowledgment (see ack_oplock)


@dataclass
class CachingTable:
    """Every open's caching state; one per server."""

    break_timeout: float = DEFAULT_BREAK_TIMEOUT
    _opens: dict[str, set[Hashable]] = field(default_factory=dict)  # path -> open ids
    _oplocks: dict[Hashable, _Oplock] = field(default_factory=dict)
    _leases: dict[LeaseId, _Lease] = field(default_factory=dict)
    _lease_of: dict[Hashable, LeaseId] = field(default_factory=dict)
    _stat_opens: set[Hashable] = field(default_factory=set)  # attributes-only opens: no bar to a grant
    _followups: list[Break] = field(default_factory=list)  # see ack_lease

    # -- questions ----------------------------------------------------------------------------
    def oplock_level(self, open_id: Hashable) -> int:
        hold = self._oplocks.get(open_id)
        if hold is not None:
            return hold.level
        return OplockLevel.LEASE if open_id in self._lease_of else OplockLevel.NONE

    def lease_state(self, ident: LeaseId) -> int:
        lease = self._leases.get(ident)
        return lease.state if lease is not None else 0

    def lease_of(self, open_id: Hashable) -> LeaseId | None:
        return self._lease_of.get(open_id)

    def lease_epoch(self, ident: LeaseId) -> int:
        lease = self._leases.get(ident)
        return lease.epoch if lease is not None else 0

    def must_wait(self, path: str, *, lease: LeaseId | None = None, open_id: Hashable | None = None) -> bool:
        """Does a CREATE (or rename, delete) on ``path`` still wait for an acknowledgment?

        ``lease`` and ``open_id`` are the requester's own: a second open with a lease key that is
        breaking gets BREAK_IN_PROGRESS at once, and an open never waits for its own acknowledgment.
        """
        for other in self._others(path, open_id, lease):
            hold = self._oplocks.get(other)
            if hold is not None and hold.breaking and hold.deadline is not None:
                return True
            ident = self._lease_of.get(other)
            held = self._leases.get(ident) if ident is not None else None
            if held is not None and held.breaking and held.blocking and held.deadline is not None:
                return True
        return False

    def next_deadline(self) -> float | None:
        """When ``expire`` has something to do next (for the I/O adapter's one timer)."""
        deadlines = [h.deadline for h in self._oplocks.values() if h.breaking and h.deadline is not None]
        deadlines += [le.deadline for le in self._leases.values() if le.breaking and le.deadline is not None]
        return min(deadlines, default=None)

    def in_flight(self) -> list[Break]:
        """Breaks announced and not acknowledged yet, as they were announced: what a server settles
        itself when the connection that carried one is gone (MS-SMB2 3.3.4.6-7: a break nobody can
        receive is completed at once, never waited out)."""
        out: list[Break] = [OplockBreak(h.open_id, h.break_to, True) for h in self._oplocks.values() if h.breaking]
        out += [LeaseBreak(le.ident, le.state, le.break_to, le.epoch if le.version >= 2 else 0, True)
                for le in self._leases.values() if le.breaking]
        return out

    def check_lease_key(self, ident: LeaseId, path: str) -> NtStatus | None:
        """3.3.5.9.8: a lease key already used for another file fails the CREATE."""
        lease = self._leases.get(ident)
        if lease is not None and lease.path != path and lease.opens:
            return NtStatus.INVALID_PARAMETER
        return None

    # -- breaks -------------------------------------------------------------------------------
    def _others(self, path: str, open_id: Hashable | None, ident: LeaseId | None) -> Iterable[Hashable]:
        for other in sorted(self._opens.get(path, ()), key=repr):
            if other == open_id:
                continue
            if ident is not None and self._lease_of.get(other) == ident:
                continue
            yield other

    def _break_oplock(self, hold: _Oplock, to: int, now: float) -> OplockBreak | None:
        if hold.breaking:
            if to < hold.break_to:
                hold.break_to = to  # a stronger break folds into the one in flight
            return None
        if hold.level <= to:
            return None
        ack = hold.level in (OplockLevel.EXCLUSIVE, OplockLevel.BATCH)
        if ack:
            hold.breaking, hold.break_to, hold.deadline = True, to, now + self.break_timeout
        else:
            hold.level, hold.told_without_ack = to, True
        return OplockBreak(hold.open_id, to, ack)

    def _break_lease(self, lease: _Lease, to: int, now: float, blocking: bool = False) -> LeaseBreak | None:
        """``blocking``: the request that causes it waits for the acknowledgment even if WRITE is not
        taken away (HANDLE for a sharing violation, a rename or a delete)."""
        to = _wire_state(to & lease.state)
        if lease.breaking:
            # A break in flight is not changed (its acknowledgment must match what was announced);
            # what this request needs is remembered, and the acknowledgment starts the next step
            # (``ack_lease``: smbtorture smb2.lease.breaking3).
            lease.requested &= to
            return None
        if to == lease.state:
            return None
        current = lease.state
        ack = current != R
        if lease.version >= 2:
            lease.epoch += 1
        if ack:
            lease.breaking, lease.break_to, lease.deadline = True, to, now + self.break_timeout
            lease.requested = to
            # Only a break that takes WRITE away (dirty data to flush) or a blocking one makes the
            # request wait; RH -> NONE for an overwrite is acknowledged later (smb2.lease.breaking4).
            lease.blocking = blocking or bool(current & ~to & W)
        else:
            lease.state = to
        return LeaseBreak(lease.ident, current, to, lease.epoch if lease.version >= 2 else 0, ack)

    def _break_each(self, others: Iterable[Hashable], now: float, *, oplock_to: int,
                    lease_mask: int, only_levels: Iterable[int] | None = None,
                    blocking: bool = False) -> list[Break]:
        out: list[Break] = []
        seen: set[LeaseId] = set()
        levels = set(only_levels) if only_levels is not None else None
        for other in others:
            hold = self._oplocks.get(other)
            if hold is not None and (levels is None or hold.level in levels):
                ev = self._break_oplock(hold, oplock_to, now)
                if ev is not None:
                    out.append(ev)
            ident = self._lease_of.get(other)
            if ident is not None and ident not in seen:
                seen.add(ident)
                lease = self._leases[ident]
                ev2 = self._break_lease(lease, lease.state & lease_mask, now, blocking)
                if ev2 is not None:
                    out.append(ev2)
        return out

    def before_open(self, path: str, *, now: float, lease: LeaseId | None = None, overwrite: bool = False,
                    sharing_conflicts: Iterable[Hashable] = (), leases: bool = True) -> list[Break]:
        """Breaks a new open of ``path`` causes; the CREATE waits while ``must_wait(path)``.

        ``sharing_conflicts``: open ids the new open would meet a sharing violation with; their
        HANDLE caching (and BATCH) goes first so that a client may close the cached handle.
        ``leases`` False: an open that is a stat open for leases but not for oplocks (READ_CONTROL)
        breaks oplocks only.
        """
        conflicts = set(sharing_conflicts)
        if conflicts:
            return self._break_for_sharing(path, lease, conflicts, now)
        out: list[Break] = []
        for other in self._others(path, None, lease):
            hold = self._oplocks.get(other)
            if hold is not None:
                if hold.level in (OplockLevel.EXCLUSIVE, OplockLevel.BATCH):
                    ev = self._break_oplock(hold, OplockLevel.NONE if overwrite else OplockLevel.II, now)
                elif overwrite:
                    ev = self._break_oplock(hold, OplockLevel.NONE, now)
                else:
                    ev = None
                if ev is not None:
                    out.append(ev)
        seen: set[LeaseId] = set()
        for other in self._others(path, None, lease) if leases else ():
            ident = self._lease_of.get(other)
            if ident is None or ident in seen:
                continue
            seen.add(ident)
            le = self._leases[ident]
            keep = le.state & ~W
            if overwrite:
                keep &= ~R
            if other in conflicts:
                keep &= ~H
            ev2 = self._break_lease(le, keep, now)
            if ev2 is not None:
                out.append(ev2)
        return out

    def _break_for_sharing(self, path: str, lease: LeaseId | None, conflicts: set[Hashable],
                           now: float) -> list[Break]:
        """MS-FSA 2.1.5.1.2: an open that meets a sharing violation first breaks what lets a client
        keep a handle it no longer uses (BATCH -> II, a lease's HANDLE), so that it may close it; it
        breaks nothing else, since it fails if the conflict stays (smbtorture smb2.oplock.exclusive1:
        an EXCLUSIVE oplock is not broken by an open that fails with a sharing violation)."""
        out: list[Break] = []
        seen: set[LeaseId] = set()
        for other in self._others(path, None, lease):
            if other not in conflicts:
                continue
            hold = self._oplocks.get(other)
            if hold is not None and hold.level == OplockLevel.BATCH:
                ev = self._break_oplock(hold, OplockLevel.II, now)
                if ev is not None:
                    out.append(ev)
            ident = self._lease_of.get(other)
            if ident is not None and ident not in seen:
                seen.add(ident)
                le = self._leases[ident]
                if le.state & H:
                    ev2 = self._break_lease(le, le.state & ~H, now, blocking=True)
                    if ev2 is not None:
                        out.append(ev2)
        return out

    def on_write(self, path: str, open_id: Hashable, *, now: float) -> list[Break]:
        """A WRITE, SET_INFO end-of-file or byte-range LOCK through ``open_id``: others' read caches go."""
        ident = self._lease_of.get(open_id)
        out = self._break_each(self._others(path, open_id, ident), now, oplock_to=OplockLevel.NONE,
                               lease_mask=H, only_levels=(OplockLevel.II,))
        own = self._oplocks.get(open_id)
        if own is not None and own.level == OplockLevel.II and not own.breaking:
            # The writer's own level II oplock goes too (smbtorture smb2.oplock.batch1, levelii500:
            # Windows and Samba send this "self break"); its own lease keeps READ (same key).
            ev = self._break_oplock(own, OplockLevel.NONE, now)
            if ev is not None:
                out.append(ev)
        return out

    def before_rename_or_delete(self, path: str, open_id: Hashable, *, now: float,
                                lease: LeaseId | None = None) -> list[Break]:
        """Rename or delete-on-close through ``open_id`` (or a new open with DELETE_ON_CLOSE and
        lease key ``lease``, smbtorture smb2.lease.unlink): others' HANDLE caching and BATCH go first."""
        ident = self._lease_of.get(open_id) or lease
        return self._break_each(self._others(path, open_id, ident), now, oplock_to=OplockLevel.II,
                                lease_mask=R | W, only_levels=(OplockLevel.BATCH,), blocking=True)

    # -- grants -------------------------------------------------------------------------------
    def grant(self, path: str, open_id: Hashable, *, requested: int, lease: LeaseId | None = None,
              lease_state: int = 0, lease_version: int = 1, lease_epoch: int = 0, is_dir: bool = False,
              stat_open: bool = False) -> Grant:
        """Register a new open and decide its caching (after the breaks ``before_open`` asked for).

        ``stat_open``: the open has attributes/READ_CONTROL/SYNCHRONIZE access only; later grants
        do not count it as another open (smbtorture smb2.lease.statopen3: RWH next to a stat open).
        """
        self._opens.setdefault(path, set()).add(open_id)
        if stat_open:
            self._stat_opens.add(open_id)
        # A stat open holding no caching of its own is no bar; one holding a lease is a holder like
        # any other (smbtorture smb2.lease.statopen: its RWH lease is broken to RH by a second key).
        others = [o for o in self._others(path, open_id, lease)
                  if o not in self._stat_opens or o in self._lease_of or o in self._oplocks]
        if requested == OplockLevel.LEASE and lease is not None:
            return self._grant_lease(path, open_id, lease, lease_state, lease_version, lease_epoch, is_dir, others)
        if is_dir or requested not in (OplockLevel.II, OplockLevel.EXCLUSIVE, OplockLevel.BATCH):
            return Grant(OplockLevel.NONE)
        if any(self._holds_write_or_exclusive(o) or self._lease_has(o, H) for o in others):
            # A holder whose break timed out badly, or a lease with HANDLE caching: an oplock
            # cannot sit next to it (smbtorture smb2.lease.oplock: RH lease, oplock request -> NONE).
            return Grant(OplockLevel.NONE)
        level = requested if not others else OplockLevel.II
        self._oplocks[open_id] = _Oplock(open_id, path, level)
        return Grant(level)

    def adopt(self, path: str, open_id: Hashable, *, oplock_level: int = 0, lease: LeaseId | None = None,
              lease_state: int = 0, lease_version: int = 1, epoch: int = 0) -> None:
        """Register an open that already holds caching (a durable open restored after a restart)."""
        self._opens.setdefault(path, set()).add(open_id)
        if lease is not None:
            held = self._leases.setdefault(lease, _Lease(lease, path, lease_version, state=lease_state, epoch=epoch))
            held.opens.add(open_id)
            self._lease_of[open_id] = lease
        elif oplock_level in (OplockLevel.II, OplockLevel.EXCLUSIVE, OplockLevel.BATCH):
            self._oplocks[open_id] = _Oplock(open_id, path, oplock_level)

    def _lease_has(self, other: Hashable, bits: int) -> bool:
        ident = self._lease_of.get(other)
        return ident is not None and bool(self._leases[ident].state & bits)

    def _holds_write_or_exclusive(self, other: Hashable) -> bool:
        hold = self._oplocks.get(other)
        if hold is not None and hold.level in (OplockLevel.EXCLUSIVE, OplockLevel.BATCH):
            return True
        ident = self._lease_of.get(other)
        return ident is not None and bool(self._leases[ident].state & W)

    def _grant_lease(self, path: str, open_id: Hashable, ident: LeaseId, requested: int, version: int,
                     epoch: int, is_dir: bool, others: list[Hashable]) -> Grant:
        asked = requested if requested in VALID_LEASE_STATES else 0
        if is_dir:
            asked &= R | H
        want = asked
        if others:
            want &= ~W
            if any(self._holds_write_or_exclusive(o) for o in others):
                want = 0
            if any(o in self._oplocks and self._oplocks[o].level != OplockLevel.NONE for o in others):
                want &= R  # next to an oplock a lease gets READ only (smbtorture smb2.lease.oplock)
        lease = self._leases.get(ident)
        if lease is None or not lease.opens:
            lease = _Lease(ident, path, version, state=want, epoch=epoch + 1 if version >= 2 else 0)
            self._leases[ident] = lease
        elif lease.breaking:
            lease.opens.add(open_id)
            self._lease_of[open_id] = ident
            return Grant(OplockLevel.LEASE, lease.state, LeaseFlags.BREAK_IN_PROGRESS, lease.epoch, lease.version)
        elif asked | lease.state == asked and asked != lease.state and asked == want:
            # An upgrade: the request is a strict superset of what is held and can be held next to
            # the other opens as asked (a contended request with WRITE changes nothing, smbtorture
            # smb2.lease.upgrade3), else the lease stays as it is.
            lease.state = want
            if lease.version >= 2:
                lease.epoch += 1
        lease.opens.add(open_id)
        self._lease_of[open_id] = ident
        return Grant(OplockLevel.LEASE, lease.state, 0, lease.epoch, lease.version)

    # -- acknowledgments, timeouts, close -----------------------------------------------------
    def ack_oplock(self, open_id: Hashable, level: int) -> tuple[NtStatus, int]:
        """3.3.5.22.1: the status of the acknowledgment and the open's level afterwards."""
        hold = self._oplocks.get(open_id)
        if hold is not None and not hold.breaking and hold.told_without_ack:
            # An acknowledgment of a break that needed none (II -> NONE): Windows and Samba answer
            # STATUS_INVALID_OPLOCK_PROTOCOL (smbtorture smb2.oplock.levelii500), not the
            # INVALID_DEVICE_STATE of an open that was never told of a break.
            hold.told_without_ack = False
            return NtStatus.INVALID_OPLOCK_PROTOCOL, hold.level
        if hold is None or not hold.breaking:
            return NtStatus.INVALID_DEVICE_STATE, self.oplock_level(open_id)
        if level == OplockLevel.LEASE:
            self._end_oplock(hold, OplockLevel.NONE)
            return NtStatus.INVALID_PARAMETER, OplockLevel.NONE
        allowed = {OplockLevel.EXCLUSIVE: {OplockLevel.II, OplockLevel.NONE},
                   OplockLevel.BATCH: {OplockLevel.II, OplockLevel.NONE, OplockLevel.EXCLUSIVE},
                   OplockLevel.II: {OplockLevel.NONE}}.get(OplockLevel(hold.level), set())
        if level not in allowed:
            self._end_oplock(hold, OplockLevel.NONE)
            return NtStatus.INVALID_OPLOCK_PROTOCOL, OplockLevel.NONE
        # EXCLUSIVE in an acknowledgment completes the break with NONE; a client that keeps more
        # than the break left it gets what the break left.
        new = OplockLevel.NONE if level == OplockLevel.EXCLUSIVE else min(level, hold.break_to)
        self._end_oplock(hold, new)
        return NtStatus.SUCCESS, new

    def _end_oplock(self, hold: _Oplock, level: int) -> None:
        hold.level, hold.breaking, hold.break_to, hold.deadline = level, False, 0, None

    def ack_lease(self, ident: LeaseId, state: int, now: float | None = None) -> tuple[NtStatus, int]:
        """3.3.5.22.2: the status of the acknowledgment and the lease state afterwards.

        Two-step breaks (``now`` given): when requests that arrived during the break want less than
        was acknowledged, the next break starts at once, in the steps Windows takes (smbtorture
        smb2.lease.breaking3, v2_breaking3): a state with more than READ first loses all but READ
        and what is wanted (RH -> R, acknowledgment required, the requests keep waiting), then
        READ goes (R -> NONE, no acknowledgment). A step keeps the lease's epoch: it continues the
        break the client has already seen announced with its epoch (3.3.4.7 increments it once per
        break the object store indicates). The step's notification is in :meth:`take_followups`.
        """
        lease = self._leases.get(ident)
        if lease is None:
            return NtStatus.OBJECT_NAME_NOT_FOUND, 0
        if not lease.breaking:
            return NtStatus.UNSUCCESSFUL, lease.state
        if state & ~lease.break_to:
            return NtStatus.REQUEST_NOT_ACCEPTED, lease.state
        wanted, blocking = lease.requested & state, lease.blocking
        lease.state, lease.breaking, lease.break_to, lease.deadline, lease.blocking = state, False, 0, None, False
        lease.requested = 0
        if now is not None and wanted != state:
            step = _wire_state(wanted | R if state & ~R else wanted)
            event = LeaseBreak(lease.ident, state, step, lease.epoch if lease.version >= 2 else 0, state != R)
            if event.ack_required:
                lease.breaking, lease.break_to, lease.deadline = True, step, now + self.break_timeout
                lease.requested, lease.blocking = wanted, blocking
            else:
                lease.state = step
            self._followups.append(event)
        return NtStatus.SUCCESS, state

    def take_followups(self) -> list[Break]:
        """Breaks started by acknowledgments (two-step lease breaks) since the last call, to send."""
        out, self._followups = self._followups, []
        return out

    def expire(self, now: float) -> list[Hashable | LeaseId]:
        """Holders whose acknowledgment is overdue become NONE; returns who (open ids, lease ids)."""
        done: list[Hashable | LeaseId] = []
        for hold in self._oplocks.values():
            if hold.breaking and hold.deadline is not None and hold.deadline <= now:
                self._end_oplock(hold, OplockLevel.NONE)
                done.append(hold.open_id)
        for lease in self._leases.values():
            if lease.breaking and lease.deadline is not None and lease.deadline <= now:
                lease.state, lease.breaking, lease.break_to, lease.deadline = 0, False, 0, None
                lease.blocking, lease.requested = False, 0
                done.append(lease.ident)
        return done

    def close(self, open_id: Hashable) -> None:
        """The open is gone: its oplock goes; a lease goes with its last open."""
        for opens in self._opens.values():
            opens.discard(open_id)
        self._opens = {p: o for p, o in self._opens.items() if o}
        self._oplocks.pop(open_id, None)
        self._stat_opens.discard(open_id)
        ident = self._lease_of.pop(open_id, None)
        if ident is not None:
            lease = self._leases[ident]
            lease.opens.discard(open_id)
            if not lease.opens:
                del self._leases[ident]

    def renamed(self, old: str, new: str) -> None:
        """Keep following the file (and its leases, 3.3.5.9.8's Lease.Filename) under its new name."""
        if old in self._opens:
            self._opens[new] = self._opens.pop(old) | self._opens.get(new, set())
        for hold in self._oplocks.values():
            if hold.path == old:
                hold.path = new
        for lease in self._leases.values():
            if lease.path == old:
                lease.path = new
