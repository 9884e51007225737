"""The capture: every SEND as RoCEv2 SEND_ONLY (SEND_ONLY_INVAL with an invalidate), RDMA as
WRITE_ONLY / READ_REQUEST + READ_RESPONSE with RETH; tshark 4.0 shows smb_direct and smb2 inside,
reassembles fragmented SMB2 messages, and finds nothing malformed."""

from __future__ import annotations

import os
import socket
import threading
from collections import Counter

import pytest
import tsharkutil
from threadutil import joined

from wrappers import smbdirect as sd

from . import smb2min as m


def serve_once(srv: socket.socket, result: dict) -> None:
    c, _ = srv.accept()
    c.settimeout(20)
    try:
        c.send(m.echo(0, True) if c.recv() == m.echo(0) else b"?")
        big = c.recv()
        result["big"] = len(big)
        c.send(m.write_response(1, len(big) - 112))
        req = c.recv()  # WRITE with RDMA_V1: descriptor at 0x70 (+64 header)
        d = sd.decode_descriptors(req[0x70:0x80])
        result["pulled"] = c.rdma_read(d[0].length, d)
        c.send(m.write_response(2, d[0].length))
        req = c.recv()  # READ with RDMA_V1_INVALIDATE
        d = sd.decode_descriptors(req[0x70:0x80])
        c.rdma_write(b"R" * d[0].length, d)
        c.sendmsg([m.read_response_rdma(3, d[0].length)],
                  [(sd.SOL_SMBDIRECT, sd.SMBDIRECT_CMSG_REMOTE_INVALIDATE, d[0].token.to_bytes(4, "little"))])
        result["eof"] = c.recv()
    finally:
        c.close()


def test_tshark_shows_smb_direct_and_smb2(net):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM, sd.IPPROTO_SMBDIRECT)
    srv.bind(("127.0.0.11", 445))
    srv.listen()
    result: dict = {}
    t = threading.Thread(target=serve_once, args=(srv, result))
    t.start()
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM, sd.IPPROTO_SMBDIRECT)
    c.settimeout(20)
    c.connect(("127.0.0.11", 445))
    c.send(m.echo(0))
    assert c.recv() == m.echo(0, True)
    c.send(m.write_inline(1, os.urandom(200 * 1024)))  # 200 KiB: 153 SMBD fragments
    c.recv()
    src = bytearray(os.urandom(300000))
    d = c.register(src, sd.RDMA_REMOTE_READ)
    c.send(m.write_rdma(2, len(src), d))
    c.recv()
    c.deregister(d)
    dest = bytearray(70000)
    d = c.register(dest, sd.RDMA_REMOTE_WRITE)
    c.send(m.read_rdma(3, len(dest), d))
    resp, token = c.recv_message()
    assert token == d[0].token and resp == m.read_response_rdma(3, len(dest))
    assert bytes(dest) == b"R" * len(dest)
    c.close()
    joined(t, 20)
    srv.close()
    assert result["big"] == 200 * 1024 + 112 and result["pulled"] == bytes(src) and result["eof"] == b""

    rows = tsharkutil.fields(net.pcap_file, ["frame.number", "frame.protocols", "infiniband.bth.opcode", "smb2.cmd",
                                             "smb_direct.fragment.count", "infiniband.reth.dmalen", "_ws.malformed",
                                             "smb_direct.negotiate_request", "smb_direct.negotiate_response",
                                             "smb2.flags.response"])
    assert rows
    smb2 = [r for r in rows if "infiniband:smb_direct:smb2" in r[1]]
    cmds = Counter((r[3], r[9]) for r in smb2)
    assert cmds[("13", "0")] == 1 and cmds[("13", "1")] == 1
    assert cmds[("9", "0")] == 2 and cmds[("9", "1")] == 2
    assert cmds[("8", "0")] == 1 and cmds[("8", "1")] == 1
    assert any(r[4] and int(r[4]) > 100 for r in smb2), "the 200 KiB WRITE is reassembled from SMBD fragments"
    opcodes = Counter(r[2] for r in rows)
    assert opcodes["4"] > 150 and opcodes["23"] == 1  # SEND_ONLY, SEND_ONLY_INVAL (0x17)
    assert opcodes["12"] == 1 and opcodes["16"] == 1 and opcodes["10"] == 1  # READ_REQUEST/RESPONSE, WRITE_ONLY
    dmalens = sorted(int(r[5]) for r in rows if r[5])
    assert dmalens == [70000, 300000]
    assert any(r[7] for r in rows) and any(r[8] for r in rows)
    assert not [r for r in rows if r[6]], "malformed frames"
    assert tsharkutil.problems(net.pcap_file) == []
    # RoCEv2 flow entropy from both QPs: one UDP source port for both directions of the connection,
    # so readers (harness.pcap's per-connection checks) can group its frames.
    ports = {r[0] for r in tsharkutil.fields(net.pcap_file, ["udp.srcport"], display_filter="udp.dstport == 4791")}
    assert len(ports) == 1, ports


