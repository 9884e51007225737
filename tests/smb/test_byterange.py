"""Byte-range lock table (harness/smb/byterange.py): the rules of its docstring, one by one, and
hypothesis over random operation sequences against a byte-by-byte model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.smb.byterange import (
    LOCKFLAG_EXCLUSIVE,
    LOCKFLAG_FAIL_IMMEDIATELY,
    LOCKFLAG_SHARED,
    LOCKFLAG_UNLOCK,
    RANGE_END,
    Completed,
    Granted,
    LockElement,
    Queued,
    RangeLocks,
    Refused,
    ranges_overlap,
)
from harness.smb.constants import NtStatus

EX = LOCKFLAG_EXCLUSIVE | LOCKFLAG_FAIL_IMMEDIATELY
SH = LOCKFLAG_SHARED | LOCKFLAG_FAIL_IMMEDIATELY
UN = LOCKFLAG_UNLOCK


def el(offset: int, length: int, flags: int) -> LockElement:
    return LockElement(offset, length, flags)


# -- the rules ----------------------------------------------------------------------------------------


def test_exclusive_conflicts_with_other_open_and_with_itself() -> None:
    t = RangeLocks()
    assert t.lock("a", [el(0, 10, EX)]) == Granted()
    assert t.lock("b", [el(5, 10, SH)]).status == NtStatus.LOCK_NOT_GRANTED  # type: ignore[union-attr]
    assert t.lock("a", [el(5, 1, EX)]).status == NtStatus.LOCK_NOT_GRANTED  # type: ignore[union-attr]
    assert t.lock("b", [el(10, 5, EX)]) == Granted()  # adjacent, no shared byte


def test_shared_stacks_on_own_exclusive_but_not_the_reverse() -> None:
    t = RangeLocks()
    assert t.lock("a", [el(0, 10, EX)]) == Granted()
    assert t.lock("a", [el(0, 10, SH)]) == Granted()
    u = RangeLocks()
    assert u.lock("a", [el(0, 10, SH)]) == Granted()
    assert isinstance(u.lock("a", [el(0, 10, EX)]), Refused)


def test_shared_locks_never_conflict() -> None:
    t = RangeLocks()
    for owner in "abc":
        assert t.lock(owner, [el(0, 100, SH)]) == Granted()


def test_zero_length_lock_conflicts_only_strictly_inside() -> None:
    t = RangeLocks()
    assert t.lock("a", [el(10, 10, EX)]) == Granted()
    assert t.lock("b", [el(10, 0, EX)]) == Granted()  # at the start: holds no byte of it
    assert t.lock("b", [el(20, 0, EX)]) == Granted()  # at the end
    assert t.lock("b", [el(15, 0, EX)]).status == NtStatus.LOCK_NOT_GRANTED  # type: ignore[union-attr]
    assert t.lock("c", [el(10, 0, EX)]) == Granted()  # two zero-length locks never conflict


def test_range_past_2_64_is_invalid_lock_range() -> None:
    t = RangeLocks()
    assert t.lock("a", [el(RANGE_END - 1, 1, EX)]) == Granted()  # ends exactly at 2**64
    out = t.lock("a", [el(RANGE_END - 1, 2, EX)])
    assert isinstance(out, Refused) and out.status == NtStatus.INVALID_LOCK_RANGE


def test_failing_element_undoes_the_earlier_ones() -> None:
    t = RangeLocks()
    assert t.lock("b", [el(50, 10, EX)]) == Granted()
    out = t.lock("a", [el(0, 10, EX), el(20, 10, SH), el(55, 1, EX)])
    assert isinstance(out, Refused) and out.status == NtStatus.LOCK_NOT_GRANTED
    assert t.locks_of("a") == []


def test_several_elements_must_all_fail_immediately() -> None:
    t = RangeLocks()
    out = t.lock("a", [el(0, 1, EX), el(5, 1, LOCKFLAG_EXCLUSIVE)], token=1)
    assert isinstance(out, Refused) and out.status == NtStatus.INVALID_PARAMETER
    assert t.held == [] and t.waiting == []


@pytest.mark.parametrize("flags", [0, LOCKFLAG_SHARED | LOCKFLAG_EXCLUSIVE, UN | LOCKFLAG_SHARED, 0x20])
def test_undefined_flag_combinations_are_invalid(flags: int) -> None:
    out = RangeLocks().lock("a", [el(0, 1, flags)])
    assert isinstance(out, Refused) and out.status == NtStatus.INVALID_PARAMETER


def test_unlock_needs_the_exact_range() -> None:
    t = RangeLocks()
    assert t.lock("a", [el(0, 10, EX)]) == Granted()
    assert t.unlock("a", [el(0, 5, UN)])[0] == NtStatus.RANGE_NOT_LOCKED
    assert t.unlock("b", [el(0, 10, UN)])[0] == NtStatus.RANGE_NOT_LOCKED
    assert t.unlock("a", [el(0, 10, UN)])[0] == NtStatus.SUCCESS
    assert t.unlock("a", [el(0, 10, UN)])[0] == NtStatus.RANGE_NOT_LOCKED


def test_unlock_with_a_lock_flag_is_invalid_and_earlier_unlocks_stay() -> None:
    t = RangeLocks()
    t.lock("a", [el(0, 1, EX), el(5, 1, EX)])
    status, _ = t.unlock("a", [el(0, 1, UN), el(5, 1, UN | LOCKFLAG_SHARED)])
    assert status == NtStatus.INVALID_PARAMETER
    assert [(h.offset, h.length) for h in t.held] == [(5, 1)]


def test_unlock_with_fail_immediately_is_invalid() -> None:
    """smbtorture smb2.lock.valid-request: UNLOCK|FAIL_IMMEDIATELY is STATUS_INVALID_PARAMETER
    (Samba), not an unlock that ignores the flag; the lock stays held."""
    t = RangeLocks()
    t.lock("a", [el(1, 1, EX)])
    status, _ = t.unlock("a", [el(1, 1, UN | LOCKFLAG_FAIL_IMMEDIATELY)])
    assert status == NtStatus.INVALID_PARAMETER
    assert [(h.offset, h.length) for h in t.held] == [(1, 1)]


def test_blocking_lock_waits_and_is_granted_on_unlock() -> None:
    t = RangeLocks()
    t.lock("a", [el(0, 10, EX)])
    assert t.lock("b", [el(5, 1, LOCKFLAG_EXCLUSIVE)], token="req-b") == Queued("req-b")
    assert t.unlock("a", [el(0, 10, UN)]) == (NtStatus.SUCCESS, [Completed("req-b", NtStatus.SUCCESS)])
    assert [(h.owner, h.offset) for h in t.held] == [("b", 5)]


def test_cancel_ends_a_waiter_cancelled_and_close_range_not_locked() -> None:
    """CANCEL: STATUS_CANCELLED; close of the waiting open: STATUS_RANGE_NOT_LOCKED (smbtorture
    smb2.lock.cancel checks both against Samba)."""
    t = RangeLocks()
    t.lock("a", [el(0, 10, EX)])
    t.lock("b", [el(0, 1, LOCKFLAG_SHARED)], token=1)
    t.lock("c", [el(1, 1, LOCKFLAG_EXCLUSIVE)], token=2)
    assert t.cancel(1) == [Completed(1, NtStatus.CANCELLED)]
    assert t.cancel(1) == []
    assert t.release("c") == [Completed(2, NtStatus.RANGE_NOT_LOCKED)]
    assert t.waiting == []


def test_close_of_the_holder_grants_the_waiters_that_fit() -> None:
    t = RangeLocks()
    t.lock("a", [el(0, 10, EX)])
    t.lock("b", [el(0, 10, LOCKFLAG_SHARED)], token="b")
    t.lock("c", [el(0, 10, LOCKFLAG_SHARED)], token="c")
    t.lock("d", [el(0, 10, LOCKFLAG_EXCLUSIVE)], token="d")
    done = t.release("a")
    assert done == [Completed("b", NtStatus.SUCCESS), Completed("c", NtStatus.SUCCESS)]
    assert [w.token for w in t.waiting] == ["d"]


def test_io_rules() -> None:
    t = RangeLocks()
    t.lock("a", [el(0, 10, EX)])
    t.lock("a", [el(20, 10, SH)])
    assert t.check_io("a", 0, 10, write=True) is None  # own exclusive: read and write
    assert t.check_io("a", 0, 10, write=False) is None
    assert t.check_io("b", 9, 1, write=False) == NtStatus.FILE_LOCK_CONFLICT
    assert t.check_io("b", 10, 10, write=True) is None  # the gap
    assert t.check_io("b", 25, 1, write=False) is None  # shared lets others read
    assert t.check_io("b", 25, 1, write=True) == NtStatus.FILE_LOCK_CONFLICT
    assert t.check_io("a", 25, 1, write=True) == NtStatus.FILE_LOCK_CONFLICT  # own shared: LOCKTEST7
    assert t.check_io("b", 5, 0, write=True) is None  # zero-length I/O touches nothing


# -- hypothesis ---------------------------------------------------------------------------------------

small = st.integers(min_value=0, max_value=24)


@given(small, small, small, small)
def test_overlap_matches_bytes(a_off: int, a_len: int, b_off: int, b_len: int) -> None:
    if a_len and b_len:
        expect = bool(set(range(a_off, a_off + a_len)) & set(range(b_off, b_off + b_len)))
    elif a_len == 0 and b_len == 0:
        expect = False
    elif a_len == 0:
        expect = b_off < a_off < b_off + b_len
    else:
        expect = a_off < b_off < a_off + a_len
    assert ranges_overlap(a_off, a_len, b_off, b_len) == expect
    assert ranges_overlap(b_off, b_len, a_off, a_len) == expect


owners = st.sampled_from(["a", "b", "c"])
op = st.one_of(
    st.tuples(st.just("lock"), owners, small, small, st.sampled_from([EX, SH, LOCKFLAG_EXCLUSIVE, LOCKFLAG_SHARED])),
    st.tuples(st.just("unlock"), owners, small, small, st.just(UN)),
    st.tuples(st.just("release"), owners, small, small, st.just(0)),
    st.tuples(st.just("cancel"), owners, small, small, st.just(0)),
)


def _bytes(off: int, length: int) -> set[int]:
    return set(range(off, off + length))


@settings(max_examples=300, deadline=None)
@given(st.lists(op, max_size=40))
def test_random_sequences_keep_the_invariants(ops: list) -> None:
    t = RangeLocks()
    tokens = 0
    for kind, owner, off, length, flags in ops:
        if kind == "lock":
            tokens += 1
            before = list(t.held)
            out = t.lock(owner, [el(off, length, flags)], token=tokens)
            if isinstance(out, Refused):
                assert t.held == before
            elif isinstance(out, Queued):
                assert flags & LOCKFLAG_FAIL_IMMEDIATELY == 0
        elif kind == "unlock":
            t.unlock(owner, [el(off, length, flags)])
        elif kind == "release":
            t.release(owner)
            assert t.locks_of(owner) == [] and all(w.owner != owner for w in t.waiting)
        else:
            t.cancel(off % (tokens + 1))
        # No two held locks may conflict: an overlap with an exclusive lock is only the owner's
        # shared lock stacked on its own exclusive one.
        for i, x in enumerate(t.held):
            for y in t.held[i + 1:]:
                if (x.exclusive or y.exclusive) and ranges_overlap(x.offset, x.length, y.offset, y.length):
                    assert x.owner == y.owner and x.exclusive != y.exclusive, (x, y)
        # No lost wake-up: every waiter still conflicts with something held.
        for w in t.waiting:
            assert t._conflicts(w.owner, w.offset, w.length, w.exclusive), w
        # I/O answers agree with a byte model of the held locks.
        for who in "ab":
            for probe in (0, 7, 15, 23):
                locked_by_others_ex = any(h.exclusive and h.owner != who and probe in _bytes(h.offset, h.length)
                                          for h in t.held)
                blocks_write = any(probe in _bytes(h.offset, h.length) and (h.owner != who or not h.exclusive)
                                   for h in t.held)
                assert (t.check_io(who, probe, 1, write=False) is not None) == locked_by_others_ex
                assert (t.check_io(who, probe, 1, write=True) is not None) == blocks_write
