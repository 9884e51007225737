"""Pack and unpack the UAPI structs of ``linux/quic.h`` (LP64 layouts, lxin/quic main at 03a9c7c).

Each struct is a small dataclass with ``pack()`` and ``unpack(buf)``. ``unpack`` follows the kernel's
setsockopt rule: it copies ``min(len(buf), size)`` bytes into a zeroed struct, so short values are
accepted and missing fields read as 0. Tests and applications use these exactly as C code fills a
struct and passes ``sizeof``.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

from . import constants as C


def _fill(buf: bytes | bytearray | memoryview | None, size: int) -> bytes:
    raw = bytes(buf or b"")[:size]
    return raw + bytes(size - len(raw))


@dataclass
class StreamInfo:
    stream_id: int = 0
    stream_flags: int = 0
    FMT = struct.Struct("<qI4x")

    def pack(self) -> bytes:
        return self.FMT.pack(self.stream_id, self.stream_flags & 0xFFFFFFFF)

    @classmethod
    def unpack(cls, buf: bytes | None) -> StreamInfo:
        return cls(*cls.FMT.unpack(_fill(buf, cls.FMT.size)))


@dataclass
class TransportParam:
    remote: int = 0
    disable_active_migration: int = 0
    grease_quic_bit: int = 0
    stateless_reset: int = 0
    disable_1rtt_encryption: int = 0
    disable_compatible_version: int = 0
    active_connection_id_limit: int = 0
    ack_delay_exponent: int = 0
    max_datagram_frame_size: int = 0
    max_udp_payload_size: int = 0
    max_idle_timeout: int = 0
    max_ack_delay: int = 0
    max_streams_bidi: int = 0
    max_streams_uni: int = 0
    max_data: int = 0
    max_stream_data_bidi_local: int = 0
    max_stream_data_bidi_remote: int = 0
    max_stream_data_uni: int = 0
    FMT = struct.Struct("<8BHHIIHHQQQQ")

    def pack(self) -> bytes:
        return self.FMT.pack(*(getattr(self, f) for f in TP_FIELDS))

    @classmethod
    def unpack(cls, buf: bytes | None) -> TransportParam:
        return cls(*cls.FMT.unpack(_fill(buf, cls.FMT.size)))


TP_FIELDS = [f for f in TransportParam.__dataclass_fields__ if f != "FMT"]


def default_transport_param() -> TransportParam:
    """quic.ko's local defaults (the kernel code's values, where its man page differs)."""
    return TransportParam(
        active_connection_id_limit=7, ack_delay_exponent=3, max_udp_payload_size=65527,
        max_idle_timeout=30_000_000, max_ack_delay=25_000, max_streams_bidi=100, max_streams_uni=100,
        max_data=65535 * 32, max_stream_data_bidi_local=65535 * 16, max_stream_data_bidi_remote=65535 * 16,
        max_stream_data_uni=65535 * 16,
    )


@dataclass
class Config:
    version: int = 0
    plpmtud_probe_interval: int = 0
    initial_smoothed_rtt: int = 0
    payload_cipher_type: int = 0
    congestion_control_algo: int = 0
    validate_peer_address: int = 0
    stream_data_nodelay: int = 0
    receive_session_ticket: int = 0
    certificate_request: int = 0
    keepalive_probe_interval: int = 0
    FMT = struct.Struct("<IIII5B3xI")

    def pack(self) -> bytes:
        return self.FMT.pack(*(getattr(self, f) for f in CFG_FIELDS))

    @classmethod
    def unpack(cls, buf: bytes | None) -> Config:
        return cls(*cls.FMT.unpack(_fill(buf, cls.FMT.size)))


CFG_FIELDS = [f for f in Config.__dataclass_fields__ if f != "FMT"]


def default_config() -> Config:
    return Config(initial_smoothed_rtt=333_000)


@dataclass
class CryptoSecret:
    send: int = 0
    level: int = 0
    type: int = 0
    secret: bytes = bytes(48)
    FMT = struct.Struct("<BBxxI48s")

    def pack(self) -> bytes:
        return self.FMT.pack(self.send, self.level, self.type, self.secret)

    @classmethod
    def unpack(cls, buf: bytes | None) -> CryptoSecret:
        return cls(*cls.FMT.unpack(_fill(buf, cls.FMT.size)))


@dataclass
class ErrInfo:
    stream_id: int = 0
    errcode: int = 0
    FMT = struct.Struct("<qI4x")

    def pack(self) -> bytes:
        return self.FMT.pack(self.stream_id, self.errcode)

    @classmethod
    def unpack(cls, buf: bytes | None) -> ErrInfo:
        return cls(*cls.FMT.unpack(_fill(buf, cls.FMT.size)))


@dataclass
class ConnectionIdInfo:
    dest: int = 0
    active: int = 0
    prior_to: int = 0
    FMT = struct.Struct("<B3xII")

    def pack(self) -> bytes:
        return self.FMT.pack(self.dest, self.active, self.prior_to)

    @classmethod
    def unpack(cls, buf: bytes | None) -> ConnectionIdInfo:
        return cls(*cls.FMT.unpack(_fill(buf, cls.FMT.size)))


@dataclass
class EventOption:
    type: int = 0
    on: int = 0
    FMT = struct.Struct("<BB")

    def pack(self) -> bytes:
        return self.FMT.pack(self.type, self.on)

    @classmethod
    def unpack(cls, buf: bytes | None) -> EventOption:
        return cls(*cls.FMT.unpack(_fill(buf, cls.FMT.size)))


@dataclass
class ConnectionClose:
    errcode: int = 0
    frame: int = 0
    phrase: bytes = b""
    FMT = struct.Struct("<IB3x64s")

    def pack(self) -> bytes:
        return self.FMT.pack(self.errcode, self.frame, self.phrase[:63])

    @classmethod
    def unpack(cls, buf: bytes | None) -> ConnectionClose:
        err, frame, phrase = cls.FMT.unpack(_fill(buf, cls.FMT.size))
        return cls(err, frame, phrase.split(b"\0", 1)[0])


@dataclass
class StreamUpdate:
    id: int = 0
    state: int = 0
    errcode: int = 0
    finalsz: int = 0
    FMT = struct.Struct("<qB3xIQ")

    def pack(self) -> bytes:
        return self.FMT.pack(self.id, self.state, self.errcode, self.finalsz)

    @classmethod
    def unpack(cls, buf: bytes | None) -> StreamUpdate:
        return cls(*cls.FMT.unpack(_fill(buf, cls.FMT.size)))


@dataclass
class StreamMaxData:
    id: int = 0
    max_data: int = 0
    FMT = struct.Struct("<qQ")

    def pack(self) -> bytes:
        return self.FMT.pack(self.id, self.max_data)

    @classmethod
    def unpack(cls, buf: bytes | None) -> StreamMaxData:
        return cls(*cls.FMT.unpack(_fill(buf, cls.FMT.size)))


@dataclass
class Event:
    """One notification as recvmsg returns it: the type byte, then the member's bytes."""

    type: int
    payload: bytes = field(default=b"")

    def pack(self) -> bytes:
        return bytes([self.type]) + self.payload

    @classmethod
    def unpack(cls, buf: bytes) -> Event:
        if not buf:
            raise ValueError("empty event")
        return cls(buf[0], bytes(buf[1:]))

    def value(self) -> object:
        """The decoded member: StreamUpdate, StreamMaxData, int, ConnectionIdInfo, ConnectionClose, bytes."""
        t, p = self.type, self.payload
        if t == C.QUIC_EVENT_STREAM_UPDATE:
            return StreamUpdate.unpack(p)
        if t == C.QUIC_EVENT_STREAM_MAX_DATA:
            return StreamMaxData.unpack(p)
        if t == C.QUIC_EVENT_STREAM_MAX_STREAM:
            return struct.unpack("<Q", _fill(p, 8))[0]
        if t == C.QUIC_EVENT_CONNECTION_ID:
            return ConnectionIdInfo.unpack(p)
        if t == C.QUIC_EVENT_CONNECTION_CLOSE:
            return ConnectionClose.unpack(p)
        if t in (C.QUIC_EVENT_CONNECTION_MIGRATION, C.QUIC_EVENT_KEY_UPDATE):
            return p[0] if p else 0
        return p