def test_every_send_is_one_send_only_record(net):
    """Empty credit messages are exactly 20 bytes; nothing but smb_direct on the RoCE port."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM, sd.IPPROTO_SMBDIRECT)
    srv.bind(("127.0.0.11", 445))
    srv.listen()
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM, sd.IPPROTO_SMBDIRECT)
    c.settimeout(10)
    c.connect(("127.0.0.11", 445))
    a, _ = srv.accept()
    for i in range(5):
        c.send(m.echo(i))
        assert a.recv() == m.echo(i)
    c.close()
    a.close()
    srv.close()
    rows = tsharkutil.fields(net.pcap_file, ["frame.protocols", "udp.dstport", "smb_direct.data_length"])
    assert rows and all(r[1] == "4791" and "smb_direct" in r[0] for r in rows)
    assert sum(1 for r in rows if "smb2" in r[0]) == 5


@pytest.mark.parametrize("mode", ["full", "none"])
def test_rdma_payload_modes(net, monkeypatch, mode):
    monkeypatch.setenv("WIRECHECK_SMBDIRECT_PCAP_RDMA", mode)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM, sd.IPPROTO_SMBDIRECT)
    srv.bind(("127.0.0.11", 445))
    srv.listen()
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM, sd.IPPROTO_SMBDIRECT)
    c.settimeout(10)
    c.connect(("127.0.0.11", 445))
    a, _ = srv.accept()
    buf = bytearray(10000)
    d = c.register(buf)
    a.rdma_write(b"w" * 10000, d)
    assert a.rdma_read(10000, d) == b"w" * 10000
    c.close()
    a.close()
    srv.close()
    rows = tsharkutil.fields(net.pcap_file, ["infiniband.bth.opcode", "data.len", "_ws.malformed"],
                             display_filter="infiniband.bth.opcode != 4")
    ops = [int(r[0]) for r in rows]
    if mode == "full":
        assert ops == [6, 7, 8, 12, 13, 14, 15]  # WRITE FIRST/MIDDLE/LAST, READ REQUEST, RESPONSE F/M/L
        assert sum(int(r[1] or 0) for r in rows) == 20000
    else:
        assert ops == [10, 12, 16] and not any(r[1] for r in rows)
    assert not any(r[2] for r in rows)


def _send_records(path) -> list[tuple[int, int, int, bytes]]:
    """(opcode, dest QP, PSN, SMBD message) of every SEND record of the capture, in file order."""
    import struct

    data = open(path, "rb").read()
    out, pos = [], 24
    while pos < len(data):
        incl = struct.unpack_from("<I", data, pos + 8)[0]
        rec, pos = data[pos + 16:pos + 16 + incl], pos + 16 + incl
        ihl = (rec[0] & 0xF) * 4
        bth = rec[ihl + 8:]
        op, b1 = bth[0], bth[1]
        if op not in (0x04, 0x17):
            continue
        head = 12 + (4 if op == 0x17 else 0)
        out.append((op, int.from_bytes(bth[5:8], "big"), int.from_bytes(bth[9:12], "big") & 0xFFFFFF,
                    bytes(bth[head:len(bth) - 4 - ((b1 >> 4) & 3)])))
    return out


def test_send_only_is_the_generic_packet():
    """The SEND builder the capture uses is byte for byte the generic IB packet it replaces."""
    from wrappers.smbdirect import roce

    for n in range(0, 9):
        msg = os.urandom(20 + n)
        for token in (None, 0xDEADBEEF):
            op, ext = (roce.SEND_ONLY, b"") if token is None else (roce.SEND_ONLY_INVALIDATE, roce.ieth(token))
            want = b"".join(roce.ib_packet(op, 0xABCDEF, 0xFFFFF0 + n, ext, msg, ack_req=True, solicited=True))
            assert roce.send_only(0xABCDEF, 0xFFFFF0 + n, msg, token) == want


def test_fragments_are_one_record_per_send_in_order(net):
    """A 1 MiB message goes out as hundreds of SENDs in batches (as credits allow): each is one
    record, none lost or repeated, each direction's PSNs consecutive in file order, and the
    fragments' RemainingDataLength counts down to 0 in that order."""
    import struct

    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM, sd.IPPROTO_SMBDIRECT)
    srv.bind(("127.0.0.11", 445))
    srv.listen()
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM, sd.IPPROTO_SMBDIRECT)
    c.settimeout(20)
    c.connect(("127.0.0.11", 445))
    a, _ = srv.accept()
    a.settimeout(20)
    payload = os.urandom((1 << 20) - 1)
    c.send(payload)
    assert a.recv() == payload
    a.send(payload[:300000])
    assert c.recv() == payload[:300000]
    sends = c._link.core.stats.sends + a._link.core.stats.sends
    c.close()
    a.close()
    srv.close()
    recs = _send_records(net.pcap_file)
    assert len(recs) == sends  # the negotiation's SENDs are records too
    by_qp: dict[int, list[tuple[int, bytes]]] = {}
    for _op, qp, psn, msg in recs:
        by_qp.setdefault(qp, []).append((psn, msg))
    assert len(by_qp) == 2
    moved = []
    for seq in by_qp.values():
        psns = [p for p, _ in seq]
        assert psns == [(psns[0] + i) & 0xFFFFFF for i in range(len(psns))]
        got, remaining = b"", None
        for _p, msg in seq[1:]:  # the first is the negotiate request or response
            if struct.unpack_from("<I", msg, 16)[0] == 0:
                continue  # a credit-only message
            rem, off, dlen = struct.unpack_from("<III", msg, 8)
            assert remaining is None or rem == remaining - dlen
            got += msg[off:off + dlen]
            remaining = rem if rem else None
        moved.append(got)
    assert sorted(moved, key=len) == [payload[:300000], payload]
