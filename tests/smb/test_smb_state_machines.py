"""The sans-IO client and server models against each other, PDU by PDU, with no sockets.

Each test names the MS-SMB2 rule it checks.  A :class:`Pair` moves PDUs from the client model to the
server model; the server serves a tmp directory.
"""

from __future__ import annotations

import os
import struct

import pytest

from harness.smb import change_notify
from harness.smb import messages as m
from harness.smb.auth import Initiator
from harness.smb.client import ClientConnection, ClientSession, SMBError
from harness.smb.compound import split_compound
from harness.smb.constants import (
    UNSOLICITED_MESSAGE_ID,
    AccessMask,
    Cipher,
    Command,
    CreateDisposition,
    CreateOptions,
    Dialect,
    FileInfoClass,
    HeaderFlags,
    NegotiateContextType,
    NtStatus,
    OplockLevel,
    SigningAlgorithm,
)
from harness.smb.header import Header
from harness.smb.server import Disconnect, ServerConfig, ServerConnection, ServerState, ShareConfig

USER, PASSWORD = "alice", "Secret-1"
ALL_FF = b"\xff" * 16


def make_state(tmp_path, **config) -> ServerState:
    share = tmp_path / "share"
    share.mkdir(parents=True, exist_ok=True)
    enc = tmp_path / "enc"
    enc.mkdir(exist_ok=True)
    cfg = ServerConfig(shares={"share": ShareConfig("share", str(share)), "enc": ShareConfig("enc", str(enc), True)},
                       users={USER: PASSWORD}, **config)
    return ServerState(cfg)


class Pair:
    def __init__(self, state: ServerState, transport: str = "tcp", **client) -> None:
        self.server = ServerConnection(state, transport)
        self.client = ClientConnection(transport, "server", **client)
        self.sessions: dict[int, ClientSession] = {}
        self.session: ClientSession | None = None

    def roundtrip(self, pdu: bytes) -> list:
        out = self.server.receive_pdu(pdu)
        responses = []
        for reply in out:
            responses += self.client.receive(reply, self.sessions)
        return responses

    def negotiate(self) -> m.NegotiateResponse:
        replies = self.server.receive_pdu(self.client.negotiate_request())
        (reply,) = replies
        self.negotiate_raw = reply
        return self.client.receive_negotiate(reply)

    def login(self, password: str = PASSWORD) -> ClientSession:
        session = ClientSession(initiator=Initiator(USER, password, hostname="client"))
        token = session.initiator.step(None)
        while True:
            (response,) = self.roundtrip(self.client.session_setup_request(session, token))
            if response.header.session_id:
                session.session_id = response.header.session_id
                self.sessions[session.session_id] = session
            token = self.client.session_setup_response(session, response)
            if token is None:
                self.session = session
                return session

    def request(self, command, body, tree_id=0, payload=0):
        raw, _ = self.client.build(command, body, self.session, tree_id, payload)
        (response,) = self.roundtrip(self.client.seal([raw], self.session, tree_id))
        return response

    def tree(self, name: str = "share") -> int:
        response = self.request(Command.TREE_CONNECT, m.TreeConnectRequest(f"\\\\server\\{name}"))
        assert response.header.status == NtStatus.SUCCESS, hex(response.header.status)
        self.session.trees[response.header.tree_id] = self.client.tree_encrypts(response.body)
        return response.header.tree_id

    def create(self, tree_id, name, disposition=CreateDisposition.OPEN_IF, options=0, access=None, **kw):
        access = access if access is not None else (AccessMask.GENERIC_READ | AccessMask.GENERIC_WRITE
                                                    | AccessMask.DELETE)
        body = m.CreateRequest(name=name, desired_access=access, share_access=7, create_disposition=disposition,
                               create_options=options, **kw)
        return self.request(Command.CREATE, body, tree_id)


@pytest.fixture
def state(tmp_path):
    return make_state(tmp_path)


def connected(state, **client) -> tuple[Pair, int]:
    pair = Pair(state, **client)
    pair.negotiate()
    pair.login()
    return pair, pair.tree()


# ---------------------------------------------------------------------------------------------- happy path


@pytest.mark.parametrize("cipher", [Cipher.AES_128_CCM, Cipher.AES_128_GCM, Cipher.AES_256_CCM, Cipher.AES_256_GCM])
@pytest.mark.parametrize("signing", [SigningAlgorithm.HMAC_SHA256, SigningAlgorithm.AES_CMAC,
                                     SigningAlgorithm.AES_GMAC])
def test_file_roundtrip_signed_and_encrypted(tmp_path, cipher, signing):
    state = make_state(tmp_path)
    for encrypt in (False, True):
        pair = Pair(state, ciphers=(cipher,), signing_algorithms=(signing,), encrypt=encrypt, require_signing=True)
        pair.negotiate()
        assert (pair.client.cipher, pair.client.signing_algorithm) == (cipher, signing)
        session = pair.login()
        server_session = state.sessions[session.session_id]
        assert server_session.keys == session.keys  # both ends derived the same keys
        tree = pair.tree()
        created = pair.create(tree, f"f{encrypt}.bin", CreateDisposition.CREATE)
        assert created.header.status == NtStatus.SUCCESS
        file_id = created.body.file_id
        data = os.urandom(70_000)
        assert pair.request(Command.WRITE, m.WriteRequest(file_id=file_id, data=data), tree,
                            len(data)).body.count == len(data)
        read = pair.request(Command.READ, m.ReadRequest(file_id=file_id, length=len(data)), tree, len(data))
        assert read.body.data == data
        assert pair.request(Command.CLOSE, m.CloseRequest(file_id=file_id), tree).header.status == 0
        assert (tmp_path / "share" / f"f{encrypt}.bin").read_bytes() == data


