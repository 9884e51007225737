"""quic.ko's raw handshake interface (the one libquic drives): the application runs TLS and the socket
carries CRYPTO bytes per level, installs the secrets and exchanges the transport parameters.

The application side is rawapp.py: libquic's handshake loop with aioquic's tls.Context as its TLS
library. Its peer is a raw socket as well, or a socket running the engine's own TLS
(client_handshake / server_handshake). Captures are read back with tshark and the key log.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from typing import Any

import pytest
from tsharkutil import fields

from wrappers.quic import (
    MSG_QUIC_NOTIFICATION,
    MSG_STREAM_FIN,
    MSG_STREAM_NEW,
    QUIC_CRYPTO_APP,
    QUIC_CRYPTO_EARLY,
    QUIC_CRYPTO_HANDSHAKE,
    QUIC_CRYPTO_INITIAL,
    QUIC_EVENT_NEW_SESSION_TICKET,
    QUIC_HANDSHAKE_INFO,
    QUIC_SOCKOPT_CONFIG,
    QUIC_SOCKOPT_CRYPTO_SECRET,
    QUIC_SOCKOPT_EVENT,
    QUIC_SOCKOPT_SESSION_TICKET,
    QUIC_SOCKOPT_TOKEN,
    QUIC_SOCKOPT_TRANSPORT_PARAM,
    QUIC_SOCKOPT_TRANSPORT_PARAM_EXT,
    QUIC_VERSION_V2,
    SOL_QUIC,
    Config,
    CryptoSecret,
    EventOption,
    TransportParam,
    client_handshake,
    quic_recvmsg,
    quic_sendmsg,
    server_handshake,
)

from . import rawapp
from .conftest import close_all, emulated, quic_socket

ESTABLISHED, ESTABLISHING, CLOSED = 1, 3, 7
TIMEOUT = 10.0


def _psk(pki: dict[str, str]) -> tuple[bytes, bytes]:
    ident, key = open(pki["psk"]).read().split("\n")[0].split(":")
    return ident.encode(), bytes.fromhex(key)


def _client_app(mode: str, pki: dict[str, str], **kw: Any) -> rawapp.App:
    if mode == "psk":
        return rawapp.client_app(psk=_psk(pki), **kw)
    return rawapp.client_app(server_name="server.test", cafile=pki["ca"], **kw)


def _server_app(mode: str, pki: dict[str, str], **kw: Any) -> rawapp.App:
    if mode == "psk":
        return rawapp.server_app(psk=_psk(pki), **kw)
    return rawapp.server_app(cert_file=pki["server"], key_file=pki["server_key"], **kw)


class Pair:
    """One connection: a listener, a server thread and a client, each end raw or engine TLS."""

    def __init__(self, pki: dict[str, str], mode: str, client: str, server: str, *, ls: Any = None,
                 setup_client: Any = None, setup_server: Any = None, capp: rawapp.App | None = None,
                 sapp: rawapp.App | None = None):
        self.ls = ls if ls is not None else quic_socket()
        if ls is None:
            self.ls.bind(("127.0.0.11", 0))
            self.ls.listen(8)
        self.box: dict[str, Any] = {}
        self.events = []
        self.sapp = sapp if sapp is not None else (_server_app(mode, pki) if server == "raw" else None)
        self.capp = capp if capp is not None else (_client_app(mode, pki) if client == "raw" else None)

        def serve() -> None:
            try:
                self.ls.settimeout(TIMEOUT)
                s, _ = self.ls.accept()
                self.box["s"] = s
                if setup_server is not None:
                    setup_server(s)
                if self.sapp is not None:
                    rawapp.quic_handshake(s, self.sapp, TIMEOUT)
                elif mode == "psk":
                    server_handshake(s, pki["psk"], None, timeout=TIMEOUT)
                else:
                    server_handshake(s, pki["server_key"], pki["server"], timeout=TIMEOUT)
            except BaseException as e:  # reported by the client side
                self.box["e"] = e

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        self.c = c = quic_socket(self.ls.family)
        if setup_client is not None:
            setup_client(c)
        if c.quic_state == CLOSED:  # setup_client may have connected it (0-RTT data is sent after connect)
            c.connect(self.ls.getsockname())
        if self.capp is not None:
            rawapp.quic_handshake(c, self.capp, TIMEOUT)
        elif mode == "psk":
            client_handshake(c, pki["psk"], timeout=TIMEOUT)
        else:
            client_handshake(c, None, "server.test", cafile=pki["ca"], timeout=TIMEOUT)
        t.join(TIMEOUT + 5)
        if "e" in self.box:
            raise self.box["e"]
        self.s = self.box["s"]

    def echo(self, text: bytes) -> None:
        quic_sendmsg(self.c, text, -1, MSG_STREAM_NEW | MSG_STREAM_FIN)
        data, sid, flags = self.recv(self.s)
        assert data == text and flags & MSG_STREAM_FIN
        quic_sendmsg(self.s, text[::-1], sid, MSG_STREAM_FIN)
        data, _, flags = self.recv(self.c)
        assert data == text[::-1] and flags & MSG_STREAM_FIN

    events: list[bytes]

    def recv(self, sock: Any) -> tuple[bytes, int, int]:
        """The next stream data; events on the way are kept in ``events``."""
        while True:
            data, sid, flags = quic_recvmsg(sock, 4096)
            if not flags & MSG_QUIC_NOTIFICATION:
                return data, sid, flags
            self.events.append(data)

    def close(self, listener: bool = True) -> None:
        close_all(self.c, self.s, *([self.ls] if listener else []))


CLIENT_CALLS = [("role", 0), ("tp_get", None), ("send", 1), ("recv", 1), ("recv", 2), ("tp_set", None),
                ("send", 2)]
SERVER_CALLS = [("role", 1), ("recv", 1), ("tp_set", None), ("tp_get", None), ("send", 1), ("send", 2),
                ("recv", 2), ("secret_rx", 0)]


def _order(calls: list[tuple[str, int]]) -> list[tuple[str, int | None]]:
    """The calls without the secrets (their order inside one TLS step is the TLS library's)."""
    return [(k, None if k.startswith("tp_") else v) for k, v in calls if not k.startswith("secret")]


def _tls_types(pcap: str, keys: str) -> list[int]:
    rows = fields(pcap, ["tls.handshake.type"], display_filter="tls.handshake.type",
                  options=["-o", f"tls.keylog_file:{keys}"])
    return [int(t) for r in rows for t in r[0].split(",") if t]


def _stream_data(pcap: str, keys: str) -> list[bytes]:
    rows = fields(pcap, ["quic.header_form", "quic.stream_data"], display_filter="quic.stream_data",
                  options=["-o", f"tls.keylog_file:{keys}"])
    out = []
    for r in rows:
        assert "0" in r[0].split(","), r  # 1-RTT (short header) packets
        out += [bytes.fromhex(x.replace(":", "")) for x in r[1].split(",") if x]
    return out


@pytest.mark.parametrize("client,server", [("raw", "engine"), ("engine", "raw"), ("raw", "raw")])
def test_raw_handshake_and_decrypted_capture(client, server, mode, pki):
    with emulated() as n:
        p = Pair(pki, mode, client, server)
        try:
            assert p.c.quic_state == ESTABLISHED and p.s.quic_state == ESTABLISHED
            p.echo(b"hello quic server!")
            if p.capp is not None:
                order = _order(p.capp.calls)
                assert order[:len(CLIENT_CALLS)] == [(k, None if k.startswith("tp_") else v) for k, v in CLIENT_CALLS]
                # keys arrive for HANDSHAKE before its CRYPTO is read, APP before the Finished goes out
                kinds = [c for c in p.capp.calls if c[0] != "role"]
                assert kinds.index(("secret_rx", 2)) < kinds.index(("recv", 2))
                assert kinds.index(("secret_tx", 0)) < kinds.index(("send", 2))
            if p.sapp is not None:
                assert _order(p.sapp.calls)[:7] == [(k, None if k.startswith("tp_") else v)
                                                    for k, v in SERVER_CALLS[:7]]
                assert p.sapp.calls[-1] == ("secret_rx", 0)
        finally:
            p.close()
        types = _tls_types(n.pcap, n.keys)
        assert {1, 2, 8, 20} <= set(types)  # ClientHello, ServerHello, EncryptedExtensions, Finished
        assert (11 in types) == (mode == "cert")  # a Certificate only without the PSK
        data = _stream_data(n.pcap, n.keys)
        assert b"hello quic server!" in data and b"!revres ciuq olleh" in data


def test_raw_client_buffers_packets_that_arrive_before_their_keys(pki):
    """The server's Initial and Handshake packets come in one datagram (its ServerHello is sent with
    MSG_MORE), before the client's TLS has derived the Handshake keys. quic.ko keeps the Handshake
    packets and processes them when the key is installed; dropped, the server would have to send its
    flight again after a PTO."""
    with emulated() as n:
        p = Pair(pki, "cert", "raw", "raw")
        port = str(p.ls.getsockname()[1])
        try:
            p.echo(b"x")
            assert p.c._conn.quic.raw_replayed >= 1
        finally:
            p.close()
        rows = fields(n.pcap, ["quic.long.packet_type"],
                      display_filter=f"udp.srcport == {port} && quic.crypto.offset",
                      options=["-o", f"tls.keylog_file:{n.keys}"])
        assert sorted(set(rows[0][0].split(","))) == ["0", "2"], rows[0]  # ServerHello and EE.. together


@pytest.mark.parametrize("server", ["raw", "engine"])
def test_raw_v2(server, pki):
    def v2(c: Any) -> None:
        c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_CONFIG, Config(version=QUIC_VERSION_V2).pack())

    with emulated() as n:
        p = Pair(pki, "psk", "raw", server, setup_client=v2)
        try:
            p.echo(b"v2 data")
            assert p.c._conn.quic._version == QUIC_VERSION_V2 == p.s._conn.quic._version
        finally:
            p.close()
        rows = fields(n.pcap, ["quic.version"], display_filter="quic.header_form == 1")
        versions = {int(v, 16) for r in rows for v in r[0].split(",") if v}
        assert versions == {QUIC_VERSION_V2}
        assert b"v2 data" in _stream_data(n.pcap, n.keys)


