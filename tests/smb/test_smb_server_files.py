"""File metadata rules of the server, each over both shares (host directory and memory): security
descriptors and access checks, named streams, extended attributes, hard links, delete-pending,
the read-only attribute and SET_INFO's rules for times and attributes.

The shares and the "no host file system call while the server handles a PDU" guard for the memory
share come from test_smb_server_shares.
"""

from __future__ import annotations

import struct

from harness.smb import fscc
from harness.smb import messages as m
from harness.smb.constants import (
    AccessMask,
    Command,
    CreateDisposition,
    CreateOptions,
    FileAttributes,
    InfoType,
    NtStatus,
)
from harness.smb.fscc_lists import FullEa, pack_full_eas, unpack_full_eas, unpack_streams
from harness.smb.messages.create_contexts import (
    EXTA,
    MXAC,
    SECD,
    CreateContext,
    MaximalAccessResponse,
    find_context,
)
from harness.smb.security import (
    ACCESS_ALLOWED_ACE_TYPE,
    ACCESS_DENIED_ACE_TYPE,
    CONTAINER_INHERIT_ACE,
    CREATOR_OWNER,
    DACL_SECURITY_INFORMATION,
    EVERYONE,
    INHERIT_ONLY_ACE,
    OBJECT_INHERIT_ACE,
    OWNER_SECURITY_INFORMATION,
    SE_DACL_PRESENT,
    SE_SELF_RELATIVE,
    Ace,
    Acl,
    SecurityDescriptor,
)

from .test_smb_server_shares import (  # noqa: F401 - share and connected are fixtures
    _close,
    _create,
    _names,
    _query,
    _read,
    _set_info,
    _write,
    connected,
    share,
)

OWNER_DACL = OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION
READ = int(AccessMask.FILE_READ_DATA | AccessMask.FILE_READ_ATTRIBUTES | AccessMask.READ_CONTROL)


def _query_sd(pair, tree, file_id, info=OWNER_DACL, length=4096):
    return pair.request(Command.QUERY_INFO, m.QueryInfoRequest(info_type=InfoType.SECURITY, output_buffer_length=length,
                                                               additional_information=info, file_id=file_id), tree)


def _set_sd(pair, tree, file_id, raw: bytes, info=DACL_SECURITY_INFORMATION):
    return pair.request(Command.SET_INFO, m.SetInfoRequest(file_id=file_id, info_type=InfoType.SECURITY,
                                                           additional_information=info, buffer=raw), tree).header.status


def _sd_of(pair, tree, file_id) -> SecurityDescriptor:
    response = _query_sd(pair, tree, file_id)
    assert response.header.status == NtStatus.SUCCESS
    return SecurityDescriptor.unpack(response.body.output)


def _dacl(*aces: Ace) -> bytes:
    return SecurityDescriptor(SE_SELF_RELATIVE | SE_DACL_PRESENT, dacl=Acl(aces=list(aces))).pack()


def _rename_info(name: str, replace: bool = False) -> bytes:
    raw = name.encode("utf-16-le")
    return struct.pack("<B7xQI", int(replace), 0, len(raw)) + raw


# ---------------------------------------------------------------------------------------------- security


