"""SMB over QUIC (MS-SMB2 §2.1, §4.10): one bidirectional stream, ALPN "smb", UDP 443, the same
4-byte Direct-TCP framing on the stream, TLS 1.3 from QUIC.

A thin adapter over the IPPROTO_QUIC socket of wrappers/quic (the quic.ko API): once the handshake
is done the socket reads and writes stream 0 like a byte stream, so :class:`~.stream.StreamTransport`
with Direct-TCP framing carries the PDUs unchanged.  This module only opens the socket, sets ALPN,
certificates and the server name, runs the handshake, opens the stream with MSG_STREAM_NEW on the
first send, and marks the transport ``secure`` (what lets SMB2_ACCEPT_TRANSPORT_LEVEL_SECURITY skip
SMB encryption).  TLS secrets go to SSLKEYLOGFILE (and next to the wrapper's pcap) — the socket does it.

Certificate checks: the client verifies the server's certificate against ``ca`` and ``server_name``
(Windows clients require a name); with neither ``ca`` nor ``insecure`` the system CA bundle is used.
"""

from __future__ import annotations

import os
import socket

from harness.smb.framing import Framing, frame

from .base import Listener, TransportError, TransportUnavailable
from .stream import StreamTransport

ALPN = "smb"
DEFAULT_PORT = 443
SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"


def _quic():
    try:
        from wrappers import quic
    except ImportError as exc:  # pragma: no cover - wrappers/quic ships with wirecheck
        raise TransportUnavailable("QUIC needs the IPPROTO_QUIC socket of wrappers/quic") from exc
    return quic


def _new_socket(family: int):
    """Under the wrapper socket() returns the emulated QUIC socket; without it, QuicSocket runs over
    real UDP (a user-space quic.ko)."""
    quic = _quic()
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM, quic.IPPROTO_QUIC)
    except OSError:  # no wrapper and no quic.ko: EPROTONOSUPPORT
        return quic.QuicSocket(family, socket.SOCK_DGRAM)
    if not isinstance(sock, quic.QuicSocket):  # a real kernel quic.ko socket would do too
        return sock
    return sock


class QuicTransport(StreamTransport):
    name = "quic"
    secure = True

    def __init__(self, sock, io_timeout: float) -> None:
        super().__init__(sock, Framing.DIRECT_TCP, "quic", io_timeout=io_timeout)
        self._stream_open = False

    def send_pdu(self, pdu: bytes) -> None:
        self.send_frame(frame(pdu, Framing.DIRECT_TCP))  # the QUIC socket's sendmsg is stream-flagged

    def send_frame(self, data: bytes) -> None:
        if not self._stream_open:
            quic = _quic()
            self.sock.settimeout(self.io_timeout)
            try:
                self.sock.sendmsg([data], [], quic.MSG_STREAM_NEW)
            except OSError as exc:
                raise TransportError(str(exc)) from exc
            self._stream_open = True
            return
        super().send_frame(data)


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def connect_quic(host: str, port: int = DEFAULT_PORT, *, server_name: str | None = None, ca: str | None = None,
                 insecure: bool = False, timeout: float = 30.0, certfile: str | None = None,
                 keyfile: str | None = None) -> QuicTransport:
    quic = _quic()
    sock = _new_socket(_family(host))
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
        cafile = None if insecure else (ca or (SYSTEM_CA if os.path.exists(SYSTEM_CA) else None))
        quic.client_handshake(sock, None, server_name or host, ALPN, cafile=cafile, certfile=certfile,
                              keyfile=keyfile, timeout=timeout)
    except OSError as exc:
        sock.close()
        raise TransportError(f"QUIC handshake with {host}:{port} failed: {exc}") from exc
    return QuicTransport(sock, timeout)


class QuicListener(Listener):
    def __init__(self, host: str, port: int, *, cert: str, key: str, client_ca: str | None = None,
                 backlog: int = 64, io_timeout: float = 120.0) -> None:
        quic = _quic()
        self.sock = _new_socket(_family(host))
        self.sock.setsockopt(quic.SOL_QUIC, quic.QUIC_SOCKOPT_ALPN, ALPN.encode())
        self.sock.bind((host, port))
        self.sock.listen(backlog)
        self.address = self.sock.getsockname()
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self.io_timeout = io_timeout

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self, timeout: float | None = None) -> QuicTransport:
        quic = _quic()
        self.sock.settimeout(timeout)
        try:
            conn, _ = self.sock.accept()
        except OSError as exc:
            if "timed out" in str(exc) or getattr(exc, "errno", None) in (11, 110):
                raise TimeoutError(str(exc)) from exc
            raise
        try:
            quic.server_handshake(conn, self.key, self.cert, ALPN, cafile=self.client_ca,
                                  require_client_cert=bool(self.client_ca), timeout=self.io_timeout)
        except OSError as exc:
            conn.close()
            raise TransportError(f"QUIC handshake failed: {exc}") from exc
        return QuicTransport(conn, self.io_timeout)

    def close(self) -> None:
        self.sock.close()


def listen_quic(host: str, port: int = DEFAULT_PORT, *, cert: str, key: str,
                client_ca: str | None = None) -> QuicListener:
    return QuicListener(host, port, cert=cert, key=key, client_ca=client_ca)
