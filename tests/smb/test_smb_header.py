"""harness/smb/header.py byte by byte: where each field of the SMB2 header (MS-SMB2 2.2.1), the
TRANSFORM_HEADER (2.2.41) and the COMPRESSION_TRANSFORM_HEADER (2.2.42) sits, which header sizes and
NextCommand values are refused, with which message, and the flag accessors.

The offsets are written out here from the specification, not taken from the module's struct formats,
so a field moved or widened in the code fails here (mutation testing found these unchecked).
"""

from __future__ import annotations

import struct

import pytest

from harness.smb.constants import PROTOCOL_ID_COMPRESSION, PROTOCOL_ID_SMB2, PROTOCOL_ID_TRANSFORM
from harness.smb.errors import SMBProtocolError
from harness.smb.header import (
    HEADER_SIZE,
    TRANSFORM_HEADER_SIZE,
    CompressionTransformHeader,
    Header,
    TransformHeader,
    classify,
)

SIG = bytes(range(0xA0, 0xB0))


def _le(buf: bytes, offset: int, size: int) -> int:
    return int.from_bytes(buf[offset:offset + size], "little")


def _refused(call, *words: str) -> SMBProtocolError:
    with pytest.raises(SMBProtocolError) as e:
        call()
    for word in words:
        assert word in str(e.value), (word, str(e.value))
    return e.value


def _sync() -> Header:
    return Header(command=0x0005, status=0x11223344, credit_charge=0x0102, credits=0x0304, flags=0x00000028,
                  next_command=0, message_id=0x0102030405060708, process_id=0x0000FEFF, tree_id=0x0A0B0C0D,
                  async_id=0x7777, session_id=0x1112131415161718, signature=SIG)


def test_sync_header_layout():
    raw = _sync().pack()
    assert len(raw) == HEADER_SIZE == 64
    assert raw[0:4] == PROTOCOL_ID_SMB2
    assert _le(raw, 4, 2) == 64                      # StructureSize
    assert _le(raw, 6, 2) == 0x0102                  # CreditCharge
    assert _le(raw, 8, 4) == 0x11223344              # Status / ChannelSequence+Reserved
    assert _le(raw, 12, 2) == 0x0005                 # Command
    assert _le(raw, 14, 2) == 0x0304                 # CreditRequest/CreditResponse
    assert _le(raw, 16, 4) == 0x28                   # Flags
    assert _le(raw, 20, 4) == 0                      # NextCommand
    assert _le(raw, 24, 8) == 0x0102030405060708     # MessageId
    assert _le(raw, 32, 4) == 0xFEFF                 # Reserved (ProcessId)
    assert _le(raw, 36, 4) == 0x0A0B0C0D             # TreeId
    assert _le(raw, 40, 8) == 0x1112131415161718     # SessionId
    assert raw[48:64] == SIG                         # Signature
    back = Header.unpack(raw)
    assert back == Header(**{**_sync().__dict__, "async_id": 0})  # a sync header carries no AsyncId


def test_async_header_layout():
    h = Header(command=0x000F, flags=0x00000003, message_id=9, async_id=0x8877665544332211, process_id=5,
               tree_id=6, session_id=7, signature=SIG)
    raw = h.pack()
    assert _le(raw, 16, 4) == 3
    assert _le(raw, 32, 8) == 0x8877665544332211     # AsyncId over Reserved+TreeId
    assert _le(raw, 40, 8) == 7
    back = Header.unpack(raw)
    assert (back.async_id, back.process_id, back.tree_id) == (0x8877665544332211, 0, 0)
    assert (back.command, back.flags, back.message_id, back.session_id, back.signature) == (15, 3, 9, 7, SIG)
    assert back.is_async and back.is_response


