"""The file commands of a tree connect, routed to their handlers by command family.

Why a table: each handler module (create, readwrite, lock_notify, directory, query_info, set_info,
ioctl) names the commands it answers, and this module only joins them; the connection module
(:mod:`.connection`) owns what comes before a handler runs (credits, signing, encryption, session
and tree lookup).  Two checks apply to every file command first: the channel sequence
(:mod:`.replay`, §3.3.5.2.10) and that IPC$ has no files (only IOCTL, ECHO and CLOSE reach it).
"""

from __future__ import annotations

from ..constants import Command, NtStatus
from ..header import Header
from . import create, directory, ioctl, lock_notify, query_info, readwrite, replay, set_info, write_time
from .model import Fail, Handler, Related, Reply, Session, Tree

HANDLERS: dict[int, Handler] = {**create.HANDLERS, **readwrite.HANDLERS, **lock_notify.HANDLERS, **directory.HANDLERS,
                               **query_info.HANDLERS, **set_info.HANDLERS, **ioctl.HANDLERS}


def dispatch(conn, session: Session, tree: Tree, header: Header, request, related: Related, encrypted: bool) -> Reply:
    handler = HANDLERS.get(header.command)
    if handler is None:
        raise Fail(NtStatus.NOT_SUPPORTED, f"command 0x{header.command:x}")
    replay.check_channel_sequence(conn, session, header, request, related)
    if tree.fs is None and header.command not in (Command.IOCTL, Command.ECHO, Command.CLOSE):
        if header.command == Command.CREATE:
            raise Fail(NtStatus.OBJECT_NAME_NOT_FOUND, "no pipes on IPC$")
        raise Fail(NtStatus.NOT_SUPPORTED, "IPC$ has no files")
    write_time.run_due(conn.state)  # delayed write-time updates that fell due before this request
    return handler(conn, session, tree, header, request, related, encrypted)
