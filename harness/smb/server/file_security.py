"""Per-file security descriptors and extended attributes as the server applies them: who a session
is (its token), the descriptor of a file (stored through the share, or inherited from its parent
when none is stored), the access a CREATE gets (MS-SMB2 §3.3.5.9 via MS-FSA 2.1.5.1.2.1), and
QUERY_INFO/SET_INFO with InfoType SECURITY (§3.3.5.20.3, §3.3.5.21.3) and FileFullEaInformation.

Why one module: CREATE, QUERY_INFO and SET_INFO all ask the same questions (what descriptor does
this file have, what may this session do to it) and must answer them the same way; the policy
itself is in :mod:`harness.smb.access`, the codecs in :mod:`harness.smb.security` and
:mod:`harness.smb.fscc_lists`, the storage behind :class:`harness.smb.vfs.Share`.

Rules kept here:

- A session's token: the server's domain SID (fixed per server GUID) and a RID per configured user
  (1000 upwards, in name order; 501 Guest for an anonymous session).
- Files created through the server store their descriptor at creation; a file that has none (made
  outside the server) inherits one from its parent, the share root an Everyone-full-access one.
- Access rights are what the DACL grants; DELETE also comes from FILE_DELETE_CHILD on the parent
  and FILE_READ_ATTRIBUTES from FILE_LIST_DIRECTORY on it (MS-FSA 2.1.5.1.2.1).  ACCESS_SYSTEM_SECURITY
  needs a privilege nobody here holds (STATUS_PRIVILEGE_NOT_HELD).
- A READONLY file refuses FILE_WRITE_DATA/FILE_APPEND_DATA, and MAXIMUM_ALLOWED leaves them out.
"""

from __future__ import annotations

import hashlib

from .. import access
from .. import messages as m
from ..constants import AccessMask, FileAttributes, NtStatus
from ..errors import SMBProtocolError
from ..fscc_lists import (
    MAX_EA_LIST,
    FullEa,
    check_ea_name,
    pack_full_eas,
    unpack_full_eas,
)
from ..messages.create_contexts import EXTA, SECD, find_context
from ..security import (
    BUILTIN_ADMINISTRATORS,
    DACL_SECURITY_INFORMATION,
    GROUP_SECURITY_INFORMATION,
    OWNER_SECURITY_INFORMATION,
    SACL_SECURITY_INFORMATION,
    SecurityDescriptor,
    Sid,
    parse_descriptor,
)
from ..vfs import Share
from .model import Fail, Open

KNOWN_INFO = OWNER_SECURITY_INFORMATION | GROUP_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION | SACL_SECURITY_INFORMATION
READONLY_DENIED = int(AccessMask.FILE_WRITE_DATA | AccessMask.FILE_APPEND_DATA)
FILE_LIST_DIRECTORY = 0x1
FILE_ADD_FILE = 0x2
FILE_ADD_SUBDIRECTORY = 0x4
FILE_DELETE_CHILD = 0x40


def domain_sid(conn) -> Sid:
    digest = hashlib.sha256(conn.config.server_guid).digest()
    return Sid(5, (21, *(int.from_bytes(digest[i:i + 4], "little") for i in (0, 4, 8))))


def token(conn, session) -> access.Token:
    names = [name.upper() for name in sorted(conn.config.users)]
    principal = (getattr(session, "username", "") or "").upper()
    username = principal.rpartition("\\")[2].partition("@")[0]  # DOMAIN\\user or user@REALM
    rid = 1000 + names.index(username) if username in names else 501
    return access.token_for(domain_sid(conn), rid)


def descriptor(fs: Share, path: str) -> SecurityDescriptor:
    """The file's stored descriptor, or the one it inherits (computed, not stored)."""
    stored = fs.extras(path).security
    if stored is not None:
        return SecurityDescriptor.unpack(stored)
    if path == fs.root:
        return access.share_root_descriptor(BUILTIN_ADMINISTRATORS, BUILTIN_ADMINISTRATORS)
    parent = descriptor(fs, fs.parent(path))
    nobody = access.Token(BUILTIN_ADMINISTRATORS, BUILTIN_ADMINISTRATORS, ())
    return access.inherit(parent, None, nobody, fs.is_dir(path))


