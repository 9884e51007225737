"""Bad input: every call quic.ko refuses gives its errno as OSError (never another exception), and
garbage or truncated datagrams on the carrier are dropped and counted while the connection lives on."""

from __future__ import annotations

import _socket
import errno
import os
import socket

import pytest
from threadutil import joined

from wrappers.quic import (
    MSG_DATAGRAM,
    MSG_EOR,
    MSG_STREAM_FIN,
    MSG_STREAM_NEW,
    QUIC_CRYPTO_INITIAL,
    QUIC_SOCKOPT_ALPN,
    QUIC_SOCKOPT_CONFIG,
    QUIC_SOCKOPT_CONNECTION_ID,
    QUIC_SOCKOPT_CRYPTO_SECRET,
    QUIC_SOCKOPT_EVENT,
    QUIC_SOCKOPT_KEY_UPDATE,
    QUIC_SOCKOPT_SESSION_TICKET,
    QUIC_SOCKOPT_STREAM_OPEN,
    QUIC_SOCKOPT_STREAM_RESET,
    QUIC_SOCKOPT_STREAM_STOP_SENDING,
    QUIC_SOCKOPT_TOKEN,
    QUIC_SOCKOPT_TRANSPORT_PARAM,
    SOL_QUIC,
    Config,
    ConnectionIdInfo,
    CryptoSecret,
    ErrInfo,
    EventOption,
    StreamInfo,
    TransportParam,
    quic_recvmsg,
    quic_sendmsg,
    server_handshake,
    stream_info_cmsg,
)

from .conftest import close_all, open_pair, quic_socket


def err_of(fn) -> int:
    with pytest.raises(OSError) as e:
        fn()
    return int(e.value.errno or 0)


def test_option_errnos_before_connect(net):
    s = quic_socket()
    try:
        assert err_of(lambda: s.setsockopt(SOL_QUIC, 99, b"x")) == errno.ENOPROTOOPT
        assert err_of(lambda: s.getsockopt(SOL_QUIC, QUIC_SOCKOPT_STREAM_RESET, 16)) == errno.ENOPROTOOPT
        assert err_of(lambda: s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_STREAM_OPEN, bytes(16))) == errno.ENOPROTOOPT
        assert err_of(lambda: s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_ALPN, b"a" * 4097)) == errno.EINVAL
        for t in (0, 10, 255):
            assert err_of(lambda t=t: s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_EVENT, EventOption(t, 1).pack())) == errno.EINVAL
        bad_tps = [TransportParam(max_idle_timeout=999_999), TransportParam(active_connection_id_limit=9),
                   TransportParam(max_udp_payload_size=1199), TransportParam(max_streams_bidi=4097),
                   TransportParam(max_datagram_frame_size=100), TransportParam(ack_delay_exponent=21)]
        for tp in bad_tps:
            assert err_of(lambda tp=tp: s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_TRANSPORT_PARAM, tp.pack())) == errno.EINVAL
        for cfg in (Config(congestion_control_algo=2), Config(initial_smoothed_rtt=999), Config(payload_cipher_type=50),
                    Config(keepalive_probe_interval=1_000_000)):
            assert err_of(lambda cfg=cfg: s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_CONFIG, cfg.pack())) == errno.EINVAL
        assert err_of(lambda: s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_ALPN, b"")) == errno.EINVAL
        assert err_of(lambda: s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_ALPN, b"x" * 129)) == errno.EINVAL
        assert err_of(lambda: s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_SESSION_TICKET, bytes(63))) == errno.EINVAL
        assert err_of(lambda: s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_SESSION_TICKET, bytes(4097))) == errno.EINVAL
        assert err_of(lambda: s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_TOKEN, bytes(121))) == errno.EINVAL
        assert err_of(lambda: s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_KEY_UPDATE, None, 0)) == errno.EPIPE
        assert err_of(lambda: s.getsockopt(SOL_QUIC, QUIC_SOCKOPT_CONNECTION_ID, ConnectionIdInfo().pack())) == errno.EINVAL
        assert err_of(lambda: s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_CRYPTO_SECRET,
                                           CryptoSecret(1, QUIC_CRYPTO_INITIAL, 51).pack())) == errno.EINVAL
        assert err_of(lambda: s.send(b"x")) == errno.EPIPE
        assert err_of(lambda: s.recv(10)) == errno.ENOTCONN
        assert err_of(lambda: s.accept()) == errno.EINVAL
        assert err_of(lambda: s.listen(0)) == errno.EINVAL
        assert err_of(lambda: s.connect(("0.0.0.0", 443))) == errno.EINVAL
        assert err_of(lambda: s.connect(("not an address", 443))) == errno.EINVAL
        s.bind(("127.0.0.11", 0))
        assert err_of(lambda: s.bind(("127.0.0.11", 0))) == errno.EINVAL
        # valid values are accepted and read back
        s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_ALPN, b"smbd, h3, ksmbd")
        assert s.getsockopt(SOL_QUIC, QUIC_SOCKOPT_ALPN, 64) == b"smbd,h3,ksmbd"
        assert err_of(lambda: s.getsockopt(SOL_QUIC, QUIC_SOCKOPT_ALPN, 4)) == errno.EINVAL
    finally:
        close_all(s)


