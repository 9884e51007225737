"""The file system behind a server share: the one interface through which the server touches files.

Why a separate module: the server state machine decides *what* a request means; a :class:`Share`
decides *which file* a share-relative SMB name denotes, keeps it inside the share, and does the
file operations.  The server handlers call nothing else, so a share can live on the host
(:class:`LocalShare`) or in memory (:class:`harness.smb.vfs_memory.MemoryShare`, for tests and
for scenarios that must not leave files behind) and the same protocol rules hold for both.

The contract every share keeps:

- SMB names use ``\\``; ``/`` is accepted too.  A leading separator is stripped (§2.2.13: names are
  relative to the share), drive letters, ``:`` streams and NUL are refused (OBJECT_NAME_INVALID).
- ``..`` may not climb above the share root: OBJECT_PATH_SYNTAX_BAD, as Windows and Samba's smbd
  answer it (smbtorture smb2.mkdir creates ``..\\..\\..`` and expects that status).  A share with
  symlinks checks the real path too: a symlink pointing out of the share is ACCESS_DENIED.
- Lookup is case-insensitive as on Windows: a component that does not exist with its exact
  spelling resolves to the one entry that matches it ignoring case (exact matches win).
- :meth:`Share.resolve` returns a *path*: an opaque string the share understands, unique across
  shares of one server (it keys the server's table of opens per file); every other method takes
  such paths, or a *handle* from :meth:`Share.open`.
- Failures of the file operations are ``OSError`` with the POSIX ``errno`` (ENOENT, EEXIST,
  ENOTEMPTY, ENOSPC, ...), which the server maps to an NTSTATUS in one table; name refusals are
  :class:`ShareError` with the NTSTATUS itself.
- What NTFS keeps per file and POSIX does not (security descriptor, extended attributes, named
  data streams) is a :class:`FileExtras` per *file*, not per name: hard links share it, a rename
  keeps it, removing the last name drops it.  A handle on a named stream is a
  :class:`StreamHandle`, which every data method (pread, pwrite, ftruncate, fstat, close) accepts
  like a handle on the file itself.
- Sparse files (MS-FSCC 2.3.33, 2.3.85): :meth:`Share.allocated_ranges` says which bytes of a file
  hold storage and :meth:`Share.zero_range` zeros a range, giving its storage back when asked.  A
  share whose ``sparse_files`` is true really keeps holes (the server then announces
  FILE_SUPPORTS_SPARSE_FILES); the defaults hold every byte and write zeros.  Whether a file *is*
  sparse (its FILE_ATTRIBUTE_SPARSE_FILE) is the server's business, not the share's.
"""

from __future__ import annotations

import errno
import os
import stat as statmod
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from . import holes
from .constants import FileAttributes, NtStatus
from .errors import SMBStatusError
from .fscc import filetime_from_unix_ns


class ShareError(SMBStatusError):
    """A name that must be refused; ``status`` is the NTSTATUS to answer."""


@dataclass
class FileMeta:
    """Stat results in the units SMB uses (FILETIMEs, FILE_ATTRIBUTE_*).  ``file_id`` and
    ``volume_id`` together name the file for as long as it exists (inode and device on a host)."""

    creation_time: int
    last_access_time: int
    last_write_time: int
    change_time: int
    end_of_file: int
    allocation_size: int
    attributes: int
    is_dir: bool
    file_id: int
    nlink: int
    volume_id: int = 0


@dataclass
class VolumeSpace:
    """The sizes FileFsSizeInformation and FileFsFullSizeInformation report (MS-FSCC §2.5.8, §2.5.4)."""

    total_units: int
    available_units: int  # to the caller (POSIX f_bavail)
    free_units: int  # on the volume (f_bfree)
    unit_size: int  # bytes per allocation unit


def meta_from_stat(st: os.stat_result) -> FileMeta:
    is_dir = statmod.S_ISDIR(st.st_mode)
    attributes = FileAttributes.DIRECTORY if is_dir else FileAttributes.ARCHIVE
    if not st.st_mode & statmod.S_IWUSR:
        attributes |= FileAttributes.READONLY
    size = 0 if is_dir else st.st_size
    # Creation time: POSIX has none that is portable; use the earliest of mtime/ctime like Samba does.
    birth = min(st.st_mtime_ns, st.st_ctime_ns)
    return FileMeta(filetime_from_unix_ns(birth), filetime_from_unix_ns(st.st_atime_ns),
                    filetime_from_unix_ns(st.st_mtime_ns), filetime_from_unix_ns(st.st_ctime_ns), size,
                    (st.st_blocks * 512) if not is_dir else 0, int(attributes), is_dir, st.st_ino, st.st_nlink,
                    st.st_dev)