def test_dialects_2x_and_30(state):
    for dialect in (Dialect.SMB_2_0_2, Dialect.SMB_2_1, Dialect.SMB_3_0, Dialect.SMB_3_0_2):
        pair = Pair(state, dialects=(dialect,), require_signing=True)
        assert pair.negotiate().dialect_revision == dialect
        pair.login()
        tree = pair.tree()
        assert pair.create(tree, "d.txt").header.status == NtStatus.SUCCESS


def test_nbt_never_negotiates_311(state):
    pair = Pair(state, transport="nbt", dialects=(Dialect.SMB_3_0_2, Dialect.SMB_3_1_1))
    response = pair.negotiate()
    assert response.dialect_revision == Dialect.SMB_3_0_2
    assert not pair.server.supports_multicredit  # multi-credit only on 445 / RDMA (§3.3.5.4)


# ---------------------------------------------------------------------------------------------- NEGOTIATE rules


def _negotiate_pdu(contexts, dialects=(Dialect.SMB_3_1_1,), flags=0, message_id=0):
    body = m.NegotiateRequest(list(dialects), 1, 0x7F, os.urandom(16), contexts)
    return Header(command=Command.NEGOTIATE, flags=flags, message_id=message_id, credits=1).pack() + body.pack()


PREAUTH = m.PreauthIntegrityCapabilities([1], b"s" * 32)


def _negotiate_status(state, contexts, **kw):
    server = ServerConnection(state)
    (reply,) = server.receive_pdu(_negotiate_pdu(contexts, **kw))
    header = Header.unpack(reply)
    return header.status, reply, server


@pytest.mark.parametrize("contexts, status", [
    ([], NtStatus.INVALID_PARAMETER),                                   # no PREAUTH
    ([PREAUTH, PREAUTH], NtStatus.INVALID_PARAMETER),                   # two PREAUTH
    ([m.PreauthIntegrityCapabilities([2], b"x")], NtStatus.SMB_NO_PREAUTH_INTEGRITY_HASH_OVERLAP),
    ([PREAUTH, m.EncryptionCapabilities([1]), m.EncryptionCapabilities([2])], NtStatus.INVALID_PARAMETER),
    ([PREAUTH, m.SigningCapabilities([1]), m.SigningCapabilities([1])], NtStatus.INVALID_PARAMETER),
    ([PREAUTH, m.CompressionCapabilities([], 0)], NtStatus.INVALID_PARAMETER),
    ([PREAUTH, m.RdmaTransformCapabilities([])], NtStatus.INVALID_PARAMETER),
    ([PREAUTH, m.SigningCapabilities([])], NtStatus.INVALID_PARAMETER),
])
def test_negotiate_context_errors(state, contexts, status):
    """§3.3.5.4 context checks (only these are errors: NETNAME and unknown types are ignored)."""
    assert _negotiate_status(state, contexts)[0] == status


def test_negotiate_responds_only_to_requested_contexts(state):
    """§3.3.5.4: COMPRESSION/RDMA/SIGNING/TRANSPORT response contexts only if requested; NETNAME and
    unknown types ignored; ENCRYPTION with cipher 0 when nothing matches."""
    status, reply, _ = _negotiate_status(state, [PREAUTH, m.NetnameContext("x"), m.RawNegotiateContext(0x0100, b"z"),
                                                 m.EncryptionCapabilities([0x77])])
    assert status == 0
    body = m.decode_body(Command.NEGOTIATE, True, reply[64:])
    types = [c.context_type for c in body.contexts]
    assert types == [NegotiateContextType.PREAUTH_INTEGRITY_CAPABILITIES, NegotiateContextType.ENCRYPTION_CAPABILITIES]
    assert body.contexts[1].ciphers == [0]
    status, reply, _ = _negotiate_status(state, [PREAUTH, m.CompressionCapabilities([1, 2], 1),
                                                 m.RdmaTransformCapabilities([1, 2]), m.SigningCapabilities([9, 2]),
                                                 m.TransportCapabilities(1)])
    body = m.decode_body(Command.NEGOTIATE, True, reply[64:])
    by_type = {c.context_type: c for c in body.contexts}
    assert by_type[NegotiateContextType.COMPRESSION_CAPABILITIES].algorithms == [0]  # declined
    assert by_type[NegotiateContextType.RDMA_TRANSFORM_CAPABILITIES].transform_ids == [0]
    assert by_type[NegotiateContextType.SIGNING_CAPABILITIES].algorithms == [2]
    assert by_type[NegotiateContextType.TRANSPORT_CAPABILITIES].flags == 0  # off on TCP


