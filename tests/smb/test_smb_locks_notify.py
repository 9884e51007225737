"""Byte-range locks and CHANGE_NOTIFY over the real threaded server and the reference client.

One test per rule (MS-SMB2 3.3.5.14, 3.3.5.19): a blocking lock granted when the range is
unlocked, cancelled by CANCEL, ended by the close of its open; READ and WRITE refused by another
open's lock; a notify overflow; a notify of a change made by another program (inotify); WATCH_TREE;
completion filters; NOTIFY_CLEANUP on close; and the lock rules against a byte model (hypothesis).
"""

from __future__ import annotations

import os
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.blocking.client import SMBClient
from harness.blocking.server import SMBServer
from harness.smb import change_notify as cn
from harness.smb import messages as m
from harness.smb.client import SMBError
from harness.smb.constants import AccessMask, Command, CreateDisposition, CreateOptions, NtStatus
from harness.smb.server import ServerConfig, ShareConfig

USER, PASSWORD = "bob", "Pw-123456"
RW = AccessMask.GENERIC_READ | AccessMask.GENERIC_WRITE
DIR_ACCESS = AccessMask.FILE_READ_DATA | AccessMask.FILE_READ_ATTRIBUTES | AccessMask.SYNCHRONIZE


@pytest.fixture
def server(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    config = ServerConfig(shares={"share": ShareConfig("share", str(share))}, users={USER: PASSWORD})
    srv = SMBServer(config, "127.0.0.1", 0)
    srv.share_dir = share
    srv.start()
    yield srv
    srv.stop()
    assert not srv.errors, srv.errors


def _client(server) -> SMBClient:
    return SMBClient("127.0.0.1", server.port, username=USER, password=PASSWORD, timeout=10)


def _file(share, name: str = "f.bin") -> bytes:
    return share.open(name, RW, CreateDisposition.OPEN_IF).file_id


def _status(call, *args, **kw) -> int:
    try:
        call(*args, **kw)
    except SMBError as exc:
        return exc.status
    return NtStatus.SUCCESS


# ---------------------------------------------------------------------------------- locks


def test_blocking_lock_goes_async_and_is_granted_on_unlock(server):
    with _client(server) as a, _client(server) as b:
        sa, sb = a.share("share"), b.share("share")
        fa, fb = _file(sa), _file(sb)
        sa.lock(fa, 0, 10)
        mid = sb.lock_request(fb, 5, 10, fail_immediately=False)
        assert sb.client.wait_interim(mid) is not None  # STATUS_PENDING interim, with an AsyncId
        with pytest.raises(TimeoutError):
            sb.client.wait(mid, timeout=0.3)  # still waiting while the range is held
        sa.unlock(fa, 0, 10)
        assert sb.client.wait(mid).header.status == NtStatus.SUCCESS
        # b holds 5..15 now: a cannot take it
        assert _status(lambda: sa.lock(fa, 12, 1)) == NtStatus.LOCK_NOT_GRANTED


def test_blocking_lock_cancelled(server):
    with _client(server) as a, _client(server) as b:
        sa, sb = a.share("share"), b.share("share")
        fa, fb = _file(sa), _file(sb)
        sa.lock(fa, 0, 10)
        mid = sb.lock_request(fb, 0, 10, fail_immediately=False)
        sb.client.wait_interim(mid)
        sb.client.cancel(mid)
        assert sb.client.wait(mid).header.status == NtStatus.CANCELLED
        sa.unlock(fa, 0, 10)
        sa.lock(fa, 0, 10)  # the cancelled request took nothing
        # the client's own blocking lock with a timeout cancels and says so
        with pytest.raises(TimeoutError):
            sb.lock(fb, 0, 10, wait=True, timeout=0.3)


def test_close_of_the_waiting_open_and_of_the_holder(server):
    with _client(server) as a, _client(server) as b:
        sa, sb = a.share("share"), b.share("share")
        fa, fb = _file(sa), _file(sb)
        fb2 = _file(sb)
        sa.lock(fa, 0, 10)
        gone = sb.lock_request(fb, 0, 10, fail_immediately=False)
        waits = sb.lock_request(fb2, 0, 10, fail_immediately=False)
        sb.client.wait_interim(gone)
        sb.client.wait_interim(waits)
        sb.close_file(fb)
        assert sb.client.wait(gone).header.status == NtStatus.RANGE_NOT_LOCKED
        sa.close_file(fa)  # the holder's close releases its lock: the other waiter gets it
        assert sb.client.wait(waits).header.status == NtStatus.SUCCESS


def test_read_and_write_refused_by_another_opens_lock(server):
    with _client(server) as a, _client(server) as b:
        sa, sb = a.share("share"), b.share("share")
        fa, fb = _file(sa), _file(sb)
        sa.client.request(Command.WRITE, m.WriteRequest(file_id=fa, offset=0, data=b"x" * 100), sa.tree_id)
        sa.lock(fa, 0, 50)  # exclusive
        sa.lock(fa, 50, 50, exclusive=False)  # shared
        read = m.ReadRequest(file_id=fb, offset=10, length=10)
        write = m.WriteRequest(file_id=fb, offset=60, data=b"y")
        assert sb.client.request(Command.READ, read, sb.tree_id, ok=(NtStatus.FILE_LOCK_CONFLICT,))
        assert sb.client.request(Command.WRITE, write, sb.tree_id, ok=(NtStatus.FILE_LOCK_CONFLICT,))
        assert sb.client.request(Command.READ, m.ReadRequest(file_id=fb, offset=60, length=10), sb.tree_id)
        # the holder reads and writes its exclusive range, but not its own shared one
        sa.client.request(Command.WRITE, m.WriteRequest(file_id=fa, offset=0, data=b"z"), sa.tree_id)
        sa.client.request(Command.WRITE, m.WriteRequest(file_id=fa, offset=60, data=b"z"), sa.tree_id,
                          ok=(NtStatus.FILE_LOCK_CONFLICT,))
        assert (server.share_dir / "f.bin").read_bytes()[:1] == b"z"
        assert (server.share_dir / "f.bin").read_bytes()[60:61] == b"x"


def test_lock_sequence_replay_on_a_multichannel_server(tmp_path):
    """3.3.5.14: with multichannel on 3.x, a LOCK with the LockSequenceNumber of the entry's last
    processed request succeeds without being processed again (here: no second, conflicting lock)."""
    share = tmp_path / "share"
    share.mkdir()
    config = ServerConfig(shares={"share": ShareConfig("share", str(share))}, users={USER: PASSWORD},
                          multichannel=True)
    with SMBServer(config, "127.0.0.1", 0) as srv, _client(srv) as a:
        sa = a.share("share")
        fa = _file(sa)
        sa.lock(fa, 0, 10, sequence=(3 << 4) | 1)
        sa.lock(fa, 0, 10, sequence=(3 << 4) | 1)  # a replay: success, nothing taken twice
        sa.unlock(fa, 0, 10)
        assert _status(lambda: sa.unlock(fa, 0, 10)) == NtStatus.RANGE_NOT_LOCKED
        assert _status(lambda: sa.lock(fa, 0, 10, sequence=(4 << 4) | 2)) == NtStatus.SUCCESS
        assert _status(lambda: sa.lock(fa, 0, 10, sequence=(5 << 4) | 2)) == NtStatus.LOCK_NOT_GRANTED
        assert not srv.errors


def test_lock_sequence_replay_on_a_resilient_handle(server):
    """FSCTL_LMR_REQUEST_RESILIENCY makes an open resilient: a LOCK replayed with the same
    LockSequenceNumber/Index succeeds without effect.  Before, on this single-channel server, the
    same replay is processed again (and refused: the range is locked)."""
    with _client(server) as a:
        sa = a.share("share")
        fa = _file(sa)
        sa.lock(fa, 0, 10, sequence=(1 << 4) | 7)
        assert _status(sa.lock, fa, 0, 10, sequence=(1 << 4) | 7) == NtStatus.LOCK_NOT_GRANTED
        resiliency = m.IoctlRequest(ctl_code=0x001401D4, file_id=fa, input=struct.pack("<II", 60_000, 0))
        a.request(Command.IOCTL, resiliency, sa.tree_id)
        sa.lock(fa, 20, 10, sequence=(2 << 4) | 8)
        sa.lock(fa, 20, 10, sequence=(2 << 4) | 8)  # a replay
        too_long = m.IoctlRequest(ctl_code=0x001401D4, file_id=fa, input=struct.pack("<II", 10**9, 0))
        a.request(Command.IOCTL, too_long, sa.tree_id, ok=(NtStatus.INVALID_PARAMETER,))


# -------------------------------------------------------------------------------- notify


def _watch(share, path: str = "", **kw) -> tuple[bytes, int]:
    dir_id = share.open(path, DIR_ACCESS, CreateDisposition.OPEN, CreateOptions.DIRECTORY_FILE).file_id
    mid = share.notify_request(dir_id, kw.pop("completion_filter", cn.FILE_NAME | cn.DIR_NAME), **kw)
    assert share.client.wait_interim(mid) is not None
    return dir_id, mid


def test_notify_reports_what_changed_through_the_server(server):
    with _client(server) as a, _client(server) as b:
        sa, sb = a.share("share"), b.share("share")
        dir_id, mid = _watch(sa)
        sb.close_file(_file(sb, "new.txt"))
        assert sa.notify_result(mid) == (NtStatus.SUCCESS, [(cn.ADDED, "new.txt")])
        # changes between requests queue on the open and the next request returns them at once
        sb.remove("new.txt")
        time.sleep(0.2)
        mid = sa.notify_request(dir_id, cn.FILE_NAME)
        assert sa.notify_result(mid) == (NtStatus.SUCCESS, [(cn.REMOVED, "new.txt")])


def test_rename_reports_both_names_at_once_and_modified_at_close(server):
    """A rename through SET_INFO: RENAMED_OLD_NAME and RENAMED_NEW_NAME in one response; closing the
    handle it was renamed through reports MODIFIED (ATTRIBUTES) for the new name (smbtorture
    smb2.notify.mask-change expects it)."""
    from harness.smb import fscc

    with _client(server) as a, _client(server) as b:
        sa, sb = a.share("share"), b.share("share")
        dir_id, mid = _watch(sa, completion_filter=cn.FILE_NAME | cn.ATTRIBUTES)
        fid = sb.open("old.txt", RW | AccessMask.DELETE, CreateDisposition.OPEN_IF).file_id
        assert sa.notify_result(mid) == (NtStatus.SUCCESS, [(cn.ADDED, "old.txt")])
        mid = sa.notify_request(dir_id, 0)
        sa.client.wait_interim(mid)
        info = fscc.FileRenameInformation(replace_if_exists=False, file_name="new.txt").pack()
        b.request(Command.SET_INFO, m.SetInfoRequest(file_id=fid, info_type=1, file_info_class=10, buffer=info),
                  sb.tree_id)
        assert sa.notify_result(mid) == (NtStatus.SUCCESS, [(cn.RENAMED_OLD_NAME, "old.txt"),
                                                             (cn.RENAMED_NEW_NAME, "new.txt")])
        mid = sa.notify_request(dir_id, 0)
        sa.client.wait_interim(mid)
        sb.close_file(fid)
        assert sa.notify_result(mid) == (NtStatus.SUCCESS, [(cn.MODIFIED, "new.txt")])


def test_notify_completion_filter_and_watch_tree(server):
    (server.share_dir / "sub").mkdir()
    with _client(server) as a, _client(server) as b:
        sa, sb = a.share("share"), b.share("share")
        _, flat = _watch(sa, completion_filter=cn.FILE_NAME)
        _, tree = _watch(sa, watch_tree=True, completion_filter=cn.FILE_NAME)
        _, sizes = _watch(sa, completion_filter=cn.SIZE)
        sb.close_file(_file(sb, "sub\\deep.txt"))
        assert sa.notify_result(tree) == (NtStatus.SUCCESS, [(cn.ADDED, "sub\\deep.txt")])
        with pytest.raises(TimeoutError):
            sa.client.wait(flat, timeout=0.3)  # not WATCH_TREE: a change below is not its business
        with pytest.raises(TimeoutError):
            sa.client.wait(sizes, timeout=0.1)  # a name change does not meet a SIZE filter
        sb.close_file(_file(sb, "top.txt"))
        assert sa.notify_result(flat) == (NtStatus.SUCCESS, [(cn.ADDED, "top.txt")])


def test_notify_overflow_is_enum_dir(server):
    with _client(server) as a, _client(server) as b:
        sa, sb = a.share("share"), b.share("share")
        dir_id = sa.open("", DIR_ACCESS, CreateDisposition.OPEN, CreateOptions.DIRECTORY_FILE).file_id
        mid = sa.notify_request(dir_id, cn.FILE_NAME, buffer_length=32)
        sa.client.wait_interim(mid)
        sb.close_file(_file(sb, "a-name-longer-than-the-buffer.txt"))
        assert sa.notify_result(mid) == (NtStatus.NOTIFY_ENUM_DIR, [])


def test_notify_cleanup_on_close_and_cancel(server):
    with _client(server) as a:
        sa = a.share("share")
        dir_id, mid = _watch(sa)
        sa.close_file(dir_id)
        assert sa.notify_result(mid)[0] == NtStatus.NOTIFY_CLEANUP
        _, mid = _watch(sa)
        sa.client.cancel(mid)
        assert sa.notify_result(mid)[0] == NtStatus.CANCELLED


def test_notify_ends_delete_pending_when_the_directory_is_deleted(server):
    """smbtorture smb2.notify.rmdir1-4: another open deletes the watched directory (delete-on-close,
    then close): the waiting request ends with STATUS_DELETE_PENDING."""
    (server.share_dir / "doomed").mkdir()
    with _client(server) as a, _client(server) as b:
        sa, sb = a.share("share"), b.share("share")
        watcher, mid = _watch(sa, "doomed")
        other = sb.open("doomed", AccessMask.DELETE | AccessMask.FILE_READ_ATTRIBUTES, CreateDisposition.OPEN,
                        CreateOptions.DIRECTORY_FILE | CreateOptions.DELETE_ON_CLOSE).file_id
        sb.close_file(other)
        assert sa.notify_result(mid)[0] == NtStatus.DELETE_PENDING
        # the delete stays pending on the file: new opens are refused, the last close deletes it
        assert _status(sb.open, "doomed", DIR_ACCESS, CreateDisposition.OPEN,
                       CreateOptions.DIRECTORY_FILE) == NtStatus.DELETE_PENDING
        assert (server.share_dir / "doomed").is_dir()
        sa.close_file(watcher)
        assert not (server.share_dir / "doomed").exists()


def test_a_notify_that_arrives_after_the_delete_ends_delete_pending_at_once(server):
    """smbtorture smb2.notify.rmdir1-4 send their CHANGE_NOTIFY without waiting for the interim
    response, then delete the directory from another connection: when the delete reaches the server
    first, the request arrives on a directory already being deleted and must end DELETE_PENDING at
    once (it hung, waiting for a change that never comes)."""
    (server.share_dir / "doomed").mkdir()
    with _client(server) as a, _client(server) as b:
        sa, sb = a.share("share"), b.share("share")
        watcher = sa.open("doomed", DIR_ACCESS, CreateDisposition.OPEN, CreateOptions.DIRECTORY_FILE).file_id
        other = sb.open("doomed", AccessMask.DELETE | AccessMask.FILE_READ_ATTRIBUTES, CreateDisposition.OPEN,
                        CreateOptions.DIRECTORY_FILE | CreateOptions.DELETE_ON_CLOSE).file_id
        sb.close_file(other)
        mid = sa.notify_request(watcher, cn.FILE_NAME | cn.DIR_NAME)
        assert sa.notify_result(mid, timeout=5)[0] == NtStatus.DELETE_PENDING
        sa.close_file(watcher)
        assert not (server.share_dir / "doomed").exists()


def test_notify_cleanup_when_a_new_session_replaces_the_old_one(server):
    """smbtorture smb2.notify.session-reconnect: a SESSION_SETUP naming the session as its
    PreviousSessionId closes the old session's opens; their waiting requests end NOTIFY_CLEANUP."""
    with _client(server) as a:
        sa = a.share("share")
        _, mid = _watch(sa)
        a._login(previous_session_id=a.session.session_id)
        assert sa.notify_result(mid)[0] == NtStatus.NOTIFY_CLEANUP


def test_notify_of_a_change_by_another_program(server):
    """A file created in the share directory by this process (not through SMB) completes the
    request through inotify."""
    with _client(server) as a:
        sa = a.share("share")
        _, mid = _watch(sa)
        (server.share_dir / "outside.txt").write_bytes(b"hello")
        assert sa.notify_result(mid, timeout=5) == (NtStatus.SUCCESS, [(cn.ADDED, "outside.txt")])
        dir_id, mid = _watch(sa, completion_filter=cn.FILE_NAME)
        os.rename(server.share_dir / "outside.txt", server.share_dir / "renamed.txt")
        status, changes = sa.notify_result(mid, timeout=5)
        assert status == NtStatus.SUCCESS  # one batch of inotify events: both names in one response
        assert changes == [(cn.RENAMED_OLD_NAME, "outside.txt"), (cn.RENAMED_NEW_NAME, "renamed.txt")]


# ------------------------------------------------------------------- locks against a model

OPS = st.lists(st.tuples(st.sampled_from(["lock", "unlock", "read", "write"]), st.integers(0, 1),
                         st.integers(0, 12), st.integers(1, 6), st.booleans()), min_size=1, max_size=12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_two_opens_against_a_byte_model(server, ops):
    """Random LOCK/UNLOCK/READ/WRITE by two opens of one file, each status checked against a model
    that knows only bytes: a lock conflicts with another open's lock on a shared byte unless both
    are shared (the same open may stack a shared lock on its exclusive one); READ is refused by
    another open's exclusive byte, WRITE by any other open's byte and by the writer's own shared one."""
    with _client(server) as c:
        share = c.share("share")
        name = f"model-{time.monotonic_ns()}.bin"
        fids = [_file(share, name), _file(share, name)]
        c.request(Command.WRITE, m.WriteRequest(file_id=fids[0], offset=0, data=bytes(32)), share.tree_id)
        held: list[tuple[int, int, int, bool]] = []
        for kind, who, offset, length, exclusive in ops:
            span = set(range(offset, offset + length))
            overlapping = [h for h in held if span & set(range(h[1], h[1] + h[2]))]

            if kind == "lock":
                conflict = any(h[3] or exclusive for h in overlapping
                               if not (h[0] == who and h[3] and not exclusive))
                expected = NtStatus.LOCK_NOT_GRANTED if conflict else NtStatus.SUCCESS
                got = _status(share.lock, fids[who], offset, length, exclusive=exclusive)
                if expected == NtStatus.SUCCESS:
                    held.append((who, offset, length, exclusive))
            elif kind == "unlock":
                match = [h for h in held if h[:3] == (who, offset, length)]
                expected = NtStatus.SUCCESS if match else NtStatus.RANGE_NOT_LOCKED
                got = _status(share.unlock, fids[who], offset, length)
                if match:
                    held.remove(sorted(match, key=lambda h: not h[3])[0])
            elif kind == "read":
                refused = any(h[0] != who and h[3] for h in overlapping)
                expected = NtStatus.FILE_LOCK_CONFLICT if refused else NtStatus.SUCCESS
                got = c.request(Command.READ, m.ReadRequest(file_id=fids[who], offset=offset, length=length),
                                share.tree_id, ok=(expected,)).header.status
            else:
                refused = any(h[0] != who or not h[3] for h in overlapping)
                expected = NtStatus.FILE_LOCK_CONFLICT if refused else NtStatus.SUCCESS
                got = c.request(Command.WRITE, m.WriteRequest(file_id=fids[who], offset=offset, data=b"w" * length),
                                share.tree_id, ok=(expected,)).header.status
            assert got == expected, (kind, who, offset, length, exclusive, held)
        for fid in fids:
            share.close_file(fid)


def test_a_notify_inside_a_compound_chain_fails_internal_error_and_the_chain_completes(server):
    """MS-SMB2 3.3.5.2.7 (Windows, smbd; smbtorture smb2.compound.interim2): CREATE, CHANGE_NOTIFY,
    QUERY_INFO related in one compound. The notify cannot go asynchronous in the middle of a chain:
    it fails STATUS_INTERNAL_ERROR and the other two succeed in the same response (it hung waiting
    for a change). The withdrawn request leaves no watch behind: a change later completes nothing."""
    all_ff = b"\xff" * 16
    with _client(server) as a:
        sa = a.share("share")
        chain = [(Command.CREATE, m.CreateRequest(name="interim", desired_access=DIR_ACCESS | AccessMask.DELETE,
                                                  share_access=7, create_disposition=CreateDisposition.CREATE,
                                                  create_options=CreateOptions.DIRECTORY_FILE)),
                 (Command.CHANGE_NOTIFY, m.ChangeNotifyRequest(file_id=all_ff, flags=cn.WATCH_TREE,
                                                               output_buffer_length=0x1000,
                                                               completion_filter=cn.FILE_NAME)),
                 (Command.QUERY_INFO, m.QueryInfoRequest(info_type=1, file_info_class=4, output_buffer_length=0x1000,
                                                         file_id=all_ff))]
        created, notified, info = a.compound(chain, sa.tree_id)
        assert [r.header.status for r in (created, notified, info)] == \
            [NtStatus.SUCCESS, NtStatus.INTERNAL_ERROR, NtStatus.SUCCESS]
        with server.lock:
            assert not server.state.notify.watched() or all(not w.requests for w in server.state.notify.watched())
        sa.close_file(created.body.file_id)
