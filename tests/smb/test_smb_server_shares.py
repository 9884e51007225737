"""The server's file operations against both share implementations: a host directory (LocalShare)
and memory (MemoryShare), through the sans-IO client and server models.

Why both: the server claims to reach files only through the vfs Share interface.  Each test runs
once per share; with the memory share, while the server handles a PDU, the host file system calls
it used to make directly (os.open, os.stat, os.listdir, os.pread, ...) fail the test, so a handler
that bypasses the interface fails here instead of quietly working on the host.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct

import pytest

from harness.smb import fscc
from harness.smb import messages as m
from harness.smb.constants import (
    AccessMask,
    Command,
    CreateDisposition,
    CreateOptions,
    FileInfoClass,
    InfoType,
    LeaseState,
    NtStatus,
    OplockLevel,
)
from harness.smb.messages.create_contexts import (
    ALSI,
    DH2Q,
    TWRP,
    CreateContext,
    DurableHandleReconnectV2,
    DurableHandleRequestV2,
    LeaseV2,
    find_context,
)
from harness.smb.server import ServerConfig, ServerState, ShareConfig
from harness.smb.vfs import LocalShare, Share
from harness.smb.vfs_memory import MemoryShare

from .test_smb_state_machines import PASSWORD, USER, Pair

# What the server called on the host before every access went through the share.
HOST_CALLS = ["open", "close", "stat", "lstat", "fstat", "listdir", "scandir", "mkdir", "rmdir", "unlink", "remove",
              "rename", "replace", "truncate", "ftruncate", "pread", "pwrite", "preadv", "utime", "statvfs"]
HOST_PATH_CALLS = ["exists", "lexists", "isdir", "isfile", "realpath"]


@contextlib.contextmanager
def _host_fs_forbidden():
    """While the server handles a PDU, the host file system calls fail the test (only then: pytest
    itself uses them between the calls)."""
    def refuse(name):
        def call(*args, **kwargs):
            raise AssertionError(f"the server touched the host file system: os.{name}{args!r}")
        return call

    saved = [(os, name, getattr(os, name)) for name in HOST_CALLS if hasattr(os, name)]
    saved += [(os.path, name, getattr(os.path, name)) for name in HOST_PATH_CALLS]
    for module, name, _ in saved:
        setattr(module, name, refuse(name))
    try:
        yield
    finally:
        for module, name, original in saved:
            setattr(module, name, original)


def _guarded(call):
    def run(*args, **kwargs):
        with _host_fs_forbidden():
            return call(*args, **kwargs)
    return run


@pytest.fixture(params=["local", "memory"])
def share(request, tmp_path) -> Share:
    if request.param == "local":
        root = tmp_path / "share"
        root.mkdir()
        return LocalShare(str(root))
    return MemoryShare(capacity=1 << 20, clock=lambda: 1_700_000_000 * 10**9)


def _state(fs: Share) -> ServerState:
    return ServerState(ServerConfig(shares={"share": ShareConfig("share", "", fs=fs)}, users={USER: PASSWORD}))


def _connect(state: ServerState, client_guid: bytes | None = None) -> tuple[Pair, int]:
    pair = Pair(state)
    if any(isinstance(fs, MemoryShare) for _, fs in state.shares.values()):
        pair.server.receive_pdu = _guarded(pair.server.receive_pdu)
        pair.server.close = _guarded(pair.server.close)
    if client_guid is not None:
        pair.client.client_guid = client_guid
    pair.negotiate()
    pair.login()
    return pair, pair.tree()


@pytest.fixture
def connected(share):
    state = _state(share)
    pair, tree = _connect(state)
    return pair, tree, share


def _create(pair, tree, name, disposition=CreateDisposition.OPEN_IF, options=0, **kw):
    response = pair.create(tree, name, disposition, options, **kw)
    return response.header.status, (response.body.file_id if response.header.status == NtStatus.SUCCESS else None)


def _write(pair, tree, file_id, data, offset=0):
    return pair.request(Command.WRITE, m.WriteRequest(file_id=file_id, offset=offset, data=data), tree)


def _read(pair, tree, file_id, length, offset=0):
    return pair.request(Command.READ, m.ReadRequest(file_id=file_id, length=length, offset=offset), tree)


def _close(pair, tree, file_id):
    return pair.request(Command.CLOSE, m.CloseRequest(file_id=file_id), tree).header.status


def _set_info(pair, tree, file_id, info_class, buffer):
    return pair.request(Command.SET_INFO, m.SetInfoRequest(file_id=file_id, info_type=InfoType.FILE,
                                                           file_info_class=info_class, buffer=buffer), tree)


def _query(pair, tree, file_id, info_class, length=4096):
    return pair.request(Command.QUERY_INFO, m.QueryInfoRequest(info_type=InfoType.FILE, file_info_class=info_class,
                                                               output_buffer_length=length, file_id=file_id), tree)


def _names(fs: Share, directory: str = "") -> list[str]:
    """What the share itself holds (through its interface, whichever implementation)."""
    return sorted(fs.listdir(fs.resolve(directory)))


# ---------------------------------------------------------------------------------------------- tests


def test_create_write_read_close(connected):
    pair, tree, fs = connected
    status, file_id = _create(pair, tree, "data.bin", CreateDisposition.CREATE)
    assert status == NtStatus.SUCCESS
    assert _write(pair, tree, file_id, b"hello world").body.count == 11
    assert _write(pair, tree, file_id, b"W", offset=6).body.count == 1
    assert _read(pair, tree, file_id, 100).body.data == b"hello World"
    assert _read(pair, tree, file_id, 5, offset=20).header.status == NtStatus.END_OF_FILE
    standard = fscc.FileStandardInformation.unpack(_query(pair, tree, file_id, 5).body.output)
    assert standard.end_of_file == 11
    assert _close(pair, tree, file_id) == NtStatus.SUCCESS
    assert _names(fs) == ["data.bin"]
    assert _create(pair, tree, "data.bin", CreateDisposition.CREATE)[0] == NtStatus.OBJECT_NAME_COLLISION
    # OVERWRITE truncates what is there; names are case-insensitive
    status, again = _create(pair, tree, "DATA.BIN", CreateDisposition.OVERWRITE)
    assert status == NtStatus.SUCCESS
    assert _read(pair, tree, again, 10).header.status == NtStatus.END_OF_FILE
    assert _names(fs) == ["data.bin"]


def test_names_stay_inside_the_share(connected):
    pair, tree, fs = connected
    assert _create(pair, tree, "..\\outside", CreateDisposition.CREATE)[0] == NtStatus.OBJECT_PATH_SYNTAX_BAD
    assert _create(pair, tree, "C:\\x", CreateDisposition.CREATE)[0] == NtStatus.OBJECT_NAME_INVALID
    assert _create(pair, tree, "nodir\\x", CreateDisposition.CREATE)[0] == NtStatus.OBJECT_PATH_NOT_FOUND
    assert _create(pair, tree, "missing", CreateDisposition.OPEN)[0] == NtStatus.OBJECT_NAME_NOT_FOUND
    assert _names(fs) == []


def test_rename_moves_the_file_and_keeps_the_open(connected):
    pair, tree, fs = connected
    _, file_id = _create(pair, tree, "a.txt", CreateDisposition.CREATE)
    _write(pair, tree, file_id, b"payload")
    target = "b.txt".encode("utf-16-le")
    rename = struct.pack("<B7xQI", 0, 0, len(target)) + target
    assert _set_info(pair, tree, file_id, 10, rename).header.status == NtStatus.SUCCESS
    assert _names(fs) == ["b.txt"]
    assert _read(pair, tree, file_id, 7).body.data == b"payload"  # the open follows the file
    name = fscc.FileNameInformation.unpack(_query(pair, tree, file_id, 9).body.output)
    assert name.file_name == "\\b.txt"
    # onto an existing name: only with ReplaceIfExists
    _, other = _create(pair, tree, "c.txt", CreateDisposition.CREATE)
    _close(pair, tree, other)
    onto = "c.txt".encode("utf-16-le")
    refused = _set_info(pair, tree, file_id, 10, struct.pack("<B7xQI", 0, 0, len(onto)) + onto)
    assert refused.header.status == NtStatus.OBJECT_NAME_COLLISION
    replaced = _set_info(pair, tree, file_id, 10, struct.pack("<B7xQI", 1, 0, len(onto)) + onto)
    assert replaced.header.status == NtStatus.SUCCESS
    assert _names(fs) == ["c.txt"]


def test_delete_on_close_by_option_and_by_disposition(connected):
    pair, tree, fs = connected
    _, first = _create(pair, tree, "gone1", CreateDisposition.CREATE, CreateOptions.DELETE_ON_CLOSE)
    _, second = _create(pair, tree, "gone2", CreateDisposition.CREATE)
    _, kept = _create(pair, tree, "kept", CreateDisposition.CREATE)
    assert _names(fs) == ["gone1", "gone2", "kept"]
    assert _set_info(pair, tree, second, 13, b"\x01").header.status == NtStatus.SUCCESS
    for file_id in (first, second, kept):
        assert _close(pair, tree, file_id) == NtStatus.SUCCESS
    assert _names(fs) == ["kept"]
    # a directory that is not empty cannot be marked; an empty one goes on close
    _, directory = _create(pair, tree, "d", CreateDisposition.CREATE, CreateOptions.DIRECTORY_FILE)
    _, inner = _create(pair, tree, "d\\f", CreateDisposition.CREATE)
    assert _set_info(pair, tree, directory, 13, b"\x01").header.status == NtStatus.DIRECTORY_NOT_EMPTY
    assert _set_info(pair, tree, inner, 13, b"\x01").header.status == NtStatus.SUCCESS
    _close(pair, tree, inner)
    assert _set_info(pair, tree, directory, 13, b"\x01").header.status == NtStatus.SUCCESS
    _close(pair, tree, directory)
    assert _names(fs) == ["kept"]


def test_directory_listing_with_pattern_and_continuation(connected):
    pair, tree, fs = connected
    _create(pair, tree, "dir", CreateDisposition.CREATE, CreateOptions.DIRECTORY_FILE)
    for name in ("one.txt", "two.txt", "three.log"):
        _, file_id = _create(pair, tree, f"dir\\{name}", CreateDisposition.CREATE)
        _write(pair, tree, file_id, name.encode())
        _close(pair, tree, file_id)
    _, dir_id = _create(pair, tree, "dir", CreateDisposition.OPEN, CreateOptions.DIRECTORY_FILE)

    def listing(pattern, flags=0):
        response = pair.request(Command.QUERY_DIRECTORY, m.QueryDirectoryRequest(
            file_id=dir_id, file_information_class=FileInfoClass.ID_BOTH_DIRECTORY, file_name=pattern, flags=flags,
            output_buffer_length=65536), tree)
        if response.header.status != NtStatus.SUCCESS:
            return response.header.status
        return {e.file_name: e.end_of_file for e in fscc.unpack_directory_entries(37, response.body.output)}

    assert listing("*") == {".": 0, "..": 0, "one.txt": 7, "two.txt": 7, "three.log": 9}
    assert listing("*") == NtStatus.NO_MORE_FILES
    assert listing("*.txt", flags=1) == {"one.txt": 7, "two.txt": 7}  # RESTART_SCANS with a new pattern
    assert listing("nothing*", flags=1) == NtStatus.NO_SUCH_FILE


def test_set_info_times_attributes_and_end_of_file(connected):
    pair, tree, fs = connected
    _, file_id = _create(pair, tree, "f", CreateDisposition.CREATE)
    _write(pair, tree, file_id, b"0123456789")
    when = fscc.filetime_from_unix_ns(1_600_000_000 * 10**9)
    basic = fscc.FileBasicInformation(when, when, when, when, 0x20 | 0x2)  # ARCHIVE | HIDDEN
    assert _set_info(pair, tree, file_id, 4, basic.pack()).header.status == NtStatus.SUCCESS
    got = fscc.FileBasicInformation.unpack(_query(pair, tree, file_id, 4).body.output)
    assert (got.creation_time, got.last_write_time, got.change_time) == (when, when, when)
    assert got.file_attributes == 0x22
    assert fs.stat(fs.resolve("f")).last_write_time == when  # the share itself keeps the write time
    assert _set_info(pair, tree, file_id, 20, struct.pack("<Q", 4)).header.status == NtStatus.SUCCESS
    assert _read(pair, tree, file_id, 100).body.data == b"0123"
    assert fs.stat(fs.resolve("f")).end_of_file == 4


def test_allocation_size_context_reserves_whole_units(connected):
    """The AlSi create context (MS-SMB2 2.2.13.2.6) on a new file: the file reports that much
    allocated, in 4 KiB units, until its data needs more (smbtorture smb2.durable-open.alloc-size)."""
    pair, tree, _fs = connected
    alsi = CreateContext(ALSI, struct.pack("<Q", 4097))
    created = pair.create(tree, "alloc.bin", CreateDisposition.CREATE, contexts=[alsi])
    assert created.header.status == NtStatus.SUCCESS
    assert (created.body.allocation_size, created.body.end_of_file) == (8192, 0)
    file_id = created.body.file_id
    assert _write(pair, tree, file_id, b"x").header.status == NtStatus.SUCCESS
    standard = fscc.FileStandardInformation.unpack(_query(pair, tree, file_id, 5).body.output)
    assert (standard.allocation_size, standard.end_of_file) == (8192, 1)
    assert _write(pair, tree, file_id, b"y" * 9000).header.status == NtStatus.SUCCESS
    standard = fscc.FileStandardInformation.unpack(_query(pair, tree, file_id, 5).body.output)
    assert standard.allocation_size >= 9000 and standard.allocation_size % 4096 == 0
    assert _close(pair, tree, file_id) == NtStatus.SUCCESS
    # an overwrite without the context gives the reservation up; a short context is refused, creating nothing
    again = pair.create(tree, "alloc.bin", CreateDisposition.OVERWRITE_IF)
    assert again.body.allocation_size == 0
    assert _close(pair, tree, again.body.file_id) == NtStatus.SUCCESS
    short = pair.create(tree, "short.bin", CreateDisposition.CREATE, contexts=[CreateContext(ALSI, b"\x01")])
    assert short.header.status == NtStatus.INVALID_PARAMETER
    assert "short.bin" not in _names(_fs)


def test_previous_version_context_finds_no_snapshot(connected):
    """A TWrp context asks for a snapshot of the file; the share keeps none: OBJECT_NAME_NOT_FOUND (as
    smbtorture smb2.create.blob expects), and nothing is created."""
    pair, tree, fs = connected
    twrp = CreateContext(TWRP, struct.pack("<Q", 10000))
    assert pair.create(tree, "tw.bin", CreateDisposition.OPEN_IF, contexts=[twrp]).header.status == \
        NtStatus.OBJECT_NAME_NOT_FOUND
    assert "tw.bin" not in _names(fs)


@pytest.mark.parametrize("name", [b"x", b"abc"])
def test_create_context_names_shorter_than_4_bytes_are_refused(connected, name):
    """MS-SMB2 3.3.5.9 create context validation (smbtorture smb2.create.blob, "bad tag length");
    unknown names of 4 bytes or more are ignored."""
    pair, tree, fs = connected
    bad = pair.create(tree, "ctx.bin", CreateDisposition.CREATE, contexts=[CreateContext(name, b"")])
    assert bad.header.status == NtStatus.INVALID_PARAMETER
    assert "ctx.bin" not in _names(fs)
    unknown = pair.create(tree, "ctx.bin", CreateDisposition.CREATE, contexts=[CreateContext(b"Zzzz", b"")])
    assert unknown.header.status == NtStatus.SUCCESS


def _ioctl(pair, tree, code, file_id, data=b"", max_output=4096):
    return pair.request(Command.IOCTL, m.IoctlRequest(ctl_code=code, file_id=file_id, input=data,
                                                      max_output_response=max_output), tree)


def test_copychunk_reads_an_execute_only_source_and_keeps_the_chunks_before_a_bad_one(connected):
    """FSCTL_SRV_COPYCHUNK: a source opened with FILE_EXECUTE (no FILE_READ_DATA) may be copied from
    (smbtorture smb2.ioctl.copy_chunk_bad_access); a chunk past the source's end is INVALID_VIEW_SIZE
    with a response counting the chunks copied before it, which stay copied (copy_chunk_src_exceed_multi)."""
    pair, tree, fs = connected
    pattern = bytes(range(256)) * 32  # 8192 bytes
    _status, writer = _create(pair, tree, "src.bin", CreateDisposition.CREATE)
    _write(pair, tree, writer, pattern)
    _close(pair, tree, writer)
    source = pair.create(tree, "src.bin", CreateDisposition.OPEN,
                         access=AccessMask.FILE_EXECUTE | AccessMask.FILE_READ_ATTRIBUTES).body.file_id
    _status, target = _create(pair, tree, "dst.bin", CreateDisposition.CREATE)
    key = _ioctl(pair, tree, 0x00140078, source).body.output[:24]  # FSCTL_SRV_REQUEST_RESUME_KEY

    def copy(*chunks):
        data = key + struct.pack("<II", len(chunks), 0) + b"".join(struct.pack("<QQII", *c, 0) for c in chunks)
        return _ioctl(pair, tree, 0x001440F2, target, data)  # FSCTL_SRV_COPYCHUNK

    whole = copy((0, 0, 4096))
    assert whole.header.status == NtStatus.SUCCESS
    assert struct.unpack("<III", whole.body.output) == (1, 0, 4096)
    partial = copy((0, 8192, 4096), (4096, 12288, 8192))  # the second reaches past the source's 8192 bytes
    assert partial.header.status == 0xC000001F  # STATUS_INVALID_VIEW_SIZE
    assert struct.unpack("<III", partial.body.output) == (1, 0, 4096)
    assert _read(pair, tree, target, 65536).body.data == pattern[:4096] + bytes(4096) + pattern[:4096]


def test_durable_open_survives_a_lost_connection(share):
    """DH2Q with a HANDLE lease: the open is detached when the connection goes, DH2C gets it back
    on a new connection with the data written before (MS-SMB2 §3.3.5.9.10, §3.3.5.9.12, §3.3.7.1)."""
    state = _state(share)
    guid = b"G" * 16
    pair, tree = _connect(state, guid)
    create_guid, lease_key = b"C" * 16, b"L" * 16
    lease = LeaseV2(lease_key=lease_key, lease_state=LeaseState.READ_CACHING | LeaseState.HANDLE_CACHING)
    body = m.CreateRequest(name="durable.bin", desired_access=AccessMask.GENERIC_READ | AccessMask.GENERIC_WRITE,
                           share_access=7, create_disposition=CreateDisposition.OPEN_IF,
                           requested_oplock_level=OplockLevel.LEASE,
                           contexts=[lease.to_context(), DurableHandleRequestV2(timeout=60_000, flags=0,
                                                                                create_guid=create_guid).to_context()])
    created = pair.request(Command.CREATE, body, tree)
    assert created.header.status == NtStatus.SUCCESS and find_context(created.body.contexts, DH2Q) is not None
    _write(pair, tree, created.body.file_id, b"survives")
    pair.server.close()  # the transport went away without LOGOFF
    assert list(state.durable.opens.values())[0].durable.detached_at is not None

    again, tree2 = _connect(state, guid)
    reconnect = m.CreateRequest(name="durable.bin", desired_access=body.desired_access, share_access=7,
                                create_disposition=CreateDisposition.OPEN, requested_oplock_level=OplockLevel.LEASE,
                                contexts=[lease.to_context(),
                                          DurableHandleReconnectV2(file_id=created.body.file_id,
                                                                   create_guid=create_guid, flags=0).to_context()])
    response = again.request(Command.CREATE, reconnect, tree2)
    assert response.header.status == NtStatus.SUCCESS
    assert response.body.file_id[:8] == created.body.file_id[:8]  # the persistent part is kept
    assert _read(again, tree2, response.body.file_id, 100).body.data == b"survives"


def test_memory_share_full_is_disk_full():
    """Only the memory share can be filled on purpose: ENOSPC from the share is STATUS_DISK_FULL."""
    fs = MemoryShare(capacity=8192)
    pair, tree = _connect(_state(fs))
    _, file_id = _create(pair, tree, "big", CreateDisposition.CREATE)
    assert _write(pair, tree, file_id, bytes(8000)).header.status == NtStatus.SUCCESS
    assert _write(pair, tree, file_id, bytes(1000), offset=8000).header.status == NtStatus.DISK_FULL
    size = fscc.FileFsSizeInformation.unpack(pair.request(Command.QUERY_INFO, m.QueryInfoRequest(
        info_type=InfoType.FILESYSTEM, file_info_class=3, output_buffer_length=64, file_id=file_id), tree).body.output)
    assert (size.total_allocation_units, size.available_allocation_units) == (2, 0)


def test_memory_share_keeps_posix_semantics():
    """What the server relies on from a share, checked on the memory share directly."""
    fs = MemoryShare()
    path = fs.resolve("a")
    fs.create(path)
    with pytest.raises(OSError) as exists:
        fs.create(path)
    assert exists.value.errno == errno.EEXIST
    handle = fs.open(path, writable=True)
    fs.pwrite(handle, b"abc", 2)
    assert fs.pread(handle, 10, 0) == b"\0\0abc"
    fs.remove(path)
    assert fs.pread(handle, 10, 0) == b"\0\0abc"  # still readable through the handle, as on POSIX
    assert not fs.exists(path)
    other = fs.resolve("b")
    fs.create(other)
    reader = fs.open(other, writable=False)
    with pytest.raises(OSError):
        fs.pwrite(reader, b"x", 0)
    directory = fs.resolve("d")
    fs.mkdir(directory)
    fs.create(fs.resolve("d\\x"))
    with pytest.raises(OSError) as not_empty:
        fs.rmdir(directory)
    assert not_empty.value.errno == errno.ENOTEMPTY
    fs.rename(directory, fs.resolve("e"))
    assert fs.listdir(fs.resolve("e")) == ["x"] and fs.resolve("E\\X") == fs.resolve("e\\x")
    assert MemoryShare().root != fs.root  # two memory shares never share a path
