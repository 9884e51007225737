"""Engine, socket API, handshakes and one-stream data on the default carrier."""

from __future__ import annotations

import errno
import socket

import pytest
from threadutil import joined

from wrappers.quic import (
    MSG_STREAM_FIN,
    MSG_STREAM_NEW,
    QuicSocket,
    quic_recvmsg,
    quic_sendmsg,
)

from .conftest import close_all, open_pair, quic_socket


def test_factory_returns_quic_socket(net):
    s = quic_socket()
    assert s.family == socket.AF_INET and s.type == socket.SOCK_DGRAM and s.proto == 261
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL) == 261
    s.close()


def test_echo_one_stream(net, pki, mode):
    c, s, ls = open_pair(mode, pki)
    try:
        assert quic_sendmsg(c, b"hello quic server!", -1, MSG_STREAM_NEW | MSG_STREAM_FIN) == 18
        data, sid, flags = quic_recvmsg(s, 100)
        assert (data, sid) == (b"hello quic server!", 0) and flags & MSG_STREAM_FIN
        quic_sendmsg(s, b"hello quic client!", sid, MSG_STREAM_FIN)
        data, sid, flags = quic_recvmsg(c, 100)
        assert (data, sid) == (b"hello quic client!", 0) and flags & MSG_STREAM_FIN
    finally:
        close_all(c, s, ls)


def test_smb_style_plain_send_recv(net, pki):
    c, s, ls = open_pair("psk", pki)
    try:
        c.send(b"negotiate", MSG_STREAM_NEW)
        assert s.recv(100) == b"negotiate"
        s.send(b"response")
        assert c.recv(100) == b"response"
        for _ in range(20):
            c.send(b"x" * 1000)
            got = b""
            while len(got) < 1000:
                got += s.recv(4096)
            assert got == b"x" * 1000
    finally:
        close_all(c, s, ls)


def test_large_transfer(net, pki):
    c, s, ls = open_pair("psk", pki)
    blob = bytes(range(256)) * 4096  # 1 MiB
    try:
        import threading

        def send():
            for off in range(0, len(blob), 65536):
                quic_sendmsg(c, blob[off:off + 65536], 0 if off else -1,
                             (MSG_STREAM_NEW if off == 0 else 0) | (MSG_STREAM_FIN if off + 65536 >= len(blob) else 0))

        t = threading.Thread(target=send)
        t.start()
        got = bytearray()
        s.settimeout(10)
        while True:
            data, sid, flags = quic_recvmsg(s, 65536)
            got += data
            if flags & MSG_STREAM_FIN:
                break
        joined(t, 10)
        assert bytes(got) == blob
    finally:
        close_all(c, s, ls)


def test_recv_on_listener_and_unconnected(net):
    ls = quic_socket()
    ls.bind(("127.0.0.11", 0))
    ls.listen(1)
    with pytest.raises(OSError) as e:
        ls.recv(10)
    assert e.value.errno == errno.ENOTCONN
    u = quic_socket()
    with pytest.raises(OSError) as e:
        u.send(b"x")
    assert e.value.errno == errno.EPIPE
    close_all(ls, u)


def test_real_udp_without_socket_dir(pki):
    def make() -> QuicSocket:
        return QuicSocket(socket.AF_INET, socket.SOCK_DGRAM)

    c, s, ls = open_pair("cert", pki, addr=("127.0.0.1", 0), make=make)
    try:
        quic_sendmsg(c, b"over real udp", -1, MSG_STREAM_NEW | MSG_STREAM_FIN)
        assert quic_recvmsg(s, 100)[0] == b"over real udp"
    finally:
        close_all(c, s, ls)


def test_session_ticket_event_and_option(net, pki, mode):
    from wrappers.quic import (
        MSG_NOTIFICATION,
        QUIC_EVENT_NEW_SESSION_TICKET,
        QUIC_SOCKOPT_EVENT,
        QUIC_SOCKOPT_SESSION_TICKET,
        SOL_QUIC,
        Event,
        EventOption,
    )

    def ev(s):
        s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_EVENT, EventOption(QUIC_EVENT_NEW_SESSION_TICKET, 1).pack())

    c, s, ls = open_pair(mode, pki, setup_client=ev)
    try:
        c.settimeout(3)
        data, _, flags = quic_recvmsg(c, 4096)
        assert flags & MSG_NOTIFICATION
        e = Event.unpack(data)
        assert e.type == QUIC_EVENT_NEW_SESSION_TICKET and e.payload[0] == 4  # HandshakeType new_session_ticket
        assert c.getsockopt(SOL_QUIC, QUIC_SOCKOPT_SESSION_TICKET, 4096) == e.payload
        key = s.getsockopt(SOL_QUIC, QUIC_SOCKOPT_SESSION_TICKET, 64)
        assert len(key) == 64 and key == s.getsockopt(SOL_QUIC, QUIC_SOCKOPT_SESSION_TICKET, 64)
    finally:
        close_all(c, s, ls)


def test_config_version_2_and_cubic(net, pki):
    from wrappers.quic import QUIC_SOCKOPT_CONFIG, QUIC_VERSION_V2, SOL_QUIC, Config

    def v2(s):
        s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_CONFIG, Config(version=QUIC_VERSION_V2, congestion_control_algo=1).pack())

    c, s, ls = open_pair("cert", pki, setup_client=v2)
    try:
        # the first Initial is version 2; the server may keep it or upgrade compatibly (RFC 9368)
        assert c._conn.quic.configuration.original_version == QUIC_VERSION_V2
        assert c._conn.quic.configuration.congestion_control_algorithm == "cubic"
        assert Config.unpack(c.getsockopt(SOL_QUIC, QUIC_SOCKOPT_CONFIG, 28)).version == QUIC_VERSION_V2
        quic_sendmsg(c, b"v2", -1, MSG_STREAM_NEW | MSG_STREAM_FIN)
        assert quic_recvmsg(s, 10)[0] == b"v2"
    finally:
        close_all(c, s, ls)


def test_peer_transport_parameters_report_the_peers_max_ack_delay(net, pki):
    """getsockopt(TRANSPORT_PARAM, remote=1) reports what the peer announced. aioquic announces
    max_ack_delay 25 ms (RFC 9000 18.2's default) and keeps the peer's value in its loss recovery;
    a private name read through a hasattr() fallback reported 0 here before (see aio/connection.py)."""
    from wrappers.quic import QUIC_SOCKOPT_TRANSPORT_PARAM, SOL_QUIC, TransportParam

    c, s, ls = open_pair("psk", pki)
    try:
        for sock in (c, s):
            tp = TransportParam.unpack(sock.getsockopt(SOL_QUIC, QUIC_SOCKOPT_TRANSPORT_PARAM,
                                                       TransportParam(remote=1).pack()))
            assert tp.max_ack_delay == 25_000
            assert tp.max_idle_timeout > 0 and tp.max_data > 0
    finally:
        close_all(c, s, ls)