@pytest.mark.parametrize("server", ["raw", "engine"])
def test_raw_resumption_with_ticket_and_token(server, pki):
    """First connection: the server's NewSessionTicket reaches the raw client as the
    NEW_SESSION_TICKET event and getsockopt(SESSION_TICKET), its NEW_TOKEN as getsockopt(TOKEN).
    Second connection: the token rides in the Initial and the ticket resumes (no Certificate)."""
    tickets: dict[bytes, Any] = {}
    with emulated() as n:
        ls = quic_socket()
        ls.bind(("127.0.0.11", 0))
        ls.listen(8)
        sapp = _server_app("cert", pki, tickets=tickets) if server == "raw" else None

        def events(c: Any) -> None:
            c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_EVENT, EventOption(QUIC_EVENT_NEW_SESSION_TICKET, 1).pack())

        capp = _client_app("cert", pki)
        p = Pair(pki, "cert", "raw", server, ls=ls, setup_client=events, capp=capp, sapp=sapp)
        try:
            p.echo(b"first")
            deadline = time.monotonic() + 5
            nst = b""
            while not nst and time.monotonic() < deadline:
                nst = p.c.getsockopt(SOL_QUIC, QUIC_SOCKOPT_SESSION_TICKET, 4096)
                time.sleep(0.02)
            assert nst[:1] == b"\x04"  # a TLS NewSessionTicket message
            assert p.events == [bytes([QUIC_EVENT_NEW_SESSION_TICKET]) + nst]
            ticket = rawapp.session_get_data(p.c, capp)
            assert ticket is not None
            token = p.c.getsockopt(SOL_QUIC, QUIC_SOCKOPT_TOKEN, 128)
            assert len(token) > 0
        finally:
            p.close(listener=False)

        def with_token(c: Any) -> None:
            c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_TOKEN, token)

        sapp2 = _server_app("cert", pki, tickets=tickets) if server == "raw" else None
        capp2 = _client_app("cert", pki, ticket=ticket)
        p2 = Pair(pki, "cert", "raw", server, ls=ls, setup_client=with_token, capp=capp2, sapp=sapp2)
        try:
            p2.echo(b"second")
            assert capp2.ctx.session_resumed
            if sapp2 is not None:
                assert sapp2.ctx.session_resumed
            else:
                assert p2.s._conn.session_resumed
        finally:
            p2.close()
        rows = fields(n.pcap, ["quic.connection.number", "tls.handshake.type"],
                      display_filter="tls.handshake.type", options=["-o", f"tls.keylog_file:{n.keys}"])
        certs = {r[0] for r in rows if "11" in r[1].split(",")}
        conns = {r[0] for r in rows}
        assert len(conns) == 2 and len(certs) == 1  # the resumed connection has no Certificate
        tokens = fields(n.pcap, ["quic.connection.number", "quic.token_length"],
                        display_filter="quic.long.packet_type == 0 && quic.token_length > 0")
        assert tokens and {r[0] for r in tokens} == {max(conns)}


