"""Bounds-checked little-endian primitives shared by every SMB2 structure.

Each read checks the buffer first and raises :class:`SMBProtocolError` instead of letting
``struct.error``/``IndexError`` escape: a harness that talks to buggy peers must turn every malformed
input into one well-defined error.  The aliases ``U8``..``U64``, ``Bytes16`` and ``Utf16`` document the
wire width of each dataclass field.  At run time they are distinct ``NewType``s, so property tests
can generate in-range values from the annotations alone; to the type checker they are plain
``int``/``bytes``/``str``: a NewType would demand ``U16(x)`` at every construction, which checks
nothing (the width is enforced where the field is packed, by ``struct``).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, NewType, TypeAlias

from .errors import malformed

if TYPE_CHECKING:
    U8: TypeAlias = int
    U16: TypeAlias = int
    U32: TypeAlias = int
    U64: TypeAlias = int
    Bytes16: TypeAlias = bytes
    Utf16: TypeAlias = str
else:
    U8 = NewType("U8", int)
    U16 = NewType("U16", int)
    U32 = NewType("U32", int)
    U64 = NewType("U64", int)
    Bytes16 = NewType("Bytes16", bytes)  # GUIDs, FileIds, lease keys, signatures: exactly 16 bytes
    Utf16 = NewType("Utf16", str)  # text carried as UTF-16LE without a terminating NUL

ZERO16 = bytes(16)
HEADER_SIZE = 64  # offsets in SMB2 bodies count from the start of the 64-byte header (§2.2.1)


def pad8(length: int) -> int:
    """Number of zero bytes that bring ``length`` up to the next multiple of 8."""
    return -length % 8


def align8(length: int) -> int:
    return length + pad8(length)


def unpack_from(fmt: struct.Struct, buf: bytes, offset: int, what: str) -> tuple:
    """``fmt.unpack_from`` that names the structure when ``buf`` is too short."""
    if offset < 0 or offset + fmt.size > len(buf):
        raise malformed(f"{what}: need {fmt.size} bytes at offset {offset}, buffer has {len(buf)}")
    return fmt.unpack_from(buf, offset)


def take(buf: bytes, offset: int, length: int, what: str) -> bytes:
    """The ``length`` bytes at ``offset``; an error if any of them lies outside ``buf``."""
    if length == 0:
        return b""
    if offset < 0 or length < 0 or offset + length > len(buf):
        raise malformed(f"{what}: {length} bytes at offset {offset} overrun a {len(buf)}-byte buffer")
    return bytes(buf[offset : offset + length])


def body_slice(body: bytes, offset: int, length: int, what: str, minimum: int) -> bytes:
    """A variable-length field addressed by an offset counted from the SMB2 header.

    ``minimum`` is the size of the fixed part: a buffer that overlaps it is malformed (§3.3.5.2 asks
    servers to reject offsets that point inside the fixed structure or past the message).
    """
    if length == 0:
        return b""
    relative = offset - HEADER_SIZE
    if relative < minimum:
        raise malformed(f"{what}: offset {offset} points inside the fixed part of the structure")
    return take(body, relative, length, what)


def decode_utf16(raw: bytes, what: str) -> str:
    """UTF-16LE to ``str``; unpaired surrogates survive (Windows names may hold them)."""
    if len(raw) % 2:
        raise malformed(f"{what}: odd UTF-16 length {len(raw)}")
    return raw.decode("utf-16-le", "surrogatepass")


def encode_utf16(text: str) -> bytes:
    return text.encode("utf-16-le", "surrogatepass")


def check_structure_size(body: bytes, expected: int, what: str) -> None:
    """Every SMB2 body starts with StructureSize; a mismatch is INVALID_PARAMETER (§3.3.5.2.6)."""
    (size,) = unpack_from(_U16, body, 0, what)
    if size != expected:
        raise malformed(f"{what}: StructureSize {size}, expected {expected}")
    # Structures whose size is odd count one byte of the variable buffer (§2.2: "StructureSize");
    # the fixed part is StructureSize rounded down to even and must be present.
    if len(body) < expected & ~1:
        raise malformed(f"{what}: body of {len(body)} bytes is shorter than its fixed part")


_U16 = struct.Struct("<H")
