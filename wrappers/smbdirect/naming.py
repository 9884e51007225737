"""File names of SMB Direct endpoints in SOCKET_WRAPPER_DIR (ours; cwrap has none).

    R<iface 02X><port 04X>   IPv4 SMB Direct endpoint (listener, or a client's bound name)
    S<iface 02X><port 04X>   IPv6 SMB Direct endpoint

Both are AF_UNIX SOCK_SEQPACKET sockets; one message on the connection is one RDMA SEND (or one
control message of the emulated RNIC, see ``link.py``).  The letters avoid cwrap's T U X Y and the
file cwrap may create named EINVAL.
"""

from __future__ import annotations

import errno
import socket

from ..addressing import MAX_IFACE
from .constants import LETTER_V4, LETTER_V6

_LETTER: dict[int, str] = {int(socket.AF_INET): LETTER_V4, int(socket.AF_INET6): LETTER_V6}
_FAMILY = {v: k for k, v in _LETTER.items()}


def socket_name(family: int, iface: int, port: int) -> str:
    if family not in _LETTER:
        raise OSError(errno.EAFNOSUPPORT, "SMB Direct needs AF_INET or AF_INET6")
    if not 0 <= iface <= 0xFF or not 0 <= port <= 0xFFFF:
        raise OSError(errno.EINVAL, "interface or port out of range")
    return f"{_LETTER[family]}{iface:02X}{port:04X}"


def parse_name(name: str) -> tuple[int, int, int] | None:
    """(family, iface, port) of an SMB Direct file name, None for anything else."""
    base = name.rsplit("/", 1)[-1]
    if len(base) != 7 or base[0] not in _FAMILY:
        return None
    try:
        iface, port = int(base[1:3], 16), int(base[3:7], 16)
    except ValueError:
        return None
    if not 1 <= iface <= MAX_IFACE:
        return None
    return _FAMILY[base[0]], iface, port
