"""What the emulated socket's parts share: the original socket class, flag values, errno helpers.

Split out of socket_wrapper.py so the stream, datagram and option halves of WrappedSocket
(stream.py, dgram.py, sockopts.py) can be read on their own.
"""

from __future__ import annotations

import errno
import os
import select
import socket as _socket_mod
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import addressing
from .origsocket import orig_socket as _orig_socket

if TYPE_CHECKING:
    from .addressing import Network
    from .config import Config
    from .meta import SocketMeta
    from .recorder import Recorder


AF_INET, AF_INET6, AF_UNIX = _socket_mod.AF_INET, _socket_mod.AF_INET6, _socket_mod.AF_UNIX
SOCK_STREAM, SOCK_DGRAM = _socket_mod.SOCK_STREAM, _socket_mod.SOCK_DGRAM
_TYPE_MASK = ~(_socket_mod.SOCK_NONBLOCK | _socket_mod.SOCK_CLOEXEC)
_MSG_DONTWAIT = int(_socket_mod.MSG_DONTWAIT)  # int, not MsgFlag: enum | and & run Python code
_MSG_PEEK = int(_socket_mod.MSG_PEEK)
_SOL_SOCKET = _socket_mod.SOL_SOCKET
_POLLIN, _POLLOUT = select.POLLIN, select.POLLOUT
_POLLRDHUP = getattr(select, "POLLRDHUP", 0x2000)
_SIOCINQ = 0x541B
_UNIX_BUF = 4 * 1024 * 1024  # emulated TCP needs large unix buffers to keep up with real TCP
_IPPROTO_TCP, _IPPROTO_UDP = _socket_mod.IPPROTO_TCP, _socket_mod.IPPROTO_UDP
_UCRED = struct.Struct("iII")
_DGRAM_PATIENCE = 1.0  # seconds a blocking UDP send waits for room at the receiver before dropping
_DGRAM_PATIENCE_NONBLOCKING = 0.002


def _oserror(err: int, what: str = "") -> OSError:
    msg = os.strerror(err) + (f" ({what})" if what else "")
    cls: type[OSError] = {
        errno.ECONNREFUSED: ConnectionRefusedError,
        errno.ECONNRESET: ConnectionResetError,
        errno.EPIPE: BrokenPipeError,
        errno.EAGAIN: BlockingIOError,
    }.get(err, OSError)
    return cls(err, msg)


class _AutobindCounter:
    """cwrap's per-process ephemeral port counter: starts at pid % 50000 + 10000."""

    def __init__(self) -> None:
        self.next: int | None = None
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self.next = None

    def candidates(self) -> range:
        if self.next is None:
            self.next = os.getpid() % 50000 + 10000
        if self.next > addressing.AUTOBIND_LAST:
            self.next = addressing.AUTOBIND_FIRST
        start = self.next
        return range(start, min(start + 1024, 0x10000))


_autobind = _AutobindCounter()
_remote_cache: dict[tuple, tuple[str, tuple, Any]] = {}
_orig_send, _orig_recv, _orig_recv_into = _orig_socket.send, _orig_socket.recv, _orig_socket.recv_into


def _domain_of(fd: int) -> int | None:
    s = _orig_socket(fileno=os.dup(fd))
    try:
        return s.getsockopt(_SOL_SOCKET, _socket_mod.SO_DOMAIN)
    except OSError:
        return None
    finally:
        s.close()


def _cred_pid(ancdata: list) -> int | None:
    for level, kind, payload in ancdata:
        if level == _SOL_SOCKET and kind == _socket_mod.SCM_CREDENTIALS and len(payload) >= _UCRED.size:
            return _UCRED.unpack(payload[: _UCRED.size])[0]
    return None


_stable_ports: dict[tuple[str, tuple], tuple] = {}


def _stable(proto: str, addr: tuple) -> tuple:
    """An ephemeral (host, port) as (host, "ephN"), N in order of first use in this process.

    Autobound ports derive from the pid, so they differ from run to run; impairment fates are
    drawn per flow, and a flow named by its ephemeral port would get a different fate sequence
    every run. Naming it by its order of appearance keeps "same seed, same fates" across runs.
    """
    key = (proto, addr)
    stable = _stable_ports.get(key)
    if stable is None:
        stable = _stable_ports[key] = (addr[0], f"eph{sum(1 for k in _stable_ports if k[0] == proto)}")
    return stable


def _schedule(at: float, callback: Callable[[], object]) -> None:
    from .timers import get_scheduler

    get_scheduler().schedule(at, callback)


class SocketParts(_socket_mod.socket):
    """The common base of WrappedSocket's parts (stream.py, dgram.py, sockopts.py).

    At run time it adds nothing; for the type checker it says what each part may use of the
    others, all of which WrappedSocket (socket_wrapper.py) defines.
    """

    __slots__ = ()
    _sw: SocketMeta | None
    _sw_cfg: Config
    _sw_rec: Recorder | None
    _sw_timeout: float | None
    _sw_closed: bool

    if TYPE_CHECKING:
        @property
        def _net(self) -> Network: ...
        def _io(self, op: Callable[[], Any], events: int, flags: int = 0) -> Any: ...
        def _deadline(self) -> float | None: ...
        def _autobind(self, family: int | None = None, peer: tuple | None = None) -> None: ...
        def _wire(self, peer: tuple) -> tuple[tuple, tuple]: ...
        def _reach_out(self, path: str) -> None: ...
        def _claim(self, path: str) -> None: ...
        def _bind_family(self, host: str) -> tuple[int, str, frozenset]: ...
        def _link_twin(self, twin: str) -> None: ...
        def _undo_bind(self) -> None: ...
        def _twin_sender_for(self, path: str) -> Any: ...
        def _remote(self, address: Any, what: str) -> tuple[str, tuple]: ...
        def _path(self, family: int, iface: int, port: int) -> str: ...
        def _impairer(self, direction: str, peer: tuple | None = None) -> Any: ...
        def _set_timeout(self, value: float | None, fresh: bool = False) -> None: ...
        def _emulate(self, cfg: Config, meta: SocketMeta, fresh: bool = False) -> None: ...
        def _set_buffers(self) -> None: ...
        # stream.py and dgram.py, for socket_wrapper.py
        def _connect_stream(self, address: Any) -> None: ...
        def _connect_dgram(self, address: Any) -> None: ...
        def _send_stream(self, data: Any, flags: int) -> int: ...
        def _sendto_dgram(self, data: Any, flags: int, path: str, peer: tuple) -> int: ...
        def _recv_stream_into(self, view: memoryview, nbytes: int, flags: int) -> int: ...
        def _recv_dgram(self, bufsize: int, flags: int) -> tuple[bytes, Any]: ...
        def _log_fin_out_locked(self, closing: bool = False) -> None: ...
        def _plain_stream(self, m: SocketMeta) -> bool: ...
        def _arm_timed_cut(self) -> None: ...
