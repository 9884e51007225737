"""cwrap socket_wrapper's addressing rule, as pure functions.

A native program under Debian's ``libsocket_wrapper.so`` and a Python program under ``wrappers``
meet only through file names in ``SOCKET_WRAPPER_DIR``, so this module is the compatibility
contract and must match cwrap byte for byte (socket_wrapper 1.3.5 to 1.5.2 name their files this way):

    $SOCKET_WRAPPER_DIR/<L><II><PPPP>      printf("%c%02X%04X", letter, iface, port)

    L = T (IPv4 TCP) | U (IPv4 UDP) | X (IPv6 TCP) | Y (IPv6 UDP)
    interface N is 127.0.0.N or 10.53.57.N (SOCKET_WRAPPER_IPV4_NETWORK) and fd00::5357:5fNN

Nothing here touches the file system; the socket code turns these answers into ``bind()`` and
``connect()`` calls on unix sockets.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import socket
from dataclasses import dataclass

MAX_IFACE = 64
"""cwrap's MAX_WRAPPED_INTERFACES: interface numbers are 1..64."""

IPV4_NETWORKS = ("127.0.0.0", "10.53.57.0")
IPV6_PREFIX = ipaddress.IPv6Address("fd00::5357:5f00").packed[:15]

AUTOBIND_FIRST, AUTOBIND_LAST = 10000, 60000
"""Ephemeral ports for connect()/sendto() autobind (a per-process counter starts at pid % 50000 + 10000)."""

PORT0_FIRST, PORT0_LAST = 5001, 9999
"""Ports an explicit bind to port 0 scans, first free file wins."""

LETTERS: dict[tuple[int, int], str] = {
    (socket.AF_INET, socket.SOCK_STREAM): "T",
    (socket.AF_INET, socket.SOCK_DGRAM): "U",
    (socket.AF_INET6, socket.SOCK_STREAM): "X",
    (socket.AF_INET6, socket.SOCK_DGRAM): "Y",
}
_BY_LETTER = {v: k for k, v in LETTERS.items()}


class AddressError(OSError):
    """An emulated address the wrapper refuses, carrying the errno cwrap (or the kernel) gives."""

    def __init__(self, err: int, message: str):
        super().__init__(err, message)


@dataclass(frozen=True)
class Network:
    """The emulated network of one process: which IPv4 /24 and which interface is 'mine'."""

    ipv4_network: str = "127.0.0.0"
    default_iface: int = 1

    def __post_init__(self) -> None:
        if self.ipv4_network not in IPV4_NETWORKS:
            raise ValueError(
                f"SOCKET_WRAPPER_IPV4_NETWORK: {self.ipv4_network!r} is not one of {', '.join(IPV4_NETWORKS)}"
            )
        if not 1 <= self.default_iface <= MAX_IFACE:
            raise ValueError(
                f"SOCKET_WRAPPER_DEFAULT_IFACE: {self.default_iface} is outside 1..{MAX_IFACE}"
            )

    @functools.cached_property
    def _v4_base(self) -> int:
        return int(ipaddress.IPv4Address(self.ipv4_network))

    @functools.cached_property
    def ipv4_broadcast(self) -> str:  # every sendto asks (is_broadcast)
        # cwrap uses the class-A broadcast of the network: 127.255.255.255 / 10.255.255.255.
        return self.ipv4_network.split(".")[0] + ".255.255.255"

    def iface_address(self, family: int, iface: int) -> str:
        return _iface_address(self.ipv4_network, family, iface)

    def _iface_address_uncached(self, family: int, iface: int) -> str:
        if family == socket.AF_INET:
            return str(ipaddress.IPv4Address(self._v4_base + iface))
        if family == socket.AF_INET6:
            return str(ipaddress.IPv6Address(IPV6_PREFIX + bytes([iface])))
        raise AddressError(errno.EAFNOSUPPORT, f"address family {family} is not emulated")

    def my_address(self, family: int) -> str:
        return self.iface_address(family, self.default_iface)

    def iface_of(self, family: int, host: str) -> int | None:
        """Interface number of an address inside the emulated network, None when outside it."""
        try:
            if family == socket.AF_INET:
                value = int(ipaddress.IPv4Address(host))
                if value & 0xFFFFFF00 != self._v4_base:
                    return None
                return value & 0xFF
            if family == socket.AF_INET6:
                packed = ipaddress.IPv6Address(host.split("%", 1)[0]).packed
                if packed[:15] != IPV6_PREFIX:
                    return None
                return packed[15]
        except ValueError:
            return None
        return None

    def is_wildcard(self, family: int, host: str) -> bool:
        return host in ("", "0.0.0.0", "::") or (
            family == socket.AF_INET6 and _is_v6_unspecified(host)
        )

    def is_broadcast(self, family: int, host: str) -> bool:
        return family == socket.AF_INET and host in ("255.255.255.255", "<broadcast>", self.ipv4_broadcast)

    # -- the two directions of cwrap's conversion ----------------------------------------------

    def bind_iface(self, family: int, sotype: int, host: str) -> int:
        """Interface for bind(): wildcard and (UDP) broadcast mean 'mine'; outside -> EADDRNOTAVAIL."""
        if self.is_wildcard(family, host):
            return self.default_iface
        if sotype == socket.SOCK_DGRAM and self.is_broadcast(family, host):
            return self.default_iface
        iface = self.iface_of(family, host)
        if iface is None:
            raise AddressError(errno.EADDRNOTAVAIL, f"{host} is not an address of the emulated network")
        if not 1 <= iface <= MAX_IFACE:
            # cwrap aborts the process here for IPv4 (a bug); EINVAL is what it gives for IPv6.
            raise AddressError(errno.EINVAL, f"{host}: interface {iface} is outside 1..{MAX_IFACE}")
        return iface

    def remote_iface(self, family: int, host: str) -> int:
        """Interface for connect()/sendto(): outside the network (or broadcast) -> ENETUNREACH."""
        if self.is_broadcast(family, host):
            raise AddressError(errno.ENETUNREACH, f"{host}: broadcast needs sendto() on a UDP socket")
        iface = self.iface_of(family, host)
        if iface is None:
            raise AddressError(errno.ENETUNREACH, f"{host} is outside the emulated network")
        return iface


