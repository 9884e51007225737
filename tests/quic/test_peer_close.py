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
    quic_recvmsg,
    quic_sendmsg,
)

from .conftest import close_all, open_pair

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
