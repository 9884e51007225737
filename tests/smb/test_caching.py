"""Oplock and lease table (harness/smb/caching.py): each rule of its docstring, with the clock passed in."""

from __future__ import annotations

import pytest

from harness.smb.caching import (
    DEFAULT_BREAK_TIMEOUT,
    CachingTable,
    Grant,
    LeaseBreak,
    OplockBreak,
)
from harness.smb.constants import LeaseFlags, NtStatus, OplockLevel

R, H, W = 1, 2, 4
G1, G2 = b"\x01" * 16, b"\x02" * 16
K1, K2 = b"\x11" * 16, b"\x22" * 16
A, B = (G1, K1), (G2, K2)


# -- oplocks ------------------------------------------------------------------------------------------


def test_batch_to_the_only_open_then_broken_to_ii_by_a_second_open() -> None:
    t = CachingTable()
    assert t.grant("f", 1, requested=OplockLevel.BATCH) == Grant(OplockLevel.BATCH)
    breaks = t.before_open("f", now=0.0)
    assert breaks == [OplockBreak(1, OplockLevel.II, ack_required=True)]
    assert t.must_wait("f") and t.next_deadline() == DEFAULT_BREAK_TIMEOUT
    assert t.ack_oplock(1, OplockLevel.II) == (NtStatus.SUCCESS, OplockLevel.II)
    assert not t.must_wait("f") and t.next_deadline() is None
    assert t.grant("f", 2, requested=OplockLevel.BATCH) == Grant(OplockLevel.II)


def test_an_overwriting_open_breaks_to_none() -> None:
    t = CachingTable()
    t.grant("f", 1, requested=OplockLevel.EXCLUSIVE)
    assert t.before_open("f", now=0.0, overwrite=True) == [OplockBreak(1, OplockLevel.NONE, True)]
    assert t.ack_oplock(1, OplockLevel.II) == (NtStatus.SUCCESS, OplockLevel.NONE)


def test_level_ii_breaks_without_ack_on_write_and_overwrite_only() -> None:
    t = CachingTable()
    t.grant("f", 1, requested=OplockLevel.II)
    t.grant("f", 2, requested=OplockLevel.II)
    assert t.before_open("f", now=0.0) == []
    assert t.on_write("f", 2, now=0.0) == [OplockBreak(1, OplockLevel.NONE, ack_required=False),
                                           OplockBreak(2, OplockLevel.NONE, ack_required=False)]
    assert t.oplock_level(1) == OplockLevel.NONE and t.oplock_level(2) == OplockLevel.NONE
    assert not t.must_wait("f")
    # Acknowledging a break that needed none: STATUS_INVALID_OPLOCK_PROTOCOL (smb2.oplock.levelii500).
    assert t.ack_oplock(1, OplockLevel.NONE) == (NtStatus.INVALID_OPLOCK_PROTOCOL, OplockLevel.NONE)
    assert t.ack_oplock(1, OplockLevel.NONE) == (NtStatus.INVALID_DEVICE_STATE, OplockLevel.NONE)


def test_a_write_breaks_the_writers_own_level_ii_but_not_batch() -> None:
    t = CachingTable()
    t.grant("f", 1, requested=OplockLevel.BATCH)
    assert t.on_write("f", 1, now=0.0) == []
    t.before_open("f", now=0.0)
    t.ack_oplock(1, OplockLevel.II)
    assert t.on_write("f", 1, now=0.0) == [OplockBreak(1, OplockLevel.NONE, ack_required=False)]


def test_a_silent_client_is_broken_to_none_at_the_deadline() -> None:
    t = CachingTable(break_timeout=2.0)
    t.grant("f", 1, requested=OplockLevel.BATCH)
    t.before_open("f", now=10.0)
    assert t.expire(11.9) == [] and t.must_wait("f")
    assert t.expire(12.0) == [1]
    assert t.oplock_level(1) == OplockLevel.NONE and not t.must_wait("f")


