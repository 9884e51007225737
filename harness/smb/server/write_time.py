"""When a write changes a file's last write time, as Windows (and Samba) show it to clients.

Why a module: a POSIX file system sets the modification time on every write, Windows does not.
Rules kept here (MS-FSA 2.1.5.4 and 2.1.5.14.2; smbtorture smb2.timestamps.delayed-*):

- The first write through an open schedules one update of the write time, about 2 s later;
  further writes through that open change nothing until it closes.  The update happens when the
  next request arrives after it is due (no timer: the clock is the server's injected one), or
  earlier when the open is flushed, gets FileBasicInformation set, or closes.  An end-of-file change
  updates the time at once.  A close of an open that wrote since the last update sets the time to
  the close's.
- A write time set through an open (or -1) makes the open's writes leave the time alone; -2 lets
  them update it again.  Setting it also cancels the updates pending on the file, at close too.
- Without a clock (a sans-IO server given none) every write updates the time at once.

The share sets the modification time on each write; this module puts the previous one back.
"""

from __future__ import annotations

from ..fscc import filetime_to_unix_ns
from .model import Open

DELAY_NS = 2_000_000_000


def _share(opened: Open):
    return opened.fs


def keep(opened: Open) -> int | None:
    """The file's write time before a write (FILETIME), or None when the write may set it now."""
    fs = _share(opened)
    if fs is None:
        return None
    handle = opened.handle
    meta = fs.fstat(handle) if handle is not None else fs.stat(opened.path)
    return meta.last_write_time


def after_write(state, opened: Open, kept: int | None) -> None:
    """Undo the share's immediate update and schedule the delayed one (see the module docstring)."""
    fs = _share(opened)
    if kept is None or fs is None:
        return
    now = state.config.clock()
    if not now and not opened.user_set_write_time:
        return  # no clock: the write set the time at once
    fs.set_times(opened.path, None, filetime_to_unix_ns(kept))
    if opened.user_set_write_time:
        return
    opened.write_time_written = True
    if opened.write_time_done or opened.write_time_due:
        return
    opened.write_time_due = now + DELAY_NS
    state.write_time_pending.append(opened)


def run_due(state) -> None:
    """Apply the updates that are due (called before each request is handled)."""
    if not state.write_time_pending:
        return
    now = state.config.clock()
    waiting = []
    for opened in state.write_time_pending:
        if opened.write_time_due is None:
            continue
        if opened.write_time_due > now:
            waiting.append(opened)
            continue
        _apply(opened, opened.write_time_due)
    state.write_time_pending = waiting


def now(state, opened: Open) -> None:
    """Apply a pending update at once (FLUSH, SET_INFO FileBasicInformation)."""
    if opened.write_time_due is not None:
        _apply(opened, state.config.clock())
        if opened in state.write_time_pending:
            state.write_time_pending.remove(opened)


def after_end_of_file(state, opened: Open, kept: int | None) -> None:
    """An end-of-file change sets the write time at once (unless the open's user set it)."""
    if opened.user_set_write_time:
        after_write(state, opened, kept)
        return
    now(state, opened)


def on_close(state, opened: Open) -> None:
    """A close of an open that wrote sets the write time to the close's (a pending update too)."""
    if opened.write_time_written and not opened.user_set_write_time:
        _apply(opened, state.config.clock())
    if opened in state.write_time_pending:
        state.write_time_pending.remove(opened)
    opened.write_time_due = None
    opened.write_time_written = False


def user_set(state, opened: Open, last_write_time: int) -> None:
    """SET_INFO FileBasicInformation's LastWriteTime through ``opened``: explicit (or -1) stops the
    open's own updates and cancels the file's pending ones, -2 resumes them, 0 changes nothing."""
    if last_write_time == 0xFFFFFFFFFFFFFFFE:
        opened.user_set_write_time = False
        return
    if not last_write_time:
        return
    opened.user_set_write_time = True
    for other in state.opens_by_path.get(opened.path, []):
        other.write_time_due = None
        other.write_time_written = False
    state.write_time_pending = [o for o in state.write_time_pending if o.path != opened.path]


def _apply(opened: Open, when_ns: int) -> None:
    opened.write_time_due = None
    opened.write_time_done = True
    opened.write_time_written = False  # a close sets the time again only after another write
    fs = _share(opened)
    if fs is None or not when_ns:
        return
    try:
        fs.set_times(opened.path, None, when_ns)
    except OSError:
        pass  # the file is gone: nothing to update
