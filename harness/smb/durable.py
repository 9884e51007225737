"""Durable, persistent and replayable opens on the server (MS-SMB2 §3.3.5.9.6, .7, .10, .12, §3.3.7.1).

Rules this module enforces:

1. DHnQ (v1) makes an open durable only with a BATCH oplock or a lease holding HANDLE caching
   (§3.3.5.9.6); otherwise the context is ignored.  DHnQ together with DH2Q/DH2C is
   STATUS_INVALID_PARAMETER, so is DH2Q with DHnQ/DHnC/DH2C (§3.3.5.9.10).
2. DH2Q (v2, 3.x only) is durable with a BATCH oplock, a HANDLE lease, or when it asks for a
   persistent handle on a continuously available share (then the open is persistent).  The granted
   timeout is min(request, 300 s), or the server default when the request says 0.
3. A CREATE carrying DH2Q whose CreateGuid matches a replay-eligible open of the same ClientGuid is a
   replay: without SMB2_FLAGS_REPLAY_OPERATION it fails with STATUS_DUPLICATE_OBJECTID, with it the
   existing open is handed back (no second open, no second truncation).
4. When a connection is lost (§3.3.7.1) a durable open is kept, detached from session and tree, for
   its timeout (persistent opens too); a non-durable open is closed.
5. DHnC / DH2C give a detached open back only to a session of the same user (else
   STATUS_ACCESS_DENIED), with the same CreateGuid for DH2C (a v1 open's is all zeros) and, when
   the open has a lease, the same
   ClientGuid (else STATUS_OBJECT_NAME_NOT_FOUND, §3.3.5.9.12: without a lease the ClientGuid may
   change, smbtorture durable-v2-open.reopen2 relies on it); an open still attached to a session, an unknown FileId and an
   expired open are STATUS_OBJECT_NAME_NOT_FOUND.  A v2 persistent open needs the PERSISTENT flag in
   DH2C and vice versa.
6. With a state directory, every durable open is written to ``durable.json`` when it is granted,
   reconnected or closed.  A server started on the same directory loads them as detached opens with a
   fresh timeout: that is the "server restart keeps durable state" model (the file data itself is on
   the share; nothing is cached in memory that a restart could lose).

Theory of operation: :class:`DurableTable` is the server-wide GlobalOpenTable restricted to durable
opens (keyed by FileId.Persistent, plus CreateGuid for replay).  The server's CREATE handler
(:mod:`harness.smb.server.create`) calls :func:`parse_request`, :func:`find_reconnect` and
:func:`find_replay` first (which may answer the whole CREATE: replay or reconnect) and :func:`grant`
once a new open exists; a lost connection calls :meth:`DurableTable.detach`.  Time comes from ``ServerConfig.clock`` (nanoseconds); expiry is checked lazily on every
lookup, so no timers run here.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from typing import Any

from .constants import Dialect, HeaderFlags, LeaseState, NtStatus, OplockLevel
from .errors import SMBStatusError
from .messages.create_contexts import (
    DH2C,
    DH2Q,
    DHNC,
    DHNQ,
    RQLS,
    DurableHandleReconnect,
    DurableHandleReconnectV2,
    DurableHandleRequestV2,
    DurableHandleResponse,
    DurableHandleResponseV2,
    LeaseV1,
    LeaseV2,
    find_context,
)

DHANDLE_FLAG_PERSISTENT = 0x2
MAX_TIMEOUT_MS = 300_000
DEFAULT_TIMEOUT_MS = 60_000  # Windows Server 2012's default for DH2Q with Timeout 0 (<344>)
V1_TIMEOUT_MS = 16_000  # DHnQ has no timeout field; Windows keeps them 16 s (<335>)
STATE_FILE = "durable.json"


@dataclass
class DurableInfo:
    """What makes an open durable (Open.IsDurable, DurableOwner, CreateGuid, ...)."""

    version: int  # 1 = DHnQ, 2 = DH2Q
    owner: str
    client_guid: bytes
    create_guid: bytes = b""
    timeout_ms: int = V1_TIMEOUT_MS
    persistent: bool = False
    lease_version: int = 0  # 0 = no lease, else 1 or 2
    share: str = ""
    name: str = ""
    detached_at: int | None = None  # clock ns when the connection was lost
    create_action: int = 1  # FILE_OPENED; what the original CREATE answered (a replay answers the same)

    def expired(self, now: int) -> bool:
        return self.detached_at is not None and now - self.detached_at > self.timeout_ms * 1_000_000


class Reject(SMBStatusError):
    """A durable context makes the CREATE fail with ``status``."""


class DurableTable:
    def __init__(self, state_dir: str | None = None, clock=lambda: 0) -> None:
        self.state_dir = state_dir
        self.clock = clock
        # persistent id -> the server's Open with .durable set (typed Any: the Open lives in the
        # server package, which imports this module)
        self.opens: dict[int, Any] = {}
        self.loaded: list[dict] = []

    # -------------------------------------------------------------- table

    def add(self, opened) -> None:
        self.opens[opened.persistent] = opened
        self.save()

    def remove(self, opened) -> None:
        if opened.persistent in self.opens and self.opens[opened.persistent] is opened:
            del self.opens[opened.persistent]
            self.save()

    def by_create_guid(self, create_guid: bytes, client_guid: bytes):
        for opened in self.opens.values():
            info = opened.durable
            if info.create_guid == create_guid and info.client_guid == client_guid:
                return opened
        return None

    def expire(self, forget) -> None:
        """Close detached opens whose timeout passed (``forget(open)`` releases it)."""
        now = self.clock()
        for opened in list(self.opens.values()):
            if opened.durable.expired(now):
                del self.opens[opened.persistent]
                forget(opened)
        self.save()

    def detach(self, opened) -> bool:
        """The open's connection is gone: keep it (True) if durable, else the caller closes it."""
        if getattr(opened, "durable", None) is None or opened.persistent not in self.opens \
                or self.opens[opened.persistent] is not opened:
            return False
        opened.durable.detached_at = self.clock()
        opened.session = opened.tree = opened.connection = None
        self.save()
        return True

    # -------------------------------------------------------------- state directory

    def save(self) -> None:
        if not self.state_dir:
            return
        records = []
        for opened in self.opens.values():
            info = opened.durable
            records.append({
                "persistent": opened.persistent, "path": opened.path, "is_dir": opened.is_dir,
                "access": opened.access, "share_access": opened.share_access, "oplock": opened.oplock,
                "lease_key": (opened.lease_key or b"").hex(), "lease_state": opened.lease_state,
                "lease_epoch": opened.lease_epoch, "version": info.version, "owner": info.owner,
                "client_guid": info.client_guid.hex(), "create_guid": info.create_guid.hex(),
                "timeout_ms": info.timeout_ms, "persistent_handle": info.persistent,
                "lease_version": info.lease_version, "share": info.share, "name": info.name,
            })
        os.makedirs(self.state_dir, exist_ok=True)
        path = os.path.join(self.state_dir, STATE_FILE)
        with open(path + ".tmp", "w") as handle:
            json.dump(records, handle)
        os.replace(path + ".tmp", path)

    def load(self, make_open) -> int:
        """Recreate detached opens from the state directory; returns the largest persistent id."""
        if not self.state_dir:
            return 0
        path = os.path.join(self.state_dir, STATE_FILE)
        try:
            with open(path) as handle:
                records = json.load(handle)
        except FileNotFoundError:
            return 0
        now = self.clock()
        top = 0
        for record in records:
            info = DurableInfo(record["version"], record["owner"], bytes.fromhex(record["client_guid"]),
                               bytes.fromhex(record["create_guid"]), record["timeout_ms"],
                               record["persistent_handle"], record["lease_version"], record["share"],
                               record["name"], detached_at=now)
            opened = make_open(record, info)
            self.opens[opened.persistent] = opened
            top = max(top, opened.persistent)
        return top


