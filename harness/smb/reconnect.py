"""Client side of reconnect and replay (MS-SMB2 §3.2.4.1.1, §3.2.4.4, §3.2.7.1), sans-IO.

Rules the I/O adapters (harness/blocking/reconnect.py, harness/blocking/multichannel.py) follow with these
helpers:

1. A file opened for resilience asks for durability: v2 = DH2Q with a fresh CreateGuid and a v2 lease
   with READ|HANDLE caching; v1 = DHnQ with a BATCH oplock (§3.2.4.3.5, .3.10).  ``none`` asks for
   nothing and is reopened by name after a reconnect (a best effort: not atomic, another client may
   have changed the file in between).
2. After a transport failure the client logs on again on a new connection with PreviousSessionId =
   the lost session (the server then lets go of it even if it never saw the connection die), tree
   connects again and reopens each durable handle with DH2C (FileId + CreateGuid) or DHnC (FileId),
   with the same lease key (§3.2.4.4).  The Persistent part of the FileId never changes; the volatile
   part may, so the application keeps its FileId and the adapter translates.
3. The channel sequence goes up by one on every channel loss (§3.2.7.1) and is copied into every 3.x
   request header; requests that were outstanding are sent again with SMB2_FLAGS_REPLAY_OPERATION.
   A replayed CREATE keeps its CreateGuid, so the server hands back the open it already made
   instead of making (and truncating) a second one.
4. WRITE, SET_INFO and IOCTL answered with STATUS_FILE_NOT_AVAILABLE are replayed once more with the
   REPLAY flag (§3.2.5.12): the server saw a newer channel sequence first.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, cast

from . import messages as m
from .constants import Command, CreateDisposition, CreateOptions, HeaderFlags, LeaseState, OplockLevel
from .messages.create_contexts import (
    DH2C,
    DH2Q,
    DHNC,
    DHNQ,
    DurableHandleReconnect,
    DurableHandleReconnectV2,
    DurableHandleRequest,
    DurableHandleRequestV2,
    LeaseV2,
    find_context,
)

HANDLE_TYPES = ("none", "durable1", "durable2", "persistent")
REPLAYABLE_ON_FILE_NOT_AVAILABLE = (Command.WRITE, Command.SET_INFO, Command.IOCTL)
DHANDLE_FLAG_PERSISTENT = 0x2


def mark(header: bytes, channel_sequence: int, replay: bool) -> bytes:
    """A packed request header with ChannelSequence (bytes 8..9) and, for a replay, the REPLAY flag."""
    raw = bytearray(header)
    raw[8:10] = (channel_sequence & 0xFFFF).to_bytes(2, "little")
    if replay:
        flags = int.from_bytes(raw[16:20], "little") | HeaderFlags.REPLAY_OPERATION
        raw[16:20] = flags.to_bytes(4, "little")
    return bytes(raw)


@dataclass
class Handle:
    """One open the client will bring back after a reconnect."""

    kind: str  # "none", "durable1", "durable2", "persistent"
    app_file_id: bytes
    file_id: bytes
    app_tree: int
    request: m.CreateRequest
    create_guid: bytes = b""
    lease_key: bytes = b""
    lost: int = 0  # NTSTATUS when it could not be brought back


def durable_create(request: m.CreateRequest, kind: str, timeout_ms: int = 0) -> tuple[m.CreateRequest, bytes, bytes]:
    """Rule 1: the CREATE with durability asked for; returns (request, CreateGuid, LeaseKey)."""
    if kind == "none" or request.create_options & CreateOptions.DIRECTORY_FILE:
        return request, b"", b""
    names = {c.name for c in request.contexts}
    if names & {DHNQ, DHNC, DH2Q, DH2C}:
        return request, b"", b""  # the caller manages durability itself
    if kind == "durable1":
        contexts = [*request.contexts, DurableHandleRequest().to_context()]
        return dataclasses.replace(request, requested_oplock_level=OplockLevel.BATCH, contexts=contexts), b"", b""
    create_guid, lease_key = os.urandom(16), os.urandom(16)
    flags = DHANDLE_FLAG_PERSISTENT if kind == "persistent" else 0
    lease = LeaseV2(lease_key=lease_key, lease_state=LeaseState.READ_CACHING | LeaseState.HANDLE_CACHING)
    contexts = [*request.contexts, lease.to_context(),
                DurableHandleRequestV2(timeout=timeout_ms, flags=flags, create_guid=create_guid).to_context()]
    return (dataclasses.replace(request, requested_oplock_level=OplockLevel.LEASE, contexts=contexts),
            create_guid, lease_key)


def granted_kind(kind: str, response: m.CreateResponse) -> str:
    """What the server actually granted (it may ignore the durable context)."""
    if kind == "durable1":
        return kind if find_context(response.contexts, DHNQ) else "none"
    if kind in ("durable2", "persistent"):
        ctx = find_context(response.contexts, DH2Q)
        if ctx is None:
            return "none"
        flags = int.from_bytes(ctx.data[4:8], "little") if len(ctx.data) >= 8 else 0
        return "persistent" if flags & DHANDLE_FLAG_PERSISTENT else "durable2"
    return "none"


def reopen_request(handle: Handle) -> m.CreateRequest:
    """Rule 2: the CREATE that brings ``handle`` back on a new session."""
    base = handle.request
    keep = [c for c in base.contexts if c.name not in (DHNQ, DHNC, DH2Q, DH2C, b"RqLs")]
    if handle.kind == "none":
        disposition = CreateDisposition.OPEN
        return dataclasses.replace(base, create_disposition=disposition, contexts=keep,
                                   create_options=base.create_options & ~CreateOptions.DELETE_ON_CLOSE)
    if handle.kind == "durable1":
        return dataclasses.replace(base, requested_oplock_level=OplockLevel.BATCH,
                                   contexts=[*keep, DurableHandleReconnect(file_id=handle.file_id).to_context()])
    flags = DHANDLE_FLAG_PERSISTENT if handle.kind == "persistent" else 0
    lease = LeaseV2(lease_key=handle.lease_key, lease_state=LeaseState.READ_CACHING | LeaseState.HANDLE_CACHING)
    return dataclasses.replace(base, requested_oplock_level=OplockLevel.LEASE,
                               contexts=[*keep, lease.to_context(),
                                         DurableHandleReconnectV2(file_id=handle.file_id,
                                                                  create_guid=handle.create_guid,
                                                                  flags=flags).to_context()])


@dataclass
class Outstanding:
    """A request sent and not yet answered, as the application wrote it."""

    app_mid: int
    command: int
    body: m.Message
    app_tree: int
    payload: int
    mid: int
    replays: int = 0
    create_guid: bytes = b""
    lease_key: bytes = b""
    kind: str = "none"
    extra: dict = field(default_factory=dict)


def translate(body: m.Message, file_ids: dict[bytes, bytes]) -> m.Message:
    """The body with the application's FileId replaced by the current one (rule 2)."""
    file_id = getattr(body, "file_id", None)
    if file_id is None or file_id not in file_ids or file_ids[file_id] == file_id:
        return body
    return dataclasses.replace(cast(Any, body), file_id=file_ids[file_id])  # every body is a dataclass
