"""Timers run without the application: idle timeout, keepalive; every blocking call honours timeouts."""

from __future__ import annotations

import errno
import time

import pytest
from threadutil import joined

from wrappers.quic import (
    MSG_NOTIFICATION,
    MSG_STREAM_DONTWAIT,
    MSG_STREAM_FIN,
    MSG_STREAM_NEW,
    QUIC_EVENT_CONNECTION_CLOSE,
    QUIC_SOCKOPT_CONFIG,
    QUIC_SOCKOPT_EVENT,
    QUIC_SOCKOPT_STREAM_OPEN,
    QUIC_SOCKOPT_TRANSPORT_PARAM,
    SOL_QUIC,
    Config,
    Event,
    EventOption,
    StreamInfo,
    TransportParam,
    client_handshake,
    quic_recvmsg,
    quic_sendmsg,
)

from .conftest import close_all, open_pair, quic_socket


def _idle(seconds: float):
    def setup(s):
        s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_TRANSPORT_PARAM, TransportParam(max_idle_timeout=int(seconds * 1e6)).pack())
        s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_EVENT, EventOption(QUIC_EVENT_CONNECTION_CLOSE, 1).pack())
    return setup


def test_idle_timeout_fires_while_the_application_sleeps(net, pki):
    c, s, ls = open_pair("psk", pki, setup_listener=_idle(1), setup_client=_idle(1))
    try:
        time.sleep(1.6)  # nobody calls in: the engine's timer must close the connection
        data, _, flags = quic_recvmsg(c, 200)
        assert flags & MSG_NOTIFICATION
        ev = Event.unpack(data)
        assert ev.type == QUIC_EVENT_CONNECTION_CLOSE
        cc = ev.value()
        assert (cc.errcode, cc.frame, cc.phrase) == (0, 0, b"")
        with pytest.raises(OSError) as e:
            c.recv(10)
        assert e.value.errno == errno.ENOTCONN
        with pytest.raises(OSError) as e:
            c.send(b"x", MSG_STREAM_NEW)
        assert e.value.errno == errno.EPIPE
    finally:
        close_all(c, s, ls)


def test_keepalive_keeps_an_idle_connection_up(net, pki):
    def client(sock):
        _idle(3)(sock)
        sock.setsockopt(SOL_QUIC, QUIC_SOCKOPT_CONFIG, Config(keepalive_probe_interval=1_500_000).pack())

    c, s, ls = open_pair("psk", pki, setup_listener=_idle(3), setup_client=client)
    try:
        time.sleep(4.5)  # longer than the idle timeout
        quic_sendmsg(c, b"still here", -1, MSG_STREAM_NEW | MSG_STREAM_FIN)
        s.settimeout(3)
        assert quic_recvmsg(s, 100)[0] == b"still here"
    finally:
        close_all(c, s, ls)


def test_blocking_timeouts(net, pki):
    c, s, ls = open_pair("psk", pki)
    try:
        c.settimeout(0.3)
        t0 = time.monotonic()
        with pytest.raises(BlockingIOError):
            c.recv(10)
        assert 0.25 <= time.monotonic() - t0 < 2
        c.setblocking(False)
        with pytest.raises(OSError) as e:
            c.recv(10)
        assert e.value.errno == errno.EAGAIN
        c.settimeout(5)
        with pytest.raises(OSError) as e:
            c.recv(10, 0x40)  # MSG_DONTWAIT
        assert e.value.errno == errno.EAGAIN
        # a stream open over the peer's limit waits for MAX_STREAMS until SO_SNDTIMEO-like timeout
        c.settimeout(0.3)
        t0 = time.monotonic()
        with pytest.raises(OSError) as e:
            c.getsockopt(SOL_QUIC, QUIC_SOCKOPT_STREAM_OPEN, StreamInfo(4 * 150, 0).pack())
        assert e.value.errno == errno.EAGAIN and time.monotonic() - t0 >= 0.25
        with pytest.raises(OSError) as e:
            c.getsockopt(SOL_QUIC, QUIC_SOCKOPT_STREAM_OPEN, StreamInfo(4 * 150, MSG_STREAM_DONTWAIT).pack())
        assert e.value.errno == errno.EAGAIN
        ls.settimeout(0.2)
        with pytest.raises(OSError) as e:
            ls.accept()
        assert e.value.errno == errno.EAGAIN
    finally:
        close_all(c, s, ls)


