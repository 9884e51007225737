"""Many streams in flight on one connection; a plain aioquic (asyncio, UDP) client talks to an
IPPROTO_QUIC listener over the emulated-UDP carrier; qlog per connection when QLOGDIR is set."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import threading

from threadutil import joined

from wrappers.quic import (
    MSG_STREAM_FIN,
    MSG_STREAM_NEW,
    QUIC_SOCKOPT_ALPN,
    SOL_QUIC,
    quic_recvmsg,
    quic_sendmsg,
    server_handshake,
)

from .conftest import close_all, emulated, open_pair, quic_socket


def test_many_streams_in_flight(net, pki):
    c, s, ls = open_pair("cert", pki)
    n = 60
    try:
        # open n bidi streams, interleave their data, finish them in reverse order
        for i in range(n):
            quic_sendmsg(c, f"s{i}-a;".encode(), 4 * i, MSG_STREAM_NEW)
        for i in reversed(range(n)):
            quic_sendmsg(c, f"s{i}-b".encode(), 4 * i, MSG_STREAM_FIN)
        got: dict[int, bytes] = {}
        done = set()
        s.settimeout(5)
        while len(done) < n:
            data, sid, flags = quic_recvmsg(s, 4096)
            got[sid] = got.get(sid, b"") + data
            if flags & MSG_STREAM_FIN:
                done.add(sid)
                quic_sendmsg(s, got[sid][::-1], sid, MSG_STREAM_FIN)
        assert all(got[4 * i] == f"s{i}-a;s{i}-b".encode() for i in range(n))
        echoed: dict[int, bytes] = {}
        c.settimeout(5)
        while len(echoed) < n:
            data, sid, flags = quic_recvmsg(c, 4096)
            echoed[sid] = echoed.get(sid, b"") + data
        assert all(echoed[4 * i] == f"s{i}-a;s{i}-b".encode()[::-1] for i in range(n))
    finally:
        close_all(c, s, ls)


def test_plain_aioquic_client_over_emulated_udp(pki):
    from aioquic.asyncio import connect
    from aioquic.quic.configuration import QuicConfiguration

    with emulated("udp"):
        # aioquic's client always opens a dual-stack AF_INET6 socket, so meet it on the emulated IPv6 address
        ls = quic_socket(socket.AF_INET6)
        ls.bind(("fd00::5357:5f0b", 4433))
        ls.setsockopt(SOL_QUIC, QUIC_SOCKOPT_ALPN, b"smb")
        ls.listen(2)
        box: dict = {}

        def serve():
            try:
                ls.settimeout(5)
                s, _ = ls.accept()
                server_handshake(s, pki["server_key"], pki["server"], timeout=5)
                data, sid, flags = quic_recvmsg(s, 100)
                quic_sendmsg(s, data.upper(), sid, MSG_STREAM_FIN)
                box["s"] = s
            except BaseException as e:
                box["e"] = e

        t = threading.Thread(target=serve, daemon=True)
        t.start()

        async def client() -> bytes:
            cfg = QuicConfiguration(is_client=True, alpn_protocols=["smb"], server_name="server.test",
                                    verify_mode=ssl.CERT_REQUIRED)
            cfg.load_verify_locations(cafile=pki["ca"])
            async with connect("fd00::5357:5f0b", 4433, configuration=cfg) as conn:
                reader, writer = await conn.create_stream()
                writer.write(b"hello from plain aioquic")
                writer.write_eof()
                return await asyncio.wait_for(reader.read(), 5)

        assert asyncio.run(asyncio.wait_for(client(), 10)) == b"HELLO FROM PLAIN AIOQUIC"
        joined(t, 5)
        assert "e" not in box, box.get("e")
        close_all(box.get("s"), ls)


def test_qlog_per_connection(net, pki, tmp_path, monkeypatch):
    monkeypatch.setenv("QLOGDIR", str(tmp_path / "qlog"))
    c, s, ls = open_pair("psk", pki)
    quic_sendmsg(c, b"qlog", -1, MSG_STREAM_NEW | MSG_STREAM_FIN)
    assert quic_recvmsg(s, 10)[0] == b"qlog"
    close_all(c, s, ls)
    import time

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(os.listdir(tmp_path / "qlog")) < 2:
        time.sleep(0.1)
    names = os.listdir(tmp_path / "qlog")
    assert len(names) >= 2 and all(n.endswith(".qlog") for n in names)


def _migrate_and_echo(pki):
    from wrappers.quic import (
        QUIC_EVENT_CONNECTION_MIGRATION,
        QUIC_SOCKOPT_CONNECTION_MIGRATION,
        QUIC_SOCKOPT_EVENT,
        EventOption,
        sockaddr_in,
    )

    c, s, ls = open_pair("psk", pki)
    try:
        for sock in (c, s):
            sock.setsockopt(SOL_QUIC, QUIC_SOCKOPT_EVENT, EventOption(QUIC_EVENT_CONNECTION_MIGRATION, 1).pack())
        host, port = c.getsockname()[:2]
        old_peer = s.getpeername()
        c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_CONNECTION_MIGRATION, sockaddr_in(host, port + 1))
        quic_sendmsg(c, b"moved", -1, MSG_STREAM_NEW | MSG_STREAM_FIN)
        s.settimeout(5)
        c.settimeout(5)
        data, sid, _ = quic_recvmsg(s, 100)
        while data != b"moved":  # the server's migration event may come first
            data, sid, _ = quic_recvmsg(s, 100)
        quic_sendmsg(s, b"seen", sid, MSG_STREAM_FIN)
        data, _, flags = quic_recvmsg(c, 100)
        assert data == bytes([QUIC_EVENT_CONNECTION_MIGRATION, 1])
        assert quic_recvmsg(c, 100)[0] == b"seen"
        assert c.getsockname()[1] == port + 1
        import time

        deadline = time.monotonic() + 3
        while s.getpeername() == old_peer and time.monotonic() < deadline:
            time.sleep(0.05)
        assert s.getpeername()[1] == port + 1
    finally:
        close_all(c, s, ls)


def test_client_migration_seqpacket(net, pki):
    _migrate_and_echo(pki)


def test_client_migration_emulated_udp(pki):
    with emulated("udp"):
        _migrate_and_echo(pki)
