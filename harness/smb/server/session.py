"""SESSION_SETUP and LOGOFF (MS-SMB2 §3.3.5.5, §3.3.5.6): authentication, session keys, re-auth.

Rules: encryption required by the server needs a client and dialect that can encrypt
(STATUS_ACCESS_DENIED).  A failed authentication is STATUS_LOGON_FAILURE (a token that cannot even
be parsed STATUS_INVALID_PARAMETER) and forgets the session (a failed re-authentication too,
closing its opens: their waiting CHANGE_NOTIFYs end NOTIFY_CLEANUP).  3.1.1 keys are derived over
the session's preauth hash, which covers every SESSION_SETUP up to the final one.  A binding
SESSION_SETUP (multichannel) is handled by :mod:`.channels`.  Without the BINDING flag, a session
of another connection is STATUS_USER_SESSION_DELETED (after the signature check, which uses
Session.SigningKey); an unsigned one on a signing-required session of this connection is
STATUS_ACCESS_DENIED (§3.3.5.2.4).  A SESSION_SETUP on an established session is a
re-authentication over all its legs: the keys stay, interim and final responses are signed with
them (§3.3.5.5.2-3).  PreviousSessionId ends the user's old session.  LOGOFF closes the session's
opens.
"""

from __future__ import annotations

from .. import messages as m
from ..auth import Acceptor
from ..constants import Capabilities, Cipher, Dialect, NtStatus, SecurityMode, SessionFlags, SessionSetupFlags
from ..crypto import derive_session_keys, verify_signature
from ..errors import AuthError, MalformedTokenError, SMBProtocolError
from ..header import Header
from ..keys import SessionKeyRecord
from . import channels
from .model import Fail, Reply, Session
from .opens import close_session_opens


def session_setup(conn, header: Header, request: m.SessionSetupRequest, raw: bytes, encrypted: bool) -> Reply:
    if request.flags & SessionSetupFlags.BINDING:
        return channels.bind(conn, header, request, raw)
    encrypt_required = conn.config.encrypt and not conn.accept_transport_security
    if encrypt_required and conn.dialect >= Dialect.SMB_3_0 and not (
            conn.client_capabilities & Capabilities.ENCRYPTION or conn.cipher):
        raise Fail(NtStatus.ACCESS_DENIED, "encryption required, client cannot encrypt")
    if encrypt_required and conn.dialect < Dialect.SMB_3_0:
        raise Fail(NtStatus.ACCESS_DENIED, "encryption required, dialect cannot encrypt")
    reauth = False
    if header.session_id == 0:
        session = Session(conn.state.new_session_id(), conn)
        session.acceptor = Acceptor(conn.config.users)
        if conn.dialect == Dialect.SMB_3_1_1:
            session.preauth = conn.preauth.for_session()
        conn.state.sessions[session.session_id] = session
        conn.sessions[session.session_id] = session
    else:
        session = conn.state.sessions.get(header.session_id)
        if session is None:
            raise Fail(NtStatus.USER_SESSION_DELETED, "unknown session")
        if session.valid and header.is_signed and not encrypted:
            try:  # §3.3.5.2.4 first, also for a session set up on another connection
                verify_signature(raw, *channels.signing_for(conn, session))
            except SMBProtocolError as exc:
                raise Fail(NtStatus.ACCESS_DENIED, str(exc)) from exc
        if conn.sessions.get(header.session_id) is not session:
            raise Fail(NtStatus.USER_SESSION_DELETED, "session not on this connection (binding needs the flag)")
        if session.valid and session.signing_required and not header.is_signed and not encrypted:
            # §3.3.5.2.4; Samba applies it only to a session of this connection (another
            # connection's gets USER_SESSION_DELETED above), as smbtorture's bind tests expect.
            raise Fail(NtStatus.ACCESS_DENIED, "unsigned SESSION_SETUP on a signing-required session")
        if session.valid:  # every leg of a re-authentication, not only the first (§3.3.5.5.2)
            reauth = True
            if session.acceptor is None:
                session.acceptor = Acceptor(conn.config.users)
    if session.preauth is not None and not reauth and not session.valid:
        session.preauth.add(bytes(raw))
    if session.acceptor is None:
        raise Fail(NtStatus.INVALID_PARAMETER, "no authentication in progress on this session")
    try:
        token, result = session.acceptor.step(request.security_buffer)
    except AuthError as exc:
        session.acceptor = None
        if session.valid:  # a failed re-authentication ends the session and closes its opens (§3.3.5.5.3)
            close_session_opens(conn, session)
            session.valid = False
        drop_session(conn, session)
        status = NtStatus.INVALID_PARAMETER if isinstance(exc, MalformedTokenError) else NtStatus.LOGON_FAILURE
        raise Fail(status, f"authentication failed: {exc}") from None
    if result is None:
        reply = Reply(NtStatus.MORE_PROCESSING_REQUIRED, m.SessionSetupResponse(0, token or b""),
                      session_id=session.session_id)
        if session.preauth is not None and not session.valid:
            reply.after_pack = session.preauth.add
        if reauth:  # an established session signs its interim responses too (when the request was)
            reply.sign_session = session
        return reply
    session.acceptor = None
    flags = 0
    if not reauth:
        session.username = result.username
        preauth_value = session.preauth.value if session.preauth is not None else None
        session.keys = derive_session_keys(conn.dialect, result.session_key, preauth_value,
                                           conn.cipher if conn.dialect >= Dialect.SMB_3_0 else Cipher.NONE)
        session.signing_required = bool(conn.config.sign or conn.client_security_mode & SecurityMode.SIGNING_REQUIRED)
        if encrypt_required:
            session.encrypt_data = True
            session.signing_required = False
        session.valid = True
        session.dialect, session.signing_algorithm, session.cipher = conn.dialect, conn.signing_algorithm, conn.cipher
        if request.previous_session_id:
            channels.previous_session(conn, header, request, result.username)
        if conn.config.key_sink and session.keys.c2s and session.keys.s2c:
            conn.config.key_sink(SessionKeyRecord(session.session_id, session.keys.session_key,
                                                  session.keys.s2c, session.keys.c2s))
    if session.encrypt_data:
        flags |= SessionFlags.ENCRYPT_DATA
    reply = Reply(NtStatus.SUCCESS, m.SessionSetupResponse(flags, token or b""), session_id=session.session_id,
                  sign_session=session, force_sign=conn.dialect >= Dialect.SMB_3_1_1 or session.signing_required)
    return reply


def drop_session(conn, session: Session) -> None:
    conn.state.end_session(session)
    conn.sessions.pop(session.session_id, None)


def logoff(conn, session: Session) -> Reply:
    close_session_opens(conn, session, keep_durable=True)  # §3.3.5.6: durable opens wait for a reconnect
    reply = Reply(NtStatus.SUCCESS, m.LogoffResponse(), sign_session=session)
    drop_session(conn, session)
    session.valid = False
    return reply