def short_name(name: str) -> str:
    """A stable 8.3 name (MS-FSCC §2.1.5.2.1 "8.3 alias") for QUERY_DIRECTORY's ShortName and
    FileAlternateNameInformation, which clients compare: names that already fit 8.3 in upper case are
    their own alias; others become BASE6~H.EXT with H from a hash of the long name."""
    if name in (".", ".."):
        return ""
    base, dot, ext = name.rpartition(".")
    if not dot:
        base, ext = name, ""
    legal = all(ch.isalnum() or ch in "_-$~!#%&@^'(){}" for ch in base + ext)
    if legal and 0 < len(base) <= 8 and len(ext) <= 3 and name == name.upper() and name.count(".") <= 1:
        return name
    clean = "".join(ch for ch in base.upper() if ch.isalnum())[:6] or "FILE"
    digest = sum((i + 1) * ord(ch) for i, ch in enumerate(name)) % 36
    tail = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[digest]
    short_ext = "".join(ch for ch in ext.upper() if ch.isalnum())[:3]
    return f"{clean}~{tail}" + (f".{short_ext}" if short_ext else "")


@dataclass
class FileExtras:
    """The per-file state NTFS has and POSIX lacks.  ``security`` is a self-relative security
    descriptor (MS-DTYP §2.4.6) in wire form, None until the server stores one; ``eas`` and
    ``streams`` are keyed by the case-folded name and keep the name as first given (NTFS compares
    EA and stream names ignoring case and preserves their spelling)."""

    security: bytes | None = None
    eas: dict[str, tuple[str, bytes, int]] = field(default_factory=dict)  # key -> (name, value, flags)
    streams: dict[str, tuple[str, bytearray]] = field(default_factory=dict)  # key -> (name, data)


@dataclass
class StreamHandle:
    """An open named data stream: the file's own handle (for its metadata) and the stream's data,
    shared with every other handle on that stream; a deleted stream stays readable through handles
    opened before, as a deleted file does."""

    base: Any  # None for a stream of a directory (``path`` then gives its metadata)
    path: str
    name: str
    data: bytearray
    writable: bool
    closed: bool = False

    def live(self) -> StreamHandle:
        if self.closed:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        return self

    def pread(self, length: int, offset: int) -> bytes:
        return bytes(self.live().data[offset:offset + length])

    def readinto(self, buffer: memoryview, offset: int) -> int:
        chunk = self.live().data[offset:offset + len(buffer)]
        buffer[:len(chunk)] = chunk
        return len(chunk)

    def pwrite(self, data: bytes | memoryview, offset: int) -> int:
        if not self.live().writable:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        end = offset + len(data)
        if end > len(self.data):
            self.data.extend(bytes(end - len(self.data)))
        self.data[offset:end] = data
        return len(data)

    def ftruncate(self, size: int) -> None:
        if not self.live().writable:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        if size > len(self.data):
            self.data.extend(bytes(size - len(self.data)))
        else:
            del self.data[size:]


