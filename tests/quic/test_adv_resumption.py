"""Session resumption and 0-RTT (the flow of lxin/quic's ticket_test.c): a client keeps the ticket of a first connection
(NEW_SESSION_TICKET event, getsockopt SESSION_TICKET, session_get_data) and resumes with it: the
second handshake has no Certificate (checked in the capture), data sent before the handshake goes in
0-RTT packets when the server accepts it, and arrives all the same (in 1-RTT) when the server
declines. Tickets are bound to the server's SESSION_TICKET key: another server's ticket or a
corrupted one gives a full handshake (certificate mode) or a refused one (PSK mode), never a
resumption, and the first connection keeps working."""

from __future__ import annotations

import errno
import threading
import time
from typing import Any

import pytest
from threadutil import joined

from harness.pcap import Capture, Count, catalogue
from wrappers.quic import (
    MSG_NOTIFICATION,
    MSG_STREAM_FIN,
    MSG_STREAM_NEW,
    QUIC_EVENT_NEW_SESSION_TICKET,
    QUIC_SOCKOPT_CONFIG,
    QUIC_SOCKOPT_EVENT,
    QUIC_SOCKOPT_SESSION_TICKET,
    QUIC_SOCKOPT_TRANSPORT_PARAM,
    QUIC_VERSION_V2,
    SOL_QUIC,
    Config,
    EventOption,
    TransportParam,
    client_handshake,
    quic_recvmsg,
    quic_sendmsg,
    server_handshake,
    session_get_data,
)

from .conftest import close_all, emulated, quic_socket
from .funcserver import expect_errno

AUTHS = ["psk", "cert", "cert-client"]
TLS_CERTIFICATE = 11


class Server:
    """A listener that accepts connections and echoes each stream's text upper-cased."""

    def __init__(self, pki: dict[str, str], auth: str, early_data: bool = True, port: int = 0):
        self.pki, self.auth, self.early_data = pki, auth, early_data
        self.ls = quic_socket()
        self.ls.bind(("127.0.0.11", port))
        self.ls.listen(8)
        self.ls.settimeout(10)
        self.errors: list[BaseException] = []
        self.conns: list[Any] = []
        self.got: list[bytes] = []

    @property
    def addr(self) -> tuple:
        return self.ls.getsockname()

    def serve_one(self) -> threading.Thread:
        def run() -> None:
            try:
                s, _ = self.ls.accept()
                self.conns.append(s)
                p = self.pki
                if self.auth == "psk":
                    server_handshake(s, p["psk"], None, timeout=10, early_data=self.early_data)
                else:
                    server_handshake(s, p["server_key"], p["server"], timeout=10, early_data=self.early_data,
                                     cafile=p["ca"] if self.auth == "cert-client" else None,
                                     require_client_cert=self.auth == "cert-client")
                s.settimeout(10)
                buf = b""
                while True:
                    data, sid, flags = quic_recvmsg(s, 65536)
                    if flags & MSG_NOTIFICATION:
                        continue
                    buf += data
                    if flags & MSG_STREAM_FIN:
                        break
                self.got.append(buf)
                quic_sendmsg(s, buf.upper(), sid, MSG_STREAM_FIN)
            except BaseException as e:
                self.errors.append(e)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    def close(self) -> None:
        close_all(*self.conns, self.ls)


def _client(pki, auth: str, server: Server, *, session: bytes | None = None, early: bytes | None = None,
            saved_tp: bytes | None = None, events: bool = False, version: int | None = None):
    c = quic_socket()
    if version is not None:
        c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_CONFIG, Config(version=version).pack())
    if events:
        c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_EVENT, EventOption(QUIC_EVENT_NEW_SESSION_TICKET, 1).pack())
    c.connect(server.addr)
    if saved_tp is not None:
        c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_TRANSPORT_PARAM, saved_tp)
    if early is not None:
        quic_sendmsg(c, early, 0, MSG_STREAM_NEW | MSG_STREAM_FIN)  # before the handshake: 0-RTT
    kw: dict[str, Any] = {"timeout": 10, "session_data": session}
    if auth == "psk":
        client_handshake(c, pki["psk"], **kw)
    elif auth == "cert":
        client_handshake(c, None, "server.test", cafile=pki["ca"], **kw)
    else:
        client_handshake(c, None, "server.test", cafile=pki["ca"], certfile=pki["client"], keyfile=pki["client_key"],
                         **kw)
    return c


