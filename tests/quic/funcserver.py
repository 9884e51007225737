"""The server half of lxin/quic tests/func_test.c, on wirecheck's IPPROTO_QUIC, and the client session.

The echo loop of lxin/quic's tests/func_test.c server: data read with FIN is echoed on the same
stream with FIN (a client uni stream: on the matching server uni stream ``sid | 1`` with NEW|FIN),
datagrams as datagrams. Keywords make it act: "client reset" (with FIN: after 1 s send the text and
reset that stream, errcode 1), "client stop_sending" (STOP_SENDING errcode 1, no echo),
"client migration" (migrate to port+1; on the udp carrier the
server's accepted path cannot move and the socket must refuse with EOPNOTSUPP), "client key_update", "client new_token", "client close"
(close info 10 / "this is app err", echo, shutdown(SHUT_WR)).
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from dataclasses import dataclass, field

from wrappers.quic import (
    MSG_DATAGRAM,
    MSG_NOTIFICATION,
    MSG_STREAM_FIN,
    MSG_STREAM_NEW,
    QUIC_SOCKOPT_CONNECTION_CLOSE,
    QUIC_SOCKOPT_CONNECTION_MIGRATION,
    QUIC_SOCKOPT_KEY_UPDATE,
    QUIC_SOCKOPT_STREAM_RESET,
    QUIC_SOCKOPT_STREAM_STOP_SENDING,
    QUIC_SOCKOPT_TOKEN,
    SOL_QUIC,
    ConnectionClose,
    ErrInfo,
    QuicSocket,
    quic_recvmsg,
    quic_sendmsg,
    sockaddr_in,
)


class FuncServer(threading.Thread):
    """The server end.  Every failure on its side (an echo that could not be sent, a migration, key
    update or token that the socket refused, the receive loop ending while the connection should be
    up) goes to ``errors`` as text; the ``func`` fixture fails the test case during which it
    happened.  Only after the CLOSE group's "client close" may the loop end (it closed on purpose).

    The echo is everything the stream carried up to its FIN, as func_test.c's server does: its client
    (the C one and the Python port alike) sends "quic " and "test11" in two calls and expects
    "quic test11"."""

    def __init__(self, sock: QuicSocket, carrier: str = "seqpacket"):
        super().__init__(daemon=True, name="func-server")
        self.s = sock
        self.carrier = carrier
        self.stop = False
        self.closing = False  # set by "client close": from then on the connection may end
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def fail(self, what: str, exc: BaseException) -> None:
        with self._lock:
            self.errors.append(f"func server: {what}: {type(exc).__name__}: {exc}")

    def run(self) -> None:
        s = self.s
        s.settimeout(0.2)
        text: dict[int, bytes] = {}
        while not self.stop:
            try:
                data, sid, flags = quic_recvmsg(s, 65536)
            except OSError as e:
                if e.errno == errno.EAGAIN:
                    continue
                if not self.closing and not self.stop:
                    self.fail("receive loop ended", e)
                return
            try:
                self._handle(s, text, data, sid, flags)
            except OSError as e:
                self.fail(f"stream {sid} ({bytes(text.get(sid, b'') or data)[:40]!r})", e)

    def _handle(self, s: QuicSocket, text: dict[int, bytes], data: bytes, sid: int, flags: int) -> None:
        if flags & MSG_NOTIFICATION:
            return
        if flags & MSG_DATAGRAM:
            s.sendmsg([data], [], MSG_DATAGRAM)
            return
        acc = text.get(sid, b"") + data
        text[sid] = acc
        if b"client stop_sending" in acc:
            text.pop(sid, None)
            s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_STREAM_STOP_SENDING, ErrInfo(sid, 1).pack())
            return
        if not flags & MSG_STREAM_FIN:
            return
        text.pop(sid, None)
        out_sid = sid | 1 if sid & 2 else sid
        out_flags = MSG_STREAM_FIN | (MSG_STREAM_NEW if sid & 2 else 0)
        if b"client reset" in acc:
            def later() -> None:
                time.sleep(1)
                try:
                    quic_sendmsg(s, acc, out_sid, MSG_STREAM_NEW if sid & 2 else 0)
                    s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_STREAM_RESET, ErrInfo(out_sid, 1).pack())
                except OSError as e:
                    self.fail(f"reset of stream {out_sid}", e)
            threading.Thread(target=later, daemon=True).start()
            return
        if b"client migration" in acc:
            host, port = s.getsockname()[:2]
            try:
                s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_CONNECTION_MIGRATION, sockaddr_in(host, port + 1))
            except OSError as e:
                # On the udp carrier a path the peer opened cannot move (carriers.py): the socket
                # says so with EOPNOTSUPP, and only that is the expected answer there.
                if not (self.carrier == "udp" and e.errno == errno.EOPNOTSUPP):
                    self.fail(f"migration to port {port + 1}", e)
            else:
                if self.carrier == "udp":
                    self.fail(f"migration to port {port + 1}", AssertionError("accepted on the udp carrier"))
        elif b"client key_update" in acc:
            try:
                s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_KEY_UPDATE, None, 0)
            except OSError as e:
                self.fail("key update", e)
        elif b"client new_token" in acc:
            try:
                s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_TOKEN, None, 0)
            except OSError as e:
                self.fail("new token", e)
        elif b"client close" in acc:
            self.closing = True
            s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_CONNECTION_CLOSE, ConnectionClose(10, 0, b"this is app err").pack())
            quic_sendmsg(s, acc, out_sid, out_flags)
            time.sleep(0.1)
            s.shutdown(socket.SHUT_WR)
            return
        quic_sendmsg(s, acc, out_sid, out_flags)


@dataclass
class Session:
    """One func_test connection: the client socket (tests drive it), the server thread, state."""

    c: QuicSocket
    server: FuncServer
    others: list = field(default_factory=list)
    memo: dict = field(default_factory=dict)


def await_peer_stop_sending(c: QuicSocket, sid: int, timeout: float = 20.0) -> None:
    """Wait until the peer's STOP_SENDING for ``sid`` has reset our sending side and the peer has
    acknowledged that reset, so the stream is released (a send on it is then ENOSTR; while the reset
    is in flight it is EINVAL, as for a stream we reset ourselves).

    func_test.c sleeps 1 s after asking its server for STOP_SENDING and then expects ENOSTR. Here the
    server may be lxin's C program behind the engine daemon, whose answer can take longer; had it come
    after that second, the next send would have gone out as data and every following case would read
    the wrong reply (the failures seen were test32's, see send_then_reset, but the sleep was a guess
    too). So the case waits for the condition itself (our engine's view of the stream), with a deadline.
    The stream must be open when this is called (the caller's sendmsg opened it) and one whose
    receiving side is done (a unidirectional stream of ours, as func_test's 418)."""
    deadline = time.monotonic() + timeout

    def released() -> bool:
        conn = c._conn
        return conn is not None and sid not in conn.streams

    while not c._engine_call(released):
        assert time.monotonic() < deadline, f"stream {sid} not reset by the peer's STOP_SENDING in {timeout} s"
        time.sleep(0.01)


def send_then_reset(c: QuicSocket, data: bytes, sid: int, flags: int, errcode: int = 1) -> int:
    """sendmsg(data) on ``sid`` and then setsockopt(STREAM_RESET), with nothing sent between them.

    func_test.c's server keeps one message buffer across streams and matches whole messages:
    test32's "quic test32" (sent without FIN, then reset) must never reach its read, or it stays
    in that buffer, test35's "client stop_sending" no longer matches, no STOP_SENDING comes, and
    every later case reads the wrong reply. With quic.ko the RESET_STREAM follows the data within
    microseconds and discards it before the server's read; here each call leaves in a datagram of
    its own, a Python call apart, and lxin's C server read the data first in about half the runs on
    an idle machine (the quicfunc c-server cases: 2 of 4 runs failed so, 0 of 4 after). Both calls
    under one hold of the engine: the reset leaves in the same flush as the data (aioquic then sends
    RESET_STREAM and drops the unsent data, as a reset may), so the server never reads the data.
    A reader in the sending process cannot show the race (the reset came first in 3 of 3 tries
    with separate calls); lxin's C server behind the engine daemon shows it."""
    conn = c._conn
    assert conn is not None

    def both() -> int:
        n = conn.send_stream(sid, flags, data, True, True)
        conn.stream_reset(ErrInfo(sid, errcode))
        return n

    return int(c._engine_call(both))


def expect_errno(fn, *codes: int) -> int:
    """Run ``fn``; it must fail with one of ``codes`` (any errno when none given)."""
    try:
        fn()
    except OSError as e:
        assert not codes or e.errno in codes, f"errno {e.errno} ({e}), expected {codes}"
        return int(e.errno or 0)
    raise AssertionError(f"call succeeded, expected errno {codes}")