def test_transport_security_only_over_quic_when_configured(tmp_path):
    ctx = [PREAUTH, m.EncryptionCapabilities([2]), m.TransportCapabilities(1)]
    for transport, accept, expected in (("tcp", True, 0), ("quic", False, 0), ("quic", True, 1)):
        state = make_state(tmp_path / f"{transport}{accept}", accept_transport_security=accept)
        server = ServerConnection(state, transport)
        (reply,) = server.receive_pdu(_negotiate_pdu(ctx))
        body = m.decode_body(Command.NEGOTIATE, True, reply[64:])
        transport_ctx = next(c for c in body.contexts if c.context_type == NegotiateContextType.TRANSPORT_CAPABILITIES)
        assert transport_ctx.flags == expected
        assert server.accept_transport_security == bool(expected)


def test_quic_client_offers_transport_capabilities_and_skips_encryption(tmp_path):
    state = make_state(tmp_path, accept_transport_security=True, encrypt=True)
    pair = Pair(state, transport="quic", accept_transport_security=True, encrypt=True)
    pair.negotiate()
    assert NegotiateContextType.TRANSPORT_CAPABILITIES in pair.client._offered
    assert pair.client.accept_transport_security
    session = pair.login()
    assert not session.encrypt  # transport security replaces SMB encryption on this connection
    tree = pair.tree("enc")
    assert pair.create(tree, "q.txt").header.status == NtStatus.SUCCESS


def test_negotiate_protocol_violations(state):
    """First PDU not NEGOTIATE, a second NEGOTIATE: disconnect without reply (§3.3.5.2.2, §3.3.5.4)."""
    server = ServerConnection(state)
    with pytest.raises(Disconnect):
        server.receive_pdu(Header(command=Command.ECHO).pack() + m.EchoRequest().pack())
    server = ServerConnection(state)
    server.receive_pdu(_negotiate_pdu([PREAUTH]))
    with pytest.raises(Disconnect):
        server.receive_pdu(_negotiate_pdu([PREAUTH], message_id=1))
    assert _negotiate_status(state, [PREAUTH], flags=HeaderFlags.SIGNED)[0] == NtStatus.INVALID_PARAMETER
    assert _negotiate_status(state, [], dialects=(0x0999,))[0] == NtStatus.NOT_SUPPORTED


# ---------------------------------------------------------------------------------------------- credits


def test_credits_window(state):
    pair, tree = connected(state)
    granted = pair.client.credits
    assert granted > 1
    # A MessageId beyond the granted window drops the connection (§3.3.5.2.3).
    raw, _ = pair.client.build(Command.ECHO, m.EchoRequest(), pair.session)
    header = Header.unpack(raw)
    header.message_id += 10_000
    with pytest.raises(Disconnect):
        pair.server.receive_pdu(pair.client.seal([header.pack() + raw[64:]], pair.session))


def test_credit_reuse_disconnects(state):
    pair, tree = connected(state)
    raw, _ = pair.client.build(Command.ECHO, m.EchoRequest(), pair.session)
    sealed = pair.client.seal([raw], pair.session)
    pair.server.receive_pdu(sealed)
    with pytest.raises(Disconnect):
        pair.server.receive_pdu(sealed)


def test_large_mtu_charge_enforced(state):
    pair, tree = connected(state)
    file_id = pair.create(tree, "big", CreateDisposition.CREATE).body.file_id
    raw, _ = pair.client.build(Command.WRITE, m.WriteRequest(file_id=file_id, data=b"x" * 200_000), pair.session,
                               tree, payload=1)  # charge 1 for 200 kB: wrong
    (response,) = pair.roundtrip(pair.client.seal([raw], pair.session, tree))
    assert response.header.status == NtStatus.INVALID_PARAMETER


# ---------------------------------------------------------------------------------------------- auth, signing, encryption


def test_wrong_password_is_logon_failure(state):
    pair = Pair(state)
    pair.negotiate()
    with pytest.raises(SMBError) as info:
        pair.login("wrong")
    assert info.value.status == NtStatus.LOGON_FAILURE
    assert not state.sessions


def test_unknown_share(state):
    pair = Pair(state)
    pair.negotiate()
    pair.login()
    response = pair.request(Command.TREE_CONNECT, m.TreeConnectRequest("\\\\server\\nope"))
    assert response.header.status == NtStatus.BAD_NETWORK_NAME


def test_bad_signature_is_access_denied(state):
    pair, tree = connected(state, require_signing=True)
    raw, _ = pair.client.build(Command.ECHO, m.EchoRequest(), pair.session)
    signed = bytearray(pair.client.seal([raw], pair.session))
    signed[50] ^= 1
    (reply,) = pair.server.receive_pdu(bytes(signed))
    assert Header.unpack(reply).status == NtStatus.ACCESS_DENIED
    # The connection survives (Windows does not disconnect, <263>).
    assert pair.request(Command.ECHO, m.EchoRequest()).header.status == NtStatus.SUCCESS


def test_unsigned_request_on_signing_session(state):
    pair, tree = connected(state, require_signing=True)
    raw, _ = pair.client.build(Command.CREATE, m.CreateRequest(name="x", desired_access=1, create_disposition=3),
                               pair.session, tree)
    (reply,) = pair.server.receive_pdu(raw)
    assert Header.unpack(reply).status == NtStatus.ACCESS_DENIED