def _echo(c, text: bytes, *, sent: bool = False) -> list[bytes]:
    """Send ``text`` (unless already sent early), expect it upper-cased; returns the events read."""
    c.settimeout(10)
    if not sent:
        quic_sendmsg(c, text, -1, MSG_STREAM_NEW | MSG_STREAM_FIN)
    evs = []
    while True:
        data, _, flags = quic_recvmsg(c, 65536)
        if not flags & MSG_NOTIFICATION:
            break
        evs.append(data)
    assert data == text.upper()
    return evs


def _first(pki, auth: str, server: Server, version: int | None = None):
    """The first connection: (client, session data, raw ticket, saved remote transport parameters)."""
    t = server.serve_one()
    c = _client(pki, auth, server, events=True, version=version)
    c.events_seen = _echo(c, b"first connection")
    joined(t, 10)
    assert not server.errors, server.errors
    deadline = time.monotonic() + 5
    while True:
        try:
            session = session_get_data(c)
            break
        except BlockingIOError:
            assert time.monotonic() < deadline, "no session ticket"
            time.sleep(0.02)
    raw = c.getsockopt(SOL_QUIC, QUIC_SOCKOPT_SESSION_TICKET, 4096)
    assert raw[0] == 4  # a TLS NewSessionTicket message
    saved = c.getsockopt(SOL_QUIC, QUIC_SOCKOPT_TRANSPORT_PARAM, TransportParam(remote=1).pack())
    return c, session, raw, saved


def _events(c) -> list[bytes]:
    c.setblocking(False)
    out = []
    try:
        while True:
            data, _, flags = quic_recvmsg(c, 4096)
            if flags & MSG_NOTIFICATION:
                out.append(data)
    except BlockingIOError:
        pass
    finally:
        c.setblocking(True)
    return out


@pytest.mark.parametrize("auth", AUTHS)
def test_resumed_handshake_has_no_certificate(pki, auth):
    with emulated() as n:
        server = Server(pki, auth)
        try:
            c1, session, raw, _ = _first(pki, auth, server)
            t = server.serve_one()
            c2 = _client(pki, auth, server, session=session)
            assert c2._conn.session_resumed
            _echo(c2, b"resumed")
            joined(t, 10)
            assert not server.errors, server.errors
            t = server.serve_one()
            close_all(c2)
            _echo(_client(pki, auth, server), b"no ticket: a full handshake")
            joined(t, 10)
            assert not server.errors, server.errors
            evs = c1.events_seen + _events(c1)
            assert [e[1:] for e in evs if e[0] == QUIC_EVENT_NEW_SESSION_TICKET] == [raw]
        finally:
            server.close()
        cap = Capture(n.pcap, keylog=n.keys)
        cap.check(catalogue.build("quic.no_certificate", {"connection": 1}))
        if auth != "psk":  # the first and the third (no ticket) handshakes present the certificate
            cap.check(Count({"match": {"tls.handshake.type": TLS_CERTIFICATE, "quic.connection.number": 0}}, min=1),
                      Count({"match": {"tls.handshake.type": TLS_CERTIFICATE, "quic.connection.number": 2}}, min=1))


@pytest.mark.parametrize("auth", AUTHS)
def test_zero_rtt_accepted(pki, auth):
    """Data sent before the handshake travels in 0-RTT packets and reaches the server application."""
    with emulated() as n:
        server = Server(pki, auth)
        try:
            _, session, _, saved = _first(pki, auth, server)
            t = server.serve_one()
            c2 = _client(pki, auth, server, session=session, early=b"early data", saved_tp=saved)
            assert c2._conn.early_data_accepted
            _echo(c2, b"early data", sent=True)
            joined(t, 10)
            assert not server.errors, server.errors
            assert server.got[-1] == b"early data"
        finally:
            server.close()
        Capture(n.pcap, keylog=n.keys).check(catalogue.build("quic.zero_rtt_used"),
                                              catalogue.build("quic.no_certificate", {"connection": 1}))


def test_zero_rtt_in_v2_is_found_by_the_named_check(pki):
    """QUIC v2 (RFC 9369) numbers its long-header types differently and tshark 4.0 leaves
    quic.long.packet_type empty for them: the pcap library must still see the 0-RTT data."""
    with emulated() as n:
        server = Server(pki, "psk")
        try:
            _, session, _, saved = _first(pki, "psk", server, version=QUIC_VERSION_V2)
            t = server.serve_one()
            c2 = _client(pki, "psk", server, session=session, early=b"early v2", saved_tp=saved,
                         version=QUIC_VERSION_V2)
            assert c2._conn.early_data_accepted
            _echo(c2, b"early v2", sent=True)
            joined(t, 10)
            assert not server.errors, server.errors
        finally:
            server.close()
        cap = Capture(n.pcap, keylog=n.keys)
        assert cap.count("quic.version == 0x6b3343cf") > 0
        cap.check(catalogue.build("quic.zero_rtt_used"))