def test_a_new_file_is_owned_by_its_creator_and_its_dacl_is_checked_at_open(connected):
    pair, tree, fs = connected
    _, file_id = _create(pair, tree, "secret.txt", CreateDisposition.CREATE,
                         access=AccessMask.GENERIC_ALL)
    sd = _sd_of(pair, tree, file_id)
    user = sd.owner
    assert user is not None and str(user).startswith("S-1-5-21-") and user.sub_authorities[-1] >= 1000
    # The owner may read the descriptor and change the DACL (implicit READ_CONTROL | WRITE_DAC) even
    # when the DACL grants it nothing else: deny reading data, allow attributes.
    new = _dacl(Ace(ACCESS_DENIED_ACE_TYPE, 0, int(AccessMask.FILE_READ_DATA), user),
                Ace(ACCESS_ALLOWED_ACE_TYPE, 0, int(AccessMask.FILE_READ_ATTRIBUTES | AccessMask.SYNCHRONIZE), user))
    assert _set_sd(pair, tree, file_id, new) == NtStatus.SUCCESS
    _close(pair, tree, file_id)
    denied = pair.create(tree, "secret.txt", CreateDisposition.OPEN, access=READ)
    assert denied.header.status == NtStatus.ACCESS_DENIED
    # MAXIMUM_ALLOWED opens with what the DACL grants, and MXAC reports the same
    ctx = CreateContext(MXAC, b"")
    opened = pair.create(tree, "secret.txt", CreateDisposition.OPEN, access=AccessMask.MAXIMUM_ALLOWED, contexts=[ctx])
    assert opened.header.status == NtStatus.SUCCESS
    maximal = MaximalAccessResponse.from_context(find_context(opened.body.contexts, MXAC)).maximal_access
    assert not maximal & AccessMask.FILE_READ_DATA
    assert maximal & AccessMask.READ_CONTROL and maximal & AccessMask.WRITE_DAC
    assert _read(pair, tree, opened.body.file_id, 1).header.status == NtStatus.ACCESS_DENIED
    # the stored descriptor comes back as it was set
    again = _sd_of(pair, tree, opened.body.file_id)
    assert [(a.ace_type, a.mask, a.sid) for a in again.dacl.aces] == [
        (ACCESS_DENIED_ACE_TYPE, int(AccessMask.FILE_READ_DATA), user),
        (ACCESS_ALLOWED_ACE_TYPE, int(AccessMask.FILE_READ_ATTRIBUTES | AccessMask.SYNCHRONIZE), user)]


def test_security_info_needs_rights_and_good_bytes(connected):
    pair, tree, fs = connected
    _, file_id = _create(pair, tree, "f", CreateDisposition.CREATE, access=AccessMask.FILE_READ_DATA)
    assert _query_sd(pair, tree, file_id).header.status == NtStatus.ACCESS_DENIED  # no READ_CONTROL
    assert _set_sd(pair, tree, file_id, _dacl()) == NtStatus.ACCESS_DENIED  # no WRITE_DAC
    _close(pair, tree, file_id)
    _, file_id = _create(pair, tree, "f", CreateDisposition.OPEN, access=AccessMask.GENERIC_ALL)
    before = _query_sd(pair, tree, file_id).body.output
    good = _dacl(Ace(ACCESS_ALLOWED_ACE_TYPE, 0, 0x1F01FF, EVERYONE))
    assert _set_sd(pair, tree, file_id, good[:-4]) == NtStatus.INVALID_ACL  # ACE cut short
    assert _set_sd(pair, tree, file_id, good[:10]) == NtStatus.INVALID_SECURITY_DESCR
    bad_sid = bytearray(good)
    bad_sid[20 + 8 + 8 + 1] = 16  # SubAuthorityCount 16 > 15
    assert _set_sd(pair, tree, file_id, bytes(bad_sid)) == NtStatus.INVALID_SID
    assert _query_sd(pair, tree, file_id).body.output == before  # nothing half-parsed was stored
    # a buffer too small for the descriptor: BUFFER_TOO_SMALL and the size needed
    full = _query_sd(pair, tree, file_id).body.output
    short = _query_sd(pair, tree, file_id, length=8)
    assert short.header.status == NtStatus.BUFFER_TOO_SMALL
    assert struct.unpack("<I", short.body.error_data)[0] == len(full)


