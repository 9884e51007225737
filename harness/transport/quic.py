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

import errno
import hashlib
import os
import socket
from typing import cast

from harness.smb.framing import MAX_DIRECT_TCP, Framing

from .base import Listener, TransportClosed, TransportError, TransportUnavailable
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


#: Receive windows an SMB end announces (TRANSPORT_PARAM: the stream's and the connection's). quic.ko's
#: defaults (about 1 MiB per stream, 2 MiB per connection) are smaller than one 1 MiB READ or WRITE
#: with its header, so every such PDU would wait a round trip for MAX_STREAM_DATA, and the SMB client
#: keeps several in flight (harness/blocking/client.py ``window``). 4 MiB per stream, 8 MiB per
#: connection: on the emulated carrier the 64 MiB write+read of benchmarks/smb_quic.py took about a
#: quarter less time than with the defaults (median of five interleaved runs each, loaded machine);
#: 16 MiB gave nothing more. Set on the client before connect() and on the listener (its accepted
#: sockets copy it); never lowered.
STREAM_WINDOW = 4 << 20
CONNECTION_WINDOW = 8 << 20


#: The most one sendmsg hands the socket. Its send buffer (quic.ko's sk_sndbuf, 4 MiB) takes a message
#: only when the whole message fits, so a 4 MiB READ response sent in one piece would wait until
#: everything before it is acknowledged, and the connection would drain between responses; in pieces
#: the buffer is topped up as acknowledgments free room. A 1 MiB WRITE still goes in one.
SEND_PIECE = 2 << 20


