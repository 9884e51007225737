"""A share that keeps its files in memory, behind the same :class:`~harness.smb.vfs.Share` interface
as the host directory share.

Why it exists: it proves that the server reaches files only through the share interface (the
server tests run against both shares), and it gives tests and scenarios a file system that leaves
nothing on disk and can be made full on purpose (``capacity``: a write past it is ENOSPC, which the
server answers STATUS_DISK_FULL).

Model: a flat table from path to node.  Paths are ``memory:<n>`` for the root and
``memory:<n>/a/b`` below it, ``<n>`` unique per share, so two memory shares of one server never
share a path.  A node is a directory or a file (a ``bytearray``); a handle points at its node, so a
renamed or deleted file stays readable through handles opened before, as on POSIX.  No symlinks,
so every path is inside the share.  Failures are ``OSError`` with the errno a POSIX file system
would give.

Sparse files: a file's bytes are all in its ``bytearray``; which blocks of UNIT bytes hold no
storage (holes) is tracked beside them, block by block as a local file system does.  Only
:meth:`MemoryShare.zero_range` with ``deallocate`` makes holes (blocks wholly inside the range, the
file's last block when the range reaches the end); a write into a hole allocates its blocks, a file
grown by a write or a new end of file is allocated throughout.  The allocation size reports the
allocated blocks, FSCTL_QUERY_ALLOCATED_RANGES the runs between holes.
"""

from __future__ import annotations

import errno
import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .constants import FileAttributes, NtStatus
from .fscc import filetime_from_unix_ns
from .vfs import FileExtras, FileMeta, Share, ShareError, StreamHandle, VolumeSpace, stream_meta

UNIT = 4096  # allocation unit: sizes round up to it, as on a common local file system
_share_ids = itertools.count(1)


@dataclass
class _Node:
    is_dir: bool
    file_id: int
    data: bytearray = field(default_factory=bytearray)
    access_ns: int = 0
    write_ns: int = 0
    change_ns: int = 0
    birth_ns: int = 0
    links: int = 1
    extras: FileExtras = field(default_factory=FileExtras)  # security descriptor, EAs, named streams
    holes: set[int] = field(default_factory=set)  # blocks (of UNIT bytes) without storage


@dataclass
class _Handle:
    node: _Node
    writable: bool
    closed: bool = False


def _error(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)