# ------------------------------------------------------------------------------- CREATE hooks


@dataclass
class CreateIntent:
    """What the durable contexts of one CREATE ask for (decided before the open exists)."""

    version: int = 0
    timeout_ms: int = 0
    persistent: bool = False
    create_guid: bytes = b""


def parse_request(conn, request) -> tuple[str, object] | CreateIntent:
    """Classify the durable contexts: ``("reconnect", ctx)`` / ``("reconnect2", ctx)`` or an intent.

    Raises :class:`Reject` for forbidden combinations (rule 1)."""
    names = {c.name for c in request.contexts}
    v1q, v1c, v2q, v2c = DHNQ in names, DHNC in names, DH2Q in names, DH2C in names
    if (v1q or v1c) and (v2q or v2c):
        raise Reject(NtStatus.INVALID_PARAMETER, "v1 and v2 durable contexts together")
    if v2q and v2c:
        raise Reject(NtStatus.INVALID_PARAMETER, "DH2Q with DH2C")
    if (v2q or v2c) and conn.dialect < Dialect.SMB_3_0:
        v2q = v2c = False  # 3.x only: ignored on 2.x
    if v1c:
        return ("reconnect", DurableHandleReconnect.from_context(_present(request, DHNC)))
    if v2c:
        return ("reconnect2", DurableHandleReconnectV2.from_context(_present(request, DH2C)))
    if v2q:
        ctx = DurableHandleRequestV2.from_context(_present(request, DH2Q))
        config = conn.config  # the server's configured timeouts (`wirecheck serve --durable-timeout`)
        timeout = min(ctx.timeout, config.durable_max_timeout_ms) if ctx.timeout else config.durable_timeout_ms
        return CreateIntent(2, timeout, bool(ctx.flags & DHANDLE_FLAG_PERSISTENT), ctx.create_guid)
    if v1q:
        return CreateIntent(1, conn.config.durable_v1_timeout_ms)
    return CreateIntent()


