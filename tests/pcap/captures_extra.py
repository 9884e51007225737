"""More capture generators, for the catalogue checks added after the first set (captures.py).

Why a second module: captures.py holds the building blocks (SMB2 messages, TCP flows, the aioquic
pair); this one composes them into captures with one precise property each: transport security
accepted, a replayed WRITE, a bound second channel, RDMA reads and writes, a migration with (or
without) a fresh connection id, and 1-RTT packets sent in clear (quic.ko's disable_1rtt_encryption).
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

from . import captures as c

SMB2_FLAGS_REPLAY_OPERATION = 0x20000000
SMB2_SESSION_FLAG_BINDING = 0x01
TRANSPORT_CAPABILITIES = 0x0006  # negotiate context type (MS-SMB2 2.2.3.1.5)
ACCEPT_TRANSPORT_LEVEL_SECURITY = 0x01
CHANNEL_RDMA_V1, CHANNEL_RDMA_V1_INVALIDATE = 1, 2
FILE_ID = bytes(range(0x40, 0x50))


def with_flags(msg: bytes, add: int) -> bytes:
    """The same SMB2 message with extra header flags (e.g. SMB2_FLAGS_REPLAY_OPERATION)."""
    flags = struct.unpack_from("<I", msg, 16)[0] | add
    return msg[:16] + struct.pack("<I", flags) + msg[20:]


def negotiate_response_tls(msg_id: int = 0, flags: int = ACCEPT_TRANSPORT_LEVEL_SECURITY) -> bytes:
    """A 3.1.1 NEGOTIATE response whose contexts include SMB2_TRANSPORT_CAPABILITIES with `flags`."""
    base = c.negotiate_response(msg_id)
    ctxs = c._neg_contexts(2, 2) + [(TRANSPORT_CAPABILITIES, struct.pack("<I", flags))]
    head = base[:64 + 64]
    head = head[:64 + 6] + struct.pack("<H", len(ctxs)) + head[64 + 8:]
    return head + c._contexts(ctxs)


def session_setup_request(msg_id: int, *, binding: bool = False, sesid: int = 0, signed: bool = False) -> bytes:
    """SESSION_SETUP request; `binding` sets SMB2_SESSION_FLAG_BINDING for an existing `sesid`."""
    return (c.smb2_header(c.SESSION_SETUP, msg_id=msg_id, sesid=sesid, signed=signed)
            + struct.pack("<HBBIIHHQ", 25, SMB2_SESSION_FLAG_BINDING if binding else 0, 1, 1, 0, 0x58, 0, 0)
            + b"\0")


def create_request(msg_id: int, name: str = "f.txt", sesid: int = c.SESSION_ID, tid: int = c.TREE_ID) -> bytes:
    n = name.encode("utf-16-le")
    return (c.smb2_header(c.CREATE, msg_id=msg_id, sesid=sesid, tid=tid)
            + struct.pack("<HBBIQQIIIIIHHII", 57, 0, 0, 2, 0, 0, 0x12019F, 0x80, 7, 3, 0x40, 0x78, len(n), 0, 0)
            + n)


def create_response(msg_id: int, sesid: int = c.SESSION_ID, tid: int = c.TREE_ID) -> bytes:
    return (c.smb2_header(c.CREATE, msg_id=msg_id, response=True, sesid=sesid, tid=tid)
            + struct.pack("<HBBIQQQQQQII16sII", 89, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0x80, 0, FILE_ID, 0, 0) + b"\0")


def close_request(msg_id: int, sesid: int = c.SESSION_ID, tid: int = c.TREE_ID) -> bytes:
    return c.smb2_header(c.CLOSE, msg_id=msg_id, sesid=sesid, tid=tid) + struct.pack("<HHI16s", 24, 0, 0, FILE_ID)


def close_response(msg_id: int, sesid: int = c.SESSION_ID, tid: int = c.TREE_ID) -> bytes:
    return (c.smb2_header(c.CLOSE, msg_id=msg_id, response=True, sesid=sesid, tid=tid)
            + struct.pack("<HHIQQQQQQI", 60, 0, 0, 0, 0, 0, 0, 0, 0, 0))


def buffer_descriptor(offset: int, token: int, length: int) -> bytes:
    """SMB_DIRECT_BUFFER_DESCRIPTOR_V1 (MS-SMBD 2.2.3.1): the peer's registered memory."""
    return struct.pack("<QII", offset, token, length)


