"""Access checks against stored security descriptors, and the descriptor a new file gets.

Why apart from the codec (:mod:`harness.smb.security`): this is policy, the part of MS-DTYP §2.5.3
a file server applies at CREATE (and SET_INFO SECURITY), with no bytes involved:

- :func:`access_check` walks the DACL in order (§2.5.3.2): an allowed ACE grants the rights not yet
  decided, a denied ACE denies them; ACEs marked INHERIT_ONLY do not apply to the object.  No DACL
  at all, or a NULL DACL, grants everything.  The owner gets READ_CONTROL and WRITE_DAC unless the
  DACL has an OWNER RIGHTS (S-1-3-4) ACE, which then decides the owner's rights instead.
  MAXIMUM_ALLOWED asks for every right the walk grants.
- Generic rights in an ACE are mapped through the file generic mapping (MS-SMB2 §2.2.13.1.1).
- :func:`inherit` computes a new file's or directory's descriptor from its parent's (§2.5.3.4.1,
  ComputeACL): inheritable ACEs flow down (marked INHERITED_ACE when the parent's DACL is
  auto-inherited), CREATOR OWNER / CREATOR GROUP
  become the new owner and group, a container keeps an inherit-only copy when the ACE still flows
  further.  A creator's own DACL (the SMB2_CREATE_SD_BUFFER context) is taken as given; under an
  auto-inherited parent the inherited ACEs follow it unless it is SE_DACL_PROTECTED.
"""

from __future__ import annotations

from dataclasses import dataclass

from .constants import AccessMask
from .security import (
    ACCESS_ALLOWED_ACE_TYPE,
    ACCESS_DENIED_ACE_TYPE,
    AUTHENTICATED_USERS,
    BUILTIN_USERS,
    CONTAINER_INHERIT_ACE,
    CREATOR_GROUP,
    CREATOR_OWNER,
    EVERYONE,
    INHERIT_ONLY_ACE,
    INHERITED_ACE,
    LOCAL_SYSTEM,
    NO_PROPAGATE_INHERIT_ACE,
    OBJECT_INHERIT_ACE,
    OWNER_RIGHTS,
    SE_DACL_AUTO_INHERITED,
    SE_DACL_PRESENT,
    SE_DACL_PROTECTED,
    SE_SELF_RELATIVE,
    Ace,
    Acl,
    SecurityDescriptor,
    Sid,
)

FILE_ALL_ACCESS = 0x001F01FF
GENERIC_MAPPING = {
    AccessMask.GENERIC_READ: 0x00120089,
    AccessMask.GENERIC_WRITE: 0x00120116,
    AccessMask.GENERIC_EXECUTE: 0x001200A0,
    AccessMask.GENERIC_ALL: FILE_ALL_ACCESS,
}
GENERIC_BITS = 0xF0000000
INHERIT_BITS = OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE | NO_PROPAGATE_INHERIT_ACE | INHERIT_ONLY_ACE
# What a descriptor never grants by itself: the right to the SACL needs a privilege.
NOT_BY_DACL = int(AccessMask.ACCESS_SYSTEM_SECURITY)


def map_generic(mask: int) -> int:
    out = mask & ~GENERIC_BITS
    for bit, rights in GENERIC_MAPPING.items():
        if mask & bit:
            out |= rights
    return out


def map_explicit(sd: SecurityDescriptor) -> SecurityDescriptor:
    """A descriptor as a client sent it, with the generic rights of the ACEs that apply to this
    object alone mapped to file rights (Windows stores them so; inheritable ACEs keep generic
    rights for the objects they will be inherited by)."""
    if sd.dacl is None:
        return sd
    aces = [Ace(ace.ace_type, ace.flags, map_generic(ace.mask), ace.sid, ace.raw)
            if ace.sid is not None and not ace.flags & (INHERIT_BITS & ~NO_PROPAGATE_INHERIT_ACE) else ace
            for ace in sd.dacl.aces]
    return SecurityDescriptor(sd.control, sd.owner, sd.group, sd.sacl, Acl(sd.dacl.revision, aces))


