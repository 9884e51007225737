"""tests/func_test.c CLOSE TEST (5 cases, numbered 3-7 as in func_test.c), PSK and certificate."""

from __future__ import annotations

from wrappers.quic import (
    MSG_NOTIFICATION,
    MSG_STREAM_FIN,
    MSG_STREAM_NEW,
    QUIC_EVENT_CONNECTION_CLOSE,
    QUIC_SOCKOPT_CONNECTION_CLOSE,
    QUIC_SOCKOPT_EVENT,
    SOL_QUIC,
    ConnectionClose,
    Event,
    EventOption,
    quic_recvmsg,
    quic_sendmsg,
)


def test03(func):
    """get non-setup close info from socket"""
    info = func.c.getsockopt(SOL_QUIC, QUIC_SOCKOPT_CONNECTION_CLOSE, 100)
    assert len(info) == 72


def test04(func):
    """set and get close info from socket"""
    c = func.c
    raw = ConnectionClose(10, 1, b"this is app err").pack()
    c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_CONNECTION_CLOSE, raw[:8 + len(b"this is app err") + 1])
    got = ConnectionClose.unpack(c.getsockopt(SOL_QUIC, QUIC_SOCKOPT_CONNECTION_CLOSE, 100))
    assert (got.errcode, got.frame, got.phrase) == (10, 0, b"this is app err")


def test05(func):
    """enable close event"""
    func.c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_EVENT, EventOption(QUIC_EVENT_CONNECTION_CLOSE, 1).pack())


def test06(func):
    """set peer close info"""
    c = func.c
    quic_sendmsg(c, b"client close", 64, MSG_STREAM_NEW | MSG_STREAM_FIN)
    data, sid, _ = quic_recvmsg(c, 4096)
    assert (data, sid) == (b"client close", 64)


def test07(func):
    """received the peer close event"""
    data, _, flags = quic_recvmsg(func.c, 4096)
    assert flags & MSG_NOTIFICATION
    ev = Event.unpack(data)
    assert ev.type == QUIC_EVENT_CONNECTION_CLOSE
    cc = ev.value()
    assert (cc.errcode, cc.frame, cc.phrase) == (10, 0, b"this is app err")