def test_listener_errnos(net):
    ls = quic_socket()
    ls.bind(("127.0.0.11", 0))
    ls.listen(2)
    try:
        assert err_of(lambda: ls.setsockopt(SOL_QUIC, QUIC_SOCKOPT_ALPN, b"smb")) == errno.EINVAL
        assert err_of(lambda: ls.send(b"x", MSG_STREAM_NEW)) == errno.EPIPE
        assert err_of(lambda: ls.recv(10)) == errno.ENOTCONN
        assert err_of(lambda: ls.connect(("127.0.0.11", 443))) == errno.EINVAL
        assert err_of(lambda: server_handshake(ls, None, None)) == errno.EINVAL
        assert err_of(lambda: ls.getsockopt(SOL_QUIC, QUIC_SOCKOPT_SESSION_TICKET, 64)) == errno.EPIPE
        ls.listen(0)
        assert err_of(lambda: ls.accept()) == errno.EINVAL
    finally:
        close_all(ls)


def test_connection_errnos(net, pki):
    c, s, ls = open_pair("cert", pki)
    try:
        assert err_of(lambda: c.send(b"x")) == errno.EINVAL  # no stream yet and no MSG_SYN
        assert err_of(lambda: c.sendmsg([b"x"], [], MSG_EOR)) == errno.EINVAL
        assert err_of(lambda: c.sendmsg([b"x"], [(SOL_QUIC, 7, b"")])) == errno.EINVAL
        assert err_of(lambda: c.sendmsg([b"x"], [stream_info_cmsg(0, 0x1)])) == errno.EINVAL
        assert err_of(lambda: quic_sendmsg(c, b"", 0, MSG_STREAM_NEW)) == errno.EMSGSIZE
        assert err_of(lambda: c.sendmsg([b"x"], [], MSG_DATAGRAM)) == errno.EINVAL  # peer allows no datagrams
        assert err_of(lambda: quic_sendmsg(c, b"x", 3, 0)) == errno.EINVAL  # a server uni stream
        assert err_of(lambda: quic_sendmsg(c, b"x", 1, 0)) == errno.EINVAL  # a server bidi stream it never opened
        assert err_of(lambda: c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_STREAM_STOP_SENDING, ErrInfo(2, 1).pack())) == errno.EINVAL
        assert err_of(lambda: c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_STREAM_RESET, ErrInfo(100, 1).pack())) == errno.EINVAL
        assert err_of(lambda: c.getsockopt(SOL_QUIC, QUIC_SOCKOPT_STREAM_OPEN, StreamInfo(1, 0).pack())) == errno.EINVAL
        assert err_of(lambda: c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_TRANSPORT_PARAM, TransportParam(max_data=4096).pack())) == errno.EINVAL
        assert err_of(lambda: s.getsockopt(SOL_QUIC, QUIC_SOCKOPT_TOKEN, 64)) == errno.EINVAL
        assert err_of(lambda: c.connect(s.getsockname())) == errno.EINVAL
        assert len(s.getsockopt(SOL_QUIC, QUIC_SOCKOPT_SESSION_TICKET, 64)) == 64
        quic_sendmsg(c, b"after errors", 0, MSG_STREAM_NEW | MSG_STREAM_FIN)
        assert quic_recvmsg(s, 100)[0] == b"after errors"
    finally:
        close_all(c, s, ls)


