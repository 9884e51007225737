"""SESSION_SETUP rules across connections (harness/smb/server/channels.py, session.py): which status a
binding or a plain SESSION_SETUP for a session set up elsewhere gets, checked over real loopback with
the server's negotiation tuned per connection (the server reads its offer at NEGOTIATE time).  Each
rule is one test; smbtorture smb2.session.bind_negative_* expects these statuses from Samba."""

from __future__ import annotations

import dataclasses

import pytest

from harness.blocking.multichannel import MultiChannelClient
from harness.blocking.server import SMBServer
from harness.smb import messages as m
from harness.smb.auth import Initiator
from harness.smb.client import ClientConnection, ClientSession
from harness.smb.constants import Cipher, Command, HeaderFlags, NtStatus, SessionSetupFlags, SigningAlgorithm
from harness.smb.crypto import sign_message, verify_signature
from harness.smb.server import ServerConfig, ShareConfig
from harness.transport import connect

USERS = {"mc": "Pw-multi1"}
GMAC, CMAC, HMAC = SigningAlgorithm.AES_GMAC, SigningAlgorithm.AES_CMAC, SigningAlgorithm.HMAC_SHA256


@pytest.fixture
def server(tmp_path):
    (tmp_path / "share").mkdir()
    config = ServerConfig(shares={"s": ShareConfig("s", str(tmp_path / "share"))}, users=USERS, multichannel=True)
    srv = SMBServer(config, "127.0.0.1", 0).start()
    yield srv
    srv.stop()
    assert not srv.errors, srv.errors


def _offer(server, **offer) -> None:
    """What the server offers to the next connection that negotiates."""
    server.state.config = dataclasses.replace(server.state.config, **offer)
    # connections read the state's config; existing ones keep what they negotiated


def _client(server) -> MultiChannelClient:
    return MultiChannelClient("127.0.0.1", server.port, username="mc", password=USERS["mc"], timeout=5.0)


def _first_binding_leg(client, port, **offer) -> int:
    """The status of the first leg of a binding from a connection that offers ``offer``
    (signing_algorithms, ciphers), signed as Samba's client signs it: Session.SigningKey under the
    session's algorithm.  MORE_PROCESSING_REQUIRED means the binding rules let it through."""
    transport = connect("tcp", "127.0.0.1", port, timeout=5.0)
    try:
        primary = client.conn
        conn = ClientConnection("tcp", "127.0.0.1", dialects=(primary.dialect,), **offer)
        conn.client_guid = primary.client_guid
        transport.send_pdu(conn.negotiate_request())
        conn.receive_negotiate(transport.recv_pdu(5.0))
        token = Initiator("mc", USERS["mc"]).step(None)
        body = m.SessionSetupRequest(SessionSetupFlags.BINDING, 1, 0, 0, 0, token)
        raw, _ = conn.build(Command.SESSION_SETUP, body, ClientSession(session_id=client.session.session_id))
        transport.send_pdu(sign_message(raw, client.session.keys.signing, primary.signing_algorithm))
        (response,) = conn.receive(transport.recv_pdu(5.0))
        return response.header.status
    finally:
        transport.close()


def _still_works(client) -> None:
    share = client.share("s")
    share.put_bytes("alive.bin", b"yes")
    assert share.get_bytes("alive.bin") == b"yes"


@pytest.mark.parametrize(("session_algorithm", "channel_algorithm", "status"), [
    (GMAC, CMAC, NtStatus.REQUEST_OUT_OF_SEQUENCE),  # the session signs with GMAC, the channel not
    (CMAC, GMAC, NtStatus.NOT_SUPPORTED),            # the channel signs with GMAC, the session not
    (CMAC, HMAC, NtStatus.MORE_PROCESSING_REQUIRED),  # neither GMAC: they may differ
    (HMAC, CMAC, NtStatus.MORE_PROCESSING_REQUIRED),
    (GMAC, GMAC, NtStatus.MORE_PROCESSING_REQUIRED),
])
def test_binding_signing_algorithm_rules(server, session_algorithm, channel_algorithm, status):
    offer = server.state.config.signing_algorithms
    _offer(server, signing_algorithms=(session_algorithm,))
    client = _client(server)
    assert client.conn.signing_algorithm == session_algorithm
    _offer(server, signing_algorithms=offer)
    assert _first_binding_leg(client, server.port, signing_algorithms=(channel_algorithm,)) == status
    _still_works(client)
    client.close()


