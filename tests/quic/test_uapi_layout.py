"""wrappers/quic/uapi.py against linux/quic.h's structs, field by field (LP64, little endian).

The sizes and offsets below are written out from the header (lxin/quic's include/uapi/linux/quic.h),
not taken from the module's struct formats, so a field moved, widened or dropped in the code fails here.
Also: a short value is zero-extended as the kernel's setsockopt copies min(optlen, sizeof), every event
type decodes to its union member, and the sockaddr helpers (CONNECTION_MIGRATION) round-trip.
"""

from __future__ import annotations

import socket
import struct

import pytest

from wrappers.quic import constants as C
from wrappers.quic.uapi import (
    STREAM_INFO_SPACE,
    Config,
    ConnectionClose,
    ConnectionIdInfo,
    CryptoSecret,
    ErrInfo,
    Event,
    EventOption,
    StreamInfo,
    StreamMaxData,
    StreamUpdate,
    TransportParam,
    default_config,
    default_transport_param,
    parse_sockaddr,
    sockaddr_in,
    stream_info_cmsg,
)


def _u(buf: bytes, offset: int, size: int, signed: bool = False) -> int:
    return int.from_bytes(buf[offset:offset + size], "little", signed=signed)


def test_stream_info_and_errinfo():
    raw = StreamInfo(-5, 0x1_0000_0003).pack()  # flags are a __u32: the high bits are dropped
    assert len(raw) == 16
    assert (_u(raw, 0, 8, True), _u(raw, 8, 4), raw[12:]) == (-5, 3, bytes(4))
    assert StreamInfo.unpack(raw) == StreamInfo(-5, 3)
    assert StreamInfo.unpack(struct.pack("<q", 9)) == StreamInfo(9, 0)  # short: the rest reads as 0
    assert StreamInfo.unpack(None) == StreamInfo(0, 0)
    assert StreamInfo.unpack(raw + b"\xff" * 8) == StreamInfo(-5, 3)  # longer: the rest is ignored
    raw = ErrInfo(4, 0x10C).pack()
    assert len(raw) == 16 and (_u(raw, 0, 8), _u(raw, 8, 4), raw[12:]) == (4, 0x10C, bytes(4))
    assert ErrInfo.unpack(raw) == ErrInfo(4, 0x10C)
    assert ErrInfo.unpack(b"\x07") == ErrInfo(7, 0)


def test_transport_param_layout():
    tp = TransportParam(*range(1, 9), 0x0910, 0x1112, 0x13141516, 0x17181920, 0x2122, 0x2324,
                        0x25, 0x26, 0x27, 0x28)
    raw = tp.pack()
    assert len(raw) == 56
    assert list(raw[:8]) == list(range(1, 9))                    # remote .. ack_delay_exponent
    assert (_u(raw, 8, 2), _u(raw, 10, 2)) == (0x0910, 0x1112)   # max_datagram_frame_size, max_udp_payload_size
    assert (_u(raw, 12, 4), _u(raw, 16, 4)) == (0x13141516, 0x17181920)  # max_idle_timeout, max_ack_delay
    assert (_u(raw, 20, 2), _u(raw, 22, 2)) == (0x2122, 0x2324)  # max_streams_bidi, max_streams_uni
    assert [_u(raw, o, 8) for o in (24, 32, 40, 48)] == [0x25, 0x26, 0x27, 0x28]
    assert TransportParam.unpack(raw) == tp
    assert TransportParam.unpack(raw[:9]) == TransportParam(*range(1, 9), 0x10)


def test_default_transport_param_is_quic_ko_s():
    d = default_transport_param()
    assert (d.active_connection_id_limit, d.ack_delay_exponent, d.max_udp_payload_size) == (7, 3, 65527)
    assert (d.max_idle_timeout, d.max_ack_delay) == (30_000_000, 25_000)
    assert (d.max_streams_bidi, d.max_streams_uni, d.max_data) == (100, 100, 65535 * 32)
    assert (d.max_stream_data_bidi_local, d.max_stream_data_bidi_remote, d.max_stream_data_uni) == (65535 * 16,) * 3
    assert (d.remote, d.disable_active_migration, d.grease_quic_bit, d.stateless_reset,
            d.disable_1rtt_encryption, d.disable_compatible_version, d.max_datagram_frame_size) == (0,) * 7