def _present(request, name: bytes):
    """A context the request is known to carry (its name was seen among the contexts)."""
    context = find_context(request.contexts, name)
    if context is None:
        raise Reject(NtStatus.INVALID_PARAMETER, f"no {name!r} context")
    return context


def wants_handle_caching(request) -> bool:
    """Whether the CREATE asks for what durability needs: BATCH or a lease with HANDLE caching."""
    if request.requested_oplock_level == OplockLevel.BATCH:
        return True
    if request.requested_oplock_level == OplockLevel.LEASE:
        ctx = find_context(request.contexts, RQLS)
        if ctx is not None and len(ctx.data) in (32, 52):
            return bool(struct.unpack_from("<I", ctx.data, 16)[0] & LeaseState.HANDLE_CACHING)
    return False


def grant(conn, session, tree, request, intent: CreateIntent, opened, table: DurableTable) -> list:
    """After the open exists: make it durable if the rules allow; return the response contexts."""
    if not intent.version or opened.is_dir:
        return []
    share = tree.share
    persistent = bool(intent.persistent and intent.version == 2 and share is not None
                      and getattr(share, "continuously_available", False))
    caching = (opened.oplock == OplockLevel.BATCH
               or (opened.lease_key is not None and opened.lease_state & LeaseState.HANDLE_CACHING))
    if not caching and not persistent:
        return []
    lease_version = 0
    if opened.lease_key is not None:
        lease_version = 2 if len(_present(request, RQLS).data) == 52 else 1
    opened.durable = DurableInfo(intent.version, session.username, conn.client_guid, intent.create_guid,
                                 intent.timeout_ms, persistent, lease_version, share.name if share else "",
                                 request.name)
    table.add(opened)
    if intent.version == 1:
        return [DurableHandleResponse().to_context()]
    return [DurableHandleResponseV2(timeout=intent.timeout_ms,
                                    flags=DHANDLE_FLAG_PERSISTENT if persistent else 0).to_context()]


def find_replay(conn, header, request, intent: CreateIntent, table: DurableTable):
    """Rule 3: the open a DH2Q CreateGuid names, or None.  Raises DUPLICATE_OBJECTID without REPLAY."""
    if intent.version != 2 or not intent.create_guid:
        return None
    existing = table.by_create_guid(intent.create_guid, conn.client_guid)
    if existing is None:
        return None
    if not header.flags & HeaderFlags.REPLAY_OPERATION:
        raise Reject(NtStatus.DUPLICATE_OBJECTID, "CreateGuid already in use and not a replay")
    # A replay must ask for what the original asked for: the same lease (key) or none (Samba and
    # Windows answer a changed request with ACCESS_DENIED; smbtorture smb2.replay.replay-dhv2-*).
    lease_ctx = find_context(request.contexts, RQLS) if request.requested_oplock_level == OplockLevel.LEASE else None
    if (lease_ctx is None) != (existing.lease_key is None):
        raise Reject(NtStatus.ACCESS_DENIED, "replay asks for a lease where the original did not, or vice versa")
    if lease_ctx is not None and len(lease_ctx.data) >= 16 and lease_ctx.data[:16] != existing.lease_key:
        raise Reject(NtStatus.ACCESS_DENIED, "replay with another lease key")
    return existing