@dataclass(frozen=True)
class Token:
    """Who is asking: the user's SID, the primary group (the owner group of what they create) and
    every group SID they belong to (Everyone and Authenticated Users among them)."""

    user: Sid
    primary_group: Sid
    groups: tuple[Sid, ...]

    def has(self, sid: Sid | None) -> bool:
        return sid is not None and (sid == self.user or sid in self.groups)


def token_for(domain: Sid, rid: int) -> Token:
    """The token of a user of the server's local domain: ``domain``-``rid``, with Domain Users
    (rid 513) as primary group, and the well-known groups every authenticated user has."""
    user = Sid(domain.authority, domain.sub_authorities + (rid,))
    domain_users = Sid(domain.authority, domain.sub_authorities + (513,))
    return Token(user, domain_users, (domain_users, EVERYONE, AUTHENTICATED_USERS, BUILTIN_USERS))


def access_check(sd: SecurityDescriptor, token: Token, desired: int) -> tuple[int, int]:
    """(granted, denied-by-an-ACE) for ``desired`` (generic bits already mapped; MAXIMUM_ALLOWED
    asks for all).  The caller compares ``granted`` with what it needs."""
    wanted = FILE_ALL_ACCESS if desired & AccessMask.MAXIMUM_ALLOWED else desired
    wanted &= ~int(AccessMask.MAXIMUM_ALLOWED)
    if sd.dacl is None:  # no DACL, or a NULL DACL: no restriction
        return wanted & ~NOT_BY_DACL, 0
    granted = denied = 0
    aces = [ace for ace in sd.dacl.aces if not ace.flags & INHERIT_ONLY_ACE and ace.sid is not None]
    owner_rights_ace = any(ace.sid == OWNER_RIGHTS for ace in aces)
    is_owner = token.has(sd.owner)
    if is_owner and not owner_rights_ace:
        granted |= AccessMask.READ_CONTROL | AccessMask.WRITE_DAC
    for ace in aces:
        applies = token.has(ace.sid) or (ace.sid == OWNER_RIGHTS and is_owner)
        if not applies:
            continue
        mask = map_generic(ace.mask)
        if ace.ace_type == ACCESS_ALLOWED_ACE_TYPE:
            granted |= mask & ~denied
        elif ace.ace_type == ACCESS_DENIED_ACE_TYPE:
            denied |= mask & ~granted
    return granted & wanted & ~NOT_BY_DACL, denied & wanted


def maximal_access(sd: SecurityDescriptor, token: Token) -> int:
    return access_check(sd, token, int(AccessMask.MAXIMUM_ALLOWED))[0]


def default_descriptor(owner: Sid, group: Sid, is_dir: bool) -> SecurityDescriptor:
    """What a file with no inheritable ACE above it gets: the owner and SYSTEM have full access
    (Windows' default DACL of a user token), inherited further down on a directory."""
    flags = (OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE) if is_dir else 0
    dacl = Acl(aces=[Ace(ACCESS_ALLOWED_ACE_TYPE, flags, FILE_ALL_ACCESS, owner),
                     Ace(ACCESS_ALLOWED_ACE_TYPE, flags, FILE_ALL_ACCESS, LOCAL_SYSTEM)])
    return SecurityDescriptor(SE_SELF_RELATIVE | SE_DACL_PRESENT, owner, group, None, dacl)


def share_root_descriptor(owner: Sid, group: Sid) -> SecurityDescriptor:
    """The share root when nothing is stored: Everyone has full access, inherited by everything
    below (what a freshly made share looks like to a client)."""
    dacl = Acl(aces=[Ace(ACCESS_ALLOWED_ACE_TYPE, OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE, FILE_ALL_ACCESS,
                         EVERYONE)])
    return SecurityDescriptor(SE_SELF_RELATIVE | SE_DACL_PRESENT, owner, group, None, dacl)