def test_sd_create_context_and_inheritance(connected):
    pair, tree, fs = connected
    # A directory whose DACL lets Everyone do everything in it (not inherited), CREATOR OWNER do
    # everything below it, and Everyone read below it.
    sd = _dacl(Ace(ACCESS_ALLOWED_ACE_TYPE, 0, 0x1F01FF, EVERYONE),
               Ace(ACCESS_ALLOWED_ACE_TYPE, OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE | INHERIT_ONLY_ACE,
                   0x1F01FF, CREATOR_OWNER),
               Ace(ACCESS_ALLOWED_ACE_TYPE, OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE, 0x1200A9, EVERYONE))
    made = pair.create(tree, "dir", CreateDisposition.CREATE, CreateOptions.DIRECTORY_FILE,
                       contexts=[CreateContext(SECD, sd)])
    assert made.header.status == NtStatus.SUCCESS
    _, child = _create(pair, tree, "dir\\child.txt", CreateDisposition.CREATE, access=AccessMask.GENERIC_ALL)
    child_sd = _sd_of(pair, tree, child)
    owner = child_sd.owner
    # the CREATOR OWNER ACE became the creator's own, the Everyone ACE came down as is
    assert [(a.mask, a.sid, a.flags) for a in child_sd.dacl.aces] == [(0x1F01FF, owner, 0), (0x1200A9, EVERYONE, 0)]
    # A malformed SD create context refuses the CREATE and creates nothing.
    refused = pair.create(tree, "dir\\bad.txt", CreateDisposition.CREATE, contexts=[CreateContext(SECD, sd[:12])])
    assert refused.header.status == NtStatus.INVALID_SECURITY_DESCR
    assert _names(fs, "dir") == ["child.txt"]
    # A parent that does not let this user add files: ACCESS_DENIED
    _, dir_id = _create(pair, tree, "dir", CreateDisposition.OPEN, CreateOptions.DIRECTORY_FILE,
                        access=AccessMask.WRITE_DAC)
    assert _set_sd(pair, tree, dir_id, _dacl(Ace(ACCESS_ALLOWED_ACE_TYPE, 0, 0x1200A9, EVERYONE))) == NtStatus.SUCCESS
    assert _create(pair, tree, "dir", CreateDisposition.OPEN, CreateOptions.DIRECTORY_FILE,
                   access=AccessMask.GENERIC_ALL)[0] == NtStatus.ACCESS_DENIED
    # the owner may still change the DACL although the DACL itself does not grant WRITE_DAC
    assert _create(pair, tree, "dir", CreateDisposition.OPEN, CreateOptions.DIRECTORY_FILE,
                   access=AccessMask.WRITE_DAC)[0] == NtStatus.SUCCESS
    assert _create(pair, tree, "dir\\more.txt", CreateDisposition.CREATE)[0] == NtStatus.ACCESS_DENIED


# ---------------------------------------------------------------------------------------------- streams


def test_named_streams_hold_their_own_data(connected):
    pair, tree, fs = connected
    status, stream = _create(pair, tree, "base.txt:one:$DATA", CreateDisposition.CREATE)
    assert status == NtStatus.SUCCESS  # the file is created with its stream
    assert _write(pair, tree, stream, b"stream data").body.count == 11
    _, base = _create(pair, tree, "base.txt", CreateDisposition.OPEN)
    _write(pair, tree, base, b"main")
    assert _read(pair, tree, stream, 100).body.data == b"stream data"
    assert _read(pair, tree, base, 100).body.data == b"main"
    entries = unpack_streams(_query(pair, tree, base, 22).body.output)
    assert [(e.name, e.size) for e in entries] == [("::$DATA", 4), (":one:$DATA", 11)]
    assert fscc.FileStandardInformation.unpack(_query(pair, tree, stream, 5).body.output).end_of_file == 11
    # the same stream by another spelling, CREATE on it collides; OPEN of a missing one fails
    assert _create(pair, tree, "BASE.TXT:ONE", CreateDisposition.CREATE)[0] == NtStatus.OBJECT_NAME_COLLISION
    assert _create(pair, tree, "base.txt:two", CreateDisposition.OPEN)[0] == NtStatus.OBJECT_NAME_NOT_FOUND
    assert _names(fs) == ["base.txt"]  # streams are not directory entries


def test_stream_names_that_are_refused(connected):
    pair, tree, fs = connected
    _close(pair, tree, _create(pair, tree, "f", CreateDisposition.CREATE)[1])
    for name in ("f:s:$FOO", "f:", "dir:x\\f", "f:a/b"):
        assert _create(pair, tree, name, CreateDisposition.OPEN_IF)[0] == NtStatus.OBJECT_NAME_INVALID, name
    assert _create(pair, tree, "f:s", CreateDisposition.OPEN_IF, CreateOptions.DIRECTORY_FILE)[0] == \
        NtStatus.NOT_A_DIRECTORY
    assert fs.list_streams(fs.resolve("f")) == []


def test_stream_delete_and_rename_leave_the_file(connected):
    pair, tree, fs = connected
    _, gone = _create(pair, tree, "f:gone", CreateDisposition.CREATE, CreateOptions.DELETE_ON_CLOSE)
    _, moved = _create(pair, tree, "f:old", CreateDisposition.CREATE)
    _write(pair, tree, moved, b"x")
    _close(pair, tree, gone)
    assert _set_info(pair, tree, moved, 10, _rename_info(":new:$DATA")).header.status == NtStatus.SUCCESS
    assert [name for name, _ in fs.list_streams(fs.resolve("f"))] == ["new"]
    _, other = _create(pair, tree, "f:other", CreateDisposition.CREATE)
    assert _set_info(pair, tree, moved, 10, _rename_info(":other")).header.status == NtStatus.OBJECT_NAME_COLLISION
    _close(pair, tree, other)
    assert _set_info(pair, tree, moved, 10, _rename_info(":other", True)).header.status == NtStatus.SUCCESS
    assert [name for name, _ in fs.list_streams(fs.resolve("f"))] == ["other"]
    assert _names(fs) == ["f"]


