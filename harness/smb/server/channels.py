"""Server side of multichannel: binding a session to another connection (MS-SMB2 §3.3.5.5, §3.3.5.5.3).

Rules, in the order a binding SESSION_SETUP meets them (statuses from §3.3.5.5; where the spec
leaves the order open, Samba's, which smbtorture's smb2.session.bind_negative_* tests pin down):

1. SessionId 0 is STATUS_INVALID_PARAMETER; a SessionId naming no live session is
   STATUS_USER_SESSION_DELETED; a session still being set up is STATUS_REQUEST_NOT_ACCEPTED.
2. The request is signed with Session.SigningKey (§3.3.5.2.4, before any SESSION_SETUP rule):
   unsigned is STATUS_INVALID_PARAMETER, a bad signature STATUS_ACCESS_DENIED.  Once this
   connection is bound, its Channel.SigningKey is the one checked, so binding again is
   STATUS_ACCESS_DENIED.  No other session or channel changes state when a binding fails.
3. Signing algorithms: a session that signs with AES-GMAC binds only a connection that does too
   (else STATUS_REQUEST_OUT_OF_SEQUENCE); a connection that signs with AES-GMAC binds only such a
   session (else STATUS_NOT_SUPPORTED).  HMAC-SHA256 and AES-CMAC may mix.
4. The connection needs a 3.x dialect and a server configured for multichannel (else
   STATUS_REQUEST_NOT_ACCEPTED), the session's dialect and cipher (else STATUS_INVALID_PARAMETER),
   and must not hold the session yet (else STATUS_REQUEST_NOT_ACCEPTED).  Another ClientGuid is
   accepted: §3.3.5.5 only allows (MAY) refusing it, and Samba binds it (smbtorture expects that).
5. The binding authenticates again; another user is STATUS_NOT_SUPPORTED.
6. A session has at most 32 channels; one more is STATUS_INSUFFICIENT_RESOURCES.
7. On success the connection gets its own Channel.SigningKey, derived from the *binding's* GSS key
   (3.1.1: over the binding's PreauthSession hash, which starts from this connection's NEGOTIATE
   hash).  Interim responses are signed with Session.SigningKey, the final one with the new key, and
   everything later on this connection uses the channel key.

Theory of operation: a session lives in ``ServerState.sessions`` and in the ``sessions`` table of
every connection bound to it (``Session.channels``).  ``ServerConnection.channel_keys`` holds this
connection's Channel.SigningKey per session; :func:`signing_for` picks it (or the session key for
the first channel).  When a channel is lost, :func:`drop_channel` moves the session's opens to a
surviving channel; only the last channel's loss ends the session (§3.3.7.1).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import messages as m
from ..auth import Acceptor
from ..constants import Capabilities, Cipher, Dialect, NtStatus, SigningAlgorithm
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


def signing_for(conn, session) -> tuple[bytes, int]:
    """The key and algorithm that sign and verify ``session``'s messages on ``conn``: this
    connection's Channel.SigningKey once bound, else Session.SigningKey.  On a connection the
    session is not bound to (a binding in progress, or a request that will be refused) the key is
    Session.SigningKey under the algorithm the session was set up with, since that is what the
    client signs with (§3.3.5.2.4, §3.3.5.5)."""
    channel_key = conn.channel_keys.get(session.session_id)
    if channel_key:
        return channel_key, conn.signing_algorithm
    if session.connection is conn or conn in session.channels or not session.valid:
        return session.keys.signing, conn.signing_algorithm
    return session.keys.signing, session.signing_algorithm


def _verify_binding(conn, session, raw: bytes) -> None:
    """A binding request is signed with Session.SigningKey (§3.3.5.2.4).  Samba's client signs it
    under the algorithm the session was set up with, a client reading §3.1.4.1 literally under this
    connection's: either is accepted, so the binding rules below decide what a mismatch means."""
    key, algorithm = signing_for(conn, session)
    try:
        verify_signature(raw, key, algorithm)
    except SMBProtocolError:
        if algorithm == conn.signing_algorithm:
            raise
        verify_signature(raw, key, conn.signing_algorithm)


def bind(conn, header, request: m.SessionSetupRequest, raw: bytes):
    """One leg of a binding SESSION_SETUP; returns a server ``Reply`` or raises ``Fail``."""
    session = conn.state.sessions.get(header.session_id)
    if header.session_id == 0:
        raise Fail(NtStatus.INVALID_PARAMETER, "binding without a SessionId")
    if session is None:
        raise Fail(NtStatus.USER_SESSION_DELETED, "binding to an unknown session")
    if not session.valid or session.keys is None:
        raise Fail(NtStatus.REQUEST_NOT_ACCEPTED, "session setup still in progress")
    if not header.is_signed:
        raise Fail(NtStatus.INVALID_PARAMETER, "binding request is not signed")
    try:  # §3.3.5.2.4 comes before the SESSION_SETUP rules
        _verify_binding(conn, session, raw)
    except SMBProtocolError as exc:
        conn.bindings.pop(header.session_id, None)
        raise Fail(NtStatus.ACCESS_DENIED, f"binding signature: {exc}") from exc
    gmac = SigningAlgorithm.AES_GMAC
    if session.signing_algorithm >= gmac and conn.signing_algorithm != session.signing_algorithm:
        raise Fail(NtStatus.REQUEST_OUT_OF_SEQUENCE, "the session signs with AES-GMAC, this connection does not")
    if conn.signing_algorithm >= gmac and conn.signing_algorithm != session.signing_algorithm:
        raise Fail(NtStatus.NOT_SUPPORTED, "this connection signs with AES-GMAC, the session does not")
    if not conn.config.multichannel or conn.dialect < Dialect.SMB_3_0:
        raise Fail(NtStatus.REQUEST_NOT_ACCEPTED, "multichannel is not enabled")
    if session.dialect != conn.dialect:
        raise Fail(NtStatus.INVALID_PARAMETER, "binding with another dialect")
    if session.cipher != conn.cipher:
        raise Fail(NtStatus.INVALID_PARAMETER, "binding with another cipher")
    if header.session_id in conn.sessions:
        raise Fail(NtStatus.REQUEST_NOT_ACCEPTED, "session already bound to this connection")
    if len(session.channels) >= MAX_CHANNELS:
        raise Fail(NtStatus.INSUFFICIENT_RESOURCES, f"a session has at most {MAX_CHANNELS} channels")
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
    conn.state.end_session(old)
    old.valid = False