def store(fs: Share, path: str, sd: SecurityDescriptor) -> None:
    fs.extras(path).security = sd.pack()


def _desired(desired: int) -> int:
    return access.map_generic(desired) | (desired & AccessMask.MAXIMUM_ALLOWED)


def existing_access(conn, session, fs: Share, path: str, desired: int, attributes: int, is_dir: bool) -> int:
    """The access a CREATE of an existing file gets, or Fail(ACCESS_DENIED / PRIVILEGE_NOT_HELD)."""
    wanted = _desired(desired)
    if wanted & AccessMask.ACCESS_SYSTEM_SECURITY:
        raise Fail(NtStatus.PRIVILEGE_NOT_HELD, "ACCESS_SYSTEM_SECURITY needs SeSecurityPrivilege")
    who = token(conn, session)
    sd = descriptor(fs, path)
    granted, _ = access.access_check(sd, who, wanted | AccessMask.MAXIMUM_ALLOWED)
    if path != fs.root:
        parent_rights = access.maximal_access(descriptor(fs, fs.parent(path)), who)
        if parent_rights & FILE_DELETE_CHILD:
            granted |= AccessMask.DELETE
        if parent_rights & FILE_LIST_DIRECTORY:
            granted |= AccessMask.FILE_READ_ATTRIBUTES
    if attributes & FileAttributes.READONLY and not is_dir:
        granted &= ~READONLY_DENIED
    if wanted & AccessMask.MAXIMUM_ALLOWED:
        specific = wanted & ~int(AccessMask.MAXIMUM_ALLOWED)
        if specific & ~granted:
            raise Fail(NtStatus.ACCESS_DENIED, f"access {specific & ~granted:#x} not granted")
        return granted
    if wanted & ~granted:
        raise Fail(NtStatus.ACCESS_DENIED, f"access {wanted & ~granted:#x} not granted by the file's DACL")
    return wanted


def maximal(conn, session, fs: Share, path: str, attributes: int, is_dir: bool) -> int:
    """What MXAC reports (§2.2.14.2.5): the MAXIMUM_ALLOWED an open of the file would get."""
    return existing_access(conn, session, fs, path, int(AccessMask.MAXIMUM_ALLOWED), attributes, is_dir)


def check_create_in(conn, session, fs: Share, parent: str, is_dir: bool) -> None:
    """Creating an entry needs FILE_ADD_FILE (a file) or FILE_ADD_SUBDIRECTORY (a directory) on
    the parent (MS-FSA 2.1.5.1.1)."""
    need = FILE_ADD_SUBDIRECTORY if is_dir else FILE_ADD_FILE
    if not access.maximal_access(descriptor(fs, parent), token(conn, session)) & need:
        raise Fail(NtStatus.ACCESS_DENIED, "the parent directory's DACL does not allow adding entries")


def parse_creator(raw: bytes | None) -> SecurityDescriptor | None:
    """The SMB2_CREATE_SD_BUFFER context's descriptor (§2.2.13.2), or Fail with its status."""
    if raw is None:
        return None
    try:
        return access.map_explicit(parse_descriptor(raw))
    except SMBProtocolError as exc:
        raise Fail(exc.status, str(exc)) from exc


def new_descriptor(conn, session, fs: Share, parent: str, creator: SecurityDescriptor | None,
                   is_dir: bool) -> SecurityDescriptor:
    who = token(conn, session)
    if creator is not None and creator.owner is not None and not who.has(creator.owner):
        raise Fail(NtStatus.INVALID_OWNER, "owner is not the user nor one of its groups")
    return access.inherit(descriptor(fs, parent), creator, who, is_dir)


