"""setsockopt/getsockopt of emulated sockets.

A unix socket has no IP or TCP layer, so options below SOL_SOCKET are stored and echoed (with the
kernel's defaults), and SO_DOMAIN/SO_TYPE/SO_PROTOCOL describe the emulated socket, not the unix
one. cwrap accepts and ignores non-SOL_SOCKET sets and refuses their gets; echoing is kinder to
programs that read back what they set.
"""

from __future__ import annotations

import errno
import socket as _socket_mod
from typing import Any

from .sockbase import (
    _IPPROTO_TCP,
    _IPPROTO_UDP,
    _SOL_SOCKET,
    SOCK_STREAM,
    SocketParts,
    _orig_socket,
    _oserror,
)

# Options below SOL_SOCKET are stored and echoed: a unix socket has no IP or TCP layer.
_OPTION_DEFAULTS: dict[tuple[int, int], int] = {
    (_IPPROTO_TCP, _socket_mod.TCP_NODELAY): 0,
    (_IPPROTO_TCP, getattr(_socket_mod, "TCP_MAXSEG", 2)): 1460,
    (_IPPROTO_TCP, getattr(_socket_mod, "TCP_KEEPIDLE", 4)): 7200,
    (_IPPROTO_TCP, getattr(_socket_mod, "TCP_KEEPINTVL", 5)): 75,
    (_IPPROTO_TCP, getattr(_socket_mod, "TCP_KEEPCNT", 6)): 9,
    (_socket_mod.IPPROTO_IP, _socket_mod.IP_TTL): 64,
    (_socket_mod.IPPROTO_IP, _socket_mod.IP_TOS): 0,
    (_socket_mod.IPPROTO_IPV6, _socket_mod.IPV6_UNICAST_HOPS): 64,
}
_V6ONLY = (_socket_mod.IPPROTO_IPV6, _socket_mod.IPV6_V6ONLY)


class OptionsMixin(SocketParts):
    """Part of WrappedSocket (socket_wrapper.py); self is the socket."""

    __slots__ = ()

    def setsockopt(self, level: int, optname: int, value: Any, optlen: int | None = None) -> None:  # type: ignore[override]
        if self._sw is None:
            if optlen is None:
                return super().setsockopt(level, optname, value)
            return super().setsockopt(level, optname, value, optlen)
        m = self._sw
        if level == _SOL_SOCKET:
            if optname in (getattr(_socket_mod, "SO_REUSEPORT", 15), _socket_mod.SO_BROADCAST,
                           getattr(_socket_mod, "SO_BINDTODEVICE", 25)):
                m.options[(level, optname)] = value
                return None
            if optlen is None:
                return _orig_socket.setsockopt(self, level, optname, value)
            return _orig_socket.setsockopt(self, level, optname, value, optlen)
        if (level, optname) == _V6ONLY:
            return self._set_v6only(value)
        m.options[(level, optname)] = value
        return None

    def _set_v6only(self, value: Any) -> None:
        """IPV6_V6ONLY decides which names a bind takes (dualstack.py), so, as on Linux, it is an
        AF_INET6 option (ENOPROTOOPT elsewhere) that cannot change once the socket is bound."""
        m = self._sw
        assert m is not None
        if m.family != _socket_mod.AF_INET6:
            raise _oserror(errno.ENOPROTOOPT)
        if m.bound_path is not None:
            raise _oserror(errno.EINVAL, "IPV6_V6ONLY after bind")
        if isinstance(value, bytes | bytearray):
            value = int.from_bytes(bytes(value)[:4].ljust(4, b"\0"), "little")
        m.v6only = bool(value)
        return None

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> Any:  # type: ignore[override]
        if self._sw is None:
            return super().getsockopt(level, optname) if buflen is None else super().getsockopt(level, optname, buflen)
        m = self._sw
        value: Any
        if level == _SOL_SOCKET:
            if optname == _socket_mod.SO_DOMAIN:
                value = m.family
            elif optname == _socket_mod.SO_TYPE:
                value = m.sotype
            elif optname == _socket_mod.SO_PROTOCOL:
                value = m.proto or (_IPPROTO_TCP if m.sotype == SOCK_STREAM else _IPPROTO_UDP)
            elif (level, optname) in m.options:
                value = m.options[(level, optname)]
            elif optname in (getattr(_socket_mod, "SO_REUSEPORT", 15), _socket_mod.SO_BROADCAST):
                value = 0
            else:
                return _orig_socket.getsockopt(self, level, optname) if buflen is None else \
                    _orig_socket.getsockopt(self, level, optname, buflen)
        elif (level, optname) == _V6ONLY:
            if m.family != _socket_mod.AF_INET6:
                raise _oserror(errno.EOPNOTSUPP)
            value = int(m.v6only)
        elif (level, optname) in m.options:
            value = m.options[(level, optname)]
        elif (level, optname) in _OPTION_DEFAULTS:
            value = _OPTION_DEFAULTS[(level, optname)]
        else:
            raise _oserror(errno.ENOPROTOOPT)
        if buflen is None:
            if isinstance(value, bytes | bytearray):
                return int.from_bytes(bytes(value)[:4].ljust(4, b"\0"), "little")
            return int(value)
        if isinstance(value, bytes | bytearray):
            return bytes(value)[:buflen]
        return int(value).to_bytes(4, "little", signed=True)[:buflen]
