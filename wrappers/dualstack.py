"""Dual-stack AF_INET6 sockets as Linux has them, on cwrap's file names.

On Linux (net.ipv6.bindv6only = 0, the default) an AF_INET6 socket that is not IPV6_V6ONLY and is
bound to ``::`` also takes IPv4 peers, which it sees as ``::ffff:a.b.c.d`` (RFC 4291 section 2.5.5.2,
RFC 3493 section 3.7); it may connect and send to such v4-mapped addresses, and the packets on the
wire are plain IPv4. cwrap knows nothing of this: an emulated endpoint is one file, ``X``/``Y`` for
IPv6 and ``T``/``U`` for IPv4, and an IPv4 client only ever looks for the ``T``/``U`` name.

The emulation, in four rules:

* **Names.** A dual-stack bind binds the unix socket to its IPv6 name and hard-links the IPv4 name
  of the same interface and port to it (the *twin*). A unix connect() or sendto() finds the socket
  by inode, so any IPv4 client, a native cwrap one included, reaches the dual-stack socket without
  knowing. A bind to a v4-mapped address binds the IPv4 name only (Linux makes such a socket
  IPv4-only). The bind fails with EADDRINUSE when either name is alive, as Linux refuses a
  dual-stack bind whose port an IPv4 socket holds (and the reverse).
* **What a peer is called.** A unix source name says which name its socket was bound to, not
  which of a twin pair the sender used. The receiver knows the families it can be reached by: a
  source name of one of them is reported as itself (IPv4 as ``::ffff:a.b.c.d`` on an AF_INET6
  socket); a source name of the other family can only be a dual-stack sender that used its twin,
  so it is reported under the twin's address (same interface and port). A dual-stack receiver
  takes the name as it is, which the next rule makes right for datagrams; a TCP client names itself
  by the family of its destination.
* **Datagram sources.** A unix datagram carries its sender's bound name, and a receiver (a cwrap
  one included: it fails recvfrom() on an AF_INET socket given an IPv6 name) must see the family
  the sender used. So a dual-stack socket sending to the family of its twin sends through a second
  unix socket bound to ``<dir>/.twin/<twin name>``: the same last path component, which is all
  cwrap and we parse. Answers go to the twin name in the directory, i.e. to the socket itself.
* **The wire.** Packets between a v4-mapped pair are logged as IPv4 with the unmapped addresses;
  a wildcard or IPv6 source of a dual-stack socket speaking IPv4 becomes its interface's IPv4
  address (what the kernel's route lookup picks).

Nothing here does I/O except ``default_v6only`` (the sysctl) and the twin helpers, which touch
only the socket directory.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import os
import socket
import stat

from .addressing import Network, parse_name_tuple, parse_socket_name, socket_name
from .origsocket import orig_socket as _orig_socket

AF_INET, AF_INET6 = socket.AF_INET, socket.AF_INET6
BINDV6ONLY = "/proc/sys/net/ipv6/bindv6only"
_MAPPED_PREFIX = b"\0" * 10 + b"\xff\xff"


def default_v6only(path: str | None = None) -> bool:
    """IPV6_V6ONLY of a new AF_INET6 socket: the kernel copies net.ipv6.bindv6only at socket().

    WIRECHECK_BINDV6ONLY_FILE names another file to read instead (tests, or a run that wants the
    BSD default without root).
    """
    path = path or os.environ.get("WIRECHECK_BINDV6ONLY_FILE") or BINDV6ONLY
    try:
        with open(path) as f:
            return f.read().strip() not in ("", "0")
    except OSError:
        return False  # no IPv6 sysctl: the kernel's compiled-in default


V4_ONLY = frozenset({AF_INET})
V6_ONLY = frozenset({AF_INET6})
DUAL = frozenset({AF_INET, AF_INET6})


@functools.lru_cache(maxsize=4096)
def v4_of_mapped(host: str) -> str | None:
    """'127.0.0.10' for '::ffff:127.0.0.10' (any spelling), None for anything not v4-mapped."""
    if ":" not in host:
        return None
    try:
        packed = ipaddress.IPv6Address(host.split("%", 1)[0]).packed
    except ValueError:
        return None
    if packed[:12] != _MAPPED_PREFIX:
        return None
    return str(ipaddress.IPv4Address(packed[12:]))


def mapped(v4: str) -> str:
    return f"::ffff:{v4}"


def canonical(host: str) -> str:
    """A v4-mapped host in the one spelling getpeername() gives (``::ffff:a.b.c.d``)."""
    v4 = v4_of_mapped(host)
    return host if v4 is None else mapped(v4)


def bind_plan(net: Network, family: int, host: str, v6only: bool) -> tuple[int, str, frozenset[int]]:
    """(family of the file name, host to name it by, families that reach the socket) for a bind.

    Linux: an AF_INET6 bind to a v4-mapped address makes an IPv4-only socket (EINVAL with
    IPV6_V6ONLY set); one to ``::`` without IPV6_V6ONLY is dual-stack; any other IPv6 address
    is IPv6-only.
    """
    if family != AF_INET6:
        return family, host, V4_ONLY
    v4 = v4_of_mapped(host)
    if v4 is not None:
        if v6only:
            raise OSError(errno.EINVAL, "a v4-mapped address on an IPV6_V6ONLY socket")
        return AF_INET, v4, V4_ONLY
    if not v6only and net.is_wildcard(AF_INET6, host):
        return AF_INET6, host, DUAL
    return AF_INET6, host, V6_ONLY


def remote_plan(family: int, host: str, v6only: bool, reach: frozenset[int]) -> tuple[int, str]:
    """(family of the destination's file name, host to name it by) for a connect/sendto.

    Only a dual-stack socket (not IPV6_V6ONLY, not bound to an IPv6 address) speaks IPv4 through
    a v4-mapped address; Linux gives the others ENETUNREACH.
    """
    v4 = v4_of_mapped(host) if family == AF_INET6 else None
    if v4 is None:
        return family, host
    if v6only or reach == V6_ONLY:
        raise OSError(errno.ENETUNREACH, "a v4-mapped address on an IPv6-only socket")
    return AF_INET, v4


def unmap(addr: tuple) -> tuple:
    """(host, port) as it goes on the wire: a v4-mapped host becomes its IPv4 address."""
    v4 = v4_of_mapped(addr[0])
    return (v4, addr[1]) if v4 is not None else (addr[0], addr[1])


def wire_pair(net: Network, src: tuple, dst: tuple, src_iface: int) -> tuple[tuple, tuple]:
    """Source and destination of a logged packet, both of one family (IPv4 when either end is).

    A dual-stack socket bound to ``::`` (or autobound under its IPv6 name) that talks to an IPv4
    peer sends from its interface's IPv4 address.
    """
    s, d = unmap(src), unmap(dst)
    s_v4, d_v4 = ":" not in s[0], ":" not in d[0]
    if s_v4 == d_v4:
        return s, d
    family = AF_INET if d_v4 else AF_INET6
    iface = net.iface_of(AF_INET if s_v4 else AF_INET6, s[0]) or src_iface or net.default_iface
    if iface:
        return (net.iface_address(family, iface), s[1]), d
    return s, d


def other(family: int) -> int:
    return AF_INET if family == AF_INET6 else AF_INET6


def peer_view(net: Network, sock_family: int, reach: frozenset[int], unix_name: str) -> tuple | None:
    """The address a socket reports for a peer known by its unix name (module docstring: "What a
    peer is called"); None when the name is not one of cwrap's."""
    parsed = parse_name_tuple(unix_name)
    if parsed is None:
        return None
    name_family, _sotype, iface, port = parsed
    family = name_family if name_family in reach or not reach else other(name_family)
    host = net.iface_address(family, iface)
    if sock_family == AF_INET6:
        return (mapped(host) if family == AF_INET else host, port, 0, 0)
    return (host, port)


def accepted_local(net: Network, family: int, local: tuple | None, iface: int, peer: tuple) -> tuple | None:
    """getsockname() of an accepted connection: the listener's interface address, in the family
    the peer came by (``::ffff:127.0.0.N`` for an IPv4 client of a dual-stack listener)."""
    if local is None:
        return None
    peer_v4 = family == AF_INET6 and v4_of_mapped(peer[0]) is not None
    if not net.is_wildcard(family, local[0]) and (not peer_v4 or v4_of_mapped(local[0]) is not None):
        return local
    if family == AF_INET:
        return (net.iface_address(AF_INET, iface), local[1])
    iface = net.iface_of(AF_INET6, local[0]) or iface
    host = mapped(net.iface_address(AF_INET, iface)) if peer_v4 else net.iface_address(AF_INET6, iface)
    return (host, local[1], 0, 0)


# -- the twin name ---------------------------------------------------------------------------------

def twin_name(name: str) -> str | None:
    """The other family's name of the same interface and port (X <-> T, Y <-> U)."""
    head, base = os.path.split(name)
    parsed = parse_socket_name(base)
    if parsed is None:
        return None
    return os.path.join(head, socket_name(other(parsed.family), parsed.sotype, parsed.iface, parsed.port))


def linked_alive(path: str, is_alive) -> bool:  # type: ignore[no-untyped-def]
    """Is ``path`` a twin (hard link) of a live socket's primary name?

    /proc/net/unix lists a socket under the name it was bound to only, so a twin looks unused
    there: it is alive when its twin name is the same inode and that name is alive.
    """
    twin = twin_name(path)
    if twin is None:
        return False
    try:
        a, b = os.lstat(path), os.lstat(twin)
    except OSError:
        return False
    return (stat.S_ISSOCK(a.st_mode) and (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev)
            and bool(is_alive(twin)))


def link_twin(primary: str, twin: str) -> int:
    """Hard-link ``twin`` to the bound socket file ``primary``; returns the link's inode.

    The caller has checked (EADDRINUSE) that nobody lives at ``twin``; a stale file there goes.
    """
    try:
        os.unlink(twin)
    except FileNotFoundError:
        pass
    try:
        os.link(primary, twin)
    except FileExistsError:
        raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE)) from None
    return os.lstat(twin).st_ino


