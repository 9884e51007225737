"""A pcap of what one end of an SMB connection sent and received, for peers we cannot wrap.

smbd runs on real loopback (it does not run under the socket wrapper), and smbclient talks to our
in-process server there too, so neither conversation reaches a capture by itself.  The end that is
ours still sees every PDU it exchanges: :class:`PduCapture` wraps that end's harness transport (a
client's connection, or every connection a server's listener accepts) and writes each PDU as the
TCP segments that carried it (Direct TCP framing, MS-SMB2 2.1: a zero byte and a 24-bit length),
with a handshake, consistent sequence and acknowledgement numbers and a close, so that tshark
dissects and, with the session keys, decrypts it like a capture taken on the wire.

What it shows is exactly the bytes that crossed the connection, in the order this end handled
them: a PDU is written before it is handed to the kernel (a reply can never precede it) and after
it was read.  It is a test tool: it never changes what is sent.
"""

from __future__ import annotations

import itertools
import os
import threading

from harness.transport.base import Listener, Transport
from wrappers.packets import build_tcp
from wrappers.pcapfile import PcapWriter

SYN, FIN, PSH, ACK = 0x02, 0x01, 0x08, 0x10
SEGMENT = 32768  # payload bytes per synthesized segment (far below the 64 KiB IPv4 limit)


class PduCapture:
    """One pcap file; :meth:`wrap` and :meth:`listener` attach connections to it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.writer = PcapWriter(self.path)
        self._lock = threading.Lock()
        self._ports = itertools.count(40000)
        self.connections: list[RecordingTransport] = []

    def wrap(self, transport: Transport, local: tuple | None = None, peer: tuple | None = None,
             accepted: bool = False) -> RecordingTransport:
        """``accepted``: the peer opened the connection (its SYN comes first), as on a server."""
        local = tuple(local or transport.local or ("127.0.0.1", next(self._ports)))[:2]
        peer = tuple(peer or transport.peer)[:2]
        rec = RecordingTransport(transport, self, local, peer, accepted)
        self.connections.append(rec)
        return rec

    def listener(self, inner: Listener, local: tuple | None = None) -> RecordingListener:
        """``local``: the server address to show in the capture (default: the real one).  Large SMB2
        messages are framed right by tshark only on port 445 (on another port, decoded as NBSS, a
        message of 128 KiB or more is mis-framed), so a server on a free port is best shown on 445."""
        return RecordingListener(inner, self, local)

    def write(self, src: tuple, dst: tuple, seq: int, ack: int, flags: int, payload: bytes = b"") -> None:
        with self._lock:
            self.writer.write_packet(build_tcp(src, dst, seq=seq, ack=ack, flags=flags, payload=payload))

    def close(self) -> None:
        self.writer.close()


class RecordingTransport(Transport):
    """``inner`` with every PDU written to the capture; ``local`` is this end."""

    def __init__(self, inner: Transport, capture: PduCapture, local: tuple, peer: tuple,
                 accepted: bool = False) -> None:
        self.inner = inner
        self.capture = capture
        self.name = inner.name
        self.secure = inner.secure
        self.max_recv = inner.max_recv
        self.peer = inner.peer
        self.local = inner.local
        self.ends = (local, peer)
        self._next = {local: 1000, peer: 5000}  # next sequence number of each end
        self._lock = threading.Lock()
        self._closed = False
        opener, other = (peer, local) if accepted else (local, peer)
        capture.write(opener, other, self._next[opener] - 1, 0, SYN)
        capture.write(other, opener, self._next[other] - 1, self._next[opener], SYN | ACK)
        capture.write(opener, other, self._next[opener], self._next[other], ACK)

    def _log(self, src: tuple, dst: tuple, pdu: bytes) -> None:
        framed = len(pdu).to_bytes(4, "big") + pdu  # first byte 0: Direct TCP / NBSS session message
        with self._lock:
            for at in range(0, len(framed), SEGMENT):
                piece = framed[at:at + SEGMENT]
                self.capture.write(src, dst, self._next[src], self._next[dst], PSH | ACK, piece)
                self._next[src] += len(piece)

    def send_pdu(self, pdu: bytes, *, invalidate_token: int | None = None) -> None:
        if not self._closed:  # after close() the inner transport refuses it: nothing crosses
            self._log(*self.ends, bytes(pdu))
        self.inner.send_pdu(pdu, invalidate_token=invalidate_token)

    def recv_pdu(self, timeout: float | None = None) -> bytes:
        pdu = self.inner.recv_pdu(timeout)
        local, peer = self.ends
        self._log(peer, local, bytes(pdu))
        return pdu

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                local, peer = self.ends
                self.capture.write(local, peer, self._next[local], self._next[peer], FIN | ACK)
                self.capture.write(peer, local, self._next[peer], self._next[local] + 1, FIN | ACK)
                self.capture.write(local, peer, self._next[local] + 1, self._next[peer] + 1, ACK)
        self.inner.close()

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


class RecordingListener(Listener):
    """Every accepted connection is recorded (server side: ``local`` is the listening address)."""

    def __init__(self, inner: Listener, capture: PduCapture, local: tuple | None = None) -> None:
        self.inner = inner
        self.capture = capture
        self.address = inner.address
        self.shown = local

    def accept(self, timeout: float | None = None) -> Transport:
        transport = self.inner.accept(timeout)
        return self.capture.wrap(transport, local=self.shown or transport.local or self.address, peer=transport.peer,
                                 accepted=True)

    def close(self) -> None:
        self.inner.close()

    def fileno(self) -> int:
        return self.inner.fileno()

    def __getattr__(self, name: str):
        return getattr(self.inner, name)