class MemoryShare(Share):
    """An in-memory share.  ``clock`` gives unix nanoseconds for file times; ``capacity`` bounds
    the bytes all files may hold together."""

    def __init__(self, capacity: int = 1 << 30, clock: Callable[[], int] = time.time_ns) -> None:
        self.volume_id = next(_share_ids)
        self.root = f"memory:{self.volume_id}"
        self.capacity = capacity
        self.clock = clock
        self._ids = itertools.count(1)
        self._nodes: dict[str, _Node] = {self.root: self._new(True)}

    # -------------------------------------------------------------------------------- helpers

    def _new(self, is_dir: bool) -> _Node:
        now = self.clock()
        return _Node(is_dir, next(self._ids), access_ns=now, write_ns=now, change_ns=now, birth_ns=now)

    def _node(self, path: str) -> _Node:
        node = self._nodes.get(path)
        if node is None:
            parent = self._nodes.get(self.parent(path))
            raise _error(errno.ENOTDIR if parent is not None and not parent.is_dir else errno.ENOENT, path)
        return node

    def _dir(self, path: str) -> _Node:
        node = self._node(path)
        if not node.is_dir:
            raise _error(errno.ENOTDIR, path)
        return node

    def _free_parent(self, path: str) -> None:
        """``path`` does not exist and its parent is a directory (else ENOENT/ENOTDIR/EEXIST)."""
        if path in self._nodes:
            raise _error(errno.EEXIST, path)
        self._dir(self.parent(path))

    def _used(self) -> int:
        nodes = {id(node): node for node in self._nodes.values()}.values()  # a hard-linked file counts once
        return sum(len(node.data) + sum(len(data) for _, data in node.extras.streams.values()) for node in nodes)

    def _touch_dir(self, path: str) -> None:
        now = self.clock()
        parent = self._nodes[self.parent(path)]
        parent.write_ns = parent.change_ns = now

    def _meta(self, node: _Node) -> FileMeta:
        attributes = FileAttributes.DIRECTORY if node.is_dir else FileAttributes.ARCHIVE
        size = 0 if node.is_dir else len(node.data)
        return FileMeta(filetime_from_unix_ns(node.birth_ns), filetime_from_unix_ns(node.access_ns),
                        filetime_from_unix_ns(node.write_ns), filetime_from_unix_ns(node.change_ns), size,
                        (-(-size // UNIT) - len(node.holes)) * UNIT, int(attributes), node.is_dir, node.file_id,
                        node.links, self.volume_id)

    @staticmethod
    def _open_handle(handle: Any) -> _Handle:
        if not isinstance(handle, _Handle) or handle.closed:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        return handle

    # -------------------------------------------------------------------------------- names

    def resolve(self, name: str) -> str:
        path = self.root
        parts = self.components(name)
        for index, part in enumerate(parts):
            candidate = path + "/" + part
            if candidate not in self._nodes and path in self._nodes and self._nodes[path].is_dir:
                wanted = part.casefold()
                match = next((entry for entry in sorted(self.listdir(path)) if entry.casefold() == wanted), None)
                if match is not None:
                    candidate = path + "/" + match
            if index < len(parts) - 1:
                node = self._nodes.get(candidate)
                if node is None or not node.is_dir:
                    raise ShareError(NtStatus.OBJECT_PATH_NOT_FOUND, f"no directory for {name!r}")
            path = candidate
        return path

    def relative(self, path: str) -> str:
        return path[len(self.root) + 1:].replace("/", "\\")

    def parent(self, path: str) -> str:
        return self.root if path == self.root else path.rsplit("/", 1)[0]

    def child(self, directory: str, name: str) -> str:
        return directory + "/" + name

    def basename(self, path: str) -> str:
        return "" if path == self.root else path.rsplit("/", 1)[1]

    def contains(self, path: str) -> bool:
        return path == self.root or path.startswith(self.root + "/")

    def same_file(self, a: str, b: str) -> bool:
        return a == b or (a in self._nodes and self._nodes.get(b) is self._nodes[a])

    # -------------------------------------------------------------------------------- metadata

    def exists(self, path: str) -> bool:
        return path in self._nodes

    def is_dir(self, path: str) -> bool:
        node = self._nodes.get(path)
        return node is not None and node.is_dir

    def stat(self, path: str) -> FileMeta:
        return self._meta(self._node(path))

    def fstat(self, handle: Any) -> FileMeta:
        if isinstance(handle, StreamHandle):
            live = handle.live()
            meta = self._meta(live.base.node) if live.base is not None else self.stat(live.path)
            return stream_meta(meta, live.data, UNIT)
        return self._meta(self._open_handle(handle).node)

    def listdir(self, path: str) -> list[str]:
        self._dir(path)
        prefix = path + "/"
        return [key[len(prefix):] for key in self._nodes if key.startswith(prefix) and "/" not in key[len(prefix):]]

    def set_times(self, path: str, access_ns: int | None, write_ns: int | None) -> None:
        node = self._node(path)
        if access_ns is not None:
            node.access_ns = access_ns
        if write_ns is not None:
            node.write_ns = write_ns
        node.change_ns = self.clock()

    def space(self) -> VolumeSpace:
        total = self.capacity // UNIT
        free = max(0, self.capacity - self._used()) // UNIT
        return VolumeSpace(total, free, free, UNIT)

    # -------------------------------------------------------------------------------- namespace

    def mkdir(self, path: str) -> None:
        self._free_parent(path)
        self._nodes[path] = self._new(True)
        self._touch_dir(path)

    def create(self, path: str) -> None:
        self._free_parent(path)
        self._nodes[path] = self._new(False)
        self._touch_dir(path)

    def truncate(self, path: str, size: int) -> None:
        node = self._node(path)
        if node.is_dir:
            raise _error(errno.EISDIR, path)
        self._resize(node, size, path)

    def remove(self, path: str) -> None:
        node = self._node(path)
        if node.is_dir:
            raise _error(errno.EISDIR, path)
        del self._nodes[path]
        node.links -= 1
        node.change_ns = self.clock()
        self._touch_dir(path)

    def rmdir(self, path: str) -> None:
        node = self._node(path)
        if not node.is_dir:
            raise _error(errno.ENOTDIR, path)
        if path == self.root:
            raise _error(errno.EBUSY, path)
        if self.listdir(path):
            raise _error(errno.ENOTEMPTY, path)
        del self._nodes[path]
        self._touch_dir(path)

    def rename(self, old: str, new: str) -> None:
        node = self._node(old)
        if old == new:
            return
        self._dir(self.parent(new))
        if node.is_dir and (new + "/").startswith(old + "/"):
            raise _error(errno.EINVAL, new)  # a directory into itself
        target = self._nodes.get(new)
        if target is not None:
            if target.is_dir and not node.is_dir:
                raise _error(errno.EISDIR, new)
            if not target.is_dir and node.is_dir:
                raise _error(errno.ENOTDIR, new)
            if target.is_dir and self.listdir(new):
                raise _error(errno.ENOTEMPTY, new)
            target.links -= 1
        moved = {key: value for key, value in self._nodes.items() if key == old or key.startswith(old + "/")}
        for key in moved:
            del self._nodes[key]
        for key, value in moved.items():
            self._nodes[new + key[len(old):]] = value
        node.change_ns = self.clock()
        self._touch_dir(old)
        self._touch_dir(new)

    # -------------------------------------------------------------------------------- data

    def open(self, path: str, writable: bool) -> _Handle:
        node = self._node(path)
        if node.is_dir:
            raise _error(errno.EISDIR, path)
        return _Handle(node, writable)

    def close(self, handle: Any) -> None:
        if isinstance(handle, StreamHandle):
            handle.live().closed = True
            return
        self._open_handle(handle).closed = True

    def pread(self, handle: Any, length: int, offset: int) -> bytes:
        if isinstance(handle, StreamHandle):
            return handle.pread(length, offset)
        node = self._open_handle(handle).node
        node.access_ns = self.clock()
        return bytes(node.data[offset:offset + length])

    def readinto(self, handle: Any, buffer: memoryview, offset: int) -> int:
        if isinstance(handle, StreamHandle):
            return handle.readinto(buffer, offset)
        node = self._open_handle(handle).node
        chunk = node.data[offset:offset + len(buffer)]
        buffer[:len(chunk)] = chunk
        node.access_ns = self.clock()
        return len(chunk)

    def pwrite(self, handle: Any, data: bytes | memoryview, offset: int) -> int:
        if isinstance(handle, StreamHandle):
            end = offset + len(data)
            if end > len(handle.data) and self._used() + end - len(handle.data) > self.capacity:
                raise _error(errno.ENOSPC, "")
            return handle.pwrite(data, offset)
        opened = self._open_handle(handle)
        if not opened.writable:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        node = opened.node
        end = offset + len(data)
        if end > len(node.data):
            self._resize(node, end, "")
        node.data[offset:end] = data
        if node.holes and end > offset:  # the blocks written to hold storage now
            node.holes.difference_update(range(offset // UNIT, (end - 1) // UNIT + 1))
        node.write_ns = node.change_ns = self.clock()
        return len(data)

    def ftruncate(self, handle: Any, size: int) -> None:
        if isinstance(handle, StreamHandle):
            return handle.ftruncate(size)
        opened = self._open_handle(handle)
        if not opened.writable:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        self._resize(opened.node, size, "")

    # -------------------------------------------------------------------------------- NTFS extras

    def extras(self, path: str) -> FileExtras:
        return self._node(path).extras

    def link(self, existing: str, new: str) -> None:
        node = self._node(existing)
        if node.is_dir:
            raise _error(errno.EPERM, existing)
        self._free_parent(new)
        self._nodes[new] = node
        node.links += 1
        node.change_ns = self.clock()
        self._touch_dir(new)

    # -------------------------------------------------------------------------------- sparse files

    sparse_files = True

    def allocated_ranges(self, handle: Any, offset: int, end: int) -> list[tuple[int, int]]:
        if isinstance(handle, StreamHandle):
            return super().allocated_ranges(handle, offset, end)
        node = self._open_handle(handle).node
        end = min(end, len(node.data))
        ranges: list[tuple[int, int]] = []
        position = offset
        if end > offset:
            first, last = offset // UNIT, (end - 1) // UNIT
            for block in sorted(b for b in node.holes if first <= b <= last):
                start = max(block * UNIT, offset)
                if start > position:
                    ranges.append((position, start - position))
                position = max(position, min((block + 1) * UNIT, end))
        if position < end:
            ranges.append((position, end - position))
        return ranges

    def zero_range(self, handle: Any, offset: int, length: int, deallocate: bool) -> None:
        if isinstance(handle, StreamHandle):
            return super().zero_range(handle, offset, length, deallocate)
        opened = self._open_handle(handle)
        if not opened.writable:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        node = opened.node
        size = len(node.data)
        end = min(offset + length, size)
        if end <= offset:
            return
        node.data[offset:end] = bytes(end - offset)
        if deallocate:  # whole blocks inside the range; the last one also when the range reaches the end
            node.holes.update(range(-(-offset // UNIT), -(-size // UNIT) if end == size else end // UNIT))
        node.write_ns = node.change_ns = self.clock()

    def _resize(self, node: _Node, size: int, path: str) -> None:
        grow = size - len(node.data)
        if grow > 0 and self._used() + grow > self.capacity:
            raise _error(errno.ENOSPC, path)
        if grow > 0:
            node.data.extend(bytes(grow))
        else:
            del node.data[size:]
            node.holes = {block for block in node.holes if block * UNIT < size}
        node.write_ns = node.change_ns = self.clock()


__all__ = ["MemoryShare"]
