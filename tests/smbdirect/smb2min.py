"""Minimal SMB2 PDUs for capture tests (no dependency on the SMB stack): ECHO, WRITE inline or
with an RDMA channel, READ with an RDMA channel, and their responses."""

from __future__ import annotations

import struct

from wrappers.smbdirect.messages import BufferDescriptor, encode_descriptors

ECHO, READ, WRITE = 13, 8, 9


def header(cmd: int, mid: int, response: bool = False, credits: int = 1) -> bytes:
    return struct.pack("<4sHHIHHIIQIIQ16s", b"\xfeSMB", 64, 1, 0, cmd, credits, 1 if response else 0, 0, mid, 0xFEFF,
                       1, 0x11, b"\0" * 16)


def echo(mid: int, response: bool = False) -> bytes:
    return header(ECHO, mid, response) + struct.pack("<HH", 4, 0)


FILE_ID = b"\x01" * 16


def write_inline(mid: int, data: bytes) -> bytes:
    body = struct.pack("<HHIQ16sIIHHI", 49, 0x70, len(data), 0, FILE_ID, 0, 0, 0, 0, 0)
    return header(WRITE, mid) + body + data


def write_rdma(mid: int, length: int, descs: list[BufferDescriptor], channel: int = 1) -> bytes:
    info = encode_descriptors(descs)
    body = struct.pack("<HHIQ16sIIHHI", 49, 0, 0, 0, FILE_ID, channel, length, 0x70, len(info), 0)
    return header(WRITE, mid) + body + info


def write_response(mid: int, count: int) -> bytes:
    return header(WRITE, mid, True) + struct.pack("<HHIIHH", 17, 0, count, 0, 0, 0)


def read_rdma(mid: int, length: int, descs: list[BufferDescriptor], channel: int = 2) -> bytes:
    info = encode_descriptors(descs)
    body = struct.pack("<HBBIQ16sIIIHH", 49, 0, 0, length, 0, FILE_ID, 0, channel, 0, 0x70, len(info))
    return header(READ, mid) + body + info


def read_response_rdma(mid: int, length: int) -> bytes:
    return header(READ, mid, True) + struct.pack("<HBBIII", 17, 0x50, 0, 0, length, 0) + b"\0"