def test_config_layout():
    cfg = Config(0x6B3343CF, 0x11, 0x22, 0x33, 1, 2, 3, 4, 5, 0x44)
    raw = cfg.pack()
    assert len(raw) == 28
    assert [_u(raw, o, 4) for o in (0, 4, 8, 12)] == [0x6B3343CF, 0x11, 0x22, 0x33]
    assert list(raw[16:21]) == [1, 2, 3, 4, 5] and raw[21:24] == bytes(3)  # reserved[3]
    assert _u(raw, 24, 4) == 0x44                                       # keepalive_probe_interval
    assert Config.unpack(raw) == cfg
    assert Config.unpack(raw[:4]) == Config(version=0x6B3343CF)
    assert default_config() == Config(initial_smoothed_rtt=333_000)


def test_crypto_secret_layout():
    secret = bytes(range(48))
    raw = CryptoSecret(1, 3, 0x33, secret).pack()
    assert len(raw) == 56
    assert (raw[0], raw[1], raw[2:4], _u(raw, 4, 4), raw[8:]) == (1, 3, bytes(2), 0x33, secret)
    assert CryptoSecret.unpack(raw) == CryptoSecret(1, 3, 0x33, secret)
    assert CryptoSecret().secret == bytes(48)
    assert CryptoSecret.unpack(raw[:2]) == CryptoSecret(1, 3, 0, bytes(48))


def test_connection_id_info_event_option_max_data():
    raw = ConnectionIdInfo(1, 0x01020304, 0x05060708).pack()
    assert len(raw) == 12 and (raw[0], raw[1:4], _u(raw, 4, 4), _u(raw, 8, 4)) == (1, bytes(3), 0x01020304,
                                                                                   0x05060708)
    assert ConnectionIdInfo.unpack(raw) == ConnectionIdInfo(1, 0x01020304, 0x05060708)
    assert EventOption(5, 1).pack() == b"\x05\x01" and EventOption.unpack(b"\x05") == EventOption(5, 0)
    raw = StreamMaxData(-2, 1 << 40).pack()
    assert len(raw) == 16 and (_u(raw, 0, 8, True), _u(raw, 8, 8)) == (-2, 1 << 40)
    assert StreamMaxData.unpack(raw) == StreamMaxData(-2, 1 << 40)


def test_stream_update_layout():
    raw = StreamUpdate(-7, 4, 0x0A0B0C0D, 1 << 33).pack()
    assert len(raw) == 24
    assert (_u(raw, 0, 8, True), raw[8], raw[9:12], _u(raw, 12, 4), _u(raw, 16, 8)) == (
        -7, 4, bytes(3), 0x0A0B0C0D, 1 << 33)
    assert StreamUpdate.unpack(raw) == StreamUpdate(-7, 4, 0x0A0B0C0D, 1 << 33)


def test_connection_close_phrase():
    raw = ConnectionClose(0x1A, 0x1C, b"bye").pack()
    assert len(raw) == 72
    assert (_u(raw, 0, 4), raw[4], raw[5:8], raw[8:11], raw[11:]) == (0x1A, 0x1C, bytes(3), b"bye", bytes(61))
    assert ConnectionClose.unpack(raw) == ConnectionClose(0x1A, 0x1C, b"bye")
    # the phrase keeps its terminating NUL: at most 63 bytes of text
    long = ConnectionClose(1, 2, b"x" * 70).pack()
    assert long[8:71] == b"x" * 63 and long[71] == 0
    assert ConnectionClose.unpack(long).phrase == b"x" * 63
    assert ConnectionClose.unpack(_pad(b"\1\0\0\0\2\0\0\0a\0b")).phrase == b"a"  # up to the first NUL


def _pad(raw: bytes) -> bytes:
    return raw + bytes(72 - len(raw))


def test_event_pack_unpack():
    assert Event(3, b"\x01\x02").pack() == b"\x03\x01\x02"
    assert Event.unpack(b"\x03\x01\x02") == Event(3, b"\x01\x02")
    assert Event.unpack(bytearray(b"\x07")) == Event(7, b"")
    with pytest.raises(ValueError, match="^empty event$"):
        Event.unpack(b"")