def _err(fn: Any) -> int:
    try:
        fn()
    except OSError as e:
        return e.errno or -1
    return 0


def _secret(level: int, send: int = 1, typ: int = 51) -> bytes:
    return CryptoSecret(send, level, typ, bytes(range(48))).pack()


def _hs(level: int) -> list[tuple[int, int, bytes]]:
    return [(SOL_QUIC, QUIC_HANDSHAKE_INFO, bytes([level]))]


def test_raw_calls_out_of_order_get_quic_ko_errnos(net, pki):
    s = quic_socket()
    ls = quic_socket()
    try:
        # not connected: CLOSED
        assert _err(lambda: s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_CRYPTO_SECRET, _secret(QUIC_CRYPTO_HANDSHAKE))) == errno.EINVAL
        assert _err(lambda: s.getsockopt(SOL_QUIC, QUIC_SOCKOPT_TRANSPORT_PARAM_EXT, 256)) == errno.EINVAL
        assert _err(lambda: s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_TRANSPORT_PARAM_EXT, b"\x01\x01\x01")) == errno.EINVAL
        assert _err(lambda: s.sendmsg([b"hello"], _hs(QUIC_CRYPTO_INITIAL))) == errno.EPIPE
        # a listener
        ls.bind(("127.0.0.11", 0))
        ls.listen(4)
        assert _err(lambda: ls.getsockopt(SOL_QUIC, QUIC_SOCKOPT_TRANSPORT_PARAM_EXT, 256)) == errno.EINVAL
        assert _err(lambda: ls.setsockopt(SOL_QUIC, QUIC_SOCKOPT_CRYPTO_SECRET, _secret(QUIC_CRYPTO_APP))) == errno.EINVAL
        # connected (ESTABLISHING): levels and keys
        s.connect(ls.getsockname())
        assert _err(lambda: s.sendmsg([b"x"], _hs(QUIC_CRYPTO_HANDSHAKE))) == errno.EINVAL  # no Handshake key yet
        assert _err(lambda: s.sendmsg([b"x"], _hs(QUIC_CRYPTO_APP))) == errno.EINVAL  # no 1-RTT key yet
        assert _err(lambda: s.sendmsg([b"x"], _hs(QUIC_CRYPTO_EARLY))) == errno.EINVAL
        assert _err(lambda: s.sendmsg([b"x"], _hs(4))) == errno.EINVAL
        assert _err(lambda: s.sendmsg([b""], _hs(QUIC_CRYPTO_INITIAL))) == errno.EMSGSIZE
        assert _err(lambda: s.sendmsg([b"x"], _hs(QUIC_CRYPTO_INITIAL), 0x80)) == errno.EINVAL  # MSG_EOR
        for bad in (_secret(QUIC_CRYPTO_INITIAL), _secret(4), _secret(QUIC_CRYPTO_HANDSHAKE, typ=0),
                    _secret(QUIC_CRYPTO_HANDSHAKE, typ=55), _secret(QUIC_CRYPTO_EARLY, send=0)):
            assert _err(lambda bad=bad: s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_CRYPTO_SECRET, bad)) == errno.EINVAL
        assert _err(lambda: s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_CRYPTO_SECRET,
                                         _secret(QUIC_CRYPTO_HANDSHAKE, typ=53))) == errno.EOPNOTSUPP
        assert _err(lambda: s.getsockopt(SOL_QUIC, QUIC_SOCKOPT_TRANSPORT_PARAM_EXT, 8)) == errno.EINVAL
        assert _err(lambda: s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_TRANSPORT_PARAM_EXT, bytes(513))) == errno.EINVAL
        # a secret before any CRYPTO: quic.ko does not parse TLS, it installs the key
        assert _err(lambda: s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_CRYPTO_SECRET, _secret(QUIC_CRYPTO_HANDSHAKE))) == 0
        assert s.sendmsg([b"x"], _hs(QUIC_CRYPTO_HANDSHAKE)) == 1  # that level now has a send key
        # the engine's own handshake cannot start on a raw socket
        assert _err(lambda: client_handshake(s, pki["psk"], timeout=1)) == errno.EINVAL
        # a peer's transport parameters that do not parse: EINVAL, and the connection is closed
        assert _err(lambda: s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_TRANSPORT_PARAM_EXT, b"\x40")) == errno.EINVAL
    finally:
        close_all(s, ls)