def test_a_file_deleted_under_an_open_stream_is_delete_pending(connected):
    pair, tree, fs = connected
    _, stream = _create(pair, tree, "f:s", CreateDisposition.CREATE)
    _, base = _create(pair, tree, "f", CreateDisposition.OPEN, CreateOptions.DELETE_ON_CLOSE)
    _close(pair, tree, base)
    assert _names(fs) == ["f"]  # waits for the stream's open
    assert _create(pair, tree, "f", CreateDisposition.OPEN)[0] == NtStatus.DELETE_PENDING
    assert _create(pair, tree, "f:s", CreateDisposition.OPEN)[0] == NtStatus.DELETE_PENDING
    _close(pair, tree, stream)
    assert _names(fs) == []


# ---------------------------------------------------------------------------------------------- EAs


def test_extended_attributes_set_query_delete(connected):
    pair, tree, fs = connected
    _, file_id = _create(pair, tree, "ea.txt", CreateDisposition.CREATE)
    assert _query(pair, tree, file_id, 15).header.status == NtStatus.NO_EAS_ON_FILE
    eas = pack_full_eas([FullEa("First", b"1"), FullEa("Second", b"22")])
    assert _set_info(pair, tree, file_id, 15, eas).header.status == NtStatus.SUCCESS
    got = unpack_full_eas(_query(pair, tree, file_id, 15).body.output)
    assert [(e.name, e.value) for e in got] == [("First", b"1"), ("Second", b"22")]
    assert fscc.FileEaInformation.unpack(_query(pair, tree, file_id, 7).body.output).ea_size == len(eas)
    # an empty value deletes; names compare without case
    assert _set_info(pair, tree, file_id, 15, pack_full_eas([FullEa("FIRST")])).header.status == NtStatus.SUCCESS
    got = unpack_full_eas(_query(pair, tree, file_id, 15).body.output)
    assert [(e.name, e.value) for e in got] == [("Second", b"22")]
    # a buffer for no whole entry
    assert _query(pair, tree, file_id, 15, length=4).header.status == NtStatus.BUFFER_TOO_SMALL


def test_extended_attributes_bad_input(connected):
    pair, tree, fs = connected
    _, file_id = _create(pair, tree, "ea.txt", CreateDisposition.CREATE)
    bad_name = pack_full_eas([FullEa("ok", b"1")]).replace(b"ok", b"o*")
    assert _set_info(pair, tree, file_id, 15, bad_name).header.status == NtStatus.INVALID_EA_NAME
    truncated = pack_full_eas([FullEa("name", b"value")])[:-2]
    assert _set_info(pair, tree, file_id, 15, truncated).header.status == NtStatus.EA_LIST_INCONSISTENT
    huge = pack_full_eas([FullEa(f"n{i}", bytes(30000)) for i in range(3)])
    assert _set_info(pair, tree, file_id, 15, huge).header.status == NtStatus.EA_TOO_LARGE
    assert _query(pair, tree, file_id, 15).header.status == NtStatus.NO_EAS_ON_FILE  # nothing half-applied
    _close(pair, tree, file_id)
    _, no_ea = _create(pair, tree, "ea.txt", CreateDisposition.OPEN, access=AccessMask.FILE_READ_DATA)
    assert _query(pair, tree, no_ea, 15).header.status == NtStatus.ACCESS_DENIED
    assert _set_info(pair, tree, no_ea, 15, pack_full_eas([FullEa("a", b"b")])).header.status == NtStatus.ACCESS_DENIED


def test_ea_create_context(connected):
    pair, tree, fs = connected
    eas = pack_full_eas([FullEa("Colour", b"blue")])
    made = pair.create(tree, "with-ea", CreateDisposition.CREATE, contexts=[CreateContext(EXTA, eas)])
    assert made.header.status == NtStatus.SUCCESS
    got = unpack_full_eas(_query(pair, tree, made.body.file_id, 15).body.output)
    assert [(e.name, e.value) for e in got] == [("Colour", b"blue")]
    bad = pair.create(tree, "bad-ea", CreateDisposition.CREATE, contexts=[CreateContext(EXTA, eas[:9])])
    assert bad.header.status == NtStatus.EA_LIST_INCONSISTENT
    assert "bad-ea" not in _names(fs)


