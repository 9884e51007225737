"""MS-SMBD messages (section 2.2) as bytes <-> dataclasses; no state, no I/O.

Parsing only checks what the layout itself needs (length); the rules that decide whether a
message is acceptable live in ``core.py`` with the state they depend on.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .constants import (
    BUFFER_DESCRIPTOR_SIZE,
    DATA_HEADER_SIZE,
    DATA_OFFSET,
    NEGOTIATE_REQUEST_SIZE,
    NEGOTIATE_RESPONSE_SIZE,
    SMBD_VERSION,
)

_NEG_REQ = struct.Struct("<HHHHIII")
_NEG_RESP = struct.Struct("<HHHHHHIIIII")
_DATA = struct.Struct("<HHHHIII")
_DESC = struct.Struct("<QII")


@dataclass
class NegotiateRequest:
    credits_requested: int
    preferred_send_size: int
    max_receive_size: int
    max_fragmented_size: int
    min_version: int = SMBD_VERSION
    max_version: int = SMBD_VERSION
    reserved: int = 0

    def encode(self) -> bytes:
        return _NEG_REQ.pack(self.min_version, self.max_version, self.reserved, self.credits_requested,
                             self.preferred_send_size, self.max_receive_size, self.max_fragmented_size)

    @classmethod
    def decode(cls, data: bytes) -> NegotiateRequest:
        if len(data) < NEGOTIATE_REQUEST_SIZE:
            raise ValueError("negotiate request shorter than 20 bytes")
        mn, mx, rsv, cr, pss, mrs, mfs = _NEG_REQ.unpack_from(data)
        return cls(cr, pss, mrs, mfs, mn, mx, rsv)


@dataclass
class NegotiateResponse:
    status: int
    credits_requested: int = 0
    credits_granted: int = 0
    max_read_write_size: int = 0
    preferred_send_size: int = 0
    max_receive_size: int = 0
    max_fragmented_size: int = 0
    negotiated_version: int = SMBD_VERSION
    min_version: int = SMBD_VERSION
    max_version: int = SMBD_VERSION
    reserved: int = 0

    def encode(self) -> bytes:
        return _NEG_RESP.pack(self.min_version, self.max_version, self.negotiated_version, self.reserved,
                              self.credits_requested, self.credits_granted, self.status,
                              self.max_read_write_size, self.preferred_send_size, self.max_receive_size,
                              self.max_fragmented_size)

    @classmethod
    def failure(cls, status: int) -> NegotiateResponse:
        """SMBD 3.1.5.3: everything but the versions and Status is zero."""
        return cls(status=status, negotiated_version=0)

    @classmethod
    def decode(cls, data: bytes) -> NegotiateResponse:
        if len(data) < NEGOTIATE_RESPONSE_SIZE:
            raise ValueError("negotiate response shorter than 32 bytes")
        mn, mx, nv, rsv, cr, cg, st, mrw, pss, mrs, mfs = _NEG_RESP.unpack_from(data)
        return cls(st, cr, cg, mrw, pss, mrs, mfs, nv, mn, mx, rsv)


@dataclass
class DataTransfer:
    credits_requested: int = 0
    credits_granted: int = 0
    flags: int = 0
    remaining_data_length: int = 0
    data: bytes | memoryview = b""
    data_offset: int = 0  # as received (0 when no payload); encode() always uses 24
    reserved: int = 0

    def encode(self) -> bytes:
        n = len(self.data)
        if n == 0:
            return _DATA.pack(self.credits_requested, self.credits_granted, self.flags, 0,
                              self.remaining_data_length, 0, 0)
        return b"".join((_DATA.pack(self.credits_requested, self.credits_granted, self.flags, 0,
                                    self.remaining_data_length, DATA_OFFSET, n), b"\0" * (DATA_OFFSET - DATA_HEADER_SIZE),
                         self.data))

    @classmethod
    def decode_header(cls, data: bytes | memoryview) -> tuple[int, int, int, int, int, int, int]:
        """(credits_requested, credits_granted, flags, reserved, remaining, data_offset, data_length)."""
        if len(data) < DATA_HEADER_SIZE:
            raise ValueError("data transfer message shorter than 20 bytes")
        return _DATA.unpack_from(data)  # type: ignore[return-value]


@dataclass(frozen=True)
class BufferDescriptor:
    """SMB_DIRECT_BUFFER_DESCRIPTOR_V1 (SMBD 2.2.3.1): Offset(8) Token(4) Length(4)."""

    offset: int
    token: int
    length: int

    def encode(self) -> bytes:
        return _DESC.pack(self.offset, self.token, self.length)

    @classmethod
    def decode(cls, data: bytes | memoryview, at: int = 0) -> BufferDescriptor:
        return cls(*_DESC.unpack_from(data, at))


def encode_descriptors(descs: list[BufferDescriptor]) -> bytes:
    return b"".join(d.encode() for d in descs)


def decode_descriptors(data: bytes | memoryview) -> list[BufferDescriptor]:
    if len(data) % BUFFER_DESCRIPTOR_SIZE or not data:
        raise ValueError("buffer descriptor array: length is not a non-zero multiple of 16")
    return [BufferDescriptor.decode(data, i) for i in range(0, len(data), BUFFER_DESCRIPTOR_SIZE)]


def split_descriptors(descs: list[BufferDescriptor], offset: int, length: int) -> list[tuple[BufferDescriptor, int, int]]:
    """SMBD 3.1.4.5/3.1.4.6: the (descriptor, start inside it, count) pieces that ``length`` bytes
    at ``offset`` into the concatenation of ``descs`` cover; ValueError if they do not fit."""
    out = []
    pos = 0
    want_lo, want_hi = offset, offset + length
    for d in descs:
        lo, hi = pos, pos + d.length
        a, b = max(lo, want_lo), min(hi, want_hi)
        if a < b:
            out.append((d, a - lo, b - a))
        pos = hi
    if offset < 0 or length < 0 or want_hi > pos:
        raise ValueError("range exceeds the buffer descriptors")
    return out
