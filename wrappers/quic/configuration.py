"""aioquic's QuicConfiguration for one connection, built from the socket's options.

Both ways of running the handshake need it: TLS inside the engine (handshake.py) and the raw mode
where the application runs TLS (raw.py). It reads only what every QuicSocket holds (its options and
the wrapper configuration that names the pcap, for the key log), so it sits below both.
"""

from __future__ import annotations

import os
import socket

from aioquic.quic.configuration import QuicConfiguration

from . import congestion, tlsext
from .sockparts import QuicSocketParts

MAX_DATAGRAM = int(os.environ.get("WIRECHECK_QUIC_MTU", "1452") or 1452)

#: The datagram size on an emulated carrier once the handshake is complete, by address family. The
#: emulated interfaces are loopback devices, and quic.ko on the loopback device sizes its packets from
#: the route's MTU (65536 there), so full-size datagrams are what it puts on that wire: an IPv4 packet
#: holds at most 65535 bytes (65507 of UDP payload), an IPv6 one 65536 (65488). The peer's
#: max_udp_payload_size caps it (aio/connection.py). ``WIRECHECK_QUIC_EMU_DATAGRAM`` lowers it (1452:
#: the handshake's size throughout, as before).
LOOPBACK_DATAGRAM: dict[int, int] = {socket.AF_INET: 65535 - 20 - 8, socket.AF_INET6: 65536 - 40 - 8}
_EMU_LIMIT = int(os.environ.get("WIRECHECK_QUIC_EMU_DATAGRAM", "") or 65535)


def path_datagram_size(carrier: str, family: int) -> int:
    """The datagram size a connection moves to when its handshake completes (0: stay at
    ``MAX_DATAGRAM``). The handshake itself always runs at ``MAX_DATAGRAM``, a size every path
    carries. Real UDP stays there: the host's path MTU is unknown and aioquic has no PMTU discovery."""
    if carrier not in ("seqpacket", "udp"):
        return 0
    return min(_EMU_LIMIT, LOOPBACK_DATAGRAM.get(family, LOOPBACK_DATAGRAM[socket.AF_INET6]))


def quic_configuration(sock: QuicSocketParts, is_client: bool, alpns: str | list[str] | None) -> QuicConfiguration:
    o = sock._opts
    tp = o.tp
    if isinstance(alpns, str):
        alpn_list = [a.strip() for a in alpns.split(",") if a.strip()]
    else:
        alpn_list = list(alpns) if alpns else list(o.alpn)
    cfg = QuicConfiguration(is_client=is_client, alpn_protocols=alpn_list or None, max_datagram_size=MAX_DATAGRAM)
    cfg.idle_timeout = tp.max_idle_timeout / 1e6
    cfg.max_data = tp.max_data
    cfg.max_stream_data = max(tp.max_stream_data_bidi_local, tp.max_stream_data_bidi_remote, tp.max_stream_data_uni)
    cfg.max_datagram_frame_size = tp.max_datagram_frame_size or None
    if is_client and o.token:
        cfg.token = o.token
    # quic.ko's algorithms: 0 New Reno (its own, congestion.py: no delay-based slow-start exit, the
    # path's segment size), 1 CUBIC (aioquic's)
    cfg.congestion_control_algorithm = "cubic" if o.cfg.congestion_control_algo == 1 else congestion.NAME
    if is_client and o.cfg.version:
        # the first Initial goes out in CONFIG.version (V2 included); an unknown version gets a Version
        # Negotiation from the listener and the client retries with a version both know (RFC 9000 6)
        if o.cfg.version not in cfg.supported_versions:
            cfg.supported_versions = [o.cfg.version, *cfg.supported_versions]
        cfg.original_version = o.cfg.version
    # aioquic only calls write() and flush() on it
    keylog = tlsext.secrets_log(sock._cfg.pcap_file if sock._cfg is not None else None)
    cfg.secrets_log_file = keylog  # type: ignore[assignment]
    qlogdir = os.environ.get("QLOGDIR")
    if qlogdir:
        cfg.quic_logger = tlsext.QlogDir(qlogdir)
    return cfg