def test_binding_with_another_cipher_is_invalid_parameter(server):
    _offer(server, ciphers=(Cipher.AES_128_GCM,))
    client = _client(server)
    assert client.conn.cipher == Cipher.AES_128_GCM
    signing = (client.conn.signing_algorithm,)
    assert _first_binding_leg(client, server.port, signing_algorithms=signing,
                              ciphers=(Cipher.AES_256_CCM,)) == NtStatus.INVALID_PARAMETER
    assert _first_binding_leg(client, server.port, signing_algorithms=signing,
                              ciphers=(Cipher.AES_128_GCM,)) == NtStatus.MORE_PROCESSING_REQUIRED
    _still_works(client)
    client.close()


def _session_setup_elsewhere(client, port, *, sign: bool) -> tuple[int, bool]:
    """A SESSION_SETUP without the BINDING flag for the client's session on a fresh connection:
    (status, whether the response carries SMB2_FLAGS_SIGNED)."""
    transport = connect("tcp", "127.0.0.1", port, timeout=5.0)
    try:
        primary = client.conn
        conn = ClientConnection("tcp", "127.0.0.1", signing_algorithms=(primary.signing_algorithm,),
                                dialects=(primary.dialect,))
        conn.client_guid = primary.client_guid
        transport.send_pdu(conn.negotiate_request())
        conn.receive_negotiate(transport.recv_pdu(5.0))
        token = Initiator("mc", USERS["mc"]).step(None)
        body = m.SessionSetupRequest(SessionSetupFlags(0), 1, 0, 0, 0, token)
        raw, _ = conn.build(Command.SESSION_SETUP, body, ClientSession(session_id=client.session.session_id))
        if sign:
            raw = sign_message(raw, client.session.keys.signing, primary.signing_algorithm)
        transport.send_pdu(raw)
        (response,) = conn.receive(transport.recv_pdu(5.0))
        return response.header.status, bool(response.header.flags & HeaderFlags.SIGNED)
    finally:
        transport.close()


def test_session_setup_for_a_session_of_another_connection(server):
    """§3.3.5.5: without BINDING the session is looked up on this connection only:
    USER_SESSION_DELETED, signed when the request was (a signing client insists on a signed answer)."""
    client = _client(server)
    assert client.session.signing_required
    assert _session_setup_elsewhere(client, server.port, sign=True) == (NtStatus.USER_SESSION_DELETED, True)
    assert _session_setup_elsewhere(client, server.port, sign=False) == (NtStatus.USER_SESSION_DELETED, False)
    _still_works(client)
    client.close()


def test_unsigned_reauthentication_of_a_signing_required_session_is_access_denied(server):
    """§3.3.5.2.4: on the session's own connection an unsigned SESSION_SETUP for a session that
    requires signing is refused, and the session stays as it was."""
    client = _client(server)
    assert client.session.signing_required
    token = Initiator("mc", USERS["mc"]).step(None)
    body = m.SessionSetupRequest(SessionSetupFlags(0), 1, 0, 0, 0, token)
    raw, _ = client.conn.build(Command.SESSION_SETUP, body, ClientSession(session_id=client.session.session_id))
    client.transport.send_pdu(raw)
    (response,) = client.conn.receive(client.transport.recv_pdu(5.0))
    assert response.header.status == NtStatus.ACCESS_DENIED
    _still_works(client)
    client.close()


def test_reauthentication_keeps_the_session_keys_over_every_leg(server):
    """§3.3.5.5.2-3: a re-authentication (two NTLM legs) keeps Session.SessionKey and the signing
    key: the interim response is signed with it (the request was), so is the final one, and the
    session goes on signing with it.  The second leg used to be taken for a new authentication and
    re-derived the keys."""
    client = _client(server)
    share = client.share("s")
    share.put_bytes("before.bin", b"x")
    key, algorithm = client.session.keys.signing, client.conn.signing_algorithm
    initiator = Initiator("mc", USERS["mc"])
    token = initiator.step(None)
    statuses = []
    while token is not None:
        body = m.SessionSetupRequest(SessionSetupFlags(0), 1, 0, 0, 0, token)
        raw, _ = client.conn.build(Command.SESSION_SETUP, body, ClientSession(session_id=client.session.session_id))
        client.transport.send_pdu(sign_message(raw, key, algorithm))
        (response,) = client.conn.receive(client.transport.recv_pdu(5.0))
        statuses.append(response.header.status)
        assert response.header.flags & HeaderFlags.SIGNED
        verify_signature(response.raw, key, algorithm)
        if response.header.status != NtStatus.MORE_PROCESSING_REQUIRED:
            break
        token = initiator.step(response.body_as(m.SessionSetupResponse).security_buffer)
    assert statuses == [NtStatus.MORE_PROCESSING_REQUIRED, NtStatus.SUCCESS]
    assert share.get_bytes("before.bin") == b"x"  # signed with the old key, still accepted
    client.close()


