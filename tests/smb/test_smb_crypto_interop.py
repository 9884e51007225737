"""Our crypto against smbprotocol 1.17's own implementation (Connection._generate_signature,
Connection._encrypt/_decrypt, Session._smb3kdf), in both directions, every cipher and signing algorithm."""

from __future__ import annotations

import uuid

import pytest
from smbprotocol.connection import Connection, SMB2TransformHeader
from smbprotocol.header import Commands
from smbprotocol.session import Session

from harness.smb.compound import pack_message
from harness.smb.constants import Cipher, Command, Dialect, HeaderFlags, SigningAlgorithm
from harness.smb.crypto import (
    compute_signature,
    decrypt_message,
    derive_session_keys,
    encrypt_message,
    sign_message,
    verify_signature,
)
from harness.smb.header import Header
from harness.smb.messages import CancelRequest, TreeConnectRequest

from . import vectors as v

CIPHERS = [Cipher.AES_128_CCM, Cipher.AES_128_GCM, Cipher.AES_256_CCM, Cipher.AES_256_GCM]


def _connection(dialect=Dialect.SMB_3_1_1, cipher=None, signing=None) -> Connection:
    connection = Connection(uuid.uuid4(), "server", 445)
    connection.dialect = dialect
    connection.cipher_id = cipher
    connection.signing_algorithm_id = signing
    return connection


def _session(connection, session_id, c2s, s2c) -> Session:
    session = Session.__new__(Session)  # no network: only the key attributes _encrypt/_decrypt read
    session.session_id = session_id
    session.encryption_key = c2s
    session.decryption_key = s2c
    connection.session_table = {session_id: session}
    return session


def _request(command=Command.TREE_CONNECT, body=None, message_id=11, flags=0):
    body = body or TreeConnectRequest("\\\\server\\share")
    return pack_message(Header(command=command, message_id=message_id, session_id=0x1234, flags=flags), body)


@pytest.mark.parametrize("algorithm", [SigningAlgorithm.HMAC_SHA256, SigningAlgorithm.AES_CMAC,
                                       SigningAlgorithm.AES_GMAC])
@pytest.mark.parametrize("kind", ["request", "response", "cancel"])
def test_smb_signatures_match_smbprotocol(algorithm, kind):
    dialect = Dialect.SMB_2_1 if algorithm == SigningAlgorithm.HMAC_SHA256 else Dialect.SMB_3_1_1
    connection = _connection(dialect, signing=None if dialect < 0x300 else algorithm)
    command = Command.CANCEL if kind == "cancel" else Command.TREE_CONNECT
    body = CancelRequest() if kind == "cancel" else None
    flags = HeaderFlags.SERVER_TO_REDIR if kind == "response" else 0
    message = _request(command, body, flags=flags)
    ours = sign_message(message, v.SIGNING_KEY, algorithm)
    theirs = connection._generate_signature(ours, v.SIGNING_KEY, 11, kind == "response", command)
    assert ours[48:64] == theirs
    verify_signature(ours, v.SIGNING_KEY, algorithm)
    # And theirs verifies with us: put their signature into the message.
    assert compute_signature(ours[:48] + theirs + ours[64:], v.SIGNING_KEY, algorithm) == theirs


def test_smb_known_answer_gmac_matches_smbprotocol():
    connection = _connection(signing=SigningAlgorithm.AES_GMAC)
    assert connection._generate_signature(v.TREE_CONNECT_REQUEST, v.SIGNING_KEY, 3, False,
                                          Commands.SMB2_TREE_CONNECT) == v.TREE_CONNECT_SIGNATURE


@pytest.mark.parametrize("cipher", CIPHERS, ids=lambda c: Cipher(c).name)
def test_smb_we_encrypt_smbprotocol_decrypts(cipher):
    full_key = bytes(range(32))
    keys = derive_session_keys(Dialect.SMB_3_1_1, full_key, v.SESSION_PREAUTH, cipher)
    connection = _connection(cipher=cipher)
    # smbprotocol is the client: it decrypts what the server (we) encrypted with S2C.
    _session(connection, 0x1234, keys.c2s, keys.s2c)
    message = _request(flags=HeaderFlags.SERVER_TO_REDIR)
    nonce = bytes(range(12 if cipher in (Cipher.AES_128_GCM, Cipher.AES_256_GCM) else 11))
    sealed = encrypt_message(message, keys.encryption_key(is_server=True), cipher, 0x1234, nonce)
    transform = SMB2TransformHeader()
    transform.unpack(sealed)
    assert connection._decrypt(transform) == message


@pytest.mark.parametrize("cipher", CIPHERS, ids=lambda c: Cipher(c).name)
def test_smb_smbprotocol_encrypts_we_decrypt(cipher):
    full_key = bytes(range(32))
    keys = derive_session_keys(Dialect.SMB_3_1_1, full_key, v.SESSION_PREAUTH, cipher)
    connection = _connection(cipher=cipher)
    session = _session(connection, 0x1234, keys.c2s, keys.s2c)
    message = _request()
    sealed = connection._encrypt(message, session).pack()
    transform, plain = decrypt_message(sealed, keys.decryption_key(is_server=True), cipher)
    assert plain == message and transform.session_id == 0x1234


@pytest.mark.parametrize("cipher", CIPHERS, ids=lambda c: Cipher(c).name)
def test_smb_key_derivation_matches_smbprotocol(cipher):
    full_key = bytes(range(32, 64))
    keys = derive_session_keys(Dialect.SMB_3_1_1, full_key, v.SESSION_PREAUTH, cipher)
    session = Session.__new__(Session)
    kdk = full_key if cipher in (Cipher.AES_256_CCM, Cipher.AES_256_GCM) else full_key[:16]
    length = len(keys.c2s)
    assert keys.signing == session._smb3kdf(full_key[:16], b"SMBSigningKey\x00", v.SESSION_PREAUTH)
    assert keys.application == session._smb3kdf(full_key[:16], b"SMBAppKey\x00", v.SESSION_PREAUTH)
    assert keys.c2s == session._smb3kdf(kdk, b"SMBC2SCipherKey\x00", v.SESSION_PREAUTH, length=length)
    assert keys.s2c == session._smb3kdf(kdk, b"SMBS2CCipherKey\x00", v.SESSION_PREAUTH, length=length)


def test_smb_30_keys_and_ccm_match_smbprotocol():
    keys = derive_session_keys(Dialect.SMB_3_0_2, v.SESSION_KEY)
    session = Session.__new__(Session)
    assert keys.signing == session._smb3kdf(v.SESSION_KEY, b"SMB2AESCMAC\x00", b"SmbSign\x00")
    assert keys.c2s == session._smb3kdf(v.SESSION_KEY, b"SMB2AESCCM\x00", b"ServerIn \x00")
    assert keys.s2c == session._smb3kdf(v.SESSION_KEY, b"SMB2AESCCM\x00", b"ServerOut\x00")
    connection = _connection(Dialect.SMB_3_0_2)
    session = _session(connection, 0x1234, keys.c2s, keys.s2c)
    message = _request()
    assert decrypt_message(connection._encrypt(message, session).pack(), keys.c2s, Cipher.AES_128_CCM)[1] == message
