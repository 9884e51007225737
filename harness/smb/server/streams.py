"""Named data streams (``file:stream:$DATA``): CREATE of a stream, and what QUERY_INFO and SET_INFO
do on one (MS-FSA 2.1.5.1 for opening a stream, MS-FSCC §2.4.44 FileStreamInformation).

Rules kept here:

- A stream belongs to a file (or a directory): opening a stream of a file that does not exist
  creates the file too when the disposition creates; a stream cannot be opened as a directory
  (STATUS_NOT_A_DIRECTORY).
- The dispositions apply to the stream as they do to a file: CREATE on an existing stream is
  STATUS_OBJECT_NAME_COLLISION, OPEN of a missing one STATUS_OBJECT_NAME_NOT_FOUND, OVERWRITE
  empties it.
- Access is checked against the file's security descriptor (streams have none of their own), and
  a READONLY file's streams refuse write access as the file does.
- Share modes and delete-on-close are per stream: opens of the same stream collide, opens of
  different streams of one file do not.  Deleting a stream removes only it; deleting the file
  removes its streams.
- Stream opens get no oplock or lease (the caching table tracks files, not streams).
"""

from __future__ import annotations

from .. import messages as m
from ..constants import (
    AccessMask,
    CreateAction,
    CreateDisposition,
    CreateOptions,
    NtStatus,
    OplockLevel,
    ShareAccess,
)
from ..errors import SMBProtocolError
from ..fscc_lists import StreamEntry, pack_streams, split_stream
from ..messages.create_contexts import MXAC, QFID, MaximalAccessResponse, QueryOnDiskIdResponse, find_context
from . import file_security as fsec
from . import notify
from .model import Fail, Open, Reply
from .opens import DATA_RIGHTS, WRITE_RIGHTS, create_reply, file_meta, os_error, sharing_conflict

_CREATES = (CreateDisposition.SUPERSEDE, CreateDisposition.CREATE, CreateDisposition.OPEN_IF,
            CreateDisposition.OVERWRITE_IF)
_OVERWRITES = (CreateDisposition.SUPERSEDE, CreateDisposition.OVERWRITE, CreateDisposition.OVERWRITE_IF)


def create_stream(conn, session, tree, request: m.CreateRequest, path: str, stream: str) -> Reply:
    state, fs = conn.state, tree.fs
    options, disposition = request.create_options, request.create_disposition
    if options & CreateOptions.DIRECTORY_FILE:
        raise Fail(NtStatus.NOT_A_DIRECTORY, "a stream is not a directory")
    key = stream.casefold()
    action = CreateAction.OPENED
    try:
        if not fs.exists(path):
            if disposition not in _CREATES:
                raise Fail(NtStatus.OBJECT_NAME_NOT_FOUND, "no such file")
            creator, eas = fsec.new_file_contexts(request)
            granted = fsec.make_new(conn, session, fs, path, False, request, creator, eas)
            fsec.record_new(state, fs.stat(path), request.file_attributes, False, created=True)
            notify.added(state, fs, path, False)
            fs.create_stream(path, stream)
            action = CreateAction.CREATED
        else:
            attributes = file_meta(conn, fs.stat(path)).attributes
            granted = fsec.existing_access(conn, session, fs, path, request.desired_access, attributes, False)
            siblings = state.opens_by_path.get(path, [])
            delete_conflict(siblings, key, granted, request.share_access)
            if any((o.delete_on_close and o.stream_key in (None, key)) or o.deletes_file for o in siblings):
                raise Fail(NtStatus.DELETE_PENDING, "delete pending")
            if fs.stream_exists(path, stream):
                if disposition == CreateDisposition.CREATE:
                    raise Fail(NtStatus.OBJECT_NAME_COLLISION, "stream exists")
                for other in siblings:
                    if other.stream_key == key and sharing_conflict(granted, request.share_access, other.access,
                                                                   other.share_access):
                        raise Fail(NtStatus.SHARING_VIOLATION, "share mode conflict on the stream")
                if disposition in _OVERWRITES:
                    emptied = fs.open_stream(path, stream, True)
                    fs.ftruncate(emptied, 0)
                    fs.close(emptied)
                    action = (CreateAction.SUPERSEDED if disposition == CreateDisposition.SUPERSEDE
                              else CreateAction.OVERWRITTEN)
            else:
                if disposition not in _CREATES:
                    raise Fail(NtStatus.OBJECT_NAME_NOT_FOUND, "no such stream")
                fs.create_stream(path, stream)
                action = CreateAction.CREATED
        if options & CreateOptions.DELETE_ON_CLOSE and not granted & AccessMask.DELETE:
            raise Fail(NtStatus.ACCESS_DENIED, "DELETE_ON_CLOSE without DELETE access")
        handle = fs.open_stream(path, stream, bool(granted & (WRITE_RIGHTS | AccessMask.DELETE)))
        st = fs.fstat(handle)
    except OSError as exc:
        raise os_error(exc) from exc
    state.next_file_id += 1
    opened = Open(state.next_file_id, state.next_file_id, path, handle, False, granted, request.share_access,
                  session, tree, conn, delete_on_close=bool(options & CreateOptions.DELETE_ON_CLOSE), fs=fs,
                  stream=handle.name)
    session.opens[opened.volatile] = opened
    state.opens_by_path.setdefault(path, []).append(opened)
    meta = file_meta(conn, st)
    contexts = []
    if find_context(request.contexts, MXAC):
        maximal = fsec.maximal(conn, session, fs, path, meta.attributes, fs.is_dir(path))
        contexts.append(MaximalAccessResponse(0, maximal).to_context())
    if find_context(request.contexts, QFID):
        contexts.append(QueryOnDiskIdResponse(st.file_id, st.volume_id).to_context())
    return create_reply(opened, meta, OplockLevel.NONE, action, contexts)