@pytest.mark.parametrize(("held", "ack", "status"), [
    (OplockLevel.BATCH, OplockLevel.LEASE, NtStatus.INVALID_PARAMETER),
    (OplockLevel.EXCLUSIVE, OplockLevel.BATCH, NtStatus.INVALID_OPLOCK_PROTOCOL),
    (OplockLevel.EXCLUSIVE, OplockLevel.EXCLUSIVE, NtStatus.INVALID_OPLOCK_PROTOCOL),
    (OplockLevel.BATCH, OplockLevel.BATCH, NtStatus.INVALID_OPLOCK_PROTOCOL),
])
def test_bad_oplock_acknowledgments(held: int, ack: int, status: NtStatus) -> None:
    t = CachingTable()
    t.grant("f", 1, requested=held)
    t.before_open("f", now=0.0)
    assert t.ack_oplock(1, ack) == (status, OplockLevel.NONE)
    assert not t.must_wait("f")


def test_ack_without_a_break_is_invalid_device_state() -> None:
    t = CachingTable()
    t.grant("f", 1, requested=OplockLevel.BATCH)
    assert t.ack_oplock(1, OplockLevel.II) == (NtStatus.INVALID_DEVICE_STATE, OplockLevel.BATCH)
    assert t.ack_oplock(99, OplockLevel.II)[0] == NtStatus.INVALID_DEVICE_STATE


def test_batch_with_exclusive_ack_completes_with_none() -> None:
    t = CachingTable()
    t.grant("f", 1, requested=OplockLevel.BATCH)
    t.before_open("f", now=0.0)
    assert t.ack_oplock(1, OplockLevel.EXCLUSIVE) == (NtStatus.SUCCESS, OplockLevel.NONE)


def test_no_oplock_on_directories() -> None:
    assert CachingTable().grant("d", 1, requested=OplockLevel.BATCH, is_dir=True) == Grant(OplockLevel.NONE)


# -- leases -------------------------------------------------------------------------------------------


def test_rwh_to_the_only_lease_then_a_second_key_breaks_write_away() -> None:
    t = CachingTable()
    g = t.grant("f", 1, requested=OplockLevel.LEASE, lease=A, lease_state=R | W | H, lease_version=2, lease_epoch=0)
    assert g == Grant(OplockLevel.LEASE, R | W | H, 0, 1, version=2)
    breaks = t.before_open("f", now=0.0, lease=B)
    assert breaks == [LeaseBreak(A, R | W | H, R | H, new_epoch=2, ack_required=True)]
    assert t.must_wait("f")
    assert t.ack_lease(A, R | W | H) == (NtStatus.REQUEST_NOT_ACCEPTED, R | W | H)
    assert t.ack_lease(A, R | H) == (NtStatus.SUCCESS, R | H)
    assert not t.must_wait("f")
    assert t.grant("f", 2, requested=OplockLevel.LEASE, lease=B, lease_state=R | W | H) == Grant(
        OplockLevel.LEASE, R | H, 0, 0, version=1)


def test_read_lease_breaks_on_write_without_ack() -> None:
    t = CachingTable()
    t.grant("f", 1, requested=OplockLevel.LEASE, lease=A, lease_state=R)
    t.grant("f", 2, requested=OplockLevel.NONE)
    assert t.on_write("f", 2, now=0.0) == [LeaseBreak(A, R, 0, 0, ack_required=False)]
    assert t.lease_state(A) == 0 and not t.must_wait("f")


def test_read_handle_lease_on_write_needs_an_ack_and_keeps_no_lone_handle() -> None:
    t = CachingTable()
    t.grant("f", 1, requested=OplockLevel.LEASE, lease=A, lease_state=R | H)
    t.grant("f", 2, requested=OplockLevel.NONE)
    assert t.on_write("f", 2, now=0.0) == [LeaseBreak(A, R | H, 0, 0, ack_required=True)]


def test_same_key_upgrades_and_shares_the_lease() -> None:
    t = CachingTable()
    assert t.grant("f", 1, requested=OplockLevel.LEASE, lease=A, lease_state=R).lease_state == R
    assert t.grant("f", 2, requested=OplockLevel.LEASE, lease=A, lease_state=R | W | H).lease_state == R | W | H
    # a request that is not a superset never downgrades the lease
    assert t.grant("f", 3, requested=OplockLevel.LEASE, lease=A, lease_state=R).lease_state == R | W | H
    assert t.before_open("f", now=0.0, lease=A) == []  # the same key breaks nothing


