"""Linux inotify through ctypes: which entries of watched directories other programs changed.

Why ctypes: Python's standard library has no inotify binding, and the three libc calls this needs
(inotify_init1, inotify_add_watch and the read of ``struct inotify_event`` records) are a small,
stable ABI.  This is I/O: the server's I/O adapter reads events here and hands them, as
CHANGE_NOTIFY actions, to the sans-IO notify rules (harness/smb/change_notify.py).

Mapping to FILE_NOTIFY_INFORMATION actions (MS-FSCC 2.7.1):

=========================  ===================================================================
IN_CREATE                  ADDED (FILE_NAME, or DIR_NAME with IN_ISDIR)
IN_DELETE                  REMOVED
IN_MOVED_FROM / IN_MOVED_TO  paired by cookie within one read: RENAMED_OLD_NAME and
                           RENAMED_NEW_NAME in one directory, REMOVED and ADDED across two;
                           unpaired (moved in or out of the watched tree): ADDED / REMOVED
IN_MODIFY                  MODIFIED (SIZE, LAST_WRITE)
IN_ATTRIB                  MODIFIED (ATTRIBUTES, LAST_WRITE, LAST_ACCESS, CREATION, SECURITY, EA)
=========================  ===================================================================
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import select
import struct
import threading
from dataclasses import dataclass

from harness.smb import change_notify as cn

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_IGNORED = 0x00008000
IN_ISDIR = 0x40000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
WATCH_MASK = IN_MODIFY | IN_ATTRIB | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF

_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (struct inotify_event)
_ATTRIB_BITS = cn.ATTRIBUTES | cn.LAST_WRITE | cn.LAST_ACCESS | cn.CREATION | cn.SECURITY | cn.EA


@dataclass(frozen=True)
class Change:
    """One change seen: ``action`` on ``path`` (absolute), meeting the ``filter_bits``."""

    action: int
    path: str
    filter_bits: int


class InotifyError(OSError):
    pass


class Inotify:
    """One inotify instance; :meth:`read` waits at most ``timeout`` seconds for events."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._add = libc.inotify_add_watch
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self.fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            code = ctypes.get_errno()
            raise InotifyError(code, f"inotify_init1: {os.strerror(code)}")
        self.directories: dict[int, str] = {}  # wd -> directory path
        self.recursive: set[int] = set()

    def watch(self, directory: str, recursive: bool) -> None:
        """Watch ``directory`` (and, with ``recursive``, every directory below it, now and later)."""
        wd = self._add(self.fd, os.fsencode(directory), WATCH_MASK)
        if wd < 0:
            code = ctypes.get_errno()
            if code in (errno.ENOENT, errno.ENOTDIR):
                return  # gone before we got to it
            raise InotifyError(code, f"inotify_add_watch {directory}: {os.strerror(code)}")
        self.directories[wd] = directory
        if recursive and wd not in self.recursive:
            self.recursive.add(wd)
            for root, dirs, _ in os.walk(directory):
                for name in dirs:
                    self.watch(os.path.join(root, name), True)

    def read(self, timeout: float) -> bytes:
        """One batch of raw events (empty after ``timeout`` seconds without any)."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return b""
        try:
            return os.read(self.fd, 65536)
        except BlockingIOError:
            return b""

    def changes(self, data: bytes) -> list[Change]:
        """The changes of a batch of events (:meth:`read`); new directories under a recursive watch
        get watched on the way, so call it where :meth:`watch` is serialised."""
        events = []
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, mask, cookie, length = _EVENT.unpack_from(data, offset)
            name = os.fsdecode(data[offset + _EVENT.size:offset + _EVENT.size + length].rstrip(b"\0"))
            offset += _EVENT.size + length
            directory = self.directories.get(wd)
            if mask & IN_IGNORED:
                self.directories.pop(wd, None)
                self.recursive.discard(wd)
                continue
            if directory is None or not name:
                continue
            events.append((mask, cookie, os.path.join(directory, name), wd))
        out: list[Change] = []
        moved_from = {cookie: path for mask, cookie, path, _ in events if mask & IN_MOVED_FROM}
        moved_to = {cookie: path for mask, cookie, path, _ in events if mask & IN_MOVED_TO}
        for mask, cookie, path, wd in events:
            kind = cn.DIR_NAME if mask & IN_ISDIR else cn.FILE_NAME
            if mask & IN_CREATE:
                out.append(Change(cn.ADDED, path, kind))
                if mask & IN_ISDIR and wd in self.recursive:
                    self._watch_new(path)
            elif mask & IN_DELETE:
                out.append(Change(cn.REMOVED, path, kind))
            elif mask & IN_MOVED_FROM:
                new = moved_to.get(cookie)
                if new is not None and os.path.dirname(new) == os.path.dirname(path):
                    out.append(Change(cn.RENAMED_OLD_NAME, path, kind))
                else:
                    out.append(Change(cn.REMOVED, path, kind))
            elif mask & IN_MOVED_TO:
                old = moved_from.get(cookie)
                if old is not None and os.path.dirname(old) == os.path.dirname(path):
                    out.append(Change(cn.RENAMED_NEW_NAME, path, kind))
                else:
                    out.append(Change(cn.ADDED, path, kind))
                if mask & IN_ISDIR and wd in self.recursive:
                    self._watch_new(path)
            elif mask & IN_MODIFY:
                out.append(Change(cn.MODIFIED, path, cn.SIZE | cn.LAST_WRITE))
            elif mask & IN_ATTRIB:
                out.append(Change(cn.MODIFIED, path, _ATTRIB_BITS))
        return out

    def _watch_new(self, directory: str) -> None:
        """A directory appeared under a recursive watch: watch it too (out of watches: it goes unseen)."""
        try:
            self.watch(directory, True)
        except OSError:
            pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class ShareWatcher:
    """Feeds what inotify sees in the local shares' watched directories to a server's CHANGE_NOTIFY
    rules: one thread, started by the first watch, that takes the server's lock for each batch.

    Watches stay until the server stops (a directory watched once is usually watched again).
    Shares that are not local directories (an in-memory share) have nothing to watch here: the
    server reports the changes made through it by itself.
    """

    def __init__(self, state, lock, stop, errors: list[str]) -> None:
        self.state = state
        self.lock = lock
        self.stop = stop
        self.errors = errors
        self.inotify: Inotify | None = None
        self.shares: list = []  # LocalShare objects with a watched directory
        self.unavailable = ""  # why the last watch could not be set up (inotify missing, limits)

    def watch(self, fs, path: str, recursive: bool) -> None:
        from harness.smb.vfs import LocalShare

        if not isinstance(fs, LocalShare):
            return
        try:
            if self.inotify is None:
                self.inotify = Inotify()
                threading.Thread(target=self._run, name="smb-inotify", daemon=True).start()
            self.inotify.watch(path, recursive)
        except OSError as exc:  # no inotify here, or out of watches: server-made changes still notify
            self.unavailable = str(exc)
            return
        if fs not in self.shares:
            self.shares.append(fs)

    def _run(self) -> None:
        from harness.smb.server import notify

        inotify = self.inotify
        assert inotify is not None
        try:
            while not self.stop.is_set():
                try:
                    data = inotify.read(0.5)
                except OSError as exc:  # the descriptor broke: stop watching, server-made changes still notify
                    self.unavailable = str(exc)
                    return
                if not data:
                    continue
                with self.lock:  # one batch of events, one completion per waiting request
                    for change in inotify.changes(data):
                        for fs in self.shares:
                            if change.path.startswith(fs.root.rstrip(os.sep) + os.sep):
                                notify.report(self.state, fs, change.action, change.path, change.filter_bits,
                                              local=True, flush=False)
                    notify.flush(self.state)
        finally:
            inotify.close()
