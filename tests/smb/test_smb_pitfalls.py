"""One test per rule SMB 3 implementations most often get wrong (hashing, key derivation, nonces, the
transform AAD, negotiate contexts, unsolicited messages, framing); each fails if its rule is broken."""

from __future__ import annotations

import hashlib
import struct

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM

from harness.smb.compound import decode_message, pack_message
from harness.smb.constants import (
    UNSOLICITED_MESSAGE_ID,
    Cipher,
    Command,
    Dialect,
    HeaderFlags,
    NegotiateContextType,
    NtStatus,
    SigningAlgorithm,
)
from harness.smb.crypto import (
    LABELS_311,
    NonceGenerator,
    PreauthIntegrity,
    decrypt_message,
    derive_channel_signing_key,
    derive_session_keys,
    encrypt_message,
    gmac_nonce,
    kdf,
    must_verify_signature,
    sign_message,
    verify_signature,
)
from harness.smb.errors import SMBDecryptionError, SMBSignatureError
from harness.smb.framing import Deframer, Framing, frame, frame_length
from harness.smb.header import Header
from harness.smb.messages import (
    CancelRequest,
    EchoRequest,
    EncryptionCapabilities,
    LeaseBreakNotification,
    NegotiateRequest,
    NegotiateResponse,
    NetnameContext,
    OplockBreakNotification,
    PreauthIntegrityCapabilities,
    RawNegotiateContext,
    SessionSetupRequest,
)

from . import vectors as v


def _message(command, body, **header_fields):
    return pack_message(Header(command=command, **header_fields), body)


# 1 -------------------------------------------------------------------------------------------
def test_smb_pitfall01_transport_header_is_not_hashed():
    framed = frame(v.NEGOTIATE_REQUEST)
    with pytest.raises(ValueError):
        PreauthIntegrity().add(framed)
    wrong = hashlib.sha512(hashlib.sha512(bytes(64) + framed).digest() + frame(v.NEGOTIATE_RESPONSE)).digest()
    right = PreauthIntegrity()
    right.add(v.NEGOTIATE_REQUEST)
    right.add(v.NEGOTIATE_RESPONSE)
    assert right.value == v.CONNECTION_PREAUTH != wrong


# 2 -------------------------------------------------------------------------------------------
def test_smb_pitfall02_final_session_setup_response_is_not_hashed():
    session = PreauthIntegrity(v.CONNECTION_PREAUTH)
    session.add(v.SESSION_SETUP_REQUEST_1)
    before = session.add_session_setup_response(v.SESSION_SETUP_RESPONSE_1)
    assert before != PreauthIntegrity(v.CONNECTION_PREAUTH).add(v.SESSION_SETUP_REQUEST_1)  # MORE_PROCESSING hashed
    session.add(v.SESSION_SETUP_REQUEST_2)  # the last request IS hashed
    after = session.add_session_setup_response(v.SESSION_SETUP_RESPONSE_2)
    assert after == v.SESSION_PREAUTH
    hashed_final = hashlib.sha512(v.SESSION_PREAUTH + v.SESSION_SETUP_RESPONSE_2).digest()
    assert after != hashed_final


# 3 -------------------------------------------------------------------------------------------
def test_smb_pitfall03_kdf_label_keeps_its_nul_and_gets_a_separator():
    assert LABELS_311["signing"] == b"SMBSigningKey\x00" and len(LABELS_311["signing"]) == 14
    assert kdf(v.SESSION_KEY, LABELS_311["signing"], v.SESSION_PREAUTH) == v.SIGNING_KEY
    by_hand = __import__("hmac").new(
        v.SESSION_KEY, b"\x00\x00\x00\x01SMBSigningKey\x00\x00" + v.SESSION_PREAUTH + b"\x00\x00\x00\x80",
        "sha256").digest()[:16]
    assert by_hand == v.SIGNING_KEY
    without_nul = kdf(v.SESSION_KEY, b"SMBSigningKey", v.SESSION_PREAUTH)
    assert without_nul.hex().startswith(v.WRONG_SIGNING_KEY_WITHOUT_LABEL_NUL_PREFIX)