def test_raw_calls_after_the_handshake_and_on_engine_tls_sockets(net, pki):
    p = Pair(pki, "psk", "raw", "engine")
    try:
        c, s = p.c, p.s
        assert _err(lambda: c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_CRYPTO_SECRET, _secret(QUIC_CRYPTO_APP))) == errno.EINVAL
        assert _err(lambda: c.getsockopt(SOL_QUIC, QUIC_SOCKOPT_TRANSPORT_PARAM_EXT, 256)) == errno.EINVAL
        assert _err(lambda: c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_TRANSPORT_PARAM_EXT, b"")) == errno.EINVAL
        # a client drops its Initial keys when it sends its first Handshake packet (RFC 9001 4.9.1)
        assert _err(lambda: c.sendmsg([b"x"], _hs(QUIC_CRYPTO_INITIAL))) == errno.EINVAL
        # the engine-TLS server: its raw calls are refused, ESTABLISHED or not
        assert _err(lambda: s.sendmsg([b"x"], _hs(QUIC_CRYPTO_APP))) == errno.EINVAL
        assert _err(lambda: s.getsockopt(SOL_QUIC, QUIC_SOCKOPT_TRANSPORT_PARAM_EXT, 256)) == errno.EINVAL
        p.echo(b"still fine")
    finally:
        p.close()


