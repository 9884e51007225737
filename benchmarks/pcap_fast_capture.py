"""A fast generator of big SMB2-over-TCP/445 captures (20,000 to 1,000,000 packets), for benchmarks.

Why not scapy: it builds a packet in ~1 ms (measured with scapy 2.8), so a million packets would take 20
minutes. Here the IPv4 and TCP headers are packed with struct (checksums left zero: tshark does not
check them by default) and the SMB2 messages are built once per kind and patched per use (message
id), which writes about 300,000 packets a second.
"""
from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

from benchmarks import smb2_bytes as c

#: The first record's time (2023-11-14 22:13:20 UTC), as in the tests' hand-made captures.
T0 = 1_700_000_000.0

_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_REC = struct.Struct("<IIII")
SYN, ACK, PSH, FIN = 0x02, 0x10, 0x08, 0x01


class FastWriter:
    """Raw-IP (LINKTYPE 101) pcap, fake clock of `step_us` microseconds per packet."""

    def __init__(self, path: str | os.PathLike, step_us: int = 100):
        self.f = open(path, "wb", buffering=1 << 20)
        self.f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101))
        self.us, self.step, self.count, self.ident = int(T0 * 1e6), step_us, 0, 0

    def tcp(self, src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
            payload: bytes = b"") -> None:
        self.ident = (self.ident + 1) & 0xFFFF
        total = 40 + len(payload)
        pkt = (_IP.pack(0x45, 0, total, self.ident, 0x4000, 64, 6, 0, src, dst)
               + _TCP.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 0x50, flags, 65535, 0, 0) + payload)
        self.f.write(_REC.pack(self.us // 1_000_000, self.us % 1_000_000, total, total))
        self.f.write(pkt)
        self.us += self.step
        self.count += 1

    def close(self) -> None:
        self.f.close()


def _with_msg_id(msg: bytes, mid: int) -> bytes:
    return msg[:24] + struct.pack("<Q", mid) + msg[32:]


def fast_smb_tcp_capture(path: str | os.PathLike, packets: int = 20_000, streams: int = 8,
                         write_size: int = 1000) -> Path:
    """SMB 3.1.1 over TCP/445 on `streams` connections, about `packets` packets in all. Per
    connection: handshake, NEGOTIATE, SESSION_SETUP, TREE_CONNECT, then WRITE/ECHO exchanges (one
    message per segment, no pure ACKs) until its share of packets is used, then FIN."""
    path = Path(path)
    w = FastWriter(path)
    cli, srv = socket.inet_aton(c.CLIENT), socket.inet_aton(c.SERVER)
    per = max(20, packets // streams)
    for s in range(streams):
        sid = c.SESSION_ID + s
        cport = 40000 + s
        seq = {"c": 1000, "s": 5000}

        def send(d: str, flags: int, payload: bytes = b"", cport: int = cport, seq: dict = seq) -> None:
            if d == "c":
                w.tcp(cli, srv, cport, 445, seq["c"], seq["s"], flags, payload)
            else:
                w.tcp(srv, cli, 445, cport, seq["s"], seq["c"], flags, payload)
            seq[d] += len(payload) + (1 if flags & (SYN | FIN) else 0)

        send("c", SYN)
        send("s", SYN | ACK)
        send("c", ACK)
        setup = [("c", c.negotiate_request(0)), ("s", c.negotiate_response(0)),
                 ("c", c.session_setup_request(1)), ("s", c.session_setup_response(1, sid)),
                 ("c", c.tree_connect_request(2, sesid=sid)), ("s", c.tree_connect_response(2, sesid=sid))]
        for d, m in setup:
            send(d, PSH | ACK, c.direct_tcp(m))
        kinds = [("c", c.write_request(0, b"w" * write_size, sesid=sid)), ("s", c.write_response(0, write_size, sesid=sid)),
                 ("c", c.echo(0, sesid=sid)), ("s", c.echo(0, response=True, sesid=sid))]
        used, mid = 9 + 3, 3
        while used < per:
            for i, (d, m) in enumerate(kinds):
                send(d, PSH | ACK, c.direct_tcp(_with_msg_id(m, mid + i // 2)))
            mid += 2
            used += 4
        send("c", FIN | ACK)
        send("s", FIN | ACK)
        send("c", ACK)
    w.close()
    return path
