"""What the engine and a QuicSocket exchange: receive-queue items, per-socket options, stream records.

The leaf below core.py (the connection state) and the socket classes: the item layout on the socket
pair (kind, flags, stream id, then the payload), the errno helper every layer raises with, the
``Blocked`` signal for a call that has to wait, the options a listener hands to the sockets it
accepts, and quic.ko's view of one stream.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

from . import constants as C
from . import uapi

ITEM = struct.Struct("<BxxxIq")
K_DATA, K_EVENT, K_DGRAM, K_WAKE, K_ACCEPT, K_PURGE = 1, 2, 3, 4, 5, 6
K_HS = 7  # raw mode: the peer's CRYPTO bytes, the crypto level in the flags field (raw.py)
MAX_ITEM = 65536
SNDBUF = 4 * 1024 * 1024


def item(kind: int, sid: int = 0, flags: int = 0, payload: bytes = b"") -> bytes:
    return ITEM.pack(kind, flags, sid) + payload


class Blocked(Exception):
    """The operation has to wait: ``kind`` is "streams" (stream limit) or "space" (send buffer)."""

    def __init__(self, kind: str, enospc: bool = False):
        super().__init__(kind)
        self.kind = kind
        self.enospc = enospc


def err(code: int, what: str = "") -> OSError:
    return OSError(code, f"{os.strerror(code)}{': ' + what if what else ''}")


@dataclass
class Options:
    """Per-socket settings, copied from a listener to the sockets it accepts."""

    tp: uapi.TransportParam = field(default_factory=uapi.default_transport_param)
    cfg: uapi.Config = field(default_factory=uapi.default_config)
    alpn: list[str] = field(default_factory=list)
    events: set[int] = field(default_factory=set)
    close_errcode: int = 0
    close_phrase: bytes = b""
    token: bytes = b""
    ticket: bytes = b""
    raw: bool = False  # the application runs TLS (raw.py); a listener passes it to accepted sockets

    def copy(self) -> Options:
        return Options(uapi.TransportParam(**{k: getattr(self.tp, k) for k in uapi.TP_FIELDS}),
                       uapi.Config(**{k: getattr(self.cfg, k) for k in uapi.CFG_FIELDS}), list(self.alpn),
                       set(self.events), self.close_errcode, self.close_phrase, self.token, self.ticket, self.raw)


@dataclass
class Stream:
    sid: int
    send: int | None  # send state, None when we cannot send (peer uni)
    recv: int | None  # receive state, None before data / when we cannot receive (local uni)
    sent: int = 0
    reset_code: int = 0
    stop_sent: bool = False
    in_quic: bool = False
    recv_seen: bool = False


def _final(state: int | None, finals: tuple[int, int]) -> bool:
    return state is None or state in finals


SEND_FINAL = (C.QUIC_STREAM_SEND_STATE_RECVD, C.QUIC_STREAM_SEND_STATE_RESET_RECVD)
RECV_FINAL = (C.QUIC_STREAM_RECV_STATE_RECVD, C.QUIC_STREAM_RECV_STATE_RESET_RECVD)