def test_garbage_datagrams_are_dropped_and_counted(net, pki):
    c, s, ls = open_pair("psk", pki)
    try:
        raw = c._link.path.sock  # the client's SEQPACKET path: inject straight onto the carrier
        junk = [b"", b"\x00", b"\x40" + os.urandom(30), b"\xc0" + os.urandom(5), b"\xc3\x00\x00\x00\x01" + os.urandom(1300),
                os.urandom(1500), b"\x40" + bytes(8)]
        before = s.quic_stats()["dropped"]
        for j in junk:
            if j:
                raw.send(j)
        quic_sendmsg(c, b"still alive", -1, MSG_STREAM_NEW | MSG_STREAM_FIN)
        s.settimeout(3)
        assert quic_recvmsg(s, 100)[0] == b"still alive"
        assert s.quic_stats()["dropped"] - before == len([j for j in junk if j])
        # garbage to the listener: dropped and counted, the listener still accepts
        u = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        u.connect(ls._listener.carrier.getsockname())
        u.send(b"\xc0garbage")
        u.send(os.urandom(1300))
        import time

        time.sleep(0.2)
        assert ls.quic_stats()["dropped"] >= 1
        u.close()
    finally:
        close_all(c, s, ls)


def test_truncated_real_datagram(net, pki):
    c, s, ls = open_pair("psk", pki)
    try:
        raw = c._link.path.sock
        # a real 1-RTT packet cut short fails authentication and is dropped
        link = c._link
        quic_sendmsg(c, b"x" * 100, -1, MSG_STREAM_NEW)
        q = link.core.quic
        from wrappers.quic.loop import get_engine

        eng = get_engine()
        with eng.lock:
            q.send_stream_data(0, b"y" * 50)
            dgrams = [d for d, _ in q.datagrams_to_send(__import__("time").monotonic())]
        before = s.quic_stats()["dropped"]
        for d in dgrams:
            raw.send(d[: len(d) // 2])
        for d in dgrams:
            raw.send(d)
        assert quic_recvmsg(s, 1000)[0] in (b"x" * 100, b"x" * 100 + b"y" * 50)
        import time

        time.sleep(0.1)
        assert s.quic_stats()["dropped"] - before >= len(dgrams)
    finally:
        close_all(c, s, ls)


def test_not_a_quic_socket(net):
    from wrappers.quic import client_handshake

    plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    assert err_of(lambda: client_handshake(plain)) == errno.ENOTSOCK
    plain.close()


def _handshake_fails(pki, client_fn, server_fn):
    import threading

    ls = quic_socket()
    ls.bind(("127.0.0.11", 0))
    ls.listen(1)
    box = {}

    def serve():
        try:
            s, _ = ls.accept()
            box["s"] = s
            server_fn(s)
        except OSError as e:
            box["server"] = e.errno

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    c = quic_socket()
    c.connect(ls.getsockname())
    try:
        with pytest.raises(OSError) as e:
            client_fn(c)
        assert e.value.errno in (errno.ECONNREFUSED, errno.ETIMEDOUT)
        joined(t, 5)
        assert box.get("server") in (errno.ECONNREFUSED, errno.ETIMEDOUT)
    finally:
        close_all(c, box.get("s"), ls)


def test_certificate_from_an_unknown_ca_fails_cleanly(net, pki, tmp_path):
    from wrappers.quic import client_handshake

    from .certs import make_pki

    other = make_pki(str(tmp_path))
    _handshake_fails(pki, lambda c: client_handshake(c, None, "server.test", cafile=other["ca"], timeout=3),
                     lambda s: server_handshake(s, pki["server_key"], pki["server"], timeout=3))


def test_wrong_psk_fails_cleanly(net, pki, tmp_path):
    from wrappers.quic import client_handshake

    wrong = tmp_path / "wrong.psk"
    wrong.write_text("wirecheck:" + "00" * 32 + "\n")
    _handshake_fails(pki, lambda c: client_handshake(c, str(wrong), timeout=3),
                     lambda s: server_handshake(s, pki["psk"], None, timeout=3))


def test_a_failing_timer_callback_does_not_stop_the_engine(net, capfd):
    """A scheduled callback (a delayed datagram, an impairment timer) that raises is reported and the
    engine thread goes on: timers scheduled after it still run (the engine once died here of a
    NameError in its own error handler, and every socket of the process hung)."""
    import threading
    import time

    from wrappers.quic.loop import get_engine

    eng = get_engine()
    ran = threading.Event()

    def bad() -> None:
        raise RuntimeError("a timer callback that fails")

    with eng.lock:
        now = time.monotonic()
        eng.schedule(now, bad)
        eng.schedule(now + 0.05, ran.set)
        eng.kick()
    assert ran.wait(10), "the engine stopped running timers after a callback raised"
    assert eng._thread.is_alive()
    assert "a timer callback that fails" in capfd.readouterr().err
