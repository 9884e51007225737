"""Malformed input: truncation, bit flips and random bytes must either decode or raise
SMBProtocolError — never IndexError/struct.error/UnicodeDecodeError, never hang."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.smb import fscc
from harness.smb.compound import build_compound, decode_message, pack_message, split_compound
from harness.smb.constants import Cipher, Command, HeaderFlags
from harness.smb.crypto import decrypt_message, encrypt_message
from harness.smb.errors import SMBProtocolError
from harness.smb.header import CompressionTransformHeader, Header, TransformHeader
from harness.smb.messages import (
    BufferDescriptorV1,
    ErrorResponse,
    NetworkInterfaceInfo,
    ValidateNegotiateInfoRequest,
    decode_body,
    unpack_create_contexts,
)
from harness.smb.messages.negotiate import unpack_negotiate_contexts

from . import vectors as v
from .strategies import any_message

SEEDS = [v.NEGOTIATE_REQUEST, v.NEGOTIATE_RESPONSE, v.SESSION_SETUP_REQUEST_1, v.SESSION_SETUP_RESPONSE_1,
         v.SESSION_SETUP_REQUEST_2, v.SESSION_SETUP_RESPONSE_2, v.TREE_CONNECT_REQUEST]


def _decode_all(buf: bytes) -> None:
    try:
        for element in split_compound(buf):
            decode_message(element.raw)
    except SMBProtocolError:
        pass


def _mutations(seed: bytes, data) -> bytes:
    kind = data.draw(st.sampled_from(["truncate", "flip", "both", "splice"]))
    buf = bytearray(seed)
    if kind in ("flip", "both"):
        for _ in range(data.draw(st.integers(1, 8))):
            position = data.draw(st.integers(0, len(buf) - 1))
            buf[position] ^= 1 << data.draw(st.integers(0, 7))
    if kind in ("truncate", "both"):
        buf = buf[: data.draw(st.integers(0, len(buf)))]
    if kind == "splice":
        position = data.draw(st.integers(64, len(buf)))
        buf[position : position + 4] = data.draw(st.binary(min_size=4, max_size=4))
    return bytes(buf)


@pytest.mark.parametrize("seed", SEEDS, ids=range(len(SEEDS)))
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_smb_mutated_vector_messages_raise_only_protocol_errors(seed, data):
    _decode_all(_mutations(seed, data))


@settings(max_examples=300, deadline=None)
@given(messages=st.lists(any_message, min_size=1, max_size=3), data=st.data())
def test_smb_mutated_generated_compounds_raise_only_protocol_errors(messages, data):
    chain = build_compound([pack_message(Header(command=max(m.COMMAND, 0),
                                                flags=HeaderFlags.SERVER_TO_REDIR if m.IS_RESPONSE else 0), m)
                            for m in messages])
    _decode_all(_mutations(chain, data))


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 0x13), st.booleans(), st.integers(0, 0xFFFFFFFF), st.binary(max_size=300))
def test_smb_random_bodies_raise_only_protocol_errors(command, is_response, status, body):
    try:
        decode_body(command, is_response, body, status)
    except SMBProtocolError:
        pass


PARSERS = [
    lambda b: Header.unpack(b),
    lambda b: TransformHeader.unpack(b),
    lambda b: CompressionTransformHeader.unpack(b),
    lambda b: split_compound(b),
    lambda b: unpack_create_contexts(b),
    lambda b: unpack_negotiate_contexts(b, 0, 5, "fuzz"),
    lambda b: NetworkInterfaceInfo.unpack_list(b),
    lambda b: BufferDescriptorV1.unpack_list(b),
    lambda b: ValidateNegotiateInfoRequest.unpack(b),
    lambda b: ErrorResponse(b, 3).contexts(),
    *[lambda b, c=c: fscc.unpack_directory_entries(c, b) for c in fscc.DIRECTORY_CLASSES],
    *[cls.unpack for cls in fscc.FILE_INFO_CLASSES.values()],
    *[cls.unpack for cls in fscc.FS_INFO_CLASSES.values()],
]


@pytest.mark.parametrize("parser", PARSERS, ids=range(len(PARSERS)))
@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400) | st.builds(lambda prefix, rest: prefix + rest,
                                           st.sampled_from([b"\xfeSMB@\x00", b"\xfdSMB", b"\xfcSMB"]),
                                           st.binary(max_size=300)))
def test_smb_structure_parsers_raise_only_protocol_errors(parser, buf):
    try:
        parser(buf)
    except SMBProtocolError:
        pass


CIPHERS = [Cipher.AES_128_CCM, Cipher.AES_128_GCM, Cipher.AES_256_CCM, Cipher.AES_256_GCM]


def _sealed(cipher: int) -> tuple[bytes, bytes, bytes]:
    """(key, plaintext, sealed): one ECHO of session 3 under ``cipher`` with a fixed nonce."""
    key = bytes(range(32 if cipher in (Cipher.AES_256_CCM, Cipher.AES_256_GCM) else 16))
    plain = pack_message(Header(command=Command.ECHO, session_id=3), b"\x04\x00\x00\x00")
    nonce = bytes(range(1, 12 if cipher in (Cipher.AES_128_CCM, Cipher.AES_256_CCM) else 13))
    return key, plain, encrypt_message(plain, key, cipher, 3, nonce)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), cipher=st.sampled_from(CIPHERS))
def test_smb_tampered_encrypted_messages_raise_decryption_errors(data, cipher):
    """Every byte of a TRANSFORM_HEADER message is either checked (ProtocolId, Flags, size) or
    authenticated (Nonce through SessionId as AAD, the tag, the ciphertext), so a message that
    differs from the sealed one in any byte never decrypts (MS-SMB2 3.3.5.2.1.1)."""
    key, _, sealed = _sealed(cipher)
    mutated = _mutations(sealed, data)
    try:
        decrypt_message(mutated, key, cipher)
    except SMBProtocolError:
        return
    assert mutated == sealed, "a modified encrypted message decrypted"


@pytest.mark.parametrize("cipher", CIPHERS, ids=lambda c: Cipher(c).name)
def test_smb_every_single_bit_flip_of_an_encrypted_message_is_refused(cipher):
    """Deterministic companion of the property above: each region -- ProtocolId, tag, nonce (also
    its reserved tail), OriginalMessageSize, Reserved, Flags, SessionId, ciphertext -- flipped one
    bit at a time, and truncation by one byte; none may decrypt."""
    key, plain, sealed = _sealed(cipher)
    assert decrypt_message(sealed, key, cipher)[1] == plain  # the untouched message does open
    accepted = []
    for position in range(len(sealed)):
        for bit in (0, 7):
            mutated = bytearray(sealed)
            mutated[position] ^= 1 << bit
            try:
                decrypt_message(bytes(mutated), key, cipher)
            except SMBProtocolError:
                continue
            accepted.append((position, bit))
    assert not accepted, f"bit flips at (byte, bit) {accepted} still decrypted"
    with pytest.raises(SMBProtocolError):
        decrypt_message(sealed[:-1], key, cipher)
