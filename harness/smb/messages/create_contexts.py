"""CREATE contexts (§2.2.13.2, §2.2.14.2): a generic chain codec and typed helpers.

A chain entry is Next(4) NameOffset(2) NameLength(2) Reserved(2) DataOffset(2) DataLength(4), then
the name and the data, each 8-byte aligned within the entry; Next is the 8-aligned offset of the next
entry (0 on the last).  The chain codec keeps every context as (name, data) so unknown tags pass
through untouched; the typed classes convert one context's data to fields and back.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from ..errors import malformed
from ..wire import U16, U32, U64, ZERO16, Bytes16, pad8, take, unpack_from

_ENTRY = struct.Struct("<IHHHHI")

# Tags (§2.2.13.2).  Most are 4 ASCII bytes; AppInstanceId/Version are 16-byte GUIDs.
DHNQ = b"DHnQ"
DHNC = b"DHnC"
DH2Q = b"DH2Q"
DH2C = b"DH2C"
RQLS = b"RqLs"
MXAC = b"MxAc"
QFID = b"QFid"
EXTA = b"ExtA"
SECD = b"SecD"
ALSI = b"AlSi"
TWRP = b"TWrp"
APP_INSTANCE_ID = bytes.fromhex("45BCA66AEFA7F74A9008FA462E144D74")
APP_INSTANCE_VERSION = bytes.fromhex("B982D0B73B56074FA07B524A8116A010")


@dataclass
class CreateContext:
    name: bytes
    data: bytes = b""


def pack_create_contexts(contexts: list[CreateContext]) -> bytes:
    out = bytearray()
    for index, context in enumerate(contexts):
        name_offset = _ENTRY.size
        entry = bytearray(context.name)
        entry += bytes(pad8(name_offset + len(entry)))
        data_offset = name_offset + len(entry) if context.data else 0
        entry += context.data
        last = index == len(contexts) - 1
        if not last:
            entry += bytes(pad8(_ENTRY.size + len(entry)))
        next_offset = 0 if last else _ENTRY.size + len(entry)
        out += _ENTRY.pack(next_offset, name_offset, len(context.name), 0, data_offset, len(context.data)) + entry
    return bytes(out)


def unpack_create_contexts(buf: bytes) -> list[CreateContext]:
    """Decode a chain occupying all of ``buf``; offsets are checked against each entry's extent."""
    contexts = []
    position = 0
    while True:
        next_offset, name_offset, name_length, _r, data_offset, data_length = unpack_from(
            _ENTRY, buf, position, "create context")
        if next_offset:
            if next_offset % 8 or next_offset < _ENTRY.size:
                raise malformed(f"create context: Next {next_offset} not 8-aligned or inside the entry")
            end = position + next_offset
            if end > len(buf):
                raise malformed("create context: Next points past the end of the chain")
        else:
            end = len(buf)
        entry = buf[position:end]
        if name_length == 0 or name_offset < _ENTRY.size:
            raise malformed("create context: missing name or NameOffset inside the entry header")
        name = take(entry, name_offset, name_length, "create context name")
        data = b""
        if data_length:
            if data_offset < _ENTRY.size:
                raise malformed("create context: DataOffset inside the entry header")
            data = take(entry, data_offset, data_length, "create context data")
        contexts.append(CreateContext(name, data))
        if not next_offset:
            return contexts
        position = end


def find_context(contexts: list[CreateContext], name: bytes) -> CreateContext | None:
    return next((context for context in contexts if context.name == name), None)


class TypedContext:
    """A create context whose data has a fixed layout (``_STRUCT`` over ``_FIELDS``)."""

    NAME: ClassVar[bytes]
    _STRUCT: ClassVar[struct.Struct]
    _FIELDS: ClassVar[tuple[str, ...]]

    def pack_data(self) -> bytes:
        return self._STRUCT.pack(*(getattr(self, name) for name in self._FIELDS))

    def to_context(self) -> CreateContext:
        return CreateContext(self.NAME, self.pack_data())

    @classmethod
    def unpack_data(cls, data: bytes):
        if len(data) != cls._STRUCT.size:
            raise malformed(f"{cls.__name__}: {len(data)} data bytes, expected {cls._STRUCT.size}")
        return cls(**dict(zip(cls._FIELDS, cls._STRUCT.unpack(data), strict=True)))

    @classmethod
    def from_context(cls, context: CreateContext):
        if context.name != cls.NAME:
            raise malformed(f"{cls.__name__}: context is {context.name!r}, not {cls.NAME!r}")
        return cls.unpack_data(context.data)


@dataclass
class DurableHandleRequest(TypedContext):
    """DHnQ request: 16 reserved bytes (§2.2.13.2.3)."""

    NAME: ClassVar[bytes] = DHNQ
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<16x")
    _FIELDS: ClassVar[tuple[str, ...]] = ()


@dataclass
class DurableHandleResponse(TypedContext):
    """DHnQ response: 8 reserved bytes (§2.2.14.2.3)."""

    NAME: ClassVar[bytes] = DHNQ
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<8x")
    _FIELDS: ClassVar[tuple[str, ...]] = ()


@dataclass
class DurableHandleReconnect(TypedContext):
    """DHnC: the FileId of the durable open (§2.2.13.2.4)."""

    NAME: ClassVar[bytes] = DHNC
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<16s")
    _FIELDS: ClassVar[tuple[str, ...]] = ("file_id",)
    file_id: Bytes16 = ZERO16


@dataclass
class DurableHandleRequestV2(TypedContext):
    """DH2Q request: Timeout(4 ms) Flags(4, 0x2 PERSISTENT) Reserved(8) CreateGuid(16) (§2.2.13.2.11)."""

    NAME: ClassVar[bytes] = DH2Q
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<II8x16s")
    _FIELDS: ClassVar[tuple[str, ...]] = ("timeout", "flags", "create_guid")
    timeout: U32 = 0
    flags: U32 = 0
    create_guid: Bytes16 = ZERO16


