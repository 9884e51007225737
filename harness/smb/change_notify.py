"""Directory change notification: what SMB2 CHANGE_NOTIFY waits for and what it answers.

Sans-IO: a :class:`NotifyTable` keeps, per open directory, the watch its first CHANGE_NOTIFY set up
and the changes that happened since; it is told of changes (made through the server, or seen on
the local file system by the I/O side) and answers which waiting requests complete, with which
status and FILE_NOTIFY_INFORMATION bytes.  Names are the share's SMB names (``a\\b``, ``""`` for
the root), so the table works the same over any share.

Rules (MS-SMB2 3.3.5.19, MS-FSCC 2.7.1 and 2.4.42, with the behaviour of Windows and Samba that
smbtorture checks):

====================================  ============================================================
the watch                             set up by the first CHANGE_NOTIFY on an open: its
                                      CompletionFilter, WATCH_TREE and OutputBufferLength stay for
                                      the life of the open (later requests only wait).
which changes                         a change to an entry of the directory, or of any directory
                                      below it with WATCH_TREE, whose filter bits meet the watch's
                                      filter.  Bits outside the valid ones are ignored; with no
                                      valid bit a request waits until cancel or close.
between requests                      changes queue on the watch and the next request completes at
                                      once with them (Windows keeps this buffer too).
one operation, one response           a waiting request completes after the operation that changed
                                      things (a rename: old and new name together), not per change.
a renamed file's close                MODIFIED with ATTRIBUTES for its new name, when the handle it
                                      was renamed through closes (a rename sets the archive bit;
                                      Windows reports it at close: smbtorture smb2.notify.mask-change).
completion                            every queued change, in order, as FILE_NOTIFY_INFORMATION
                                      entries aligned to 4 bytes; names relative to the directory.
overflow                              the entries do not fit the request's OutputBufferLength (or
                                      the watch's), the buffer length is 0, or more than
                                      ``MAX_QUEUED`` changes queued: STATUS_NOTIFY_ENUM_DIR with no
                                      data (the client must re-read the directory).
close of the directory                waiting requests end with STATUS_NOTIFY_CLEANUP.
delete of the directory               when another open with delete-on-close closes, the waiting
                                      requests end with STATUS_DELETE_PENDING (smbtorture rmdir1-4).
CANCEL                                the request ends with STATUS_CANCELLED.
echoes                                a change the server made is also seen by the file-system
                                      monitor a moment later; a local change equal to one the server
                                      reported within ``ECHO_WINDOW_NS`` is that echo, not news.
====================================  ============================================================
"""

from __future__ import annotations

import struct
from collections.abc import Hashable
from dataclasses import dataclass, field

from .constants import NtStatus
from .errors import SMBProtocolError

# CompletionFilter bits (MS-SMB2 2.2.35).
FILE_NAME = 0x001
DIR_NAME = 0x002
ATTRIBUTES = 0x004
SIZE = 0x008
LAST_WRITE = 0x010
LAST_ACCESS = 0x020
CREATION = 0x040
EA = 0x080
SECURITY = 0x100
STREAM_NAME = 0x200
STREAM_SIZE = 0x400
STREAM_WRITE = 0x800
VALID_FILTER = 0xFFF

WATCH_TREE = 0x0001  # CHANGE_NOTIFY Flags

# FILE_NOTIFY_INFORMATION Action (MS-FSCC 2.7.1).
ADDED = 1
REMOVED = 2
MODIFIED = 3
RENAMED_OLD_NAME = 4
RENAMED_NEW_NAME = 5

MAX_QUEUED = 1000
ECHO_WINDOW_NS = 2_000_000_000

_ENTRY = struct.Struct("<III")


def encode(changes: list[tuple[int, str]]) -> bytes:
    """FILE_NOTIFY_INFORMATION entries: NextEntryOffset, Action, FileNameLength, FileName (UTF-16LE),
    each entry but the last padded to 4 bytes; the last has NextEntryOffset 0."""
    out = bytearray()
    for index, (action, name) in enumerate(changes):
        raw = name.encode("utf-16-le")
        size = _ENTRY.size + len(raw)
        padded = (size + 3) & ~3
        last = index == len(changes) - 1
        out += _ENTRY.pack(0 if last else padded, action, len(raw)) + raw
        if not last:
            out += bytes(padded - size)
    return bytes(out)


def decode(data: bytes) -> list[tuple[int, str]]:
    """The (action, name) pairs of FILE_NOTIFY_INFORMATION entries; a malformed chain raises
    :class:`SMBProtocolError` (INVALID_NETWORK_RESPONSE) instead of reading past the buffer."""
    out: list[tuple[int, str]] = []
    offset = 0
    while data:
        if offset + _ENTRY.size > len(data):
            raise SMBProtocolError(NtStatus.INVALID_NETWORK_RESPONSE, f"FILE_NOTIFY_INFORMATION at {offset} truncated")
        following, action, length = _ENTRY.unpack_from(data, offset)
        end = offset + _ENTRY.size + length
        if end > len(data) or length % 2:
            raise SMBProtocolError(NtStatus.INVALID_NETWORK_RESPONSE, f"FileNameLength {length} at {offset}")
        out.append((action, bytes(data[offset + _ENTRY.size:end]).decode("utf-16-le", "replace")))
        if following == 0:
            break
        if following < _ENTRY.size or following % 4:
            raise SMBProtocolError(NtStatus.INVALID_NETWORK_RESPONSE, f"NextEntryOffset {following} at {offset}")
        offset += following
    return out