def test_smb_pitfall03_kdf_matches_cryptography_kbkdf():
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode

    for length in (16, 32):
        reference = KBKDFHMAC(hashes.SHA256(), Mode.CounterMode, length, 4, 4, CounterLocation.BeforeFixed,
                              b"SMBC2SCipherKey\x00", v.SESSION_PREAUTH, None).derive(v.SESSION_KEY)
        assert kdf(v.SESSION_KEY, b"SMBC2SCipherKey\x00", v.SESSION_PREAUTH, length * 8) == reference


# 4 -------------------------------------------------------------------------------------------
def test_smb_pitfall04_only_cipher_keys_grow_to_256_bits():
    full_key = bytes(range(32))  # a 32-byte GSS key (Kerberos); SessionKey is its first 16 bytes
    k128 = derive_session_keys(Dialect.SMB_3_1_1, full_key, v.SESSION_PREAUTH, Cipher.AES_128_GCM)
    k256 = derive_session_keys(Dialect.SMB_3_1_1, full_key, v.SESSION_PREAUTH, Cipher.AES_256_GCM)
    assert len(k256.signing) == len(k256.application) == 16
    assert k256.signing == k128.signing and k256.application == k128.application
    assert len(k256.c2s) == len(k256.s2c) == 32 and len(k128.c2s) == 16
    assert k256.c2s == kdf(full_key, b"SMBC2SCipherKey\x00", v.SESSION_PREAUTH, 256)
    assert k256.c2s != kdf(full_key[:16], b"SMBC2SCipherKey\x00", v.SESSION_PREAUTH, 256)


# 5 -------------------------------------------------------------------------------------------
def test_smb_pitfall05_client_encrypts_with_c2s_server_with_s2c():
    keys = derive_session_keys(Dialect.SMB_3_1_1, v.SESSION_KEY, v.SESSION_PREAUTH, Cipher.AES_128_GCM)
    assert keys.encryption_key(is_server=False) == v.C2S_KEY  # smbd "ServerIn"
    assert keys.decryption_key(is_server=True) == v.C2S_KEY
    assert keys.encryption_key(is_server=True) == v.S2C_KEY  # smbd "ServerOut"
    assert keys.decryption_key(is_server=False) == v.S2C_KEY
    request = _message(Command.ECHO, EchoRequest(), session_id=7, message_id=9)
    sealed = encrypt_message(request, keys.encryption_key(False), Cipher.AES_128_GCM, 7, bytes(12))
    assert decrypt_message(sealed, keys.decryption_key(True), Cipher.AES_128_GCM)[1] == request
    with pytest.raises(SMBDecryptionError):
        decrypt_message(sealed, keys.decryption_key(False), Cipher.AES_128_GCM)


# 6 -------------------------------------------------------------------------------------------
def test_smb_pitfall06_gmac_nonce_direction_and_cancel_bits():
    assert gmac_nonce(3, False, False) == struct.pack("<QI", 3, 0)
    assert gmac_nonce(3, True, False) == struct.pack("<QI", 3, 1)
    assert gmac_nonce(3, False, True) == struct.pack("<QI", 3, 2)
    key = v.SIGNING_KEY
    request = _message(Command.CANCEL, CancelRequest(), message_id=5, session_id=1)
    signed = sign_message(request, key, SigningAlgorithm.AES_GMAC)
    zeroed = request[:48] + bytes(16) + request[64:]
    zeroed = zeroed[:16] + struct.pack("<I", HeaderFlags.SIGNED) + zeroed[20:]
    assert signed[48:64] == AESGCM(key).encrypt(struct.pack("<QI", 5, 2), b"", zeroed)
    assert signed[48:64] != AESGCM(key).encrypt(struct.pack("<QI", 5, 0), b"", zeroed)
    response = _message(Command.ECHO, EchoRequest(), message_id=5, flags=HeaderFlags.SERVER_TO_REDIR)
    zeroed = response[:16] + struct.pack("<I", 1 | HeaderFlags.SIGNED) + response[20:]
    assert sign_message(response, key, SigningAlgorithm.AES_GMAC)[48:64] == AESGCM(key).encrypt(
        struct.pack("<QI", 5, 1), b"", zeroed)


