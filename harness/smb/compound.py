"""Whole SMB2 messages (header + body) and compound chains (§3.2.4.1.4, §3.3.5.2.7).

In a chain every element but the last is padded to 8 bytes and its NextCommand is the offset from
its own header to the next one; related operations set SMB2_FLAGS_RELATED_OPERATIONS on every
element after the first.  Signing happens after compounding because the MAC covers NextCommand and
the padding (§3.1.4.1): build, then sign each element (see crypto.sign_compound).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .constants import HeaderFlags
from .errors import malformed
from .header import HEADER_SIZE, Header
from .messages import Message, decode_body
from .wire import pad8


def pack_message(header: Header, body: Message | bytes) -> bytes:
    return header.pack() + (body if isinstance(body, bytes | bytearray) else body.pack())


def decode_message(buf: bytes) -> tuple[Header, Message]:
    """Decode one (non-compounded, or one element's) SMB2 message."""
    header = Header.unpack(buf)
    end = header.next_command or len(buf)
    return header, decode_body(header.command, header.is_response, bytes(buf[HEADER_SIZE:end]), header.status)


@dataclass
class CompoundElement:
    """One element of a chain: its header and its raw bytes, padding included (what the signature covers)."""

    header: Header
    raw: bytes

    @property
    def body(self) -> bytes:
        return self.raw[HEADER_SIZE:]


def split_compound(buf: bytes) -> list[CompoundElement]:
    """Split a (possibly compounded) SMB2 message.  Every NextCommand is validated by Header.unpack
    (8-aligned, inside the buffer), so the loop always advances and ends."""
    elements = []
    position = 0
    first = Header.unpack(buf)
    if first.next_command == 0:  # the common case: no chain, no copy (bytes or bytearray kept as is)
        return [CompoundElement(first, buf if isinstance(buf, bytes | bytearray) else bytes(buf))]
    while True:
        header = Header.unpack(buf[position:])
        if header.next_command == 0:
            elements.append(CompoundElement(header, bytes(buf[position:])))
            return elements
        elements.append(CompoundElement(header, bytes(buf[position : position + header.next_command])))
        position += header.next_command
        if position >= len(buf):
            raise malformed("compound: NextCommand points at the end of the buffer")


def build_compound(messages: Sequence[bytes], related: bool | Sequence[bool] = False) -> bytes:
    """Chain whole messages: pad all but the last to 8 bytes, set NextCommand, and set or clear the
    RELATED flag (``related`` for every element after the first, or one bool per element)."""
    if not messages:
        raise ValueError("a compound needs at least one message")
    flags_for = list(related) if not isinstance(related, bool) else [False] + [related] * (len(messages) - 1)
    if len(flags_for) != len(messages):
        raise ValueError("one related flag per message")
    out = bytearray()
    for index, message in enumerate(messages):
        element = bytearray(message)
        last = index == len(messages) - 1
        if not last:
            element += bytes(pad8(len(element)))
        header = Header.unpack(bytes(message))
        header.next_command = 0 if last else len(element)
        if flags_for[index]:
            header.flags |= HeaderFlags.RELATED_OPERATIONS
        else:
            header.flags &= ~HeaderFlags.RELATED_OPERATIONS
        element[:HEADER_SIZE] = header.pack()
        out += element
    return bytes(out)