def test_raw_recvmsg_item_rules(net, pki):
    """The ClientHello as the server reads it: whole with MSG_EOR and HANDSHAKE_INFO{INITIAL}; in two
    parts when the buffer is short (MSG_EOR only on the last); MSG_CTRUNC without cmsg room."""
    ls = quic_socket()
    ls.bind(("127.0.0.11", 0))
    ls.listen(4)
    ls.set_raw_handshake()  # accepted sockets start raw: the ClientHello is readable at once
    c = quic_socket()
    try:
        c.connect(ls.getsockname())
        capp = _client_app("psk", pki)
        t = threading.Thread(target=lambda: _err(lambda: rawapp.quic_handshake(c, capp, 3)), daemon=True)
        t.start()
        ls.settimeout(5)
        s, _ = ls.accept()
        import select

        assert select.select([s], [], [], 5)[0] == [s]  # readable before any recvmsg
        head, anc, flags, _ = s.recvmsg(10, socket.CMSG_SPACE(1), rawapp.MSG_DONTWAIT)
        assert len(head) == 10 and head[0] == 1 and not flags & 0x80  # ClientHello, no MSG_EOR yet
        assert anc == [(SOL_QUIC, QUIC_HANDSHAKE_INFO, bytes([QUIC_CRYPTO_INITIAL]))]
        rest, anc, flags, _ = s.recvmsg(65536, 0, rawapp.MSG_DONTWAIT)
        assert flags & 0x80 and flags & 0x8 and anc == []  # MSG_EOR, MSG_CTRUNC
        hello = head + rest
        assert int.from_bytes(hello[1:4], "big") + 4 == len(hello)
        assert s.quic_state == ESTABLISHING
        assert _err(lambda: server_handshake(s, pki["psk"], None, timeout=1)) == errno.EINVAL
        close_all(s)
        t.join(5)
    finally:
        close_all(c, ls)