# 7 -------------------------------------------------------------------------------------------
def test_smb_pitfall07_transform_aad_is_nonce_to_session_id():
    plain = _message(Command.ECHO, EchoRequest(), session_id=0x1122334455667788)
    nonce = bytes(range(12))
    sealed = encrypt_message(plain, v.C2S_KEY, Cipher.AES_128_GCM, 0x1122334455667788, nonce)
    aad = sealed[20:52]
    assert len(aad) == 32 and aad[:12] == nonce
    assert AESGCM(v.C2S_KEY).decrypt(nonce, sealed[52:] + sealed[4:20], aad) == plain
    with pytest.raises(InvalidTag):  # the full 52-byte header is NOT the AAD
        AESGCM(v.C2S_KEY).decrypt(nonce, sealed[52:] + sealed[4:20], sealed[:52])
    tampered = bytearray(sealed)
    tampered[40] ^= 1  # Reserved, inside the AAD
    with pytest.raises(SMBDecryptionError):
        decrypt_message(bytes(tampered), v.C2S_KEY, Cipher.AES_128_GCM)


# 8 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cipher,length", [(Cipher.AES_128_CCM, 11), (Cipher.AES_128_GCM, 12),
                                           (Cipher.AES_256_CCM, 11), (Cipher.AES_256_GCM, 12)])
def test_smb_pitfall08_nonce_sizes_and_no_reuse(cipher, length):
    key = bytes(32 if cipher in (Cipher.AES_256_CCM, Cipher.AES_256_GCM) else 16)
    generator = NonceGenerator(cipher, salt=bytes(length - 8))
    nonces = [generator.next() for _ in range(2000)]
    assert len(set(nonces)) == len(nonces) and all(len(n) == length for n in nonces)
    plain = _message(Command.ECHO, EchoRequest(), session_id=1)
    sealed = encrypt_message(plain, key, cipher, 1, nonces[0])
    assert sealed[20 + length : 36] == bytes(16 - length)  # reserved rest of the Nonce field
    aead = AESGCM(key) if length == 12 else AESCCM(key)
    assert aead.decrypt(sealed[20 : 20 + length], sealed[52:] + sealed[4:20], sealed[20:52]) == plain
    with pytest.raises(ValueError):
        encrypt_message(plain, key, cipher, 1, bytes(23 - length))


# 9 -------------------------------------------------------------------------------------------
def test_smb_pitfall09_netname_and_unknown_contexts_are_kept_not_rejected():
    request = NegotiateRequest(dialects=[0x0311], contexts=[
        PreauthIntegrityCapabilities([1], b"s" * 32), NetnameContext("server"),
        RawNegotiateContext(0x0100, b"reserved"), RawNegotiateContext(0x4242, b"\x01\x02\x03")])
    _, decoded = decode_message(_message(Command.NEGOTIATE, request))
    assert decoded == request
    assert [c.context_type for c in decoded.contexts] == [1, NegotiateContextType.NETNAME_NEGOTIATE_CONTEXT_ID,
                                                          0x0100, 0x4242]


# 10 ------------------------------------------------------------------------------------------
def test_smb_pitfall10_encryption_context_with_cipher_zero_is_representable():
    response = NegotiateResponse(dialect_revision=0x0311, contexts=[
        PreauthIntegrityCapabilities([1], b"x" * 32), EncryptionCapabilities([Cipher.NONE])])
    raw = _message(Command.NEGOTIATE, response, flags=HeaderFlags.SERVER_TO_REDIR)
    _, decoded = decode_message(raw)
    assert decoded.contexts[1] == EncryptionCapabilities([0])
    assert struct.pack("<HHIHH", 2, 4, 0, 1, 0) in raw  # type 2, length 4, CipherCount 1, CipherId 0


# 11 ------------------------------------------------------------------------------------------
def test_smb_pitfall11_codec_never_adds_response_contexts():
    response = NegotiateResponse(dialect_revision=0x0311, contexts=[PreauthIntegrityCapabilities([1], b"x")])
    _, decoded = decode_message(_message(Command.NEGOTIATE, response, flags=HeaderFlags.SERVER_TO_REDIR))
    assert [c.context_type for c in decoded.contexts] == [1]
    assert struct.unpack_from("<H", response.pack(), 6)[0] == 1  # NegotiateContextCount


