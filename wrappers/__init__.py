"""wirecheck's wire wrappers: the kernel's socket layer, emulated in user space.

``activate()`` makes ``socket.socket`` create emulated sockets for AF_INET/AF_INET6 (cwrap
socket_wrapper compatible: unix sockets in SOCKET_WRAPPER_DIR), so unmodified code, asyncio and
``socket.create_connection`` included, runs on the emulated network. Like cwrap, the wrapper is
invisible when off: without a socket directory nothing changes.

    import wrappers
    with wrappers.activate(socket_dir="/tmp/sw", iface=11, pcap="/tmp/run.pcap"):
        ...   # sockets created here are emulated

Child processes get the same through ``wirecheck exec`` (a sitecustomize for Python, Debian's
libsocket_wrapper.so for native programs).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from .addressing import Network
from .config import Config, WrapperConfigError, from_environ, with_settings
from .sockdir import check_socket_dir
from .socket_wrapper import WrappedSocket, _orig_socket, register_protocol, set_forced_config

__all__ = ["activate", "deactivate", "is_active", "WrappedSocket", "WrapperConfigError", "register_protocol"]

_active: Config | None = None


class _Activation:
    """Returned by activate(): also usable as a context manager that deactivates on exit."""

    def __init__(self, config: Config):
        self.config = config

    def __enter__(self) -> Config:
        return self.config

    def __exit__(self, *exc: object) -> None:
        deactivate()


def activate(
    socket_dir: str | None = None,
    *,
    iface: int | str | None = None,
    pcap: str | None = None,
    ipv4_network: str | None = None,
    create: bool = False,
) -> _Activation:
    """Emulate AF_INET/AF_INET6 sockets in this process from now on.

    Arguments default to the SOCKET_WRAPPER_* environment variables. Also exports them to
    os.environ, so child processes started from here join the same emulated network.
    """
    global _active
    env = with_settings(dict(os.environ), socket_dir=socket_dir, iface=iface, pcap=pcap, ipv4_network=ipv4_network)
    if not env.get("SOCKET_WRAPPER_DIR"):
        raise WrapperConfigError("SOCKET_WRAPPER_DIR: not set; pass socket_dir= or set the variable")
    config = from_environ(env, create=create)
    assert config is not None
    for key in ("SOCKET_WRAPPER_DIR", "SOCKET_WRAPPER_DEFAULT_IFACE", "SOCKET_WRAPPER_PCAP_FILE",
                "SOCKET_WRAPPER_IPV4_NETWORK"):
        if env.get(key):
            os.environ[key] = env[key]
    set_forced_config(config)
    socket.socket = WrappedSocket  # type: ignore[misc]
    _active = config
    _install_protocols()
    return _Activation(config)


def deactivate() -> None:
    """Stop emulating for new sockets; sockets already created keep working."""
    global _active
    set_forced_config(None)
    socket.socket = _orig_socket  # type: ignore[misc]
    for key in ("SOCKET_WRAPPER_DIR", "SOCKET_WRAPPER_PCAP_FILE"):
        os.environ.pop(key, None)
    _active = None


def is_active() -> bool:
    return _active is not None


def active_config() -> Config | None:
    return _active


def _install_protocols() -> None:
    """Import the optional protocol emulations (IPPROTO_QUIC, IPPROTO_SMBDIRECT) if present."""
    for name in ("wrappers.quic", "wrappers.smbdirect"):
        try:
            __import__(name)
        except ImportError:
            pass


@contextmanager
def activated(**kwargs: object) -> Iterator[Config]:
    with activate(**kwargs):  # type: ignore[arg-type]
        yield _active  # type: ignore[misc]


__all__ += ["Network", "Config", "check_socket_dir", "active_config", "activated"]