def test_open_while_breaking_gets_break_in_progress() -> None:
    t = CachingTable()
    t.grant("f", 1, requested=OplockLevel.LEASE, lease=A, lease_state=R | W | H)
    t.before_open("f", now=0.0, lease=B)
    g = t.grant("f", 2, requested=OplockLevel.LEASE, lease=A, lease_state=R | W | H)
    assert g.lease_state == R | W | H and g.lease_flags == LeaseFlags.BREAK_IN_PROGRESS


@pytest.mark.parametrize("state", [W, H, W | H])
def test_lease_states_without_read_grant_nothing(state: int) -> None:
    assert CachingTable().grant("f", 1, requested=OplockLevel.LEASE, lease=A, lease_state=state).lease_state == 0


def test_directory_lease_at_most_read_handle() -> None:
    g = CachingTable().grant("d", 1, requested=OplockLevel.LEASE, lease=A, lease_state=R | W | H, is_dir=True)
    assert g.lease_state == R | H


def test_sharing_conflict_breaks_handle_caching() -> None:
    t = CachingTable()
    t.grant("f", 1, requested=OplockLevel.LEASE, lease=A, lease_state=R | H)
    assert t.before_open("f", now=0.0, lease=B, sharing_conflicts=[1]) == [LeaseBreak(A, R | H, R, 0, True)]


def test_sharing_conflict_breaks_only_batch_and_handle_of_the_conflicting_opens() -> None:
    t = CachingTable()
    t.grant("f", 1, requested=OplockLevel.EXCLUSIVE)
    assert t.before_open("f", now=0.0, sharing_conflicts=[1]) == []  # smb2.oplock.exclusive1
    t2 = CachingTable()
    t2.grant("f", 1, requested=OplockLevel.BATCH)
    assert t2.before_open("f", now=0.0, overwrite=True, sharing_conflicts=[1]) == [OplockBreak(1, OplockLevel.II, True)]
    t3 = CachingTable()
    t3.grant("f", 1, requested=OplockLevel.LEASE, lease=A, lease_state=R | W | H)
    assert t3.before_open("f", now=0.0, lease=B, sharing_conflicts=[1]) == [LeaseBreak(A, R | W | H, R | W, 0, True)]


def test_rename_breaks_handle_caching_and_waits() -> None:
    t = CachingTable()
    t.grant("f", 1, requested=OplockLevel.LEASE, lease=A, lease_state=R | H)
    t.grant("f", 2, requested=OplockLevel.NONE)
    assert t.before_rename_or_delete("f", 2, now=0.0) == [LeaseBreak(A, R | H, R, 0, True)]
    assert t.must_wait("f")
    t.renamed("f", "g")
    assert t.must_wait("g") and not t.must_wait("f")


@pytest.mark.parametrize(("ident", "status"), [(B, NtStatus.OBJECT_NAME_NOT_FOUND), (A, NtStatus.UNSUCCESSFUL)])
def test_bad_lease_acknowledgments(ident: tuple, status: NtStatus) -> None:
    t = CachingTable()
    t.grant("f", 1, requested=OplockLevel.LEASE, lease=A, lease_state=R | H)
    assert t.ack_lease(ident, R)[0] == status


def test_lease_key_for_another_file_and_close() -> None:
    t = CachingTable()
    t.grant("f", 1, requested=OplockLevel.LEASE, lease=A, lease_state=R)
    assert t.check_lease_key(A, "g") == NtStatus.INVALID_PARAMETER
    assert t.check_lease_key(A, "f") is None
    t.close(1)
    assert t.check_lease_key(A, "g") is None and t.lease_state(A) == 0


# -- rules smbtorture showed (Windows and Samba behaviour) ----------------------------------------


def test_a_break_in_flight_keeps_what_it_announced() -> None:
    """smb2.lease.breaking3: an overwrite while RWH -> RH is in flight sends nothing new; the RH
    acknowledgment is accepted, and the next open breaks further."""
    t = CachingTable()
    t.grant("f", 1, requested=OplockLevel.LEASE, lease=A, lease_state=R | W | H)
    assert t.before_open("f", now=0.0) == [LeaseBreak(A, R | W | H, R | H, 0, True)]
    assert t.before_open("f", now=0.0, overwrite=True) == []
    assert t.must_wait("f")
    assert t.ack_lease(A, R | H) == (NtStatus.SUCCESS, R | H)
    assert t.before_open("f", now=0.0, overwrite=True) == [LeaseBreak(A, R | H, 0, 0, True)]


