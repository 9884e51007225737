"""Sparse files: FSCTL_SET_SPARSE, FSCTL_QUERY_ALLOCATED_RANGES and FSCTL_SET_ZERO_DATA (MS-FSCC
2.3.64, 2.3.33, 2.3.85; harness/smb/server/sparse.py), over both shares through the sans-IO server,
and once end to end through the blocking server and client on a host directory.

Each test pins what a broken implementation gets wrong: exact ranges (a hole that is not really
punched, or a non-sparse file reported with holes, shows), exact statuses where Samba's smbd and
Windows agree (smbtorture smb2.ioctl.sparse_*), data and sizes after zeroing.
"""

from __future__ import annotations

import struct

import pytest

from harness.blocking.client import SMBClient
from harness.blocking.server import SMBServer
from harness.smb import fscc
from harness.smb import messages as m
from harness.smb.constants import (
    AccessMask,
    Command,
    CreateDisposition,
    CreateOptions,
    FileAttributes,
    Fsctl,
    InfoType,
    LockFlags,
    NtStatus,
)
from harness.smb.server import ServerConfig, ShareConfig
from harness.smb.server.sparse import FILE_SUPPORTS_SPARSE_FILES

from .test_smb_server_shares import (  # noqa: F401 - share and connected are fixtures
    _close,
    _create,
    _query,
    _read,
    _set_info,
    _write,
    connected,
    share,
)

SPARSE = int(FileAttributes.SPARSE_FILE)
CHUNK = 64 * 1024
RANGE = struct.Struct("<QQ")


def _fsctl(pair, tree, code, file_id, data=b"", max_output=1024):
    return pair.request(Command.IOCTL, m.IoctlRequest(ctl_code=code, file_id=file_id, input=data,
                                                      max_output_response=max_output), tree)


def _set_sparse(pair, tree, file_id, data=b"\x01"):
    return _fsctl(pair, tree, Fsctl.SET_SPARSE, file_id, data, 0).header.status


def _ranges(response) -> list[tuple[int, int]]:
    out = getattr(response, "body", response).output  # a sans-IO response or an IoctlResponse
    assert len(out) % RANGE.size == 0
    return [RANGE.unpack_from(out, i) for i in range(0, len(out), RANGE.size)]


def _qar(pair, tree, file_id, offset, length, max_output=1024):
    response = _fsctl(pair, tree, Fsctl.QUERY_ALLOCATED_RANGES, file_id, RANGE.pack(offset, length), max_output)
    assert response.header.status == NtStatus.SUCCESS, hex(response.header.status)
    return _ranges(response)


def _zero(pair, tree, file_id, offset, beyond):
    return _fsctl(pair, tree, Fsctl.SET_ZERO_DATA, file_id, RANGE.pack(offset, beyond), 0).header.status


def _attributes(pair, tree, file_id) -> int:
    return fscc.FileBasicInformation.unpack(_query(pair, tree, file_id, 4).body.output).file_attributes


def _standard(pair, tree, file_id) -> fscc.FileStandardInformation:
    return fscc.FileStandardInformation.unpack(_query(pair, tree, file_id, 5).body.output)


def _file(pair, tree, name, data=b"", access=None, **kw) -> bytes:
    status, file_id = _create(pair, tree, name, CreateDisposition.OPEN_IF, access=access, **kw)
    assert status == NtStatus.SUCCESS, hex(status)
    for at in range(0, len(data), CHUNK):  # a WRITE above 64 KiB would need more credits
        assert _write(pair, tree, file_id, data[at:at + CHUNK], at).header.status == NtStatus.SUCCESS
    return file_id


def _read_all(pair, tree, file_id, length: int) -> bytes:
    return b"".join(_read(pair, tree, file_id, min(CHUNK, length - at), at).body.data for at in range(0, length, CHUNK))


def _pattern(length: int) -> bytes:
    return bytes((i * 7 + 3) % 251 for i in range(length))