@dataclass
class DurableHandleResponseV2(TypedContext):
    """DH2Q response: Timeout(4) Flags(4) (§2.2.14.2.12)."""

    NAME: ClassVar[bytes] = DH2Q
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<II")
    _FIELDS: ClassVar[tuple[str, ...]] = ("timeout", "flags")
    timeout: U32 = 0
    flags: U32 = 0


@dataclass
class DurableHandleReconnectV2(TypedContext):
    """DH2C: FileId(16) CreateGuid(16) Flags(4) (§2.2.13.2.12)."""

    NAME: ClassVar[bytes] = DH2C
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<16s16sI")
    _FIELDS: ClassVar[tuple[str, ...]] = ("file_id", "create_guid", "flags")
    file_id: Bytes16 = ZERO16
    create_guid: Bytes16 = ZERO16
    flags: U32 = 0


@dataclass
class LeaseV1(TypedContext):
    """RqLs, 32 bytes: LeaseKey(16) LeaseState(4) LeaseFlags(4) LeaseDuration(8) (§2.2.13.2.8).
    The same layout is the v1 response (§2.2.14.2.10)."""

    NAME: ClassVar[bytes] = RQLS
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<16sIIQ")
    _FIELDS: ClassVar[tuple[str, ...]] = ("lease_key", "lease_state", "lease_flags", "lease_duration")
    lease_key: Bytes16 = ZERO16
    lease_state: U32 = 0
    lease_flags: U32 = 0
    lease_duration: U64 = 0


@dataclass
class LeaseV2(TypedContext):
    """RqLs, 52 bytes: v1 fields + ParentLeaseKey(16) Epoch(2) Reserved(2) (§2.2.13.2.10, 3.x)."""

    NAME: ClassVar[bytes] = RQLS
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<16sIIQ16sH2x")
    _FIELDS: ClassVar[tuple[str, ...]] = ("lease_key", "lease_state", "lease_flags", "lease_duration",
                                          "parent_lease_key", "epoch")
    lease_key: Bytes16 = ZERO16
    lease_state: U32 = 0
    lease_flags: U32 = 0
    lease_duration: U64 = 0
    parent_lease_key: Bytes16 = ZERO16
    epoch: U16 = 0


def parse_lease(context: CreateContext) -> LeaseV1 | LeaseV2:
    """v1 and v2 share the tag; DataLength tells them apart (§2.2.13.2.8, §2.2.13.2.10)."""
    if context.name != RQLS:
        raise malformed(f"lease: context is {context.name!r}, not RqLs")
    return LeaseV2.unpack_data(context.data) if len(context.data) == 52 else LeaseV1.unpack_data(context.data)


@dataclass
class MaximalAccessRequest:
    """MxAc request: an optional Timestamp(8) FILETIME (§2.2.13.2.5)."""

    NAME: ClassVar[bytes] = MXAC
    timestamp: U64 | None = None

    def to_context(self) -> CreateContext:
        return CreateContext(MXAC, b"" if self.timestamp is None else struct.pack("<Q", self.timestamp))

    @classmethod
    def from_context(cls, context: CreateContext) -> MaximalAccessRequest:
        if context.name != MXAC or len(context.data) not in (0, 8):
            raise malformed("MxAc request: wrong name or length")
        return cls(struct.unpack("<Q", context.data)[0] if context.data else None)


@dataclass
class MaximalAccessResponse(TypedContext):
    """MxAc response: QueryStatus(4) MaximalAccess(4) (§2.2.14.2.5)."""

    NAME: ClassVar[bytes] = MXAC
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<II")
    _FIELDS: ClassVar[tuple[str, ...]] = ("query_status", "maximal_access")
    query_status: U32 = 0
    maximal_access: U32 = 0


@dataclass
class QueryOnDiskIdRequest(TypedContext):
    """QFid request: no data (§2.2.13.2.9)."""

    NAME: ClassVar[bytes] = QFID
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<")
    _FIELDS: ClassVar[tuple[str, ...]] = ()


@dataclass
class QueryOnDiskIdResponse(TypedContext):
    """QFid response: DiskFileId(8) VolumeId(8) Reserved(16) (§2.2.14.2.9)."""

    NAME: ClassVar[bytes] = QFID
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<QQ16x")
    _FIELDS: ClassVar[tuple[str, ...]] = ("disk_file_id", "volume_id")
    disk_file_id: U64 = 0
    volume_id: U64 = 0


@dataclass
class AppInstanceId(TypedContext):
    """SMB2_CREATE_APP_INSTANCE_ID: StructureSize(2)=20 Reserved(2) AppInstanceId(16) (§2.2.13.2.13)."""

    NAME: ClassVar[bytes] = APP_INSTANCE_ID
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<H2x16s")
    _FIELDS: ClassVar[tuple[str, ...]] = ("structure_size", "app_instance_id")
    structure_size: U16 = 20
    app_instance_id: Bytes16 = ZERO16


TYPED_CONTEXTS = [DurableHandleRequest, DurableHandleResponse, DurableHandleReconnect, DurableHandleRequestV2,
                  DurableHandleResponseV2, DurableHandleReconnectV2, LeaseV1, LeaseV2, MaximalAccessResponse,
                  QueryOnDiskIdRequest, QueryOnDiskIdResponse, AppInstanceId]

__all__ = ["CreateContext", "pack_create_contexts", "unpack_create_contexts", "find_context", "parse_lease",
           "MaximalAccessRequest", "TYPED_CONTEXTS", *[cls.__name__ for cls in TYPED_CONTEXTS]]