def test_flag_accessors():
    assert Header(0).is_async is False and Header(0).is_response is False
    assert Header(0, flags=0x1).is_response and not Header(0, flags=0x1).is_async
    assert Header(0, flags=0x2).is_async and not Header(0, flags=0x2).is_response
    assert Header(0, flags=0x4).is_related and not Header(0, flags=0x8).is_related
    assert Header(0, flags=0x8).is_signed and not Header(0, flags=0x4).is_signed
    assert Header(0, status=0xABCD1234).channel_sequence == 0x1234
    assert Header(0, flags=0x70).priority == 7
    assert Header(0, flags=0x2F).priority == 2
    assert Header(0, flags=0x8F).priority == 0


def test_signature_must_be_16_bytes():
    with pytest.raises(ValueError, match="^signature must be 16 bytes$"):
        Header(0, signature=b"\0" * 15).pack()
    with pytest.raises(ValueError, match="signature must be 16 bytes"):
        Header(0, signature=b"\0" * 17).pack()


def test_header_refusals_name_the_field():
    raw = bytearray(Header(1).pack())
    _refused(lambda: Header.unpack(bytes(raw[:63])), "SMB2 header: 63 bytes, need 64")
    assert Header.unpack(bytes(raw)).command == 1                # exactly 64 bytes is enough
    bad = bytearray(raw)
    bad[0] = 0xFD
    _refused(lambda: Header.unpack(bytes(bad)), "ProtocolId fd534d42 is not fe534d42")
    bad = bytearray(raw)
    struct.pack_into("<H", bad, 4, 65)
    _refused(lambda: Header.unpack(bytes(bad)), "StructureSize 65, expected 64")
    bad = bytearray(raw)
    struct.pack_into("<H", bad, 4, 64)
    struct.pack_into("<I", bad, 16, 2)  # async: the StructureSize is checked there too
    struct.pack_into("<H", bad, 4, 63)
    _refused(lambda: Header.unpack(bytes(bad)), "StructureSize 63")
    err = _refused(lambda: Header.unpack(bytes(raw[:10])), "10 bytes")
    assert err.status == 0xC000000D  # STATUS_INVALID_PARAMETER


@pytest.mark.parametrize("extra", [0, 8, 16])
def test_next_command_bounds(extra):
    """NextCommand: 8-aligned, at least the header, at most the buffer (it may point at its end)."""
    buf = Header(1, next_command=64 + extra).pack() + bytes(extra)
    assert Header.unpack(buf).next_command == 64 + extra
    buf = Header(1, next_command=64 + extra + 8).pack() + bytes(extra)
    _refused(lambda: Header.unpack(buf), f"NextCommand {72 + extra} points outside the {64 + extra}-byte buffer")
    buf = Header(1, next_command=64 + extra + 4).pack() + bytes(extra + 8)
    _refused(lambda: Header.unpack(buf), f"NextCommand {68 + extra} is not 8-byte aligned")


def test_next_command_inside_the_header_is_refused():
    _refused(lambda: Header.unpack(Header(1, next_command=56).pack() + bytes(64)), "NextCommand 56 points outside")
    _refused(lambda: Header.unpack(Header(1, next_command=8).pack()), "NextCommand 8 points outside")


def test_transform_header_layout_and_aad():
    nonce = bytes(range(1, 17))
    t = TransformHeader(signature=SIG, nonce=nonce, original_message_size=0x01020304, flags=0x0001,
                        session_id=0x1112131415161718, reserved=0x0506)
    raw = t.pack()
    assert len(raw) == TRANSFORM_HEADER_SIZE == 52
    assert raw[0:4] == PROTOCOL_ID_TRANSFORM
    assert raw[4:20] == SIG
    assert raw[20:36] == nonce
    assert _le(raw, 36, 4) == 0x01020304
    assert _le(raw, 40, 2) == 0x0506                 # Reserved
    assert _le(raw, 42, 2) == 0x0001                 # Flags / EncryptionAlgorithm
    assert _le(raw, 44, 8) == 0x1112131415161718
    assert t.aad() == raw[20:52] and len(t.aad()) == 32
    assert TransformHeader.unpack(raw + b"ciphertext") == t
    assert TransformHeader().flags == 1


