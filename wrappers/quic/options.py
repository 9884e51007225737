"""setsockopt/getsockopt of the QUIC socket, with quic.ko's checks in quic.ko's order (lxin/quic main at 03a9c7c).

``QuicOptionsMixin`` is part of ``QuicSocket``'s class hierarchy, as ``wrappers/sockopts.py`` is of
the emulated TCP/UDP socket: the option code works on the socket's own state (``self``). SOL_QUIC
options take and return raw bytes, so the struct layouts stay in ``uapi.py`` and the Python calls
mirror the C ones:

    s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_EVENT, EventOption(QUIC_EVENT_STREAM_UPDATE, 1).pack())
    info = StreamInfo.unpack(s.getsockopt(SOL_QUIC, QUIC_SOCKOPT_STREAM_OPEN, StreamInfo(-1, 0).pack()))

Python's getsockopt passes only a length; for the options that read their argument (EVENT,
STREAM_OPEN, CONNECTION_ID, TRANSPORT_PARAM) pass the input struct's bytes in place of the length.
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any

from . import constants as C
from . import raw, uapi
from .core import Connection, err
from .sockparts import QuicSocketParts

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


class QuicOptionsMixin(QuicSocketParts):
    """The option calls of QuicSocket (sock.py); self is the socket."""

    def setsockopt(self, level: int, optname: int, value: Any, optlen: int | None = None) -> None:  # type: ignore[override]
        if level == C.SOL_QUIC:
            if value is None:
                data = b""
            elif isinstance(value, int):
                data = value.to_bytes(4, "little", signed=True)
            else:
                data = bytes(value)
            if optlen is not None and value is not None:
                data = data[:optlen]
            self._set_quic_option(optname, data)
            return
        if level == socket.SOL_SOCKET and optname == socket.SO_RCVTIMEO:
            self._timeout = timeval(bytes(value))
            return
        if level == socket.SOL_SOCKET and optname == socket.SO_SNDTIMEO:
            self._sndtimeo = timeval(bytes(value))
            return
        if level == socket.SOL_SOCKET:
            return  # SO_REUSEPORT, buffers, ...: accepted
        if (level, optname) == (socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) and self._qfamily == socket.AF_INET6:
            if self._local is not None:  # it decides the names a bind takes: not after bind (Linux)
                raise err(errno.EINVAL, "IPV6_V6ONLY after bind")
            self._v6only = bool(int.from_bytes(bytes(value)[:4], "little") if not isinstance(value, int) else value)
            return
        raise err(errno.ENOPROTOOPT)

    def getsockopt(self, level: int, optname: int, buflen: Any = None) -> Any:  # type: ignore[override]
        if level == C.SOL_QUIC:
            if isinstance(buflen, (bytes, bytearray, memoryview)):
                arg = bytes(buflen)
                optlen = len(arg)
            else:
                arg = b""
                optlen = 4096 if buflen is None else int(buflen)
            return self._get_quic_option(optname, arg, optlen)
        if level == socket.SOL_SOCKET:
            if optname == socket.SO_TYPE:
                return self._qtype
            if optname == socket.SO_PROTOCOL:
                return C.IPPROTO_QUIC
            if optname == socket.SO_DOMAIN:
                return self._qfamily
            if optname == socket.SO_ERROR:
                return 0
        if (level, optname) == (socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) and self._qfamily == socket.AF_INET6:
            return int(self._v6only) if buflen is None else int(self._v6only).to_bytes(4, "little")[:int(buflen)]
        if buflen is None:
            return 0
        return bytes(int(buflen))

    def _set_quic_option(self, opt: int, v: bytes) -> None:
        if len(v) > C.MAX_OPTLEN:
            raise err(errno.EINVAL, "optlen > 4096")
        if opt not in C.SET_OPTIONS:
            raise err(errno.ENOPROTOOPT, f"SOL_QUIC option {opt} cannot be set")
        state = self.quic_state
        conn = self._conn
        est = state == C.ESTABLISHED
        if opt == C.QUIC_SOCKOPT_EVENT:
            ev = uapi.EventOption.unpack(v)
            if not 1 <= ev.type < C.QUIC_EVENT_MAX:
                raise err(errno.EINVAL, f"event type {ev.type}")
            (self._opts.events.add if ev.on else self._opts.events.discard)(ev.type)
        elif opt == C.QUIC_SOCKOPT_STREAM_RESET:
            self._engine_call(lambda: _need(conn).stream_reset(uapi.ErrInfo.unpack(v)))
        elif opt == C.QUIC_SOCKOPT_STREAM_STOP_SENDING:
            self._engine_call(lambda: _need(conn).stop_sending(uapi.ErrInfo.unpack(v)))
        elif opt == C.QUIC_SOCKOPT_CONNECTION_ID:
            if not est:
                raise err(errno.EINVAL, "not established")
            event = self._cids.set(uapi.ConnectionIdInfo.unpack(v))
            if event is not None:
                self._local_event(C.QUIC_EVENT_CONNECTION_ID, event)
        elif opt == C.QUIC_SOCKOPT_CONNECTION_CLOSE:
            cc = uapi.ConnectionClose.unpack(v)
            self._opts.close_errcode = cc.errcode
            self._opts.close_phrase = cc.phrase[:63]
        elif opt == C.QUIC_SOCKOPT_CONNECTION_MIGRATION:
            if state in (C.CLOSED, C.LISTENING):
                raise err(errno.EPIPE)
            a = uapi.parse_sockaddr(v)
            if a is None or a[2] == 0 or a[0] != self.family and est:
                raise err(errno.EINVAL, "bad migration address")
            if est and (a[1], a[2]) == tuple(self.getsockname()[:2]):
                raise err(errno.EINVAL, "migration to the current address")
            if not est and self._is_client:
                raise err(errno.EINVAL, "a client sets no preferred address")
            if not est:
                self._set_preferred((a[1], a[2]))
                return
            self._migrate((a[1], a[2]))
        elif opt == C.QUIC_SOCKOPT_KEY_UPDATE:
            if not est:
                raise err(errno.EPIPE)
            self._engine_call(lambda: _need(conn).key_update())
        elif opt == C.QUIC_SOCKOPT_TRANSPORT_PARAM:
            tp = uapi.TransportParam.unpack(v)
            if tp.remote:
                if state != C.ESTABLISHING:
                    raise err(errno.EINVAL, "remote transport parameters outside ESTABLISHING")
                self._remote_tp = tp
                return
            if est:
                raise err(errno.EINVAL, "transport parameters after the handshake")
            _check(tp, TP_RANGES)
            _merge(self._opts.tp, tp, uapi.TP_FIELDS[1:])
        elif opt == C.QUIC_SOCKOPT_CONFIG:
            if est:
                raise err(errno.EINVAL, "config after the handshake")
            cfg = uapi.Config.unpack(v)
            _check(cfg, CFG_RANGES)
            _merge(self._opts.cfg, cfg, uapi.CFG_FIELDS)
        elif opt == C.QUIC_SOCKOPT_TOKEN:
            if self._is_client is False:
                if not est:
                    raise err(errno.EINVAL, "server token before the handshake")
                self._engine_call(lambda: _need(conn).new_token())
                return
            if not 1 <= len(v) <= 120:
                raise err(errno.EINVAL, "token length must be 1..120")
            self._opts.token = bytes(v)
        elif opt == C.QUIC_SOCKOPT_ALPN:
            if state == C.LISTENING:
                raise err(errno.EINVAL, "set ALPN before listen()")
            text = bytes(v).split(b"\0", 1)[0]
            if not text or len(text) > C.QUIC_ALPN_MAX_LEN:
                raise err(errno.EINVAL, "ALPN length")
            entries = [e.lstrip(b" ") for e in text.split(b",")]
            if any(len(e) > 255 or not e for e in entries):
                raise err(errno.EINVAL, "ALPN entry length")
            self._opts.alpn = [e.decode() for e in entries]
        elif opt == C.QUIC_SOCKOPT_SESSION_TICKET:
            if not 64 <= len(v) <= 4096:
                raise err(errno.EINVAL, "session ticket length must be 64..4096")
            self._opts.ticket = bytes(v)
        elif opt == C.QUIC_SOCKOPT_CRYPTO_SECRET:
            raw.set_crypto_secret(self, v)  # type: ignore[arg-type]
        elif opt == C.QUIC_SOCKOPT_TRANSPORT_PARAM_EXT:
            raw.set_transport_param_ext(self, v)  # type: ignore[arg-type]

    def _get_quic_option(self, opt: int, arg: bytes, optlen: int) -> bytes:
        if opt not in C.GET_OPTIONS:
            raise err(errno.ENOPROTOOPT, f"SOL_QUIC option {opt} cannot be read")
        state = self.quic_state
        conn = self._conn
        if opt == C.QUIC_SOCKOPT_EVENT:
            ev = uapi.EventOption.unpack(arg)
            if not 1 <= ev.type < C.QUIC_EVENT_MAX:
                raise err(errno.EINVAL, f"event type {ev.type}")
            return _fit(uapi.EventOption(ev.type, int(ev.type in self._opts.events)).pack(), optlen)
        if opt == C.QUIC_SOCKOPT_STREAM_OPEN:
            info = uapi.StreamInfo.unpack(arg)
            sid = self._stream_open(info)
            return _fit(uapi.StreamInfo(sid, info.stream_flags).pack(), optlen)
        if opt == C.QUIC_SOCKOPT_CONNECTION_ID:
            if state != C.ESTABLISHED:
                raise err(errno.EINVAL, "not established")
            dest = uapi.ConnectionIdInfo.unpack(arg).dest
            active, prior = self._cids.get(dest)
            return _fit(uapi.ConnectionIdInfo(dest, active, prior).pack(), optlen)
        if opt == C.QUIC_SOCKOPT_CONNECTION_CLOSE:
            cc = conn.peer_close if conn is not None and conn.peer_close is not None else uapi.ConnectionClose(
                self._opts.close_errcode, 0, self._opts.close_phrase)
            return _fit(cc.pack(), optlen)
        if opt == C.QUIC_SOCKOPT_TRANSPORT_PARAM:
            want = uapi.TransportParam.unpack(arg)
            if want.remote:
                return _fit(self._peer_tp().pack(), optlen)
            return _fit(self._opts.tp.pack(), optlen)
        if opt == C.QUIC_SOCKOPT_CONFIG:
            return _fit(self._opts.cfg.pack(), optlen)
        if opt == C.QUIC_SOCKOPT_TOKEN:
            if self._is_client is False or state == C.LISTENING:
                raise err(errno.EINVAL, "TOKEN is client-only")
            tok = self._opts.token
            if optlen < len(tok):
                raise err(errno.EINVAL, "buffer too small")
            return tok
        if opt == C.QUIC_SOCKOPT_ALPN:
            text = ",".join(self._opts.alpn).encode()
            if self._opts.alpn and optlen < len(text) + 1:
                raise err(errno.EINVAL, "buffer too small")
            return text
        if opt == C.QUIC_SOCKOPT_SESSION_TICKET:
            if state == C.LISTENING or (self._is_client is False and state == C.CLOSED):
                raise err(errno.EPIPE)
            if self._is_client is False:
                data = self._ticket_key()
            elif state == C.ESTABLISHED and conn is not None:
                data = conn.ticket or b""
            else:
                data = self._opts.ticket
            if optlen < len(data):
                raise err(errno.EINVAL, "buffer too small")
            return data
        if opt == C.QUIC_SOCKOPT_TRANSPORT_PARAM_EXT:
            return raw.get_transport_param_ext(self, optlen)  # type: ignore[arg-type]
        raise err(errno.ENOPROTOOPT)


def _need(conn: Connection | None) -> Connection:
    if conn is None:
        raise err(errno.EINVAL, "not connected")
    return conn


def _fit(data: bytes, optlen: int) -> bytes:
    return data[:optlen]


def timeval(value: bytes) -> float | None:
    sec, usec = struct.unpack("<qq", value[:16].ljust(16, b"\0"))
    t = sec + usec / 1e6
    return None if t == 0 else t
