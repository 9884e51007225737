"""A small HTTP/3 application over the quic.ko socket API (as lxin/quic's http3_test is over quic.ko).

Enough HTTP/3 (RFC 9114) and QPACK (RFC 9204, through pylsqpack, static table only: both ends
announce a dynamic table capacity of 0) to GET one file per request stream and to serve files from a
directory: a control stream with an empty SETTINGS frame, HEADERS and DATA frames on the request
streams. Peer control and QPACK streams are read and ignored. Used for interop with ngtcp2's
gtlsclient/gtlsserver (tests/quic/test_adv_ngtcp2.py) and by ``wirecheck h3`` (harness/cli/h3.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import pylsqpack
from aioquic.buffer import Buffer

from . import quic_recvmsg, quic_sendmsg
from .constants import MSG_NOTIFICATION, MSG_STREAM_FIN, MSG_STREAM_NEW, MSG_STREAM_UNI

H3_DATA, H3_HEADERS, H3_SETTINGS = 0x00, 0x01, 0x04
STREAM_CONTROL = 0x00


def _var(v: int) -> bytes:
    b = Buffer(capacity=8)
    b.push_uint_var(v)
    return b.data


def frame(ftype: int, payload: bytes) -> bytes:
    return _var(ftype) + _var(len(payload)) + payload


def parse_frames(data: bytes) -> list[tuple[int, bytes]]:
    b = Buffer(data=data)
    out = []
    while not b.eof():
        t = b.pull_uint_var()
        n = b.pull_uint_var()
        out.append((t, b.pull_bytes(n)))
    return out


def _open_control(sock: Any, sid: int) -> None:
    # our first unidirectional stream (2 client, 3 server): type 0x00, SETTINGS; never finished (RFC 9114 6.2.1)
    quic_sendmsg(sock, _var(STREAM_CONTROL) + frame(H3_SETTINGS, b""), sid, MSG_STREAM_NEW | MSG_STREAM_UNI)


@dataclass
class Reader:
    """Collects stream data until the wanted stream is finished; events are kept aside."""

    sock: Any
    streams: dict[int, bytearray] = field(default_factory=dict)
    finished: set[int] = field(default_factory=set)
    events: list[bytes] = field(default_factory=list)

    def until(self, done: Any) -> None:
        while not done():
            data, sid, flags = quic_recvmsg(self.sock, 65536)
            if flags & MSG_NOTIFICATION:
                self.events.append(data)
                continue
            if not data and not flags & MSG_STREAM_FIN:
                raise ConnectionError("connection closed")
            self.streams.setdefault(sid, bytearray()).extend(data)
            if flags & MSG_STREAM_FIN:
                self.finished.add(sid)


def get(sock: Any, authority: str, path: str) -> tuple[int, dict[bytes, bytes], bytes]:
    """One GET on a handshaken client socket: (status, headers, body)."""
    _open_control(sock, 2)
    enc = pylsqpack.Encoder()
    enc.apply_settings(max_table_capacity=0, blocked_streams=0)
    headers = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", authority.encode()),
               (b":path", path.encode()), (b"user-agent", b"wirecheck-h3")]
    sid = 0
    _, block = enc.encode(sid, headers)
    quic_sendmsg(sock, frame(H3_HEADERS, block), sid, MSG_STREAM_NEW | MSG_STREAM_FIN)
    r = Reader(sock)
    r.until(lambda: sid in r.finished)
    dec = pylsqpack.Decoder(0, 0)
    status, hdrs, body = 0, {}, bytearray()
    for t, payload in parse_frames(bytes(r.streams[sid])):
        if t == H3_HEADERS:
            _, hl = dec.feed_header(sid, payload)
            hdrs.update(dict(hl))
            status = int(hdrs.get(b":status", b"0"))
        elif t == H3_DATA:
            body += payload
    return status, hdrs, bytes(body)


def serve(sock: Any, root: str) -> Reader:
    """Answer the first request stream of a handshaken server socket with a file under ``root``, then
    wait for the client to close the connection. Returns the reader (its events, its streams)."""
    r = Reader(sock)
    r.until(lambda: any(s % 4 == 0 for s in r.finished))
    sid = min(s for s in r.finished if s % 4 == 0)
    _open_control(sock, 3)
    dec = pylsqpack.Decoder(0, 0)
    path = b"/"
    for t, payload in parse_frames(bytes(r.streams[sid])):
        if t == H3_HEADERS:
            _, hl = dec.feed_header(sid, payload)
            path = dict(hl).get(b":path", b"/")
    name = os.path.normpath(path.decode().split("?", 1)[0]).lstrip("/")
    full = os.path.join(root, name)
    enc = pylsqpack.Encoder()
    enc.apply_settings(max_table_capacity=0, blocked_streams=0)
    if name and not name.startswith("..") and os.path.isfile(full):
        with open(full, "rb") as f:
            body = f.read()
        _, block = enc.encode(sid, [(b":status", b"200"), (b"content-length", str(len(body)).encode())])
    else:
        body = b""
        _, block = enc.encode(sid, [(b":status", b"404"), (b"content-length", b"0")])
    out = frame(H3_HEADERS, block) + (frame(H3_DATA, body) if body else b"")
    for i in range(0, len(out), 65536):
        last = i + 65536 >= len(out)
        quic_sendmsg(sock, out[i:i + 65536], sid, MSG_STREAM_FIN if last else 0)
    try:  # the client closes the connection when it has everything
        r.until(lambda: False)
    except (ConnectionError, OSError):
        pass
    return r