def test_handshake_times_out_without_a_listener(net, pki):
    c = quic_socket()
    c.connect(("127.0.0.11", 4433))
    t0 = time.monotonic()
    with pytest.raises(OSError) as e:
        client_handshake(c, pki["psk"], timeout=0.5)
    assert e.value.errno == errno.ETIMEDOUT
    assert time.monotonic() - t0 < 3
    close_all(c)


def test_shutdown_wakes_blocked_calls(net, pki):
    import threading

    ls = quic_socket()
    ls.bind(("127.0.0.11", 0))
    ls.listen(1)
    box = {}

    def blocked_accept():
        try:
            ls.accept()
        except OSError as e:
            box["accept"] = e.errno

    t = threading.Thread(target=blocked_accept)
    t.start()
    time.sleep(0.2)
    ls.shutdown(2)
    joined(t, 3)
    assert box.get("accept") == errno.EINVAL

    c, s, ls2 = open_pair("psk", pki)

    def blocked_recv():
        try:
            c.recv(10)
        except OSError as e:
            box["recv"] = e.errno

    t = threading.Thread(target=blocked_recv)
    t.start()
    time.sleep(0.2)
    c.shutdown(1)
    joined(t, 3)
    assert box.get("recv") == errno.ENOTCONN
    close_all(c, s, ls, ls2)


def test_back_pressure_when_the_receiver_does_not_read(net, pki):
    """Credit returns only as the application consumes (quic.ko's window): a sender facing a reader that
    sleeps gets EAGAIN after about the receive window plus its own send buffer, not after everything."""
    c, s, ls = open_pair("psk", pki)
    block = bytes(65536)
    sent = 0
    try:
        c.setblocking(False)
        quic_sendmsg(c, block, -1, MSG_STREAM_NEW)
        sent += len(block)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sent < 64 * 1024 * 1024:
            try:
                sent += quic_sendmsg(c, block, 0, 0)
            except OSError as e:
                assert e.errno in (errno.EAGAIN, errno.ENOSPC)  # ENOSPC: stream flow control, cmsg given
                time.sleep(0.2)
                try:
                    sent += quic_sendmsg(c, block, 0, 0)
                except OSError:
                    break
        assert sent < 24 * 1024 * 1024, f"{sent} bytes accepted with nobody reading"
        with s._engine.lock:
            queued = sum(len(x) for x in s._link.outq)
        assert queued <= 2 * 1024 * 1024
        # the reader catches up and everything arrives
        c.setblocking(True)
        c.settimeout(10)
        quic_sendmsg(c, b"end", 0, MSG_STREAM_FIN)
        s.settimeout(10)
        got = 0
        while True:
            data, _, flags = quic_recvmsg(s, 1 << 20)
            got += len(data)
            if flags & MSG_STREAM_FIN:
                break
        assert got == sent + 3
    finally:
        close_all(c, s, ls)


def test_stream_max_data_event(net, pki):
    from wrappers.quic import (
        MSG_NOTIFICATION,
        QUIC_EVENT_STREAM_MAX_DATA,
        QUIC_SOCKOPT_EVENT,
        SOL_QUIC,
        Event,
        EventOption,
    )

    c, s, ls = open_pair("psk", pki)
    try:
        c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_EVENT, EventOption(QUIC_EVENT_STREAM_MAX_DATA, 1).pack())
        blob = bytes(65536)
        quic_sendmsg(c, blob, -1, MSG_STREAM_NEW)
        for _ in range(15):
            quic_sendmsg(c, blob, 0, 0)
        s.settimeout(5)
        got = 0
        while got < 16 * 65536:
            got += len(quic_recvmsg(s, 1 << 20)[0])
        c.settimeout(5)
        data, _, flags = quic_recvmsg(c, 100)
        assert flags & MSG_NOTIFICATION
        ev = Event.unpack(data)
        assert ev.type == QUIC_EVENT_STREAM_MAX_DATA
        md = ev.value()
        assert md.id == 0 and md.max_data > 65535 * 16
    finally:
        close_all(c, s, ls)