# 12 ------------------------------------------------------------------------------------------
def test_smb_pitfall12_binding_request_uses_session_key_final_response_channel_key():
    session_keys = derive_session_keys(Dialect.SMB_3_1_1, v.SESSION_KEY, v.SESSION_PREAUTH, Cipher.AES_128_GCM)
    binding_hash = hashlib.sha512(b"another connection").digest()
    channel_key = derive_channel_signing_key(Dialect.SMB_3_1_1, v.SESSION_KEY, binding_hash)
    assert channel_key == kdf(v.SESSION_KEY, b"SMBSigningKey\x00", binding_hash) != session_keys.signing
    binding = _message(Command.SESSION_SETUP, SessionSetupRequest(flags=1, security_buffer=b"tok"), session_id=9)
    signed = sign_message(binding, session_keys.signing, SigningAlgorithm.AES_CMAC)
    verify_signature(signed, session_keys.signing, SigningAlgorithm.AES_CMAC)
    with pytest.raises(SMBSignatureError):
        verify_signature(signed, channel_key, SigningAlgorithm.AES_CMAC)


# 13 ------------------------------------------------------------------------------------------
def test_smb_pitfall13_negotiate_and_binding_session_setup_are_never_encrypted():
    with pytest.raises(ValueError):
        encrypt_message(v.NEGOTIATE_REQUEST, v.C2S_KEY, Cipher.AES_128_GCM, 0, bytes(12))
    binding = _message(Command.SESSION_SETUP, SessionSetupRequest(flags=1), session_id=9)
    with pytest.raises(ValueError):
        encrypt_message(binding, v.C2S_KEY, Cipher.AES_128_GCM, 9, bytes(12))
    normal = _message(Command.SESSION_SETUP, SessionSetupRequest(flags=0), session_id=9)
    encrypt_message(normal, v.C2S_KEY, Cipher.AES_128_GCM, 9, bytes(12))  # reauth may be encrypted


# 14 ------------------------------------------------------------------------------------------
def test_smb_pitfall14_unsolicited_breaks_decode_and_skip_signature_checks():
    flags = HeaderFlags.SERVER_TO_REDIR
    oplock = _message(Command.OPLOCK_BREAK, OplockBreakNotification(b"f" * 16, 1), flags=flags,
                      message_id=UNSOLICITED_MESSAGE_ID, session_id=5)
    lease = _message(Command.OPLOCK_BREAK, LeaseBreakNotification(b"k" * 16, 7, 1, 2, 1),
                     flags=flags, message_id=UNSOLICITED_MESSAGE_ID)
    header, body = decode_message(oplock)
    assert isinstance(body, OplockBreakNotification) and not must_verify_signature(header)
    header, body = decode_message(lease)
    assert isinstance(body, LeaseBreakNotification) and header.session_id == 0 and header.tree_id == 0
    signed_garbage = bytearray(lease)
    signed_garbage[16] |= HeaderFlags.SIGNED
    assert not must_verify_signature(Header.unpack(bytes(signed_garbage)))
    interim = Header(command=Command.READ, status=NtStatus.PENDING, message_id=4,
                     flags=flags | HeaderFlags.ASYNC_COMMAND | HeaderFlags.SIGNED, async_id=8)
    assert not must_verify_signature(interim)
    assert must_verify_signature(Header(command=Command.READ, message_id=4, flags=flags | HeaderFlags.SIGNED))


# 15 ------------------------------------------------------------------------------------------
def test_smb_pitfall15_nbss_length_is_17_bits_direct_tcp_24_bits():
    big = b"\xfeSMB" + bytes(0x20000 - 4)  # 128 KiB needs bit 17
    assert frame_length(frame(big[:0x1FFFF], Framing.NBSS), Framing.NBSS) == (0, 0x1FFFF)
    with pytest.raises(ValueError):
        frame(big, Framing.NBSS)
    header = frame(big)[:4]
    assert header == b"\x00\x02\x00\x00" and frame_length(header) == (0, 0x20000)
    nbss = frame(bytes(0x10005), Framing.NBSS)[:4]
    assert nbss == b"\x00\x01\x00\x05"
    assert Deframer().feed(frame(v.NEGOTIATE_REQUEST) + frame(v.TREE_CONNECT_REQUEST)[:10]) == [
        (0, v.NEGOTIATE_REQUEST)]


# 16 ------------------------------------------------------------------------------------------
def test_smb_pitfall16_smb_direct_payload_has_no_transport_header():
    assert frame(v.NEGOTIATE_REQUEST, Framing.SMB_DIRECT) == v.NEGOTIATE_REQUEST
    with pytest.raises(ValueError):
        Deframer(Framing.SMB_DIRECT)
    assert Deframer().feed(frame(v.NEGOTIATE_REQUEST)) == [(0, v.NEGOTIATE_REQUEST)]  # TCP/QUIC still framed