def stream_meta(meta: FileMeta, data: bytearray, unit: int = 4096) -> FileMeta:
    """The file's metadata with a stream's sizes (a stream has the file's times and attributes)."""
    meta.end_of_file = len(data)
    meta.allocation_size = -(-len(data) // unit) * unit
    return meta


ZERO_CHUNK = 1 << 20  # zeros are written this much at a time


def _folded(name: str) -> str:
    return name.casefold()


class Share(ABC):
    """What the server needs of a share's file system (see the module docstring for the contract)."""

    root: str  # the path of the share's root directory

    def components(self, name: str) -> list[str]:
        """Split and normalise an SMB name, refusing anything that could leave the share."""
        if "\x00" in name:
            raise ShareError(NtStatus.OBJECT_NAME_INVALID, "NUL in name")
        text = name.replace("/", "\\")
        if len(text) >= 2 and text[1] == ":":
            raise ShareError(NtStatus.OBJECT_NAME_INVALID, f"drive-qualified name {name!r}")
        parts: list[str] = []
        for part in text.split("\\"):
            if part in ("", "."):
                continue
            if part == "..":
                if not parts:  # above the share's root: a malformed path, as Samba and Windows judge it
                    raise ShareError(NtStatus.OBJECT_PATH_SYNTAX_BAD, f"{name!r} climbs out of the share")
                parts.pop()
                continue
            if ":" in part or any(ch in part for ch in '<>"|*?'):
                raise ShareError(NtStatus.OBJECT_NAME_INVALID, f"invalid characters in {name!r}")
            parts.append(part)
        return parts

    # -------------------------------------------------------------------------------- names

    @abstractmethod
    def resolve(self, name: str) -> str:
        """The path for ``name``; its parent must be a directory inside the share (the leaf may not
        exist).  Raises :class:`ShareError`."""

    @abstractmethod
    def relative(self, path: str) -> str:
        """The SMB name (``a\\b``, empty for the root) of a path inside the share."""

    @abstractmethod
    def parent(self, path: str) -> str:
        """The directory holding ``path`` (the root is its own parent)."""

    @abstractmethod
    def child(self, directory: str, name: str) -> str:
        """The path of entry ``name`` (as :meth:`listdir` spells it) of ``directory``."""

    @abstractmethod
    def basename(self, path: str) -> str:
        """The last component of ``path``."""

    @abstractmethod
    def contains(self, path: str) -> bool:
        """Whether ``path``, with any symlink resolved, lies inside the share."""

    @abstractmethod
    def same_file(self, a: str, b: str) -> bool:
        """Whether two paths name the same file (a rename onto itself, in another case)."""

    # -------------------------------------------------------------------------------- metadata

    @abstractmethod
    def exists(self, path: str) -> bool: ...

    @abstractmethod
    def is_dir(self, path: str) -> bool: ...

    @abstractmethod
    def stat(self, path: str) -> FileMeta: ...

    @abstractmethod
    def fstat(self, handle: Any) -> FileMeta: ...

    @abstractmethod
    def listdir(self, path: str) -> list[str]:
        """The names in a directory, without "." and ".." (order unspecified)."""

    @abstractmethod
    def set_times(self, path: str, access_ns: int | None, write_ns: int | None) -> None:
        """Set the last access and last write times (unix nanoseconds); None keeps one."""

    @abstractmethod
    def space(self) -> VolumeSpace: ...

    # -------------------------------------------------------------------------------- namespace

    @abstractmethod
    def mkdir(self, path: str) -> None: ...

    @abstractmethod
    def create(self, path: str) -> None:
        """Create an empty file; EEXIST if the name is taken."""

    @abstractmethod
    def truncate(self, path: str, size: int) -> None: ...

    @abstractmethod
    def remove(self, path: str) -> None:
        """Delete a file (open handles keep reading what it held, as on POSIX)."""

    @abstractmethod
    def rmdir(self, path: str) -> None:
        """Delete an empty directory; ENOTEMPTY otherwise."""

    @abstractmethod
    def rename(self, old: str, new: str) -> None:
        """Move ``old`` to ``new``, replacing a file there (the caller checks ReplaceIfExists)."""

    # -------------------------------------------------------------------------------- data

    @abstractmethod
    def open(self, path: str, writable: bool) -> Any:
        """A handle on a file for the data methods; EACCES/EROFS when ``writable`` is refused."""

    @abstractmethod
    def close(self, handle: Any) -> None: ...

    @abstractmethod
    def pread(self, handle: Any, length: int, offset: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (fewer at the end of the file)."""

    @abstractmethod
    def readinto(self, handle: Any, buffer: memoryview, offset: int) -> int:
        """Fill ``buffer`` from ``offset`` (for RDMA staging buffers); the number of bytes read."""

    @abstractmethod
    def pwrite(self, handle: Any, data: bytes | memoryview, offset: int) -> int:
        """Write ``data`` at ``offset`` (a gap before it reads as zeros); the number of bytes written."""

    @abstractmethod
    def ftruncate(self, handle: Any, size: int) -> None: ...

    # -------------------------------------------------------------------------------- NTFS extras

    @abstractmethod
    def extras(self, path: str) -> FileExtras:
        """The :class:`FileExtras` of the file at ``path`` (created empty on first use); ENOENT if
        there is no such file."""

    @abstractmethod
    def link(self, existing: str, new: str) -> None:
        """A hard link: ``new`` names the file ``existing`` names (EEXIST if taken, EPERM for a
        directory)."""

    # -------------------------------------------------------------------------------- sparse files

    sparse_files = False  # holes are made and found (FILE_SUPPORTS_SPARSE_FILES is announced)

    def allocated_ranges(self, handle: Any, offset: int, end: int) -> list[tuple[int, int]]:
        """(offset, length) of each run of bytes in [offset, end) of an open file that holds
        storage, in order; ``end`` is at most the file's size.  Without holes: all of them."""
        return [(offset, end - offset)] if end > offset else []

    def zero_range(self, handle: Any, offset: int, length: int, deallocate: bool) -> None:
        """Bytes [offset, offset+length) of an open file read as zeros afterwards; the size stays
        (bytes past the end are no bytes of the file).  ``deallocate``: their storage may go, as a
        sparse file's does (a hole); otherwise it stays.  This default writes zeros."""
        end = min(offset + length, self.fstat(handle).end_of_file)
        zeros = bytes(min(ZERO_CHUNK, max(0, end - offset)))
        while offset < end:
            written = self.pwrite(handle, memoryview(zeros)[:end - offset], offset)
            if written <= 0:
                raise OSError(errno.EIO, "short write of zeros")
            offset += written

    def list_streams(self, path: str) -> list[tuple[str, int]]:
        """(name, size) of the file's named data streams, in creation order."""
        return [(name, len(data)) for name, data in self.extras(path).streams.values()]

    def create_stream(self, path: str, name: str) -> None:
        """An empty named stream; EEXIST if the file has one of that name (ignoring case)."""
        streams = self.extras(path).streams
        if _folded(name) in streams:
            raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), f"{path}:{name}")
        streams[_folded(name)] = (name, bytearray())

    def stream_exists(self, path: str, name: str) -> bool:
        return _folded(name) in self.extras(path).streams

    def open_stream(self, path: str, name: str, writable: bool) -> StreamHandle:
        """A handle on a named stream (ENOENT if the file has none of that name)."""
        entry = self.extras(path).streams.get(_folded(name))
        if entry is None:
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), f"{path}:{name}")
        base = None if self.is_dir(path) else self.open(path, False)
        return StreamHandle(base, path, entry[0], entry[1], writable)

    def remove_stream(self, path: str, name: str) -> None:
        if self.extras(path).streams.pop(_folded(name), None) is None:
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), f"{path}:{name}")

    def rename_stream(self, path: str, old: str, new: str, replace: bool) -> None:
        """Rename a named stream of one file; EEXIST if ``new`` is taken and not ``replace``."""
        streams = self.extras(path).streams
        entry = streams.get(_folded(old))
        if entry is None:
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), f"{path}:{old}")
        if _folded(new) in streams and _folded(new) != _folded(old) and not replace:
            raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), f"{path}:{new}")
        del streams[_folded(old)]
        streams[_folded(new)] = (new, entry[1])


