"""SMB 3.x cryptography: preauth integrity hash, key derivation, signing and encryption.

Pure functions and tiny value classes over ``cryptography``; no state beyond what a caller hands in.
The rules that implementers most often get wrong (which bytes are hashed, the KDF label, key sizes
and names, nonces, the transform AAD, what is never encrypted) each have a test in
tests/smb/test_smb_pitfalls.py that fails if the rule is broken.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import Cipher as _BlockCipher
from cryptography.hazmat.primitives.ciphers import algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM

from .compound import split_compound
from .constants import (
    PROTOCOL_ID_COMPRESSION,
    PROTOCOL_ID_SMB2,
    UNSOLICITED_MESSAGE_ID,
    Cipher,
    Command,
    Dialect,
    HeaderFlags,
    NtStatus,
    SigningAlgorithm,
)
from .errors import SMBDecryptionError, SMBSignatureError, malformed
from .header import HEADER_SIZE, SIGNATURE_OFFSET, TRANSFORM_HEADER_SIZE, Header, TransformHeader

# ---------------------------------------------------------------------------------------------------
# Preauthentication integrity (§3.2.5.2, §3.2.5.3.1, §3.3.5.4, §3.3.5.5.3)
# ---------------------------------------------------------------------------------------------------

PREAUTH_HASH_SIZE = 64


def preauth_update(previous: bytes, message: bytes) -> bytes:
    """H(previous ‖ message) with SHA-512.  ``message`` must be a bare SMB2 message: the Direct-TCP /
    NBSS 4-byte header is never hashed (§3.2.5.2, §3.3.5.4), so anything not starting with 0xFE 'SMB' is refused."""
    if bytes(message[:4]) != PROTOCOL_ID_SMB2:
        raise ValueError("preauth hash input must start with 0xFE 'SMB' (strip the transport header)")
    return hashlib.sha512(previous + message).digest()


class PreauthIntegrity:
    """The running hash of one connection or one session setup.

    ``PreauthIntegrity()`` starts a connection at 64 zero bytes; feed it the NEGOTIATE request and
    response.  ``connection.for_session()`` starts a session (or a binding's PreauthSession on that
    connection) from the connection value; feed it every SESSION_SETUP request and each response —
    :meth:`add_session_setup_response` hashes a response only while its status is
    STATUS_MORE_PROCESSING_REQUIRED, never the final one (§3.2.5.3.1, §3.3.5.5.3)."""

    def __init__(self, value: bytes = bytes(PREAUTH_HASH_SIZE)) -> None:
        if len(value) != PREAUTH_HASH_SIZE:
            raise ValueError("preauth hash value is 64 bytes (SHA-512)")
        self.value = value

    def add(self, message: bytes) -> bytes:
        self.value = preauth_update(self.value, message)
        return self.value

    def for_session(self) -> PreauthIntegrity:
        return PreauthIntegrity(self.value)

    def add_session_setup_response(self, message: bytes) -> bytes:
        status = Header.unpack(message).status
        if status == NtStatus.MORE_PROCESSING_REQUIRED:
            self.add(message)
        return self.value


# ---------------------------------------------------------------------------------------------------
# Key derivation (§3.1.4.2; SP800-108 counter mode with HMAC-SHA256)
# ---------------------------------------------------------------------------------------------------


def kdf(key: bytes, label: bytes, context: bytes, length_bits: int = 128) -> bytes:
    """SP800-108 KDF in counter mode, PRF HMAC-SHA256, r = 32:
    ``K(i) = HMAC(key, i(BE32) ‖ label ‖ 0x00 ‖ context ‖ L(BE32))``.

    ``label`` already ends with its NUL (e.g. b"SMBSigningKey\\x00", 14 bytes) and the KDF still adds
    its own 0x00 separator (§3.1.4.2; checked against smbd's keys).
    """
    if length_bits % 8 or length_bits <= 0:
        raise ValueError("length must be a positive multiple of 8 bits")
    fixed = label + b"\x00" + context + struct.pack(">I", length_bits)
    output = b""
    counter = 1
    while len(output) * 8 < length_bits:
        output += hmac.new(key, struct.pack(">I", counter) + fixed, hashlib.sha256).digest()
        counter += 1
    return output[: length_bits // 8]


# (label, context) pairs of §3.1.4.2 / §3.2.5.3.1.  3.1.1 contexts are the session preauth hash.
LABELS_30 = {
    "signing": (b"SMB2AESCMAC\x00", b"SmbSign\x00"),
    "application": (b"SMB2APP\x00", b"SmbRpc\x00"),
    "c2s": (b"SMB2AESCCM\x00", b"ServerIn \x00"),  # the space is in the spec
    "s2c": (b"SMB2AESCCM\x00", b"ServerOut\x00"),
}
LABELS_311 = {
    "signing": b"SMBSigningKey\x00",
    "application": b"SMBAppKey\x00",
    "c2s": b"SMBC2SCipherKey\x00",
    "s2c": b"SMBS2CCipherKey\x00",
}

AES256_CIPHERS = (Cipher.AES_256_CCM, Cipher.AES_256_GCM)


@dataclass(frozen=True)
class SessionKeys:
    """The keys of one session (or, for ``signing``, one channel).

    ``c2s`` is what a client encrypts with (its EncryptionKey, smbd's "ServerIn"), ``s2c`` what a
    server encrypts with (client DecryptionKey, "ServerOut") (§3.2.5.3.1, §3.3.5.5.3).  Use :meth:`encryption_key`
    / :meth:`decryption_key` with a role to avoid choosing by hand."""

    session_key: bytes
    signing: bytes
    application: bytes
    c2s: bytes | None
    s2c: bytes | None

    def encryption_key(self, is_server: bool) -> bytes | None:
        return self.s2c if is_server else self.c2s

    def decryption_key(self, is_server: bool) -> bytes | None:
        return self.c2s if is_server else self.s2c


def session_key_from_gss(gss_key: bytes) -> bytes:
    """Session.SessionKey: the first 16 bytes of the GSS key, zero-padded if shorter (§3.2.5.3.1)."""
    return gss_key[:16].ljust(16, b"\x00")


def derive_session_keys(dialect: int, gss_key: bytes, preauth_hash: bytes | None = None,
                        cipher: int = Cipher.AES_128_CCM) -> SessionKeys:
    """All session keys for ``dialect`` from the GSS session key.

    Signing and application keys are always 128-bit from SessionKey; only the two cipher keys become
    256-bit, from FullSessionKey, when an AES-256 cipher is negotiated (§3.2.5.3.1, §3.3.1.8).  2.x has no KDF:
    the signing key is SessionKey itself.  3.1.1 needs the session's preauth hash as context.
    ``cipher`` 0 (no common cipher) yields no cipher keys.
    """
    session_key = session_key_from_gss(gss_key)
    if dialect < Dialect.SMB_3_0:
        return SessionKeys(session_key, session_key, session_key, None, None)
    if dialect == Dialect.SMB_3_1_1:
        if preauth_hash is None or len(preauth_hash) != PREAUTH_HASH_SIZE:
            raise ValueError("3.1.1 key derivation needs the 64-byte session preauth hash")
        signing = kdf(session_key, LABELS_311["signing"], preauth_hash)
        application = kdf(session_key, LABELS_311["application"], preauth_hash)
        if cipher == Cipher.NONE:
            return SessionKeys(session_key, signing, application, None, None)
        if cipher in AES256_CIPHERS:
            c2s = kdf(gss_key, LABELS_311["c2s"], preauth_hash, 256)
            s2c = kdf(gss_key, LABELS_311["s2c"], preauth_hash, 256)
        else:
            c2s = kdf(session_key, LABELS_311["c2s"], preauth_hash)
            s2c = kdf(session_key, LABELS_311["s2c"], preauth_hash)
        return SessionKeys(session_key, signing, application, c2s, s2c)
    signing = kdf(session_key, *LABELS_30["signing"])
    application = kdf(session_key, *LABELS_30["application"])
    return SessionKeys(session_key, signing, application, kdf(session_key, *LABELS_30["c2s"]),
                       kdf(session_key, *LABELS_30["s2c"]))


def derive_channel_signing_key(dialect: int, gss_key: bytes, binding_preauth_hash: bytes | None = None) -> bytes:
    """Channel.SigningKey of a session binding (§3.3.5.5.3): same labels as the session signing key,
    but from the binding's own GSS key and (3.1.1) the PreauthSession hash of the new connection."""
    return derive_session_keys(dialect, gss_key, binding_preauth_hash, Cipher.NONE).signing


# ---------------------------------------------------------------------------------------------------
# Signing (§3.1.4.1)
# ---------------------------------------------------------------------------------------------------


def signing_algorithm_for(dialect: int, negotiated: int | None = None) -> int:
    """2.0.2/2.1 → HMAC-SHA256; 3.0/3.0.2 → AES-CMAC; 3.1.1 → the SIGNING context's choice, else AES-CMAC."""
    if dialect < Dialect.SMB_3_0:
        return SigningAlgorithm.HMAC_SHA256
    if dialect == Dialect.SMB_3_1_1 and negotiated is not None:
        return negotiated
    return SigningAlgorithm.AES_CMAC


def gmac_nonce(message_id: int, is_response: bool, is_cancel: bool) -> bytes:
    """AES-GMAC nonce (§3.1.4.1): MessageId(LE64) ‖ LE32 with bit 0 = server→client and
    bit 1 = CANCEL request."""
    return struct.pack("<QI", message_id, (1 if is_response else 0) | (2 if is_cancel else 0))


def compute_signature(message: bytes, key: bytes, algorithm: int) -> bytes:
    """The 16-byte signature of one SMB2 message (one compound element, padding included), computed
    with the Signature field zeroed."""
    if len(message) < HEADER_SIZE:
        raise malformed("cannot sign: shorter than an SMB2 header")
    head = bytes(message[:SIGNATURE_OFFSET]) + bytes(16)
    return _mac(head, memoryview(message)[HEADER_SIZE:], key, algorithm)


def _mac(head: bytes, body, key: bytes, algorithm: int) -> bytes:
    """MAC of header (Signature zeroed) then body (one buffer or a list of them), fed incrementally
    so a 1 MiB WRITE is never copied just to be signed."""
    parts = body if isinstance(body, list) else [body]
    if algorithm == SigningAlgorithm.HMAC_SHA256:
        mac = hmac.new(key, head, hashlib.sha256)
        for part in parts:
            mac.update(part)
        return mac.digest()[:16]
    if algorithm == SigningAlgorithm.AES_CMAC:
        cmac_ = cmac.CMAC(algorithms.AES(key))
        cmac_.update(head)
        for part in parts:
            cmac_.update(part)
        return cmac_.finalize()
    if algorithm == SigningAlgorithm.AES_GMAC:
        command, flags = struct.unpack_from("<H", head, 12)[0], struct.unpack_from("<I", head, 16)[0]
        message_id = struct.unpack_from("<Q", head, 24)[0]
        nonce = gmac_nonce(message_id, bool(flags & HeaderFlags.SERVER_TO_REDIR), command == Command.CANCEL)
        encryptor = _BlockCipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
        encryptor.authenticate_additional_data(head)
        for part in parts:
            encryptor.authenticate_additional_data(part)
        encryptor.finalize()
        return encryptor.tag
    raise ValueError(f"unknown signing algorithm {algorithm}")


def sign_header(head: bytes, body_parts: list, key: bytes, algorithm: int) -> bytes:
    """The 64-byte header with SMB2_FLAGS_SIGNED and the signature over it and ``body_parts``; the
    body is not copied (the caller joins header and parts once)."""
    out = bytearray(head[:HEADER_SIZE])
    struct.pack_into("<I", out, 16, struct.unpack_from("<I", out, 16)[0] | HeaderFlags.SIGNED)
    out[SIGNATURE_OFFSET:HEADER_SIZE] = bytes(16)
    out[SIGNATURE_OFFSET:HEADER_SIZE] = _mac(bytes(out), body_parts, key, algorithm)
    return bytes(out)


def encrypt_parts(parts: list, key: bytes, cipher: int, session_id: int, nonce: bytes) -> bytes:
    """:func:`encrypt_message` over a message given as buffers (header, fixed part, data)."""
    if not is_gcm(cipher):
        return encrypt_message(b"".join(parts), key, cipher, session_id, nonce)
    if len(nonce) != nonce_length(cipher):
        raise ValueError(f"{Cipher(cipher).name} needs a {nonce_length(cipher)}-byte nonce")
    refuse_to_encrypt(parts[0])
    _check_key(cipher, key)
    transform = TransformHeader(nonce=nonce.ljust(16, b"\x00"), original_message_size=sum(len(p) for p in parts),
                                flags=1, session_id=session_id)
    encryptor = _BlockCipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
    encryptor.authenticate_additional_data(transform.aad())
    chunks = [encryptor.update(part) for part in parts]
    chunks.append(encryptor.finalize())
    transform.signature = encryptor.tag
    return transform.pack() + b"".join(chunks)


def sign_message(message: bytes, key: bytes, algorithm: int) -> bytes:
    """``message`` with SMB2_FLAGS_SIGNED set and its Signature filled in (one copy of the body)."""
    if len(message) < HEADER_SIZE:
        raise malformed("cannot sign: shorter than an SMB2 header")
    head = bytearray(message[:HEADER_SIZE])
    flags = struct.unpack_from("<I", head, 16)[0] | HeaderFlags.SIGNED
    struct.pack_into("<I", head, 16, flags)
    head[SIGNATURE_OFFSET:HEADER_SIZE] = bytes(16)
    body = memoryview(message)[HEADER_SIZE:]
    head[SIGNATURE_OFFSET:HEADER_SIZE] = _mac(bytes(head), body, key, algorithm)
    return bytes(head) + body


def sign_compound(chain: bytes, key: bytes, algorithm: int) -> bytes:
    """Sign each element of a compound separately (§3.1.4.1: each covers its padding)."""
    return b"".join(sign_message(element.raw, key, algorithm) for element in split_compound(chain))


def must_verify_signature(header: Header) -> bool:
    """Whether a received message's signature is checked (§3.2.5.1.3): not for unsolicited
    notifications (MessageId 0xFFFFFFFFFFFFFFFF, §3.3.4.6, §3.3.4.7), interim STATUS_PENDING responses, or
    unsigned messages (whether an unsigned one is acceptable is the session's decision)."""
    if header.message_id == UNSOLICITED_MESSAGE_ID:
        return False
    if header.is_response and header.is_async and header.status == NtStatus.PENDING:
        return False
    return header.is_signed


def verify_signature(message: bytes, key: bytes, algorithm: int) -> None:
    """Raise :class:`SMBSignatureError` (STATUS_ACCESS_DENIED) unless the Signature is correct."""
    expected = compute_signature(message, key, algorithm)
    actual = bytes(message[SIGNATURE_OFFSET:HEADER_SIZE])
    if not hmac.compare_digest(expected, actual):
        header = Header.unpack(message)
        raise SMBSignatureError(
            f"bad signature on command 0x{header.command:04x} MessageId {header.message_id}: "
            f"got {actual.hex()}, expected {expected.hex()} (algorithm {SigningAlgorithm(algorithm).name})")


# ---------------------------------------------------------------------------------------------------
# Encryption (§2.2.41, §3.1.4.3)
# ---------------------------------------------------------------------------------------------------


def is_gcm(cipher: int) -> bool:
    return cipher in (Cipher.AES_128_GCM, Cipher.AES_256_GCM)


def nonce_length(cipher: int) -> int:
    """CCM nonces are 11 bytes, GCM nonces 12 (§2.2.41)."""
    if cipher not in (Cipher.AES_128_CCM, Cipher.AES_128_GCM, Cipher.AES_256_CCM, Cipher.AES_256_GCM):
        raise ValueError(f"not a cipher: {cipher}")
    return 12 if is_gcm(cipher) else 11


def _check_key(cipher: int, key: bytes) -> None:
    expected = 32 if cipher in AES256_CIPHERS else 16
    if len(key) != expected:
        raise ValueError(f"{Cipher(cipher).name} needs a {expected}-byte key, got {len(key)}")


def _aead(cipher: int, key: bytes) -> AESGCM | AESCCM:
    _check_key(cipher, key)
    return AESGCM(key) if is_gcm(cipher) else AESCCM(key, tag_length=16)


class NonceGenerator:
    """Nonces that never repeat within a session (§3.1.4.3 "MUST NOT reuse"): a 64-bit counter
    followed by a fixed random salt filling the rest of the nonce.  Sans-IO tests pass ``salt``."""

    def __init__(self, cipher: int, salt: bytes | None = None) -> None:
        self.length = nonce_length(cipher)
        self.salt = salt if salt is not None else os.urandom(self.length - 8)
        if len(self.salt) != self.length - 8:
            raise ValueError(f"salt must be {self.length - 8} bytes")
        self.counter = 0

    def next(self) -> bytes:
        if self.counter >= 1 << 64:
            raise OverflowError("nonce space exhausted: the session must be re-established")
        nonce = struct.pack("<Q", self.counter) + self.salt
        self.counter += 1
        return nonce


def refuse_to_encrypt(message: bytes) -> None:
    """NEGOTIATE and a binding SESSION_SETUP request are never encrypted (§3.2.4.1.8,
    §3.3.4.1.4): raise ValueError for them."""
    if bytes(message[:4]) != PROTOCOL_ID_SMB2:
        return
    header = Header.unpack(message)
    if header.command == Command.NEGOTIATE:
        raise ValueError("NEGOTIATE is never encrypted (§3.2.4.1.8)")
    is_binding = (header.command == Command.SESSION_SETUP and not header.is_response
                  and len(message) > HEADER_SIZE + 2 and message[HEADER_SIZE + 2] & 0x01)
    if is_binding:
        raise ValueError("a binding SESSION_SETUP request is never encrypted (§3.2.4.1.8)")


def encrypt_message(message: bytes, key: bytes, cipher: int, session_id: int, nonce: bytes) -> bytes:
    """Wrap ``message`` (one SMB2 message or a whole compound) in a TRANSFORM_HEADER.

    The nonce field carries the CCM (11) or GCM (12) nonce followed by zeros; the AAD is the 32 header
    bytes from Nonce through SessionId (§3.1.4.3); Flags/EncryptionAlgorithm is 0x0001."""
    if len(nonce) != nonce_length(cipher):
        raise ValueError(f"{Cipher(cipher).name} needs a {nonce_length(cipher)}-byte nonce")
    refuse_to_encrypt(message)
    transform = TransformHeader(nonce=nonce.ljust(16, b"\x00"), original_message_size=len(message), flags=1,
                                session_id=session_id)
    if is_gcm(cipher):
        # Streaming GCM: the message is read through a memoryview and the ciphertext written once.
        _check_key(cipher, key)
        encryptor = _BlockCipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
        encryptor.authenticate_additional_data(transform.aad())
        ciphertext = encryptor.update(memoryview(message)) + encryptor.finalize()
        transform.signature = encryptor.tag
        return transform.pack() + ciphertext
    sealed = _aead(cipher, key).encrypt(nonce, bytes(message), transform.aad())
    transform.signature = sealed[-16:]
    return transform.pack() + memoryview(sealed)[:-16]


def decrypt_message(buf: bytes, key: bytes, cipher: int) -> tuple[TransformHeader, bytes]:
    """Check and open a TRANSFORM_HEADER message (§3.2.5.1.1.1, §3.3.5.2.1.1).

    Raises :class:`SMBDecryptionError` naming the failed check: too short, Flags ≠ 1,
    OriginalMessageSize ≠ ciphertext length, authentication failure, inner ProtocolId not 0xFE/0xFC,
    inner SessionId ≠ transform SessionId."""
    if len(buf) <= TRANSFORM_HEADER_SIZE:
        raise SMBDecryptionError(f"encrypted message of {len(buf)} bytes: need more than 52")
    transform = TransformHeader.unpack(buf)
    if transform.flags != 1:
        raise SMBDecryptionError(f"TRANSFORM_HEADER Flags 0x{transform.flags:04x}, expected 0x0001")
    ciphertext = memoryview(buf)[TRANSFORM_HEADER_SIZE:]
    if transform.original_message_size != len(ciphertext):
        raise SMBDecryptionError(f"OriginalMessageSize {transform.original_message_size} but "
                                 f"{len(ciphertext)} bytes of ciphertext")
    nonce = transform.nonce[: nonce_length(cipher)]
    try:
        if is_gcm(cipher):
            _check_key(cipher, key)
            decryptor = _BlockCipher(algorithms.AES(key), modes.GCM(nonce, transform.signature)).decryptor()
            decryptor.authenticate_additional_data(transform.aad())
            plaintext = decryptor.update(ciphertext) + decryptor.finalize()
        else:
            plaintext = _aead(cipher, key).decrypt(nonce, bytes(ciphertext) + transform.signature, transform.aad())
    except InvalidTag:
        raise SMBDecryptionError(
            f"decryption failed ({Cipher(cipher).name}, session 0x{transform.session_id:016x}): "
            "wrong key, cipher or tampered message") from None
    protocol = plaintext[:4]
    if protocol == PROTOCOL_ID_SMB2:
        inner = Header.unpack(plaintext)
        if inner.session_id != transform.session_id:
            raise SMBDecryptionError(f"inner SessionId 0x{inner.session_id:016x} differs from the "
                                     f"TRANSFORM_HEADER's 0x{transform.session_id:016x}")
    elif protocol != PROTOCOL_ID_COMPRESSION:
        raise SMBDecryptionError(f"decrypted message has ProtocolId {protocol.hex()}")
    return transform, plaintext
