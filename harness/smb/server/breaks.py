"""What a change made through this server tells other clients: the completion of CHANGE_NOTIFY
requests waiting on a directory (oplock and lease breaks are :mod:`.oplocks`'s).

A CHANGE_NOTIFY completes with
STATUS_NOTIFY_ENUM_DIR on any change in its directory: the server does not say what changed.
"""

from __future__ import annotations

from .. import messages as m
from ..constants import NtStatus


def notify_change(conn, directory: str) -> None:
    state = conn.state
    for pending in list(state.watchers):
        if pending.open is not None and pending.open.path == directory:
            state.watchers.remove(pending)
            (pending.connection or pending.session.connection).complete_async(pending, NtStatus.NOTIFY_ENUM_DIR, m.ChangeNotifyResponse(b""))
