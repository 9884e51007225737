"""AF_INET/AF_INET6 sockets emulated over AF_UNIX, on-disk compatible with cwrap's socket_wrapper.

Theory of operation
-------------------
``WrappedSocket`` replaces ``socket.socket`` while the wrapper is active. For a family it does not
emulate (AF_UNIX, AF_NETLINK, ...) or when SOCKET_WRAPPER_DIR is unset it *is* a plain socket:
every method falls through to the original. For AF_INET/AF_INET6 with SOCK_STREAM or SOCK_DGRAM it
creates a unix socket of the same type and translates:

    bind((host, port))      -> bind("$DIR/<L><II><PPPP>")         (addressing.py: cwrap's naming)
    connect((host, port))   -> autobind, then connect("$DIR/...")  (ENOENT becomes EHOSTUNREACH)
    accept()/recvfrom()     -> the peer's unix name parsed back into (host, port)
    getsockname/getpeername -> answered from SocketMeta (meta.py), never from the kernel

The unix socket is always in non-blocking mode underneath; the application's timeout (None, 0 or
seconds) is kept here and blocking calls wait with poll(). That is what lets a send that must be
logged run as "lock, try, log, unlock" without ever sleeping while holding the pcap lock, and it
keeps the timeout in one place (two CPython objects on one fd would fight over O_NONBLOCK).

Every socket operation the real kernel refuses is refused here with the same errno; where cwrap
differs from the kernel for a reason of its own (bind stealing a live name, EINVAL for an unbound
client) we follow the kernel and the README lists the deviation.
"""

from __future__ import annotations

import _socket
import errno
import functools
import os
import select
import socket as _socket_mod
import struct
import time
from collections.abc import Callable
from typing import Any

from . import addressing, impair
from . import meta as metamod
from .addressing import AddressError, Network, parse_socket_name, sockaddr, socket_name
from .config import Config, from_environ
from .meta import SocketMeta
from .recorder import Recorder, recorder_for
from .sockdir import is_in_use, private_dir

_orig_socket = _socket_mod.socket
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

# Options below SOL_SOCKET are stored and echoed: a unix socket has no IP or TCP layer.
_OPTION_DEFAULTS: dict[tuple[int, int], int] = {
    (_IPPROTO_TCP, _socket_mod.TCP_NODELAY): 0,
    (_IPPROTO_TCP, getattr(_socket_mod, "TCP_MAXSEG", 2)): 1460,
    (_IPPROTO_TCP, getattr(_socket_mod, "TCP_KEEPIDLE", 4)): 7200,
    (_IPPROTO_TCP, getattr(_socket_mod, "TCP_KEEPINTVL", 5)): 75,
    (_IPPROTO_TCP, getattr(_socket_mod, "TCP_KEEPCNT", 6)): 9,
    (_socket_mod.IPPROTO_IP, _socket_mod.IP_TTL): 64,
    (_socket_mod.IPPROTO_IP, _socket_mod.IP_TOS): 0,
    (_socket_mod.IPPROTO_IPV6, _socket_mod.IPV6_V6ONLY): 0,
    (_socket_mod.IPPROTO_IPV6, _socket_mod.IPV6_UNICAST_HOPS): 64,
}


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
_remote_cache: dict[tuple, tuple[str, tuple]] = {}
_orig_send, _orig_recv, _orig_recv_into = _orig_socket.send, _orig_socket.recv, _orig_socket.recv_into


