"""CHANGE_NOTIFY (MS-SMB2 3.3.5.19) over the server's :class:`~harness.smb.change_notify.NotifyTable`:
the request, the changes the server's own handlers report, the changes the I/O side sees on a
local share, and the end of a watch when its directory is closed.

Why apart from the handler table: CREATE, CLOSE, WRITE and SET_INFO report changes, and CLOSE
ends watches; they import these functions, and nothing here imports them back.

- A request on a directory open without FILE_LIST_DIRECTORY is STATUS_ACCESS_DENIED, on a file
  STATUS_INVALID_PARAMETER (3.3.5.19; the caller has checked OutputBufferLength against
  MaxTransactSize and the CreditCharge).
- A request with changes already queued completes at once; otherwise it goes async (an interim
  STATUS_PENDING) and completes on a change, CANCEL (STATUS_CANCELLED) or the close of its
  directory (STATUS_NOTIFY_CLEANUP).  A request whose connection went away is forgotten.
- A change is reported with the share it happened in, so a watch only sees its own share.
"""

from __future__ import annotations

from .. import change_notify as cn
from .. import messages as m
from ..constants import AccessMask, NtStatus
from ..vfs import Share
from .model import Fail, Open, Reply

FILE_LIST_DIRECTORY = AccessMask.FILE_READ_DATA  # the same bit, named for a directory (MS-SMB2 2.2.13.1.2)


def change_notify(conn, session, tree, header, request: m.ChangeNotifyRequest, encrypted: bool,
                  opened: Open) -> Reply:
    """The CHANGE_NOTIFY ``request`` on ``opened`` (found by the caller)."""
    if not opened.is_dir:
        raise Fail(NtStatus.INVALID_PARAMETER, "CHANGE_NOTIFY on a file")
    if not opened.access & FILE_LIST_DIRECTORY:
        raise Fail(NtStatus.ACCESS_DENIED, "CHANGE_NOTIFY without FILE_LIST_DIRECTORY")
    fs = opened.fs
    if fs is None:
        raise Fail(NtStatus.FILE_CLOSED, "open not claimed by a session")
    state = conn.state
    if any(other.delete_on_close for other in state.opens_by_path.get(opened.path, [opened])):
        # The directory is already being deleted (another open's delete-on-close has closed, or is
        # set): a request arriving now ends at once as the waiting ones did (delete_pending below);
        # it would otherwise wait for a change that never comes (smbtorture smb2.notify.rmdir1-4,
        # when the other client's delete reaches the server before this request).
        raise Fail(NtStatus.DELETE_PENDING, "CHANGE_NOTIFY on a directory being deleted")
    token = state.next_async  # the async id go_async gives it, should it wait
    new_watch = id(opened) not in state.notify.watches
    outcome = state.notify.request(id(opened), fs, fs.relative(opened.path), request.flags,
                                   request.completion_filter, request.output_buffer_length, token)
    if new_watch:
        state.on_watch(fs, opened.path, bool(request.flags & cn.WATCH_TREE))
    if isinstance(outcome, cn.Completion):
        if outcome.status != NtStatus.SUCCESS:
            return Reply(outcome.status, m.ChangeNotifyResponse(b""))
        return Reply(NtStatus.SUCCESS, m.ChangeNotifyResponse(outcome.data))
    reply = conn.go_async(header, session, tree.tree_id, encrypted, opened)
    pending = conn.pending[reply.async_id]
    state.notify_waiters[token] = pending
    pending.on_cancel = lambda: _finish(state, [c for c in [state.notify.cancel(token)] if c is not None])
    pending.on_drop = lambda: (state.notify.forget_request(token), state.notify_waiters.pop(token, None))
    return reply


def _finish(state, completions: list[cn.Completion]) -> None:
    for done in completions:
        pending = state.notify_waiters.pop(done.token, None)
        if pending is None:
            continue
        connection = pending.connection or pending.session.connection
        connection.complete_async(pending, done.status, m.ChangeNotifyResponse(done.data))


def flush(state) -> None:
    """Complete the requests waiting on watches that have changes queued."""
    _finish(state, state.notify.flush())


def _kind(is_dir: bool) -> int:
    return cn.DIR_NAME if is_dir else cn.FILE_NAME


def report(state, fs: Share, action: int, path: str, filter_bits: int, *, local: bool = False,
           flush: bool = True) -> None:
    """Entry ``path`` of share ``fs`` changed: queue it on the watches covering it and (unless more
    changes of the same operation follow, ``flush=False``) complete the requests waiting there."""
    name = fs.relative(path)
    if name:  # the share's root has no parent directory to watch it from
        state.notify.change(fs, action, name, filter_bits, now=state.config.clock(), local=local)
    if flush:
        _finish(state, state.notify.flush())


def added(state, fs: Share, path: str, is_dir: bool) -> None:
    report(state, fs, cn.ADDED, path, _kind(is_dir))


def removed(state, fs: Share, path: str, is_dir: bool) -> None:
    report(state, fs, cn.REMOVED, path, _kind(is_dir))


def renamed(state, fs: Share, old: str, new: str, is_dir: bool, through: Open | None = None) -> None:
    """Within one directory a rename is RENAMED_OLD_NAME then RENAMED_NEW_NAME; a move to another
    directory is REMOVED from the old one and ADDED to the new one (as Windows and Samba report)."""
    same = fs.parent(old) == fs.parent(new)
    report(state, fs, cn.RENAMED_OLD_NAME if same else cn.REMOVED, old, _kind(is_dir), flush=False)
    report(state, fs, cn.RENAMED_NEW_NAME if same else cn.ADDED, new, _kind(is_dir))
    if through is not None and not is_dir:
        state.notify.renamed_through(id(through))


def modified(state, fs: Share, path: str, filter_bits: int) -> None:
    """A file's data or metadata changed: ``filter_bits`` say which (SIZE, LAST_WRITE, ATTRIBUTES...)."""
    report(state, fs, cn.MODIFIED, path, filter_bits)


_UNCHANGED_TIMES = (0, 0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFE)  # FILE_BASIC_INFORMATION "leave as is"


def basic_info_bits(basic) -> int:
    """The completion filter bits a SET_INFO FileBasicInformation meets: one per field it sets."""
    bits = cn.ATTRIBUTES if basic.file_attributes else 0
    for value, bit in ((basic.creation_time, cn.CREATION), (basic.last_access_time, cn.LAST_ACCESS),
                       (basic.last_write_time, cn.LAST_WRITE), (basic.change_time, cn.LAST_WRITE)):
        if value not in _UNCHANGED_TIMES:
            bits |= bit
    return bits


def delete_pending(state, opened: Open) -> None:
    """The directory ``opened`` names is being deleted (another open's delete-on-close closed):
    its waiting requests end with STATUS_DELETE_PENDING."""
    if opened.is_dir:
        _finish(state, state.notify.fail(id(opened), NtStatus.DELETE_PENDING))


def close_watch(state, opened: Open) -> None:
    """An open closed: a directory's waiting requests end with STATUS_NOTIFY_CLEANUP; a file renamed
    through it reports MODIFIED (ATTRIBUTES)."""
    if opened.is_dir:
        _finish(state, state.notify.close(id(opened)))
    elif state.notify.closing(id(opened)) and opened.fs is not None:
        modified(state, opened.fs, opened.path, cn.ATTRIBUTES)
