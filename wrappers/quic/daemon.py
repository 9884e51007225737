"""The QUIC engine daemon: the ordinary Python ``QuicSocket`` objects behind native programs' QUIC fds.

Why a daemon, per emulated host (and settings), outside the native program (and not a thread inside it):

* timers, loss recovery, ACKs, keepalive and the idle timeout must go on while the program sleeps, is
  stopped (SIGSTOP) or blocks in a call we never see; a thread inside the program stops with it, and
  a program killed by SIGKILL runs no code at all. The daemon sees the program's fd close (its end of
  the pair reads EOF), closes the QuicSocket and the peer gets a CONNECTION_CLOSE;
* everything a call needs (options, stream state, the receive queue) must be reachable from whichever
  process holds the fd now: after fork, dup, or SCM_RIGHTS to another process (Samba hands
  connections between processes). State in the program's memory would stay behind in the sender.
  Here it lives in the daemon, keyed by the inode of the fd, and every call sends the fd along;
* one engine for Python and C: the daemon hosts ``wrappers.quic.sock.QuicSocket`` unchanged, on the
  same carriers, pcap, key log, qlog and impairments, so whatever QuicSocket learns (the raw
  HANDSHAKE_INFO / CRYPTO_SECRET interface included) native programs get too.

The program's fd is one end of a unix SOCK_SEQPACKET pair; the daemon holds the other end. It is a
real socket, so poll/select/epoll need no hooking: the daemon keeps exactly one TOKEN message queued
on it while a recvmsg (accept on a listener) would not block, and shuts its end for writing when the
connection is closed and its queue is empty (the fd then reads EOF, readable for ever, as quic.ko's
CLOSED socket is). The token is taken back by the daemon itself, during the recvmsg call that
empties the queue (that call carries the fd), so readiness never lags behind a read. The receive
queue stays inside the daemon's QuicSocket (its app-side queue), so a partial read, MSG_PEEK and an
event overtaking queued data keep quic.ko's semantics whichever process reads next.

Calls come over control connections (``native_proto`` has the format). A call that may block (a
send against flow control, a handshake) blocks its connection's thread only; recvmsg and accept
never block here: the library waits on the fd itself (poll), honouring SO_RCVTIMEO and O_NONBLOCK.

The library starts the daemon on demand (under a lock file in the socket directory), on the abstract
unix name it derives from the socket directory and the settings that shape the engine (carrier, pcap,
impairments, ...); the daemon leaves when it has had no socket and no connection for ``IDLE`` seconds.
Only connections from our own uid are served (SO_PEERCRED): an abstract name has no file mode.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import sys
import threading
import time
import traceback
from typing import Any

from .. import config as wconfig
from . import constants as C
from . import native_proto as P

IDLE = float(os.environ.get("WIRECHECK_QUICD_IDLE", "5") or 5)
_names = iter(range(1, 1 << 62))


def _log(msg: str) -> None:
    sys.stderr.write(f"wirecheck-quicd[{os.getpid()}] {time.strftime('%H:%M:%S')}: {msg}\n")
    sys.stderr.flush()


class Entry:
    """One native QUIC fd: its QuicSocket, the daemon's end of the pair and the readiness token."""

    def __init__(self, daemon: Daemon, qs: Any, end: socket.socket, ino: int):
        self.daemon = daemon
        self.qs = qs
        self.end = end
        self.ino = ino
        self.token_out = False
        self.shut = False
        self.watching = False
        self.gone = False

    # -- readiness: exactly one token on the app fd while a recvmsg/accept would not block -------
    def refresh(self, app_fd: int | None = None) -> None:
        """Caller holds the engine lock. ``app_fd`` (a copy of the program's fd, during a call) lets
        the token be taken back when the queue became empty."""
        if self.gone:
            return
        qs = self.qs
        listening = qs._listener is not None
        native = getattr(qs, "native_readiness", None)  # an SMB Direct socket (wrappers.smbdirect.native)
        if native is not None:
            ready, eof = native()
            listening = True  # level-triggered like a listener: watched only while nothing is ready
        elif listening:
            ready = bool(select.select([qs.fileno()], [], [], 0)[0])
            eof = False
        else:
            qs._drain()
            ready = bool(qs._q) or qs._eof
            eof = qs._eof
        if ready and not self.token_out:
            try:
                self.end.send(P.TOKEN)
                self.token_out = True
            except OSError:
                pass
        elif not ready and self.token_out and app_fd is not None:
            try:
                _take_token(app_fd)
                self.token_out = False
            except OSError:
                pass
        if eof and not self.shut:
            self.shut = True
            try:
                self.end.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        want = not eof and not (listening and ready)
        if want != self.watching:
            eng = self.daemon.engine
            if want:
                eng.watch(qs.fileno(), self._readable)
            else:
                eng.unwatch(qs.fileno())
            self.watching = want

    def _readable(self) -> None:  # engine thread, lock held
        try:
            self.refresh()
        except Exception:  # noqa: BLE001 - one socket must not stop the engine
            _log("refresh failed:\n" + traceback.format_exc())

    def _app_side(self) -> None:  # engine thread, lock held: the program's end spoke or closed
        try:
            data = self.end.recv(64, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            _log(f"socket {self.ino}: the program wrote {len(data)} bytes into the engine's side of its QUIC fd; "
                 "cutting that socket off")
        self.daemon.drop(self)


def _take_token(fd: int) -> None:
    s = socket.socket(fileno=os.dup(fd))
    try:
        s.recv(1, socket.MSG_DONTWAIT)
    except BlockingIOError:
        pass
    finally:
        s.close()


class Daemon:
    def __init__(self, name: bytes):
        self.name = name
        self.entries: dict[int, Entry] = {}
        self.lock = threading.Lock()
        self.conns = 0
        self.last_activity = time.monotonic()
        self._engine: Any = None

    @property
    def engine(self) -> Any:
        if self._engine is None:
            from .loop import get_engine

            self._engine = get_engine()
        return self._engine

    # -- sockets ---------------------------------------------------------------------------------
    def new_entry(self, qs: Any) -> tuple[Entry, socket.socket]:
        app, end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        # our own name in it: a process whose settings name another daemon finds this one from the fd
        end.bind(P.APP_NAME_PREFIX + self.name + f":{next(_names)}".encode())
        end.setblocking(False)
        ino = os.fstat(app.fileno()).st_ino
        e = Entry(self, qs, end, ino)
        eng = self.engine
        with eng.lock:
            with self.lock:
                self.entries[ino] = e
            eng.watch(end.fileno(), e._app_side)
            e.refresh()
        return e, app

    def drop(self, e: Entry) -> None:
        eng = self.engine
        with eng.lock:
            if e.gone:
                return
            e.gone = True
            with self.lock:
                self.entries.pop(e.ino, None)
                self.last_activity = time.monotonic()
            eng.unwatch(e.end.fileno())
            if e.watching:
                eng.unwatch(e.qs.fileno())
            try:
                e.qs.close()
            except OSError:
                pass
            e.end.close()

    def entry_for(self, fd: int) -> Entry | None:
        try:
            ino = os.fstat(fd).st_ino
        except OSError:
            return None
        with self.lock:
            return self.entries.get(ino)

    # -- control connections ---------------------------------------------------------------------
    def serve(self, conn: socket.socket) -> None:
        try:
            while True:
                try:
                    msg, fds = _read_request(conn)
                except (OSError, ValueError) as ex:
                    if str(ex):
                        _log(f"control connection dropped: {ex}")
                    return
                if msg is None:
                    return
                try:
                    rep, out_fd = self.handle(msg, fds)
                except Exception:  # noqa: BLE001 - a bug here answers EIO to this call, nothing else
                    _log("call failed:\n" + traceback.format_exc())
                    rep, out_fd = P.Reply.error(errno.EIO, "internal error in the QUIC daemon"), None
                finally:
                    for fd in fds:
                        os.close(fd)
                try:
                    if out_fd is not None:
                        socket.send_fds(conn, [rep.pack()], [out_fd.fileno()])
                        out_fd.close()
                    else:
                        conn.sendall(rep.pack())
                except OSError:
                    if out_fd is not None:
                        out_fd.close()
                    return
        finally:
            conn.close()
            with self.lock:
                self.conns -= 1
                self.last_activity = time.monotonic()

    def handle(self, msg: bytes, fds: list[int]) -> tuple[P.Reply, socket.socket | None]:
        try:
            req = P.Request.unpack(msg)
        except ValueError as e:
            return P.Reply.error(errno.EINVAL, f"bad request: {e}"), None
        try:
            if req.op == P.OP_SOCKET:
                return self.op_socket(req)
            if len(fds) != 1:
                return P.Reply.error(errno.EBADF, "a call without its fd"), None
            entry = self.entry_for(fds[0])
            if entry is None:
                return P.Reply.error(errno.EPIPE if req.op == P.OP_SENDMSG else errno.ENOTCONN,
                                     "not a live QUIC socket (closed, or cut off)"), None
            return self.op(entry, req, fds[0])
        except OSError as ex:
            return P.Reply.error(ex.errno or errno.EIO, ex.strerror or str(ex)), None

    def op_socket(self, req: P.Request) -> tuple[P.Reply, socket.socket | None]:
        from ..smbdirect.constants import IPPROTO_SMBDIRECT
        from .sock import QuicSocket

        env = dict(os.environ)
        for line in req.data.decode("utf-8", "replace").split("\0"):
            k, sep, v = line.partition("=")
            if sep and k == "SOCKET_WRAPPER_DEFAULT_IFACE":  # the daemon is per host, but say it per socket
                env[k] = v
        try:
            cfg = wconfig.from_environ(env)
        except ValueError as ex:
            return P.Reply.error(errno.EINVAL, str(ex)), None
        qs: Any
        if req.c == IPPROTO_SMBDIRECT:  # the same engine daemon hosts native programs' SMB Direct sockets
            from ..smbdirect.native import NativeSmbDirectSocket

            qs = NativeSmbDirectSocket(req.a, req.b, IPPROTO_SMBDIRECT, _cfg=cfg)
        else:
            qs = QuicSocket(req.a, req.b, C.IPPROTO_QUIC, _cfg=cfg)
        _e, app = self.new_entry(qs)
        return P.Reply(0), app

    def op(self, e: Entry, req: P.Request, fd: int) -> tuple[P.Reply, socket.socket | None]:
        qs, op, eng = e.qs, req.op, self.engine
        if op >= P.OP_SMBD_REGISTER or (op == P.OP_HANDSHAKE and hasattr(qs, "native_register")):
            return _smbd_op(qs, req), None
        if op in (P.OP_BIND, P.OP_CONNECT):
            addr = P.sockaddr_to_tuple(int(qs.family), req.data)
            (qs.bind if op == P.OP_BIND else qs.connect)(addr)
            return P.Reply(0), None
        if op == P.OP_LISTEN:
            qs.listen(req.a)
            with eng.lock:
                e.refresh(fd)
            return P.Reply(0), None
        if op == P.OP_ACCEPT:
            with eng.lock:
                saved = qs._timeout
                qs._timeout = 0.0
                try:
                    new, peer = qs.accept()
                except OSError as ex:
                    e.refresh(fd)
                    return P.Reply(-(ex.errno or errno.EIO), aux=_ms(saved)), None
                finally:
                    qs._timeout = saved
                new._timeout = saved
                e.refresh(fd)
                _ne, app = self.new_entry(new)
            return P.Reply(0, data=P.tuple_to_sockaddr(peer)), app
        if op == P.OP_GETSOCKNAME:
            return P.Reply(0, data=P.tuple_to_sockaddr(qs.getsockname())), None
        if op == P.OP_GETPEERNAME:
            return P.Reply(0, data=P.tuple_to_sockaddr(qs.getpeername())), None
        if op == P.OP_SETSOCKOPT:
            qs.setsockopt(req.a, req.b, None if req.c else req.data)
            return P.Reply(0), None
        if op == P.OP_GETSOCKOPT:
            return P.Reply(0, data=_getsockopt(qs, req.a, req.b, req.c, req.data)), None
        if op == P.OP_SENDMSG:
            n = qs.sendmsg([req.data], req.anc or [], req.a)
            return P.Reply(n), None
        if op == P.OP_RECVMSG:
            with eng.lock:
                try:
                    data, anc, flags, _addr = qs.recvmsg(req.b, req.c, req.a | C.MSG_DONTWAIT)
                except OSError as ex:
                    return P.Reply(-(ex.errno or errno.EIO), aux=_ms(qs._timeout)), None
                finally:
                    e.refresh(fd)
            return P.Reply(len(data), flags, data, anc), None
        if op == P.OP_SHUTDOWN:
            qs.shutdown(req.a)
            with eng.lock:
                e.refresh(fd)
            return P.Reply(0), None
        if op == P.OP_IOCTL:
            with eng.lock:
                value = _ioctl(qs, req.a)
            return P.Reply(0, data=struct.pack("<i", value)), None
        if op == P.OP_HANDSHAKE:
            _handshake(qs, req.a, req.data)
            with eng.lock:
                e.refresh(fd)
            return P.Reply(0), None
        return P.Reply.error(errno.EOPNOTSUPP, f"unknown call {op}"), None


def _read_exact(conn: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = conn.recv_into(view[got:], n - got)
        if k == 0:
            raise ValueError("the program closed its control connection in the middle of a call")
        got += k
    return bytes(buf)


def _read_request(conn: socket.socket) -> tuple[bytes | None, list[int]]:
    """One request from a SOCK_STREAM control connection: the header (with the fd, SCM_RIGHTS rides
    on its first byte), then exactly the lengths it announces. None at a clean end of connection."""
    head, fds, _flags, _addr = socket.recv_fds(conn, P.REQ.size, 4, socket.MSG_WAITALL)
    if not head:
        for fd in fds:
            os.close(fd)
        return None, []
    try:
        if len(head) < P.REQ.size:
            head += _read_exact(conn, P.REQ.size - len(head))
        n1, n2 = P.REQ.unpack_from(head)[7:9]
        if n1 + n2 > P.MAX_CALL:
            raise ValueError(f"a call of {n1 + n2} bytes is over the {P.MAX_CALL}-byte limit")
        return head + _read_exact(conn, n1 + n2), fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _ms(timeout: float | None) -> int:
    """SO_RCVTIMEO for the library's own wait: -1 blocks for ever (0.0 is a non-blocking socket)."""
    return -1 if timeout is None else int(timeout * 1000)


def _smbd_op(qs: Any, req: P.Request) -> P.Reply:
    """wirecheck's own SMB Direct calls (register, deregister, RDMA READ) on an SMB Direct socket."""
    if not hasattr(qs, "native_register"):
        return P.Reply.error(errno.EOPNOTSUPP, "not an SMB Direct socket")
    if req.op == P.OP_SMBD_REGISTER:
        return P.Reply(0, data=qs.native_register(req.d, req.data))
    if req.op == P.OP_SMBD_DEREGISTER:
        qs.native_deregister(req.data)
        return P.Reply(0)
    if req.op == P.OP_SMBD_RDMA_READ:
        data = qs.native_rdma_read(req.a, req.data)
        return P.Reply(len(data), data=data)
    return P.Reply.error(errno.EOPNOTSUPP, f"call {req.op} is not defined on an SMB Direct socket")


def _getsockopt(qs: Any, level: int, opt: int, optlen: int, arg: bytes) -> bytes:
    native = getattr(qs, "native_getsockopt", None)
    if native is not None:
        return bytes(native(level, opt, optlen))
    if level == C.SOL_QUIC:
        return bytes(qs.getsockopt(level, opt, arg[:optlen]))
    if level == socket.SOL_SOCKET:
        if opt in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
            t = qs._timeout if opt == socket.SO_RCVTIMEO else qs._sndtimeo
            t = t or 0.0
            return struct.pack("<qq", int(t), int((t - int(t)) * 1e6))[:optlen]
        ints = {socket.SO_TYPE: qs._qtype, socket.SO_PROTOCOL: C.IPPROTO_QUIC, socket.SO_DOMAIN: qs._qfamily,
                socket.SO_ERROR: 0, socket.SO_ACCEPTCONN: int(qs._listener is not None)}
        if opt in ints:
            return struct.pack("<i", ints[opt])[:optlen]
    return bytes(max(0, min(optlen, 4096)))


SIOCINQ, SIOCOUTQ = 0x541B, 0x5411  # FIONREAD and TIOCOUTQ: the same numbers on sockets


def _ioctl(qs: Any, request: int) -> int:
    """quic.ko's socket ioctls (caller holds the engine lock): SIOCINQ (FIONREAD) the bytes queued for
    reading (stream data, events, datagrams, handshake messages), SIOCOUTQ the bytes written and not
    yet acknowledged; EINVAL on a listener, as quic.ko."""
    if qs._listener is not None:
        raise OSError(errno.EINVAL, "ioctl on a listening socket")
    if request == SIOCINQ:
        qs._drain()
        return sum(len(e[3]) for e in qs._q)
    if request == SIOCOUTQ:
        c = qs._conn
        return int(c.buffered_bytes()) if c is not None and c.quic is not None else 0
    raise OSError(errno.ENOTTY, f"ioctl {request:#x} is not a QUIC socket ioctl")


def _handshake(qs: Any, role: int, text: bytes) -> None:
    """wirecheck's own call (not quic.ko's): TLS inside the engine, as the Python client_handshake and
    server_handshake do, for native programs that do not bring a TLS library."""
    from .handshake import client_handshake, server_handshake

    kv = dict(line.partition("=")[::2] for line in text.decode("utf-8", "replace").split("\n") if "=" in line)
    timeout = float(kv.get("timeout") or 30)
    if role == 0:
        client_handshake(qs, kv.get("psk_file") or None, kv.get("hostname") or None, kv.get("alpns") or None,
                         timeout=timeout)
    else:
        server_handshake(qs, kv.get("pkey_file") or None, kv.get("cert_file") or None, kv.get("alpns") or None,
                         timeout=timeout)


def run(name: bytes) -> int:
    lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        lst.bind(b"\0" + name)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            return 0  # another daemon won the race: it serves this network
        raise
    lst.listen(128)
    d = Daemon(name)
    _log(f"serving {name.decode(errors='replace')}")
    while True:
        r, _, _ = select.select([lst], [], [], 0.5)
        if r:
            conn, _ = lst.accept()
            pid, uid, _gid = struct.unpack("<iII", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            if uid != os.getuid():
                _log(f"refused a connection from pid {pid} uid {uid}")
                conn.close()
                continue
            with d.lock:
                d.conns += 1
            threading.Thread(target=d.serve, args=(conn,), daemon=True).start()
            continue
        with d.lock:
            idle = not d.entries and d.conns == 0 and time.monotonic() - d.last_activity > IDLE
        if idle:
            lst.close()  # a library connecting now gets ECONNREFUSED and starts a new daemon
            _log("idle: leaving")
            return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m wrappers.quic.daemon ABSTRACT-NAME\n")
        return 2
    return run(args[0].encode())


if __name__ == "__main__":
    sys.exit(main())