class WrappedSocket(_socket_mod.socket):
    """socket.socket while the wrapper is active (see the module docstring)."""

    __slots__ = ["_sw", "_sw_cfg", "_sw_timeout", "_sw_rec", "_sw_closed"]

    def __new__(cls, family: int = -1, type: int = -1, proto: int = -1, fileno: int | None = None) -> Any:
        # socket(AF_INET, ..., IPPROTO_QUIC) and friends belong to their own emulation modules.
        if fileno is None and proto in _protocol_hooks and family in (AF_INET, AF_INET6) \
                and _active_config() is not None:
            return _protocol_hooks[proto](family, type, proto)
        return super().__new__(cls, family, type, proto, fileno)  # type: ignore[call-arg]

    def __init__(self, family: int = -1, type: int = -1, proto: int = -1, fileno: int | None = None):
        self._sw: SocketMeta | None = None
        self._sw_closed = False
        cfg = _active_config()
        if cfg is None:
            _orig_socket.__init__(self, family, type, proto, fileno)
            return
        if fileno is not None:
            self._init_from_fd(cfg, family, type, proto, fileno)
            return
        if family == -1:
            family = AF_INET
        if family not in (AF_INET, AF_INET6):
            _orig_socket.__init__(self, family, type, proto, fileno)
            return
        if type == -1:
            type = SOCK_STREAM
        base_type = type & _TYPE_MASK
        proto = 0 if proto == -1 else proto
        allowed: dict[int, tuple[int, int]] = {SOCK_STREAM: (0, _IPPROTO_TCP), SOCK_DGRAM: (0, _IPPROTO_UDP)}
        if base_type not in allowed or proto not in allowed[base_type]:
            raise _oserror(errno.EPROTONOSUPPORT, "socket_wrapper emulates TCP and UDP only")
        _orig_socket.__init__(self, AF_UNIX, type & ~_socket_mod.SOCK_NONBLOCK, 0)
        self._emulate(cfg, SocketMeta(family, base_type, proto, cfg.socket_dir))
        self._set_timeout(0.0 if type & _socket_mod.SOCK_NONBLOCK else _socket_mod.getdefaulttimeout())
        if base_type == SOCK_STREAM:
            self._set_buffers()

    def _init_from_fd(self, cfg: Config, family: int, type: int, proto: int, fileno: int) -> None:
        """dup(), fromfd(), accept() and fds received by SCM_RIGHTS come through here."""
        domain = _domain_of(fileno)
        meta = metamod.import_passed(fileno, cfg.socket_dir) if domain == AF_UNIX and family != AF_UNIX else None
        if meta is None:
            _orig_socket.__init__(self, family, type, proto, fileno)
            return
        _orig_socket.__init__(self, AF_UNIX, meta.sotype, 0, fileno)
        self._emulate(cfg, meta)
        self._set_timeout(_socket_mod.getdefaulttimeout())
        if self._sw_rec is not None and meta.sotype == SOCK_STREAM and meta.unix_connected \
                and meta.flow is None and meta.local and meta.peer:
            from .tcplog import TcpFlow

            # A connection that arrived by fd passing: carry on with the sender's numbers.
            meta.flow = TcpFlow(meta.local[:2], meta.peer[:2])
            meta.flow.local_seq, meta.flow.remote_seq = meta.passed_seq or (1, 1)
            if meta.accepted:
                meta.peer_logs = self._sw_rec.peer_logs(meta.peer_pid)

    def _emulate(self, cfg: Config, meta: SocketMeta) -> None:
        self._sw = meta
        self._sw_cfg = cfg
        self._sw_rec: Recorder | None = recorder_for(cfg.pcap_file, cfg.socket_dir)
        meta.refs += 1
        _orig_socket.settimeout(self, 0.0)
        metamod.register(self.fileno(), meta)

    def _set_buffers(self) -> None:
        for opt in (_socket_mod.SO_SNDBUF, _socket_mod.SO_RCVBUF):
            try:
                _orig_socket.setsockopt(self, _SOL_SOCKET, opt, _UNIX_BUF)
            except OSError:
                pass

    # -- identity ---------------------------------------------------------------------------
    @property
    def family(self) -> _socket_mod.AddressFamily:  # type: ignore[override]
        if self._sw is not None:
            return _socket_mod.AddressFamily(self._sw.family)
        return super().family

    @property
    def proto(self) -> int:  # type: ignore[override]
        if self._sw is not None:
            return self._sw.proto
        return _orig_socket.proto.__get__(self)  # type: ignore[attr-defined]

    @property
    def emulated(self) -> bool:
        return self._sw is not None

    @property
    def _net(self) -> Network:
        return self._sw_cfg.network

    # -- timeouts (kept here; the fd underneath is always non-blocking) ---------------------
    def settimeout(self, value: float | None) -> None:
        if self._sw is None:
            return super().settimeout(value)
        if value is not None:
            value = float(value)
            if value < 0:
                raise ValueError("Timeout value out of range")
        self._set_timeout(value)

    def gettimeout(self) -> float | None:
        if self._sw is None:
            return super().gettimeout()
        return self._sw_timeout

    def setblocking(self, flag: bool) -> None:
        if self._sw is None:
            return super().setblocking(flag)
        self._set_timeout(None if flag else 0.0)

    def getblocking(self) -> bool:
        if self._sw is None:
            return super().getblocking()
        return self._sw_timeout != 0.0

    def _set_timeout(self, value: float | None) -> None:
        """Keep the application's timeout; make the fd blocking only for a blocking socket.

        A blocking socket's fast path then sleeps in the kernel (fewer, fuller send() calls);
        a timeout is emulated over a non-blocking fd with poll(), because CPython would poll
        before each call otherwise. Paths that must not block pass MSG_DONTWAIT explicitly.
        """
        self._sw_timeout = value
        _orig_socket.settimeout(self, None if value is None else 0.0)

    def _deadline(self) -> float | None:
        t = self._sw_timeout
        return None if t is None else time.monotonic() + t

    def _wait(self, events: int, deadline: float | None) -> None:
        if self._sw_timeout == 0.0:
            raise _oserror(errno.EAGAIN)
        poller = select.poll()
        poller.register(self.fileno(), events)
        while True:
            if deadline is None:
                ms = None
            else:
                ms = (deadline - time.monotonic()) * 1000
                if ms <= 0:
                    raise TimeoutError("timed out")
            if poller.poll(ms):
                return

    def _io(self, op: Callable[[], Any], events: int, flags: int = 0) -> Any:
        deadline = self._deadline()
        nonblock = self._sw_timeout == 0.0 or bool(flags & _MSG_DONTWAIT)
        while True:
            try:
                return op()
            except (BlockingIOError, InterruptedError):
                if nonblock:
                    raise
            self._wait(events, deadline)

    # -- naming -----------------------------------------------------------------------------
    def _path(self, family: int, iface: int, port: int) -> str:
        assert self._sw is not None
        return self._sw_cfg.path(socket_name(family, self._sw.sotype, iface, port))

    def _parse_addr(self, address: Any, what: str) -> tuple[str, int, tuple]:
        """(host, port, full tuple) of an address given to bind/connect/sendto, with the kernel's errors."""
        m = self._sw
        assert m is not None
        if not isinstance(address, tuple) or len(address) < 2:
            raise TypeError(f"{self.family.name} address must be a tuple (host, port)")
        host, port = address[0], address[1]
        if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
            raise OverflowError(f"{what}(): port must be 0-65535.")
        if host is None:
            host = ""
        if host in ("", "<any>"):
            host = "0.0.0.0" if m.family == AF_INET else "::"
        elif host == "<broadcast>":
            host = "255.255.255.255"
        else:
            try:
                infos = _socket_mod.getaddrinfo(host, port, m.family, m.sotype, 0, _socket_mod.AI_NUMERICSERV)
            except _socket_mod.gaierror:
                raise
            host = infos[0][4][0]
        if m.family == AF_INET6:
            flow = address[2] if len(address) > 2 else 0
            scope = address[3] if len(address) > 3 else 0
            return host, port, (host, port, flow, scope)
        return host, port, (host, port)

    def _bind_unix(self, path: str) -> None:
        _orig_socket.bind(self, path)
        m = self._sw
        assert m is not None
        m.bound_path = path
        try:
            m.bound_ino = os.stat(path).st_ino
        except OSError:
            m.bound_ino = None
        if self._sw_rec is not None and m.sotype == SOCK_DGRAM:
            # SCM_CREDENTIALS tells a receiver which process sent a datagram (recorder.py).
            _orig_socket.setsockopt(self, _SOL_SOCKET, _socket_mod.SO_PASSCRED, 1)

    def bind(self, address: Any) -> None:
        if self._sw is None:
            return super().bind(address)
        m = self._sw
        if m.bound_path is not None:
            raise _oserror(errno.EINVAL, "socket is already bound")
        host, port, full = self._parse_addr(address, "bind")
        try:
            iface = self._net.bind_iface(m.family, m.sotype, host)
        except AddressError as e:
            raise _oserror(e.errno or errno.EINVAL, e.strerror or "") from None
        if port == 0:
            for candidate in range(addressing.PORT0_FIRST, addressing.PORT0_LAST + 1):
                path = self._path(m.family, iface, candidate)
                if os.path.lexists(path):
                    continue
                try:
                    self._bind_unix(path)
                except OSError as e:
                    if e.errno == errno.EADDRINUSE:
                        continue
                    raise
                port = candidate
                break
            else:
                raise _oserror(errno.ENFILE, "no free port in 5001..9999")
        else:
            path = self._path(m.family, iface, port)
            self._claim(path)
            self._bind_unix(path)
        report_host = host if self._net.is_wildcard(m.family, host) else self._net.iface_address(m.family, iface)
        m.local = sockaddr(m.family, report_host, port) if m.family == AF_INET else (report_host, port, 0, full[3])
        m.local_iface = iface

    def _claim(self, path: str) -> None:
        """Take a name for an explicit bind: EADDRINUSE if it is alive, a stale leftover is removed.

        cwrap unlinks unconditionally and so silently steals a live server's name; the kernel says
        EADDRINUSE, and so do we.
        """
        m = self._sw
        assert m is not None
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        import stat as _stat

        if not _stat.S_ISSOCK(st.st_mode) and not _stat.S_ISLNK(st.st_mode):
            raise _oserror(errno.EADDRINUSE, f"{path} exists and is not a socket")
        if _stat.S_ISSOCK(st.st_mode) and is_in_use(path, m.sotype):
            raise _oserror(errno.EADDRINUSE)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def _autobind(self, family: int | None = None) -> None:
        m = self._sw
        assert m is not None
        if m.bound_path is not None:
            return
        fam = family or m.family
        iface = self._net.default_iface
        for port in _autobind.candidates():
            path = self._path(fam, iface, port)
            if os.path.lexists(path):
                continue
            try:
                self._bind_unix(path)
            except OSError as e:
                if e.errno in (errno.EADDRINUSE, errno.EALREADY):
                    continue
                raise
            _autobind.next = port + 1
            m.local = sockaddr(fam, self._net.iface_address(fam, iface), port)
            m.local_iface = iface
            m.autobound = True
            return
        raise _oserror(errno.ENFILE, "no free ephemeral port")

    def _remote(self, address: Any, what: str) -> tuple[str, tuple]:
        """The unix path and the emulated tuple of a destination, or the errno cwrap gives."""
        m = self._sw
        assert m is not None
        key = (self._sw_cfg, m.family, m.sotype, address) if type(address) is tuple else None
        hit = _remote_cache.get(key) if key is not None else None
        if hit is not None:
            return hit
        result = self._remote_uncached(address, what)
        if key is not None and result[1][0] == address[0]:  # a literal address: no DNS answer to go stale
            if len(_remote_cache) >= 4096:
                _remote_cache.clear()
            _remote_cache[key] = result
        return result

    def _remote_uncached(self, address: Any, what: str) -> tuple[str, tuple]:
        m = self._sw
        assert m is not None
        host, port, full = self._parse_addr(address, what)
        if port == 0:
            raise _oserror(errno.EINVAL, "port 0")
        try:
            iface = self._net.remote_iface(m.family, host)
        except AddressError as e:
            raise _oserror(e.errno or errno.EINVAL, e.strerror or "") from None
        return self._path(m.family, iface, port), sockaddr(m.family, host, port) if m.family == AF_INET else full

    def getsockname(self) -> Any:
        if self._sw is None:
            return super().getsockname()
        m = self._sw
        if m.local is None:
            return ("0.0.0.0", 0) if m.family == AF_INET else ("::", 0, 0, 0)
        return m.local

    def getpeername(self) -> Any:
        if self._sw is None:
            return super().getpeername()
        if self._sw.peer is None or (self._sw.sotype == SOCK_STREAM and not self._sw.unix_connected):
            raise _oserror(errno.ENOTCONN)
        return self._sw.peer

    # -- options ----------------------------------------------------------------------------
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
        m.options[(level, optname)] = value
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

    # -- connection set-up --------------------------------------------------------------------
    def listen(self, backlog: int = 128) -> None:
        if self._sw is None:
            return super().listen(backlog)
        m = self._sw
        if m.sotype != SOCK_STREAM:
            raise _oserror(errno.EOPNOTSUPP)
        self._autobind()
        _orig_socket.listen(self, backlog)
        m.listening = True

    def connect(self, address: Any) -> None:
        if self._sw is None:
            return super().connect(address)
        m = self._sw
        if m.sotype == SOCK_DGRAM:
            return self._connect_dgram(address)
        if m.unix_connected:
            raise _oserror(errno.EISCONN)
        if m.listening:
            raise _oserror(errno.EINVAL)
        path, peer = self._remote(address, "connect")
        self._autobind()
        rec = self._sw_rec

        def attempt() -> None:
            try:
                if rec is None:
                    _orig_socket.connect(self, path)
                else:
                    with rec.locked():
                        # never wait for a listener's backlog while holding the pcap lock
                        blocking = self._sw_timeout is None
                        if blocking:
                            _orig_socket.settimeout(self, 0.0)
                        try:
                            _orig_socket.connect(self, path)
                        finally:
                            if blocking:
                                _orig_socket.settimeout(self, None)
                        self._connected(peer, path)
                        return
            except FileNotFoundError:
                self._log_failed_connect(peer)
                raise _oserror(errno.EHOSTUNREACH) from None
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EINPROGRESS):
                    raise BlockingIOError(errno.EAGAIN, "listener backlog full") from None
                if e.errno == errno.EPROTOTYPE:
                    raise _oserror(errno.EHOSTUNREACH, "not a stream socket at that address") from None
                raise
            self._connected(peer, path)

        # A full listener backlog is transient for TCP (SYN retries); wait for room even in
        # non-blocking mode, for at most the socket timeout or 3 s.
        deadline = time.monotonic() + (self._sw_timeout if self._sw_timeout else 3.0)
        while True:
            try:
                return attempt()
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError("timed out") from None
                time.sleep(0.001)

    def connect_ex(self, address: Any) -> int:
        if self._sw is None:
            return super().connect_ex(address)
        try:
            self.connect(address)
        except TimeoutError:
            return errno.EAGAIN
        except OSError as e:
            return e.errno or errno.EINVAL
        return 0

    def _connected(self, peer: tuple, path: str) -> None:
        m = self._sw
        assert m is not None
        m.peer, m.peer_path, m.unix_connected = peer, path, True
        rec = self._sw_rec
        if rec is not None:
            from .tcplog import TcpFlow

            m.peer_logs = None  # decided at the first receive: the acceptor may not be the listener's creator
            m.flow = TcpFlow(m.local[:2], peer[:2])  # type: ignore[index]
            rec.write(m.flow.handshake("local"))
        self._arm_timed_cut()

    def _log_failed_connect(self, peer: tuple) -> None:
        rec = self._sw_rec
        m = self._sw
        if rec is None or m is None or m.local is None:
            return
        from .tcplog import TcpFlow

        syn = TcpFlow(m.local[:2], peer[:2]).handshake("local")[0]
        rec.write([syn])
        rec.icmp_unreachable(syn, m.family)

    def _peer_logs(self) -> bool:
        """Does the process at the other end log its own sends? (recorder.py)

        A client learns it lazily: SO_PEERCRED names the process that called listen(), which need
        not be the one that accepted (a listener passed to a worker), so the acceptor leaves its
        pid in .wirecheck/accepted/<client name> and the client reads it at its first receive.
        """
        m = self._sw
        assert m is not None
        if m.peer_logs is None:
            pid = _acceptor_of(m)
            m.peer_pid = pid if pid is not None else self._peer_pid()
            m.peer_logs = bool(self._sw_rec and self._sw_rec.peer_logs(m.peer_pid))
        return bool(m.peer_logs)

    def _peer_pid(self) -> int | None:
        try:
            cred = _orig_socket.getsockopt(self, _SOL_SOCKET, _socket_mod.SO_PEERCRED, _UCRED.size)
            return _UCRED.unpack(cred)[0] or None
        except OSError:
            return None

    def _connect_dgram(self, address: Any) -> None:
        m = self._sw
        assert m is not None
        path, peer = self._remote(address, "connect")
        self._autobind()
        m.peer, m.peer_path, m.unix_connected = peer, path, False
        try:
            _orig_socket.connect(self, path)
            m.unix_connected = True
        except OSError:
            pass  # deferred: the error surfaces on the first send, as with cwrap

    def accept(self) -> tuple[Any, Any]:
        if self._sw is None:
            return super().accept()
        m = self._sw
        if not m.listening:
            raise _oserror(errno.EINVAL)
        fd, unix_addr = self._io(lambda: self._accept(), _POLLIN)  # type: ignore[attr-defined]
        parsed = parse_socket_name(unix_addr) if isinstance(unix_addr, str) and unix_addr else None
        if parsed is None:
            # cwrap cannot name an unbound client either; it fails accept() and the client sees a reset.
            os.close(fd)
            raise _oserror(errno.EINVAL, "connecting unix socket has no socket_wrapper name")
        peer = sockaddr(m.family, self._net.iface_address(parsed.family, parsed.iface), parsed.port)
        child = WrappedSocket.__new__(WrappedSocket)
        child._sw_closed = False
        _orig_socket.__init__(child, AF_UNIX, m.sotype, 0, fd)
        local = m.local
        if local is not None and self._net.is_wildcard(m.family, local[0]):
            local = sockaddr(m.family, self._net.iface_address(m.family, m.local_iface), local[1])
        cm = SocketMeta(m.family, m.sotype, m.proto, m.socket_dir, local=local, local_iface=m.local_iface,
                        peer=peer, peer_path=unix_addr, unix_connected=True, accepted=True,
                        bound_path=m.bound_path)  # the listener's name: never unlinked by a child
        cm.options = {k: v for k, v in m.options.items() if k[0] != _SOL_SOCKET}
        child._emulate(self._sw_cfg, cm)
        child._set_timeout(_socket_mod.getdefaulttimeout())  # as CPython: the default, not the listener's
        if m.sotype == SOCK_STREAM:
            child._set_buffers()
        rec = child._sw_rec
        if rec is not None:
            from .tcplog import TcpFlow

            cm.peer_pid = child._peer_pid()
            cm.peer_logs = rec.peer_logs(cm.peer_pid)
            if m.shared:
                # The client's SO_PEERCRED names whoever called listen(): tell it who accepted.
                _note_acceptor(cm)
            cm.flow = TcpFlow(local[:2], peer[:2])  # type: ignore[index]
            if cm.peer_logs:
                cm.flow.advance("in", 1)  # the client logged SYN, SYN/ACK, ACK: count the SYNs only
                cm.flow.advance("out", 1)
            else:
                with rec.locked():
                    rec.write(cm.flow.handshake("remote"))
        child._arm_timed_cut()
        return child, peer

    # -- stream data ----------------------------------------------------------------------------
    def _stream_check_send(self) -> None:
        m = self._sw
        assert m is not None
        if not m.unix_connected:
            raise _oserror(errno.EPIPE if m.fin_sent else errno.ENOTCONN)
        if m.reset or m.cut == "rst":
            raise _oserror(errno.ECONNRESET)
        if m.fin_sent:
            raise _oserror(errno.EPIPE)

    def _impairer(self, direction: str, peer: tuple | None = None) -> Any:
        """This flow's impairer in a direction, or None (cheap when nothing is configured).

        Keyed by the addresses the application sees, so a NAT rebinding does not start a new flow.
        """
        m = self._sw
        assert m is not None
        peer = peer or m.peer
        if m.local is None or peer is None or impair.current() is None:
            return None
        proto = "tcp" if m.sotype == SOCK_STREAM else "udp"
        local = _stable(proto, m.local[:2]) if m.autobound else m.local[:2]
        remote = peer[:2]
        if (m.accepted or m.peer is None) and addressing.AUTOBIND_FIRST <= remote[1] <= addressing.AUTOBIND_LAST + 1023:
            remote = _stable(proto, remote)
        return impair.impairer_for(proto, local, remote, direction)

    def _plain_stream(self, m: SocketMeta) -> bool:
        """Nothing to log, impair or refuse: the fast paths may go straight to the kernel."""
        return (m.sotype == SOCK_STREAM and self._sw_rec is None and m.unix_connected and not m.fin_sent
                and not m.reset and m.cut is None and m.shaper is None and not m.listening
                and impair.current() is None)

    def send(self, data: Any, flags: int = 0) -> int:
        m = self._sw
        if m is None:
            return super().send(data, flags)
        if self._plain_stream(m):
            if self._sw_timeout is None:
                try:
                    return _orig_send(self, data, flags)  # blocks in the kernel
                except BlockingIOError:
                    pass  # a dup of this socket made the fd non-blocking: poll below
            else:
                try:
                    return _orig_send(self, data, flags | _MSG_DONTWAIT)
                except BlockingIOError:
                    if self._sw_timeout == 0.0 or flags & _MSG_DONTWAIT:
                        raise
            return self._io(lambda: _orig_send(self, data, flags | _MSG_DONTWAIT), _POLLOUT, flags)
        if m.sotype == SOCK_DGRAM:
            if m.peer is None:
                raise _oserror(errno.EDESTADDRREQ)
            return self._sendto_dgram(data, flags, m.peer_path, m.peer)  # type: ignore[arg-type]
        self._stream_check_send()
        view = data if isinstance(data, bytes) else memoryview(data).cast("B")
        if m.shaper is not None or m.cut is not None:
            return self._send_shaped(view, flags, self._impairer("out"))
        imp = self._impairer("out")
        if imp is not None:
            return self._send_shaped(view, flags, imp)
        rec = self._sw_rec
        if rec is None:
            return self._io(lambda: _orig_socket.send(self, view, flags | _MSG_DONTWAIT), _POLLOUT, flags)

        def attempt() -> int:
            with rec.locked():
                n = _orig_socket.send(self, view, flags | _MSG_DONTWAIT)
                if m.flow is not None and n:
                    rec.write(m.flow.data("out", view[:n]))
                return n

        return self._io(attempt, _POLLOUT, flags)

    def _push(self, view: memoryview) -> int:
        """Send what the socket takes now, log it; 0 when full. (The shaper's way out.)"""
        m = self._sw
        assert m is not None
        rec = self._sw_rec
        try:
            if rec is None:
                return _orig_socket.send(self, view, _MSG_DONTWAIT)
            with rec.locked():
                n = _orig_socket.send(self, view, _MSG_DONTWAIT)
                if m.flow is not None and n:
                    rec.write(m.flow.data("out", view[:n]))
                return n
        except BlockingIOError:
            return 0

    def _send_shaped(self, view: Any, flags: int, imp: Any) -> int:
        """send() on an impaired connection: through the shaper's queue (stream_shaper.py)."""
        from .impair import StreamFate
        from .stream_shaper import StreamShaper

        m = self._sw
        assert m is not None
        if m.cut == "blackhole":
            return len(view)
        if m.cut == "rst" or m.reset:
            raise _oserror(errno.ECONNRESET)
        if m.shaper is None:
            m.shaper = StreamShaper(self._push, self._cut)
        shaper = m.shaper
        if shaper.failed is not None:
            raise shaper.failed
        if shaper.room() == 0:
            if self._sw_timeout == 0.0 or flags & _MSG_DONTWAIT:
                raise _oserror(errno.EAGAIN)
            if not shaper.wait_for_room(self._deadline()):
                raise TimeoutError("timed out")
        chunk = view[: shaper.room()]
        now = time.monotonic()
        fate = imp.on_send(now, len(chunk)) if imp is not None else StreamFate(len(chunk))
        if fate.allowed == 0 and fate.cut is not None and m.cut is not None:
            if m.cut == "rst":
                raise _oserror(errno.ECONNRESET)
            return len(chunk)
        shaper.enqueue(now + fate.delay, bytes(chunk[: fate.allowed]), fate.cut)
        return len(chunk)

    def _arm_timed_cut(self) -> None:
        """A cut at a time must happen even on an idle connection: a timer carries it out."""
        imp = self._impairer("out")
        deadline = getattr(imp, "cut_deadline", None)
        if deadline is None:
            return

        def fire() -> None:
            m = self._sw
            if m is None or m.closed or m.cut is not None:
                return
            kind = imp.cut_pending(time.monotonic())
            if kind is not None:
                from .stream_shaper import StreamShaper

                if m.shaper is None:
                    m.shaper = StreamShaper(self._push, self._cut)
                m.shaper.enqueue(time.monotonic(), None, kind)

        _schedule(deadline, fire)

    def _cut(self, how: str) -> None:
        """Cut the connection: "rst" resets both ends, "blackhole" silently stops all traffic."""
        m = self._sw
        assert m is not None
        if m.cut is not None:
            return
        m.cut = how
        if how == "rst":
            rec = self._sw_rec
            if rec is not None and m.flow is not None:
                with rec.locked():
                    rec.write(m.flow.rst("out"))
            _write_reset_marker(m)
            try:
                _orig_socket.shutdown(self, _socket_mod.SHUT_RDWR)
            except OSError:
                pass
            m.reset = True

    def sendall(self, data: Any, flags: int = 0) -> None:
        if self._sw is None:
            return super().sendall(data, flags)
        view = memoryview(data).cast("B")
        deadline = self._deadline()
        saved = self._sw_timeout
        try:
            while len(view):
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError("timed out")
                    self._sw_timeout = remaining if saved != 0.0 else 0.0
                n = self.send(view, flags)
                view = view[n:]
        finally:
            self._sw_timeout = saved

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        if self._sw is None:
            return super().sendfile(file, offset, count)
        return self._sendfile_use_send(file, offset, count)  # type: ignore[attr-defined]

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        m = self._sw
        if m is None:
            return super().recv(bufsize, flags)
        if self._plain_stream(m):
            try:
                data = _orig_recv(self, bufsize, flags if self._sw_timeout is None else flags | _MSG_DONTWAIT)
                if data or not bufsize:
                    return data  # EOF and errors take the full path below
            except BlockingIOError:
                if self._sw_timeout == 0.0 or flags & _MSG_DONTWAIT:
                    raise
        if self._sw.sotype == SOCK_DGRAM:
            return self._recv_dgram(bufsize, flags)[0]
        buf = bytearray(bufsize)
        n = self._recv_stream_into(memoryview(buf), bufsize, flags)
        return bytes(buf[:n])

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        m = self._sw
        if m is None:
            return super().recv_into(buffer, nbytes, flags)
        if self._plain_stream(m):
            try:
                n = _orig_recv_into(self, buffer, nbytes,
                                    flags if self._sw_timeout is None else flags | _MSG_DONTWAIT)
                if n:
                    return n  # EOF and errors take the full path below
            except BlockingIOError:
                if self._sw_timeout == 0.0 or flags & _MSG_DONTWAIT:
                    raise
        view = memoryview(buffer).cast("B")
        nbytes = nbytes or len(view)
        if self._sw.sotype == SOCK_DGRAM:
            data, _ = self._recv_dgram(nbytes, flags)
            view[: len(data)] = data
            return len(data)
        return self._recv_stream_into(view, nbytes, flags)

    def _recv_stream_into(self, view: memoryview, nbytes: int, flags: int) -> int:
        m = self._sw
        assert m is not None
        if m.listening or (not m.unix_connected and not m.fin_seen):
            raise _oserror(errno.ENOTCONN)
        if m.cut == "rst":
            raise _oserror(errno.ECONNRESET)
        rec = self._sw_rec

        def attempt() -> int:
            if m.cut == "blackhole":
                # Bytes that reach a blackholed connection are swallowed; the reader just waits.
                _orig_socket.recv(self, 65536, _MSG_DONTWAIT)
                raise BlockingIOError(errno.EAGAIN, "blackholed")
            try:
                return _orig_socket.recv_into(self, view, nbytes, flags | _MSG_DONTWAIT)
            except ConnectionResetError:
                self._on_reset_received()
                raise

        n = self._io(attempt, _POLLIN, flags)
        if flags & _MSG_PEEK:
            return n
        if n == 0 and nbytes:
            self._on_eof()
            return 0
        imp = self._impairer("in")
        if imp is not None:
            fate = imp.on_send(time.monotonic(), n)
            if fate.cut is not None:
                n = fate.allowed
                self._cut(fate.cut)
                if n == 0:
                    if fate.cut == "rst":
                        raise _oserror(errno.ECONNRESET)
                    return self._recv_stream_into(view, nbytes, flags)
        elif rec is not None and m.flow is not None:
            if self._peer_logs():
                m.flow.note_received(n)
            else:
                with rec.locked():
                    rec.write(m.flow.data("in", view[:n]))
        return n

    def _on_eof(self) -> None:
        m = self._sw
        assert m is not None
        if _reset_marker_exists(m):
            m.reset = True
            if self._sw_rec is not None and m.flow is not None and not self._peer_logs():
                with self._sw_rec.locked():
                    self._sw_rec.write(m.flow.rst("in"))
            raise _oserror(errno.ECONNRESET)
        if m.fin_seen:
            return
        m.fin_seen = True
        rec = self._sw_rec
        if rec is not None and m.flow is not None:
            if self._peer_logs():
                m.flow.note_received(1)
            else:
                with rec.locked():
                    rec.write(m.flow.fin("in", acked=True))

    def _on_reset_received(self) -> None:
        m = self._sw
        assert m is not None
        m.reset = True
        rec = self._sw_rec
        if rec is not None and m.flow is not None and not self._peer_logs():
            with rec.locked():
                rec.write(m.flow.rst("in"))

    def _inq(self) -> int:
        import fcntl

        try:
            buf = fcntl.ioctl(self.fileno(), _SIOCINQ, b"\0\0\0\0")
            return int.from_bytes(buf, "little")
        except OSError:
            return 0

    def _peer_shut(self) -> bool:
        p = select.poll()
        p.register(self.fileno(), _POLLRDHUP)
        return any(ev & (_POLLRDHUP | select.POLLHUP) for _, ev in p.poll(0))

    def _log_fin_out(self) -> None:
        """Our FIN (and the peer kernel's ACK of it), with the ack number the peer kernel would use."""
        m = self._sw
        assert m is not None
        rec = self._sw_rec
        if rec is None or m.flow is None or m.fin_sent:
            return
        unread = self._inq()
        if unread:
            m.flow.note_received(unread)
        if not m.fin_seen and self._peer_shut():
            m.fin_seen = True
            m.flow.note_received(1)
        with rec.locked():
            rec.write(m.flow.rst("out") if unread else m.flow.fin("out", acked=True))

    def shutdown(self, how: int) -> None:
        if self._sw is None:
            return super().shutdown(how)
        m = self._sw
        if not m.unix_connected:
            raise _oserror(errno.ENOTCONN)
        if how in (_socket_mod.SHUT_WR, _socket_mod.SHUT_RDWR) and m.sotype == SOCK_STREAM and not m.fin_sent:
            self._log_fin_out()
            m.fin_sent = True
        _orig_socket.shutdown(self, how)

    # -- datagrams ----------------------------------------------------------------------------
    def sendto(self, data: Any, flags_or_addr: Any, addr: Any = None) -> int:  # type: ignore[override]
        if self._sw is None:
            if addr is None:
                return super().sendto(data, flags_or_addr)
            return super().sendto(data, flags_or_addr, addr)
        flags, address = (0, flags_or_addr) if addr is None else (flags_or_addr, addr)
        m = self._sw
        if m.sotype == SOCK_STREAM:
            if not m.unix_connected:
                raise _oserror(errno.ENOTCONN if address is not None else errno.EPIPE)
            return self.send(data, flags)
        if m.peer is not None:
            # A connected UDP socket ignores the destination, as cwrap does.
            return self._sendto_dgram(data, flags, m.peer_path, m.peer)  # type: ignore[arg-type]
        host = address[0] if isinstance(address, tuple) and address else None
        if m.family == AF_INET and host is not None and self._net.is_broadcast(AF_INET, str(host)):
            return self._broadcast(data, flags, address)
        path, peer = self._remote(address, "sendto")
        return self._sendto_dgram(data, flags, path, peer)

    def _broadcast(self, data: Any, flags: int, address: tuple) -> int:
        m = self._sw
        assert m is not None
        if not m.options.get((_SOL_SOCKET, _socket_mod.SO_BROADCAST)):
            raise _oserror(errno.EACCES, "SO_BROADCAST is not set")
        self._autobind()
        payload = bytes(data)
        port = address[1]
        for iface in range(1, addressing.MAX_IFACE + 1):
            path = self._path(AF_INET, iface, port)
            if os.path.exists(path):
                try:
                    _orig_socket.sendto(self, payload, flags | _MSG_DONTWAIT, path)
                except OSError:
                    pass
        if self._sw_rec is not None:
            with self._sw_rec.locked():
                self._sw_rec.udp(m.local, (self._net.ipv4_broadcast, port), payload)  # type: ignore[arg-type]
        return len(payload)

    def _sendto_dgram(self, data: Any, flags: int, path: str, peer: tuple) -> int:
        m = self._sw
        assert m is not None
        self._autobind()
        payload = data if isinstance(data, bytes) else bytes(memoryview(data).cast("B"))
        imp = self._impairer("out", peer)
        if imp is None:
            self._deliver_dgram(payload, flags, path, peer, blocking=True)
            return len(payload)
        now = time.monotonic()
        fate = imp.decide(now, payload)
        if getattr(fate, "rebind", None):
            self._rebind(fate.rebind)
        for d in fate.deliveries:
            if d.at <= now:
                self._deliver_dgram(d.payload, flags, path, peer, blocking=True)
            else:
                _schedule(d.at, functools.partial(self._deliver_dgram, d.payload, flags, path, peer, blocking=False))
        return len(payload)

    def _deliver_dgram(self, payload: bytes, flags: int, path: str, peer: tuple, *, blocking: bool) -> None:
        m = self._sw
        assert m is not None
        if m.closed:
            return
        rec = self._sw_rec
        connected = m.peer is not None

        def attempt() -> None:
            try:
                if connected:
                    if not m.unix_connected:
                        _orig_socket.connect(self, path)
                        m.unix_connected = True
                    _orig_socket.send(self, payload, flags | _MSG_DONTWAIT)
                else:
                    _orig_socket.sendto(self, payload, flags | _MSG_DONTWAIT, path)
            except FileNotFoundError:
                if rec is not None:
                    from .packets import build_udp

                    pkt = build_udp(m.local[:2], peer[:2], payload)  # type: ignore[index]
                    rec.write([pkt])
                    rec.icmp_unreachable(pkt, m.family)
                raise _oserror(errno.EHOSTUNREACH) from None
            except OSError as e:
                if e.errno == errno.EPROTOTYPE:
                    raise _oserror(errno.EHOSTUNREACH, "not a datagram socket at that address") from None
                raise
            if rec is not None:
                rec.udp(m.local, peer, payload)  # type: ignore[arg-type]

        def locked_attempt() -> None:
            if rec is None:
                return attempt()
            with rec.locked():
                return attempt()

        if not blocking:
            try:
                locked_attempt()
            except OSError:
                pass  # a delayed datagram that finds no room or no receiver is lost, as on a wire
            return
        # A unix datagram receiver holds only net.unix.max_dgram_qlen (10) datagrams. Real UDP
        # never blocks the sender: it drops at the receiver. We wait a little for room (so a
        # reader that is merely slow loses nothing), then drop the datagram as UDP would.
        # A connected socket in non-blocking mode gets EAGAIN: poll() does see its peer's queue.
        nonblocking = self._sw_timeout == 0.0 or bool(flags & _MSG_DONTWAIT)
        if nonblocking and connected:
            return locked_attempt()
        patience = _DGRAM_PATIENCE_NONBLOCKING if nonblocking else _DGRAM_PATIENCE
        if self._sw_timeout:
            patience = min(patience, self._sw_timeout)
        deadline = time.monotonic() + patience
        delay = 0.0001
        spins = 0
        while True:
            try:
                return locked_attempt()
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    m.receiver_drops += 1
                    return None
                if spins < 200:
                    # The reader usually makes room within microseconds: yield the CPU first;
                    # sleeping at once leaves reader and writer idle in turn.
                    spins += 1
                    os.sched_yield()
                    continue
                time.sleep(delay)
                delay = min(delay * 2, 0.005)

    def _rebind(self, change: str) -> None:
        """NAT rebinding: the peer starts seeing this socket from a new port and/or address.

        The unix name is what the peer sees, so a new unix socket bound to the new name replaces
        the old one under the same fd number (dup2); getsockname() keeps the old address, as an
        application behind a NAT would see it.
        """
        m = self._sw
        assert m is not None
        old = m.bound_path
        iface = m.local_iface
        if change in ("addr", "both"):
            iface = iface % addressing.MAX_IFACE + 1
        fresh = _orig_socket(AF_UNIX, m.sotype | _socket_mod.SOCK_NONBLOCK, 0)
        for port in _autobind.candidates():
            if change == "addr":
                port = parse_socket_name(old).port if old else port  # type: ignore[union-attr]
            path = self._path(m.family, iface, port)
            if os.path.lexists(path):
                if change == "addr":
                    break
                continue
            try:
                fresh.bind(path)
            except OSError:
                continue
            _autobind.next = port + 1
            if self._sw_rec is not None:
                fresh.setsockopt(_SOL_SOCKET, _socket_mod.SO_PASSCRED, 1)
            if m.unix_connected and m.peer_path:
                try:
                    fresh.connect(m.peer_path)
                except OSError:
                    m.unix_connected = False
            metamod.forget(m)
            os.dup2(fresh.fileno(), self.fileno())
            fresh.close()
            m.bound_path = path
            m.bound_ino = os.stat(path).st_ino
            metamod.register(self.fileno(), m)
            if old:
                try:
                    os.unlink(old)
                except OSError:
                    pass
            return
        fresh.close()

    def _recv_dgram(self, bufsize: int, flags: int) -> tuple[bytes, Any]:
        m = self._sw
        assert m is not None
        if m.bound_path is None:
            self._autobind()
        if m.inbox and not flags & _MSG_PEEK:
            data, src = m.inbox.popleft()
            return data[:bufsize], src
        rec = self._sw_rec
        anc = _socket_mod.CMSG_SPACE(_UCRED.size) if rec is not None else 0
        while True:
            data, ancdata, _flags, src_path = self._io(
                lambda: _orig_socket.recvmsg(self, max(bufsize, 1), anc, flags | _MSG_DONTWAIT), _POLLIN, flags)
            data = data[:bufsize] if bufsize else b""
            src = self._addr_of(src_path)
            if flags & _MSG_PEEK:
                return data, src
            imp = self._impairer("in", src)
            if imp is not None:
                # Incoming impairments drop, corrupt and duplicate; delays belong on the sender's
                # side (the README says why): a held datagram could not make the fd readable.
                fate = imp.decide(time.monotonic(), data)
                if not fate.deliveries:
                    continue
                data = fate.deliveries[0].payload
                m.inbox.extend((d.payload, src) for d in fate.deliveries[1:])
            if rec is not None and not rec.peer_logs(_cred_pid(ancdata)):
                with rec.locked():
                    rec.udp(src, m.local, data)  # type: ignore[arg-type]
            return data, src

    def _addr_of(self, unix_path: Any) -> tuple:
        m = self._sw
        assert m is not None
        parsed = parse_socket_name(unix_path) if isinstance(unix_path, str) and unix_path else None
        if parsed is None:
            return sockaddr(m.family, "0.0.0.0" if m.family == AF_INET else "::", 0)
        return sockaddr(m.family, self._net.iface_address(parsed.family, parsed.iface), parsed.port)

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Any]:
        if self._sw is None:
            return super().recvfrom(bufsize, flags)
        if self._sw.sotype == SOCK_STREAM:
            return self.recv(bufsize, flags), None
        return self._recv_dgram(bufsize, flags)

    def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> tuple[int, Any]:
        if self._sw is None:
            return super().recvfrom_into(buffer, nbytes, flags)
        view = memoryview(buffer).cast("B")
        nbytes = nbytes or len(view)
        if self._sw.sotype == SOCK_STREAM:
            return self.recv_into(view, nbytes, flags), None
        data, src = self._recv_dgram(nbytes, flags)
        view[: len(data)] = data
        return len(data), src

    def sendmsg(self, buffers: Any, ancdata: Any = (), flags: int = 0, address: Any = None) -> int:  # type: ignore[override]
        if self._sw is None:
            for level, kind, payload in ancdata:
                if level == _SOL_SOCKET and kind == _socket_mod.SCM_RIGHTS:
                    _export_fds(payload)
            if address is None:
                return super().sendmsg(buffers, ancdata, flags)
            return super().sendmsg(buffers, ancdata, flags, address)
        # SCM_RIGHTS/SCM_CREDENTIALS on an inet socket mean nothing; cwrap drops them silently.
        data = b"".join(bytes(memoryview(b).cast("B")) for b in buffers)
        if address is not None and self._sw.sotype == SOCK_DGRAM:
            return self.sendto(data, flags, address)
        return self.send(data, flags)

    def recvmsg(self, bufsize: int, ancbufsize: int = 0, flags: int = 0) -> tuple[bytes, list, int, Any]:
        if self._sw is None:
            return super().recvmsg(bufsize, ancbufsize, flags)
        if self._sw.sotype == SOCK_STREAM:
            data = self.recv(bufsize, flags)
            return data, [], 0, None
        data, src = self._recv_dgram(bufsize, flags)
        return data, [], 0, src

    def recvmsg_into(self, buffers: Any, ancbufsize: int = 0, flags: int = 0) -> tuple[int, list, int, Any]:
        if self._sw is None:
            return super().recvmsg_into(buffers, ancbufsize, flags)
        views = [memoryview(b).cast("B") for b in buffers]
        total = sum(len(v) for v in views)
        data, _anc, msg_flags, src = self.recvmsg(total, ancbufsize, flags)
        pos = 0
        for v in views:
            chunk = data[pos: pos + len(v)]
            v[: len(chunk)] = chunk
            pos += len(chunk)
        return len(data), [], msg_flags, src

    # -- lifetime -----------------------------------------------------------------------------
    def dup(self) -> WrappedSocket:
        if self._sw is None:
            return super().dup()  # type: ignore[return-value]
        fd = os.dup(self.fileno())
        sock = WrappedSocket(self.family, self.type, self.proto, fileno=fd)
        sock.settimeout(self.gettimeout())
        return sock

    def detach(self) -> int:
        if self._sw is not None and not self._sw_closed:
            self._sw_closed = True
            self._sw.refs -= 1
            self._sw.shared = True
        return super().detach()

    def _real_close(self, _ss: Any = _socket.socket) -> None:  # type: ignore[override]
        m = self._sw
        if m is not None and not self._sw_closed:
            self._sw_closed = True
            try:
                self._last_close_cleanup(m)
            except Exception:  # noqa: BLE001 - closing must never fail on bookkeeping
                pass
        _ss.close(self)

    def _last_close_cleanup(self, m: SocketMeta) -> None:
        m.refs -= 1
        if m.refs > 0:
            return
        try:
            ino = metamod.inode_of(self.fileno())
        except OSError:
            ino = None
        if m.passed or (m.shared and ino is not None and metamod.others_hold(ino)):
            # Still alive elsewhere (an fd in flight in SCM_RIGHTS is held by no process yet, so a
            # passed socket never counts as closed here, as with cwrap).
            metamod.forget(m)
            return
        if m.shaper is not None:
            m.shaper.drain()
        m.closed = True
        if m.sotype == SOCK_STREAM and m.unix_connected and not m.fin_sent and not m.reset and m.cut is None:
            self._log_fin_out()
            m.fin_sent = True
        if m.autobound and m.accepted is False and m.peer_path:
            _remove_reset_marker(m)
            _forget_acceptor(m)
        if m.bound_path and not m.accepted and m.owner_pid == os.getpid():
            try:
                if m.bound_ino is None or os.stat(m.bound_path).st_ino == m.bound_ino:
                    os.unlink(m.bound_path)
            except OSError:
                pass
        metamod.forget(m)

    def __del__(self) -> None:
        # Replaces _socket.socket's finalizer: a socket dropped without close() still releases
        # its socket file (cwrap does the same from a library destructor).
        if not getattr(self, "_closed", True):
            try:
                self.close()
            except OSError:
                pass

    def __repr__(self) -> str:
        if self._sw is None:
            return super().__repr__()
        state = "closed" if self._sw_closed else f"fd={self.fileno()}"
        return (f"<wrappers.WrappedSocket {state}, family={self.family!r}, type={self.type!r}, "
                f"laddr={self._sw.local}, raddr={self._sw.peer}>")


