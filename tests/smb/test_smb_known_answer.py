"""The known-answer vector of vectors.py (a captured smbclient 4.17 <-> smbd 4.17 session), byte for byte: decode every message, re-encode
it identically, recompute the NTLM session key (pyspnego primitives + password), both preauth hashes,
the four 3.1.1 keys and the GMAC signature of the first TREE_CONNECT."""

from __future__ import annotations

import pytest
from spnego._ntlm_raw.crypto import hmac_md5, ntowfv1, ntowfv2, rc4k
from spnego._ntlm_raw.messages import Authenticate, Challenge
from spnego._spnego import unpack_token

from harness.smb.compound import decode_message, pack_message
from harness.smb.constants import Cipher, Command, Dialect, NtStatus, SigningAlgorithm
from harness.smb.crypto import (
    PreauthIntegrity,
    compute_signature,
    derive_session_keys,
    sign_message,
    verify_signature,
)
from harness.smb.messages import (
    EncryptionCapabilities,
    ErrorResponse,
    NegotiateRequest,
    NegotiateResponse,
    NetnameContext,
    PreauthIntegrityCapabilities,
    SessionSetupRequest,
    SessionSetupResponse,
    SigningCapabilities,
    TreeConnectRequest,
)

from . import vectors as v

ALL = [v.NEGOTIATE_REQUEST, v.NEGOTIATE_RESPONSE, v.SESSION_SETUP_REQUEST_1, v.SESSION_SETUP_RESPONSE_1,
       v.SESSION_SETUP_REQUEST_2, v.SESSION_SETUP_RESPONSE_2, v.TREE_CONNECT_REQUEST]


@pytest.mark.parametrize("raw", ALL, ids=["neg-req", "neg-resp", "ss-req1", "ss-resp1", "ss-req2", "ss-resp2", "tcon"])
def test_smb_vector_messages_reencode_byte_for_byte(raw):
    header, body = decode_message(raw)
    assert pack_message(header, body) == raw


def test_smb_vector_negotiate_fields():
    _, request = decode_message(v.NEGOTIATE_REQUEST)
    assert isinstance(request, NegotiateRequest)
    assert request.dialects == [0x0202, 0x0210, 0x0300, 0x0302, 0x0311]
    types = [type(context) for context in request.contexts]
    assert types == [PreauthIntegrityCapabilities, EncryptionCapabilities, SigningCapabilities, NetnameContext]
    assert request.contexts[0].hash_algorithms == [1] and len(request.contexts[0].salt) == 32
    assert request.contexts[1].ciphers == [Cipher.AES_128_GCM, Cipher.AES_128_CCM, Cipher.AES_256_GCM,
                                           Cipher.AES_256_CCM]
    assert request.contexts[2].algorithms == [SigningAlgorithm.AES_GMAC, SigningAlgorithm.AES_CMAC,
                                              SigningAlgorithm.HMAC_SHA256]
    assert request.contexts[3].net_name == "127.0.0.1"

    _, response = decode_message(v.NEGOTIATE_RESPONSE)
    assert isinstance(response, NegotiateResponse)
    assert response.dialect_revision == Dialect.SMB_3_1_1
    assert response.max_read_size == 0x800000
    assert [type(context) for context in response.contexts] == [PreauthIntegrityCapabilities,
                                                                 EncryptionCapabilities, SigningCapabilities]
    assert response.contexts[1].ciphers == [Cipher.AES_128_GCM]  # Samba picks by server order
    assert response.contexts[2].algorithms == [SigningAlgorithm.AES_GMAC]


def test_smb_vector_session_setup_and_tree_connect_fields():
    header, response1 = decode_message(v.SESSION_SETUP_RESPONSE_1)
    assert header.status == NtStatus.MORE_PROCESSING_REQUIRED
    assert isinstance(response1, SessionSetupResponse) and not isinstance(response1, ErrorResponse)
    header, final = decode_message(v.SESSION_SETUP_RESPONSE_2)
    assert header.status == 0 and header.is_signed and isinstance(final, SessionSetupResponse)
    header, request = decode_message(v.SESSION_SETUP_REQUEST_2)
    assert isinstance(request, SessionSetupRequest) and header.session_id == 0xA8A68666
    header, tcon = decode_message(v.TREE_CONNECT_REQUEST)
    assert isinstance(tcon, TreeConnectRequest) and header.command == Command.TREE_CONNECT
    assert tcon.path == "\\\\127.0.0.1\\IPC$"
    assert header.message_id == 3 and header.is_signed