def rdma_write_request(msg_id: int, length: int, desc: bytes, channel: int = CHANNEL_RDMA_V1) -> bytes:
    """WRITE whose data the server pulls with RDMA READ (Channel RDMA_V1, no inline data)."""
    return (c.smb2_header(c.WRITE, msg_id=msg_id, sesid=c.SESSION_ID, tid=c.TREE_ID)
            + struct.pack("<HHIQ16sIIHHI", 49, 0x70, 0, 0, FILE_ID, channel, length, 0x70, len(desc), 0) + desc)


def rdma_read_request(msg_id: int, length: int, desc: bytes, channel: int = CHANNEL_RDMA_V1_INVALIDATE) -> bytes:
    """READ whose data the server pushes with RDMA WRITE into the client's buffer."""
    return (c.smb2_header(c.READ, msg_id=msg_id, sesid=c.SESSION_ID, tid=c.TREE_ID)
            + struct.pack("<HBBIQ16sIIIHH", 49, 0, 0, length, 0, FILE_ID, 1, channel, 0, 0x70, len(desc)) + desc)


def read_response(msg_id: int, remaining: int = 0, data: bytes = b"") -> bytes:
    """READ response: `remaining` bytes went by RDMA WRITE, or `data` follows inline."""
    return (c.smb2_header(c.READ, msg_id=msg_id, response=True, sesid=c.SESSION_ID, tid=c.TREE_ID)
            + struct.pack("<HBBIII", 17, 0x50, 0, len(data), remaining, 0) + (data or b"\0"))


# --------------------------------------------------------------------------- SMB over TCP features

def smb_features_capture(path: str | os.PathLike, *, transport_security: bool = True, encrypt_later: bool = False,
                         replay: bool = True, binding: bool = True, port: int = 445) -> Path:
    """Two TCP connections of one client.

    Connection 1: NEGOTIATE (response with TRANSPORT_CAPABILITIES/ACCEPT_TRANSPORT_LEVEL_SECURITY when
    `transport_security`), SESSION_SETUP, TREE_CONNECT, CREATE, WRITE, the same WRITE again with
    SMB2_FLAGS_REPLAY_OPERATION (`replay`), CLOSE; `encrypt_later` then sends an ECHO in a transform
    header (contradicting the accepted transport security).
    Connection 2: NEGOTIATE then SESSION_SETUP with SMB2_SESSION_FLAG_BINDING for the session of
    connection 1 (`binding`), or a plain SESSION_SETUP that creates a new session."""
    path = Path(path)
    w = c.RawIpWriter(path)
    sid = c.SESSION_ID
    flow = c.TcpFlow(w, cport=50000, sport=port)
    flow.handshake()
    neg = negotiate_response_tls(0) if transport_security else c.negotiate_response(0)
    write = c.write_request(5, b"r" * 300)
    msgs = [("c", c.negotiate_request(0)), ("s", neg),
            ("c", session_setup_request(1)), ("s", c.session_setup_response(1, sid)),
            ("c", c.tree_connect_request(2)), ("s", c.tree_connect_response(2)),
            ("c", create_request(3)), ("s", create_response(3)),
            ("c", write), ("s", c.write_response(5, 300))]
    if replay:
        msgs += [("c", with_flags(c.write_request(5, b"r" * 300), SMB2_FLAGS_REPLAY_OPERATION)),
                 ("s", c.write_response(5, 300))]
    msgs += [("c", close_request(6)), ("s", close_response(6))]
    for d, m in msgs:
        flow.send(d, c.direct_tcp(m))
    if encrypt_later:
        flow.send("c", c.direct_tcp(c.transform(c.echo(7), bytes(16), sid, 1)))
    flow2 = c.TcpFlow(w, cport=50001, sport=port)
    flow2.handshake()
    new_sid = sid + 0x100
    for d, m in [("c", c.negotiate_request(0)), ("s", c.negotiate_response(0)),
                 ("c", session_setup_request(1, binding=binding, sesid=sid if binding else 0, signed=binding)),
                 ("s", c.session_setup_response(1, sid if binding else new_sid))]:
        flow2.send(d, c.direct_tcp(m))
    flow2.close()
    flow.close()
    w.close()
    return path


# --------------------------------------------------------------------------- SMB Direct with RDMA

RDMA_WRITE_ONLY, RDMA_READ_REQUEST, RDMA_READ_RESPONSE_ONLY = 0x0A, 0x0C, 0x10


