"""What all connections of one server share: sessions, open files (for breaks and sharing
checks), directory watchers and the durable-open table.

Why apart from the connection: a break or a CHANGE_NOTIFY completion caused on one connection goes
out on another, and a durable open outlives its connection, so these tables belong to the server,
not to a connection.  A server started on a state directory loads the durable opens a previous run
left there (detached, waiting for a reconnect).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .. import durable
from ..byterange import RangeLocks
from ..caching import CachingTable
from ..change_notify import NotifyTable
from ..vfs import LocalShare, Share
from .model import Open, Pending, ServerConfig, Session, ShareConfig
from .opens import restore_open

ENDED_SESSIONS_KEPT = 256


class ServerState:
    """What all connections of one server share: sessions and open files (for breaks)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.sessions: dict[int, Session] = {}
        # Sessions that ended (LOGOFF, failed re-authentication, PreviousSessionId), the latest
        # ENDED_SESSIONS_KEPT of them: a signed request for one gets a *signed*
        # USER_SESSION_DELETED, as a client that signs insists on (see :meth:`end_session`).
        self.ended_sessions: dict[int, Session] = {}
        # SessionIds stay below 2**32, as Samba's do: smbtorture (smb2.session-id) keeps a session's id in
        # a 32-bit variable and sends it back, so a larger id comes back truncated.  The random start
        # keeps a restarted server from handing out the ids of its previous run.
        self.next_session = (int.from_bytes(os.urandom(2), "little") & 0x7FFF) << 16 | 1
        self.next_file_id = 1
        self.next_async = 1
        self.opens_by_path: dict[str, list[Open]] = {}
        self.notify = NotifyTable()  # directory watches of CHANGE_NOTIFY (notify.py in this package)
        self.byte_locks: dict[str, RangeLocks] = {}  # path -> the file's byte-range locks (locking.py)
        self.notify_waiters: dict[int, Pending] = {}  # async id -> a CHANGE_NOTIFY waiting (notify.py)
        self.lock_waiters: dict[object, tuple] = {}  # blocking LOCK token -> (Pending, Open, index, number)
        # Told (share, path, recursive) when a directory gets watched: the I/O side may watch it on
        # the local file system too (changes by other programs); a no-op by default.
        self.on_watch: Callable[[Share, str, bool], None] = lambda share, path, recursive: None
        self.meta_overrides: dict[tuple[int, int], dict] = {}
        self.write_time_pending: list[Open] = []  # opens whose delayed write-time update waits (write_time.py)
        self.on_output: Callable[[Any], None] = lambda connection: None
        self.shares: dict[str, tuple[ShareConfig, Share]] = {
            name.lower(): (share, share.fs or LocalShare(share.path)) for name, share in config.shares.items()}
        self.caching = CachingTable(break_timeout=config.break_timeout)  # oplocks and leases (oplocks.py)
        self.waiting: list[Any] = []  # requests waiting for break acknowledgments (oplocks.Waiting)
        self.durable = durable.DurableTable(config.state_dir, lambda: config.clock())
        top = self.durable.load(lambda record, info: restore_open(self, record, info))
        self.next_file_id = max(self.next_file_id, top + 1)


    def end_session(self, session: Session) -> None:
        """``session`` is gone from the GlobalSessionTable; its keys are kept a while, only to sign
        the USER_SESSION_DELETED that signed requests for it get."""
        self.sessions.pop(session.session_id, None)
        self.ended_sessions.pop(session.session_id, None)
        self.ended_sessions[session.session_id] = session
        while len(self.ended_sessions) > ENDED_SESSIONS_KEPT:
            del self.ended_sessions[next(iter(self.ended_sessions))]
    def new_session_id(self) -> int:
        self.next_session += 1
        return self.next_session
