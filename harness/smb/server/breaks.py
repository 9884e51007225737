"""What a change made through this server tells other clients' caches: oplock and lease breaks
(change notification is :mod:`.notify`).

Rules kept here (why they are simple): oplocks are granted at most at level II (BATCH only for a v1
durable open) and leases at most READ (plus HANDLE for durability), so a break to NONE never needs
an acknowledgment (§3.3.4.6, §3.3.4.7) and nothing here waits.
"""

from __future__ import annotations

from .. import messages as m
from ..constants import UNSOLICITED_MESSAGE_ID, Command, HeaderFlags, LeaseState, OplockLevel
from ..header import Header
from .model import Open


def break_others(conn, writer: Open) -> None:
    """A write invalidates other clients' read caches: break level II oplocks and READ leases to NONE.
    Neither break needs an acknowledgment (§3.3.4.6, §3.3.4.7), so nothing waits here."""
    for other in list(conn.state.opens_by_path.get(writer.path, [])):
        if other is writer:
            continue
        target = other.connection
        if target is None:  # a detached durable open: nobody to tell; its caches died with the client
            continue
        if other.oplock in (OplockLevel.II, OplockLevel.BATCH):
            other.oplock = OplockLevel.NONE
            header = Header(command=Command.OPLOCK_BREAK, flags=HeaderFlags.SERVER_TO_REDIR,
                            message_id=UNSOLICITED_MESSAGE_ID, session_id=other.session.session_id)
            body: m.Message = m.OplockBreakNotification(file_id=other.file_id, oplock_level=OplockLevel.NONE)
            encrypt = other.session.encrypt_data or other.tree.encrypt
            target.send_unsolicited(header, body, other.session, encrypt)
        elif other.lease_state and other.lease_key != writer.lease_key:
            # READ caching goes; HANDLE caching (durability) survives a write (§3.3.4.7).
            current, other.lease_state = other.lease_state, other.lease_state & LeaseState.HANDLE_CACHING
            if current == other.lease_state:
                continue
            header = Header(command=Command.OPLOCK_BREAK, flags=HeaderFlags.SERVER_TO_REDIR,
                            message_id=UNSOLICITED_MESSAGE_ID, session_id=0)
            body = m.LeaseBreakNotification(lease_key=other.lease_key, current_lease_state=current,
                                            new_lease_state=other.lease_state, new_epoch=other.lease_epoch)
            target.send_unsolicited(header, body, None, False)

