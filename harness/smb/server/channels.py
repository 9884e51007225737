"""Server side of multichannel: binding a session to another connection (MS-SMB2 §3.3.5.5, §3.3.5.5.3).

Rules, in the order a binding SESSION_SETUP meets them (statuses from §3.3.5.5):

1. Binding needs a 3.x dialect and a server configured for multichannel, else
   STATUS_REQUEST_NOT_ACCEPTED.
2. The SessionId must name a live session (else STATUS_USER_SESSION_DELETED) negotiated with the
   same dialect (else STATUS_INVALID_PARAMETER) by a connection with the same ClientGuid (else
   STATUS_USER_SESSION_DELETED); the session must be fully set up and not yet bound to this
   connection (else STATUS_REQUEST_NOT_ACCEPTED).
3. Every binding request is signed with the session's signing key: unsigned is
   STATUS_INVALID_PARAMETER, a bad signature STATUS_ACCESS_DENIED.  No other session or channel
   changes state when a binding fails.
4. The binding authenticates again; another user is STATUS_NOT_SUPPORTED.
5. A session has at most 32 channels; one more is STATUS_INSUFFICIENT_RESOURCES.
6. On success the connection gets its own Channel.SigningKey, derived from the *binding's* GSS key
   (3.1.1: over the binding's PreauthSession hash, which starts from this connection's NEGOTIATE
   hash).  Interim responses are signed with Session.SigningKey, the final one with the new key, and
   everything later on this connection uses the channel key.

Theory of operation: a session lives in ``ServerState.sessions`` and in the ``sessions`` table of
every connection bound to it (``Session.channels``).  ``ServerConnection.channel_keys`` holds this
connection's Channel.SigningKey per session; :func:`signing_key` picks it (or the session key for
the first channel).  When a channel is lost, :func:`drop_channel` moves the session's opens to a
surviving channel; only the last channel's loss ends the session (§3.3.7.1).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import messages as m
from ..auth import Acceptor
from ..constants import Capabilities, Cipher, Dialect, NtStatus
from ..crypto import PreauthIntegrity, derive_session_keys, verify_signature
from ..errors import AuthError, SMBProtocolError
from .model import Fail, Reply
from .opens import close_session_opens

MAX_CHANNELS = 32  # per session, as Samba (smbtorture smb2.multichannel.generic.num_channels)


@dataclass
class Binding:
    """A binding in progress on one connection (the spec's PreauthSession plus the GSS context)."""

    acceptor: Acceptor
    preauth: PreauthIntegrity | None


def signing_key(conn, session) -> bytes:
    return conn.channel_keys.get(session.session_id) or session.keys.signing


def server_capabilities(config, dialect: int, client_caps: int) -> int:
    """MULTI_CHANNEL and PERSISTENT_HANDLES, each only when configured and the client offered it
    (§3.3.5.4)."""
    caps = 0
    if dialect >= Dialect.SMB_3_0:
        if config.multichannel:
            caps |= Capabilities.MULTI_CHANNEL
        if any(getattr(share, "continuously_available", False) for share in config.shares.values()):
            caps |= Capabilities.PERSISTENT_HANDLES
    return caps & client_caps


def bind(conn, header, request: m.SessionSetupRequest, raw: bytes):
    """One leg of a binding SESSION_SETUP; returns a server ``Reply`` or raises ``Fail``."""
    if not conn.config.multichannel or conn.dialect < Dialect.SMB_3_0:
        raise Fail(NtStatus.REQUEST_NOT_ACCEPTED, "multichannel is not enabled")
    session = conn.state.sessions.get(header.session_id)
    if session is None:
        raise Fail(NtStatus.USER_SESSION_DELETED, "binding to an unknown session")
    first = session.channels[0] if session.channels else session.connection
    if first.dialect != conn.dialect:
        raise Fail(NtStatus.INVALID_PARAMETER, "binding with another dialect")
    if not header.is_signed:
        raise Fail(NtStatus.INVALID_PARAMETER, "binding request is not signed")
    if first.client_guid != conn.client_guid:
        raise Fail(NtStatus.USER_SESSION_DELETED, "binding from another ClientGuid")
    if not session.valid or session.keys is None:
        raise Fail(NtStatus.REQUEST_NOT_ACCEPTED, "session setup still in progress")
    if header.session_id in conn.sessions:
        raise Fail(NtStatus.REQUEST_NOT_ACCEPTED, "session already bound to this connection")
    if len(session.channels) >= MAX_CHANNELS:
        raise Fail(NtStatus.INSUFFICIENT_RESOURCES, f"a session has at most {MAX_CHANNELS} channels")
    try:
        verify_signature(raw, session.keys.signing, conn.signing_algorithm)
    except SMBProtocolError as exc:
        conn.bindings.pop(header.session_id, None)
        raise Fail(NtStatus.ACCESS_DENIED, f"binding signature: {exc}") from exc
    binding = conn.bindings.get(header.session_id)
    if binding is None:
        preauth = conn.preauth.for_session() if conn.dialect == Dialect.SMB_3_1_1 else None
        binding = conn.bindings[header.session_id] = Binding(Acceptor(conn.config.users), preauth)
    if binding.preauth is not None:
        binding.preauth.add(bytes(raw))
    try:
        token, result = binding.acceptor.step(request.security_buffer)
    except AuthError:
        conn.bindings.pop(header.session_id, None)
        raise Fail(NtStatus.LOGON_FAILURE, "binding authentication failed") from None
    if result is None:
        reply = Reply(NtStatus.MORE_PROCESSING_REQUIRED, m.SessionSetupResponse(0, token or b""),
                      session_id=session.session_id, sign_session=session, force_sign=True)
        if binding.preauth is not None:
            reply.after_pack = binding.preauth.add
        return reply
    del conn.bindings[header.session_id]
    if result.username != session.username:
        raise Fail(NtStatus.NOT_SUPPORTED, "binding as another user")
    cipher = conn.cipher if conn.cipher else Cipher.NONE
    keys = derive_session_keys(conn.dialect, result.session_key,
                               binding.preauth.value if binding.preauth is not None else None, cipher)
    conn.channel_keys[session.session_id] = keys.signing
    conn.sessions[session.session_id] = session
    if not session.channels:
        session.channels.append(session.connection)
    session.channels.append(conn)
    return Reply(NtStatus.SUCCESS, m.SessionSetupResponse(0, token or b""), session_id=session.session_id,
                 sign_session=session, force_sign=True)


def drop_channel(conn, session) -> bool:
    """``conn`` is gone.  Returns True when the session survives on another channel."""
    conn.channel_keys.pop(session.session_id, None)
    if conn in session.channels:
        session.channels.remove(conn)
    survivors = [c for c in session.channels if not c.closed]
    if not survivors:
        return False
    if session.connection is conn:
        session.connection = survivors[0]
    for opened in session.opens.values():
        if opened.connection is conn:
            opened.connection = session.connection
    return True


def previous_session(conn, header, request, username: str) -> None:
    """PreviousSessionId (§3.3.5.5.3): the client lost a connection and logs on again; the old session
    of the same user goes away, which detaches its durable opens so they can be reconnected even if
    the old connection is still half-open (blackholed) on our side."""
    old = conn.state.sessions.get(request.previous_session_id)
    if old is None or old.session_id == header.session_id or old.username != username or not old.valid:
        return
    for channel in list(old.channels or [old.connection]):
        channel.sessions.pop(old.session_id, None)
        channel.channel_keys.pop(old.session_id, None)
    close_session_opens(conn, old, keep_durable=True)
    conn.state.sessions.pop(old.session_id, None)
    old.valid = False