def test_raw_zero_rtt(pki):
    """Resumption with early data, both ends raw: the client queues stream data before its handshake
    (after loading the saved peer parameters); its EARLY send secret releases it in 0-RTT packets
    behind the Initial; the server's EARLY receive secret decrypts them, and the data becomes
    readable only once the server is ESTABLISHED (libquic's loop reads nothing but handshake
    messages until then)."""
    tickets: dict[bytes, Any] = {}
    early = 0xFFFFFFFF  # RFC 9001 4.6.1: a QUIC ticket allowing 0-RTT carries this max_early_data_size
    with emulated() as n:
        ls = quic_socket()
        ls.bind(("127.0.0.11", 0))
        ls.listen(8)
        capp = _client_app("cert", pki)
        p = Pair(pki, "cert", "raw", "raw", ls=ls, capp=capp, sapp=_server_app("cert", pki, tickets=tickets,
                                                                                max_early_data=early))
        try:
            p.echo(b"first")
            saved = p.c.getsockopt(SOL_QUIC, QUIC_SOCKOPT_TRANSPORT_PARAM, TransportParam(remote=1).pack())
            deadline = time.monotonic() + 5
            ticket = None
            while ticket is None and time.monotonic() < deadline:
                ticket = rawapp.session_get_data(p.c, capp)
                time.sleep(0.02)
            assert ticket is not None and ticket.max_early_data_size == early
        finally:
            p.close(listener=False)

        def zero_rtt(c: Any) -> None:
            c.connect(ls.getsockname())
            c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_TRANSPORT_PARAM, saved)
            assert quic_sendmsg(c, b"sent in 0-RTT", -1, MSG_STREAM_NEW | MSG_STREAM_FIN) == 13

        sapp2 = _server_app("cert", pki, tickets=tickets, max_early_data=early)
        capp2 = _client_app("cert", pki, ticket=ticket)
        # the client's Finished comes late: the server's loop reads while only 0-RTT data is queued
        capp2.before_send = lambda level: time.sleep(0.5) if level == QUIC_CRYPTO_HANDSHAKE else None
        p2 = Pair(pki, "cert", "raw", "raw", ls=ls, setup_client=zero_rtt, capp=capp2, sapp=sapp2)
        try:
            assert capp2.ctx.early_data_accepted and sapp2.ctx.early_data_accepted
            assert ("secret_tx", QUIC_CRYPTO_EARLY) in capp2.calls and ("secret_rx", QUIC_CRYPTO_EARLY) in sapp2.calls
            data, sid, flags = p2.recv(p2.s)
            assert (data, sid) == (b"sent in 0-RTT", 0) and flags & MSG_STREAM_FIN
        finally:
            p2.close()
        rows = fields(n.pcap, ["quic.long.packet_type", "quic.stream_data"],
                      display_filter="quic.long.packet_type == 1 && quic.stream_data",
                      options=["-o", f"tls.keylog_file:{n.keys}"])
        assert any(b"sent in 0-RTT".hex() in r[1].replace(":", "") for r in rows), rows


@pytest.mark.parametrize("client,server", [("rawapp.py", "quic_echo"), ("quic_echo", "rawapp.py"),
                                           ("rawapp.py", "rawapp.py")])