def test_zero_rtt_refused_goes_in_1rtt(pki):
    """A server that declines early data (early_data=False): the resumption still happens, the
    0-RTT packets go unanswered and their data arrives in 1-RTT, nothing lost."""
    from tsharkutil import fields

    with emulated() as n:
        server = Server(pki, "cert", early_data=False)
        try:
            _, session, _, saved = _first(pki, "cert", server)
            t = server.serve_one()
            text = b"early data the server declines " * 20
            c2 = _client(pki, "cert", server, session=session, early=text, saved_tp=saved)
            assert c2._conn.session_resumed and not c2._conn.early_data_accepted
            _echo(c2, text, sent=True)
            joined(t, 10)
            assert server.got[-1] == text
        finally:
            server.close()
        rows = fields(n.pcap, ["quic.long.packet_type", "quic.header_form", "quic.stream.stream_id"],
                      display_filter="quic.connection.number == 1", options=["-o", f"tls.keylog_file:{n.keys}"])
        # a client datagram coalesces its Initial (type 0) with the 0-RTT packet (type 1)
        assert any("1" in r[0].split(",") for r in rows), "no 0-RTT packet"
        # the stream data came again in a short-header (1-RTT) packet from the client
        assert any(r[1].split(",")[-1] in ("0", "False") and r[2] for r in rows), rows


def test_ticket_from_another_server(pki):
    """Certificate mode: a ticket the server did not issue (another listener's key) gives a full
    handshake with a certificate; 0-RTT data sent with it arrives in 1-RTT."""
    with emulated() as n:
        a, b = Server(pki, "cert"), Server(pki, "cert")
        try:
            c1, session, _, saved = _first(pki, "cert", a)
            t = b.serve_one()
            c2 = _client(pki, "cert", b, session=session, early=b"to the wrong server", saved_tp=saved)
            assert not c2._conn.session_resumed
            _echo(c2, b"to the wrong server", sent=True)
            joined(t, 10)
            assert not b.errors, b.errors
            t = a.serve_one()
            _echo(_client(pki, "cert", a), b"a still serves")
            joined(t, 10)
        finally:
            a.close()
            b.close()
        Capture(n.pcap, keylog=n.keys).check(
            Count({"match": {"tls.handshake.type": TLS_CERTIFICATE, "quic.connection.number": 1}}, min=1))


def test_ticket_key_shared_between_listeners(pki):
    """Two listeners given the same SESSION_TICKET key resume each other's tickets (quic.ko's key)."""
    key = bytes(range(64))
    with emulated():
        a, b = Server(pki, "cert"), Server(pki, "cert")
        for srv in (a, b):
            srv.ls.setsockopt(SOL_QUIC, QUIC_SOCKOPT_SESSION_TICKET, key)
        try:
            assert a.ls._opts.ticket == key
            _, session, _, _ = _first(pki, "cert", a)
            t = b.serve_one()
            c2 = _client(pki, "cert", b, session=session)
            assert c2._conn.session_resumed
            _echo(c2, b"resumed elsewhere")
            joined(t, 10)
        finally:
            a.close()
            b.close()


def test_bad_session_data(pki):
    """Session data that is not ours is EINVAL before anything is sent; a corrupted ticket inside
    good-looking data is a full handshake in certificate mode and a refused one in PSK mode."""
    import json

    with emulated():
        for auth in ("cert", "psk"):
            server = Server(pki, auth)
            try:
                _, session, _, _ = _first(pki, auth, server)
                c = quic_socket()
                c.connect(server.addr)
                expect_errno(lambda c=c: client_handshake(c, None, "server.test", session_data=b"garbage", timeout=2),
                             errno.EINVAL)
                d = json.loads(session)
                d["ticket"] = ("00" if d["ticket"][:2] != "00" else "11") + d["ticket"][2:]
                bad = json.dumps(d).encode()
                t = server.serve_one()
                if auth == "cert":
                    c2 = _client(pki, auth, server, session=bad)
                    assert not c2._conn.session_resumed
                    _echo(c2, b"full handshake")
                else:
                    expect_errno(lambda a=auth, s=server, b=bad: _client(pki, a, s, session=b), errno.ECONNREFUSED)
                joined(t, 12)
            finally:
                server.close()
