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
import os
import select
import socket as _socket_mod
import time
from collections.abc import Callable
from typing import Any

from . import addressing, dualstack, impair, markers
from . import meta as metamod
from .addressing import AddressError, Network, sockaddr, socket_name
from .config import Config, from_environ
from .dgram import DatagramMixin
from .dualsock import DualStackMixin
from .meta import SocketMeta
from .recorder import Recorder, recorder_for
from .sockbase import (
    _IPPROTO_TCP,
    _IPPROTO_UDP,
    _MSG_DONTWAIT,
    _MSG_PEEK,
    _POLLOUT,
    _SOL_SOCKET,
    _TYPE_MASK,
    _UNIX_BUF,
    AF_INET,
    AF_INET6,
    AF_UNIX,
    SOCK_DGRAM,
    SOCK_STREAM,
    _autobind,
    _domain_of,
    _orig_recv,
    _orig_recv_into,
    _orig_send,
    _orig_socket,
    _oserror,
    _remote_cache,
    _stable,
)
from .sockdir import current_pid, is_in_use
from .sockopts import OptionsMixin
from .stream import StreamMixin


class WrappedSocket(StreamMixin, DatagramMixin, DualStackMixin, OptionsMixin, _socket_mod.socket):
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
        if base_type not in _ALLOWED or proto not in _ALLOWED[base_type]:
            raise _oserror(errno.EPROTONOSUPPORT, "socket_wrapper emulates TCP and UDP only")
        _orig_socket.__init__(self, AF_UNIX, type & ~_socket_mod.SOCK_NONBLOCK, 0)
        meta = SocketMeta(family, base_type, proto, cfg.socket_dir)
        if family == AF_INET6:
            meta.v6only = dualstack.default_v6only()  # the kernel copies the sysctl at socket()
        else:
            meta.reach = _V4_ONLY
        self._emulate(cfg, meta, fresh=True)
        self._set_timeout(0.0 if type & _socket_mod.SOCK_NONBLOCK else _socket_mod.getdefaulttimeout(), fresh=True)
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
            meta.flow = TcpFlow(*self._wire(meta.peer))
            meta.flow.local_seq, meta.flow.remote_seq = meta.passed_seq or (1, 1)
            if meta.accepted:
                meta.peer_logs = self._sw_rec.peer_logs(meta.peer_pid)

    def _emulate(self, cfg: Config, meta: SocketMeta, fresh: bool = False) -> None:
        """Make this object the emulated socket ``meta`` describes; every caller then sets the fd's
        mode (_set_timeout). ``fresh``: a new socket (socket(), accept()), the only object on its
        descriptor, registered without looking up its inode until somebody asks (meta.register_fd)."""
        self._sw = meta
        self._sw_cfg = cfg
        self._sw_rec: Recorder | None = recorder_for(cfg.pcap_file, cfg.socket_dir)
        meta.refs += 1
        if fresh:
            metamod.register_fd(self.fileno(), meta)
        else:
            metamod.register(self.fileno(), meta)

    def _set_buffers(self) -> None:
        try:
            _orig_socket.setsockopt(self, _SOL_SOCKET, _SO_SNDBUF, _UNIX_BUF)
        except OSError:
            pass
        try:
            _orig_socket.setsockopt(self, _SOL_SOCKET, _SO_RCVBUF, _UNIX_BUF)
        except OSError:
            pass

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

    def _set_timeout(self, value: float | None, fresh: bool = False) -> None:
        """Keep the application's timeout; make the fd blocking only for a blocking socket.

        A blocking socket's fast path then sleeps in the kernel (fewer, fuller send() calls);
        a timeout is emulated over a non-blocking fd with poll(), because CPython would poll
        before each call otherwise. Paths that must not block pass MSG_DONTWAIT explicitly.

        ``fresh``: the fd was just made by socket() or accept() and nothing else holds it, so
        its mode is the one CPython's own timeout says (no dup can have changed O_NONBLOCK):
        when that is already the one wanted, the ioctl is skipped.
        """
        self._sw_timeout = value
        mode = None if value is None else 0.0
        if not fresh or _orig_socket.gettimeout(self) != mode:
            _orig_socket.settimeout(self, mode)

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
        fam, name_host, reach = self._bind_family(host)
        try:
            iface = self._net.bind_iface(fam, m.sotype, name_host)
        except AddressError as e:
            raise _oserror(e.errno or errno.EINVAL, e.strerror or "") from None
        twin = len(reach) == 2
        if port == 0:
            for candidate in range(addressing.PORT0_FIRST, addressing.PORT0_LAST + 1):
                path = self._path(fam, iface, candidate)
                if os.path.lexists(path) or (twin and os.path.lexists(self._path(AF_INET, iface, candidate))):
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
            path = self._path(fam, iface, port)
            self._claim(path)
            if twin:
                self._claim(self._path(AF_INET, iface, port))
            self._bind_unix(path)
        if twin:
            self._link_twin(self._path(AF_INET, iface, port))
        m.reach = reach
        if self._net.is_wildcard(fam, name_host):
            report_host = host
        else:
            report_host = self._net.iface_address(fam, iface)
            if fam != m.family:
                report_host = dualstack.mapped(report_host)
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

    def _autobind(self, family: int | None = None, peer: tuple | None = None) -> None:
        """Bind an ephemeral name before a connect/sendto/listen, as the kernel does.

        An AF_INET6 socket that is not IPV6_V6ONLY names itself by the family of its first
        destination (IPv4 for a v4-mapped one). Linux's ephemeral bind is to ``::``: a listener (or
        a socket that receives first) gets the other family's name as its twin at once, a UDP
        socket when it first sends to the other family (_reach_out), so that a socket that only
        ever speaks one family leaves one file, as before (dualstack.py).
        """
        m = self._sw
        assert m is not None
        if m.bound_path is not None:
            return
        fam = family or m.family
        dual = m.family == AF_INET6 and not m.v6only
        if dual and peer is not None and dualstack.v4_of_mapped(peer[0]) is not None:
            fam = AF_INET
        twin = dual and peer is None
        iface = self._net.default_iface
        for port in _autobind.candidates():
            path = self._path(fam, iface, port)
            twin_path = self._path(dualstack.other(fam), iface, port) if twin else None
            # Without a twin, bind() itself refuses a taken name (EADDRINUSE, below): no lstat first.
            if twin_path and (os.path.lexists(path) or os.path.lexists(twin_path)):
                continue
            try:
                self._bind_unix(path)
            except OSError as e:
                if e.errno in (errno.EADDRINUSE, errno.EALREADY):
                    continue
                raise
            if twin_path:
                try:
                    m.twin_ino = dualstack.link_twin(path, twin_path)
                    m.twin_path = twin_path
                except OSError:
                    self._undo_bind()
                    continue
            _autobind.next = port + 1
            host = self._net.iface_address(fam, iface)
            if fam != m.family:
                host = dualstack.mapped(host)
            m.local = sockaddr(m.family, host, port)
            m.local_iface = iface
            m.autobound = True
            m.reach = _DUAL if twin else (_V4_ONLY if fam == AF_INET else _V6_ONLY)
            return
        raise _oserror(errno.ENFILE, "no free ephemeral port")

    def _remote(self, address: Any, what: str) -> tuple[str, tuple]:
        """The unix path and the emulated tuple of a destination, or the errno cwrap gives."""
        m = self._sw
        assert m is not None
        cfg = self._sw_cfg
        # Keyed by the configuration's identity (hashing the frozen dataclass costs more than the
        # rest of the look-up); the entry holds the configuration, so its id cannot be reused
        # while the entry lives.
        key = (id(cfg), m.family, m.sotype, m.v6only, m.reach, address) if type(address) is tuple else None
        hit = _remote_cache.get(key) if key is not None else None
        if hit is not None and hit[2] is cfg:
            return hit[0], hit[1]
        result = self._remote_uncached(address, what)
        if key is not None and result[1][0] == address[0]:  # a literal address: no DNS answer to go stale
            if len(_remote_cache) >= 4096:
                _remote_cache.clear()
            _remote_cache[key] = (result[0], result[1], cfg)
        return result

    def _remote_uncached(self, address: Any, what: str) -> tuple[str, tuple]:
        m = self._sw
        assert m is not None
        host, port, full = self._parse_addr(address, what)
        if port == 0:
            raise _oserror(errno.EINVAL, "port 0")
        try:
            fam, name_host = dualstack.remote_plan(m.family, host, m.v6only,
                                                   frozenset() if m.autobound else m.reach)
        except OSError as e:
            raise _oserror(e.errno or errno.ENETUNREACH, e.strerror or "") from None
        try:
            iface = self._net.remote_iface(fam, name_host)
        except AddressError as e:
            raise _oserror(e.errno or errno.EINVAL, e.strerror or "") from None
        return self._path(fam, iface, port), sockaddr(m.family, host, port) if m.family == AF_INET else full

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

    def connect(self, address: Any) -> None:
        if self._sw is None:
            return super().connect(address)
        m = self._sw
        if m.sotype == SOCK_DGRAM:
            return self._connect_dgram(address)
        return self._connect_stream(address)

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
        return self._send_stream(data, flags)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        m = self._sw
        if m is None:
            return super().recv(bufsize, flags)
        if self._plain_stream(m):
            try:
                data = _orig_recv(self, bufsize, flags if self._sw_timeout is None else flags | _MSG_DONTWAIT)
                if data or not bufsize:
                    return data
                if not flags & _MSG_PEEK:
                    self._on_eof()  # what the full path does with the EOF, without asking again
                return data
            except BlockingIOError:
                if self._sw_timeout == 0.0 or flags & _MSG_DONTWAIT:
                    raise
        elif not flags and bufsize and self._peer_logged_stream(m):
            buf = bytearray(bufsize)
            n = self._recv_peer_logged_into(buf, bufsize)
            if n:
                return bytes(memoryview(buf)[:n])
        if m.sotype == SOCK_DGRAM:
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
                    return n
                if nbytes and not flags & _MSG_PEEK:
                    self._on_eof()  # what the full path does with the EOF, without asking again
                    return 0
                # nbytes 0 (the buffer's size) and errors take the full path below
            except BlockingIOError:
                if self._sw_timeout == 0.0 or flags & _MSG_DONTWAIT:
                    raise
        elif not flags and self._peer_logged_stream(m):
            n = self._recv_peer_logged_into(buffer, nbytes)
            if n:
                return n  # EOF, a dup's non-blocking fd and errors take the full path below
        view = memoryview(buffer).cast("B")
        nbytes = nbytes or len(view)
        if m.sotype == SOCK_DGRAM:
            data, _ = self._recv_dgram(nbytes, flags)
            view[: len(data)] = data
            return len(data)
        return self._recv_stream_into(view, nbytes, flags)

    def dup(self) -> WrappedSocket:
        if self._sw is None:
            return super().dup()  # type: ignore[return-value]
        fd = os.dup(self.fileno())
        sock = WrappedSocket(self.family, self.type, self.proto, fileno=fd)
        sock.settimeout(self.gettimeout())
        return sock

    def detach(self) -> int:
        if self._sw is not None and not self._sw_closed:
            metamod.flush_pending()  # the fd leaves us: file the socket under its inode now
            self._sw_closed = True
            self._sw.refs -= 1
            self._sw.shared = True
        return super().detach()

    def _real_close(self, _ss: Any = _socket.socket) -> None:  # type: ignore[override]
        m = self._sw
        if m is None or self._sw_closed:
            _ss.close(self)
            return
        self._sw_closed = True
        rec = self._sw_rec
        if m.refs > 1 or rec is None or m.sotype != SOCK_STREAM or not m.unix_connected:
            try:
                self._last_close_cleanup(m)
            except Exception:  # noqa: BLE001 - closing must never fail on bookkeeping
                pass
            _ss.close(self)
            return
        if m.shaper is not None:
            m.shaper.drain()  # sends (and logs) what waits in the impairment queue: before the lock
        # The last close of a logged connection in this process: deciding who logs the FIN,
        # logging it and the real close happen under one hold of the pcap lock. Another process
        # closing the same connection (the peer, or a process holding a copy of this socket) then
        # sees either all of it or none of it: see _log_fin_out_locked and _fin_owner.
        with rec.locked():
            try:
                self._last_close_cleanup(m, locked=True)
            except Exception:  # noqa: BLE001 - closing must never fail on bookkeeping
                pass
            _ss.close(self)

    def _last_close_cleanup(self, m: SocketMeta, locked: bool = False) -> None:
        m.refs -= 1
        if m.refs > 0:
            return
        if not self._fin_owner(m, locked):
            metamod.forget(m)
            return
        if m.shaper is not None and not locked:
            m.shaper.drain()
        m.closed = True
        if (locked and m.sotype == SOCK_STREAM and m.unix_connected and not m.fin_sent and not m.reset
                and m.cut is None):
            self._log_fin_out_locked(closing=True)
            m.fin_sent = True
        elif m.sotype == SOCK_STREAM and m.unix_connected:
            m.fin_sent = True
        if m.autobound and m.accepted is False and m.peer_path:
            markers.remove_reset_marker(m)
            markers.forget_acceptor(m)
        if m.bound_path and not m.accepted and m.owner_pid == current_pid():
            try:
                if m.bound_ino is None or os.stat(m.bound_path).st_ino == m.bound_ino:
                    os.unlink(m.bound_path)
            except OSError:
                pass
            dualstack.unlink_twin(m.twin_path, m.twin_ino)
        if m.twin_sender:
            dualstack.close_twin_sender(m.twin_sender)
        metamod.forget(m)

    def _fin_owner(self, m: SocketMeta, locked: bool) -> bool:
        """Is this close the one that puts the FIN on the wire (the last reference anywhere)?

        A socket that crossed fork() or SCM_RIGHTS may be held by other processes; the kernel
        sends the FIN when the last of them closes. With the pcap lock held (``locked``), every
        holder that logs decides and closes its descriptor atomically, so exactly one of them finds
        nobody else holding it. A holder that is not the last leaves its flow counters in the
        socket's sidecar (meta.note_handover), so the last one, which may be the process that
        passed the socket long ago, logs the FIN with the numbers the connection has now. A
        sender of SCM_RIGHTS whose socket is still in flight (held by no process) finds no
        handover and leaves the FIN to the receiver, as before.
        """
        if not (m.shared or m.passed):
            return True  # nobody else can hold it: no need to know its inode
        try:
            ino = metamod.inode_of(self.fileno())
        except OSError:
            return True
        if metamod.others_hold(ino):
            if locked and not m.passed and m.flow is not None:
                metamod.note_handover(m, ino)
            return False
        handover = metamod.take_handover(m.socket_dir, ino) if locked else None
        if handover is not None:
            metamod.adopt_handover(m, handover)
            return True
        return not m.passed

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


_V4_ONLY, _V6_ONLY, _DUAL = dualstack.V4_ONLY, dualstack.V6_ONLY, dualstack.DUAL
_SO_SNDBUF, _SO_RCVBUF = _socket_mod.SO_SNDBUF, _socket_mod.SO_RCVBUF
_ALLOWED: dict[int, tuple[int, int]] = {SOCK_STREAM: (0, _IPPROTO_TCP), SOCK_DGRAM: (0, _IPPROTO_UDP)}

_protocol_hooks: dict[int, Callable[..., Any]] = {}


def register_protocol(proto: int, factory: Callable[..., Any]) -> None:
    """Let a module (wrappers.quic, wrappers.smbdirect) own socket(AF_INET*, type, proto)."""
    _protocol_hooks[proto] = factory


# -- activation state ----------------------------------------------------------------------------


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


# Public names for the protocol emulations (wrappers.quic, wrappers.smbdirect), which build their
# own socket classes on the original socket type and must know whether the wrapper is active.
orig_socket = _orig_socket
active_config = _active_config
