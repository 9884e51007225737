"""Transport framing of one SMB2 message (MS-SMB2 2.1, RFC 1002 4.3.1) at its limits: the largest
length each header can hold and one more, every header byte checked, and the deframer fed one byte
at a time, message after message."""

from __future__ import annotations

import pytest

from harness.smb.errors import SMBProtocolError
from harness.smb.framing import MAX_DIRECT_TCP, MAX_NBSS, Deframer, Framing, frame, frame_length


def test_direct_tcp_largest_length_and_one_more():
    assert MAX_DIRECT_TCP == 0xFFFFFF
    header = frame(bytes(MAX_DIRECT_TCP))[:4]
    assert header == b"\x00\xff\xff\xff" and frame_length(header) == (0, MAX_DIRECT_TCP)
    with pytest.raises(ValueError, match=r"^16777216 bytes do not fit the 24-bit Direct-TCP length$"):
        frame(bytes(MAX_DIRECT_TCP + 1))


def test_nbss_largest_length_and_one_more():
    assert MAX_NBSS == 0x1FFFF
    framed = frame(b"ab", Framing.NBSS)
    assert framed == b"\x00\x00\x00\x02ab"
    assert frame(bytes(MAX_NBSS), Framing.NBSS)[:4] == b"\x00\x01\xff\xff"
    with pytest.raises(ValueError, match=r"^131072 bytes do not fit the 17-bit NBSS length$"):
        frame(bytes(MAX_NBSS + 1), Framing.NBSS)


def test_empty_message_frames_to_a_bare_header():
    assert frame(b"") == b"\x00\x00\x00\x00"
    assert frame(b"", Framing.NBSS) == b"\x00\x00\x00\x00"
    assert frame(b"", Framing.SMB_DIRECT) == b""
    assert frame(bytearray(b"x"), Framing.SMB_DIRECT) == b"x" and isinstance(frame(bytearray(b"x"), Framing.SMB_DIRECT), bytes)


@pytest.mark.parametrize("framing", [Framing.DIRECT_TCP, Framing.NBSS])
def test_header_needs_four_bytes(framing):
    with pytest.raises(SMBProtocolError, match=r"^transport header: need 4 bytes \(status 0xC000000D\)$"):
        frame_length(b"\x00\x00\x01", framing)
    assert frame_length(b"\x00\x00\x01\x00", framing) == (0, 256)
    # Only the first four bytes are the header: what follows (the message) does not change it.
    assert frame_length(b"\x00\x00\x01\x00\xfe\xff", framing) == (0, 256)


def test_direct_tcp_first_byte_must_be_zero():
    with pytest.raises(SMBProtocolError, match=r"Direct TCP: first byte 0x85, must be 0"):
        frame_length(b"\x85\x00\x00\x00")
    assert frame_length(b"\x00\x01\x02\x03") == (0, 0x010203)


def test_nbss_type_flags_and_17th_bit():
    assert frame_length(b"\x85\x00\x00\x00", Framing.NBSS) == (0x85, 0)  # keepalive: type passed up
    assert frame_length(b"\x00\x01\x00\x00", Framing.NBSS) == (0, 0x10000)
    assert frame_length(b"\x00\x00\xff\xff", Framing.NBSS) == (0, 0xFFFF)
    for flags in (0x02, 0x80, 0xFF):
        with pytest.raises(SMBProtocolError, match=f"NBSS: reserved flag bits set \\(0x{flags:02x}\\)"):
            frame_length(bytes((0, flags, 0, 0)), Framing.NBSS)


def test_smb_direct_has_no_header_to_read():
    with pytest.raises(ValueError, match=r"^SMB Direct messages have no transport header$"):
        frame_length(b"\x00\x00\x00\x00", Framing.SMB_DIRECT)
    with pytest.raises(ValueError, match=r"^SMB Direct is message-oriented: no deframing$"):
        Deframer(Framing.SMB_DIRECT)


@pytest.mark.parametrize("framing", [Framing.DIRECT_TCP, Framing.NBSS])
def test_deframer_byte_by_byte_keeps_every_message(framing):
    messages = [b"", b"\xfeSMB" + bytes(60), b"x" * 300, b"y"]
    stream = b"".join(frame(m, framing) for m in messages)
    d = Deframer(framing)
    assert d.framing is framing
    got = []
    for i in range(len(stream)):
        got += d.feed(stream[i:i + 1])
    assert got == [(0, m) for m in messages]
    assert d.feed(b"") == []


def test_nbss_deframer_reads_nbss_headers():
    """A keepalive (type 0x85, RFC 1002 4.3.7) is an NBSS message that Direct TCP would refuse."""
    d = Deframer(Framing.NBSS)
    assert d.feed(b"\x85\x00\x00\x00" + frame(b"m", Framing.NBSS)) == [(0x85, b""), (0, b"m")]


def test_deframer_holds_an_incomplete_header_and_body():
    d = Deframer()
    assert d.feed(b"\x00\x00") == []
    assert d.feed(b"\x00\x03ab") == []
    assert d.feed(b"c\x00\x00\x00") == [(0, b"abc")]
    assert d.feed(b"\x01") == []  # 1-byte message pending
    assert d.feed(b"z") == [(0, b"z")]


def test_deframer_raises_on_a_bad_header_in_the_stream():
    d = Deframer()
    assert d.feed(frame(b"ok")) == [(0, b"ok")]
    with pytest.raises(SMBProtocolError):
        d.feed(b"\x01\x00\x00\x00")
