"""The sans-IO CHANGE_NOTIFY rules (harness/smb/change_notify.py), one test per rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.smb import change_notify as cn
from harness.smb.constants import NtStatus
from harness.smb.errors import SMBProtocolError

NAMES = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)


@given(st.lists(st.tuples(st.integers(1, 5), NAMES), min_size=1, max_size=10))
def test_file_notify_information_roundtrip_and_alignment(changes):
    data = cn.encode(changes)
    assert cn.decode(data) == changes
    offset = 0
    for _ in changes[:-1]:  # every NextEntryOffset is a multiple of 4
        following = int.from_bytes(data[offset:offset + 4], "little")
        assert following % 4 == 0
        offset += following
    assert int.from_bytes(data[offset:offset + 4], "little") == 0


@pytest.mark.parametrize("bad", [b"\x00" * 11, b"\x00" * 8 + b"\x40\x00\x00\x00",
                                 b"\x06\x00\x00\x00" + b"\x01\x00\x00\x00" + b"\x02\x00\x00\x00" + b"a\x00" * 8])
def test_malformed_entries_are_refused(bad):
    with pytest.raises(SMBProtocolError):
        cn.decode(bad)


def _table(flags=0, completion_filter=cn.FILE_NAME, buffer_length=1000):
    t = cn.NotifyTable()
    return t, t.request("dir", "share", "d", flags, completion_filter, buffer_length, token=1)


def test_waits_then_completes_per_operation():
    t, first = _table()
    assert first == cn.Waiting(1)
    t.change("share", cn.RENAMED_OLD_NAME, "d\\a", cn.FILE_NAME)
    t.change("share", cn.RENAMED_NEW_NAME, "d\\b", cn.FILE_NAME)
    (done,) = t.flush()
    assert done.status == NtStatus.SUCCESS
    assert cn.decode(done.data) == [(cn.RENAMED_OLD_NAME, "a"), (cn.RENAMED_NEW_NAME, "b")]


def test_filter_scope_and_tree():
    t, _ = _table(completion_filter=cn.FILE_NAME)
    t.change("share", cn.MODIFIED, "d\\a", cn.SIZE)  # filter not met
    t.change("other", cn.ADDED, "d\\a", cn.FILE_NAME)  # another share
    t.change("share", cn.ADDED, "d\\sub\\a", cn.FILE_NAME)  # below, not WATCH_TREE
    t.change("share", cn.ADDED, "d", cn.DIR_NAME)  # the directory itself
    assert t.flush() == []
    rec = cn.NotifyTable()
    rec.request("dir", "share", "d", cn.WATCH_TREE, cn.FILE_NAME, 1000, token=2)
    rec.change("share", cn.ADDED, "d\\sub\\a", cn.FILE_NAME)
    assert cn.decode(rec.flush()[0].data) == [(cn.ADDED, "sub\\a")]


def test_first_request_fixes_the_watch_and_changes_queue_between_requests():
    t, _ = _table(completion_filter=cn.FILE_NAME)
    assert t.cancel(1) == cn.Completion(1, NtStatus.CANCELLED)
    t.change("share", cn.ADDED, "d\\x", cn.FILE_NAME)
    assert t.flush() == []  # nobody waits: queued
    # a later request with another filter completes at once with the queued change
    done = t.request("dir", "share", "d", 0, 0, 1000, token=3)
    assert isinstance(done, cn.Completion) and cn.decode(done.data) == [(cn.ADDED, "x")]


def test_overflow_is_enum_dir():
    t, _ = _table(buffer_length=20)
    t.change("share", cn.ADDED, "d\\long-name.txt", cn.FILE_NAME)
    assert t.flush() == [cn.Completion(1, NtStatus.NOTIFY_ENUM_DIR)]
    t2, _ = _table()
    t2.cancel(1)
    for index in range(cn.MAX_QUEUED + 1):
        t2.change("share", cn.ADDED, f"d\\{index}", cn.FILE_NAME)
    assert t2.request("dir", "share", "d", 0, 0, 1 << 20, token=4) == cn.Completion(4, NtStatus.NOTIFY_ENUM_DIR)
    t3, _ = _table(buffer_length=0)  # no room for details at all
    t3.change("share", cn.ADDED, "d\\a", cn.FILE_NAME)
    assert t3.flush() == [cn.Completion(1, NtStatus.NOTIFY_ENUM_DIR)]


def test_close_cleans_up_and_echoes_are_dropped():
    t, _ = _table()
    t.change("share", cn.ADDED, "d\\a", cn.FILE_NAME, now=10)
    t.flush()
    t.request("dir", "share", "d", 0, 0, 1000, token=5)
    t.change("share", cn.ADDED, "d\\a", cn.FILE_NAME, now=20, local=True)  # the echo of the server's change
    assert t.flush() == []
    t.change("share", cn.ADDED, "d\\a", cn.FILE_NAME, now=10 + cn.ECHO_WINDOW_NS + 1, local=True)  # news
    assert t.flush()[0].status == NtStatus.SUCCESS
    t.request("dir", "share", "d", 0, 0, 1000, token=6)
    assert t.close("dir") == [cn.Completion(6, NtStatus.NOTIFY_CLEANUP)]
    assert t.close("dir") == []


def test_delete_of_the_directory_ends_requests_delete_pending():
    t, _ = _table()
    assert t.fail("dir", NtStatus.DELETE_PENDING) == [cn.Completion(1, NtStatus.DELETE_PENDING)]
    assert t.fail("dir", NtStatus.DELETE_PENDING) == []  # nothing waits any more; the watch stays
    assert "dir" in t.watches


def test_a_file_renamed_through_an_open_reports_modified_at_its_close():
    t = cn.NotifyTable()
    t.renamed_through("handle")
    assert t.closing("other") is False
    assert t.closing("handle") is True
    assert t.closing("handle") is False  # once
