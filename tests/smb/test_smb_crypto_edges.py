"""harness/smb/crypto.py at its edges: each check's boundary and message, each dialect's key rule,
each signing algorithm computed here independently from its definition (MS-SMB2 3.1.4.1, 3.1.4.2,
3.1.4.3), and each refusal of decrypt_message. The known-answer and interop tests cover the main paths;
mutation testing showed these branches unchecked.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct

import pytest
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import Cipher as BlockCipher
from cryptography.hazmat.primitives.ciphers import algorithms, modes

from harness.smb import crypto
from harness.smb.constants import (
    PROTOCOL_ID_COMPRESSION,
    UNSOLICITED_MESSAGE_ID,
    Cipher,
    Command,
    Dialect,
    HeaderFlags,
    NtStatus,
    SigningAlgorithm,
)
from harness.smb.errors import SMBDecryptionError, SMBProtocolError, SMBSignatureError
from harness.smb.header import Header

KEY16 = bytes(range(16))
KEY32 = bytes(range(32))
PREAUTH = bytes(range(64))
ALL_CIPHERS = [Cipher.AES_128_CCM, Cipher.AES_128_GCM, Cipher.AES_256_CCM, Cipher.AES_256_GCM]


def _msg(command: int = Command.READ, *, flags: int = 0, status: int = 0, message_id: int = 7,
         session_id: int = 0x1122, body: bytes = b"\x31\x00" + bytes(40)) -> bytes:
    return Header(command, status=status, flags=flags, message_id=message_id, session_id=session_id).pack() + body


def _whole(message: str) -> str:
    """A pytest.raises pattern that matches exactly ``message``."""
    return "^" + re.escape(message) + "$"


def _key_for(cipher: int) -> bytes:
    return KEY32 if cipher in crypto.AES256_CIPHERS else KEY16


# -- preauth integrity -------------------------------------------------------------------------------

def test_preauth_hash_rules():
    msg = _msg(Command.NEGOTIATE)
    assert crypto.preauth_update(PREAUTH, msg) == hashlib.sha512(PREAUTH + msg).digest()
    with pytest.raises(ValueError, match=_whole("preauth hash input must start with 0xFE 'SMB' (strip the transport header)")):
        crypto.preauth_update(PREAUTH, b"\x00\x00\x00\x50" + msg)
    with pytest.raises(ValueError, match=_whole("preauth hash value is 64 bytes (SHA-512)")):
        crypto.PreauthIntegrity(bytes(63))
    conn = crypto.PreauthIntegrity()
    assert conn.value == bytes(64)
    conn.add(msg)
    session = conn.for_session()
    assert session.value == conn.value and session is not conn
    more = _msg(Command.SESSION_SETUP, flags=1, status=NtStatus.MORE_PROCESSING_REQUIRED)
    before = session.value
    assert session.add_session_setup_response(more) == hashlib.sha512(before + more).digest()
    final = _msg(Command.SESSION_SETUP, flags=1, status=NtStatus.SUCCESS)
    assert session.add_session_setup_response(final) == hashlib.sha512(before + more).digest()
    assert conn.value == hashlib.sha512(bytes(64) + msg).digest()  # the session's hash is its own


# -- key derivation ----------------------------------------------------------------------------------

def _sp800_108(key: bytes, label: bytes, context: bytes, bits: int) -> bytes:
    out = b""
    for i in range(1, 1 + (bits + 255) // 256):
        out += hmac.new(key, i.to_bytes(4, "big") + label + b"\0" + context + bits.to_bytes(4, "big"),
                        hashlib.sha256).digest()
    return out[:bits // 8]


@pytest.mark.parametrize("bits", [8, 128, 256, 264, 512])
def test_kdf_blocks_and_lengths(bits):
    got = crypto.kdf(KEY16, b"Label\0", b"Ctx\0", bits)
    assert len(got) == bits // 8 and got == _sp800_108(KEY16, b"Label\0", b"Ctx\0", bits)


@pytest.mark.parametrize("bits", [0, -8, 12, 127])
def test_kdf_refuses_lengths(bits):
    with pytest.raises(ValueError, match=_whole("length must be a positive multiple of 8 bits")):
        crypto.kdf(KEY16, b"L\0", b"C\0", bits)


def test_session_key_from_gss():
    assert crypto.session_key_from_gss(b"\x01" * 8) == b"\x01" * 8 + bytes(8)
    assert crypto.session_key_from_gss(KEY32) == KEY16


@pytest.mark.parametrize("dialect", [Dialect.SMB_2_0_2, Dialect.SMB_2_1])
def test_2x_has_no_kdf(dialect):
    keys = crypto.derive_session_keys(dialect, b"\x05" * 20)
    assert keys == crypto.SessionKeys(b"\x05" * 16, b"\x05" * 16, b"\x05" * 16, None, None)


@pytest.mark.parametrize("dialect", [Dialect.SMB_3_0, Dialect.SMB_3_0_2])
def test_30_keys(dialect):
    keys = crypto.derive_session_keys(dialect, KEY32, cipher=Cipher.AES_256_GCM)  # 3.0 ignores the cipher
    assert keys.session_key == KEY16
    assert keys.signing == _sp800_108(KEY16, b"SMB2AESCMAC\0", b"SmbSign\0", 128)
    assert keys.application == _sp800_108(KEY16, b"SMB2APP\0", b"SmbRpc\0", 128)
    assert keys.c2s == _sp800_108(KEY16, b"SMB2AESCCM\0", b"ServerIn \0", 128)
    assert keys.s2c == _sp800_108(KEY16, b"SMB2AESCCM\0", b"ServerOut\0", 128)


@pytest.mark.parametrize("cipher", ALL_CIPHERS + [Cipher.NONE])
def test_311_keys(cipher):
    keys = crypto.derive_session_keys(Dialect.SMB_3_1_1, KEY32, PREAUTH, cipher)
    assert keys.session_key == KEY16
    assert keys.signing == _sp800_108(KEY16, b"SMBSigningKey\0", PREAUTH, 128)
    assert keys.application == _sp800_108(KEY16, b"SMBAppKey\0", PREAUTH, 128)
    if cipher == Cipher.NONE:
        assert (keys.c2s, keys.s2c) == (None, None)
    elif cipher in crypto.AES256_CIPHERS:
        assert keys.c2s == _sp800_108(KEY32, b"SMBC2SCipherKey\0", PREAUTH, 256)
        assert keys.s2c == _sp800_108(KEY32, b"SMBS2CCipherKey\0", PREAUTH, 256)
    else:
        assert keys.c2s == _sp800_108(KEY16, b"SMBC2SCipherKey\0", PREAUTH, 128)
        assert keys.s2c == _sp800_108(KEY16, b"SMBS2CCipherKey\0", PREAUTH, 128)
    assert (keys.encryption_key(False), keys.encryption_key(True)) == (keys.c2s, keys.s2c)
    assert (keys.decryption_key(False), keys.decryption_key(True)) == (keys.s2c, keys.c2s)


def test_311_needs_the_preauth_hash():
    for bad in (None, bytes(63)):
        with pytest.raises(ValueError, match=_whole("3.1.1 key derivation needs the 64-byte session preauth hash")):
            crypto.derive_session_keys(Dialect.SMB_3_1_1, KEY16, bad)


def test_channel_signing_key():
    assert crypto.derive_channel_signing_key(Dialect.SMB_3_1_1, KEY32, PREAUTH) == \
        _sp800_108(KEY16, b"SMBSigningKey\0", PREAUTH, 128)
    assert crypto.derive_channel_signing_key(Dialect.SMB_3_0, KEY16) == \
        _sp800_108(KEY16, b"SMB2AESCMAC\0", b"SmbSign\0", 128)
    assert crypto.derive_channel_signing_key(Dialect.SMB_2_1, KEY16) == KEY16


# -- signing -----------------------------------------------------------------------------------------

def test_signing_algorithm_choice():
    H, C, G = SigningAlgorithm.HMAC_SHA256, SigningAlgorithm.AES_CMAC, SigningAlgorithm.AES_GMAC
    assert crypto.signing_algorithm_for(Dialect.SMB_2_0_2) == H
    assert crypto.signing_algorithm_for(Dialect.SMB_2_1, G) == H
    assert crypto.signing_algorithm_for(Dialect.SMB_3_0) == C
    assert crypto.signing_algorithm_for(Dialect.SMB_3_0_2, G) == C
    assert crypto.signing_algorithm_for(Dialect.SMB_3_1_1) == C
    assert crypto.signing_algorithm_for(Dialect.SMB_3_1_1, G) == G
    assert crypto.signing_algorithm_for(Dialect.SMB_3_1_1, H) == H


def test_gmac_nonce_bits():
    assert crypto.gmac_nonce(5, False, False) == struct.pack("<QI", 5, 0)
    assert crypto.gmac_nonce(5, True, False) == struct.pack("<QI", 5, 1)
    assert crypto.gmac_nonce(5, False, True) == struct.pack("<QI", 5, 2)
    assert crypto.gmac_nonce(1 << 63, True, True) == struct.pack("<QI", 1 << 63, 3)


def _reference_mac(message: bytes, key: bytes, algorithm: int) -> bytes:
    zeroed = message[:48] + bytes(16) + message[64:]
    if algorithm == SigningAlgorithm.HMAC_SHA256:
        return hmac.new(key, zeroed, hashlib.sha256).digest()[:16]
    if algorithm == SigningAlgorithm.AES_CMAC:
        c = cmac.CMAC(algorithms.AES(key))
        c.update(zeroed)
        return c.finalize()
    h = Header.unpack(message)
    nonce = struct.pack("<QI", h.message_id, (1 if h.is_response else 0) | (2 if h.command == Command.CANCEL else 0))
    enc = BlockCipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
    enc.authenticate_additional_data(zeroed)
    enc.finalize()
    return enc.tag


@pytest.mark.parametrize("algorithm", list(SigningAlgorithm))
@pytest.mark.parametrize("command,flags", [(Command.READ, 0), (Command.READ, 1), (Command.CANCEL, 0),
                                           (Command.CANCEL, 1), (Command.READ, 0x80000001)])
@pytest.mark.parametrize("message_id", [0x0102030405, 1 << 63])
def test_signatures_match_their_definition(algorithm, command, flags, message_id):
    """Flags and MessageId are unsigned: bit 31 and bit 63 set must sign like any other value."""
    msg = _msg(command, flags=flags | 0x20, message_id=message_id)
    signed = crypto.sign_message(msg, KEY16, algorithm)
    assert Header.unpack(signed).flags == flags | 0x20 | HeaderFlags.SIGNED  # other flags kept
    assert signed[64:] == msg[64:] and signed[:48] == (msg[:16] + struct.pack("<I", flags | 0x28) + msg[20:48])
    assert signed[48:64] == _reference_mac(signed, KEY16, algorithm)
    assert crypto.compute_signature(signed, KEY16, algorithm) == signed[48:64]
    head = crypto.sign_header(msg[:64], [msg[64:70], msg[70:]], KEY16, algorithm)
    assert head + msg[64:] == signed
    crypto.verify_signature(signed, KEY16, algorithm)


def test_signing_refusals():
    for call in (crypto.sign_message, crypto.compute_signature):
        with pytest.raises(SMBProtocolError) as e:
            call(bytes(63), KEY16, SigningAlgorithm.AES_CMAC)
        assert e.value.message == "cannot sign: shorter than an SMB2 header"
    bare = Header(Command.ECHO, message_id=3).pack()  # a header alone (64 bytes) is signable
    assert crypto.sign_message(bare, KEY16, SigningAlgorithm.AES_CMAC)[48:] == \
        crypto.compute_signature(crypto.sign_message(bare, KEY16, SigningAlgorithm.AES_CMAC), KEY16,
                                 SigningAlgorithm.AES_CMAC)
    with pytest.raises(ValueError, match="unknown signing algorithm 7"):
        crypto.sign_message(_msg(), KEY16, 7)
    signed = bytearray(crypto.sign_message(_msg(Command.WRITE, message_id=42), KEY16, SigningAlgorithm.AES_CMAC))
    signed[70] ^= 1
    with pytest.raises(SMBSignatureError, match="bad signature on command 0x0009 MessageId 42") as e:
        crypto.verify_signature(bytes(signed), KEY16, SigningAlgorithm.AES_CMAC)
    assert "AES_CMAC" in str(e.value) and f"got {bytes(signed[48:64]).hex()}" in str(e.value)


def test_sign_compound_signs_each_element():
    first = Header(Command.CREATE, next_command=72, message_id=1).pack() + bytes(8)
    second = Header(Command.CLOSE, message_id=2, flags=HeaderFlags.RELATED_OPERATIONS).pack() + bytes(8)
    out = crypto.sign_compound(first + second, KEY16, SigningAlgorithm.HMAC_SHA256)
    assert out[:72] == crypto.sign_message(first, KEY16, SigningAlgorithm.HMAC_SHA256)
    assert out[72:] == crypto.sign_message(second, KEY16, SigningAlgorithm.HMAC_SHA256)


def test_which_messages_are_verified():
    signed = HeaderFlags.SIGNED
    assert crypto.must_verify_signature(Header(Command.READ, flags=signed | 1))
    assert not crypto.must_verify_signature(Header(Command.READ, flags=1))
    assert not crypto.must_verify_signature(Header(Command.OPLOCK_BREAK, flags=signed | 1,
                                                   message_id=UNSOLICITED_MESSAGE_ID))
    interim = Header(Command.READ, flags=signed | 1 | HeaderFlags.ASYNC_COMMAND, status=NtStatus.PENDING)
    assert not crypto.must_verify_signature(interim)
    # PENDING only exempts an async response: a sync one, a request, another status are checked
    assert crypto.must_verify_signature(Header(Command.READ, flags=signed | 1, status=NtStatus.PENDING))
    assert crypto.must_verify_signature(Header(Command.READ, flags=signed | HeaderFlags.ASYNC_COMMAND,
                                               status=NtStatus.PENDING))
    assert crypto.must_verify_signature(Header(Command.READ, flags=signed | 1 | HeaderFlags.ASYNC_COMMAND))


# -- encryption --------------------------------------------------------------------------------------

def test_nonce_lengths_and_keys():
    assert [crypto.nonce_length(c) for c in ALL_CIPHERS] == [11, 12, 11, 12]
    assert [crypto.is_gcm(c) for c in ALL_CIPHERS] == [False, True, False, True]
    with pytest.raises(ValueError, match="not a cipher: 0"):
        crypto.nonce_length(Cipher.NONE)
    with pytest.raises(ValueError, match="AES_256_GCM needs a 32-byte key, got 16"):
        crypto.encrypt_message(_msg(), KEY16, Cipher.AES_256_GCM, 1, bytes(12))
    with pytest.raises(ValueError, match="AES_128_CCM needs a 16-byte key, got 32"):
        crypto.encrypt_message(_msg(), KEY32, Cipher.AES_128_CCM, 1, bytes(11))
    with pytest.raises(ValueError, match="AES_128_GCM needs a 12-byte nonce"):
        crypto.encrypt_message(_msg(), KEY16, Cipher.AES_128_GCM, 1, bytes(11))
    with pytest.raises(ValueError, match="AES_128_GCM needs a 12-byte nonce"):
        crypto.encrypt_parts([_msg()], KEY16, Cipher.AES_128_GCM, 1, bytes(13))


def test_nonce_generator():
    gen = crypto.NonceGenerator(Cipher.AES_128_GCM, salt=b"SALT")
    assert (gen.next(), gen.next()) == (struct.pack("<Q", 0) + b"SALT", struct.pack("<Q", 1) + b"SALT")
    assert len(crypto.NonceGenerator(Cipher.AES_128_CCM).next()) == 11
    assert len(crypto.NonceGenerator(Cipher.AES_256_GCM).salt) == 4
    with pytest.raises(ValueError, match="salt must be 3 bytes"):
        crypto.NonceGenerator(Cipher.AES_128_CCM, salt=b"SALT")
    gen.counter = (1 << 64) - 1
    assert gen.next() == b"\xff" * 8 + b"SALT"
    with pytest.raises(OverflowError, match=_whole("nonce space exhausted: the session must be re-established")):
        gen.next()


def test_what_is_never_encrypted():
    with pytest.raises(ValueError, match=_whole("NEGOTIATE is never encrypted (§3.2.4.1.8)")):
        crypto.refuse_to_encrypt(_msg(Command.NEGOTIATE))
    binding = Header(Command.SESSION_SETUP).pack() + b"\x19\x00\x01"
    with pytest.raises(ValueError, match=_whole("a binding SESSION_SETUP request is never encrypted (§3.2.4.1.8)")):
        crypto.refuse_to_encrypt(binding)
    crypto.refuse_to_encrypt(Header(Command.SESSION_SETUP).pack() + b"\x19\x00\x00")  # not binding
    crypto.refuse_to_encrypt(Header(Command.SESSION_SETUP, flags=1).pack() + b"\x09\x00\x01")  # a response
    crypto.refuse_to_encrypt(Header(Command.SESSION_SETUP).pack() + b"\x19\x00")  # too short to say
    crypto.refuse_to_encrypt(PROTOCOL_ID_COMPRESSION + bytes(12))  # not an SMB2 header: not looked into
    with pytest.raises(ValueError, match="NEGOTIATE"):
        crypto.encrypt_parts([_msg(Command.NEGOTIATE)], KEY16, Cipher.AES_128_GCM, 1, bytes(12))


@pytest.mark.parametrize("cipher", ALL_CIPHERS)
def test_transform_fields_and_round_trip(cipher):
    key, msg = _key_for(cipher), _msg(session_id=0x1122)
    nonce = bytes(range(1, 1 + crypto.nonce_length(cipher)))
    out = crypto.encrypt_message(msg, key, cipher, 0x1122, nonce)
    assert len(out) == 52 + len(msg)
    assert out[20:36] == nonce.ljust(16, b"\0")
    assert struct.unpack_from("<IHHQ", out, 36) == (len(msg), 0, 1, 0x1122)
    assert crypto.encrypt_parts([msg[:64], msg[64:70], msg[70:]], key, cipher, 0x1122, nonce) == out
    transform, plain = crypto.decrypt_message(out, key, cipher)
    assert plain == msg and transform.session_id == 0x1122


@pytest.mark.parametrize("cipher", [Cipher.AES_128_CCM, Cipher.AES_256_GCM])
def test_decrypt_refusals(cipher):
    key = _key_for(cipher)
    n = crypto.nonce_length(cipher)
    good = crypto.encrypt_message(_msg(session_id=5), key, cipher, 5, bytes(n))
    with pytest.raises(SMBDecryptionError, match="encrypted message of 52 bytes: need more than 52"):
        crypto.decrypt_message(good[:52], key, cipher)
    bad = bytearray(good)
    bad[42] = 2
    with pytest.raises(SMBDecryptionError, match="Flags 0x0002, expected 0x0001"):
        crypto.decrypt_message(bytes(bad), key, cipher)
    with pytest.raises(SMBDecryptionError, match=f"OriginalMessageSize {len(good) - 52} but {len(good) - 53} bytes"):
        crypto.decrypt_message(good[:-1], key, cipher)
    with pytest.raises(SMBDecryptionError) as e:
        crypto.decrypt_message(good, bytes(len(key)), cipher)
    assert e.value.message == (f"decryption failed ({Cipher(cipher).name}, session 0x0000000000000005): "
                               "wrong key, cipher or tampered message")
    other = crypto.encrypt_message(_msg(session_id=6), key, cipher, 5, bytes(n))
    with pytest.raises(SMBDecryptionError, match="inner SessionId 0x0000000000000006 differs"):
        crypto.decrypt_message(other, key, cipher)
    garbage = crypto.encrypt_message(b"\xfdSMB" + bytes(60), key, cipher, 5, bytes(n))
    with pytest.raises(SMBDecryptionError, match="decrypted message has ProtocolId fd534d42"):
        crypto.decrypt_message(garbage, key, cipher)
    compressed = PROTOCOL_ID_COMPRESSION + bytes(20)
    sealed = crypto.encrypt_message(compressed, key, cipher, 5, bytes(n))
    assert crypto.decrypt_message(sealed, key, cipher)[1] == compressed