def find_reconnect(conn, session, request, kind: str, ctx, table: DurableTable):
    """Rule 5: the detached open a DHnC/DH2C names, or :class:`Reject` with the MS-SMB2 status."""
    persistent_id = struct.unpack_from("<Q", ctx.file_id, 0)[0]
    opened = table.opens.get(persistent_id)
    info = getattr(opened, "durable", None)
    if kind == "reconnect2" and opened is None and ctx.flags & DHANDLE_FLAG_PERSISTENT:
        opened = table.by_create_guid(ctx.create_guid, conn.client_guid)
        info = getattr(opened, "durable", None)
    if opened is None or info is None:
        raise Reject(NtStatus.OBJECT_NAME_NOT_FOUND, "no durable open with that FileId")
    if info.expired(table.clock()):
        raise Reject(NtStatus.OBJECT_NAME_NOT_FOUND, "durable open timed out")
    lease_ctx = find_context(request.contexts, RQLS)
    if info.lease_version and info.client_guid != conn.client_guid:
        raise Reject(NtStatus.OBJECT_NAME_NOT_FOUND, "another ClientGuid")
    if kind == "reconnect2":
        # A v1 (DHnQ) open has no CreateGuid: it compares as all zeros, so a DH2C with a zero
        # CreateGuid reconnects it, as with Samba (smbtorture smb2.durable-open.reopen2-lease)
        create_guid = info.create_guid if info.version == 2 else bytes(16)
        if create_guid != bytes(ctx.create_guid):
            raise Reject(NtStatus.OBJECT_NAME_NOT_FOUND, "CreateGuid does not match")
        if info.persistent and not ctx.flags & DHANDLE_FLAG_PERSISTENT:
            raise Reject(NtStatus.OBJECT_NAME_NOT_FOUND, "persistent open, DH2C without PERSISTENT")
        if not info.persistent and ctx.flags & DHANDLE_FLAG_PERSISTENT:
            raise Reject(NtStatus.INVALID_PARAMETER, "DH2C asks for PERSISTENT, open is not")
    # DHnC may reconnect a v2 open too: §3.3.5.9.7 checks durability, not the version (smbtorture
    # durable-v2-open.reopen2b).
    holder = getattr(opened, "connection", None)
    if info.detached_at is None and holder is not None and holder is not conn and holder.peer_gone():
        # The client has already gone from the open's connection and comes back on this one, but
        # this server has not yet handled that connection's end (another thread reads it): handle
        # it now, which detaches the open, instead of telling the client its open is still in use
        # (smbtorture smb2.durable-open.reopen1/2/3, lock-oplock: they reconnect right after the
        # old socket's close).
        holder.close()
    if info.detached_at is None:
        raise Reject(NtStatus.OBJECT_NAME_NOT_FOUND, "open still attached to a session")
    if info.lease_version:
        if lease_ctx is None:
            raise Reject(NtStatus.OBJECT_NAME_NOT_FOUND, "open has a lease, request has none")
        lease_cls = LeaseV2 if len(lease_ctx.data) == 52 else LeaseV1
        if lease_cls.from_context(lease_ctx).lease_key != opened.lease_key:
            raise Reject(NtStatus.OBJECT_NAME_NOT_FOUND, "lease key does not match")
        if request.name != info.name:
            raise Reject(NtStatus.INVALID_PARAMETER, "lease file name does not match")
    elif lease_ctx is not None and request.requested_oplock_level == OplockLevel.LEASE:
        raise Reject(NtStatus.OBJECT_NAME_NOT_FOUND, "request has a lease, open has none")
    if session.username != info.owner:
        raise Reject(NtStatus.ACCESS_DENIED, "durable open belongs to another user")
    return opened


def reconnect_contexts(opened) -> list:
    """Response contexts of a successful reconnect (§3.3.5.9.7/.12 "Response Construction"): the
    lease, if the open has one, and no durable-handle response: only Windows Vista/2008/7/2008 R2
    send SMB2_CREATE_DURABLE_HANDLE_RESPONSE after a reconnect (the product note on §3.3.5.9.7);
    later Windows and Samba do not (smbtorture smb2.durable-open.reopen1a-lease checks it)."""
    info = opened.durable
    out = []
    if info.lease_version == 2:
        out.append(LeaseV2(lease_key=opened.lease_key, lease_state=opened.lease_state,
                           epoch=opened.lease_epoch).to_context())
    elif info.lease_version == 1:
        out.append(LeaseV1(lease_key=opened.lease_key, lease_state=opened.lease_state).to_context())
    return out