def new_access(sd: SecurityDescriptor, conn, session, desired: int) -> int:
    """The access of the open that created the file: what it asked for (the creator may do what it
    asked on what it made); MAXIMUM_ALLOWED is what the new descriptor grants."""
    wanted = _desired(desired)
    if wanted & AccessMask.ACCESS_SYSTEM_SECURITY:
        raise Fail(NtStatus.PRIVILEGE_NOT_HELD, "ACCESS_SYSTEM_SECURITY needs SeSecurityPrivilege")
    if wanted & AccessMask.MAXIMUM_ALLOWED:
        return (wanted & ~int(AccessMask.MAXIMUM_ALLOWED)) | access.maximal_access(sd, token(conn, session)) \
            | AccessMask.DELETE | AccessMask.FILE_READ_ATTRIBUTES
    return wanted


def new_file_contexts(request: m.CreateRequest) -> tuple:
    """The descriptor (SMB2_CREATE_SD_BUFFER) and EAs (SMB2_CREATE_EA_BUFFER) a CREATE gives a new
    file, checked before anything is created (§2.2.13.2)."""
    secd = find_context(request.contexts, SECD)
    creator = parse_creator(secd.data if secd is not None else None)
    exta = find_context(request.contexts, EXTA)
    eas: list[FullEa] | None = None
    if exta is not None:
        try:
            eas = unpack_full_eas(exta.data)
        except SMBProtocolError as exc:
            raise Fail(exc.status, str(exc)) from exc
    return creator, eas


def make_new(conn, session, fs, path: str, want_dir: bool, request: m.CreateRequest, creator, eas) -> int:
    """Create the file or directory with its descriptor and EAs; the access its open gets."""
    parent = fs.parent(path)
    check_create_in(conn, session, fs, parent, want_dir)
    sd = new_descriptor(conn, session, fs, parent, creator, want_dir)
    granted = new_access(sd, conn, session, request.desired_access)
    if want_dir:
        fs.mkdir(path)
    else:
        fs.create(path)
    store(fs, path, sd)
    if eas:
        try:
            apply_eas(fs, path, eas)
        except Fail:
            (fs.rmdir if want_dir else fs.remove)(path)
            raise
    return granted


def new_attributes(requested: int, is_dir: bool) -> int:
    """A created or overwritten file's attributes: those asked for, with ARCHIVE on a file
    (MS-FSA 2.1.5.1.2.1); NORMAL alone means none.  SPARSE_FILE is not taken: only FSCTL_SET_SPARSE
    makes a file sparse (Windows and Samba; smbtorture smb2.ioctl.sparse_file_attr)."""
    attributes = requested & 0x7FA7 & ~FileAttributes.DIRECTORY & ~FileAttributes.NORMAL & ~FileAttributes.SPARSE_FILE
    return int(attributes | FileAttributes.DIRECTORY) if is_dir else int(attributes | FileAttributes.ARCHIVE)


