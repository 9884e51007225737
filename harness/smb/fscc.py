"""MS-FSCC information classes carried by QUERY_INFO, SET_INFO and QUERY_DIRECTORY, and FILETIME.

Fixed-size classes are declared as a struct over named fields; classes ending in a file name keep
its length field implicit.  Directory entries (§2.4.x *DirectoryInformation) chain with
NextEntryOffset, each entry 8-byte aligned (MS-FSCC §2.4: "entries MUST be aligned on 8-byte
boundaries"); the last has NextEntryOffset 0.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import ClassVar, TypeVar

from .errors import malformed
from .wire import U8, U32, U64, Utf16, decode_utf16, encode_utf16, pad8, take, unpack_from

# ------------------------------------------------------------------------------------------------
# FILETIME (MS-DTYP §2.3.3): 100-ns intervals since 1601-01-01 UTC.
# ------------------------------------------------------------------------------------------------

FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)
FILETIME_UNIX_OFFSET = 116444736000000000  # 1970-01-01 in FILETIME units


def filetime_from_unix_ns(unix_ns: int) -> int:
    return unix_ns // 100 + FILETIME_UNIX_OFFSET


def filetime_to_unix_ns(filetime: int) -> int:
    return (filetime - FILETIME_UNIX_OFFSET) * 100


def filetime_from_datetime(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("FILETIME conversion needs an aware datetime")
    delta = moment - FILETIME_EPOCH
    return (delta.days * 86400 + delta.seconds) * 10_000_000 + delta.microseconds * 10


def filetime_to_datetime(filetime: int) -> datetime:
    return FILETIME_EPOCH + timedelta(microseconds=filetime // 10)


# ------------------------------------------------------------------------------------------------
# Bases
# ------------------------------------------------------------------------------------------------


class FixedInfo:
    """An information class with only fixed fields (reserved bytes are 'x' pads)."""

    INFO_CLASS: ClassVar[int]
    _STRUCT: ClassVar[struct.Struct]
    _FIELDS: ClassVar[tuple[str, ...]]

    def pack(self) -> bytes:
        return self._STRUCT.pack(*(getattr(self, name) for name in self._FIELDS))

    @classmethod
    def unpack(cls, buf: bytes):
        return cls(**dict(zip(cls._FIELDS, unpack_from(cls._STRUCT, buf, 0, cls.__name__), strict=True)))


class NamedInfo(FixedInfo):
    """Fixed fields, then FileNameLength(4) at ``_NAME_LENGTH_AT`` among them, then the name.
    The name-length field is not a dataclass field: it is computed on pack."""

    _NAME_FIELD: ClassVar[str] = "file_name"

    def pack(self) -> bytes:
        name = encode_utf16(getattr(self, self._NAME_FIELD))
        values = [len(name) if field_name == "_name_length" else getattr(self, field_name) for field_name in self._FIELDS]
        return self._STRUCT.pack(*values) + name

    @classmethod
    def unpack(cls, buf: bytes):
        values = dict(zip(cls._FIELDS, unpack_from(cls._STRUCT, buf, 0, cls.__name__), strict=True))
        length = values.pop("_name_length")
        raw = take(buf, cls._STRUCT.size, length, f"{cls.__name__} name")
        if len(raw) != length:
            raise malformed(f"{cls.__name__}: name truncated")
        values[cls._NAME_FIELD] = decode_utf16(raw, f"{cls.__name__} name")
        return cls(**values)


# ------------------------------------------------------------------------------------------------
# File information classes (MS-FSCC §2.4)
# ------------------------------------------------------------------------------------------------


@dataclass
class FileBasicInformation(FixedInfo):
    """§2.4.7: four FILETIMEs, FileAttributes, Reserved(4)."""

    INFO_CLASS: ClassVar[int] = 4
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<QQQQI4x")
    _FIELDS: ClassVar[tuple[str, ...]] = ("creation_time", "last_access_time", "last_write_time", "change_time",
                                          "file_attributes")
    creation_time: U64 = 0
    last_access_time: U64 = 0
    last_write_time: U64 = 0
    change_time: U64 = 0
    file_attributes: U32 = 0


@dataclass
class FileStandardInformation(FixedInfo):
    """§2.4.41: AllocationSize EndOfFile NumberOfLinks DeletePending(1) Directory(1) Reserved(2)."""

    INFO_CLASS: ClassVar[int] = 5
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<QQIBB2x")
    _FIELDS: ClassVar[tuple[str, ...]] = ("allocation_size", "end_of_file", "number_of_links", "delete_pending",
                                          "directory")
    allocation_size: U64 = 0
    end_of_file: U64 = 0
    number_of_links: U32 = 1
    delete_pending: U8 = 0
    directory: U8 = 0


@dataclass
class FileInternalInformation(FixedInfo):
    """§2.4.22: IndexNumber(8), the file id."""

    INFO_CLASS: ClassVar[int] = 6
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<Q")
    _FIELDS: ClassVar[tuple[str, ...]] = ("index_number",)
    index_number: U64 = 0


@dataclass
class FileEaInformation(FixedInfo):
    """§2.4.12: EaSize(4)."""

    INFO_CLASS: ClassVar[int] = 7
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<I")
    _FIELDS: ClassVar[tuple[str, ...]] = ("ea_size",)
    ea_size: U32 = 0


@dataclass
class FileAccessInformation(FixedInfo):
    """§2.4.1: AccessFlags(4), the granted access of the open."""

    INFO_CLASS: ClassVar[int] = 8
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<I")
    _FIELDS: ClassVar[tuple[str, ...]] = ("access_flags",)
    access_flags: U32 = 0


@dataclass
class FilePositionInformation(FixedInfo):
    """§2.4.35: CurrentByteOffset(8)."""

    INFO_CLASS: ClassVar[int] = 14
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<Q")
    _FIELDS: ClassVar[tuple[str, ...]] = ("current_byte_offset",)
    current_byte_offset: U64 = 0


@dataclass
class FileModeInformation(FixedInfo):
    """§2.4.26: Mode(4)."""

    INFO_CLASS: ClassVar[int] = 16
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<I")
    _FIELDS: ClassVar[tuple[str, ...]] = ("mode",)
    mode: U32 = 0


@dataclass
class FileAlignmentInformation(FixedInfo):
    """§2.4.3: AlignmentRequirement(4)."""

    INFO_CLASS: ClassVar[int] = 17
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<I")
    _FIELDS: ClassVar[tuple[str, ...]] = ("alignment_requirement",)
    alignment_requirement: U32 = 0


@dataclass
class FileNetworkOpenInformation(FixedInfo):
    """§2.4.29: four FILETIMEs, AllocationSize, EndOfFile, FileAttributes, Reserved(4)."""

    INFO_CLASS: ClassVar[int] = 34
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<QQQQQQI4x")
    _FIELDS: ClassVar[tuple[str, ...]] = ("creation_time", "last_access_time", "last_write_time", "change_time",
                                          "allocation_size", "end_of_file", "file_attributes")
    creation_time: U64 = 0
    last_access_time: U64 = 0
    last_write_time: U64 = 0
    change_time: U64 = 0
    allocation_size: U64 = 0
    end_of_file: U64 = 0
    file_attributes: U32 = 0


@dataclass
class FileAttributeTagInformation(FixedInfo):
    """§2.4.6: FileAttributes(4) ReparseTag(4)."""

    INFO_CLASS: ClassVar[int] = 35
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<II")
    _FIELDS: ClassVar[tuple[str, ...]] = ("file_attributes", "reparse_tag")
    file_attributes: U32 = 0
    reparse_tag: U32 = 0


@dataclass
class FileEndOfFileInformation(FixedInfo):
    """§2.4.14: EndOfFile(8) (SET_INFO: truncate/extend)."""

    INFO_CLASS: ClassVar[int] = 20
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<Q")
    _FIELDS: ClassVar[tuple[str, ...]] = ("end_of_file",)
    end_of_file: U64 = 0


@dataclass
class FileDispositionInformation(FixedInfo):
    """§2.4.11: DeletePending(1) (SET_INFO: delete on close)."""

    INFO_CLASS: ClassVar[int] = 13
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<B")
    _FIELDS: ClassVar[tuple[str, ...]] = ("delete_pending",)
    delete_pending: U8 = 0


@dataclass
class FileRenameInformation(NamedInfo):
    """§2.4.42.2 (TYPE_2, the SMB2 form): ReplaceIfExists(1) Reserved(7) RootDirectory(8)
    FileNameLength(4) FileName, padded to at least 24 bytes."""

    INFO_CLASS: ClassVar[int] = 10
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<B7xQI")
    _FIELDS: ClassVar[tuple[str, ...]] = ("replace_if_exists", "root_directory", "_name_length")
    replace_if_exists: U8 = 0
    root_directory: U64 = 0
    file_name: Utf16 = ""

    def pack(self) -> bytes:
        return super().pack().ljust(24, b"\x00")


@dataclass
class FileNameInformation(NamedInfo):
    """§2.4.28 (FILE_NAME_INFORMATION): FileNameLength(4) FileName."""

    INFO_CLASS: ClassVar[int] = 9
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<I")
    _FIELDS: ClassVar[tuple[str, ...]] = ("_name_length",)
    file_name: Utf16 = ""


@dataclass
class FileAllInformation:
    """§2.4.2: Basic, Standard, Internal, Ea, Access, Position, Mode, Alignment, Name — in that order."""

    INFO_CLASS: ClassVar[int] = 18
    basic: FileBasicInformation = field(default_factory=FileBasicInformation)
    standard: FileStandardInformation = field(default_factory=FileStandardInformation)
    internal: FileInternalInformation = field(default_factory=FileInternalInformation)
    ea: FileEaInformation = field(default_factory=FileEaInformation)
    access: FileAccessInformation = field(default_factory=FileAccessInformation)
    position: FilePositionInformation = field(default_factory=FilePositionInformation)
    mode: FileModeInformation = field(default_factory=FileModeInformation)
    alignment: FileAlignmentInformation = field(default_factory=FileAlignmentInformation)
    name: FileNameInformation = field(default_factory=FileNameInformation)

    _PARTS: ClassVar[tuple[tuple[str, type[FixedInfo]], ...]] = (
        ("basic", FileBasicInformation), ("standard", FileStandardInformation),
        ("internal", FileInternalInformation), ("ea", FileEaInformation), ("access", FileAccessInformation),
        ("position", FilePositionInformation), ("mode", FileModeInformation),
        ("alignment", FileAlignmentInformation))

    def pack(self) -> bytes:
        return b"".join(getattr(self, name).pack() for name, _ in self._PARTS) + self.name.pack()

    @classmethod
    def unpack(cls, buf: bytes) -> FileAllInformation:
        parts = {}
        position = 0
        for name, part in cls._PARTS:
            parts[name] = part.unpack(buf[position:])
            position += part._STRUCT.size
        return cls(**parts, name=FileNameInformation.unpack(buf[position:]))


# ------------------------------------------------------------------------------------------------
# Directory information (QUERY_DIRECTORY output), MS-FSCC §2.4.x
# ------------------------------------------------------------------------------------------------


class DirectoryEntry(NamedInfo):
    """Entries start with NextEntryOffset(4) FileIndex(4); NextEntryOffset is computed by
    :func:`pack_directory_entries`, so it is not a field (``_next`` in the layout)."""

    file_name: str  # every entry class has the name (declared here for the checker; not a field of this base)

    def pack_entry(self, next_offset: int) -> bytes:
        name = encode_utf16(self.file_name)
        values = []
        for field_name in self._FIELDS:
            if field_name == "_next":
                values.append(next_offset)
            elif field_name == "_name_length":
                values.append(len(name))
            else:
                values.append(getattr(self, field_name))
        return self._STRUCT.pack(*values) + name

    def pack(self) -> bytes:
        return self.pack_entry(0)

    @classmethod
    def unpack(cls, buf: bytes):
        values = dict(zip(cls._FIELDS, unpack_from(cls._STRUCT, buf, 0, cls.__name__), strict=True))
        values.pop("_next")
        length = values.pop("_name_length")
        raw = take(buf, cls._STRUCT.size, length, f"{cls.__name__} name")
        if len(raw) != length:
            raise malformed(f"{cls.__name__}: name truncated")
        values["file_name"] = decode_utf16(raw, f"{cls.__name__} name")
        return cls(**values)


_DIR_COMMON = ("_next", "file_index", "creation_time", "last_access_time", "last_write_time", "change_time",
               "end_of_file", "allocation_size", "file_attributes", "_name_length")


@dataclass
class FileDirectoryInformation(DirectoryEntry):
    """§2.4.10."""

    INFO_CLASS: ClassVar[int] = 1
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<IIQQQQQQII")
    _FIELDS: ClassVar[tuple[str, ...]] = _DIR_COMMON
    file_name: Utf16 = ""
    file_index: U32 = 0
    creation_time: U64 = 0
    last_access_time: U64 = 0
    last_write_time: U64 = 0
    change_time: U64 = 0
    end_of_file: U64 = 0
    allocation_size: U64 = 0
    file_attributes: U32 = 0


@dataclass
class FileFullDirectoryInformation(FileDirectoryInformation):
    """§2.4.17: + EaSize(4)."""

    INFO_CLASS: ClassVar[int] = 2
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<IIQQQQQQIII")
    _FIELDS: ClassVar[tuple[str, ...]] = (*_DIR_COMMON, "ea_size")
    ea_size: U32 = 0


@dataclass
class FileIdFullDirectoryInformation(FileDirectoryInformation):
    """§2.4.20: + EaSize(4) Reserved(4) FileId(8)."""

    INFO_CLASS: ClassVar[int] = 38
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<IIQQQQQQIII4xQ")
    _FIELDS: ClassVar[tuple[str, ...]] = (*_DIR_COMMON, "ea_size", "file_id")
    ea_size: U32 = 0
    file_id: U64 = 0


@dataclass
class FileBothDirectoryInformation(FileDirectoryInformation):
    """§2.4.8: + EaSize(4) ShortNameLength(1) Reserved(1) ShortName(24)."""

    INFO_CLASS: ClassVar[int] = 3
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<IIQQQQQQIIIBx24s")
    _FIELDS: ClassVar[tuple[str, ...]] = (*_DIR_COMMON, "ea_size", "_short_length", "_short_raw")
    ea_size: U32 = 0
    short_name: Utf16 = ""

    def pack_entry(self, next_offset: int) -> bytes:
        return _pack_with_short_name(self, next_offset)

    @classmethod
    def unpack(cls, buf: bytes):
        return _unpack_with_short_name(cls, buf)


@dataclass
class FileIdBothDirectoryInformation(FileDirectoryInformation):
    """§2.4.19: + EaSize(4) ShortNameLength(1) Reserved1(1) ShortName(24) Reserved2(2) FileId(8)."""

    INFO_CLASS: ClassVar[int] = 37
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<IIQQQQQQIIIBx24s2xQ")
    _FIELDS: ClassVar[tuple[str, ...]] = (*_DIR_COMMON, "ea_size", "_short_length", "_short_raw", "file_id")
    ea_size: U32 = 0
    short_name: Utf16 = ""
    file_id: U64 = 0

    def pack_entry(self, next_offset: int) -> bytes:
        return _pack_with_short_name(self, next_offset)

    @classmethod
    def unpack(cls, buf: bytes):
        return _unpack_with_short_name(cls, buf)


def _pack_with_short_name(entry, next_offset: int) -> bytes:
    name = encode_utf16(entry.file_name)
    short = encode_utf16(entry.short_name)
    if len(short) > 24:
        raise ValueError("ShortName holds at most 12 UTF-16 characters (8.3)")
    computed = {"_next": next_offset, "_name_length": len(name), "_short_length": len(short), "_short_raw": short}
    values = [computed[name_] if name_ in computed else getattr(entry, name_) for name_ in entry._FIELDS]
    return entry._STRUCT.pack(*values) + name


def _unpack_with_short_name(cls, buf: bytes):
    values = dict(zip(cls._FIELDS, unpack_from(cls._STRUCT, buf, 0, cls.__name__), strict=True))
    values.pop("_next")
    length = values.pop("_name_length")
    short_length = values.pop("_short_length")
    short_raw = values.pop("_short_raw")
    if short_length > 24:
        raise malformed(f"{cls.__name__}: ShortNameLength {short_length} > 24")
    raw = take(buf, cls._STRUCT.size, length, f"{cls.__name__} name")
    if len(raw) != length:
        raise malformed(f"{cls.__name__}: name truncated")
    values["file_name"] = decode_utf16(raw, f"{cls.__name__} name")
    values["short_name"] = decode_utf16(short_raw[:short_length], f"{cls.__name__} short name")
    return cls(**values)


@dataclass
class FileNamesInformation(DirectoryEntry):
    """§2.4.33: NextEntryOffset FileIndex FileNameLength FileName."""

    INFO_CLASS: ClassVar[int] = 12
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<III")
    _FIELDS: ClassVar[tuple[str, ...]] = ("_next", "file_index", "_name_length")
    file_name: Utf16 = ""
    file_index: U32 = 0


_Entry = TypeVar("_Entry", bound=DirectoryEntry)

DIRECTORY_CLASSES: dict[int, type[DirectoryEntry]] = {
    cls.INFO_CLASS: cls
    for cls in (FileDirectoryInformation, FileFullDirectoryInformation, FileIdFullDirectoryInformation,
                FileBothDirectoryInformation, FileIdBothDirectoryInformation, FileNamesInformation)
}


def pack_directory_entries(entries: list[DirectoryEntry]) -> bytes:
    """Chain entries: each but the last padded to 8 bytes, NextEntryOffset = padded size."""
    out = bytearray()
    for index, entry in enumerate(entries):
        raw = entry.pack_entry(0)
        if index != len(entries) - 1:
            size = len(raw) + pad8(len(raw))
            raw = entry.pack_entry(size).ljust(size, b"\x00")
        out += raw
    return bytes(out)


def unpack_directory_entries(info_class: int, buf: bytes) -> list[DirectoryEntry]:
    """A QUERY_DIRECTORY output of the information class ``info_class`` (a number from the wire)."""
    cls = DIRECTORY_CLASSES.get(info_class)
    if cls is None:
        raise malformed(f"unsupported directory information class {info_class}")
    return unpack_entries(cls, buf)


def unpack_entries(cls: type[_Entry], buf: bytes) -> list[_Entry]:
    """A chain of ``cls`` entries, for a caller that knows which class it asked for (the entries
    come back typed as that class)."""
    entries: list[_Entry] = []
    position = 0
    while buf[position:]:
        (next_offset,) = unpack_from(_U32, buf, position, cls.__name__)
        end = position + next_offset if next_offset else len(buf)
        if next_offset and (next_offset % 8 or end > len(buf) or next_offset < cls._STRUCT.size):
            raise malformed(f"{cls.__name__}: NextEntryOffset {next_offset} invalid")
        entries.append(cls.unpack(buf[position:end]))
        if not next_offset:
            break
        position = end
    return entries


_U32 = struct.Struct("<I")


# ------------------------------------------------------------------------------------------------
# File system information classes (MS-FSCC §2.5)
# ------------------------------------------------------------------------------------------------


@dataclass
class FileFsVolumeInformation(FixedInfo):
    """§2.5.9: VolumeCreationTime(8) VolumeSerialNumber(4) VolumeLabelLength(4) SupportsObjects(1)
    Reserved(1) VolumeLabel."""

    INFO_CLASS: ClassVar[int] = 1
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<QIIBx")
    volume_creation_time: U64 = 0
    volume_serial_number: U32 = 0
    supports_objects: U8 = 0
    volume_label: Utf16 = ""

    def pack(self) -> bytes:
        label = encode_utf16(self.volume_label)
        return self._STRUCT.pack(self.volume_creation_time, self.volume_serial_number, len(label),
                                 self.supports_objects) + label

    @classmethod
    def unpack(cls, buf: bytes) -> FileFsVolumeInformation:
        created, serial, length, objects = unpack_from(cls._STRUCT, buf, 0, cls.__name__)
        raw = take(buf, cls._STRUCT.size, length, "volume label")
        if len(raw) != length:
            raise malformed("FileFsVolumeInformation: label truncated")
        return cls(created, serial, objects, decode_utf16(raw, "volume label"))


@dataclass
class FileFsSizeInformation(FixedInfo):
    """§2.5.8."""

    INFO_CLASS: ClassVar[int] = 3
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<QQII")
    _FIELDS: ClassVar[tuple[str, ...]] = ("total_allocation_units", "available_allocation_units",
                                          "sectors_per_allocation_unit", "bytes_per_sector")
    total_allocation_units: U64 = 0
    available_allocation_units: U64 = 0
    sectors_per_allocation_unit: U32 = 0
    bytes_per_sector: U32 = 0


@dataclass
class FileFsFullSizeInformation(FixedInfo):
    """§2.5.4."""

    INFO_CLASS: ClassVar[int] = 7
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<QQQII")
    _FIELDS: ClassVar[tuple[str, ...]] = ("total_allocation_units", "caller_available_allocation_units",
                                          "actual_available_allocation_units", "sectors_per_allocation_unit",
                                          "bytes_per_sector")
    total_allocation_units: U64 = 0
    caller_available_allocation_units: U64 = 0
    actual_available_allocation_units: U64 = 0
    sectors_per_allocation_unit: U32 = 0
    bytes_per_sector: U32 = 0


@dataclass
class FileFsAttributeInformation(NamedInfo):
    """§2.5.1: FileSystemAttributes(4) MaximumComponentNameLength(4) FileSystemNameLength(4) Name."""

    INFO_CLASS: ClassVar[int] = 5
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<III")
    _FIELDS: ClassVar[tuple[str, ...]] = ("file_system_attributes", "maximum_component_name_length", "_name_length")
    _NAME_FIELD: ClassVar[str] = "file_system_name"
    file_system_attributes: U32 = 0
    maximum_component_name_length: U32 = 255
    file_system_name: Utf16 = ""


@dataclass
class FileFsDeviceInformation(FixedInfo):
    """§2.5.10: DeviceType(4) Characteristics(4)."""

    INFO_CLASS: ClassVar[int] = 4
    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<II")
    _FIELDS: ClassVar[tuple[str, ...]] = ("device_type", "characteristics")
    device_type: U32 = 7  # FILE_DEVICE_DISK
    characteristics: U32 = 0


FILE_INFO_CLASSES = {
    cls.INFO_CLASS: cls
    for cls in (FileBasicInformation, FileStandardInformation, FileInternalInformation, FileEaInformation,
                FileAccessInformation, FilePositionInformation, FileModeInformation, FileAlignmentInformation,
                FileAllInformation, FileNetworkOpenInformation, FileAttributeTagInformation, FileEndOfFileInformation,
                FileDispositionInformation, FileRenameInformation, FileNameInformation)
}
FS_INFO_CLASSES = {
    cls.INFO_CLASS: cls
    for cls in (FileFsVolumeInformation, FileFsSizeInformation, FileFsFullSizeInformation,
                FileFsAttributeInformation, FileFsDeviceInformation)
}
