"""SMB over QUIC (MS-SMB2 §2.1, §4.10): one bidirectional stream, ALPN "smb", UDP 443, the same
4-byte Direct-TCP framing on the stream, TLS 1.3 from QUIC.

Design: a thin adapter.  The IPPROTO_QUIC socket (wrappers/quic, the quic.ko API) is a stream-like
fd once the handshake is done, so :class:`~.stream.StreamTransport` with Direct-TCP framing carries
the PDUs unchanged; this module only opens the socket, sets ALPN / certificates / SSLKEYLOGFILE,
runs the handshake and marks the transport ``secure`` (which is what allows
SMB2_ACCEPT_TRANSPORT_LEVEL_SECURITY).  Until wrappers/quic provides that socket API,
:func:`connect_quic` and :func:`listen_quic` raise :class:`TransportUnavailable`.
"""

from __future__ import annotations

from .base import TransportUnavailable

ALPN = b"smb"
DEFAULT_PORT = 443


def _quic_module():
    try:
        from wrappers import quic  # type: ignore[attr-defined]
    except ImportError as exc:
        raise TransportUnavailable("QUIC needs the IPPROTO_QUIC socket of wrappers/quic, which is not installed") from exc
    return quic


def connect_quic(host: str, port: int = DEFAULT_PORT, *, server_name: str | None = None, ca: str | None = None,
                 insecure: bool = False, timeout: float = 30.0):
    _quic_module()
    raise TransportUnavailable("wrappers/quic has no stable socket API yet")


def listen_quic(host: str, port: int = DEFAULT_PORT, *, cert: str, key: str, client_ca: str | None = None):
    _quic_module()
    raise TransportUnavailable("wrappers/quic has no stable socket API yet")