# ---------------------------------------------------------------------------------------------- SET_SPARSE


def test_the_share_announces_sparse_files_and_set_sparse_sets_and_clears_the_attribute(connected):
    pair, tree, fs = connected
    fs_info = pair.request(Command.QUERY_INFO, m.QueryInfoRequest(info_type=InfoType.FILESYSTEM, file_info_class=5,
                                                                  output_buffer_length=1024,
                                                                  file_id=_file(pair, tree, "probe.bin")), tree)
    assert fscc.FileFsAttributeInformation.unpack(fs_info.body.output).file_system_attributes \
        & FILE_SUPPORTS_SPARSE_FILES
    # CREATE does not take SPARSE_FILE from FileAttributes (smbtorture sparse_file_attr)
    file_id = _file(pair, tree, "s.bin", file_attributes=FileAttributes.NORMAL | FileAttributes.SPARSE_FILE)
    assert not _attributes(pair, tree, file_id) & SPARSE
    assert _set_sparse(pair, tree, file_id, b"") == NtStatus.SUCCESS  # no buffer: set
    assert _attributes(pair, tree, file_id) & SPARSE
    assert _set_sparse(pair, tree, file_id, b"") == NtStatus.SUCCESS  # again: stays set, not toggled
    assert _attributes(pair, tree, file_id) == FileAttributes.ARCHIVE | FileAttributes.SPARSE_FILE
    # every view of the attributes shows it: a new open's CREATE response, the directory listing
    other = pair.create(tree, "s.bin", CreateDisposition.OPEN)
    assert other.body.file_attributes & SPARSE
    _close(pair, tree, other.body.file_id)
    listing = pair.request(Command.QUERY_DIRECTORY, m.QueryDirectoryRequest(
        file_information_class=37, file_id=_file(pair, tree, "", options=CreateOptions.DIRECTORY_FILE,
                                                 access=AccessMask.GENERIC_READ),
        file_name="s.bin", output_buffer_length=4096), tree)
    assert listing.header.status == NtStatus.SUCCESS
    assert struct.unpack_from("<I", listing.body.output, 56)[0] & SPARSE  # FileAttributes of the entry
    # SET_INFO keeps the bit as it is, whatever FileAttributes says
    basic = fscc.FileBasicInformation(0, 0, 0, 0, int(FileAttributes.HIDDEN))
    assert _set_info(pair, tree, file_id, 4, basic.pack()).header.status == NtStatus.SUCCESS
    assert _attributes(pair, tree, file_id) == FileAttributes.HIDDEN | FileAttributes.SPARSE_FILE
    assert _set_sparse(pair, tree, file_id, b"\x00") == NtStatus.SUCCESS
    assert _attributes(pair, tree, file_id) == FileAttributes.HIDDEN
    basic = fscc.FileBasicInformation(0, 0, 0, 0, int(FileAttributes.ARCHIVE | FileAttributes.SPARSE_FILE))
    assert _set_info(pair, tree, file_id, 4, basic.pack()).header.status == NtStatus.SUCCESS
    assert _attributes(pair, tree, file_id) == FileAttributes.ARCHIVE
    # an oversize buffer counts by its first byte (sparse_set_oversize)
    assert _set_sparse(pair, tree, file_id, b"\xff" + bytes(99)) == NtStatus.SUCCESS
    assert _attributes(pair, tree, file_id) & SPARSE
    assert _set_sparse(pair, tree, file_id, bytes(100)) == NtStatus.SUCCESS
    assert not _attributes(pair, tree, file_id) & SPARSE