@pytest.mark.parametrize("version", [1, 2])
def test_a_break_asked_for_more_while_in_flight_goes_on_in_two_steps(version: int) -> None:
    """smb2.lease.breaking3 / v2_breaking3 (MS-SMB2 3.3.4.7, as Windows and smbd do it): RWH -> RH is
    in flight for a plain open when an overwrite wants NONE; nothing new is sent then. The RH
    acknowledgment starts RH -> R (acknowledgment required, same epoch) and both opens keep waiting;
    the R acknowledgment starts R -> NONE (no acknowledgment) and the opens go on."""
    t = CachingTable()
    t.grant("f", 1, requested=OplockLevel.LEASE, lease=A, lease_state=R | W | H, lease_version=version,
            lease_epoch=0x11)
    epoch = 0x13 if version == 2 else 0
    assert t.before_open("f", now=0.0) == [LeaseBreak(A, R | W | H, R | H, epoch, True)]
    assert t.before_open("f", now=1.0, overwrite=True) == []
    assert t.take_followups() == []
    assert t.ack_lease(A, R | H, now=2.0) == (NtStatus.SUCCESS, R | H)
    assert t.take_followups() == [LeaseBreak(A, R | H, R, epoch, True)]
    assert t.take_followups() == []  # taken once
    assert t.must_wait("f") and t.next_deadline() == 2.0 + DEFAULT_BREAK_TIMEOUT
    assert t.lease_state(A) == R | H and t.lease_epoch(A) == epoch
    assert t.grant("f", 3, requested=OplockLevel.LEASE, lease=A, lease_state=R | W | H, lease_version=version) \
        == Grant(OplockLevel.LEASE, R | H, LeaseFlags.BREAK_IN_PROGRESS, epoch, version)
    assert t.ack_lease(A, R | H, now=3.0)[0] == NtStatus.REQUEST_NOT_ACCEPTED  # the step announced R
    assert t.ack_lease(A, R, now=3.0) == (NtStatus.SUCCESS, R)
    assert t.take_followups() == [LeaseBreak(A, R, 0, epoch, False)]
    assert not t.must_wait("f") and t.lease_state(A) == 0 and t.next_deadline() is None
    assert t.before_open("f", now=4.0, overwrite=True) == []  # nothing left to break


def test_an_acknowledgment_that_meets_every_request_starts_no_step() -> None:
    """Requests during the break that want no less than it announced (or acknowledgments that give
    up more than announced) end the break there."""
    t = CachingTable()
    t.grant("f", 1, requested=OplockLevel.LEASE, lease=A, lease_state=R | W | H)
    t.before_open("f", now=0.0)
    assert t.before_open("f", now=0.0) == []  # wants RH too
    assert t.ack_lease(A, R | H, now=1.0) == (NtStatus.SUCCESS, R | H)
    assert t.take_followups() == [] and not t.must_wait("f")
    t2 = CachingTable()
    t2.grant("f", 1, requested=OplockLevel.LEASE, lease=A, lease_state=R | W | H)
    t2.before_open("f", now=0.0)
    t2.before_open("f", now=0.0, overwrite=True)
    assert t2.ack_lease(A, 0, now=1.0) == (NtStatus.SUCCESS, 0)  # gave up everything at once
    assert t2.take_followups() == [] and not t2.must_wait("f")


def test_a_step_nobody_acknowledges_times_out_to_none() -> None:
    t = CachingTable()
    t.grant("f", 1, requested=OplockLevel.LEASE, lease=A, lease_state=R | W | H)
    t.before_open("f", now=0.0)
    t.before_open("f", now=0.0, overwrite=True)
    t.ack_lease(A, R | H, now=1.0)
    assert t.take_followups() == [LeaseBreak(A, R | H, R, 0, True)]
    assert t.expire(1.0 + DEFAULT_BREAK_TIMEOUT) == [A]
    assert t.lease_state(A) == 0 and not t.must_wait("f") and t.take_followups() == []