def test_signed_request_for_an_ended_session_gets_a_signed_user_session_deleted(server):
    """After LOGOFF (or a failed re-authentication) a signed request for the session is
    USER_SESSION_DELETED with SMB2_FLAGS_SIGNED set: Samba's client refuses an unsigned answer to a
    signed request (ACCESS_DENIED) and skips checking the signature for this status only."""
    client = _client(server)
    session = client.session
    key, algorithm = session.keys.signing, client.conn.signing_algorithm
    raw, _ = client.conn.build(Command.LOGOFF, m.LogoffRequest(), session)
    client.transport.send_pdu(sign_message(raw, key, algorithm))
    (response,) = client.conn.receive(client.transport.recv_pdu(5.0))
    assert response.header.status == NtStatus.SUCCESS
    for sign in (True, False):
        raw, _ = client.conn.build(Command.TREE_CONNECT, m.TreeConnectRequest("\\\\127.0.0.1\\s"), session)
        client.transport.send_pdu(sign_message(raw, key, algorithm) if sign else raw)
        (response,) = client.conn.receive(client.transport.recv_pdu(5.0))
        assert response.header.status == NtStatus.USER_SESSION_DELETED
        assert bool(response.header.flags & HeaderFlags.SIGNED) == sign
        if sign:
            verify_signature(response.raw, key, algorithm)


def _login_status(port, password: str, mangle=lambda token: token) -> int:
    """Status of the last leg of a fresh NTLM login whose AUTHENTICATE token goes through ``mangle``."""
    transport = connect("tcp", "127.0.0.1", port, timeout=5.0)
    try:
        conn = ClientConnection("tcp", "127.0.0.1")
        transport.send_pdu(conn.negotiate_request())
        conn.receive_negotiate(transport.recv_pdu(5.0))
        initiator = Initiator("mc", password)
        session = ClientSession()
        token = initiator.step(None)
        while True:
            body = m.SessionSetupRequest(SessionSetupFlags(0), 1, 0, 0, 0, token)
            raw, _ = conn.build(Command.SESSION_SETUP, body, session)
            transport.send_pdu(raw)
            (response,) = conn.receive(transport.recv_pdu(5.0))
            if response.header.status != NtStatus.MORE_PROCESSING_REQUIRED:
                return response.header.status
            session.session_id = response.header.session_id
            token = mangle(initiator.step(response.body_as(m.SessionSetupResponse).security_buffer))
    finally:
        transport.close()


def _timestamp_out_of_range(token: bytes) -> bytes:
    """The NTLMv2 client challenge's TimeStamp (after RespType 1, HiRespType 1 and 6 reserved zero
    bytes) set to a FILETIME no calendar holds: the token can no longer be parsed."""
    at = token.index(b"\x01\x01\x00\x00\x00\x00\x00\x00") + 8
    return token[:at] + b"\xff" * 8 + token[at + 8:]


def test_malformed_ntlm_authenticate_is_invalid_parameter_wrong_password_logon_failure(server):
    """A token the server cannot parse is STATUS_INVALID_PARAMETER (as Samba; smbtorture
    smb2.session.ntlmssp_bug14932); a well-formed one with the wrong password STATUS_LOGON_FAILURE."""
    assert _login_status(server.port, USERS["mc"], _timestamp_out_of_range) == NtStatus.INVALID_PARAMETER
    assert _login_status(server.port, "wrong-password") == NtStatus.LOGON_FAILURE
    assert _login_status(server.port, USERS["mc"]) == NtStatus.SUCCESS


def test_unknown_user_is_logon_failure(server):
    """A user the server does not know is STATUS_LOGON_FAILURE, like a wrong password (not a
    malformed token: the lookup failing must not look like a parser failing)."""
    transport = connect("tcp", "127.0.0.1", server.port, timeout=5.0)
    try:
        conn = ClientConnection("tcp", "127.0.0.1")
        transport.send_pdu(conn.negotiate_request())
        conn.receive_negotiate(transport.recv_pdu(5.0))
        initiator, session = Initiator("nobody-here", "whatever"), ClientSession()
        token = initiator.step(None)
        for _ in range(2):
            raw, _ = conn.build(Command.SESSION_SETUP, m.SessionSetupRequest(SessionSetupFlags(0), 1, 0, 0, 0, token),
                                session)
            transport.send_pdu(raw)
            (response,) = conn.receive(transport.recv_pdu(5.0))
            if response.header.status != NtStatus.MORE_PROCESSING_REQUIRED:
                break
            session.session_id = response.header.session_id
            token = initiator.step(response.body_as(m.SessionSetupResponse).security_buffer)
        assert response.header.status == NtStatus.LOGON_FAILURE
    finally:
        transport.close()