def test_set_sparse_needs_write_access_of_some_kind_and_a_file(connected):
    """Any of WRITE_DATA, APPEND_DATA, WRITE_ATTRIBUTES will do; WRITE_EA alone is ACCESS_DENIED;
    a directory is INVALID_PARAMETER (smbtorture sparse_perms, sparse_dir_flag)."""
    pair, tree, fs = connected
    _close(pair, tree, _file(pair, tree, "p.bin"))
    steps = ((AccessMask.FILE_WRITE_EA, b"\x01", NtStatus.ACCESS_DENIED, False),
             (AccessMask.FILE_READ_DATA | AccessMask.FILE_READ_ATTRIBUTES, b"\x01", NtStatus.ACCESS_DENIED, False),
             (AccessMask.FILE_WRITE_ATTRIBUTES, b"\x01", NtStatus.SUCCESS, True),
             (AccessMask.FILE_APPEND_DATA, b"\x00", NtStatus.SUCCESS, False),
             (AccessMask.FILE_WRITE_DATA, b"", NtStatus.SUCCESS, True))
    for access, data, expected, sparse_after in steps:
        file_id = pair.create(tree, "p.bin", CreateDisposition.OPEN, access=access).body.file_id
        assert _set_sparse(pair, tree, file_id, data) == expected, access
        _close(pair, tree, file_id)
        check = _file(pair, tree, "p.bin")
        assert bool(_attributes(pair, tree, check) & SPARSE) == sparse_after, access
        _close(pair, tree, check)
    status, directory = _create(pair, tree, "d", CreateDisposition.CREATE, CreateOptions.DIRECTORY_FILE,
                                access=AccessMask.GENERIC_ALL)
    assert status == NtStatus.SUCCESS
    assert _set_sparse(pair, tree, directory) == NtStatus.INVALID_PARAMETER
    assert not _attributes(pair, tree, directory) & SPARSE


# ---------------------------------------------------------------------------------------------- QUERY_ALLOCATED_RANGES


def test_a_non_sparse_file_is_one_range_clipped_to_the_query_and_the_file(connected):
    pair, tree, fs = connected
    file_id = _file(pair, tree, "n.bin", _pattern(2 * CHUNK))
    assert _qar(pair, tree, file_id, 0, 2 * CHUNK - 1) == [(0, 2 * CHUNK - 1)]
    assert _qar(pair, tree, file_id, 0, 2 * CHUNK + 1) == [(0, 2 * CHUNK)]
    assert _qar(pair, tree, file_id, 1, 2 * CHUNK) == [(1, 2 * CHUNK - 1)]
    assert _qar(pair, tree, file_id, 0, 0) == []
    assert _qar(pair, tree, file_id, 2 * CHUNK, 1024) == []  # at the end of the file
    # a zeroed range of a non-sparse file stays allocated
    assert _zero(pair, tree, file_id, 0, CHUNK) == NtStatus.SUCCESS
    assert _qar(pair, tree, file_id, 0, 2 * CHUNK) == [(0, 2 * CHUNK)]


def test_query_allocated_ranges_refuses_what_samba_refuses(connected):
    pair, tree, fs = connected
    file_id = _file(pair, tree, "m.bin")

    def qar(data, max_output=1024, on=file_id):
        return _fsctl(pair, tree, Fsctl.QUERY_ALLOCATED_RANGES, on, data, max_output)

    # nothing allocated, no room for a range: fine (sparse_qar_malformed)
    assert qar(RANGE.pack(0, 1024), max_output=0).header.status == NtStatus.SUCCESS
    _write(pair, tree, file_id, _pattern(1024))
    assert qar(RANGE.pack(0, 1024), max_output=0).header.status == NtStatus.BUFFER_TOO_SMALL
    assert qar(RANGE.pack(0, 1024), max_output=15).header.status == NtStatus.BUFFER_TOO_SMALL
    assert _ranges(qar(RANGE.pack(0, 1024) * 2)) == [(0, 1024)]  # an oversize input is fine
    assert qar(b"").header.status == NtStatus.INVALID_PARAMETER
    assert qar(RANGE.pack(0, 1024)[:15]).header.status == NtStatus.INVALID_PARAMETER
    assert qar(RANGE.pack(512, 0xFFFFFFFFFFFFFFFF)).header.status == NtStatus.INVALID_PARAMETER  # wraps
    assert qar(RANGE.pack(512, 0x7FFFFFFFFFFFFFFF)).header.status == NtStatus.INVALID_PARAMETER  # > MAXLONGLONG
    # READ_DATA is needed: READ_ATTRIBUTES or READ_EA is not enough (sparse_perms)
    for access, expected in ((AccessMask.FILE_READ_ATTRIBUTES, NtStatus.ACCESS_DENIED),
                             (AccessMask.FILE_READ_EA, NtStatus.ACCESS_DENIED),
                             (AccessMask.FILE_READ_DATA, NtStatus.SUCCESS)):
        other = pair.create(tree, "m.bin", CreateDisposition.OPEN, access=access).body.file_id
        assert qar(RANGE.pack(0, 1024), on=other).header.status == expected, access
        _close(pair, tree, other)


