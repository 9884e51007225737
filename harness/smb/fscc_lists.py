"""MS-FSCC chained lists a file carries beside its data: extended attributes (§2.4.15
FileFullEaInformation, §2.4.15.1 FILE_GET_EA_INFORMATION), named streams (§2.4.44
FileStreamInformation), and the syntax of a stream name in a path (§2.1.5.1 "file:stream:$DATA").

Why apart from :mod:`harness.smb.fscc`: these are lists of variable-length entries chained by
NextEntryOffset with their own alignment (EA entries on 4 bytes, stream entries on 8), and their
validation rules produce their own statuses (an invalid EA name, an EA list that overruns its
buffer); every read is bounds-checked and raises :class:`SMBProtocolError` with that status.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .constants import NtStatus
from .errors import SMBProtocolError
from .wire import U8, Utf16, decode_utf16, encode_utf16

STATUS_INVALID_EA_NAME = NtStatus.INVALID_EA_NAME
STATUS_EA_LIST_INCONSISTENT = NtStatus.EA_LIST_INCONSISTENT
FILE_NEED_EA = 0x80
MAX_EA_LIST = 0xFFFF  # NTFS keeps at most 64 KiB of EAs per file (what ExtendedAttributesSize can hold)
# MS-FSCC §2.4.15: EaName is ASCII, and may not hold these (nor control characters).
_EA_NAME_FORBIDDEN = set('"*+,/:;<=>?[\\]|')

_EA = struct.Struct("<IBBH")
_GET_EA = struct.Struct("<IB")
_STREAM = struct.Struct("<IIqq")


def _chain(entries: list[bytes], align: int) -> bytes:
    """Entries chained by a leading NextEntryOffset(4): each but the last padded to ``align`` and
    pointing at the next; the last has 0."""
    out = bytearray()
    for index, entry in enumerate(entries):
        raw = bytearray(entry)
        if index < len(entries) - 1:
            raw += bytes(-len(raw) % align)
            struct.pack_into("<I", raw, 0, len(raw))
        out += raw
    return bytes(out)


@dataclass
class FullEa:
    """§2.4.15: one FILE_FULL_EA_INFORMATION entry (NextEntryOffset is computed on pack)."""

    name: str
    value: bytes = b""
    flags: U8 = 0

    def packed_size(self) -> int:
        return _EA.size + len(self.name) + 1 + len(self.value)


def check_ea_name(name: str) -> None:
    if not name or len(name) > 255 or any(ord(ch) < 0x20 or ord(ch) > 0x7E or ch in _EA_NAME_FORBIDDEN for ch in name):
        raise SMBProtocolError(STATUS_INVALID_EA_NAME, f"invalid EA name {name!r}")


def pack_full_eas(eas: list[FullEa]) -> bytes:
    return _chain([_EA.pack(0, ea.flags, len(ea.name), len(ea.value)) + ea.name.encode("ascii") + b"\x00" + ea.value
                   for ea in eas], 4)


def unpack_full_eas(buf: bytes) -> list[FullEa]:
    """A chain filling ``buf``: entries 4-byte aligned, each inside the buffer, names valid."""
    eas: list[FullEa] = []
    at = 0
    if not buf:
        return eas
    while True:
        if at + _EA.size > len(buf):
            raise SMBProtocolError(STATUS_EA_LIST_INCONSISTENT, f"EA entry at {at} overruns a {len(buf)}-byte list")
        nxt, flags, name_len, value_len = _EA.unpack_from(buf, at)
        end = at + _EA.size + name_len + 1 + value_len
        if end > len(buf) or (nxt and at + nxt < end):
            raise SMBProtocolError(STATUS_EA_LIST_INCONSISTENT, f"EA entry at {at} overruns its space")
        raw = bytes(buf[at + _EA.size:at + _EA.size + name_len])
        if buf[at + _EA.size + name_len] != 0:
            raise SMBProtocolError(STATUS_EA_LIST_INCONSISTENT, f"EA name at {at} is not NUL-terminated")
        try:
            name = raw.decode("ascii")
        except UnicodeDecodeError as exc:
            raise SMBProtocolError(STATUS_INVALID_EA_NAME, f"EA name at {at} is not ASCII") from exc
        check_ea_name(name)
        eas.append(FullEa(name, bytes(buf[end - value_len:end]), flags))
        if not nxt:
            return eas
        if nxt % 4:
            raise SMBProtocolError(STATUS_EA_LIST_INCONSISTENT, f"EA NextEntryOffset {nxt} not 4-byte aligned")
        at += nxt


def unpack_get_eas(buf: bytes) -> list[str]:
    """§2.4.15.1 FILE_GET_EA_INFORMATION: NextEntryOffset(4) EaNameLength(1) EaName (NUL-terminated)."""
    names: list[str] = []
    at = 0
    if not buf:
        return names
    while True:
        if at + _GET_EA.size > len(buf):
            raise SMBProtocolError(STATUS_EA_LIST_INCONSISTENT, f"EA name entry at {at} overruns the buffer")
        nxt, length = _GET_EA.unpack_from(buf, at)
        if at + _GET_EA.size + length > len(buf):
            raise SMBProtocolError(STATUS_EA_LIST_INCONSISTENT, f"EA name at {at} overruns the buffer")
        raw = bytes(buf[at + _GET_EA.size:at + _GET_EA.size + length])
        try:
            names.append(raw.decode("ascii"))
        except UnicodeDecodeError as exc:
            raise SMBProtocolError(STATUS_INVALID_EA_NAME, f"EA name at {at} is not ASCII") from exc
        check_ea_name(names[-1])
        if not nxt:
            return names
        if nxt < _GET_EA.size + length:
            raise SMBProtocolError(STATUS_EA_LIST_INCONSISTENT, f"EA name entry at {at}: NextEntryOffset {nxt}")
        at += nxt


@dataclass
class StreamEntry:
    """§2.4.44: one FILE_STREAM_INFORMATION entry; ``name`` as listed (``::$DATA``, ``:s:$DATA``)."""

    name: Utf16
    size: int
    allocation_size: int


def pack_streams(entries: list[StreamEntry]) -> bytes:
    return _chain([_STREAM.pack(0, len(encode_utf16(e.name)), e.size, e.allocation_size) + encode_utf16(e.name)
                   for e in entries], 8)


def unpack_streams(buf: bytes) -> list[StreamEntry]:
    entries: list[StreamEntry] = []
    at = 0
    if not buf:
        return entries
    while True:
        if at + _STREAM.size > len(buf):
            raise SMBProtocolError(NtStatus.INVALID_PARAMETER, f"stream entry at {at} overruns the buffer")
        nxt, name_len, size, alloc = _STREAM.unpack_from(buf, at)
        if at + _STREAM.size + name_len > len(buf):
            raise SMBProtocolError(NtStatus.INVALID_PARAMETER, f"stream name at {at} overruns the buffer")
        entries.append(StreamEntry(decode_utf16(bytes(buf[at + _STREAM.size:at + _STREAM.size + name_len]),
                                                "stream name"), size, alloc))
        if not nxt:
            return entries
        at += nxt


# ------------------------------------------------------------------------------------------------
# Stream names in paths (MS-FSCC §2.1.5.1; MS-FSA 2.1.5.1: "file:stream:type")
# ------------------------------------------------------------------------------------------------

_STREAM_NAME_FORBIDDEN = set('/\\:\x00')


def split_stream(name: str) -> tuple[str, str | None]:
    """(file name, stream name) of a CREATE or rename name.  The stream is None for the file itself
    (no colon, or the default stream ``::$DATA``).  Only the last component may name a stream; a
    type other than $DATA, an empty stream name with no type, or a stream name with a separator
    is STATUS_OBJECT_NAME_INVALID."""
    last_sep = max(name.rfind("\\"), name.rfind("/"))
    colon = name.find(":", last_sep + 1)
    if colon < 0:
        if ":" in name:
            raise SMBProtocolError(NtStatus.OBJECT_NAME_INVALID, f"stream syntax in a directory of {name!r}")
        return name, None
    if ":" in name[:last_sep + 1]:
        raise SMBProtocolError(NtStatus.OBJECT_NAME_INVALID, f"stream syntax in a directory of {name!r}")
    base, rest = name[:colon], name[colon + 1:]
    stream, sep, kind = rest.partition(":")
    if sep and kind.upper() != "$DATA":
        raise SMBProtocolError(NtStatus.OBJECT_NAME_INVALID, f"stream type {kind!r} in {name!r}")
    if not stream:
        if not sep:
            raise SMBProtocolError(NtStatus.OBJECT_NAME_INVALID, f"empty stream name in {name!r}")
        return base, None  # file::$DATA is the file itself
    if any(ch in _STREAM_NAME_FORBIDDEN for ch in stream) or len(stream) > 255:
        raise SMBProtocolError(NtStatus.OBJECT_NAME_INVALID, f"invalid stream name {stream!r}")
    return base, stream


def stream_listing_name(stream: str | None) -> str:
    """How FileStreamInformation spells a stream: ``::$DATA`` for the file's own data."""
    return "::$DATA" if stream is None else f":{stream}:$DATA"