def _pieces(buffers: list, limit: int):
    """``buffers`` regrouped into lists of equal size, none above ``limit`` bytes (memoryview slices,
    no copy)."""
    total = sum(len(b) for b in buffers)
    if total <= limit:
        yield buffers
        return
    count = -(-total // limit)
    size = -(-total // count)
    piece: list = []
    room = size
    for b in buffers:
        view = memoryview(b).cast("B")
        while len(view):
            take = view[:room]
            piece.append(take)
            room -= len(take)
            view = view[len(take):]
            if not room:
                yield piece
                piece, room = [], size
    if piece:
        yield piece


def _receive_windows(sock) -> None:
    quic = _quic()
    try:
        tp = quic.TransportParam.unpack(sock.getsockopt(quic.SOL_QUIC, quic.QUIC_SOCKOPT_TRANSPORT_PARAM,
                                                        quic.TransportParam.FMT.size))
        tp.max_data = max(tp.max_data, CONNECTION_WINDOW)
        tp.max_stream_data_bidi_local = max(tp.max_stream_data_bidi_local, STREAM_WINDOW)
        tp.max_stream_data_bidi_remote = max(tp.max_stream_data_bidi_remote, STREAM_WINDOW)
        sock.setsockopt(quic.SOL_QUIC, quic.QUIC_SOCKOPT_TRANSPORT_PARAM, tp.pack())
    except OSError:  # a socket without the option keeps its own windows
        pass


#: ``QuicTransport.sid`` while the SMB stream was opened by an early (0-RTT) send whose id is not known yet.
EARLY = -2


class QuicTransport(StreamTransport):
    """SMB's one bidirectional stream, pinned by id.

    Why pinned: quic.ko sends a plain send() on the socket's *active* stream, which moves whenever this
    socket opens a stream (or, at the server, when the peer opens a bidi one). An application that uses
    other streams of the same connection beside SMB (a test doing exactly that, or h3 next to SMB)
    would otherwise get SMB PDUs written into its stream. So the client opens its stream with
    STREAM_OPEN and sends with that id in a STREAM_INFO cmsg; the server takes the id of the first
    stream data arrives on. Data on any other stream is not SMB: it is counted in ``side_streams``
    (bytes, sha256, fin per stream id) and never mixed into the PDUs.
    """

    name = "quic"
    secure = True

    def __init__(self, sock, io_timeout: float) -> None:
        super().__init__(sock, Framing.DIRECT_TCP, "quic", io_timeout=io_timeout)
        self.sid: int | None = None
        self.side_streams: dict[int, dict] = {}
        self._rbuf = bytearray()

    def send_pdu(self, pdu: bytes, *, invalidate_token: int | None = None) -> None:
        if invalidate_token is not None:
            raise TransportUnavailable(f"{self.name} has no RDMA: no SEND with Invalidate")
        if len(pdu) > MAX_DIRECT_TCP:
            raise ValueError(f"{len(pdu)} bytes do not fit the 24-bit Direct-TCP length")
        # The 4-byte header and the message as two buffers of one sendmsg: the socket joins them into
        # the stream data once (frame() would copy the message first, and a 1 MiB WRITE twice).
        self._send_buffers([b"\x00" + len(pdu).to_bytes(3, "big"), pdu])

    def send_frame(self, data: bytes) -> None:
        self._send_buffers([data])

    def _send_buffers(self, buffers: list) -> None:
        if self._closed:
            raise TransportClosed("closed")
        quic = _quic()
        self.sock.settimeout(self.io_timeout)
        try:
            flags = 0
            if self.sid is None:  # the client's first send opens the SMB stream
                flags = quic.MSG_STREAM_NEW
                try:
                    info = quic.StreamInfo(-1, 0).pack()
                    self.sid = quic.StreamInfo.unpack(self.sock.getsockopt(
                        quic.SOL_QUIC, quic.QUIC_SOCKOPT_STREAM_OPEN, info)).stream_id
                except OSError as exc:
                    # Before the handshake (0-RTT data) quic.ko opens no stream by option, only by a
                    # send with MSG_STREAM_NEW on the next id: send so, and learn the id from the reply.
                    if exc.errno != errno.EINVAL:
                        raise
                    self.sid = EARLY
            for piece in _pieces(buffers, SEND_PIECE):
                left = sum(len(b) for b in piece)
                while left:
                    if self.sid == EARLY:
                        n = self.sock.sendmsg(piece, [], flags)
                    else:
                        n = self.sock.sendmsg(piece, [quic.stream_info_cmsg(self.sid, flags & quic.STREAM_FLAGS)],
                                              flags & ~quic.STREAM_FLAGS)
                    flags = 0
                    left -= n
                    if left:  # a partial send (quic.ko's takes all or nothing): the rest, from one buffer
                        piece = [memoryview(b"".join(bytes(b) for b in piece))[-left:]]
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise TransportClosed(str(exc)) from exc
        except OSError as exc:
            if isinstance(exc, TimeoutError):
                raise
            raise TransportError(str(exc)) from exc

    def whole_pdu_waiting(self) -> bool:
        """Unknown here: the socket's pending bytes are QUIC messages of any stream, not SMB's."""
        return False

    def _read_exact(self, count: int, first_timeout: float | None) -> bytes:
        """Exactly ``count`` bytes of the SMB stream. Each recvmsg asks for what is still missing, so a
        read never takes bytes of the next frame (the socket keeps the rest of an item at the head of
        its queue) and a whole frame comes back without being copied out of a larger buffer: as the
        one message that held it, or as the bytearray it was gathered in (bytes-like, as the TCP
        transport's)."""
        quic = _quic()
        self.sock.settimeout(first_timeout)
        buf = self._rbuf
        while len(buf) < count:
            try:
                data, sid, flags = quic.quic_recvmsg(self.sock, max(count - len(buf), 1))
            except (ConnectionResetError, BrokenPipeError) as exc:
                raise TransportClosed(str(exc)) from exc
            except TimeoutError:
                raise
            except OSError as exc:
                if exc.errno == errno.ENOTCONN:
                    raise TransportClosed("peer closed the connection" + (" mid-frame" if buf else "")) from exc
                if exc.errno == errno.EAGAIN:
                    raise TimeoutError("timed out") from exc
                raise TransportError(str(exc)) from exc
            if flags & quic.MSG_NOTIFICATION:
                continue
            if self.sid is None or self.sid == EARLY:
                self.sid = sid
            if sid != self.sid:
                st = self.side_streams.setdefault(sid, {"bytes": 0, "sha256": hashlib.sha256(), "fin": False})
                st["bytes"] += len(data)
                st["sha256"].update(data)
                st["fin"] = st["fin"] or bool(flags & quic.MSG_STREAM_FIN)
                continue
            if not data:
                raise TransportClosed("peer ended the SMB stream" + (" mid-frame" if buf else ""))
            if not buf and len(data) == count:
                return data
            buf += data
            if len(buf) < count:
                self.sock.settimeout(self.io_timeout)
        if len(buf) == count:
            self._rbuf = bytearray()
            return cast(bytes, buf)
        out = bytes(buf[:count])  # more than asked for: only a stream other than SMB's does that
        del buf[:count]
        return out


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def connect_quic(host: str, port: int = DEFAULT_PORT, *, server_name: str | None = None, ca: str | None = None,
                 insecure: bool = False, timeout: float = 30.0, certfile: str | None = None,
                 keyfile: str | None = None) -> QuicTransport:
    quic = _quic()
    sock = _new_socket(_family(host))
    try:
        sock.settimeout(timeout)
        _receive_windows(sock)
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
        _receive_windows(self.sock)  # the sockets it accepts take the listener's parameters
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