def test_encryption_required_globally(tmp_path):
    state = make_state(tmp_path, encrypt=True)
    pair = Pair(state)
    pair.negotiate()
    session = pair.login()
    assert session.encrypt  # SESSION_SETUP said ENCRYPT_DATA
    tree = pair.tree()
    session.encrypt = False  # misbehave: send in clear
    session.trees[tree] = False
    session.signing_required = True
    (reply,) = pair.server.receive_pdu(pair.client.seal([pair.client.build(
        Command.ECHO, m.EchoRequest(), session, tree)[0]], session))
    # ECHO needs no session; a tree command in clear is refused.
    raw, _ = pair.client.build(Command.CREATE, m.CreateRequest(name="x", desired_access=1, create_disposition=3),
                               session, tree)
    (reply,) = pair.server.receive_pdu(pair.client.seal([raw], session, tree))
    assert Header.unpack(reply).status == NtStatus.ACCESS_DENIED


def test_encrypted_share_refuses_clear_requests(state):
    pair = Pair(state, require_signing=True)
    pair.negotiate()
    session = pair.login()
    tree = pair.tree("enc")
    assert session.trees[tree] is True
    assert pair.create(tree, "ok.txt").header.status == NtStatus.SUCCESS  # encrypted by the client
    session.trees[tree] = False
    assert pair.create(tree, "no.txt").header.status == NtStatus.ACCESS_DENIED


def test_tampered_ciphertext_disconnects(tmp_path):
    state = make_state(tmp_path, encrypt=True)
    pair = Pair(state)
    pair.negotiate()
    pair.login()
    raw, _ = pair.client.build(Command.ECHO, m.EchoRequest(), pair.session)
    sealed = bytearray(pair.client.seal([raw], pair.session))
    sealed[-1] ^= 0x80
    with pytest.raises(Disconnect):
        pair.server.receive_pdu(bytes(sealed))


# ---------------------------------------------------------------------------------------------- the share


@pytest.mark.parametrize("name, status", [
    ("..\\outside.txt", NtStatus.OBJECT_PATH_SYNTAX_BAD),
    ("a\\..\\..\\outside.txt", NtStatus.OBJECT_PATH_SYNTAX_BAD),
    ("..\\..\\..", NtStatus.OBJECT_PATH_SYNTAX_BAD),  # smbtorture smb2.mkdir
    ("\\abs.txt", NtStatus.INVALID_PARAMETER),
    ("C:\\windows", NtStatus.OBJECT_NAME_INVALID),
    ("escape\\passwd", NtStatus.ACCESS_DENIED),
])
def test_names_never_leave_the_share(tmp_path, name, status):
    state = make_state(tmp_path)
    os.symlink("/etc", tmp_path / "share" / "escape")
    pair, tree = connected(state)
    assert pair.create(tree, name, CreateDisposition.OPEN).header.status == status
    assert not (tmp_path / "outside.txt").exists()


def test_a_file_id_is_closed_on_another_tree_connect_of_the_session(tmp_path):
    """smbtorture smb2.tcon: a FileId used with the TreeId of a second tree connect of the same session
    is FILE_CLOSED, as with Samba and Windows; with its own tree connect it keeps working."""
    state = make_state(tmp_path)
    pair, tree = connected(state)
    other = pair.tree()
    assert other != tree
    file_id = pair.create(tree, "tcon.txt", CreateDisposition.CREATE).body.file_id
    write = m.WriteRequest(file_id=file_id, offset=0, data=b"abcd")
    assert pair.request(Command.WRITE, write, other).header.status == NtStatus.FILE_CLOSED
    assert pair.request(Command.CLOSE, m.CloseRequest(file_id=file_id), other).header.status == NtStatus.FILE_CLOSED
    assert pair.request(Command.WRITE, write, tree).header.status == NtStatus.SUCCESS
    assert pair.request(Command.CLOSE, m.CloseRequest(file_id=file_id), tree).header.status == NtStatus.SUCCESS
    assert (tmp_path / "share" / "tcon.txt").read_bytes() == b"abcd"


@pytest.mark.parametrize("run", range(4))
def test_session_ids_fit_in_32_bits(tmp_path, run):
    """smbtorture smb2.session-id keeps the SessionId in 32 bits and sends it back: ids stay below
    2**32 (never 0), whatever a server's random start."""
    state = make_state(tmp_path)
    pair, _ = connected(state)
    second, _ = connected(state)
    for session in (pair.session, second.session):
        assert 0 < session.session_id < 2**32
    assert pair.session.session_id != second.session.session_id


def test_symlink_out_is_hidden_from_listing(tmp_path):
    state = make_state(tmp_path)
    os.symlink("/etc", tmp_path / "share" / "escape")
    (tmp_path / "share" / "inside.txt").write_text("hi")
    pair, tree = connected(state)
    dir_id = pair.create(tree, "", CreateDisposition.OPEN, CreateOptions.DIRECTORY_FILE).body.file_id
    response = pair.request(Command.QUERY_DIRECTORY, m.QueryDirectoryRequest(
        file_id=dir_id, file_information_class=FileInfoClass.ID_BOTH_DIRECTORY, file_name="*",
        output_buffer_length=65536), tree)
    from harness.smb import fscc

    names = [e.file_name for e in fscc.unpack_directory_entries(37, response.body.output)]
    assert names == [".", "..", "inside.txt"]
    again = pair.request(Command.QUERY_DIRECTORY, m.QueryDirectoryRequest(
        file_id=dir_id, file_information_class=37, file_name="*", output_buffer_length=65536), tree)
    assert again.header.status == NtStatus.NO_MORE_FILES