def test_raw_peers_in_two_processes_under_wirecheck_exec(client, server, tmp_path, pki):
    """The raw handshake across processes on the emulated network, against the engine's TLS both
    ways; one pcap, decrypted with the key log both processes write."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from procutil import clean_env, wirecheck_exec

    here = Path(__file__).parent
    sockdir = tmp_path / "w"
    sockdir.mkdir(mode=0o700)
    pcap = tmp_path / "run.pcap"
    env = clean_env()
    env["PYTHONPATH"] = str(here.parents[1])
    def program(name: str) -> list[str]:  # rawapp.py, or the engine-TLS peer harness/peers/quic_echo.py
        return [str(here / name)] if name.endswith(".py") else ["-m", f"harness.peers.{name}"]

    srv = subprocess.Popen(wirecheck_exec(sockdir, sys.executable, *program(server), "server", "127.0.0.12", "443",
                                          pki["psk"], iface=12, pcap=pcap), env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout is not None
        assert srv.stdout.readline().strip() == "ready"
        out = subprocess.run(wirecheck_exec(sockdir, sys.executable, *program(client), "client", "127.0.0.12", "443",
                                            pki["psk"], "raw across processes", iface=11, pcap=pcap),
                             env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "RAW ACROSS PROCESSES"
        assert srv.wait(30) == 0
    finally:
        if srv.poll() is None:
            srv.kill()
    keys = os.fspath(tmp_path / "run.keys")
    data = _stream_data(os.fspath(pcap), keys)
    assert {b"raw across processes", b"RAW ACROSS PROCESSES"} <= set(data)
    assert 11 not in _tls_types(os.fspath(pcap), keys)  # PSK: no Certificate


def test_raw_version_negotiation_check_fails_with_eprotonosupport(net, pki):
    """A client that starts in an unknown version gets Version Negotiation and sends its
    application's ClientHello again in v1, unchanged: its transport parameters still name the first
    version, so the server's setsockopt(TRANSPORT_PARAM_EXT) fails the RFC 9368 check with
    EPROTONOSUPPORT and closes with VERSION_NEGOTIATION_ERROR; the client sees the close."""
    ls = quic_socket()
    ls.bind(("127.0.0.11", 0))
    ls.listen(4)
    c = quic_socket()
    box: dict[str, Any] = {}

    def serve() -> None:
        ls.settimeout(TIMEOUT)
        s, _ = ls.accept()
        box["s"] = s
        box["err"] = _err(lambda: rawapp.quic_handshake(s, _server_app("psk", pki), TIMEOUT))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_CONFIG, Config(version=123).pack())
        c.connect(ls.getsockname())
        assert _err(lambda: rawapp.quic_handshake(c, _client_app("psk", pki), TIMEOUT)) == errno.ENOTCONN
        t.join(TIMEOUT)
        assert box["err"] == errno.EPROTONOSUPPORT
        assert c._conn.peer_close is not None and c._conn.peer_close.errcode == 0x11
    finally:
        close_all(c, ls, *([box["s"]] if "s" in box else []))


@pytest.mark.parametrize("carrier", ["udp", "seqpacket6"])
def test_raw_on_the_udp_carrier_and_ipv6(carrier, pki):
    with emulated("udp" if carrier == "udp" else "seqpacket") as n:
        ls = quic_socket(socket.AF_INET6 if carrier == "seqpacket6" else socket.AF_INET)
        ls.bind(("fd00::5357:5f0b", 0) if carrier == "seqpacket6" else ("127.0.0.11", 0))
        ls.listen(4)
        p = Pair(pki, "psk", "raw", "raw", ls=ls)
        try:
            p.echo(b"carried")
        finally:
            p.close()
        assert b"carried" in _stream_data(n.pcap, n.keys)


def test_raw_close_while_corked_still_sends_the_close(net, pki):
    """A flight corked with MSG_MORE and never finished: close() still sends CONNECTION_CLOSE, and the
    peer sees the connection end at once, not after its handshake or idle timeout."""
    ls = quic_socket()
    ls.bind(("127.0.0.11", 0))
    ls.listen(4)
    c = quic_socket()
    result: list[int] = []
    try:
        c.connect(ls.getsockname())
        capp = _client_app("psk", pki)
        t = threading.Thread(target=lambda: result.append(_err(lambda: rawapp.quic_handshake(c, capp, 20))),
                             daemon=True)
        t.start()
        ls.settimeout(5)
        s, _ = ls.accept()
        hello, _, _, _ = s.recvmsg(65536, socket.CMSG_SPACE(1))
        assert hello[0] == 1
        assert s.sendmsg([b"\x02\x00\x00\x00"], _hs(QUIC_CRYPTO_INITIAL), 0x8000) == 4  # MSG_MORE: corked
        s.close()
        t.join(5)
        assert result == [errno.ENOTCONN]  # the close arrived; no ServerHello ever left
        assert c._conn.peer_close is not None
    finally:
        close_all(c, ls)


def test_raw_server_preferred_address(pki):
    """alpn_test's server: CONNECTION_MIGRATION between accept() and the handshake on a listener in
    raw mode (the engine started at accept): the address goes into the transport parameters the
    server's TLS fetches, and the client moves there after the handshake."""
    from wrappers.quic import QUIC_SOCKOPT_CONNECTION_MIGRATION, sockaddr_in

    with emulated():
        ls = quic_socket()
        ls.bind(("127.0.0.11", 0))
        ls.listen(2)
        ls.set_raw_handshake()
        host, port = ls.getsockname()[:2]
        pref = (host, port + 7)

        def prefer(s: Any) -> None:
            assert s._conn.quic is not None  # started at accept()
            s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_CONNECTION_MIGRATION, sockaddr_in(*pref))

        p = Pair(pki, "cert", "raw", "raw", ls=ls, setup_server=prefer)
        try:
            deadline = time.monotonic() + 5
            while p.c.getpeername()[:2] != pref and time.monotonic() < deadline:
                time.sleep(0.02)
            assert p.c.getpeername()[:2] == pref
            p.echo(b"to the preferred address")
            assert p.s.getsockname()[:2] == pref
        finally:
            p.close()
