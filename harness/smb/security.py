"""Security descriptors (MS-DTYP §2.4.2 SID, §2.4.4 ACE, §2.4.5 ACL, §2.4.6 SECURITY_DESCRIPTOR):
the self-relative wire form as typed dataclasses, read with bounds checks.

Why a codec of its own: QUERY_INFO/SET_INFO with InfoType SECURITY and the SMB2_CREATE_SD_BUFFER
create context carry these bytes, and the server stores them per file and checks access against
them (:mod:`harness.smb.access`).  Every malformed descriptor is an :class:`SMBProtocolError`, which
the server answers with STATUS_INVALID_SECURITY_DESCR / INVALID_ACL / INVALID_SID as Windows does;
nothing half-parsed is ever stored.

ACE types with a mask and a SID (allowed, denied, audit, alarm, mandatory label: §2.4.4.2-.4,
.10, .13) are decoded; other types (object ACEs, callback ACEs, resource attributes) keep their body
as bytes so that a descriptor round-trips unchanged.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .constants import NtStatus
from .errors import SMBProtocolError
from .wire import U8, U16, U32, take, unpack_from

# SECURITY_DESCRIPTOR Control bits (§2.4.6)
SE_OWNER_DEFAULTED = 0x0001
SE_GROUP_DEFAULTED = 0x0002
SE_DACL_PRESENT = 0x0004
SE_DACL_DEFAULTED = 0x0008
SE_SACL_PRESENT = 0x0010
SE_SACL_DEFAULTED = 0x0020
SE_DACL_AUTO_INHERIT_REQ = 0x0100
SE_SACL_AUTO_INHERIT_REQ = 0x0200
SE_DACL_AUTO_INHERITED = 0x0400
SE_SACL_AUTO_INHERITED = 0x0800
SE_DACL_PROTECTED = 0x1000
SE_SACL_PROTECTED = 0x2000
SE_SELF_RELATIVE = 0x8000

# SecurityInformation / AdditionalInformation bits (MS-DTYP §2.4.7; MS-SMB2 §2.2.37)
OWNER_SECURITY_INFORMATION = 0x01
GROUP_SECURITY_INFORMATION = 0x02
DACL_SECURITY_INFORMATION = 0x04
SACL_SECURITY_INFORMATION = 0x08
LABEL_SECURITY_INFORMATION = 0x10

# ACE types (§2.4.4.1) and flags
ACCESS_ALLOWED_ACE_TYPE = 0x00
ACCESS_DENIED_ACE_TYPE = 0x01
SYSTEM_AUDIT_ACE_TYPE = 0x02
SYSTEM_ALARM_ACE_TYPE = 0x03
SYSTEM_MANDATORY_LABEL_ACE_TYPE = 0x11
_MASK_SID_TYPES = {ACCESS_ALLOWED_ACE_TYPE, ACCESS_DENIED_ACE_TYPE, SYSTEM_AUDIT_ACE_TYPE, SYSTEM_ALARM_ACE_TYPE,
                   SYSTEM_MANDATORY_LABEL_ACE_TYPE}
OBJECT_INHERIT_ACE = 0x01
CONTAINER_INHERIT_ACE = 0x02
NO_PROPAGATE_INHERIT_ACE = 0x04
INHERIT_ONLY_ACE = 0x08
INHERITED_ACE = 0x10

ACL_REVISION = 2
ACL_REVISION_DS = 4
MAX_SUB_AUTHORITIES = 15

# Statuses (MS-ERREF) a malformed descriptor, ACL or SID is answered with.
INVALID_SECURITY_DESCR = NtStatus.INVALID_SECURITY_DESCR
INVALID_ACL = NtStatus.INVALID_ACL
INVALID_SID = NtStatus.INVALID_SID

_SD = struct.Struct("<BBHIIII")
_ACL = struct.Struct("<BBHHH")
_ACE = struct.Struct("<BBH")


def _bad(status: int, message: str) -> SMBProtocolError:
    return SMBProtocolError(status, message)


@dataclass(frozen=True)
class Sid:
    """§2.4.2.2: Revision 1, SubAuthorityCount, IdentifierAuthority (6 bytes big-endian), then the
    sub-authorities (4 bytes little-endian each, at most 15)."""

    authority: int
    sub_authorities: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Sid:
        """``S-1-5-21-...`` (§2.4.2.1)."""
        parts = text.split("-")
        if len(parts) < 3 or parts[0].upper() != "S" or parts[1] != "1":
            raise ValueError(f"not a SID: {text!r}")
        subs = tuple(int(p) for p in parts[3:])
        if len(subs) > MAX_SUB_AUTHORITIES:
            raise ValueError(f"SID with {len(subs)} sub-authorities: {text!r}")
        return cls(int(parts[2], 0), subs)

    def __str__(self) -> str:
        return "-".join(["S-1", str(self.authority), *map(str, self.sub_authorities)])

    def pack(self) -> bytes:
        return (struct.pack("<BB", 1, len(self.sub_authorities)) + self.authority.to_bytes(6, "big")
                + struct.pack(f"<{len(self.sub_authorities)}I", *self.sub_authorities))

    @property
    def size(self) -> int:
        return 8 + 4 * len(self.sub_authorities)

    @classmethod
    def unpack_from(cls, buf: bytes, offset: int) -> Sid:
        head = take(buf, offset, 8, "SID") if offset + 8 <= len(buf) else b""
        if len(head) != 8:
            raise _bad(INVALID_SID, f"SID at {offset}: need 8 bytes, buffer has {len(buf)}")
        revision, count = head[0], head[1]
        if revision != 1 or count > MAX_SUB_AUTHORITIES:
            raise _bad(INVALID_SID, f"SID at {offset}: revision {revision}, {count} sub-authorities")
        if offset + 8 + 4 * count > len(buf):
            raise _bad(INVALID_SID, f"SID at {offset}: {count} sub-authorities overrun the buffer")
        subs = struct.unpack_from(f"<{count}I", buf, offset + 8)
        return cls(int.from_bytes(head[2:8], "big"), tuple(subs))


EVERYONE = Sid(1, (0,))
CREATOR_OWNER = Sid(3, (0,))
CREATOR_GROUP = Sid(3, (1,))
OWNER_RIGHTS = Sid(3, (4,))
AUTHENTICATED_USERS = Sid(5, (11,))
LOCAL_SYSTEM = Sid(5, (18,))
BUILTIN_ADMINISTRATORS = Sid(5, (32, 544))
BUILTIN_USERS = Sid(5, (32, 545))


@dataclass
class Ace:
    """§2.4.4: a header (type, flags, size) and a body; for the mask-and-SID types ``mask`` and
    ``sid`` are the body, for others ``raw`` holds it unchanged."""

    ace_type: U8
    flags: U8
    mask: U32 = 0
    sid: Sid | None = None
    raw: bytes = b""

    def pack(self) -> bytes:
        if self.ace_type in _MASK_SID_TYPES and self.sid is not None:
            body = struct.pack("<I", self.mask) + self.sid.pack()
        else:
            body = self.raw
        body += bytes(-(len(body) + 4) % 4)
        return _ACE.pack(self.ace_type, self.flags, 4 + len(body)) + body

    @classmethod
    def unpack_from(cls, buf: bytes, offset: int) -> tuple[Ace, int]:
        """(the ACE, its AceSize)."""
        try:
            ace_type, flags, size = unpack_from(_ACE, buf, offset, "ACE header")
        except SMBProtocolError as exc:
            raise _bad(INVALID_ACL, str(exc)) from exc
        if size < 4 or offset + size > len(buf):
            raise _bad(INVALID_ACL, f"ACE at {offset}: AceSize {size} does not fit the ACL")
        body = bytes(buf[offset + 4:offset + size])
        if ace_type in _MASK_SID_TYPES:
            if len(body) < 4 + 8:
                raise _bad(INVALID_ACL, f"ACE at {offset}: AceSize {size} too small for a mask and a SID")
            (mask,) = struct.unpack_from("<I", body, 0)
            sid = Sid.unpack_from(body, 4)
            return cls(ace_type, flags, mask, sid), size
        return cls(ace_type, flags, raw=body), size


@dataclass
class Acl:
    """§2.4.5: AclRevision (2, or 4 with object ACEs), Sbz1, AclSize, AceCount, Sbz2, the ACEs."""

    revision: U8 = ACL_REVISION
    aces: list[Ace] = field(default_factory=list)

    def pack(self) -> bytes:
        body = b"".join(ace.pack() for ace in self.aces)
        return _ACL.pack(self.revision, 0, _ACL.size + len(body), len(self.aces), 0) + body

    @classmethod
    def unpack_from(cls, buf: bytes, offset: int) -> Acl:
        try:
            revision, _, size, count, _ = unpack_from(_ACL, buf, offset, "ACL header")
        except SMBProtocolError as exc:
            raise _bad(INVALID_ACL, str(exc)) from exc
        if revision not in (ACL_REVISION, 3, ACL_REVISION_DS):
            raise _bad(INVALID_ACL, f"ACL at {offset}: revision {revision}")
        if size < _ACL.size or offset + size > len(buf):
            raise _bad(INVALID_ACL, f"ACL at {offset}: AclSize {size} overruns a {len(buf)}-byte descriptor")
        region = bytes(buf[offset:offset + size])
        at, aces = _ACL.size, []
        for _ in range(count):
            ace, ace_size = Ace.unpack_from(region, at)
            aces.append(ace)
            at += ace_size
        return cls(revision, aces)


@dataclass
class SecurityDescriptor:
    """§2.4.6 in self-relative form: Revision 1, Sbz1, Control, then the offsets of Owner, Group,
    Sacl and Dacl (0: absent).  ``dacl`` None with SE_DACL_PRESENT in ``control`` is a NULL DACL
    (everyone has every right); without SE_DACL_PRESENT there is no DACL at all."""

    control: U16 = SE_SELF_RELATIVE
    owner: Sid | None = None
    group: Sid | None = None
    sacl: Acl | None = None
    dacl: Acl | None = None

    def pack(self) -> bytes:
        control = self.control | SE_SELF_RELATIVE
        control = (control | SE_DACL_PRESENT) if self.dacl is not None else control
        control = (control | SE_SACL_PRESENT) if self.sacl is not None else control
        out = bytearray(_SD.size)
        offsets = []
        for part in (self.owner, self.group, self.sacl, self.dacl):
            if part is None:
                offsets.append(0)
                continue
            offsets.append(len(out))
            out += part.pack()
        _SD.pack_into(out, 0, 1, 0, control, *offsets)
        return bytes(out)

    @classmethod
    def unpack(cls, buf: bytes) -> SecurityDescriptor:
        try:
            revision, _, control, owner_at, group_at, sacl_at, dacl_at = unpack_from(_SD, buf, 0, "SECURITY_DESCRIPTOR")
        except SMBProtocolError as exc:
            raise _bad(INVALID_SECURITY_DESCR, str(exc)) from exc
        if revision != 1:
            raise _bad(INVALID_SECURITY_DESCR, f"SECURITY_DESCRIPTOR revision {revision}")
        if not control & SE_SELF_RELATIVE:
            raise _bad(INVALID_SECURITY_DESCR, "SECURITY_DESCRIPTOR is not self-relative")
        for name, at in (("Owner", owner_at), ("Group", group_at), ("Sacl", sacl_at), ("Dacl", dacl_at)):
            if at and (at < _SD.size or at >= len(buf)):
                raise _bad(INVALID_SECURITY_DESCR, f"Offset{name} {at} outside a {len(buf)}-byte descriptor")
        owner = Sid.unpack_from(buf, owner_at) if owner_at else None
        group = Sid.unpack_from(buf, group_at) if group_at else None
        sacl = Acl.unpack_from(buf, sacl_at) if sacl_at and control & SE_SACL_PRESENT else None
        dacl = Acl.unpack_from(buf, dacl_at) if dacl_at and control & SE_DACL_PRESENT else None
        return cls(control, owner, group, sacl, dacl)

    @property
    def null_dacl(self) -> bool:
        return bool(self.control & SE_DACL_PRESENT) and self.dacl is None

    def select(self, info: int) -> SecurityDescriptor:
        """The parts ``info`` (OWNER/GROUP/DACL/SACL_SECURITY_INFORMATION) asks for: what QUERY_INFO
        returns (MS-SMB2 §3.3.5.20.3); control bits of the parts not asked for are cleared."""
        control = SE_SELF_RELATIVE
        if info & DACL_SECURITY_INFORMATION:
            control |= self.control & (SE_DACL_PRESENT | SE_DACL_DEFAULTED | SE_DACL_AUTO_INHERITED
                                       | SE_DACL_PROTECTED | SE_DACL_AUTO_INHERIT_REQ)
        if info & SACL_SECURITY_INFORMATION:
            control |= self.control & (SE_SACL_PRESENT | SE_SACL_DEFAULTED | SE_SACL_AUTO_INHERITED
                                       | SE_SACL_PROTECTED | SE_SACL_AUTO_INHERIT_REQ)
        return SecurityDescriptor(
            control,
            self.owner if info & OWNER_SECURITY_INFORMATION else None,
            self.group if info & GROUP_SECURITY_INFORMATION else None,
            self.sacl if info & SACL_SECURITY_INFORMATION else None,
            self.dacl if info & DACL_SECURITY_INFORMATION else None)

    def merge(self, new: SecurityDescriptor, info: int) -> SecurityDescriptor:
        """This descriptor with the parts ``info`` names taken from ``new`` (SET_INFO, §3.3.5.21.3)."""
        out = SecurityDescriptor(self.control, self.owner, self.group, self.sacl, self.dacl)
        if info & OWNER_SECURITY_INFORMATION:
            out.owner = new.owner
        if info & GROUP_SECURITY_INFORMATION:
            out.group = new.group
        dacl_bits = (SE_DACL_PRESENT | SE_DACL_DEFAULTED | SE_DACL_AUTO_INHERITED | SE_DACL_PROTECTED
                     | SE_DACL_AUTO_INHERIT_REQ)
        sacl_bits = (SE_SACL_PRESENT | SE_SACL_DEFAULTED | SE_SACL_AUTO_INHERITED | SE_SACL_PROTECTED
                     | SE_SACL_AUTO_INHERIT_REQ)
        if info & DACL_SECURITY_INFORMATION:
            out.dacl = new.dacl
            out.control = (out.control & ~dacl_bits) | (new.control & dacl_bits) | SE_DACL_PRESENT
            if not new.control & SE_DACL_AUTO_INHERIT_REQ:
                # AUTO_INHERITED sticks only when the setter asks for auto-inheritance too, as on
                # Windows (smbtorture smb2.acls.INHERITFLAGS)
                out.control &= ~SE_DACL_AUTO_INHERITED
        if info & SACL_SECURITY_INFORMATION:
            out.sacl = new.sacl
            out.control = (out.control & ~sacl_bits) | (new.control & sacl_bits)
        out.control &= ~(SE_DACL_AUTO_INHERIT_REQ | SE_SACL_AUTO_INHERIT_REQ)
        return out


def parse_descriptor(buf: bytes) -> SecurityDescriptor:
    """A descriptor from a client; any malformation is the NTSTATUS of :func:`_bad`, and a
    descriptor whose parts are absent entirely is still valid (SET_INFO sets only what it names)."""
    if not buf:
        raise _bad(INVALID_SECURITY_DESCR, "empty security descriptor")
    return SecurityDescriptor.unpack(buf)


__all__ = ["Sid", "Ace", "Acl", "SecurityDescriptor", "parse_descriptor", "NtStatus"]