def test_transform_header_refusals():
    raw = bytearray(TransformHeader().pack())
    _refused(lambda: TransformHeader.unpack(bytes(raw[:51])), "TRANSFORM_HEADER: need 52 bytes")
    raw[0] = 0xFE
    _refused(lambda: TransformHeader.unpack(bytes(raw)), "ProtocolId fe534d42 is not fd534d42")


def _compression(original: int, algorithm: int, flags: int, offset_or_length: int) -> bytes:
    return PROTOCOL_ID_COMPRESSION + struct.pack("<IHHI", original, algorithm, flags, offset_or_length)


def test_unchained_compression_header():
    buf = _compression(1000, 0x0002, 0, 3) + b"abcXYZ"
    h = CompressionTransformHeader.unpack(buf)
    assert (h.original_size, h.algorithm, h.flags, h.offset, h.payload) == (1000, 2, 0, 3, b"abcXYZ")
    assert not h.chained and h.payloads == []
    assert CompressionTransformHeader.unpack(_compression(1, 2, 0, 6) + b"abcXYZ").offset == 6  # to the end
    err = _refused(lambda: CompressionTransformHeader.unpack(_compression(1, 2, 0, 7) + b"abcXYZ"))
    assert err.message == "COMPRESSION_TRANSFORM_HEADER: Offset past the end of the message"
    _refused(lambda: CompressionTransformHeader.unpack(b"\xfdSMB" + bytes(12)), "ProtocolId fd534d42",
             "is not fc534d42")
    _refused(lambda: CompressionTransformHeader.unpack(PROTOCOL_ID_COMPRESSION + bytes(11)),
             "COMPRESSION_TRANSFORM_HEADER: need 16 bytes")


def test_chained_compression_header():
    """Chained: the first payload header is the last 8 bytes of the 16-byte header (2.2.42.2)."""
    first = struct.pack("<HHI", 0x0000, 0x0001, 3) + b"raw"        # NONE, chained, 3 bytes
    second = struct.pack("<HHI", 0x0003, 0x0001, 2) + b"zz"        # LZ77+Huffman, 2 bytes
    buf = PROTOCOL_ID_COMPRESSION + struct.pack("<I", 5000) + first + second
    h = CompressionTransformHeader.unpack(buf)
    assert h.chained and (h.original_size, h.algorithm, h.flags) == (5000, 0, 1)
    # algorithm/flags of the header are the first payload's (the overlap)
    assert [(p.algorithm, p.flags, p.data) for p in h.payloads] == [(0, 1, b"raw"), (3, 1, b"zz")]
    buf = PROTOCOL_ID_COMPRESSION + struct.pack("<I", 5000) + struct.pack("<HHI", 1, 0x0001, 0)
    h = CompressionTransformHeader.unpack(buf)
    assert h.chained and [(p.algorithm, p.flags, p.data) for p in h.payloads] == [(1, 1, b"")]
    truncated = PROTOCOL_ID_COMPRESSION + struct.pack("<I", 1) + struct.pack("<HHI", 0, 1, 9) + b"short"
    _refused(lambda: CompressionTransformHeader.unpack(truncated), "compression payload: 9 bytes at offset 16")
    half = PROTOCOL_ID_COMPRESSION + struct.pack("<I", 1) + struct.pack("<HHI", 0, 1, 0) + b"\0\0\0"
    _refused(lambda: CompressionTransformHeader.unpack(half), "compression payload header: need 8 bytes at offset 16")


def test_classify():
    for pid in (PROTOCOL_ID_SMB2, PROTOCOL_ID_TRANSFORM, PROTOCOL_ID_COMPRESSION):
        assert classify(pid + bytes(60)) == pid
    assert classify(bytearray(PROTOCOL_ID_SMB2)) == PROTOCOL_ID_SMB2
    _refused(lambda: classify(b"\xffSMB" + bytes(60)), "unknown ProtocolId ff534d42")