@functools.lru_cache(maxsize=1024)
def _iface_address(ipv4_network: str, family: int, iface: int) -> str:
    return Network(ipv4_network=ipv4_network)._iface_address_uncached(family, iface)


def _is_v6_unspecified(host: str) -> bool:
    try:
        return ipaddress.IPv6Address(host.split("%", 1)[0]).is_unspecified
    except ValueError:
        return False


def letter(family: int, sotype: int) -> str:
    try:
        return LETTERS[(family, sotype)]
    except KeyError:
        raise AddressError(errno.EPROTONOSUPPORT, f"no emulation for family {family} type {sotype}") from None


def socket_name(family: int, sotype: int, iface: int, port: int) -> str:
    """The file name cwrap gives an emulated endpoint: ``%c%02X%04X``."""
    if not 0 <= iface <= 0xFF:
        raise AddressError(errno.EINVAL, f"interface {iface} does not fit the file name")
    if not 0 <= port <= 0xFFFF:
        raise AddressError(errno.EINVAL, f"port {port} is outside 0..65535")
    return f"{letter(family, sotype)}{iface:02X}{port:04X}"


@dataclass(frozen=True)
class ParsedName:
    family: int
    sotype: int
    iface: int
    port: int


def parse_socket_name(name: str) -> ParsedName | None:
    """Inverse of socket_name on the last path component; None for anything cwrap would not parse.

    cwrap reads the name back with sscanf("%c%02X%04X") and rejects interfaces 0 and > 64.
    """
    parsed = parse_name_tuple(name)
    return None if parsed is None else ParsedName(*parsed)


def parse_name_tuple(name: str) -> tuple[int, int, int, int] | None:
    """parse_socket_name() as a plain (family, sotype, iface, port) tuple: every accept and
    received datagram names its peer this way, and a frozen dataclass costs more to build."""
    base = name.rpartition("/")[2]
    if len(base) != 7 or base[0] not in _BY_LETTER:
        return None
    try:
        iface = int(base[1:3], 16)
        port = int(base[3:7], 16)
    except ValueError:
        return None
    if not 1 <= iface <= MAX_IFACE:
        return None
    family, sotype = _BY_LETTER[base[0]]
    return family, sotype, iface, port


def sockaddr(family: int, host: str, port: int) -> tuple:
    """The tuple Python's socket API returns for an address of this family."""
    if family == socket.AF_INET6:
        return (host, port, 0, 0)
    return (host, port)
