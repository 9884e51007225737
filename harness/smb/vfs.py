"""The directory a server share exposes, and the one rule that matters most: never outside it.

Why a separate module: the server state machine decides *what* a request means; this module decides
*which host path* a share-relative SMB name denotes and reports file metadata in FSCC terms.  It is
the only place the server touches the file system, so containment is checked in one spot:

- SMB names use ``\\``; ``/`` is accepted too.  A leading separator is stripped (§2.2.13: names are
  relative to the share), drive letters, ``:`` streams and NUL are refused (OBJECT_NAME_INVALID).
- ``..`` may not climb above the share root (OBJECT_PATH_SYNTAX_BAD in Windows; we answer
  ACCESS_DENIED as Samba does for paths outside the share).
- After lexical checks the real path (symlinks resolved) must still lie inside the real root; a
  symlink pointing out of the share is ACCESS_DENIED.
"""

from __future__ import annotations

import os
import stat as statmod
from dataclasses import dataclass

from .constants import FileAttributes, NtStatus
from .errors import SMBStatusError
from .fscc import filetime_from_unix_ns


class ShareError(SMBStatusError):
    """A name that must be refused; ``status`` is the NTSTATUS to answer."""


@dataclass
class FileMeta:
    """Stat results in the units SMB uses (FILETIMEs, FILE_ATTRIBUTE_*)."""

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
                    (st.st_blocks * 512) if not is_dir else 0, int(attributes), is_dir, st.st_ino, st.st_nlink)


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


class LocalShare:
    """A share backed by a host directory."""

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)
        if not os.path.isdir(self.root):
            raise ValueError(f"share path {root!r} is not a directory")

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
                if not parts:
                    raise ShareError(NtStatus.ACCESS_DENIED, f"{name!r} climbs out of the share")
                parts.pop()
                continue
            if ":" in part or any(ch in part for ch in '<>"|*?'):
                raise ShareError(NtStatus.OBJECT_NAME_INVALID, f"invalid characters in {name!r}")
            parts.append(part)
        return parts

    def resolve(self, name: str) -> str:
        """The host path for ``name``; its parent must exist inside the share (the leaf may not exist).

        Lookup is case-insensitive as on Windows: a component that does not exist with its exact
        spelling resolves to the one entry that matches it ignoring case (exact matches win)."""
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
        """The SMB name (``a\\b``) of a host path inside the share."""
        rel = os.path.relpath(path, self.root)
        return "" if rel == "." else rel.replace(os.sep, "\\")

    def statvfs(self) -> os.statvfs_result:
        return os.statvfs(self.root)