TWIN_SENDERS = ".twin"
"""Subdirectory of the socket directory holding dual-stack sockets' second senders (see above)."""
_SUN_PATH_MAX = 107


def open_twin_sender(twin: str, sotype: int):  # type: ignore[no-untyped-def]
    """A non-blocking unix socket of ``sotype`` bound to ``<dir>/.twin/<basename of twin>``, or None
    when that path does not fit in sun_path (the datagrams then leave under the primary name)."""
    head, base = os.path.split(twin)
    folder = os.path.join(head, TWIN_SENDERS)
    path = os.path.join(folder, base)
    if len(path.encode()) > _SUN_PATH_MAX:
        return None
    os.makedirs(folder, mode=0o700, exist_ok=True)
    sock = _orig_socket(socket.AF_UNIX, sotype | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, 0)
    try:
        try:
            os.unlink(path)  # a crashed run's leftover: the twin name itself is ours now
        except FileNotFoundError:
            pass
        sock.bind(path)
    except OSError:
        sock.close()
        return None
    return sock


def close_twin_sender(sock) -> None:  # type: ignore[no-untyped-def]
    if sock is None:
        return
    try:
        path = sock.getsockname()
        sock.close()
        if path:
            os.unlink(path)
    except OSError:
        pass


def family_of_name(path: str) -> int:
    return AF_INET if os.path.basename(path)[:1] in ("T", "U") else AF_INET6


def unlink_twin_of(name: str) -> None:
    """Before a bound name goes: remove its twin if it is a link to the same socket."""
    twin = twin_name(name)
    if twin is None:
        return
    try:
        if os.lstat(twin).st_ino == os.lstat(name).st_ino:
            os.unlink(twin)
    except OSError:
        pass


def unlink_twin(twin: str | None, ino: int | None) -> None:
    """Remove our twin on close, unless somebody else's file took the name since."""
    if not twin:
        return
    try:
        if ino is None or os.lstat(twin).st_ino == ino:
            os.unlink(twin)
    except OSError:
        pass
