"""RoCEv2 records for the capture: IPv4/IPv6 / UDP 4791 / InfiniBand BTH (+RETH/IETH/AETH) / payload / ICRC.

What tshark 4.0 hands to its smb_direct heuristic (checked with tshark 4.0.17): RC SEND opcodes only, each
SMBD message in one SEND_ONLY (IB segmentation is not reassembled), the ICRC is not checked.  RDMA
WRITE and READ are dissected at IB level with their RETH (VA = the descriptor's Offset, R_Key = its
Token, DMA length) and a ``data`` payload.

RDMA payloads in the capture: ``WIRECHECK_SMBDIRECT_PCAP_RDMA`` = ``head`` (default: one record
per operation with the first 4096 bytes of data, the RETH carries the true length) or ``full`` (the
data in 4096-byte IB MTU packets: WRITE FIRST/MIDDLE/LAST, READ RESPONSE FIRST/MIDDLE/LAST) or
``none`` (headers only).
"""

from __future__ import annotations

import os
import struct
import zlib

from .. import packets

ROCE_PORT = 4791


def flow_port(qp_a: int, qp_b: int) -> int:
    """A UDP source port in 0xC000-0xFFFF for the QP pair, the same whichever QP is ``qp_a``."""
    x = ((qp_a * 0x9E3779B1) ^ (qp_b * 0x9E3779B1)) & 0xFFFFFFFF
    return 0xC000 | ((x ^ (x >> 14) ^ (x >> 28)) & 0x3FFF)
IB_MTU = 4096

SEND_ONLY = 0x04
SEND_ONLY_INVALIDATE = 0x17
RDMA_WRITE_FIRST, RDMA_WRITE_MIDDLE, RDMA_WRITE_LAST, RDMA_WRITE_ONLY = 0x06, 0x07, 0x08, 0x0A
RDMA_READ_REQUEST = 0x0C
READ_RESPONSE_FIRST, READ_RESPONSE_MIDDLE, READ_RESPONSE_LAST, READ_RESPONSE_ONLY = 0x0D, 0x0E, 0x0F, 0x10
ACKNOWLEDGE = 0x11
AETH_NAK_REMOTE_ACCESS = 0x62  # NAK code 2 = remote access error

_BTH = struct.Struct(">BBHI I")  # opcode, se|m|pad|tver, pkey, (rsvd8|destqp24), (a|rsvd7|psn24)
_RETH = struct.Struct(">QII")
_AETH = struct.Struct(">I")
_BTH_IETH = struct.Struct(">BBHII I")  # BTH + IETH (the R_Key a SEND with Invalidate invalidates)
_ICRC = struct.Struct("<I")  # not the real ICRC (a CRC-32 of the headers); tshark does not check it
_PAD = (b"", b"\0", b"\0\0", b"\0\0\0")


def rdma_pcap_mode() -> str:
    mode = os.environ.get("WIRECHECK_SMBDIRECT_PCAP_RDMA", "head") or "head"
    return mode if mode in ("head", "full", "none") else "head"


def bth(opcode: int, dest_qp: int, psn: int, payload_len: int, ack_req: bool = False, solicited: bool = False) -> tuple[bytes, int]:
    pad = (-payload_len) % 4
    b1 = (0x80 if solicited else 0) | (pad << 4)
    return _BTH.pack(opcode, b1, 0xFFFF, dest_qp & 0xFFFFFF, ((0x80000000 if ack_req else 0) | (psn & 0xFFFFFF))), pad


def ib_packet(opcode: int, dest_qp: int, psn: int, ext: bytes, payload: bytes | memoryview, **kw) -> list[bytes | memoryview]:
    hdr, pad = bth(opcode, dest_qp, psn, len(payload), **kw)
    head = hdr + ext
    icrc = struct.pack("<I", zlib.crc32(head) & 0xFFFFFFFF)  # not the real ICRC; tshark does not check it
    return [head, payload, b"\0" * pad + icrc]


def send_only(dest_qp: int, psn: int, message: bytes, invalidate: int | None = None) -> bytes:
    """The UDP payload of the packet that carries one SMBD message: SEND_ONLY (SEND_ONLY_INVALIDATE
    with IETH when ``invalidate`` is a token) with SE and AckReq, the message, pad and ICRC.

    The same bytes as ``b"".join(ib_packet(...))`` for that packet, built with one join: every
    SMBD message is one of these (a 1 MiB inline message is hundreds of them), so the capture's
    cost per SEND is mostly this function and its record."""
    pad = -len(message) % 4
    if invalidate is None:
        head = _BTH.pack(SEND_ONLY, 0x80 | pad << 4, 0xFFFF, dest_qp & 0xFFFFFF, 0x80000000 | (psn & 0xFFFFFF))
    else:
        head = _BTH_IETH.pack(SEND_ONLY_INVALIDATE, 0x80 | pad << 4, 0xFFFF, dest_qp & 0xFFFFFF,
                              0x80000000 | (psn & 0xFFFFFF), invalidate & 0xFFFFFFFF)
    return b"".join((head, message, _PAD[pad], _ICRC.pack(zlib.crc32(head))))


def udp_record(src: tuple, dst: tuple, parts: list[bytes | memoryview]) -> list[bytes | memoryview]:
    payload = b"".join(bytes(p) for p in parts)
    return packets.build_udp(src, dst, payload)


def reth(va: int, rkey: int, length: int) -> bytes:
    return _RETH.pack(va & 0xFFFFFFFFFFFFFFFF, rkey & 0xFFFFFFFF, length & 0xFFFFFFFF)


def aeth(syndrome: int, msn: int) -> bytes:
    return _AETH.pack(((syndrome & 0xFF) << 24) | (msn & 0xFFFFFF))


def ieth(rkey: int) -> bytes:
    return struct.pack(">I", rkey & 0xFFFFFFFF)