def test_delete_on_close_and_rename(state, tmp_path):
    pair, tree = connected(state)
    file_id = pair.create(tree, "a.txt", CreateDisposition.CREATE).body.file_id
    rename = struct.pack("<B7xQI", 0, 0, len("b.txt") * 2) + "b.txt".encode("utf-16-le")
    response = pair.request(Command.SET_INFO, m.SetInfoRequest(file_id=file_id, info_type=1, file_info_class=10,
                                                               buffer=rename), tree)
    assert response.header.status == NtStatus.SUCCESS
    assert (tmp_path / "share" / "b.txt").exists()
    pair.request(Command.SET_INFO, m.SetInfoRequest(file_id=file_id, info_type=1, file_info_class=13, buffer=b"\x01"),
                 tree)
    pair.request(Command.CLOSE, m.CloseRequest(file_id=file_id), tree)
    assert not (tmp_path / "share" / "b.txt").exists()


# ---------------------------------------------------------------------------------------------- compounding, async


def test_related_compound_create_write_close(state, tmp_path):
    pair, tree = connected(state, require_signing=True)
    requests = [
        (Command.CREATE, m.CreateRequest(name="c.txt", desired_access=AccessMask.GENERIC_WRITE, share_access=7,
                                         create_disposition=CreateDisposition.CREATE)),
        (Command.WRITE, m.WriteRequest(file_id=ALL_FF, data=b"compound")),
        (Command.CLOSE, m.CloseRequest(file_id=ALL_FF)),
    ]
    raws = [pair.client.build(cmd, body, pair.session, tree)[0] for cmd, body in requests]
    replies = pair.server.receive_pdu(pair.client.seal(raws, pair.session, tree, related=True))
    assert len(replies) == 1  # one compound response
    elements = split_compound(replies[0])
    assert [e.header.status for e in elements] == [0, 0, 0]
    assert all(e.header.is_signed for e in elements)  # each element signed separately
    assert all(e.header.is_related for e in elements[1:])
    pair.client.receive(replies[0], pair.sessions)  # verifies every signature
    assert (tmp_path / "share" / "c.txt").read_bytes() == b"compound"


def test_related_failure_propagates(state):
    pair, tree = connected(state)
    raws = [pair.client.build(Command.CREATE, m.CreateRequest(name="missing", desired_access=1, share_access=7,
                                                              create_disposition=CreateDisposition.OPEN),
                              pair.session, tree)[0],
            pair.client.build(Command.CLOSE, m.CloseRequest(file_id=ALL_FF), pair.session, tree)[0]]
    (reply,) = pair.server.receive_pdu(pair.client.seal(raws, pair.session, tree, related=True))
    assert [e.header.status for e in split_compound(reply)] == [NtStatus.OBJECT_NAME_NOT_FOUND] * 2


def test_unrelated_compound(state):
    pair, tree = connected(state)
    raws = [pair.client.build(Command.ECHO, m.EchoRequest(), pair.session)[0],
            pair.client.build(Command.CREATE, m.CreateRequest(name="u.txt", desired_access=1, share_access=7,
                                                              create_disposition=3), pair.session, tree)[0]]
    (reply,) = pair.server.receive_pdu(pair.client.seal(raws, pair.session, tree, related=False))
    assert [e.header.status for e in split_compound(reply)] == [0, 0]


def _statuses(pair, tree, elements, related) -> list[int]:
    """Send (command, body, session id or None) elements as one compound, RELATED per ``related``."""
    raws = []
    for command, body, session_id in elements:
        raw = bytearray(pair.client.build(command, body, pair.session, tree)[0])
        if session_id is not None:
            raw[40:48] = struct.pack("<Q", session_id)
        raws.append(bytes(raw))
    (reply,) = pair.server.receive_pdu(pair.client.seal(raws, pair.session, tree, related=related))
    return [e.header.status for e in split_compound(reply)]


def _create_new(name):
    return (Command.CREATE, m.CreateRequest(name=name, desired_access=AccessMask.GENERIC_ALL, share_access=7,
                                            create_disposition=CreateDisposition.OPEN_IF), None)


CLOSE_PREVIOUS = (Command.CLOSE, m.CloseRequest(file_id=ALL_FF), None)


@pytest.mark.parametrize(("related", "expected"), [
    # smbtorture smb2.compound.unrelated1: in an unrelated element the all-0xFF FileId is no open
    ([False, False, False], [0, NtStatus.FILE_CLOSED, NtStatus.FILE_CLOSED]),
    # invalid3: an unrelated element ends what a related one after it may inherit
    ([False, False, True], [0, NtStatus.FILE_CLOSED, NtStatus.FILE_CLOSED]),
    # invalid1 and related9: a related first element, and the related ones after it, are INVALID_PARAMETER
    ([True, True, False], [NtStatus.INVALID_PARAMETER, NtStatus.INVALID_PARAMETER, NtStatus.FILE_CLOSED]),
    ([False, True, True], [0, 0, NtStatus.FILE_CLOSED]),  # related all along: the first CLOSE closes it
])
def test_compound_related_and_unrelated_file_ids(state, related, expected):
    pair, tree = connected(state)
    assert _statuses(pair, tree, [_create_new("c.txt"), CLOSE_PREVIOUS, CLOSE_PREVIOUS], related) == expected