def _ntlm_exported_session_key(password: str) -> bytes:
    _, challenge_resp = decode_message(v.SESSION_SETUP_RESPONSE_1)
    challenge = Challenge.unpack(unpack_token(challenge_resp.security_buffer).response_token)
    _, auth_req = decode_message(v.SESSION_SETUP_REQUEST_2)
    auth = Authenticate.unpack(unpack_token(auth_req.security_buffer).response_token)
    response_key = ntowfv2(auth.user_name, ntowfv1(password), auth.domain_name)
    nt_response = auth.nt_challenge_response
    nt_proof = hmac_md5(response_key, challenge.server_challenge + nt_response[16:])
    if nt_proof != nt_response[:16]:
        raise ValueError("NTProofStr mismatch: wrong password")
    session_base_key = hmac_md5(response_key, nt_proof)
    return rc4k(session_base_key, auth.encrypted_random_session_key)  # KEY_EXCH negotiated


def test_smb_vector_ntlm_session_key_from_password():
    assert _ntlm_exported_session_key(v.PASSWORD) == v.SESSION_KEY
    with pytest.raises(ValueError):
        _ntlm_exported_session_key("wrong")


def test_smb_vector_preauth_hashes():
    connection = PreauthIntegrity()
    connection.add(v.NEGOTIATE_REQUEST)
    connection.add(v.NEGOTIATE_RESPONSE)
    assert connection.value == v.CONNECTION_PREAUTH
    session = connection.for_session()
    session.add(v.SESSION_SETUP_REQUEST_1)
    session.add_session_setup_response(v.SESSION_SETUP_RESPONSE_1)
    session.add(v.SESSION_SETUP_REQUEST_2)
    session.add_session_setup_response(v.SESSION_SETUP_RESPONSE_2)
    assert session.value == v.SESSION_PREAUTH
    assert connection.value == v.CONNECTION_PREAUTH  # the session copy does not touch the connection


def test_smb_vector_keys():
    keys = derive_session_keys(Dialect.SMB_3_1_1, v.SESSION_KEY, v.SESSION_PREAUTH, Cipher.AES_128_GCM)
    assert keys.signing == v.SIGNING_KEY
    assert keys.application == v.APPLICATION_KEY
    assert keys.c2s == v.C2S_KEY
    assert keys.s2c == v.S2C_KEY


def test_smb_vector_gmac_signature_of_tree_connect():
    verify_signature(v.TREE_CONNECT_REQUEST, v.SIGNING_KEY, SigningAlgorithm.AES_GMAC)
    assert compute_signature(v.TREE_CONNECT_REQUEST, v.SIGNING_KEY, SigningAlgorithm.AES_GMAC) == \
        v.TREE_CONNECT_SIGNATURE
    unsigned = v.TREE_CONNECT_REQUEST[:48] + bytes(16) + v.TREE_CONNECT_REQUEST[64:]
    assert sign_message(unsigned, v.SIGNING_KEY, SigningAlgorithm.AES_GMAC) == v.TREE_CONNECT_REQUEST


def test_smb_vector_final_session_setup_response_is_signed_with_the_session_signing_key():
    # §3.2.5.3.1: the final 3.1.1 SESSION_SETUP response MUST be signed, with Session.SigningKey.
    verify_signature(v.SESSION_SETUP_RESPONSE_2, v.SIGNING_KEY, SigningAlgorithm.AES_GMAC)


def test_smb_vector_end_to_end_from_password():
    """Password → NTLM key → preauth → KDF → the wire signature, nothing taken from smbd."""
    session = PreauthIntegrity()
    for message in (v.NEGOTIATE_REQUEST, v.NEGOTIATE_RESPONSE):
        session.add(message)
    session.add(v.SESSION_SETUP_REQUEST_1)
    session.add_session_setup_response(v.SESSION_SETUP_RESPONSE_1)
    session.add(v.SESSION_SETUP_REQUEST_2)
    keys = derive_session_keys(Dialect.SMB_3_1_1, _ntlm_exported_session_key(v.PASSWORD), session.value,
                               Cipher.AES_128_GCM)
    assert compute_signature(v.TREE_CONNECT_REQUEST, keys.signing, SigningAlgorithm.AES_GMAC) == \
        v.TREE_CONNECT_SIGNATURE
