"""Channel sequence numbers on the server (MS-SMB2 §3.3.5.2.10).

Why it exists: after a channel fails, a client replays its outstanding requests on another channel
with a higher ChannelSequence.  A request still in flight on the dead channel that arrives *after*
the replay carries the old sequence; the server must not apply it (it would write stale data over
the replayed one), so an older sequence fails WRITE, SET_INFO and IOCTL with
STATUS_FILE_NOT_AVAILABLE, and the client retries those with the REPLAY flag.

Rules (3.x only, requests that name a FileId):

1. ChannelSequence equal to Open.ChannelSequence: accepted.
2. Ahead of it (16-bit unsigned difference <= 0x7FFF): accepted, Open.ChannelSequence moves up.
3. Behind it: WRITE, SET_INFO and IOCTL fail with STATUS_FILE_NOT_AVAILABLE; other commands pass.

This server completes every request before reading the next one, so Open.OutstandingRequestCount
is back to zero between requests and OutstandingPreRequestCount is always zero: the REPLAY flag
therefore changes nothing in the rules above (the spec's extra failure needs a request of the older
sequence still running).
"""

from __future__ import annotations

import struct

from ..constants import Command, Dialect, NtStatus
from .model import ALL_FF, Fail

FAILS_WHEN_STALE = (Command.WRITE, Command.SET_INFO, Command.IOCTL)
FILE_ID_COMMANDS = (Command.WRITE, Command.READ, Command.SET_INFO, Command.QUERY_INFO, Command.IOCTL,
                    Command.FLUSH, Command.LOCK, Command.CLOSE, Command.QUERY_DIRECTORY, Command.CHANGE_NOTIFY)


def sequence_ahead(new: int, current: int) -> bool:
    """True when ``new`` is ``current`` or up to 0x7FFF ahead of it, in 16-bit arithmetic."""
    return ((new - current) & 0xFFFF) <= 0x7FFF


def check_channel_sequence(conn, session, header, request, related) -> None:
    """Apply the rules to one request; raises ``Fail(STATUS_FILE_NOT_AVAILABLE)`` (rule 3)."""
    if conn.dialect < Dialect.SMB_3_0 or header.command not in FILE_ID_COMMANDS:
        return
    file_id = getattr(request, "file_id", None)
    if file_id is None:
        return
    if file_id == ALL_FF:
        file_id = related.file_id
    persistent, volatile = struct.unpack("<QQ", file_id)
    opened = session.opens.get(volatile)
    if opened is None or opened.persistent != persistent:
        return  # the handler reports the unknown FileId
    sequence = header.channel_sequence
    if sequence == opened.channel_sequence:
        return
    if sequence_ahead(sequence, opened.channel_sequence):
        opened.channel_sequence = sequence
        return
    if header.command in FAILS_WHEN_STALE:
        raise Fail(NtStatus.FILE_NOT_AVAILABLE,
                   f"ChannelSequence {sequence} is behind the open's {opened.channel_sequence}")