# -- helpers shared with the rest of the package -------------------------------------------------

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


def _export_fds(payload: bytes) -> None:
    import array

    fds = array.array("i")
    raw = bytes(memoryview(payload).cast("B"))
    fds.frombytes(raw[: len(raw) - len(raw) % fds.itemsize])
    for fd in fds:
        try:
            metamod.export_for_passing(fd)
        except OSError:
            pass


def _note_acceptor(m: SocketMeta) -> None:
    """Leave this (accepting) process's pid where the client will look for it."""
    if m.peer_path:
        path = os.path.join(private_dir(m.socket_dir, "accepted"), os.path.basename(m.peer_path))
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(str(os.getpid()))
        os.replace(tmp, path)


def _acceptor_of(m: SocketMeta) -> int | None:
    if not m.bound_path:
        return None
    try:
        with open(os.path.join(m.socket_dir, ".wirecheck", "accepted", os.path.basename(m.bound_path))) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def _forget_acceptor(m: SocketMeta) -> None:
    if m.bound_path:
        try:
            os.unlink(os.path.join(m.socket_dir, ".wirecheck", "accepted", os.path.basename(m.bound_path)))
        except OSError:
            pass


def _reset_key(m: SocketMeta) -> str | None:
    """A name both ends of one connection compute: client's unix name + listener's unix name."""
    if not m.peer_path or not m.bound_path:
        return None
    a, b = os.path.basename(m.bound_path), os.path.basename(m.peer_path)
    client, server = (b, a) if m.accepted else (a, b)
    return f"{client}-{server}"


