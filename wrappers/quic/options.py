"""setsockopt/getsockopt at level SOL_QUIC, with quic.ko's checks in quic.ko's order (specs section 4).

Functions take the socket (``sock.QuicSocket``) and raw option bytes, and return raw bytes, so the
struct layouts stay in ``uapi.py`` and the Python calls mirror the C ones:

    s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_EVENT, EventOption(QUIC_EVENT_STREAM_UPDATE, 1).pack())
    info = StreamInfo.unpack(s.getsockopt(SOL_QUIC, QUIC_SOCKOPT_STREAM_OPEN, StreamInfo(-1, 0).pack()))

Python's getsockopt passes only a length; for the options that read their argument (EVENT,
STREAM_OPEN, CONNECTION_ID, TRANSPORT_PARAM) pass the input struct's bytes in place of the length.
"""

from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING

from . import constants as C
from . import uapi
from .core import Connection, err

if TYPE_CHECKING:
    from .sock import QuicSocket

TP_RANGES = {
    "active_connection_id_limit": (2, 8), "ack_delay_exponent": (0, 20), "max_datagram_frame_size": (1200, 0xFFFF),
    "max_udp_payload_size": (1200, 65527), "max_idle_timeout": (1_000_000, 0xFFFFFFFF),
    "max_ack_delay": (0, 16_383_999), "max_streams_bidi": (0, C.MAX_STREAMS_LOCAL),
    "max_streams_uni": (0, C.MAX_STREAMS_LOCAL), "max_data": (1200, 536_870_911),
    "max_stream_data_bidi_local": (1200, 268_435_455), "max_stream_data_bidi_remote": (1200, 268_435_455),
    "max_stream_data_uni": (1200, 268_435_455),
}
CFG_RANGES = {
    "plpmtud_probe_interval": (5_000_000, 0xFFFFFFFF // 30), "initial_smoothed_rtt": (1000, 6_000_000),
    "payload_cipher_type": (51, 54), "congestion_control_algo": (0, C.QUIC_CONG_ALG_MAX - 1),
    "keepalive_probe_interval": (1_500_000, 0xFFFFFFFF),
}


def _check(value: object, ranges: dict[str, tuple[int, int]]) -> None:
    for name, (lo, hi) in ranges.items():
        v = getattr(value, name)
        if v and not lo <= v <= hi:
            raise err(errno.EINVAL, f"{name}={v} is outside {lo}..{hi}")


def _merge(dst: object, src: object, fields: list[str]) -> None:
    for f in fields:
        v = getattr(src, f)
        if v:
            setattr(dst, f, v)


def setopt(s: QuicSocket, opt: int, v: bytes) -> None:
    if len(v) > C.MAX_OPTLEN:
        raise err(errno.EINVAL, "optlen > 4096")
    if opt not in C.SET_OPTIONS:
        raise err(errno.ENOPROTOOPT, f"SOL_QUIC option {opt} cannot be set")
    state = s.quic_state
    conn = s._conn
    est = state == C.ESTABLISHED
    if opt == C.QUIC_SOCKOPT_EVENT:
        ev = uapi.EventOption.unpack(v)
        if not 1 <= ev.type < C.QUIC_EVENT_MAX:
            raise err(errno.EINVAL, f"event type {ev.type}")
        (s._opts.events.add if ev.on else s._opts.events.discard)(ev.type)
    elif opt == C.QUIC_SOCKOPT_STREAM_RESET:
        s._engine_call(lambda: _need(conn).stream_reset(uapi.ErrInfo.unpack(v)))
    elif opt == C.QUIC_SOCKOPT_STREAM_STOP_SENDING:
        s._engine_call(lambda: _need(conn).stop_sending(uapi.ErrInfo.unpack(v)))
    elif opt == C.QUIC_SOCKOPT_CONNECTION_ID:
        if not est:
            raise err(errno.EINVAL, "not established")
        s._cids.set(uapi.ConnectionIdInfo.unpack(v), s)
    elif opt == C.QUIC_SOCKOPT_CONNECTION_CLOSE:
        cc = uapi.ConnectionClose.unpack(v)
        s._opts.close_errcode = cc.errcode
        s._opts.close_phrase = cc.phrase[:63]
    elif opt == C.QUIC_SOCKOPT_CONNECTION_MIGRATION:
        if state in (C.CLOSED, C.LISTENING):
            raise err(errno.EPIPE)
        a = uapi.parse_sockaddr(v)
        if a is None or a[2] == 0 or a[0] != s.family and est:
            raise err(errno.EINVAL, "bad migration address")
        if est and (a[1], a[2]) == tuple(s.getsockname()[:2]):
            raise err(errno.EINVAL, "migration to the current address")
        if not est and s._is_client:
            raise err(errno.EINVAL, "a client sets no preferred address")
        if not est:
            s._set_preferred((a[1], a[2]))
            return
        s._migrate((a[1], a[2]))
    elif opt == C.QUIC_SOCKOPT_KEY_UPDATE:
        if not est:
            raise err(errno.EPIPE)
        s._engine_call(lambda: _need(conn).key_update())
    elif opt == C.QUIC_SOCKOPT_TRANSPORT_PARAM:
        tp = uapi.TransportParam.unpack(v)
        if tp.remote:
            if state != C.ESTABLISHING:
                raise err(errno.EINVAL, "remote transport parameters outside ESTABLISHING")
            s._remote_tp = tp
            return
        if est:
            raise err(errno.EINVAL, "transport parameters after the handshake")
        _check(tp, TP_RANGES)
        _merge(s._opts.tp, tp, uapi._TP_FIELDS[1:])
    elif opt == C.QUIC_SOCKOPT_CONFIG:
        if est:
            raise err(errno.EINVAL, "config after the handshake")
        cfg = uapi.Config.unpack(v)
        _check(cfg, CFG_RANGES)
        _merge(s._opts.cfg, cfg, uapi._CFG_FIELDS)
    elif opt == C.QUIC_SOCKOPT_TOKEN:
        if s._is_client is False:
            if not est:
                raise err(errno.EINVAL, "server token before the handshake")
            s._engine_call(lambda: _need(conn).new_token())
            return
        if not 1 <= len(v) <= 120:
            raise err(errno.EINVAL, "token length must be 1..120")
        s._opts.token = bytes(v)
    elif opt == C.QUIC_SOCKOPT_ALPN:
        if state == C.LISTENING:
            raise err(errno.EINVAL, "set ALPN before listen()")
        text = bytes(v).split(b"\0", 1)[0]
        if not text or len(text) > C.QUIC_ALPN_MAX_LEN:
            raise err(errno.EINVAL, "ALPN length")
        entries = [e.lstrip(b" ") for e in text.split(b",")]
        if any(len(e) > 255 or not e for e in entries):
            raise err(errno.EINVAL, "ALPN entry length")
        s._opts.alpn = [e.decode() for e in entries]
    elif opt == C.QUIC_SOCKOPT_SESSION_TICKET:
        if not 64 <= len(v) <= 4096:
            raise err(errno.EINVAL, "session ticket length must be 64..4096")
        s._opts.ticket = bytes(v)
    elif opt == C.QUIC_SOCKOPT_CRYPTO_SECRET:
        from . import raw

        raw.set_crypto_secret(s, v)
    elif opt == C.QUIC_SOCKOPT_TRANSPORT_PARAM_EXT:
        from . import raw

        raw.set_transport_param_ext(s, v)


def _need(conn: Connection | None) -> Connection:
    if conn is None:
        raise err(errno.EINVAL, "not connected")
    return conn


def _fit(data: bytes, optlen: int) -> bytes:
    return data[:optlen]


def getopt(s: QuicSocket, opt: int, arg: bytes, optlen: int) -> bytes:
    if opt not in C.GET_OPTIONS:
        raise err(errno.ENOPROTOOPT, f"SOL_QUIC option {opt} cannot be read")
    state = s.quic_state
    conn = s._conn
    if opt == C.QUIC_SOCKOPT_EVENT:
        ev = uapi.EventOption.unpack(arg)
        if not 1 <= ev.type < C.QUIC_EVENT_MAX:
            raise err(errno.EINVAL, f"event type {ev.type}")
        return _fit(uapi.EventOption(ev.type, int(ev.type in s._opts.events)).pack(), optlen)
    if opt == C.QUIC_SOCKOPT_STREAM_OPEN:
        info = uapi.StreamInfo.unpack(arg)
        sid = s._stream_open(info)
        return _fit(uapi.StreamInfo(sid, info.stream_flags).pack(), optlen)
    if opt == C.QUIC_SOCKOPT_CONNECTION_ID:
        if state != C.ESTABLISHED:
            raise err(errno.EINVAL, "not established")
        dest = uapi.ConnectionIdInfo.unpack(arg).dest
        active, prior = s._cids.get(dest)
        return _fit(uapi.ConnectionIdInfo(dest, active, prior).pack(), optlen)
    if opt == C.QUIC_SOCKOPT_CONNECTION_CLOSE:
        cc = conn.peer_close if conn is not None and conn.peer_close is not None else uapi.ConnectionClose(
            s._opts.close_errcode, 0, s._opts.close_phrase)
        return _fit(cc.pack(), optlen)
    if opt == C.QUIC_SOCKOPT_TRANSPORT_PARAM:
        want = uapi.TransportParam.unpack(arg)
        if want.remote:
            return _fit(s._peer_tp().pack(), optlen)
        return _fit(s._opts.tp.pack(), optlen)
    if opt == C.QUIC_SOCKOPT_CONFIG:
        return _fit(s._opts.cfg.pack(), optlen)
    if opt == C.QUIC_SOCKOPT_TOKEN:
        if s._is_client is False or state == C.LISTENING:
            raise err(errno.EINVAL, "TOKEN is client-only")
        tok = s._opts.token
        if optlen < len(tok):
            raise err(errno.EINVAL, "buffer too small")
        return tok
    if opt == C.QUIC_SOCKOPT_ALPN:
        text = ",".join(s._opts.alpn).encode()
        if s._opts.alpn and optlen < len(text) + 1:
            raise err(errno.EINVAL, "buffer too small")
        return text
    if opt == C.QUIC_SOCKOPT_SESSION_TICKET:
        if state == C.LISTENING or (s._is_client is False and state == C.CLOSED):
            raise err(errno.EPIPE)
        if s._is_client is False:
            data = s._ticket_key()
        elif state == C.ESTABLISHED and conn is not None:
            data = conn.ticket or b""
        else:
            data = s._opts.ticket
        if optlen < len(data):
            raise err(errno.EINVAL, "buffer too small")
        return data
    if opt == C.QUIC_SOCKOPT_TRANSPORT_PARAM_EXT:
        from . import raw

        return raw.get_transport_param_ext(s, optlen)
    raise err(errno.ENOPROTOOPT)


class ConnectionIds:
    """quic.ko's view of the source (0) and destination (1) connection-ID sets: sequence numbers only.

    The live range is prior_to .. prior_to + limit - 1 (new IDs are issued as old ones retire).
    aioquic issues and retires the IDs on the wire by its own rules; these numbers are what the
    CONNECTION_ID option reports and checks (specs section 4.5).
    """

    def __init__(self, limit: int = 7):
        self.limit = limit
        self.sets = {0: [0, 0], 1: [0, 0]}  # dest -> [active, prior_to]

    def get(self, dest: int) -> tuple[int, int]:
        a, p = self.sets[1 if dest else 0]
        return a, p

    def set(self, info: uapi.ConnectionIdInfo, s: QuicSocket) -> None:
        cur = self.sets[1 if info.dest else 0]
        active, prior = cur
        first, last = prior, prior + self.limit - 1
        if info.prior_to and not first < info.prior_to <= last:
            raise err(errno.EINVAL, f"prior_to {info.prior_to} outside {first + 1}..{last}")
        if info.active and not (active < info.active <= last and info.active >= max(prior, info.prior_to)):
            raise err(errno.EINVAL, f"active {info.active} is not a live ID above {active}")
        new_prior = info.prior_to or prior
        new_active = info.active or active
        if new_active < new_prior:
            new_active = new_prior
        cur[:] = [new_active, new_prior]
        if info.prior_to:
            s._local_event(C.QUIC_EVENT_CONNECTION_ID, uapi.ConnectionIdInfo(
                1 if info.dest else 0, new_active, new_prior).pack())


def timeval(value: bytes) -> float | None:
    sec, usec = struct.unpack("<qq", value[:16].ljust(16, b"\0"))
    t = sec + usec / 1e6
    return None if t == 0 else t