def test_related_element_after_a_bad_session_is_invalid_parameter(state):
    """smbtorture smb2.compound.invalid2: an unrelated element names no session (USER_SESSION_DELETED);
    a related element after it inherits that non-session and is INVALID_PARAMETER, as with Samba."""
    pair, tree = connected(state)
    no_session = (Command.CLOSE, m.CloseRequest(file_id=ALL_FF), 2**64 - 1)
    assert _statuses(pair, tree, [_create_new("s.txt"), no_session, CLOSE_PREVIOUS], [False, False, True]) == [
        0, NtStatus.USER_SESSION_DELETED, NtStatus.INVALID_PARAMETER]


def test_every_response_of_a_compound_is_padded_to_8_bytes(state, tmp_path):
    """§3.3.4.1.3: the last response of a compound is padded too (smbtorture smb2.compound.compound-padding
    reads 3 bytes twice in one compound and wants 24-byte bodies for both); a lone response is not."""
    (tmp_path / "share" / "p.txt").write_bytes(b"123")
    pair, tree = connected(state)
    file_id = pair.create(tree, "p.txt", CreateDisposition.OPEN).body.file_id
    read = (Command.READ, m.ReadRequest(file_id=file_id, length=3, offset=0))
    raws = [pair.client.build(*read, pair.session, tree)[0] for _ in range(2)]
    (reply,) = pair.server.receive_pdu(pair.client.seal(raws, pair.session, tree))
    elements = split_compound(reply)
    assert [len(e.raw) for e in elements] == [64 + 24, 64 + 24]
    assert [r.body.data for r in pair.client.receive(reply, pair.sessions)] == [b"123", b"123"]
    assert len(pair.request(*read, tree).raw) == 64 + 19


def test_change_notify_async_and_cancel(state):
    pair, tree = connected(state)
    dir_id = pair.create(tree, "", CreateDisposition.OPEN, CreateOptions.DIRECTORY_FILE).body.file_id
    raw, mid = pair.client.build(Command.CHANGE_NOTIFY, m.ChangeNotifyRequest(file_id=dir_id, output_buffer_length=4096,
                                                                              completion_filter=0x17), pair.session, tree)
    (interim,) = pair.roundtrip(pair.client.seal([raw], pair.session, tree))
    assert interim.header.status == NtStatus.PENDING and interim.header.is_async
    cancel = Header(command=Command.CANCEL, flags=HeaderFlags.ASYNC_COMMAND, message_id=mid,
                    async_id=interim.header.async_id, session_id=pair.session.session_id).pack() + m.CancelRequest().pack()
    assert pair.server.receive_pdu(pair.client.seal([cancel], pair.session)) == []  # no reply to CANCEL
    (final,) = pair.client.receive(pair.server.take_output()[0], pair.sessions)
    assert final.header.status == NtStatus.CANCELLED and final.header.message_id == mid


def test_change_notify_completes_on_change(state):
    pair, tree = connected(state)
    dir_id = pair.create(tree, "", CreateDisposition.OPEN, CreateOptions.DIRECTORY_FILE).body.file_id
    raw, mid = pair.client.build(Command.CHANGE_NOTIFY, m.ChangeNotifyRequest(file_id=dir_id, output_buffer_length=4096,
                                                                              completion_filter=0x17), pair.session, tree)
    pair.roundtrip(pair.client.seal([raw], pair.session, tree))
    pair.create(tree, "new.txt", CreateDisposition.CREATE)
    (final,) = pair.client.receive(pair.server.take_output()[0], pair.sessions)
    assert final.header.status == NtStatus.SUCCESS and final.header.message_id == mid
    assert change_notify.decode(final.body.output) == [(change_notify.ADDED, "new.txt")]


def test_oplock_break_notification(state):
    """A write through another open breaks a level II oplock to NONE with an unsolicited message
    (MessageId 0xFFFF..., TreeId 0, §3.3.4.6) that needs no acknowledgment."""
    first, tree1 = connected(state, require_signing=True)
    second, tree2 = connected(state)
    granted = first.create(tree1, "shared.txt", requested_oplock_level=OplockLevel.II).body
    assert granted.oplock_level == OplockLevel.II
    writer = second.create(tree2, "shared.txt").body.file_id
    second.request(Command.WRITE, m.WriteRequest(file_id=writer, data=b"x"), tree2)
    (note,) = first.client.receive(first.server.take_output()[0], first.sessions)
    assert note.header.message_id == UNSOLICITED_MESSAGE_ID and note.header.tree_id == 0
    assert note.body.file_id == granted.file_id and note.body.oplock_level == 0