def test_ranges_that_do_not_fit_come_back_as_buffer_overflow_with_the_whole_entries_that_fit(connected):
    pair, tree, fs = connected
    file_id = _file(pair, tree, "o.bin", _pattern(5 * CHUNK))
    assert _set_sparse(pair, tree, file_id) == NtStatus.SUCCESS
    assert _zero(pair, tree, file_id, CHUNK, 2 * CHUNK) == NtStatus.SUCCESS
    assert _zero(pair, tree, file_id, 3 * CHUNK, 4 * CHUNK) == NtStatus.SUCCESS
    every = [(0, CHUNK), (2 * CHUNK, CHUNK), (4 * CHUNK, CHUNK)]
    assert _qar(pair, tree, file_id, 0, 5 * CHUNK, max_output=48) == every
    for room, entries in ((16, 1), (31, 1), (32, 2), (47, 2)):
        response = _fsctl(pair, tree, Fsctl.QUERY_ALLOCATED_RANGES, file_id, RANGE.pack(0, 5 * CHUNK), room)
        assert response.header.status == NtStatus.BUFFER_OVERFLOW, room
        assert _ranges(response) == every[:entries], room


# ---------------------------------------------------------------------------------------------- SET_ZERO_DATA


def test_zero_data_on_a_sparse_file_punches_a_hole_the_ranges_and_the_allocation_show(connected):
    pair, tree, fs = connected
    data = _pattern(4 * CHUNK)
    file_id = _file(pair, tree, "z.bin", data)
    assert _set_sparse(pair, tree, file_id) == NtStatus.SUCCESS
    assert _qar(pair, tree, file_id, 0, 4 * CHUNK) == [(0, 4 * CHUNK)]
    allocated = _standard(pair, tree, file_id).allocation_size
    assert _zero(pair, tree, file_id, CHUNK, 3 * CHUNK) == NtStatus.SUCCESS
    assert _qar(pair, tree, file_id, 0, 4 * CHUNK) == [(0, CHUNK), (3 * CHUNK, CHUNK)]
    assert _qar(pair, tree, file_id, CHUNK - 1, CHUNK) == [(CHUNK - 1, 1)]  # off by one, both sides
    assert _qar(pair, tree, file_id, CHUNK + 1, CHUNK) == []
    assert _qar(pair, tree, file_id, 1, CHUNK) == [(1, CHUNK - 1)]
    standard = _standard(pair, tree, file_id)
    assert standard.end_of_file == 4 * CHUNK
    assert standard.allocation_size <= allocated - 2 * CHUNK  # the space went back
    assert _read_all(pair, tree, file_id, 4 * CHUNK) == data[:CHUNK] + bytes(2 * CHUNK) + data[3 * CHUNK:]
    # a part of a block is zeroed and stays allocated; a write into the hole allocates it again
    assert _zero(pair, tree, file_id, 100, 200) == NtStatus.SUCCESS
    assert _qar(pair, tree, file_id, 0, CHUNK) == [(0, CHUNK)]
    assert _read(pair, tree, file_id, 300).body.data == data[:100] + bytes(100) + data[200:300]
    assert _write(pair, tree, file_id, b"back", 2 * CHUNK).header.status == NtStatus.SUCCESS
    ranges = _qar(pair, tree, file_id, 0, 4 * CHUNK)
    assert len(ranges) == 3 and ranges[0] == (0, CHUNK) and ranges[2] == (3 * CHUNK, CHUNK)
    assert ranges[1][0] <= 2 * CHUNK < 2 * CHUNK + 4 <= sum(ranges[1]) <= 3 * CHUNK
    # clearing the attribute: one range again
    assert _set_sparse(pair, tree, file_id, b"\x00") == NtStatus.SUCCESS
    assert _qar(pair, tree, file_id, 0, 4 * CHUNK) == [(0, 4 * CHUNK)]