@dataclass(frozen=True)
class Completion:
    """A waiting request ends: answer ``status`` with ``data`` (FILE_NOTIFY_INFORMATION bytes)."""

    token: Hashable
    status: NtStatus
    data: bytes = b""


@dataclass(frozen=True)
class Waiting:
    """The request waits (the server answers STATUS_PENDING now)."""

    token: Hashable


@dataclass
class _Request:
    token: Hashable
    buffer_length: int


@dataclass
class Watch:
    """The notify state of one open directory."""

    scope: Hashable  # the share (two shares may use the same names)
    directory: str
    recursive: bool
    completion_filter: int
    buffer_length: int
    queue: list[tuple[int, str]] = field(default_factory=list)
    overflowed: bool = False
    requests: list[_Request] = field(default_factory=list)

    def relative(self, name: str) -> str | None:
        """``name`` relative to the watched directory when the watch covers it, else None."""
        prefix = self.directory + "\\" if self.directory else ""
        if not name.startswith(prefix) or name == self.directory:
            return None
        rest = name[len(prefix):]
        if "\\" in rest and not self.recursive:
            return None
        return rest


class NotifyTable:
    """Every directory watch of a server, keyed by the open that set it up."""

    def __init__(self) -> None:
        self.watches: dict[Hashable, Watch] = {}
        self._recent: dict[tuple[Hashable, int, str], int] = {}
        self._renamed: set[Hashable] = set()  # opens of files renamed through them, until they close

    def renamed_through(self, key: Hashable) -> None:
        """A file was renamed through open ``key``: its close reports MODIFIED (ATTRIBUTES)."""
        self._renamed.add(key)

    def closing(self, key: Hashable) -> bool:
        """Open ``key`` closes: whether a file was renamed through it (see :meth:`renamed_through`)."""
        if key in self._renamed:
            self._renamed.discard(key)
            return True
        return False

    def request(self, key: Hashable, scope: Hashable, directory: str, flags: int, completion_filter: int,
                buffer_length: int, token: Hashable) -> Completion | Waiting:
        """A CHANGE_NOTIFY on open ``key``: completes at once with queued changes, or waits."""
        watch = self.watches.get(key)
        if watch is None:
            watch = Watch(scope, directory, bool(flags & WATCH_TREE), completion_filter & VALID_FILTER, buffer_length)
            self.watches[key] = watch
        request = _Request(token, buffer_length)
        if watch.queue or watch.overflowed:
            return self._answer(watch, request)
        watch.requests.append(request)
        return Waiting(token)

    def _answer(self, watch: Watch, request: _Request) -> Completion:
        changes, overflowed = watch.queue, watch.overflowed
        watch.queue, watch.overflowed = [], False
        data = encode(changes)
        if overflowed or not data or len(data) > min(request.buffer_length, watch.buffer_length):
            return Completion(request.token, NtStatus.NOTIFY_ENUM_DIR)
        return Completion(request.token, NtStatus.SUCCESS, data)

    def change(self, scope: Hashable, action: int, name: str, filter_bits: int, now: int = 0,
               local: bool = False) -> None:
        """Entry ``name`` changed (``action``, meeting ``filter_bits``): queue it on the watches that
        cover it.  :meth:`flush` then completes the waiting requests, once per operation, so that
        the two halves of a rename reach the client in one response (smbtorture checks that).

        ``local``: seen by the file-system monitor rather than made by the server; dropped when it
        echoes a change the server reported within ``ECHO_WINDOW_NS`` of ``now``.
        """
        echo = (scope, action, name)
        if local:
            seen = self._recent.get(echo)
            if seen is not None and now - seen <= ECHO_WINDOW_NS:
                return
        else:
            self._recent = {k: t for k, t in self._recent.items() if now - t <= ECHO_WINDOW_NS}
            self._recent[echo] = now
        for watch in self.watches.values():
            if watch.scope != scope or not watch.completion_filter & filter_bits:
                continue
            relative = watch.relative(name)
            if relative is None:
                continue
            if len(watch.queue) >= MAX_QUEUED:
                watch.overflowed = True
                watch.queue = []
            elif not watch.overflowed:
                watch.queue.append((action, relative))

    def flush(self) -> list[Completion]:
        """Complete the first waiting request of every watch that has changes queued."""
        return [self._answer(watch, watch.requests.pop(0)) for watch in self.watches.values()
                if watch.requests and (watch.queue or watch.overflowed)]

    def cancel(self, token: Hashable) -> Completion | None:
        for watch in self.watches.values():
            for request in watch.requests:
                if request.token == token:
                    watch.requests.remove(request)
                    return Completion(token, NtStatus.CANCELLED)
        return None

    def forget_request(self, token: Hashable) -> None:
        """A waiting request went away with its connection: nobody to answer."""
        for watch in self.watches.values():
            watch.requests = [r for r in watch.requests if r.token != token]

    def fail(self, key: Hashable, status: NtStatus) -> list[Completion]:
        """End the waiting requests of one watch with ``status`` (the directory is being deleted:
        STATUS_DELETE_PENDING); the watch itself stays until its open closes."""
        watch = self.watches.get(key)
        if watch is None:
            return []
        done, watch.requests = [Completion(r.token, status) for r in watch.requests], []
        return done

    def close(self, key: Hashable) -> list[Completion]:
        """The directory's open closed: its waiting requests end with STATUS_NOTIFY_CLEANUP."""
        watch = self.watches.pop(key, None)
        if watch is None:
            return []
        return [Completion(r.token, NtStatus.NOTIFY_CLEANUP) for r in watch.requests]

    def watched(self) -> list[Watch]:
        return list(self.watches.values())