# ---------------------------------------------------------------------------------------------- links, delete, read-only


def test_hard_links(connected):
    pair, tree, fs = connected
    _, file_id = _create(pair, tree, "one", CreateDisposition.CREATE)
    _write(pair, tree, file_id, b"shared")
    assert _set_info(pair, tree, file_id, 11, _rename_info("two")).header.status == NtStatus.SUCCESS
    assert _names(fs) == ["one", "two"]
    assert fscc.FileStandardInformation.unpack(_query(pair, tree, file_id, 5).body.output).number_of_links == 2
    _, two = _create(pair, tree, "two", CreateDisposition.OPEN)
    assert _read(pair, tree, two, 10).body.data == b"shared"
    _close(pair, tree, _create(pair, tree, "three", CreateDisposition.CREATE)[1])
    assert _set_info(pair, tree, file_id, 11, _rename_info("three")).header.status == NtStatus.OBJECT_NAME_COLLISION
    assert _set_info(pair, tree, file_id, 11, _rename_info("two", True)).header.status == NtStatus.ACCESS_DENIED  # open
    assert _set_info(pair, tree, file_id, 11, _rename_info("three", True)).header.status == NtStatus.SUCCESS
    assert fscc.FileStandardInformation.unpack(_query(pair, tree, file_id, 5).body.output).number_of_links == 3
    _, directory = _create(pair, tree, "d", CreateDisposition.CREATE, CreateOptions.DIRECTORY_FILE)
    assert _set_info(pair, tree, directory, 11, _rename_info("d2")).header.status == NtStatus.FILE_IS_A_DIRECTORY


def test_delete_pending_and_read_only(connected):
    pair, tree, fs = connected
    _, file_id = _create(pair, tree, "doomed", CreateDisposition.CREATE)
    assert _set_info(pair, tree, file_id, 13, b"\x01").header.status == NtStatus.SUCCESS
    assert _create(pair, tree, "doomed", CreateDisposition.OPEN)[0] == NtStatus.DELETE_PENDING
    standard = fscc.FileStandardInformation.unpack(_query(pair, tree, file_id, 5).body.output)
    assert standard.delete_pending == 1 and standard.number_of_links == 0
    _close(pair, tree, file_id)
    assert _names(fs) == []
    # READONLY: no write access, no delete, MAXIMUM_ALLOWED without the write rights
    made = pair.create(tree, "ro", CreateDisposition.CREATE, file_attributes=FileAttributes.READONLY)
    assert made.body.file_attributes == FileAttributes.READONLY | FileAttributes.ARCHIVE
    _close(pair, tree, made.body.file_id)
    assert _create(pair, tree, "ro", CreateDisposition.OPEN, access=AccessMask.FILE_WRITE_DATA)[0] == \
        NtStatus.ACCESS_DENIED
    assert _create(pair, tree, "ro", CreateDisposition.OPEN, CreateOptions.DELETE_ON_CLOSE,
                   access=AccessMask.DELETE)[0] == NtStatus.CANNOT_DELETE
    assert _create(pair, tree, "ro", CreateDisposition.OVERWRITE_IF)[0] == NtStatus.ACCESS_DENIED
    _, most = _create(pair, tree, "ro", CreateDisposition.OPEN, access=AccessMask.MAXIMUM_ALLOWED)
    granted = fscc.FileAccessInformation.unpack(_query(pair, tree, most, 8).body.output).access_flags
    assert granted & AccessMask.FILE_READ_DATA and not granted & (AccessMask.FILE_WRITE_DATA | AccessMask.FILE_APPEND_DATA)
    assert _set_info(pair, tree, most, 13, b"\x01").header.status == NtStatus.CANNOT_DELETE


