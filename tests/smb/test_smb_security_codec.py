"""The security descriptor codec (MS-DTYP), the access policy over it, and the EA / stream list
codecs: round trips, bounds-checked reads that fail with the right NTSTATUS, and the DACL walk."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.smb import access
from harness.smb.constants import AccessMask, NtStatus
from harness.smb.errors import SMBProtocolError
from harness.smb.fscc_lists import (
    FullEa,
    StreamEntry,
    pack_full_eas,
    pack_streams,
    split_stream,
    unpack_full_eas,
    unpack_get_eas,
    unpack_streams,
)
from harness.smb.security import (
    ACCESS_ALLOWED_ACE_TYPE,
    ACCESS_DENIED_ACE_TYPE,
    CONTAINER_INHERIT_ACE,
    CREATOR_OWNER,
    EVERYONE,
    INHERIT_ONLY_ACE,
    INHERITED_ACE,
    NO_PROPAGATE_INHERIT_ACE,
    OBJECT_INHERIT_ACE,
    OWNER_RIGHTS,
    SE_DACL_AUTO_INHERITED,
    SE_DACL_PRESENT,
    SE_SELF_RELATIVE,
    Ace,
    Acl,
    SecurityDescriptor,
    Sid,
)

USER = Sid.parse("S-1-5-21-1-2-3-1000")
GROUP = Sid.parse("S-1-5-21-1-2-3-513")
OTHER = Sid.parse("S-1-5-21-1-2-3-1001")
TOKEN = access.Token(USER, GROUP, (GROUP, EVERYONE))

sids = st.builds(Sid, st.integers(0, (1 << 48) - 1), st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple))
aces = st.builds(Ace, st.sampled_from([0, 1, 2, 3]), st.integers(0, 255), st.integers(0, 0xFFFFFFFF), sids)
acls = st.builds(Acl, st.just(2), st.lists(aces, max_size=6))
descriptors = st.builds(SecurityDescriptor, st.just(SE_SELF_RELATIVE), st.none() | sids, st.none() | sids,
                        st.none() | acls, st.none() | acls)


def test_sid_text_and_wire():
    sid = Sid.parse("S-1-5-21-2164355944-2238121105-757406562-501")
    assert str(sid) == "S-1-5-21-2164355944-2238121105-757406562-501"
    raw = sid.pack()
    assert raw[:8] == bytes([1, 5, 0, 0, 0, 0, 0, 5]) and len(raw) == 8 + 4 * 5
    assert Sid.unpack_from(raw, 0) == sid
    with pytest.raises(ValueError):
        Sid.parse("S-1-5" + "-1" * 16)


@settings(max_examples=200, deadline=None)
@given(descriptors)
def test_descriptor_round_trip(sd):
    again = SecurityDescriptor.unpack(sd.pack())
    assert (again.owner, again.group) == (sd.owner, sd.group)
    assert (again.dacl.aces if again.dacl else None) == (sd.dacl.aces if sd.dacl else None)
    assert (again.sacl.aces if again.sacl else None) == (sd.sacl.aces if sd.sacl else None)


@settings(max_examples=300, deadline=None)
@given(descriptors, st.data())
def test_a_damaged_descriptor_is_an_error_with_its_status(sd, data):
    raw = bytearray(sd.pack())
    cut = data.draw(st.integers(0, len(raw)))
    for i in data.draw(st.lists(st.integers(0, max(0, len(raw) - 1)), max_size=3)):
        if raw:
            raw[i] = data.draw(st.integers(0, 255))
    try:
        SecurityDescriptor.unpack(bytes(raw[:cut]))
    except SMBProtocolError as exc:
        assert exc.status in (NtStatus.INVALID_SECURITY_DESCR, NtStatus.INVALID_ACL, NtStatus.INVALID_SID)


@pytest.mark.parametrize("damage, status", [
    (lambda raw: raw[:19], NtStatus.INVALID_SECURITY_DESCR),                 # header cut
    (lambda raw: bytes([2]) + raw[1:], NtStatus.INVALID_SECURITY_DESCR),     # revision 2
    (lambda raw: raw[:2] + bytes([0, 0]) + raw[4:], NtStatus.INVALID_SECURITY_DESCR),  # not self-relative
    (lambda raw: raw[:-3], NtStatus.INVALID_ACL),                            # last ACE cut
])
def test_damage_statuses(damage, status):
    raw = SecurityDescriptor(SE_SELF_RELATIVE, None, None, None,
                             Acl(aces=[Ace(ACCESS_ALLOWED_ACE_TYPE, 0, 1, EVERYONE)])).pack()
    with pytest.raises(SMBProtocolError) as caught:
        SecurityDescriptor.unpack(damage(raw))
    assert caught.value.status == status


def _sd(*entries: Ace, owner: Sid = USER) -> SecurityDescriptor:
    return SecurityDescriptor(SE_SELF_RELATIVE | SE_DACL_PRESENT, owner, GROUP, None, Acl(aces=list(entries)))


def test_dacl_walk_in_order():
    read, write = int(AccessMask.FILE_READ_DATA), int(AccessMask.FILE_WRITE_DATA)
    # a deny before an allow wins; an allow before a deny wins
    assert access.access_check(_sd(Ace(ACCESS_DENIED_ACE_TYPE, 0, read, EVERYONE),
                                   Ace(ACCESS_ALLOWED_ACE_TYPE, 0, read | write, USER), owner=OTHER),
                               TOKEN, read | write) == (write, read)
    assert access.access_check(_sd(Ace(ACCESS_ALLOWED_ACE_TYPE, 0, read, USER),
                                   Ace(ACCESS_DENIED_ACE_TYPE, 0, read, EVERYONE), owner=OTHER),
                               TOKEN, read) == (read, 0)
    # inherit-only ACEs and other people's ACEs do not apply
    assert access.maximal_access(_sd(Ace(ACCESS_ALLOWED_ACE_TYPE, INHERIT_ONLY_ACE, read, USER),
                                     Ace(ACCESS_ALLOWED_ACE_TYPE, 0, write, OTHER), owner=OTHER), TOKEN) == 0
    # generic rights in an ACE are mapped
    assert access.maximal_access(_sd(Ace(ACCESS_ALLOWED_ACE_TYPE, 0, int(AccessMask.GENERIC_READ), USER),
                                     owner=OTHER), TOKEN) == 0x120089
    # a NULL DACL grants everything but the SACL right
    null = SecurityDescriptor(SE_SELF_RELATIVE | SE_DACL_PRESENT, USER, GROUP)
    assert access.maximal_access(null, TOKEN) == access.FILE_ALL_ACCESS


def test_owner_rights():
    owner_implicit = int(AccessMask.READ_CONTROL | AccessMask.WRITE_DAC)
    assert access.maximal_access(_sd(), TOKEN) == owner_implicit
    # an OWNER RIGHTS ACE replaces the implicit rights of the owner
    limited = _sd(Ace(ACCESS_ALLOWED_ACE_TYPE, 0, int(AccessMask.READ_CONTROL), OWNER_RIGHTS))
    assert access.maximal_access(limited, TOKEN) == int(AccessMask.READ_CONTROL)
    assert access.maximal_access(limited, access.Token(OTHER, GROUP, ())) == 0


def test_inheritance_flags():
    full = 0x1F01FF
    parent = SecurityDescriptor(SE_SELF_RELATIVE | SE_DACL_PRESENT | SE_DACL_AUTO_INHERITED, OTHER, GROUP, None, Acl(aces=[
        Ace(ACCESS_ALLOWED_ACE_TYPE, OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE, int(AccessMask.GENERIC_READ), CREATOR_OWNER),
        Ace(ACCESS_ALLOWED_ACE_TYPE, CONTAINER_INHERIT_ACE | NO_PROPAGATE_INHERIT_ACE, full, EVERYONE),
        Ace(ACCESS_ALLOWED_ACE_TYPE, 0, full, OTHER),
    ]))
    file_sd = access.inherit(parent, None, TOKEN, is_dir=False)
    assert file_sd.owner == USER and file_sd.control & SE_DACL_AUTO_INHERITED
    assert [(a.flags, a.mask, a.sid) for a in file_sd.dacl.aces] == [(INHERITED_ACE, 0x120089, USER)]
    dir_sd = access.inherit(parent, None, TOKEN, is_dir=True)
    assert [(a.flags, a.mask, a.sid) for a in dir_sd.dacl.aces] == [
        (INHERITED_ACE, 0x120089, USER),  # effective: CREATOR OWNER made concrete, generic mapped
        (OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE | INHERIT_ONLY_ACE | INHERITED_ACE, int(AccessMask.GENERIC_READ),
         CREATOR_OWNER),  # passed on as it was
        (INHERITED_ACE, full, EVERYONE),  # no further propagation
    ]
    # nothing inheritable: the default (owner and SYSTEM)
    plain = access.inherit(_sd(Ace(ACCESS_ALLOWED_ACE_TYPE, 0, full, OTHER)), None, TOKEN, is_dir=False)
    assert [a.sid for a in plain.dacl.aces] == [USER, Sid.parse("S-1-5-18")]


def test_ea_list_codec():
    eas = [FullEa("A", b"1"), FullEa("LONGER.NAME", b"x" * 9, 0x80)]
    raw = pack_full_eas(eas)
    assert unpack_full_eas(raw) == eas
    assert int.from_bytes(raw[:4], "little") % 4 == 0 and int.from_bytes(raw[:4], "little") > 0
    for bad, status in [(raw[:-1], NtStatus.EA_LIST_INCONSISTENT), (raw[:3], NtStatus.EA_LIST_INCONSISTENT),
                        (pack_full_eas([FullEa("a?", b"1")]), NtStatus.INVALID_EA_NAME)]:
        with pytest.raises(SMBProtocolError) as caught:
            unpack_full_eas(bad)
        assert caught.value.status == status
    names = b"\x08\x00\x00\x00\x01A\x00\x00" + b"\x00\x00\x00\x00\x02BC\x00"
    assert unpack_get_eas(names) == ["A", "BC"]
    with pytest.raises(SMBProtocolError):
        unpack_get_eas(names[:-3])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_ea_list_never_crashes(raw):
    try:
        unpack_full_eas(raw)
    except SMBProtocolError as exc:
        assert exc.status in (NtStatus.EA_LIST_INCONSISTENT, NtStatus.INVALID_EA_NAME)


def test_stream_list_and_names():
    entries = [StreamEntry("::$DATA", 4, 4096), StreamEntry(":s:$DATA", 10, 4096)]
    raw = pack_streams(entries)
    assert unpack_streams(raw) == entries
    assert int.from_bytes(raw[:4], "little") % 8 == 0
    assert split_stream("a\\b.txt:s:$DATA") == ("a\\b.txt", "s")
    assert split_stream("b.txt:s") == ("b.txt", "s")
    assert split_stream("b.txt::$data") == ("b.txt", None)
    assert split_stream("plain") == ("plain", None)
    for bad in ("b:s:$INDEX_ALLOCATION", "b:", "a:x\\b", "b:s:$DATA:more"):
        with pytest.raises(SMBProtocolError) as caught:
            split_stream(bad)
        assert caught.value.status == NtStatus.OBJECT_NAME_INVALID, bad