def _inherited_aces(parent: Acl, is_dir: bool, owner: Sid, group: Sid, mark: int) -> list[Ace]:
    """``mark``: INHERITED_ACE when the parent's DACL is auto-inherited, else 0 (Windows marks
    inherited ACEs only then; smbtorture smb2.acls.INHERITANCE checks both)."""
    out: list[Ace] = []
    for ace in parent.aces:
        if ace.sid is None or ace.ace_type not in (ACCESS_ALLOWED_ACE_TYPE, ACCESS_DENIED_ACE_TYPE):
            continue
        if is_dir:
            if not ace.flags & (CONTAINER_INHERIT_ACE | OBJECT_INHERIT_ACE):
                continue
            if not ace.flags & CONTAINER_INHERIT_ACE:
                # object-inherit only: passes through the directory to files below it
                if ace.flags & NO_PROPAGATE_INHERIT_ACE:
                    continue
                out.append(Ace(ace.ace_type, (ace.flags & INHERIT_BITS) | INHERIT_ONLY_ACE | mark, ace.mask, ace.sid))
                continue
            propagate = not ace.flags & NO_PROPAGATE_INHERIT_ACE
        else:
            if not ace.flags & OBJECT_INHERIT_ACE:
                continue
            propagate = False
        sid = owner if ace.sid == CREATOR_OWNER else group if ace.sid == CREATOR_GROUP else ace.sid
        effective_mask = map_generic(ace.mask)
        if not propagate:
            out.append(Ace(ace.ace_type, mark, effective_mask, sid))
        elif sid != ace.sid or effective_mask != ace.mask:
            # the effective ACE for this directory, and the original passed on to its children
            out.append(Ace(ace.ace_type, mark, effective_mask, sid))
            out.append(Ace(ace.ace_type, (ace.flags & INHERIT_BITS) | INHERIT_ONLY_ACE | mark, ace.mask,
                           ace.sid))
        else:
            out.append(Ace(ace.ace_type, (ace.flags & INHERIT_BITS & ~INHERIT_ONLY_ACE) | mark, ace.mask, ace.sid))
    return out


def inherit(parent: SecurityDescriptor, creator: SecurityDescriptor | None, token: Token,
            is_dir: bool) -> SecurityDescriptor:
    """The descriptor of a new file or directory under ``parent``; ``creator``: the one the client
    sent in the create context (its owner, group and DACL win where present)."""
    owner = creator.owner if creator is not None and creator.owner is not None else token.user
    group = creator.group if creator is not None and creator.group is not None else token.primary_group
    mark = INHERITED_ACE if parent.control & SE_DACL_AUTO_INHERITED else 0
    inherited = _inherited_aces(parent.dacl, is_dir, owner, group, mark) if parent.dacl is not None else []
    control = SE_SELF_RELATIVE | SE_DACL_PRESENT
    if creator is not None and creator.control & SE_DACL_PRESENT:
        own = [ace for ace in (creator.dacl.aces if creator.dacl is not None else []) if not ace.flags & INHERITED_ACE]
        if creator.dacl is None:
            return SecurityDescriptor(control, owner, group, None, None)  # NULL DACL, as asked
        if creator.control & SE_DACL_PROTECTED or not parent.control & SE_DACL_AUTO_INHERITED:
            # the creator's DACL as given: inheritance merges only under an auto-inherited parent
            return SecurityDescriptor(control | (creator.control & SE_DACL_PROTECTED), owner, group, None,
                                      Acl(creator.dacl.revision, own))
        return SecurityDescriptor(control | SE_DACL_AUTO_INHERITED, owner, group, None,
                                  Acl(creator.dacl.revision, own + inherited))
    if not inherited:
        return default_descriptor(owner, group, is_dir)
    auto = parent.control & SE_DACL_AUTO_INHERITED
    return SecurityDescriptor(control | auto, owner, group, None, Acl(aces=inherited))