def test_only_a_break_taking_write_or_handle_for_sharing_makes_the_open_wait() -> None:
    """smb2.lease.breaking4: RH -> NONE for an overwrite wants an acknowledgment, the open goes on."""
    t = CachingTable()
    t.grant("f", 1, requested=OplockLevel.LEASE, lease=A, lease_state=R | H)
    assert t.before_open("f", now=0.0, overwrite=True) == [LeaseBreak(A, R | H, 0, 0, True)]
    assert not t.must_wait("f")
    t2 = CachingTable()
    t2.grant("f", 1, requested=OplockLevel.LEASE, lease=A, lease_state=R | H)
    t2.before_open("f", now=0.0, sharing_conflicts=[1])
    assert t2.must_wait("f")


@pytest.mark.parametrize(("held1", "upgrade", "result"), [
    (R, R | H, R | H), (R, R | W, R), (R, R | W | H, R), (R | H, R | W | H, R | H), (R | H, R, R | H)])
def test_contended_upgrade_changes_only_to_what_can_be_held_as_asked(held1: int, upgrade: int, result: int) -> None:
    """smb2.lease.upgrade3: with a second lease key on the file, an upgrade asking for WRITE changes nothing."""
    t = CachingTable()
    t.grant("f", 1, requested=OplockLevel.LEASE, lease=A, lease_state=held1)
    t.grant("f", 2, requested=OplockLevel.LEASE, lease=B, lease_state=R)
    assert t.grant("f", 3, requested=OplockLevel.LEASE, lease=A, lease_state=upgrade).lease_state == result


def test_leases_and_oplocks_side_by_side() -> None:
    """smb2.lease.oplock: next to an oplock a lease gets READ only; next to a HANDLE lease no oplock."""
    t = CachingTable()
    t.grant("f", 1, requested=OplockLevel.II)
    assert t.grant("f", 2, requested=OplockLevel.LEASE, lease=A, lease_state=R | H).lease_state == R
    t2 = CachingTable()
    t2.grant("f", 1, requested=OplockLevel.LEASE, lease=A, lease_state=R | H)
    assert t2.grant("f", 2, requested=OplockLevel.BATCH) == Grant(OplockLevel.NONE)
    t3 = CachingTable()
    t3.grant("f", 1, requested=OplockLevel.LEASE, lease=A, lease_state=R)
    assert t3.grant("f", 2, requested=OplockLevel.BATCH) == Grant(OplockLevel.II)


def test_a_stat_open_without_caching_does_not_keep_write_away() -> None:
    """smb2.lease.statopen3: RWH next to an attributes-only open; smb2.lease.statopen: a stat open
    that holds a lease is a holder like any other."""
    t = CachingTable()
    t.grant("f", 1, requested=OplockLevel.NONE, stat_open=True)
    assert t.grant("f", 2, requested=OplockLevel.LEASE, lease=A, lease_state=R | W | H).lease_state == R | W | H
    t2 = CachingTable()
    t2.grant("f", 1, requested=OplockLevel.LEASE, lease=A, lease_state=R | W | H, stat_open=True)
    t2.before_open("f", now=0.0, lease=B)
    t2.ack_lease(A, R | H)
    assert t2.grant("f", 2, requested=OplockLevel.LEASE, lease=B, lease_state=R | W | H).lease_state == R | H


def test_a_read_control_open_breaks_oplocks_but_not_leases() -> None:
    """smb2.oplock.statopen1 (READ_CONTROL is no stat open for oplocks) and smb2.lease.statopen4 (it is one
    for leases): the server asks ``before_open(leases=False)`` for it."""
    t = CachingTable()
    t.grant("f", 1, requested=OplockLevel.BATCH)
    assert t.before_open("f", now=0.0, leases=False) == [OplockBreak(1, OplockLevel.II, True)]
    t2 = CachingTable()
    t2.grant("f", 1, requested=OplockLevel.LEASE, lease=A, lease_state=R | W | H)
    assert t2.before_open("f", now=0.0, leases=False) == []
