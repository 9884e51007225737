"""What every SMB2 message body shares: its command, direction, StructureSize, and a registry that
maps (command, direction) to the classes able to decode it.

A body is everything after the 64-byte header.  Offsets inside bodies are counted from the start of
the header (§2.2: "offset, in bytes, from the beginning of the SMB2 header"), so bodies pack as if
they sat at offset 64, which is where they sit in every message, compounded or not.
"""

from __future__ import annotations

import struct
from typing import ClassVar

from ..wire import check_structure_size, unpack_from


class Message:
    """Base of all request/response bodies."""

    COMMAND: ClassVar[int]
    IS_RESPONSE: ClassVar[bool]
    STRUCTURE_SIZE: ClassVar[int]

    def pack(self) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def unpack(cls, body: bytes) -> Message:  # pragma: no cover - abstract
        raise NotImplementedError


class FixedMessage(Message):
    """A body whose fields all sit at fixed offsets.  ``_STRUCT`` starts with StructureSize ('H');
    reserved fields are pad bytes ('x') so they are written as zero and ignored on receipt, as
    MS-SMB2 asks for every Reserved field."""

    _STRUCT: ClassVar[struct.Struct]
    _FIELDS: ClassVar[tuple[str, ...]]

    def pack(self) -> bytes:
        return self._STRUCT.pack(self.STRUCTURE_SIZE, *(getattr(self, name) for name in self._FIELDS))

    @classmethod
    def unpack(cls, body: bytes):
        check_structure_size(body, cls.STRUCTURE_SIZE, cls.__name__)
        values = unpack_from(cls._STRUCT, body, 0, cls.__name__)
        return cls(**dict(zip(cls._FIELDS, values[1:], strict=True)))


# (command, is_response) -> candidate classes, told apart by StructureSize (OPLOCK_BREAK has an oplock
# and a lease variant, §2.2.23/§2.2.24/§2.2.25).
REGISTRY: dict[tuple[int, bool], list[type[Message]]] = {}


def register(cls: type[Message]) -> type[Message]:
    REGISTRY.setdefault((cls.COMMAND, cls.IS_RESPONSE), []).append(cls)
    return cls


def all_message_classes() -> list[type[Message]]:
    return [cls for classes in REGISTRY.values() for cls in classes]
