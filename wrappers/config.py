"""The wrapper's configuration, read from the same environment variables cwrap reads.

cwrap is configured only by environment (SOCKET_WRAPPER_DIR switches it on), and a process tree
that mixes native and Python programs must agree on it, so we read the same names. Where cwrap
aborts the process on a bad value, we raise ``WrapperConfigError`` naming the variable instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .addressing import IPV4_NETWORKS, MAX_IFACE, Network
from .sockdir import check_socket_dir


class WrapperConfigError(ValueError):
    """A wrapper environment variable has a value we refuse; the message names the variable."""


@dataclass(frozen=True)
class Config:
    socket_dir: str
    network: Network = field(default_factory=Network)
    pcap_file: str | None = None

    def path(self, name: str) -> str:
        # os.path.join, for a plain file name and without its generality (every bind and
        # connect asks)
        d = self.socket_dir
        return d + name if d.endswith("/") else f"{d}/{name}"


def parse_iface(value: str | None, var: str = "SOCKET_WRAPPER_DEFAULT_IFACE") -> int:
    if value is None or value == "":
        return 1
    try:
        iface = int(value, 10)
    except ValueError:
        raise WrapperConfigError(f"{var}: {value!r} is not an interface number (1..{MAX_IFACE})") from None
    if not 1 <= iface <= MAX_IFACE:
        raise WrapperConfigError(f"{var}: {iface} is outside 1..{MAX_IFACE}")
    return iface


def from_environ(env: os._Environ[str] | dict[str, str] | None = None, *, create: bool = False) -> Config | None:
    """The active configuration, or None when SOCKET_WRAPPER_DIR is unset or empty (wrapper off)."""
    env = os.environ if env is None else env
    socket_dir = env.get("SOCKET_WRAPPER_DIR", "")
    if not socket_dir:
        return None
    create = create or env.get("WIRECHECK_CREATE_SOCKET_DIR", "") not in ("", "0")
    try:
        socket_dir = check_socket_dir(socket_dir, create=create)
    except ValueError as e:
        raise WrapperConfigError(f"SOCKET_WRAPPER_DIR: {e}") from None
    network = env.get("SOCKET_WRAPPER_IPV4_NETWORK", "") or "127.0.0.0"
    if network not in IPV4_NETWORKS:
        raise WrapperConfigError(
            f"SOCKET_WRAPPER_IPV4_NETWORK: {network!r} is not one of {', '.join(IPV4_NETWORKS)}"
        )
    iface = parse_iface(env.get("SOCKET_WRAPPER_DEFAULT_IFACE"))
    pcap = env.get("SOCKET_WRAPPER_PCAP_FILE") or None
    if pcap is not None:
        if pcap.startswith("./"):
            pcap = pcap[2:]
        pcap = os.path.abspath(pcap)
    return Config(socket_dir=socket_dir, network=Network(network, iface), pcap_file=pcap)


def with_settings(
    env: dict[str, str],
    *,
    socket_dir: str | None = None,
    iface: int | str | None = None,
    pcap: str | None = None,
    ipv4_network: str | None = None,
) -> dict[str, str]:
    """A copy of env with the given settings written as the SOCKET_WRAPPER_* variables.

    The one place that turns keyword arguments into the variables both activate() (this process)
    and child_environ() (a child) export, so the two can never disagree.
    """
    env = dict(env)
    if socket_dir is not None:
        env["SOCKET_WRAPPER_DIR"] = str(socket_dir)
    if iface is not None:
        env["SOCKET_WRAPPER_DEFAULT_IFACE"] = str(parse_iface(str(iface)))
    if pcap is not None:
        env["SOCKET_WRAPPER_PCAP_FILE"] = os.path.abspath(pcap)
    if ipv4_network is not None:
        env["SOCKET_WRAPPER_IPV4_NETWORK"] = ipv4_network
    return env