def test_lease_break_notification(state):
    from harness.smb.messages.create_contexts import LeaseV2

    first, tree1 = connected(state)
    second, tree2 = connected(state)
    lease = LeaseV2(lease_key=b"k" * 16, lease_state=3).to_context()  # RH: the second open breaks nothing
    granted = first.create(tree1, "leased.txt", requested_oplock_level=OplockLevel.LEASE, contexts=[lease]).body
    assert granted.oplock_level == OplockLevel.LEASE
    writer = second.create(tree2, "leased.txt").body.file_id
    second.request(Command.WRITE, m.WriteRequest(file_id=writer, data=b"y"), tree2)
    (note,) = first.client.receive(first.server.take_output()[0], first.sessions)
    assert note.header.session_id == 0 and not note.header.is_signed
    assert note.body.lease_key == b"k" * 16 and note.body.new_lease_state == 0


def test_ioctls(tmp_path):
    from harness.smb.constants import Fsctl
    from harness.smb.server import ListenerInfo

    state = make_state(tmp_path, multichannel=True, listeners=[ListenerInfo("tcp", "127.0.0.9", 4450, 7)])
    pair, tree = connected(state)
    response = pair.request(Command.IOCTL, m.IoctlRequest(ctl_code=Fsctl.QUERY_NETWORK_INTERFACE_INFO, file_id=ALL_FF,
                                                          max_output_response=65536), tree)
    (entry,) = m.NetworkInterfaceInfo.unpack_list(response.body.output)
    assert (entry.address, entry.port, entry.if_index) == ("127.0.0.9", 4450, 7)
    # VALIDATE_NEGOTIATE_INFO (3.0.x): a mismatch means a downgrade: disconnect (§3.3.5.15.12).
    pair30 = Pair(state, dialects=(Dialect.SMB_3_0_2,), require_signing=True)
    pair30.negotiate()
    pair30.login()
    tree30 = pair30.tree()
    body = pair30.client._negotiate_body
    good = m.ValidateNegotiateInfoRequest(body.capabilities, body.client_guid, body.security_mode, body.dialects)
    response = pair30.request(Command.IOCTL, m.IoctlRequest(ctl_code=Fsctl.VALIDATE_NEGOTIATE_INFO, file_id=ALL_FF,
                                                            input=good.pack(), max_output_response=24), tree30)
    assert m.ValidateNegotiateInfoResponse.unpack(response.body.output).dialect == Dialect.SMB_3_0_2
    bad = m.ValidateNegotiateInfoRequest(body.capabilities, body.client_guid, body.security_mode, [0x0202])
    with pytest.raises(Disconnect):
        pair30.request(Command.IOCTL, m.IoctlRequest(ctl_code=Fsctl.VALIDATE_NEGOTIATE_INFO, file_id=ALL_FF,
                                                     input=bad.pack(), max_output_response=24), tree30)


def test_logoff_and_tree_disconnect(state):
    pair, tree = connected(state)
    assert pair.request(Command.TREE_DISCONNECT, m.TreeDisconnectRequest(), tree).header.status == 0
    assert pair.create(tree, "x").header.status == NtStatus.NETWORK_NAME_DELETED
    assert pair.request(Command.LOGOFF, m.LogoffRequest()).header.status == 0
    response = pair.request(Command.ECHO, m.EchoRequest())
    assert response.header.status == 0
    raw, _ = pair.client.build(Command.TREE_CONNECT, m.TreeConnectRequest("\\\\s\\share"), pair.session)
    (reply,) = pair.server.receive_pdu(raw)
    assert Header.unpack(reply).status == NtStatus.USER_SESSION_DELETED


def test_session_keys_reach_the_key_sink(tmp_path):
    records = []
    state = make_state(tmp_path, key_sink=records.append)
    pair = Pair(state, encrypt=True)
    pair.negotiate()
    session = pair.login()
    assert [r.session_id for r in records] == [session.session_id]
    assert records[0].c2s_key == session.keys.c2s


def test_311_tree_connect_must_be_signed(state):
    """§3.2.4.2.4 / §3.3.5.7: the client signs TREE_CONNECT on 3.1.1 even without signing required;
    the server drops a connection whose 3.1.1 TREE_CONNECT is neither signed nor encrypted."""
    pair = Pair(state)
    pair.negotiate()
    session = pair.login()
    assert not session.signing_required
    raw, _ = pair.client.build(Command.TREE_CONNECT, m.TreeConnectRequest("\\\\server\\share"), session)
    assert Header.unpack(pair.client.seal([raw], session)).is_signed
    with pytest.raises(Disconnect):
        pair.server.receive_pdu(raw)


def test_names_are_case_insensitive(state, tmp_path):
    (tmp_path / "share" / "MixedCase").mkdir()
    (tmp_path / "share" / "MixedCase" / "File.TXT").write_text("x")
    pair, tree = connected(state)
    response = pair.create(tree, "mixedcase\\FILE.txt", CreateDisposition.OPEN)
    assert response.header.status == NtStatus.SUCCESS
    assert response.body.end_of_file == 1