class LocalShare(Share):
    """A share backed by a host directory; paths are host paths, handles file descriptors.

    The :class:`FileExtras` live beside the files, in a table keyed by (device, inode) for the
    share object's lifetime: a side store rather than xattrs, because stream data outgrows what a
    local file system allows in extended attributes (ext4: one block) and not every file system has
    user xattrs.  A file removed through the share drops its entry when its last name goes."""

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)
        if not os.path.isdir(self.root):
            raise ValueError(f"share path {root!r} is not a directory")
        self._extras: dict[tuple[int, int], FileExtras] = {}

    def extras(self, path: str) -> FileExtras:
        st = os.stat(path)
        return self._extras.setdefault((st.st_dev, st.st_ino), FileExtras())

    def link(self, existing: str, new: str) -> None:
        if os.path.isdir(existing):
            raise OSError(errno.EPERM, os.strerror(errno.EPERM), existing)
        os.link(existing, new)

    def resolve(self, name: str) -> str:
        parts = self._case_fold(self.components(name))
        path = os.path.join(self.root, *parts) if parts else self.root
        parent = os.path.dirname(path) if parts else self.root
        real_parent = os.path.realpath(parent)
        if not os.path.isdir(real_parent):
            raise ShareError(NtStatus.OBJECT_PATH_NOT_FOUND, f"no directory for {name!r}")
        self.check_inside(real_parent)
        if os.path.lexists(path):
            self.check_inside(os.path.realpath(path))
        return path

    def _case_fold(self, parts: list[str]) -> list[str]:
        resolved: list[str] = []
        for part in parts:
            directory = os.path.join(self.root, *resolved)
            if not os.path.lexists(os.path.join(directory, part)):
                try:
                    wanted = part.casefold()
                    part = next((entry for entry in os.listdir(directory) if entry.casefold() == wanted), part)
                except OSError:
                    pass
            resolved.append(part)
        return resolved

    def check_inside(self, real: str) -> None:
        if real != self.root and not real.startswith(self.root + os.sep):
            raise ShareError(NtStatus.ACCESS_DENIED, "path resolves outside the share")

    def relative(self, path: str) -> str:
        rel = os.path.relpath(path, self.root)
        return "" if rel == "." else rel.replace(os.sep, "\\")

    def parent(self, path: str) -> str:
        return self.root if path == self.root else os.path.dirname(path)

    def child(self, directory: str, name: str) -> str:
        return os.path.join(directory, name)

    def basename(self, path: str) -> str:
        return os.path.basename(path)

    def contains(self, path: str) -> bool:
        try:
            self.check_inside(os.path.realpath(path))
        except ShareError:
            return False
        return True

    def same_file(self, a: str, b: str) -> bool:
        return os.path.realpath(a) == os.path.realpath(b)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def stat(self, path: str) -> FileMeta:
        return meta_from_stat(os.stat(path))

    def fstat(self, handle: Any) -> FileMeta:
        if isinstance(handle, StreamHandle):
            live = handle.live()
            st = os.fstat(live.base) if live.base is not None else os.stat(live.path)
            return stream_meta(meta_from_stat(st), live.data)
        return meta_from_stat(os.fstat(handle))

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def set_times(self, path: str, access_ns: int | None, write_ns: int | None) -> None:
        st = os.stat(path)
        wanted = (st.st_atime_ns if access_ns is None else access_ns, st.st_mtime_ns if write_ns is None else write_ns)
        if wanted != (st.st_atime_ns, st.st_mtime_ns):
            os.utime(path, ns=wanted)

    def space(self) -> VolumeSpace:
        vfs = os.statvfs(self.root)
        return VolumeSpace(vfs.f_blocks, vfs.f_bavail, vfs.f_bfree, vfs.f_frsize)

    def mkdir(self, path: str) -> None:
        os.mkdir(path)

    def create(self, path: str) -> None:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))

    def truncate(self, path: str, size: int) -> None:
        os.truncate(path, size)

    def remove(self, path: str) -> None:
        st = os.lstat(path)
        os.unlink(path)
        if st.st_nlink <= 1:
            self._extras.pop((st.st_dev, st.st_ino), None)

    def rmdir(self, path: str) -> None:
        st = os.lstat(path)
        os.rmdir(path)
        self._extras.pop((st.st_dev, st.st_ino), None)

    def rename(self, old: str, new: str) -> None:
        if os.path.lexists(new) and not self.same_file(old, new):
            target = os.lstat(new)
            os.rename(old, new)
            if target.st_nlink <= 1 or statmod.S_ISDIR(target.st_mode):
                self._extras.pop((target.st_dev, target.st_ino), None)
            return
        os.rename(old, new)

    def open(self, path: str, writable: bool) -> int:
        return os.open(path, os.O_RDWR if writable else os.O_RDONLY)

    def close(self, handle: Any) -> None:
        if isinstance(handle, StreamHandle):
            handle.live().closed = True
            if handle.base is not None:
                os.close(handle.base)
            return
        os.close(handle)

    def pread(self, handle: Any, length: int, offset: int) -> bytes:
        if isinstance(handle, StreamHandle):
            return handle.pread(length, offset)
        return os.pread(handle, length, offset)

    def readinto(self, handle: Any, buffer: memoryview, offset: int) -> int:
        if isinstance(handle, StreamHandle):
            return handle.readinto(buffer, offset)
        return os.preadv(handle, [buffer], offset)

    def pwrite(self, handle: Any, data: bytes | memoryview, offset: int) -> int:
        if isinstance(handle, StreamHandle):
            return handle.pwrite(data, offset)
        return os.pwrite(handle, data, offset)

    def ftruncate(self, handle: Any, size: int) -> None:
        if isinstance(handle, StreamHandle):
            return handle.ftruncate(size)
        os.ftruncate(handle, size)

    # Sparse files from what the host file system holds (harness.smb.holes); streams live in memory
    # and hold every byte.
    sparse_files = True

    def allocated_ranges(self, handle: Any, offset: int, end: int) -> list[tuple[int, int]]:
        if isinstance(handle, StreamHandle):
            return super().allocated_ranges(handle, offset, end)
        return holes.data_ranges(handle, offset, end)

    def zero_range(self, handle: Any, offset: int, length: int, deallocate: bool) -> None:
        """A hole punched where the host can (whole blocks go, partial ones read as zeros), zeros
        written where it cannot or where the range must stay allocated."""
        if deallocate and not isinstance(handle, StreamHandle):
            st = os.fstat(handle)
            end = min(offset + length, st.st_size)  # past the end there is nothing to give back
            if end <= offset:
                return
            if end == st.st_size:  # to the end of the file: its last block goes too
                unit = st.st_blksize or 4096
                end = -(-end // unit) * unit
            try:
                holes.punch_hole(handle, offset, end - offset)
                return
            except OSError as exc:
                if exc.errno not in holes.REFUSED:
                    raise
        super().zero_range(handle, offset, length, deallocate)