def test_zero_data_to_the_end_keeps_the_size_and_frees_the_last_block(connected):
    pair, tree, fs = connected
    file_id = _file(pair, tree, "e.bin", _pattern(10_000))
    assert _set_sparse(pair, tree, file_id) == NtStatus.SUCCESS
    assert _zero(pair, tree, file_id, 8192, 1 << 40) == NtStatus.SUCCESS
    assert _qar(pair, tree, file_id, 0, 1 << 20) == [(0, 8192)]
    assert _standard(pair, tree, file_id).end_of_file == 10_000
    assert _read(pair, tree, file_id, 4096, 8192).body.data == bytes(10_000 - 8192)
    assert _zero(pair, tree, file_id, 0, 1 << 20) == NtStatus.SUCCESS
    assert _qar(pair, tree, file_id, 0, 1 << 20) == []
    assert _standard(pair, tree, file_id).end_of_file == 10_000


def test_zero_data_checks_its_range_access_and_locks_as_samba_does(connected):
    pair, tree, fs = connected
    data = _pattern(8192)
    file_id = _file(pair, tree, "l.bin", data)
    assert _zero(pair, tree, file_id, 4096, 4095) == NtStatus.INVALID_PARAMETER  # offset past BeyondFinalZero
    assert _zero(pair, tree, file_id, 1 << 63, 1 << 63) == NtStatus.INVALID_PARAMETER  # above MAXLONGLONG
    assert _fsctl(pair, tree, Fsctl.SET_ZERO_DATA, file_id, RANGE.pack(0, 8)[:15], 0).header.status \
        == NtStatus.INVALID_PARAMETER
    assert _zero(pair, tree, file_id, 4095, 4095) == NtStatus.SUCCESS  # empty: nothing to do
    assert _zero(pair, tree, file_id, 8192, 8200) == NtStatus.SUCCESS  # past the end: the size stays
    assert _standard(pair, tree, file_id).end_of_file == 8192
    assert _read(pair, tree, file_id, 8192).body.data == data
    for access, expected in ((AccessMask.FILE_WRITE_ATTRIBUTES, NtStatus.ACCESS_DENIED),
                             (AccessMask.FILE_APPEND_DATA, NtStatus.ACCESS_DENIED),
                             (AccessMask.FILE_WRITE_EA, NtStatus.ACCESS_DENIED),
                             (AccessMask.FILE_WRITE_DATA, NtStatus.SUCCESS)):
        other = pair.create(tree, "l.bin", CreateDisposition.OPEN, access=access).body.file_id
        assert _zero(pair, tree, other, 0, 16) == expected, access
        _close(pair, tree, other)
    assert _read(pair, tree, file_id, 32).body.data == bytes(16) + data[16:32]
    # another open's exclusive lock binds ZERO_DATA as it binds WRITE (sparse_lock)
    locker = pair.create(tree, "l.bin", CreateDisposition.OPEN).body.file_id
    lock = m.LockRequest(file_id=locker, locks=[m.LockElement(4096, 4096, LockFlags.EXCLUSIVE_LOCK
                                                              | LockFlags.FAIL_IMMEDIATELY)])
    assert pair.request(Command.LOCK, lock, tree).header.status == NtStatus.SUCCESS
    assert _set_sparse(pair, tree, file_id) == NtStatus.SUCCESS  # a lock does not stop this
    assert _zero(pair, tree, file_id, 0, 4097) == NtStatus.FILE_LOCK_CONFLICT
    assert _read(pair, tree, locker, 32, 4096).body.data == data[4096:4128]  # untouched
    assert _qar(pair, tree, file_id, 4096, 4096) == [(4096, 4096)]  # QAR ignores locks
    assert _zero(pair, tree, file_id, 0, 4096) == NtStatus.SUCCESS
    assert _qar(pair, tree, file_id, 0, 8192) == [(4096, 4096)]


