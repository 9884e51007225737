"""The peer's CONNECTION_CLOSE reaches the application as soon as it arrives.

quic.ko moves the socket to CLOSED when the peer's close frame arrives: a blocked recv wakes with
ENOTCONN (or the CLOSE event) at once, no draining period is visible to the application. aioquic
reports the close only when its draining period (three probe timeouts, RFC 9000 10.2.2) is over, and
the probe timeout follows the RTT estimate: on a loaded machine one late ACK makes it seconds long,
so a server waiting for its client to hang up waited many seconds after the client had gone (seen as
`wirecheck h3 serve` outliving gtlsclient by more than 20 s). Here a 1 s one-way delay gives the
server an RTT estimate of about 2 s, so its draining period is far longer than the delay.
"""

from __future__ import annotations

import errno
import socket
import threading
import time

import pytest

from wrappers import impair
from wrappers.quic import (
    MSG_NOTIFICATION,
    MSG_STREAM_FIN,
    MSG_STREAM_NEW,
    QUIC_EVENT_CONNECTION_CLOSE,
    QUIC_SOCKOPT_EVENT,
    SOL_QUIC,
    EventOption,
    client_handshake,
    quic_recvmsg,
    quic_sendmsg,
    server_handshake,
)

from .conftest import close_all, emulated, open_pair, quic_socket

DELAY = 1.0


@pytest.fixture
def slow_link():
    impair.configure(f"out: delay={int(DELAY * 1000)}ms; match: udp")
    yield
    impair.configure(None)
    impair.reset()


def _exchange(c, s) -> None:
    """Two requests and answers: the second request carries the ACK of the first answer, so the
    server takes an RTT sample of about 2 * DELAY."""
    for _ in range(2):
        quic_sendmsg(c, b"ping", -1, MSG_STREAM_NEW | MSG_STREAM_FIN)
        data, sid, _ = quic_recvmsg(s, 100)
        assert data == b"ping"
        quic_sendmsg(s, b"pong", sid, MSG_STREAM_FIN)
        assert quic_recvmsg(c, 100)[0] == b"pong"


def _draining(sock) -> float:
    """How long aioquic's draining period would be now: three probe timeouts."""
    return 3 * sock._conn.quic.probe_timeout()


@pytest.mark.parametrize("how", ["shutdown", "close"])
def test_a_blocked_recv_sees_the_peers_close_without_the_draining_period(net, pki, slow_link, how):
    c, s, ls = open_pair("psk", pki, timeout=20)
    try:
        c.settimeout(20)
        s.settimeout(20)
        _exchange(c, s)
        assert _draining(s) > 4 * DELAY, f"the server's probe timeout ({_draining(s) / 3:.2f} s) did not take the delay"
        t0 = time.monotonic()
        if how == "shutdown":
            c.shutdown(socket.SHUT_WR)
        else:
            c.close()
        with pytest.raises(OSError) as e:
            s.recv(100)
        waited = time.monotonic() - t0
        assert e.value.errno == errno.ENOTCONN, e.value
        # the close frame travels DELAY; the draining period would add more than 4 * DELAY
        assert waited < DELAY + 2.0, f"the close reached the application {waited:.2f} s after it was sent"
    finally:
        close_all(c, s, ls)


def test_the_close_event_comes_with_the_peers_code_at_once(net, pki, slow_link):
    c, s, ls = open_pair("psk", pki, timeout=20)
    try:
        c.settimeout(20)
        s.settimeout(20)
        s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_EVENT, EventOption(QUIC_EVENT_CONNECTION_CLOSE, 1).pack())
        _exchange(c, s)
        assert _draining(s) > 4 * DELAY
        t0 = time.monotonic()
        c.shutdown(socket.SHUT_WR)
        data, _sid, flags = quic_recvmsg(s, 200)
        waited = time.monotonic() - t0
        assert flags & MSG_NOTIFICATION and data[0] == QUIC_EVENT_CONNECTION_CLOSE, (data, flags)
        assert waited < DELAY + 2.0, f"the close event came {waited:.2f} s after the close was sent"
        with pytest.raises(OSError) as e:
            quic_recvmsg(s, 200)
        assert e.value.errno == errno.ENOTCONN
    finally:
        close_all(c, s, ls)


def test_datagrams_sent_before_a_reset_close_are_read(net):
    """The carrier itself: a peer that closes with datagrams of ours unread in its end resets the
    connection, and Linux reports ECONNRESET once, ahead of what the peer sent before closing. The
    path reads those datagrams and then the end, instead of taking the reset for the end."""
    from wrappers.quic import carriers as CR

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    path = CR.SeqpacketPath(ours, CR.Wire(None, ("127.0.0.1", 1), ("127.0.0.2", 2), lambda at, cb: None))
    try:
        path.send(b"HANDSHAKE_DONE, never read", 0.0)
        theirs.send(b"client Finished")
        theirs.send(b"CONNECTION_CLOSE")
        theirs.close()  # with our datagram unread: ECONNRESET on our end
        assert path.read() == [b"client Finished", b"CONNECTION_CLOSE", b""]
    finally:
        path.close()


@pytest.mark.parametrize("carrier", ["seqpacket", "udp"])
def test_clients_that_close_right_after_the_handshake(pki, carrier):
    """A client that closes as soon as its handshake returns, in a loop against one listener, often
    before it has read the server's last flight: every server handshake completes and every server
    sees its client's close (the Finished and the close came after the reset and were lost)."""
    n = 60
    with emulated(carrier):
        ls = quic_socket()
        ls.bind(("127.0.0.11", 4450))
        ls.listen(8)
        seen: list[object] = []

        def serve() -> None:
            for _ in range(n):
                ls.settimeout(20)
                s, _ = ls.accept()
                try:
                    server_handshake(s, pki["psk"], None, timeout=20)
                    s.settimeout(20)
                    while s.recv(16) is not None:
                        pass
                except OSError as e:
                    seen.append(e.errno if e.errno != errno.ENOTCONN else "closed")
                finally:
                    s.close()

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        try:
            for _ in range(n):
                c = quic_socket()
                c.connect(("127.0.0.11", 4450))
                try:
                    client_handshake(c, pki["psk"], timeout=20)
                finally:
                    c.close()
            t.join(30)
        finally:
            ls.close()
        assert seen == ["closed"] * n, seen
