"""MS-SMBD 2.2 message codecs, byte for byte: every field at its offset (distinct values, so a
swapped or dropped field shows), the shortest input each decoder accepts and the error one byte
shorter, the descriptor array and how a range splits over descriptors (3.1.4.5)."""

from __future__ import annotations

import struct

import pytest

from wrappers.smbdirect.messages import (
    BufferDescriptor,
    DataTransfer,
    NegotiateRequest,
    NegotiateResponse,
    decode_descriptors,
    encode_descriptors,
    split_descriptors,
)

REQ = NegotiateRequest(credits_requested=0x0A0B, preferred_send_size=0x01020304, max_receive_size=0x05060708,
                       max_fragmented_size=0x090A0B0C, min_version=0x0100, max_version=0x0200, reserved=0x7777)
REQ_BYTES = bytes.fromhex("0001" "0002" "7777" "0b0a" "04030201" "08070605" "0c0b0a09")

RESP = NegotiateResponse(status=0xC00000BB, credits_requested=0x1112, credits_granted=0x1314,
                         max_read_write_size=0x21222324, preferred_send_size=0x31323334, max_receive_size=0x41424344,
                         max_fragmented_size=0x51525354, negotiated_version=0x0300, min_version=0x0100,
                         max_version=0x0200, reserved=0x6666)
RESP_BYTES = bytes.fromhex("0001" "0002" "0003" "6666" "1211" "1413" "bb0000c0" "24232221" "34333231"
                           "44434241" "54535251")


def test_negotiate_request_layout_and_round_trip():
    assert REQ.encode() == REQ_BYTES
    assert NegotiateRequest.decode(REQ_BYTES) == REQ
    assert NegotiateRequest.decode(REQ_BYTES + b"tail") == REQ
    with pytest.raises(ValueError, match=r"^negotiate request shorter than 20 bytes$"):
        NegotiateRequest.decode(REQ_BYTES[:19])


def test_negotiate_response_layout_and_round_trip():
    assert RESP.encode() == RESP_BYTES
    assert NegotiateResponse.decode(RESP_BYTES) == RESP
    with pytest.raises(ValueError, match=r"^negotiate response shorter than 32 bytes$"):
        NegotiateResponse.decode(RESP_BYTES[:31])


def test_negotiate_response_failure_zeroes_all_but_versions_and_status():
    f = NegotiateResponse.failure(0xC00000BB)
    assert f.encode() == bytes.fromhex("0001" "0001" "0000" "0000") + bytes(4) + bytes.fromhex("bb0000c0") + bytes(16)


def test_data_transfer_with_payload_pads_to_offset_24():
    dt = DataTransfer(credits_requested=0x0102, credits_granted=0x0304, flags=1, remaining_data_length=0x0A0B0C0D,
                      data=b"payload")
    raw = dt.encode()
    assert raw == bytes.fromhex("0201" "0403" "0100" "0000" "0d0c0b0a" "18000000" "07000000") + bytes(4) + b"payload"
    assert DataTransfer.decode_header(raw) == (0x0102, 0x0304, 1, 0, 0x0A0B0C0D, 24, 7)
    assert DataTransfer(data=memoryview(b"ab")).encode()[24:] == b"ab"


def test_data_transfer_without_payload_is_20_bytes_with_zero_offset():
    raw = DataTransfer(credits_requested=5, credits_granted=6, flags=1, remaining_data_length=9).encode()
    assert raw == struct.pack("<HHHHIII", 5, 6, 1, 0, 9, 0, 0) and len(raw) == 20
    assert DataTransfer.decode_header(raw) == (5, 6, 1, 0, 9, 0, 0)
    with pytest.raises(ValueError, match=r"^data transfer message shorter than 20 bytes$"):
        DataTransfer.decode_header(raw[:19])


def test_buffer_descriptors_layout_and_array():
    a, b = BufferDescriptor(0x0102030405060708, 0x0A0B0C0D, 0x10), BufferDescriptor(1, 2, 3)
    assert a.encode() == bytes.fromhex("0807060504030201" "0d0c0b0a" "10000000")
    raw = encode_descriptors([a, b])
    assert raw == a.encode() + b.encode() and len(raw) == 32
    assert decode_descriptors(raw) == [a, b]
    assert BufferDescriptor.decode(raw) == a  # from the start by default
    assert BufferDescriptor.decode(b"xx" + raw, 2) == a
    assert BufferDescriptor.decode(raw, 16) == b
    assert encode_descriptors([]) == b""
    for bad in (b"", raw[:15], raw + b"\x00"):
        with pytest.raises(ValueError, match=r"^buffer descriptor array: length is not a non-zero multiple of 16$"):
            decode_descriptors(bad)


def test_split_descriptors_edges():
    d = [BufferDescriptor(0, 1, 10), BufferDescriptor(0, 2, 5)]
    assert split_descriptors(d, 0, 15) == [(d[0], 0, 10), (d[1], 0, 5)]
    assert split_descriptors(d, 10, 5) == [(d[1], 0, 5)]  # starts exactly at the second
    assert split_descriptors(d, 9, 2) == [(d[0], 9, 1), (d[1], 0, 1)]
    assert split_descriptors(d, 15, 0) == []
    for offset, length in ((-1, 1), (0, -1), (-1, 0), (0, 16), (15, 1), (14, 2)):
        with pytest.raises(ValueError, match=r"^range exceeds the buffer descriptors$"):
            split_descriptors(d, offset, length)
