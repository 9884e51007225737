"""Which network interface owns a listening address, and how fast it is: the facts
FSCTL_QUERY_NETWORK_INTERFACE_INFO reports (MS-SMB2 §2.2.32.5, §3.3.5.15.11).

Why here and not in the server: finding interfaces means reading the host (``/proc``, ``/sys``,
an ioctl) or the emulated network's numbering; the sans-IO server only turns the
:class:`~harness.smb.server.ListenerInfo` records made here into wire entries.

- On the emulated network (socket_wrapper active) an address's interface is its emulated interface
  number (127.0.0.10 and fd00::5357:5f0a are both interface 10); a wildcard is the process's own
  interface.  There is no NIC, so the link speed is the default unless one is given.
- On the host an address's interface comes from ``/proc/net/if_inet6`` (IPv6) or SIOCGIFADDR on
  each interface (IPv4; loopback addresses belong to ``lo``); the speed from
  ``/sys/class/net/IF/speed`` (Mbit/s) when the driver reports one; RSS_CAPABLE when the NIC has
  more than one receive queue.  A wildcard listener lists every address of its family.
- ``link_speed`` and ``rss`` given by the caller (``wirecheck serve --listen ...,speed=10G,rss``)
  win over what is found.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import socket
import struct

from harness.smb.server import ListenerInfo

DEFAULT_LINK_SPEED = 1_000_000_000  # bit/s, when nothing better is known (the loopback reports none)
SIOCGIFADDR = 0x8915


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::")


def _speed(name: str) -> int | None:
    try:
        with open(f"/sys/class/net/{name}/speed") as handle:
            mbits = int(handle.read().strip())
    except (OSError, ValueError):
        return None  # the loopback and virtual links have no speed
    return mbits * 1_000_000 if mbits > 0 else None


def _rss(name: str) -> bool:
    """Receive side scaling: the NIC spreads incoming traffic over more than one receive queue
    (``/sys/class/net/IF/queues/rx-N``), so several connections to it are served in parallel
    (a Windows client opens more channels to an RSS_CAPABLE interface)."""
    try:
        return sum(entry.startswith("rx-") for entry in os.listdir(f"/sys/class/net/{name}/queues")) > 1
    except OSError:
        return False


def host_addresses(family: int) -> list[tuple[str, int, str, int]]:
    """(address, if_index, interface name, scope id) of every address of ``family`` on the host."""
    found = []
    if family == socket.AF_INET6:
        try:
            with open("/proc/net/if_inet6") as handle:
                lines = handle.read().split()
        except OSError:
            return []
        for at in range(0, len(lines) - 5, 6):
            raw, index_hex, _plen, scope, _flags, name = lines[at:at + 6]
            address = str(ipaddress.IPv6Address(bytes.fromhex(raw)))
            link_local = int(scope, 16) == 0x20
            found.append((address, int(index_hex, 16), name, int(index_hex, 16) if link_local else 0))
        return found
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for index, name in socket.if_nameindex():
            try:
                answer = fcntl.ioctl(probe.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue  # no IPv4 address on this interface
            found.append((socket.inet_ntoa(answer[20:24]), index, name, 0))
    finally:
        probe.close()
    return found


def describe(transport: str, host: str, port: int, *, link_speed: int | None = None,
             rss: bool = False) -> list[ListenerInfo]:
    """The :class:`ListenerInfo` records for a listener bound to ``host``:``port``."""
    import wrappers

    try:
        ipaddress.ip_address(host.split("%", 1)[0] or "0.0.0.0")
    except ValueError:
        return []  # not an address (a listener that reports a name): nothing to list
    family = _family(host)
    config = wrappers.active_config()
    if config is not None:
        network = config.network
        index = network.default_iface if _wildcard(host) else network.iface_of(family, host)
        address = network.my_address(family) if _wildcard(host) else host
        return [ListenerInfo(transport, address, port, index or 0, link_speed or DEFAULT_LINK_SPEED, rss)]
    records = []
    for address, index, name, scope in host_addresses(family):
        if _wildcard(host) or ipaddress.ip_address(address) == ipaddress.ip_address(host.split("%", 1)[0]):
            records.append(ListenerInfo(transport, address, port, index,
                                        link_speed or _speed(name) or DEFAULT_LINK_SPEED, rss or _rss(name), scope))
    if not records and not _wildcard(host) and ipaddress.ip_address(host.split("%", 1)[0]).is_loopback:
        # 127.0.0.2..127.255.255.254 answer on lo without being configured addresses of it.
        records.append(ListenerInfo(transport, host, port, socket.if_nametoindex("lo"),
                                    link_speed or DEFAULT_LINK_SPEED, rss))
    return records


__all__ = ["DEFAULT_LINK_SPEED", "describe", "host_addresses"]