def _write_reset_marker(m: SocketMeta) -> None:
    key = _reset_key(m)
    if key:
        with open(os.path.join(private_dir(m.socket_dir, "reset"), key), "w"):
            pass


def _reset_marker_exists(m: SocketMeta) -> bool:
    key = _reset_key(m)
    return bool(key) and os.path.exists(os.path.join(m.socket_dir, ".wirecheck", "reset", key))  # type: ignore[arg-type]


def _remove_reset_marker(m: SocketMeta) -> None:
    key = _reset_key(m)
    if key:
        try:
            os.unlink(os.path.join(m.socket_dir, ".wirecheck", "reset", key))
        except OSError:
            pass


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


_protocol_hooks: dict[int, Callable[..., Any]] = {}


def register_protocol(proto: int, factory: Callable[..., Any]) -> None:
    """Let a module (wrappers.quic, wrappers.smbdirect) own socket(AF_INET*, type, proto)."""
    _protocol_hooks[proto] = factory


# -- activation state ----------------------------------------------------------------------------

_forced_config: Config | None = None
_env_cache: tuple[tuple[str, str, str, str], Config | None] | None = None


def _active_config() -> Config | None:
    """The configuration new sockets use: the one activate() gave, else the environment's."""
    global _env_cache
    if _forced_config is not None:
        return _forced_config
    env = os.environ
    key = (env.get("SOCKET_WRAPPER_DIR", ""), env.get("SOCKET_WRAPPER_IPV4_NETWORK", ""),
           env.get("SOCKET_WRAPPER_DEFAULT_IFACE", ""), env.get("SOCKET_WRAPPER_PCAP_FILE", ""))
    if _env_cache is not None and _env_cache[0] == key:
        return _env_cache[1]
    cfg = from_environ()
    _env_cache = (key, cfg)
    return cfg


def set_forced_config(cfg: Config | None) -> None:
    global _forced_config
    _forced_config = cfg
