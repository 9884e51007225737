"""QUERY_DIRECTORY (MS-SMB2 §3.3.5.18): listing a directory open, in the FSCC information class
the client asked for.

Rules: the first query (or one with RESTART_SCANS/REOPEN) takes a snapshot of the names matching
the pattern (``*``, ``?`` and the DOS wildcards ``<``, ``>``, ``"``), "." and ".." first; later
queries continue from where the last one stopped.  Nothing matching is STATUS_NO_SUCH_FILE on the
first query and STATUS_NO_MORE_FILES later; a buffer too small for one entry is
STATUS_INFO_LENGTH_MISMATCH (first) or STATUS_BUFFER_OVERFLOW.
"""

from __future__ import annotations

import fnmatch
from dataclasses import fields
from typing import Any, cast

from .. import fscc
from .. import messages as m
from ..constants import Command, NtStatus, QueryDirectoryFlags
from ..vfs import FileMeta, short_name
from . import file_security
from .model import Fail, Handler, Reply
from .opens import file_meta, open_for, os_error, share_of


def _match(pattern: str, name: str) -> bool:
    if pattern in ("*", "", "*.*"):
        return True
    translated = pattern.replace("<", "*").replace(">", "?").replace('"', ".")
    return fnmatch.fnmatchcase(name.lower(), translated.lower())


def _entry(conn, info_class: int, name: str, st: FileMeta, index: int, ea_size: int = 0):
    cls = fscc.DIRECTORY_CLASSES.get(info_class)
    if cls is None:
        raise Fail(NtStatus.INVALID_INFO_CLASS, f"directory class {info_class}")
    meta = file_meta(conn, st)
    values = dict(file_name=name, file_index=0, creation_time=meta.creation_time,
                  last_access_time=meta.last_access_time, last_write_time=meta.last_write_time,
                  change_time=meta.change_time, end_of_file=meta.end_of_file, allocation_size=meta.allocation_size,
                  file_attributes=meta.attributes, ea_size=ea_size, short_name=short_name(name), file_id=st.file_id)
    names = {f.name for f in fields(cast(Any, cls))}  # every directory class is a dataclass
    return cls(**{key: value for key, value in values.items() if key in names})


def _query_directory(conn, session, tree, header, request: m.QueryDirectoryRequest, related, encrypted) -> Reply:
    opened = open_for(session, tree, request.file_id, related)
    if not opened.is_dir:
        raise Fail(NtStatus.INVALID_PARAMETER, "QUERY_DIRECTORY on a file")
    if request.file_information_class not in fscc.DIRECTORY_CLASSES:
        raise Fail(NtStatus.INVALID_INFO_CLASS, "directory class")
    if request.output_buffer_length > conn.max_size:
        raise Fail(NtStatus.INVALID_PARAMETER, "OutputBufferLength > MaxTransactSize")
    restart = request.flags & (QueryDirectoryFlags.RESTART_SCANS | QueryDirectoryFlags.REOPEN)
    first = opened.dir_entries is None or restart
    if first:
        pattern = request.file_name or "*"
        opened.dir_pattern = pattern
        try:
            names = [".", ".."] + sorted(share_of(opened).listdir(opened.path))
        except OSError as exc:
            raise os_error(exc) from exc
        opened.dir_entries = [n for n in names if _match(pattern, n)]
        opened.dir_pos = 0
    entries: list[fscc.DirectoryEntry] = []
    size = 0
    limit = request.output_buffer_length
    fs = share_of(opened)
    listing = opened.dir_entries or []
    while opened.dir_pos < len(listing):
        name = listing[opened.dir_pos]
        full = opened.path if name == "." else (
            fs.parent(opened.path) if name == ".." else fs.child(opened.path, name))
        try:
            st = fs.stat(full)
        except OSError:
            st = None
        if st is None or not fs.contains(full):  # vanished, or a symlink out of the share
            opened.dir_pos += 1
            continue
        try:
            eas = file_security.ea_size(fs, full)  # the same EaSize FileEaInformation reports
        except OSError:
            eas = 0
        entry = _entry(conn, request.file_information_class, name, st, opened.dir_pos, eas)
        packed = len(entry.pack_entry(0))
        aligned = size + (-size % 8)
        if aligned + packed > limit:
            if not entries:
                raise Fail(NtStatus.INFO_LENGTH_MISMATCH if first else NtStatus.BUFFER_OVERFLOW, "buffer too small")
            break
        entries.append(entry)
        size = aligned + packed
        opened.dir_pos += 1
        if request.flags & QueryDirectoryFlags.RETURN_SINGLE_ENTRY:
            break
    if not entries:
        raise Fail(NtStatus.NO_SUCH_FILE if first else NtStatus.NO_MORE_FILES, "no more entries")
    return Reply(NtStatus.SUCCESS, m.QueryDirectoryResponse(fscc.pack_directory_entries(entries)))


HANDLERS: dict[int, Handler] = {
    Command.QUERY_DIRECTORY: _query_directory,
}