# ---------------------------------------------------------------------------------------------- end to end


def test_sparse_fsctls_through_the_blocking_server_and_client(tmp_path):
    """The three FSCTLs over loopback TCP on a host directory: the holes are the host file's."""
    root = tmp_path / "share"
    root.mkdir()
    config = ServerConfig(shares={"share": ShareConfig("share", str(root))}, users={"bob": "Pw-123456"})
    server = SMBServer(config, "127.0.0.1", 0)
    server.start()
    try:
        with SMBClient("127.0.0.1", server.port, username="bob", password="Pw-123456") as client, \
                client.share("share") as tree:
            opened = tree.open("wire.bin", AccessMask.GENERIC_READ | AccessMask.GENERIC_WRITE | AccessMask.DELETE,
                               CreateDisposition.CREATE)
            data = _pattern(3 * CHUNK)
            for at in range(0, len(data), CHUNK):
                client.request(Command.WRITE, m.WriteRequest(file_id=opened.file_id, offset=at,
                                                             data=data[at:at + CHUNK]), tree.tree_id)

            def fsctl(code, payload, max_output=1024, ok=(NtStatus.SUCCESS,)):
                body = m.IoctlRequest(ctl_code=code, file_id=opened.file_id, input=payload,
                                      max_output_response=max_output)
                return client.request(Command.IOCTL, body, tree.tree_id, ok=ok)

            fsctl(Fsctl.SET_SPARSE, b"")
            fsctl(Fsctl.SET_ZERO_DATA, RANGE.pack(CHUNK, 2 * CHUNK), 0)
            host = root / "wire.bin"
            assert host.stat().st_size == 3 * CHUNK and host.stat().st_blocks * 512 <= 2 * CHUNK
            assert host.read_bytes() == data[:CHUNK] + bytes(CHUNK) + data[2 * CHUNK:]
            answer = fsctl(Fsctl.QUERY_ALLOCATED_RANGES, RANGE.pack(0, 3 * CHUNK))
            assert _ranges(answer.body_as(m.IoctlResponse)) == [(0, CHUNK), (2 * CHUNK, CHUNK)]
            partial = fsctl(Fsctl.QUERY_ALLOCATED_RANGES, RANGE.pack(0, 3 * CHUNK), 16, ok=(NtStatus.BUFFER_OVERFLOW,))
            assert _ranges(partial.body_as(m.IoctlResponse)) == [(0, CHUNK)]
            tree.close_file(opened.file_id)
    finally:
        server.stop()
    assert not server.errors, server.errors


@pytest.mark.parametrize("code", [Fsctl.SET_SPARSE, Fsctl.QUERY_ALLOCATED_RANGES, Fsctl.SET_ZERO_DATA])
def test_sparse_fsctls_name_an_open(connected, code):
    pair, tree, fs = connected
    stale = bytes(16)
    assert _fsctl(pair, tree, code, stale, RANGE.pack(0, 0)).header.status == NtStatus.FILE_CLOSED
