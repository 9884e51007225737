"""IPPROTO_SMBDIRECT for wirecheck: SMB Direct (MS-SMBD) over emulated RDMA, in user space.

Under ``wrappers.activate()`` / ``wirecheck exec``, ``socket.socket(AF_INET|AF_INET6, SOCK_STREAM,
IPPROTO_SMBDIRECT)`` returns an :class:`SmbDirectSocket` (numbers from Metzmacher's proposal:
IPPROTO_SMBDIRECT 257, SOL_SMBDIRECT 289).  One message on the emulated carrier (an AF_UNIX
SOCK_SEQPACKET connection at ``R``/``S`` + iface + port) is one RDMA SEND; RDMA READ/WRITE move
memory between processes with process_vm_readv/writev, or through memfds where ptrace rules
forbid that, only inside registered regions.  The capture shows RoCEv2.

Modules: constants (numbers), messages (MS-SMBD wire format), core (sans-IO state machine),
memory (regions, tokens, the copy), roce (capture records), link (one connection: carrier + core +
RNIC), engine (the I/O thread), sock (the socket), naming (file letters).

Importing this package is cheap (the constants and the protocol registration): every process under
the wrapper imports it at activation, most never open an SMB Direct socket. The socket, its engine
and the wire format load on first use (the first such socket, or the first access to one of the
names below).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .constants import *  # noqa: F403
from .constants import IPPROTO_SMBDIRECT

if TYPE_CHECKING:
    from .messages import BufferDescriptor, decode_descriptors, encode_descriptors
    from .sock import SmbDirectSocket

# public name -> the submodule that defines it, imported on first access (PEP 562)
_LAZY = {
    "SmbDirectSocket": "sock",
    "BufferDescriptor": "messages",
    "encode_descriptors": "messages",
    "decode_descriptors": "messages",
}


def __getattr__(name: str) -> Any:
    """The names of the heavy submodules, loaded when first asked for (then cached here)."""
    sub = _LAZY.get(name)
    if sub is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{sub}"), name)
    globals()[name] = value
    return value


def _factory(family: int, type: int, proto: int) -> Any:
    from .sock import SmbDirectSocket

    return SmbDirectSocket(family, type, proto)


def _register() -> None:
    try:
        from ..socket_wrapper import register_protocol
    except ImportError:  # pragma: no cover
        return
    register_protocol(IPPROTO_SMBDIRECT, _factory)


_register()

__all__ = ["SmbDirectSocket", "BufferDescriptor", "encode_descriptors", "decode_descriptors"]
__all__ += [_n for _n in dir(__import__(__name__ + ".constants", fromlist=["x"])) if _n.isupper()]