def _to_default_stream(state, opened: Open, fs, replace: bool) -> None:
    """A named stream renamed to ``::$DATA`` becomes the file's data (MS-FSA 2.1.5.14.11: allowed
    when the file's data is empty or ReplaceIfExists, and nobody else has the file's data open)."""
    if fs.is_dir(opened.path):
        raise Fail(NtStatus.INVALID_PARAMETER, "a directory has no default data stream")
    if fs.stat(opened.path).end_of_file and not replace:
        raise Fail(NtStatus.OBJECT_NAME_COLLISION, "the file's own data is not empty")
    if any(other.stream is None for other in state.opens_by_path.get(opened.path, [])):
        raise Fail(NtStatus.SHARING_VIOLATION, "the file's own data is open")
    data = bytes(opened.handle.data)
    writable = bool(opened.access & (WRITE_RIGHTS | AccessMask.DELETE))
    target = fs.open(opened.path, True)
    try:
        fs.ftruncate(target, 0)
        fs.pwrite(target, data, 0)
    finally:
        fs.close(target)
    fs.remove_stream(opened.path, opened.stream)
    fs.close(opened.handle)
    opened.handle = fs.open(opened.path, writable)
    opened.stream = None


def delete_conflict(opens: list[Open], key: str | None, access: int, share: int) -> None:
    """DELETE reaches the whole file: an open asking for it collides with opens of the file's other
    streams that do not share delete, and an open of another stream holding DELETE collides with
    one that does not share it (MS-FSA 2.1.5.1.2)."""
    for other in opens:
        if other.stream_key == key:
            continue
        if (access & AccessMask.DELETE and not other.share_access & ShareAccess.DELETE
                and other.access & DATA_RIGHTS) or (other.access & AccessMask.DELETE
                                                    and not share & ShareAccess.DELETE and access & DATA_RIGHTS):
            raise Fail(NtStatus.SHARING_VIOLATION, "DELETE against an open of another stream")


def stream_information(fs, path: str, is_dir: bool, size: int, allocation: int) -> bytes:
    """FileStreamInformation (§2.4.44): ``::$DATA`` for a file's own data, then its named streams."""
    entries = [] if is_dir else [StreamEntry("::$DATA", size, allocation)]
    for name, length in fs.list_streams(path):
        entries.append(StreamEntry(f":{name}:$DATA", length, -(-length // 4096) * 4096))
    return pack_streams(entries)


def rename_stream(state, opened: Open, fs, target: str, replace: bool) -> None:
    """FileRenameInformation on a stream open naming ``:new`` or ``:new:$DATA`` (MS-FSA 2.1.5.14.11):
    the stream gets the new name on the same file, or becomes the file's data (``::$DATA``); the
    stream may not be open elsewhere (STATUS_SHARING_VIOLATION)."""
    if not target.startswith(":"):
        # a target naming a file (``base:stream``) is refused as Windows does (smb2.streams.rename2)
        raise Fail(NtStatus.SHARING_VIOLATION, "stream rename to a name with a file part")
    try:
        _, new = split_stream("x" + target)
    except SMBProtocolError as exc:
        raise Fail(exc.status, str(exc)) from exc
    if opened.stream is None:
        raise Fail(NtStatus.INVALID_PARAMETER, "rename of the file's own data to a stream")
    if any(other is not opened and other.stream_key == opened.stream_key
           for other in state.opens_by_path.get(opened.path, [])):
        raise Fail(NtStatus.SHARING_VIOLATION, "the stream is open elsewhere")
    if new is None:
        _to_default_stream(state, opened, fs, replace)
        return
    if new.casefold() != opened.stream.casefold() and fs.stream_exists(opened.path, new):
        if not replace:
            raise Fail(NtStatus.OBJECT_NAME_COLLISION, "stream name taken")
    fs.rename_stream(opened.path, opened.stream, new, replace)
    opened.stream = new