def _bth(opcode: int, qp: int, psn: int, pad: int = 0) -> bytes:
    return struct.pack(">BBHII", opcode, pad << 4, 0xFFFF, qp & 0xFFFFFF, psn & 0xFFFFFF)


def smbdirect_rdma_capture(path: str | os.PathLike, *, rdma_read: bool = True, rdma_write: bool = True) -> Path:
    """SMB Direct over RoCEv2: SMBD negotiate, SMB2 NEGOTIATE, then a WRITE with Channel RDMA_V1 that
    the server serves by an RDMA READ (READ_REQUEST + READ_RESPONSE_ONLY) and a READ with Channel
    RDMA_V1_INVALIDATE that it serves by an RDMA WRITE (RDMA_WRITE_ONLY). Without `rdma_read` /
    `rdma_write` the data goes inline instead (Channel NONE, no RDMA opcodes)."""
    from scapy.layers.inet import IP, UDP

    path = Path(path)
    w = c.RawIpWriter(path)
    psn = {"c": 0, "s": 0}
    qps = {"c": 0x11, "s": 0x22}

    def raw(d: str, payload: bytes) -> None:
        src, dst = (c.CLIENT, c.SERVER) if d == "c" else (c.SERVER, c.CLIENT)
        w.write(bytes(IP(src=src, dst=dst) / UDP(sport=49152, dport=4791) / payload))
        psn[d] += 1

    def send(d: str, smbd: bytes) -> None:
        raw(d, c._roce_send(qps[d], psn[d], smbd))

    send("c", c._smbd_negotiate_request())
    send("s", c._smbd_negotiate_response())
    send("c", c._smbd_data(c.negotiate_request(0)))
    send("s", c._smbd_data(c.negotiate_response(0)))
    data = bytes(range(256)) * 2
    if rdma_read:
        send("c", c._smbd_data(rdma_write_request(3, len(data), buffer_descriptor(0x7F0000001000, 0xAB01, len(data)))))
        reth = struct.pack(">QII", 0x7F0000001000, 0xAB01, len(data))
        raw("s", _bth(RDMA_READ_REQUEST, qps["c"], psn["s"]) + reth + bytes(4))
        raw("c", _bth(RDMA_READ_RESPONSE_ONLY, qps["s"], psn["c"]) + struct.pack(">I", 0) + data + bytes(4))
    else:
        send("c", c._smbd_data(c.write_request(3, data)))
    send("s", c._smbd_data(c.write_response(3, len(data))))
    if rdma_write:
        send("c", c._smbd_data(rdma_read_request(4, len(data), buffer_descriptor(0x7F0000002000, 0xAB02, len(data)))))
        reth = struct.pack(">QII", 0x7F0000002000, 0xAB02, len(data))
        raw("s", _bth(RDMA_WRITE_ONLY, qps["c"], psn["s"]) + reth + data + bytes(4))
        send("s", c._smbd_data(read_response(4, len(data))))
    else:
        send("c", c._smbd_data(rdma_read_request(4, len(data), b"\0", channel=0)))
        send("s", c._smbd_data(read_response(4, data=data)))
    w.close()
    return path


# --------------------------------------------------------------------------- QUIC: cleartext 1-RTT

def cleartext_1rtt(conn) -> None:
    """Make an aioquic connection send and accept 1-RTT packets without header protection and
    without payload encryption, as quic.ko does when both ends set disable_1rtt_encryption
    (private transport parameter 0xbaad). Applied after the handshake, on both ends."""
    from aioquic.quic.packet import decode_packet_number

    from wrappers.quic.aio import one_rtt_crypto

    crypto = one_rtt_crypto(conn)
    assert crypto is not None, "cleartext_1rtt needs the 1-RTT keys (after the handshake)"

    def encrypt_packet(plain_header: bytes, plain_payload: bytes, packet_number: int) -> bytes:
        return plain_header + plain_payload

    def decrypt_packet(packet: bytes, encrypted_offset: int, expected_packet_number: int):
        pn_len = (packet[0] & 0x03) + 1
        truncated = int.from_bytes(packet[encrypted_offset:encrypted_offset + pn_len], "big")
        pn = decode_packet_number(truncated, pn_len * 8, expected_packet_number)
        return packet[:encrypted_offset + pn_len], packet[encrypted_offset + pn_len:], pn

    crypto.encrypt_packet = encrypt_packet
    crypto.decrypt_packet = decrypt_packet
    crypto.aead_tag_size = 0
