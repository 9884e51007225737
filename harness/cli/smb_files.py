"""`wirecheck smb` commands for file metadata: a file's security descriptor (``getsd``, ``setsd``)
and its named streams (``streams``).  Streams are otherwise reached by name like files
(``get FILE:STREAM``, ``put LOCAL FILE:STREAM``).

Why a module apart from :mod:`harness.cli.smb`: these commands carry their own small text formats
(an ACE as ``allow:SID:MASK[:FLAGS]``), which the transfer commands do not need.
"""

from __future__ import annotations

import click

from ..smb import messages as m
from ..smb.constants import AccessMask, Command, CreateDisposition, InfoType
from ..smb.fscc_lists import unpack_streams
from ..smb.security import (
    ACCESS_ALLOWED_ACE_TYPE,
    ACCESS_DENIED_ACE_TYPE,
    DACL_SECURITY_INFORMATION,
    GROUP_SECURITY_INFORMATION,
    OWNER_SECURITY_INFORMATION,
    SE_DACL_PRESENT,
    SE_SELF_RELATIVE,
    Ace,
    Acl,
    SecurityDescriptor,
    Sid,
)

_KINDS = {"allow": ACCESS_ALLOWED_ACE_TYPE, "deny": ACCESS_DENIED_ACE_TYPE}
_NAMES = {value: key for key, value in _KINDS.items()}


def parse_ace(text: str) -> Ace:
    """``allow:S-1-1-0:0x1f01ff`` or ``deny:SID:MASK:FLAGS`` (numbers in any base Python reads)."""
    parts = text.split(":")
    if len(parts) not in (3, 4) or parts[0].lower() not in _KINDS:
        raise click.UsageError(f"ACE {text!r}: want allow|deny:SID:MASK[:FLAGS]")
    try:
        sid = Sid.parse(parts[1])
        mask = int(parts[2], 0)
        flags = int(parts[3], 0) if len(parts) == 4 else 0
    except ValueError as exc:
        raise click.UsageError(f"ACE {text!r}: {exc}") from exc
    if not 0 <= mask <= 0xFFFFFFFF or not 0 <= flags <= 0xFF:
        raise click.UsageError(f"ACE {text!r}: mask or flags out of range")
    return Ace(_KINDS[parts[0].lower()], flags, mask, sid)


def format_ace(ace: Ace) -> str:
    kind = _NAMES.get(ace.ace_type, f"type{ace.ace_type}")
    return f"{kind}:{ace.sid}:0x{ace.mask:08x}:0x{ace.flags:02x}"


def getsd(share, path: str) -> None:
    opened = share.open(path, AccessMask.READ_CONTROL, CreateDisposition.OPEN)
    try:
        response = share._req(Command.QUERY_INFO, m.QueryInfoRequest(
            file_id=opened.file_id, info_type=InfoType.SECURITY, output_buffer_length=65536,
            additional_information=OWNER_SECURITY_INFORMATION | GROUP_SECURITY_INFORMATION
            | DACL_SECURITY_INFORMATION))
    finally:
        share.close_file(opened.file_id)
    sd = SecurityDescriptor.unpack(response.body.output)
    click.echo(f"owner {sd.owner}")
    click.echo(f"group {sd.group}")
    if sd.dacl is None:
        click.echo("dacl " + ("NULL (everyone: everything)" if sd.null_dacl else "absent"))
        return
    click.echo(f"dacl control=0x{sd.control:04x} aces={len(sd.dacl.aces)}")
    for ace in sd.dacl.aces:
        click.echo(f"  {format_ace(ace)}")


def setsd(share, path: str, aces: tuple[str, ...]) -> None:
    """Replace the file's DACL with the ACEs given, in order."""
    dacl = SecurityDescriptor(SE_SELF_RELATIVE | SE_DACL_PRESENT, dacl=Acl(aces=[parse_ace(a) for a in aces]))
    opened = share.open(path, AccessMask.WRITE_DAC, CreateDisposition.OPEN)
    try:
        share._req(Command.SET_INFO, m.SetInfoRequest(file_id=opened.file_id, info_type=InfoType.SECURITY,
                                                      additional_information=DACL_SECURITY_INFORMATION,
                                                      buffer=dacl.pack()))
    finally:
        share.close_file(opened.file_id)
    click.echo(f"set {len(aces)} ACE(s) on {path}", err=True)


def streams(share, path: str) -> None:
    opened = share.open(path, AccessMask.FILE_READ_ATTRIBUTES, CreateDisposition.OPEN)
    try:
        response = share._req(Command.QUERY_INFO, m.QueryInfoRequest(
            file_id=opened.file_id, info_type=InfoType.FILE, file_info_class=22, output_buffer_length=65536))
    finally:
        share.close_file(opened.file_id)
    for entry in unpack_streams(response.body.output):
        click.echo(f"{entry.name:40} {entry.size:>12}")
