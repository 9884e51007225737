"""The application's IPPROTO_SMBDIRECT socket (the kernel proposal's API, emulated).

    s = socket.socket(AF_INET, SOCK_STREAM, IPPROTO_SMBDIRECT)     # under wrappers.activate()
    s.connect(("127.0.0.2", 445))          # carrier connect + RNIC hello + MS-SMBD negotiate
    s.sendmsg([smb2_pdu])                  # one whole upper-layer message (fragmented below)
    pdu = s.recv(1 << 24)                  # one whole message (MSG_TRUNC if the buffer is short)

Control messages at SOL_SMBDIRECT: ``SMBDIRECT_CMSG_REMOTE_INVALIDATE`` (sendmsg, u32 token: SEND
with Invalidate), ``SMBDIRECT_CMSG_INVALIDATED_TOKEN`` (recvmsg, u32: our token the peer
invalidated).  ``sendmsg([data], [(SOL_SMBDIRECT, SMBDIRECT_CMSG_RDMA_DESCRIPTORS, descs)], MSG_OOB)``
is an RDMA WRITE of ``data`` (the proposal's "RDMA via sendmsg + MSG_OOB + msg_control").  The
Python API: ``register``, ``deregister``, ``rdma_write``, ``rdma_read``, ``smbdirect_parameters``.

State: CLOSED --bind/listen--> LISTENING; CLOSED --connect--> ESTABLISHED (connect returns only
after the negotiation; ECONNREFUSED, ETIMEDOUT, ECONNABORTED otherwise); an accepted socket is
ESTABLISHED.  After the connection is gone: recv gives b"" for a clean close by the peer, else the
errno (ECONNRESET: the peer ended it or vanished; ECONNABORTED: we ended it for a protocol
violation or an RDMA access error; ETIMEDOUT: keepalive unanswered); send gives EPIPE/that errno.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time
from typing import Any

from ..addressing import AUTOBIND_FIRST, AUTOBIND_LAST
from ..recorder import recorder_for
from ..socket_wrapper import orig_socket as _OrigSocket
from . import constants as C
from .core import ACTIVE, Params
from .engine import Engine, Listener, get_engine, make_pair
from .link import Link, tune
from .messages import BufferDescriptor, decode_descriptors
from .naming import parse_name, socket_name

_CONN_PARAMS = struct.Struct("<IIIIII")  # max_send, max_fragmented_send, max_receive, max_read_write, keepalive_ms, protocol


def _err(code: int, msg: str = "") -> OSError:
    return OSError(code, msg or os.strerror(code))


def _active_config() -> Any:
    from ..socket_wrapper import active_config as ac

    return ac()


class SmbDirectSocket(_OrigSocket):
    def __init__(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM, proto: int = C.IPPROTO_SMBDIRECT,
                 *, _cfg: Any = "auto", _link: Link | None = None):
        if family not in (socket.AF_INET, socket.AF_INET6):
            raise _err(errno.EAFNOSUPPORT)
        base = type & ~(socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        if base != socket.SOCK_STREAM:
            raise _err(errno.EPROTONOSUPPORT, "IPPROTO_SMBDIRECT needs SOCK_STREAM")
        app, eng_end = make_pair()
        _OrigSocket.__init__(self, socket.AF_UNIX, socket.SOCK_SEQPACKET, 0, app.detach())
        _OrigSocket.settimeout(self, 0.0)
        self._engine: Engine = get_engine()
        self._eng_end = eng_end
        self._sfamily = family
        self._timeout: float | None = 0.0 if type & socket.SOCK_NONBLOCK else socket.getdefaulttimeout()
        self._cfg = _active_config() if _cfg == "auto" else _cfg
        self._params = Params()
        self._local: tuple | None = None
        self._peer: tuple | None = None
        self._link: Link | None = _link
        self._listener: Listener | None = None
        self._bound_sock: Any = None
        self._bound_path: str | None = None
        if _link is not None:
            self._attach(_link)

    # -- identity ----------------------------------------------------------------------------------
    @property
    def family(self) -> socket.AddressFamily:  # type: ignore[override]
        return socket.AddressFamily(self._sfamily)

    @property
    def type(self) -> socket.SocketKind:  # type: ignore[override]
        return socket.SOCK_STREAM

    @property
    def proto(self) -> int:  # type: ignore[override]
        return C.IPPROTO_SMBDIRECT

    def __repr__(self) -> str:
        return f"<SmbDirectSocket fd={self.fileno()} local={self._local} peer={self._peer}>"

    def settimeout(self, value: float | None) -> None:
        self._timeout = value

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    # -- addresses -----------------------------------------------------------------------------------
    def _parse(self, address: Any) -> tuple:
        if not isinstance(address, tuple) or len(address) < 2:
            raise _err(errno.EINVAL, "bad address")
        host, port = address[0], address[1]
        if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
            raise _err(errno.EINVAL, "bad port")
        if host == "":
            host = "0.0.0.0" if self._sfamily == socket.AF_INET else "::"
        try:
            socket.inet_pton(self._sfamily, host.split("%")[0])
        except (OSError, AttributeError):
            raise _err(errno.EINVAL, f"bad address {host!r}") from None
        return (host, port) if self._sfamily == socket.AF_INET else (host, port, 0, 0)

    def _need_cfg(self) -> Any:
        if self._cfg is None:
            raise _err(errno.EPROTONOSUPPORT, "IPPROTO_SMBDIRECT needs the socket wrapper (SOCKET_WRAPPER_DIR)")
        return self._cfg

    def _path(self, host: str, port: int, local: bool) -> str:
        cfg = self._need_cfg()
        net = cfg.network
        iface = net.bind_iface(self._sfamily, socket.SOCK_STREAM, host) if local else net.remote_iface(self._sfamily, host)
        return cfg.path(socket_name(self._sfamily, iface, port))

    def _addr_of(self, path: str) -> tuple | None:
        p = parse_name(path)
        if p is None or self._cfg is None:
            return None
        fam, iface, port = p
        host = self._cfg.network.iface_address(fam, iface)
        return (host, port) if fam == socket.AF_INET else (host, port, 0, 0)

    def _host_of_bind(self, addr: tuple) -> str:
        if addr[0] in ("0.0.0.0", "::"):
            return str(self._need_cfg().network.my_address(self._sfamily))
        return addr[0]

    def bind(self, address: Any) -> None:
        if self._local is not None:
            raise _err(errno.EINVAL, "already bound")
        addr = self._parse(address)
        cfg = self._need_cfg()
        if addr[0] not in ("0.0.0.0", "::") and cfg.network.iface_of(self._sfamily, addr[0]) is None:
            raise _err(errno.EADDRNOTAVAIL)
        s = _OrigSocket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC, 0)
        host = self._host_of_bind(addr)
        port = addr[1]
        if port:
            path = self._path(host, port, True)
            _claim(path)
            s.bind(path)
        else:
            port, path = self._autobind(s, host)
        self._bound_sock, self._bound_path = s, path
        self._local = (host, port) if self._sfamily == socket.AF_INET else (host, port, 0, 0)

    def _autobind(self, s: Any, host: str) -> tuple[int, str]:
        import random

        start = random.randint(AUTOBIND_FIRST, AUTOBIND_LAST)
        span = AUTOBIND_LAST - AUTOBIND_FIRST + 1
        for i in range(span):
            p = AUTOBIND_FIRST + (start - AUTOBIND_FIRST + i) % span
            path = self._path(host, p, True)
            if os.path.lexists(path):
                continue
            try:
                s.bind(path)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    continue
                raise
            return p, path
        raise _err(errno.EADDRINUSE, "no free emulated port")

    def getsockname(self) -> Any:
        if self._local is None:
            return ("0.0.0.0", 0) if self._sfamily == socket.AF_INET else ("::", 0, 0, 0)
        return self._local

    def getpeername(self) -> Any:
        if self._peer is None:
            raise _err(errno.ENOTCONN)
        return self._peer

    # -- listen / accept ---------------------------------------------------------------------------
    def listen(self, backlog: int = 16) -> None:
        if self._link is not None:
            raise _err(errno.EINVAL, "connected")
        if self._listener is not None:
            self._listener.backlog = max(1, backlog)
            return
        if self._local is None:
            self.bind(("0.0.0.0", 0) if self._sfamily == socket.AF_INET else ("::", 0, 0, 0))
        s = self._bound_sock
        s.listen(max(1, backlog))
        s.setblocking(False)
        cfg = self._cfg
        rec = recorder_for(cfg.pcap_file, cfg.socket_dir)
        with self._engine.lock:
            assert self._local is not None
            lst = Listener(self._engine, s, self._local, self._params.copy(), backlog, rec, self._addr_of)
            lst.app_wake = self._eng_end
            self._listener = lst
            self._engine.add_listener(lst)

    def _wait_readable(self, deadline: float | None) -> bool:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if timeout == 0.0 and deadline is not None and self._timeout == 0.0:
            r, _, _ = select.select([self.fileno()], [], [], 0)
            return bool(r)
        r, _, _ = select.select([self.fileno()], [], [], timeout)
        return bool(r)

    def _deadline(self) -> float | None:
        return None if self._timeout is None else time.monotonic() + self._timeout

    def _consume_token(self) -> None:
        try:
            _OrigSocket.recv(self, 1, socket.MSG_DONTWAIT)
        except OSError:
            pass

    def accept(self) -> tuple[SmbDirectSocket, Any]:
        lst = self._listener
        if lst is None:
            raise _err(errno.EINVAL, "not listening")
        deadline = self._deadline()
        while True:
            with self._engine.lock:
                if lst.ready:
                    link = lst.ready.popleft()
                    if not lst.ready and lst.token_out:
                        self._consume_token()
                        lst.token_out = False
                    if link.closed:
                        continue
                    link.listener = None
                    child = type(self)(self._sfamily, socket.SOCK_STREAM, _cfg=self._cfg, _link=link)
                    child._local = link.local
                    child._peer = link.peer
                    return child, link.peer
                if lst.closed:
                    raise _err(errno.EINVAL, "listener closed")
            if self._timeout == 0.0:
                raise BlockingIOError(errno.EAGAIN, "no connection ready")
            if not self._wait_readable(deadline):
                raise TimeoutError(errno.ETIMEDOUT, "timed out")

    def _attach(self, link: Link) -> None:
        with self._engine.lock:
            self._link = link
            link.app_wake = self._eng_end
            link.token_out = False
            link.signal()

    # -- connect ----------------------------------------------------------------------------------------
    def connect(self, address: Any) -> None:
        if self._link is not None:
            raise _err(errno.EISCONN)
        if self._listener is not None:
            raise _err(errno.EINVAL, "listening")
        addr = self._parse(address)
        cfg = self._need_cfg()
        if addr[1] == 0:
            raise _err(errno.ECONNREFUSED)
        path = self._path(addr[0], addr[1], False)
        if self._local is None:
            self.bind(("0.0.0.0", 0) if self._sfamily == socket.AF_INET else ("::", 0, 0, 0))
        s = self._bound_sock
        tune(s)
        timeout = self._timeout if self._timeout else None
        s.settimeout(timeout)
        try:
            s.connect(path)
        except FileNotFoundError:
            raise _err(errno.ECONNREFUSED) from None
        except ConnectionRefusedError:
            raise _err(errno.ECONNREFUSED) from None
        except TimeoutError:
            raise TimeoutError(errno.ETIMEDOUT, "timed out") from None
        self._bound_sock = None
        peer = (addr[0], addr[1]) if self._sfamily == socket.AF_INET else (addr[0], addr[1], 0, 0)
        rec = recorder_for(cfg.pcap_file, cfg.socket_dir)
        params = self._params.copy()
        deadline = self._deadline()
        with self._engine.lock:
            assert self._local is not None
            link = Link(self._engine, s, ACTIVE, params, self._local, peer, rec)
            self._engine.add(link)
            self._attach(link)
            self._peer = peer
            while link.state != "established" and not link.closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    link.violation("connect timed out")
                    raise TimeoutError(errno.ETIMEDOUT, "timed out")
                self._engine.cond.wait(remaining)
            if link.closed:
                err = link.error or errno.ECONNRESET
                if err == errno.ECONNRESET and "status" in link.reason:
                    err = errno.ECONNREFUSED
                self._peer = None
                raise _err(err, f"SMB Direct negotiate failed: {link.reason}")

    def connect_ex(self, address: Any) -> int:
        try:
            self.connect(address)
        except OSError as e:
            return e.errno or errno.EIO
        return 0

    # -- data -----------------------------------------------------------------------------------------
    def _conn(self) -> Link:
        if self._link is None:
            raise _err(errno.ENOTCONN)
        return self._link

    def sendmsg(self, buffers: Any, ancdata: Any = (), flags: int = 0, address: Any = None) -> int:  # type: ignore[override]
        link = self._conn()
        if address is not None:
            raise _err(errno.EISCONN)
        data = b"".join(bytes(b) for b in buffers) if len(buffers) != 1 else buffers[0]
        invalidate = None
        descs: list[BufferDescriptor] | None = None
        offset = 0
        for level, kind, cdata in ancdata:
            if level != C.SOL_SMBDIRECT:
                raise _err(errno.EINVAL, "unknown control message level")
            if kind == C.SMBDIRECT_CMSG_REMOTE_INVALIDATE and len(cdata) == 4:
                invalidate = struct.unpack("<I", cdata)[0]
            elif kind == C.SMBDIRECT_CMSG_RDMA_DESCRIPTORS:
                try:
                    descs = decode_descriptors(cdata)
                except ValueError as e:
                    raise _err(errno.EINVAL, str(e)) from None
            elif kind == C.SMBDIRECT_CMSG_RDMA_OFFSET and len(cdata) == 8:
                offset = struct.unpack("<Q", cdata)[0]
            else:
                raise _err(errno.EINVAL, "bad control message")
        if flags & socket.MSG_OOB:
            if descs is None:
                raise _err(errno.EINVAL, "MSG_OOB needs SMBDIRECT_CMSG_RDMA_DESCRIPTORS")
            link.rdma(data, descs, offset, write=True)
            return len(memoryview(data))
        if descs is not None:
            raise _err(errno.EINVAL, "RDMA descriptors need MSG_OOB")
        if flags & ~(socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL | socket.MSG_EOR):
            raise _err(errno.EOPNOTSUPP)
        n = len(memoryview(data))
        nonblock = self._timeout == 0.0 or bool(flags & socket.MSG_DONTWAIT)
        deadline = self._deadline()
        eng = self._engine
        with eng.lock:
            while not link.closed and link.core.queued() > 2048:
                if nonblock:
                    raise BlockingIOError(errno.EAGAIN, "send queue full")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(errno.ETIMEDOUT, "timed out")
                eng.cond.wait(remaining if remaining is not None else 1.0)
            if link.closed:
                raise _err(errno.EPIPE if link.error in (0, errno.EBADF) else link.error, link.reason)
            link.send_message(bytes(data) if not isinstance(data, bytes) else data, invalidate)
        return n

    def send(self, data: Any, flags: int = 0) -> int:  # type: ignore[override]
        return self.sendmsg([data], (), flags)

    def sendall(self, data: Any, flags: int = 0) -> None:  # type: ignore[override]
        self.sendmsg([data], (), flags)

    def recvmsg(self, bufsize: int = 1 << 24, ancbufsize: int = 0, flags: int = 0) -> tuple[bytes, list, int, Any]:  # type: ignore[override]
        if bufsize < 0:
            raise ValueError("negative buffersize in recvmsg")
        link = self._conn()
        if flags & ~(socket.MSG_DONTWAIT | socket.MSG_PEEK | socket.MSG_TRUNC):
            raise _err(errno.EOPNOTSUPP)
        nonblock = self._timeout == 0.0 or bool(flags & socket.MSG_DONTWAIT)
        deadline = self._deadline()
        while True:
            with self._engine.lock:
                if link.rxq:
                    if flags & socket.MSG_PEEK:
                        data, token = link.rxq[0]
                    else:
                        item = link.pop()
                        assert item is not None
                        data, token = item
                        if not link.rxq and link.token_out:
                            self._consume_token()
                            link.token_out = False
                            link.signal()
                    mflags = 0
                    out = data
                    if len(data) > bufsize:
                        out = data[:bufsize]
                        mflags |= socket.MSG_TRUNC
                    anc = []
                    if token is not None:
                        if ancbufsize >= socket.CMSG_SPACE(4):
                            anc.append((C.SOL_SMBDIRECT, C.SMBDIRECT_CMSG_INVALIDATED_TOKEN, struct.pack("<I", token)))
                        else:
                            mflags |= socket.MSG_CTRUNC
                    if flags & socket.MSG_TRUNC:
                        out = data[:bufsize]
                    return out, anc, mflags, self._peer
                if link.closed:
                    if link.error in (0, errno.EBADF):
                        return b"", [], 0, self._peer
                    raise _err(link.error, link.reason)
            if nonblock:
                raise BlockingIOError(errno.EAGAIN, "no message")
            if not self._wait_readable(deadline):
                raise TimeoutError(errno.ETIMEDOUT, "timed out")

    def recv(self, bufsize: int = 1 << 24, flags: int = 0) -> bytes:  # type: ignore[override]
        return self.recvmsg(bufsize, 0, flags)[0]

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        n = nbytes or len(view)
        data = self.recvmsg(n, 0, flags)[0]
        view[:len(data)] = data
        return len(data)

    def recv_message(self, timeout: float | None = -1.0) -> tuple[bytes, int | None]:
        """(message, invalidated token or None); the Python API's receive."""
        old = self._timeout
        if timeout != -1.0:
            self._timeout = timeout
        try:
            data, anc, _f, _a = self.recvmsg(1 << 30, socket.CMSG_SPACE(4))
        finally:
            self._timeout = old
        token = None
        for _lvl, _kind, cd in anc:
            token = struct.unpack("<I", cd)[0]
        return data, token

    # -- RDMA --------------------------------------------------------------------------------------------
    def register(self, buffer: Any, access: int = C.RDMA_REMOTE_READ | C.RDMA_REMOTE_WRITE) -> list[BufferDescriptor]:
        """SMBD 3.1.4.3: make ``buffer`` reachable by the peer; the descriptors go into SMB2 READ/WRITE."""
        return self._conn().register(buffer, access)

    def deregister(self, what: Any) -> None:
        """SMBD 3.1.4.4: a token, a descriptor or a list of descriptors; ENOENT if not registered."""
        link = self._conn()
        tokens = [what] if isinstance(what, int) else [what.token] if isinstance(what, BufferDescriptor) else [d.token for d in what]
        missing = [t for t in tokens if not link.deregister(t)]
        if missing:
            raise _err(errno.ENOENT, f"token {missing[0]:#010x} is not registered")

    def rdma_write(self, data: Any, descriptors: list[BufferDescriptor], offset: int = 0) -> int:
        """SMBD 3.1.4.5: RDMA WRITE ``data`` into the peer's registered buffer."""
        self._conn().rdma(data, list(descriptors), offset, write=True)
        return len(memoryview(data))

    def rdma_read(self, into: Any, descriptors: list[BufferDescriptor], offset: int = 0) -> Any:
        """SMBD 3.1.4.6: RDMA READ from the peer into ``into`` (a writable buffer, or a length: bytes returned)."""
        buf = bytearray(into) if isinstance(into, int) else into
        self._conn().rdma(buf, list(descriptors), offset, write=False)
        return bytes(buf) if isinstance(into, int) else len(memoryview(buf))

    # -- options -----------------------------------------------------------------------------------------
    def setsockopt(self, level: int, optname: int, value: Any, optlen: int | None = None) -> None:  # type: ignore[override]
        if level != C.SOL_SMBDIRECT:
            if level == socket.SOL_SOCKET:
                return None
            raise _err(errno.ENOPROTOOPT)
        name = C.OPTION_NAMES.get(optname)
        if name is None:
            raise _err(errno.ENOPROTOOPT)
        if self._link is not None or self._listener is not None:
            raise _err(errno.EISCONN, "set options before connect()/listen()")
        if isinstance(value, (bytes, bytearray, memoryview)):
            if len(value) != 4:
                raise _err(errno.EINVAL)
            v = struct.unpack("<I", bytes(value))[0]
        elif isinstance(value, int):
            v = value
        else:
            raise _err(errno.EINVAL)
        if v < 0 or v > 0xFFFFFFFF:
            raise _err(errno.EINVAL)
        if optname in (C.SMBDIRECT_RECEIVE_CREDIT_MAX, C.SMBDIRECT_SEND_CREDIT_TARGET) and not 1 <= v <= 0xFFFF:
            raise _err(errno.EINVAL, "credits must be 1..65535")
        if optname in (C.SMBDIRECT_MAX_SEND_SIZE, C.SMBDIRECT_MAX_RECEIVE_SIZE) and v < C.MIN_RECEIVE_SIZE:
            raise _err(errno.EINVAL, "sizes must be at least 128")
        if optname == C.SMBDIRECT_MAX_FRAGMENTED_RECV_SIZE and v < C.MIN_FRAGMENTED_SIZE:
            raise _err(errno.EINVAL, "MaxFragmentedSize must be at least 131072")
        if optname in C.TIME_OPTIONS:
            if v == 0:
                raise _err(errno.EINVAL, "timers must be > 0 ms")
            setattr(self._params, name, v / 1000.0)
        else:
            setattr(self._params, name, v)

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> Any:  # type: ignore[override]
        if level == socket.SOL_SOCKET and optname == socket.SO_ERROR:
            return 0
        if level == socket.SOL_SOCKET and optname == socket.SO_TYPE:
            return socket.SOCK_STREAM
        if level != C.SOL_SMBDIRECT:
            raise _err(errno.ENOPROTOOPT)
        link = self._link
        core = link.core if link is not None and link.state == "established" else None
        if optname == C.SMBDIRECT_CONNECTION_PARAMETERS:
            if core is None:
                raise _err(errno.ENOTCONN)
            packed = _CONN_PARAMS.pack(core.max_send_size, core.max_fragmented_send_size, core.max_receive_size,
                                  core.max_read_write_size, int(core.keepalive_interval * 1000), core.protocol)
            return packed if buflen is None else packed[:buflen]
        if optname == C.SMBDIRECT_RDMA_MODE:
            if link is None or link.state != "established":
                raise _err(errno.ENOTCONN)
            return C.RDMA_MODE_MEMFD if link.regions.memfd_mode else C.RDMA_MODE_VM
        if optname in (C.SMBDIRECT_SEND_CREDITS, C.SMBDIRECT_RECEIVE_CREDITS, C.SMBDIRECT_MAX_FRAGMENTED_SEND_SIZE):
            if core is None:
                raise _err(errno.ENOTCONN)
            with self._engine.lock:
                v = {C.SMBDIRECT_SEND_CREDITS: core.send_credits, C.SMBDIRECT_RECEIVE_CREDITS: core.receive_credits,
                     C.SMBDIRECT_MAX_FRAGMENTED_SEND_SIZE: core.max_fragmented_send_size}[optname]
        else:
            name = C.OPTION_NAMES.get(optname)
            if name is None:
                raise _err(errno.ENOPROTOOPT)
            src: Any = self._params
            if core is not None:
                src = {"max_send_size": core.max_send_size, "max_receive_size": core.max_receive_size,
                       "max_fragmented_recv_size": core.max_fragmented_recv_size,
                       "max_read_write_size": core.max_read_write_size, "receive_credit_max": core.receive_credit_max,
                       "send_credit_target": core.send_credit_target, "keepalive_interval": core.keepalive_interval,
                       "keepalive_response_timeout": core.params.keepalive_response_timeout,
                       "negotiate_timeout": core.params.negotiate_timeout or 0}
                raw = src[name]
            else:
                raw = getattr(src, name)
                if raw is None:
                    raw = C.NEGOTIATE_TIMEOUT_ACTIVE
            v = int(raw * 1000) if optname in C.TIME_OPTIONS else int(raw)
        return v if buflen is None else struct.pack("<I", v)[:buflen]

    def smbdirect_parameters(self) -> dict[str, Any]:
        """SMBD 3.1.4.7 plus the credit counters, as a dict."""
        link = self._conn()
        with self._engine.lock:
            p: dict[str, Any] = dict(link.core.parameters())
            p["rdma_mode"] = "memfd" if link.regions.memfd_mode else "process_vm"
            p["stats"] = dict(link.core.stats.__dict__)
            return p

    # -- teardown -------------------------------------------------------------------------------------
    def shutdown(self, how: int) -> None:
        if self._link is None:
            raise _err(errno.ENOTCONN)
        if how in (socket.SHUT_WR, socket.SHUT_RDWR):
            with self._engine.lock:
                self._link.close()

    def close(self) -> None:
        eng = getattr(self, "_engine", None)
        if eng is not None:
            with eng.lock:
                if self._link is not None and not self._link.closed:
                    self._link.close()
                if self._link is not None:
                    self._link.app_wake = None
                if self._listener is not None:
                    self._listener.close()
                    self._listener = None
        if getattr(self, "_bound_sock", None) is not None:
            try:
                self._bound_sock.close()
            except OSError:
                pass
            self._bound_sock = None
        path = getattr(self, "_bound_path", None)
        if path and self._link is None:
            try:
                os.unlink(path)
            except OSError:
                pass
        if path and self._link is not None and self._link.role == ACTIVE:
            try:
                os.unlink(path)
            except OSError:
                pass
        self._bound_path = None
        e = getattr(self, "_eng_end", None)
        if e is not None:
            try:
                e.close()
            except OSError:
                pass
            self._eng_end = None
        super().close()

    def detach(self) -> int:
        raise _err(errno.EOPNOTSUPP, "an SMB Direct socket cannot be detached")

    def dup(self) -> Any:
        raise _err(errno.EOPNOTSUPP, "an SMB Direct socket cannot be duplicated")


def _claim(path: str) -> None:
    from ..sockdir import is_in_use

    if os.path.lexists(path):
        if is_in_use(path, socket.SOCK_STREAM):
            raise _err(errno.EADDRINUSE)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