def record_new(state, meta, requested: int, is_dir: bool, created: bool, allocation: int = 0) -> None:
    """What a created or overwritten file keeps beside the share's metadata: its attributes, and for
    a new file its creation time, fixed now (a POSIX file system has no birth time to ask later).
    ``allocation``: the AllocationSize the CREATE asked for (the AlSi create context, MS-SMB2
    2.2.13.2.6); the file reports at least that much allocated, in whole 4 KiB units, as a server
    that reserves the space does, until its data needs more (as SET_INFO FileAllocationInformation)."""
    key = (meta.volume_id, meta.file_id)
    override = {} if created else state.meta_overrides.get(key, {})
    override["attributes"] = new_attributes(requested, is_dir)
    if created:
        override["creation_time"] = meta.creation_time
    if is_dir or not allocation:
        override.pop("allocation_size", None)  # an overwrite gives the old reservation up
    else:
        override["allocation_size"] = -(-allocation // 4096) * 4096
    state.meta_overrides[key] = override


# ---------------------------------------------------------------------------------------- SECURITY info


def query(opened: Open, fs: Share, info: int) -> bytes:
    """QUERY_INFO SECURITY: the parts ``info`` asks for, if the open may read them."""
    if info & (OWNER_SECURITY_INFORMATION | GROUP_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION) \
            and not opened.access & AccessMask.READ_CONTROL:
        raise Fail(NtStatus.ACCESS_DENIED, "needs READ_CONTROL")
    if info & SACL_SECURITY_INFORMATION and not opened.access & AccessMask.ACCESS_SYSTEM_SECURITY:
        raise Fail(NtStatus.ACCESS_DENIED, "needs ACCESS_SYSTEM_SECURITY")
    return descriptor(fs, opened.path).select(info).pack()


def set_descriptor(conn, session, opened: Open, fs: Share, info: int, buf: bytes) -> None:
    """SET_INFO SECURITY: checks the open's rights for each part, the descriptor, and the owner."""
    if info & (OWNER_SECURITY_INFORMATION | GROUP_SECURITY_INFORMATION) and not opened.access & AccessMask.WRITE_OWNER:
        raise Fail(NtStatus.ACCESS_DENIED, "setting owner or group needs WRITE_OWNER")
    if info & DACL_SECURITY_INFORMATION and not opened.access & AccessMask.WRITE_DAC:
        raise Fail(NtStatus.ACCESS_DENIED, "setting the DACL needs WRITE_DAC")
    if info & SACL_SECURITY_INFORMATION and not opened.access & AccessMask.ACCESS_SYSTEM_SECURITY:
        raise Fail(NtStatus.ACCESS_DENIED, "setting the SACL needs ACCESS_SYSTEM_SECURITY")
    try:
        new = parse_descriptor(buf)
    except SMBProtocolError as exc:
        raise Fail(exc.status, str(exc)) from exc
    new = access.map_explicit(new)
    who = token(conn, session)
    if info & OWNER_SECURITY_INFORMATION:
        if new.owner is None:
            raise Fail(NtStatus.INVALID_SECURITY_DESCR, "OWNER_SECURITY_INFORMATION without an owner")
        current = descriptor(fs, opened.path).owner
        if new.owner != current and not who.has(new.owner):
            raise Fail(NtStatus.INVALID_OWNER, "new owner is not the user nor one of its groups")
    if info & GROUP_SECURITY_INFORMATION and new.group is None:
        raise Fail(NtStatus.INVALID_SECURITY_DESCR, "GROUP_SECURITY_INFORMATION without a group")
    if not info & KNOWN_INFO:
        return  # label/attribute/scope information: nothing stored here, nothing to change
    store(fs, opened.path, descriptor(fs, opened.path).merge(new, info))


# ---------------------------------------------------------------------------------------- EAs


def ea_list(fs: Share, path: str) -> list[FullEa]:
    return [FullEa(name, value, flags) for name, value, flags in fs.extras(path).eas.values()]


def ea_size(fs: Share, path: str) -> int:
    """FileEaInformation.EaSize: the bytes the file's EAs take as a FILE_FULL_EA_INFORMATION list."""
    eas = ea_list(fs, path)
    return len(pack_full_eas(eas)) if eas else 0


def query_eas(fs: Share, path: str, names: list[str]) -> bytes:
    eas = ea_list(fs, path)
    if not eas and not names:
        raise Fail(NtStatus.NO_EAS_ON_FILE, "no extended attributes")
    if names:
        found = {ea.name.upper(): ea for ea in eas}
        eas = [found.get(name.upper(), FullEa(name)) for name in names]
    return pack_full_eas(eas)


def set_eas(fs: Share, path: str, buf: bytes) -> None:
    """Apply a FILE_FULL_EA_INFORMATION list: an empty value deletes the EA (MS-FSA 2.1.5.14.2).
    The whole list is checked before anything changes."""
    try:
        new = unpack_full_eas(buf)
    except SMBProtocolError as exc:
        raise Fail(exc.status, str(exc)) from exc
    apply_eas(fs, path, new)


def apply_eas(fs: Share, path: str, new: list[FullEa]) -> None:
    table = dict(fs.extras(path).eas)
    for ea in new:
        try:
            check_ea_name(ea.name)
        except SMBProtocolError as exc:
            raise Fail(exc.status, str(exc)) from exc
        if ea.value:
            table[ea.name.upper()] = (ea.name, ea.value, ea.flags)
        else:
            table.pop(ea.name.upper(), None)
    if len(pack_full_eas([FullEa(*entry) for entry in table.values()])) > MAX_EA_LIST:
        raise Fail(NtStatus.EA_TOO_LARGE, "extended attributes over 64 KiB")
    fs.extras(path).eas = table