@pytest.mark.parametrize("etype,payload,value", [
    (C.QUIC_EVENT_STREAM_UPDATE, StreamUpdate(4, 2, 9, 100).pack(), StreamUpdate(4, 2, 9, 100)),
    (C.QUIC_EVENT_STREAM_MAX_DATA, StreamMaxData(8, 4096).pack(), StreamMaxData(8, 4096)),
    (C.QUIC_EVENT_STREAM_MAX_STREAM, struct.pack("<Q", (1 << 40) + 3), (1 << 40) + 3),
    (C.QUIC_EVENT_STREAM_MAX_STREAM, b"\x05", 5),
    (C.QUIC_EVENT_STREAM_MAX_STREAM, struct.pack("<Q", 1 << 63), 1 << 63),  # a __u64
    (C.QUIC_EVENT_CONNECTION_ID, ConnectionIdInfo(0, 3, 2).pack(), ConnectionIdInfo(0, 3, 2)),
    (C.QUIC_EVENT_CONNECTION_CLOSE, ConnectionClose(1, 2, b"why").pack(), ConnectionClose(1, 2, b"why")),
    (C.QUIC_EVENT_CONNECTION_MIGRATION, b"\x01\x09", 1),
    (C.QUIC_EVENT_CONNECTION_MIGRATION, b"", 0),
    (C.QUIC_EVENT_KEY_UPDATE, b"\x02", 2),
    (C.QUIC_EVENT_KEY_UPDATE, b"", 0),
    (C.QUIC_EVENT_NEW_TOKEN, b"token", b"token"),
    (C.QUIC_EVENT_NEW_SESSION_TICKET, b"\x00ticket", b"\x00ticket"),
])
def test_event_values(etype, payload, value):
    assert Event(etype, payload).value() == value


def test_stream_info_cmsg():
    level, kind, data = stream_info_cmsg(8, 0x4)
    assert (level, kind) == (C.SOL_QUIC, C.QUIC_STREAM_INFO)
    assert StreamInfo.unpack(data) == StreamInfo(8, 4)
    assert stream_info_cmsg(2)[2] == StreamInfo(2, 0).pack()
    assert STREAM_INFO_SPACE == socket.CMSG_SPACE(16)


def test_sockaddr_round_trip():
    v4 = sockaddr_in("127.0.0.12", 0x1F90)
    assert len(v4) == 16
    assert v4[:2] == struct.pack("<H", socket.AF_INET) and v4[2:4] == b"\x1f\x90"
    assert v4[4:8] == bytes([127, 0, 0, 12]) and v4[8:] == bytes(8)
    assert parse_sockaddr(v4) == (socket.AF_INET, "127.0.0.12", 0x1F90)
    v6 = sockaddr_in("fd00::5357:5f0c", 443, socket.AF_INET6)
    assert len(v6) == 28
    assert v6[:2] == struct.pack("<H", socket.AF_INET6) and v6[2:4] == b"\x01\xbb"
    assert v6[4:8] == bytes(4) and v6[8:24] == socket.inet_pton(socket.AF_INET6, "fd00::5357:5f0c")
    assert v6[24:] == bytes(4)
    assert parse_sockaddr(v6) == (socket.AF_INET6, "fd00::5357:5f0c", 443)


def test_parse_sockaddr_refuses_short_and_foreign():
    v4 = sockaddr_in("10.53.57.1", 1)
    v6 = sockaddr_in("::1", 2, socket.AF_INET6)
    assert parse_sockaddr(b"") is None and parse_sockaddr(b"\x02") is None
    assert parse_sockaddr(v4[:15]) is None and parse_sockaddr(v4[:16]) == (socket.AF_INET, "10.53.57.1", 1)
    assert parse_sockaddr(v6[:27]) is None and parse_sockaddr(v6[:28]) == (socket.AF_INET6, "::1", 2)
    assert parse_sockaddr(struct.pack("<H", socket.AF_UNIX) + bytes(30)) is None


def test_ports_are_unsigned_16_bit():
    """Ports above 32767 (the autobind range reaches 60000) in network byte order, both families."""
    v4 = sockaddr_in("127.0.0.1", 50000)
    assert v4[2:4] == (50000).to_bytes(2, "big") and parse_sockaddr(v4)[2] == 50000
    v6 = sockaddr_in("::1", 65535, socket.AF_INET6)
    assert v6[2:4] == b"\xff\xff" and parse_sockaddr(v6)[2] == 65535
