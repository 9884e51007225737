"""One exception root for the SMB stack (harness.smb.errors.SMBStackError): every kind of failure,
raised by the real code that raises it, is caught by ``except SMBStackError`` and by nothing
narrower that would hide a bug (each test also checks it is not a ``ValueError``/``KeyError``)."""

from __future__ import annotations

import pytest

from harness.smb import durable, errors, rdma_channel
from harness.smb import messages as m
from harness.smb.auth import Acceptor, AuthError, Initiator
from harness.smb.client import SMBError
from harness.smb.constants import Cipher, Command, Dialect, HeaderFlags, NtStatus, SigningAlgorithm
from harness.smb.crypto import decrypt_message, sign_message, verify_signature
from harness.smb.errors import SMBStackError
from harness.smb.header import Header
from harness.smb.messages.create_contexts import DurableHandleRequest, DurableHandleRequestV2
from harness.smb.server import Disconnect, Fail, ServerConfig, ServerConnection, ServerState
from harness.smb.vfs import LocalShare, ShareError

from .test_smb_state_machines import Pair, make_state


def _caught(action) -> SMBStackError:
    """Run ``action``; return what ``except SMBStackError`` caught (fails if it raised nothing)."""
    try:
        action()
    except SMBStackError as exc:
        assert not isinstance(exc, ValueError | KeyError | LookupError)
        return exc
    pytest.fail("nothing was raised")


def test_protocol_errors_malformed_body_bad_signature_failed_decryption():
    malformed = _caught(lambda: m.decode_body(Command.CREATE, False, b"\x39\x00"))
    assert isinstance(malformed, errors.SMBProtocolError) and malformed.status == NtStatus.INVALID_PARAMETER
    message = sign_message(Header(command=Command.ECHO, flags=HeaderFlags.SIGNED).pack() + m.EchoRequest().pack(),
                           b"k" * 16, SigningAlgorithm.AES_CMAC)
    forged = message[:-1] + bytes([message[-1] ^ 1])
    signature = _caught(lambda: verify_signature(forged, b"k" * 16, SigningAlgorithm.AES_CMAC))
    assert isinstance(signature, errors.SMBSignatureError)
    transform = b"\xfdSMB" + bytes(48) + b"payload"
    decryption = _caught(lambda: decrypt_message(transform, b"k" * 16, Cipher.AES_128_GCM))
    assert isinstance(decryption, errors.SMBProtocolError)


def test_server_failures_disconnect_and_status(tmp_path):
    connection = ServerConnection(ServerState(ServerConfig()))
    disconnect = _caught(lambda: connection.receive_pdu(b"\xfeSMB" + bytes(60)))  # not a NEGOTIATE
    assert isinstance(disconnect, Disconnect)

    class Conn:  # a 3.1.1 connection that is not RDMA
        dialect = Dialect.SMB_3_1_1
        rdma = None

    request = m.WriteRequest(file_id=bytes(16), offset=0, data=b"", channel=1, remaining_bytes=1,
                             channel_info=bytes(16))
    fail = _caught(lambda: rdma_channel.write_channel(Conn, request))
    assert isinstance(fail, Fail) and isinstance(fail, errors.SMBStatusError)
    assert fail.status == NtStatus.INVALID_PARAMETER


def test_share_and_durable_refusals_are_status_errors(tmp_path):
    share = _caught(lambda: LocalShare(str(tmp_path)).resolve("..\\etc\\passwd"))
    assert isinstance(share, ShareError) and share.status == NtStatus.OBJECT_PATH_SYNTAX_BAD

    class Conn:
        dialect = Dialect.SMB_3_1_1

    both = m.CreateRequest(name="f", contexts=[DurableHandleRequest().to_context(),
                                               DurableHandleRequestV2(create_guid=b"c" * 16).to_context()])
    reject = _caught(lambda: durable.parse_request(Conn, both))
    assert isinstance(reject, errors.SMBStatusError) and reject.status == NtStatus.INVALID_PARAMETER


def test_auth_error_from_a_wrong_password():
    initiator, acceptor = Initiator("alice", "wrong"), Acceptor({"alice": "right"})

    def handshake():
        token = initiator.step(None)
        while True:
            token, result = acceptor.step(token)
            if result is not None:
                return
            token = initiator.step(token)

    assert isinstance(_caught(handshake), AuthError)


def test_client_status_error_from_a_failed_request(tmp_path):
    pair = Pair(make_state(tmp_path))
    pair.negotiate()
    status = _caught(lambda: pair.login("wrong"))
    assert isinstance(status, SMBError) and status.status == NtStatus.LOGON_FAILURE


def test_reconnect_error_is_under_the_root():
    # The resilient client's failure (ReconnectFailed) derives from ReconnectError.
    assert issubclass(errors.ReconnectError, SMBStackError)
    from harness.blocking.reconnect import ReconnectFailed

    assert issubclass(ReconnectFailed, errors.ReconnectError)
    assert not issubclass(errors.ReconnectError, errors.SMBStatusError | errors.SMBProtocolError)