def test_set_basic_information_rules(connected):
    pair, tree, fs = connected
    _, file_id = _create(pair, tree, "t", CreateDisposition.CREATE)
    before = fscc.FileBasicInformation.unpack(_query(pair, tree, file_id, 4).body.output)
    # DIRECTORY on a file is refused before anything changes (here: the times asked for with it)
    wrong = fscc.FileBasicInformation(123456789, 123456789, 123456789, 123456789, FileAttributes.DIRECTORY).pack()
    assert _set_info(pair, tree, file_id, 4, wrong).header.status == NtStatus.INVALID_PARAMETER
    assert fscc.FileBasicInformation.unpack(_query(pair, tree, file_id, 4).body.output) == before
    # a creation time sticks; 0 and -1 leave a time as it is; NORMAL alone reads back NORMAL
    stamp = before.creation_time - 10_000_000
    set_ = fscc.FileBasicInformation(stamp, 0, 0xFFFFFFFFFFFFFFFF, 0, FileAttributes.NORMAL).pack()
    assert _set_info(pair, tree, file_id, 4, set_).header.status == NtStatus.SUCCESS
    after = fscc.FileBasicInformation.unpack(_query(pair, tree, file_id, 4).body.output)
    assert after.creation_time == stamp and after.last_write_time == before.last_write_time
    assert after.file_attributes == FileAttributes.NORMAL
    # the mode class keeps what is set and refuses what cannot be
    assert _set_info(pair, tree, file_id, 16, struct.pack("<I", 2)).header.status == NtStatus.SUCCESS
    assert fscc.FileModeInformation.unpack(_query(pair, tree, file_id, 16).body.output).mode == 2
    assert _set_info(pair, tree, file_id, 16, struct.pack("<I", 0x1000)).header.status == NtStatus.INVALID_PARAMETER


def test_a_write_time_set_by_an_open_is_kept_by_its_writes(connected):
    pair, tree, fs = connected
    _, file_id = _create(pair, tree, "w", CreateDisposition.CREATE)
    stamp = 125_000_000_000_000_000  # 1997
    basic = fscc.FileBasicInformation(0, 0, stamp, 0, 0).pack()
    assert _set_info(pair, tree, file_id, 4, basic).header.status == NtStatus.SUCCESS
    _write(pair, tree, file_id, b"data")
    assert _set_info(pair, tree, file_id, 20, struct.pack("<Q", 2)).header.status == NtStatus.SUCCESS  # EOF
    assert fscc.FileBasicInformation.unpack(_query(pair, tree, file_id, 4).body.output).last_write_time == stamp
    # -2 resumes the updates (MS-FSA 2.1.5.14.2)
    resume = fscc.FileBasicInformation(0, 0, 0xFFFFFFFFFFFFFFFE, 0, 0).pack()
    assert _set_info(pair, tree, file_id, 4, resume).header.status == NtStatus.SUCCESS
    _write(pair, tree, file_id, b"more")
    assert fscc.FileBasicInformation.unpack(_query(pair, tree, file_id, 4).body.output).last_write_time != stamp


def test_a_write_updates_the_write_time_once_two_seconds_later(connected):
    """With a server clock: the first write's update waits ~2 s (no timer: the next request after it
    is due applies it), a second write through the open changes nothing, its close does; FLUSH
    applies a pending update at once."""
    pair, tree, fs = connected
    clock = [1_800_000_000 * 10**9]
    pair.server.state.config.clock = lambda: clock[0]
    _, file_id = _create(pair, tree, "w", CreateDisposition.CREATE)

    def write_time():
        return fscc.FileBasicInformation.unpack(_query(pair, tree, file_id, 4).body.output).last_write_time

    created = write_time()
    _write(pair, tree, file_id, b"one")
    clock[0] += 1_900_000_000
    assert write_time() == created  # not yet due
    clock[0] += 200_000_000
    due = fscc.filetime_from_unix_ns(clock[0] - 100_000_000)  # first write + 2 s
    assert write_time() == due
    _write(pair, tree, file_id, b"two")
    clock[0] += 5 * 10**9
    assert write_time() == due  # one update per open
    clock[0] += 10**9
    closed = pair.request(Command.CLOSE, m.CloseRequest(file_id=file_id, flags=1), tree).body
    assert closed.last_write_time == fscc.filetime_from_unix_ns(clock[0])  # it wrote since: the close sets it
    _, again = _create(pair, tree, "w", CreateDisposition.OPEN)
    _write(pair, tree, again, b"three")
    clock[0] += 10**9
    assert pair.request(Command.FLUSH, m.FlushRequest(file_id=again), tree).header.status == NtStatus.SUCCESS
    assert fscc.FileBasicInformation.unpack(_query(pair, tree, again, 4).body.output).last_write_time == \
        fscc.filetime_from_unix_ns(clock[0])
