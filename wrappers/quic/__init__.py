"""IPPROTO_QUIC for wirecheck: Linux quic.ko's socket API in user space, on an aioquic engine.

Under ``wrappers.activate()`` / ``wirecheck exec``, ``socket.socket(AF_INET|AF_INET6, SOCK_DGRAM|
SOCK_STREAM, IPPROTO_QUIC)`` returns a :class:`QuicSocket`. Without the wrapper, construct
``QuicSocket(family, type)`` directly: it then runs over real UDP (a user-space quic.ko).

    from wrappers.quic import *
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, IPPROTO_QUIC)
    s.connect(("127.0.0.2", 443))
    client_handshake(s, psk=(b"id", key))
    s.sendmsg([b"hello"], [stream_info_cmsg(-1, MSG_STREAM_NEW | MSG_STREAM_FIN)])
    data, anc, flags, _ = s.recvmsg(4096, STREAM_INFO_SPACE)

Modules: constants (UAPI numbers), uapi (struct pack/unpack), sock (the socket), options
(SOL_QUIC options), core (sans-IO connection state), aio/ (the aioquic boundary: adjustments and the raw TLS adapter), loop (engine
thread), arrivals (new connections and new paths at a listener), carriers (SEQPACKET / emulated
UDP / real UDP), handshake (client_handshake / server_handshake), raw (quic.ko's raw
handshake interface that libquic drives: the application runs TLS, the socket carries CRYPTO data
per level and takes the secrets), tlsext (external PSK, key log, qlog), routing (ALPN routing of new connections among listeners sharing an address:port, in one
process and, on the SEQPACKET carrier, across processes), h3 (a minimal HTTP/3 client/server over
this API, for interop with ngtcp2).

Beyond the basic socket API: TRANSPORT_PARAM.disable_1rtt_encryption (TEST-ONLY: 1-RTT in cleartext when both
ends set it, aio/connection.py point 6); CONFIG.version (v1, v2, compatible upgrade by a v2 listener, Version
Negotiation for unknown versions); KEY_UPDATE with the passive side's event.

Carrier: ``WIRECHECK_QUIC_CARRIER`` = seqpacket (default) | udp. Key log: ``<pcap>.keys`` next to
the pcap and ``$SSLKEYLOGFILE``. qlog: ``$QLOGDIR/<ODCID>_<client|server>.qlog``. Packet size:
``WIRECHECK_QUIC_MTU`` (default 1452) for the handshake and on real UDP; on the emulated carriers the
loopback device's size after the handshake (configuration.py), ``WIRECHECK_QUIC_EMU_DATAGRAM`` to lower it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .constants import *  # noqa: F403
from .constants import IPPROTO_QUIC
from .uapi import (
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
    parse_sockaddr,
    sockaddr_in,
    stream_info_cmsg,
)

if TYPE_CHECKING:
    from .handshake import client_handshake, server_handshake, session_get_data
    from .sock import QuicSocket

_LAZY = {"QuicSocket": ".sock", "client_handshake": ".handshake", "server_handshake": ".handshake",
         "session_get_data": ".handshake"}


def __getattr__(name: str) -> Any:
    # aioquic and cryptography take most of a second to import; every process that activates the
    # wrapper imports this package, so they load only when a QUIC socket is actually made
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def quic_sendmsg(sock: QuicSocket, data: bytes, sid: int, flags: int) -> int:
    """libquic's quic_sendmsg: stream flags go into the cmsg, the others into the send flags."""
    from .constants import STREAM_FLAGS

    return sock.sendmsg([data], [stream_info_cmsg(sid, flags & STREAM_FLAGS)], flags & ~STREAM_FLAGS)


def quic_recvmsg(sock: QuicSocket, bufsize: int, flags: int = 0) -> tuple[bytes, int, int]:
    """libquic's quic_recvmsg: (data, sid, msg_flags | stream_flags)."""
    data, anc, mflags, _ = sock.recvmsg(bufsize, STREAM_INFO_SPACE, flags)
    sid = 0
    for level, ctype, cdata in anc:
        if level == SOL_QUIC and ctype == QUIC_STREAM_INFO:  # noqa: F405
            info = StreamInfo.unpack(cdata)
            sid = info.stream_id
            mflags |= info.stream_flags
    return data, sid, mflags


def _factory(family: int, type: int, proto: int) -> Any:
    from .sock import QuicSocket

    return QuicSocket(family, type, proto)


def _register() -> None:
    try:
        from ..socket_wrapper import register_protocol
    except ImportError:  # pragma: no cover
        return
    register_protocol(IPPROTO_QUIC, _factory)


_register()

__all__ = [
    "QuicSocket", "client_handshake", "server_handshake", "session_get_data", "quic_sendmsg", "quic_recvmsg", "stream_info_cmsg",
    "STREAM_INFO_SPACE", "StreamInfo", "TransportParam", "Config", "CryptoSecret", "ErrInfo", "ConnectionIdInfo",
    "EventOption", "ConnectionClose", "StreamUpdate", "StreamMaxData", "Event", "sockaddr_in", "parse_sockaddr",
]
__all__ += [_n for _n in dir(__import__(__name__ + ".constants", fromlist=["x"])) if _n.isupper()]