def stream_info_cmsg(stream_id: int, flags: int = 0) -> tuple[int, int, bytes]:
    """The ancillary-data item sendmsg takes: ``(SOL_QUIC, QUIC_STREAM_INFO, struct quic_stream_info)``."""
    return (C.SOL_QUIC, C.QUIC_STREAM_INFO, StreamInfo(stream_id, flags).pack())


STREAM_INFO_SPACE = socket.CMSG_SPACE(StreamInfo.FMT.size)
"""ancbufsize for recvmsg so the stream-info cmsg fits."""


def sockaddr_in(host: str, port: int, family: int = socket.AF_INET) -> bytes:
    """struct sockaddr_in / sockaddr_in6 bytes (for CONNECTION_MIGRATION)."""
    if family == socket.AF_INET6:
        return struct.pack("<H", socket.AF_INET6) + struct.pack(">HI", port, 0) + socket.inet_pton(
            socket.AF_INET6, host) + bytes(4)
    return struct.pack("<H", socket.AF_INET) + struct.pack(">H", port) + socket.inet_aton(host) + bytes(8)


def parse_sockaddr(buf: bytes) -> tuple[int, str, int] | None:
    """(family, host, port) of a struct sockaddr_in/in6, None when short or of another family."""
    if len(buf) < 2:
        return None
    fam = struct.unpack("<H", buf[:2])[0]
    if fam == socket.AF_INET and len(buf) >= 16:
        return fam, socket.inet_ntoa(buf[4:8]), struct.unpack(">H", buf[2:4])[0]
    if fam == socket.AF_INET6 and len(buf) >= 28:
        return fam, socket.inet_ntop(socket.AF_INET6, buf[8:24]), struct.unpack(">H", buf[2:4])[0]
    return None