def test_a_create_waits_for_the_batch_break_and_goes_on_at_the_deadline(tmp_path):
    """Sans-IO with a clock of our own: the CREATE that breaks a BATCH oplock gets an interim
    STATUS_PENDING, the holder the break; nothing happens until the clock passes the break timeout,
    then ``on_timer`` breaks the silent holder to NONE and completes the CREATE with level II."""
    from harness.smb.server import oplocks

    now = [1_000 * 10**9]
    state = make_state(tmp_path, clock=lambda: now[0], break_timeout=5.0)
    first, tree1 = connected(state)
    second, tree2 = connected(state)
    held = first.create(tree1, "b.txt", requested_oplock_level=OplockLevel.BATCH).body
    assert held.oplock_level == OplockLevel.BATCH
    interim = second.create(tree2, "b.txt", requested_oplock_level=OplockLevel.BATCH)
    assert interim.header.status == NtStatus.PENDING and interim.header.is_async
    (note,) = first.client.receive(first.server.take_output()[0], first.sessions)
    assert note.body.file_id == held.file_id and note.body.oplock_level == OplockLevel.II
    assert oplocks.next_deadline(state) == 1_005.0
    now[0] += 4 * 10**9
    oplocks.on_timer(state)
    assert not second.server.take_output()  # not yet
    now[0] += 1 * 10**9
    oplocks.on_timer(state)
    (done,) = second.client.receive(second.server.take_output()[0], second.sessions)
    assert done.header.status == NtStatus.SUCCESS and done.header.async_id == interim.header.async_id
    assert done.body.oplock_level == OplockLevel.II
    assert oplocks.next_deadline(state) is None


def test_failed_reauthentication_ends_the_session_and_its_notify(state):
    """§3.3.5.5.3: a failed SESSION_SETUP removes the session and closes its opens, a valid session
    re-authenticating too (smbtorture smb2.notify.invalid-reauth: the waiting CHANGE_NOTIFY ends
    with STATUS_NOTIFY_CLEANUP)."""
    pair, tree = connected(state)
    dir_id = pair.create(tree, "", CreateDisposition.OPEN, CreateOptions.DIRECTORY_FILE).body.file_id
    raw, mid = pair.client.build(Command.CHANGE_NOTIFY, m.ChangeNotifyRequest(file_id=dir_id, output_buffer_length=4096,
                                                                              completion_filter=0x3), pair.session, tree)
    pair.roundtrip(pair.client.seal([raw], pair.session, tree))
    wrong = ClientSession(initiator=Initiator(USER, "not-the-password", hostname="client"))
    wrong.session_id = pair.session.session_id
    token = wrong.initiator.step(None)
    (challenge,) = pair.roundtrip(pair.client.session_setup_request(wrong, token))
    assert challenge.header.status == NtStatus.MORE_PROCESSING_REQUIRED
    token = wrong.initiator.step(challenge.body.security_buffer)
    (failed,) = pair.roundtrip(pair.client.session_setup_request(wrong, token))
    assert failed.header.status == NtStatus.LOGON_FAILURE
    (cleanup,) = pair.client.receive(pair.server.take_output()[0], pair.sessions)
    assert cleanup.header.message_id == mid and cleanup.header.status == NtStatus.NOTIFY_CLEANUP
    assert pair.request(Command.ECHO, m.EchoRequest()).header.status == NtStatus.SUCCESS  # the connection lives
    assert pair.create(tree, "x.txt").header.status == NtStatus.USER_SESSION_DELETED


def test_a_byte_range_lock_breaks_level_ii_oplocks(state):
    """A granted LOCK invalidates other opens' read caches as a WRITE does: a level II oplock is
    broken to NONE (Windows breaks level II oplocks on byte-range locks)."""
    first, tree1 = connected(state)
    second, tree2 = connected(state)
    granted = first.create(tree1, "locked.txt", requested_oplock_level=OplockLevel.II).body
    assert granted.oplock_level == OplockLevel.II
    locker = second.create(tree2, "locked.txt").body.file_id
    assert first.server.take_output() == []
    lock = m.LockRequest(file_id=locker, locks=[m.LockElement(0, 1, 0x12)])
    assert second.request(Command.LOCK, lock, tree2).header.status == NtStatus.SUCCESS
    (note,) = first.client.receive(first.server.take_output()[0], first.sessions)
    assert note.header.message_id == UNSOLICITED_MESSAGE_ID and note.body.oplock_level == OplockLevel.NONE


def test_change_notify_credit_charge_covers_the_output_buffer(state):
    """§3.3.5.19 with §3.3.5.2.5: a CHANGE_NOTIFY asking for 128 KiB of output must be charged two
    credits on a multi-credit connection (INVALID_PARAMETER otherwise), and OutputBufferLength may
    not pass MaxTransactSize."""
    pair, tree = connected(state)
    dir_id = pair.create(tree, "", CreateDisposition.OPEN, CreateOptions.DIRECTORY_FILE).body.file_id
    body = m.ChangeNotifyRequest(file_id=dir_id, output_buffer_length=131072, completion_filter=0x3)
    assert pair.request(Command.CHANGE_NOTIFY, body, tree).header.status == NtStatus.INVALID_PARAMETER
    assert pair.request(Command.CHANGE_NOTIFY, body, tree, payload=131072).header.status == NtStatus.PENDING
    huge = m.ChangeNotifyRequest(file_id=dir_id, output_buffer_length=pair.server.max_size + 1, completion_filter=0x3)
    assert pair.request(Command.CHANGE_NOTIFY, huge, tree).header.status == NtStatus.INVALID_PARAMETER
