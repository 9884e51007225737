"""Connection migration and NAT rebinding: what a user of the socket relies on is that a
connection survives its client changing address, with nothing lost, and that the ends see it as
quic.ko reports it (the migration event, getpeername/getsockname). Each case checks the capture:
the new path was validated (PATH_CHALLENGE answered) and, for a real migration, the client used a
new destination connection ID on it (RFC 9000 9.5); a NAT rebinding keeps the DCID (the client does
not know it moved), so the same check must fail there."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest
from threadutil import joined

from harness.pcap import Capture, catalogue
from wrappers import impair
from wrappers.quic import (
    MSG_NOTIFICATION,
    MSG_STREAM_FIN,
    MSG_STREAM_NEW,
    QUIC_EVENT_CONNECTION_MIGRATION,
    QUIC_SOCKOPT_CONNECTION_MIGRATION,
    QUIC_SOCKOPT_EVENT,
    SOL_QUIC,
    EventOption,
    quic_recvmsg,
    quic_sendmsg,
    sockaddr_in,
)

from .conftest import close_all, emulated, open_pair

MIG_EV = EventOption(QUIC_EVENT_CONNECTION_MIGRATION, 1).pack()


@pytest.fixture(autouse=True)
def _no_impairments():
    impair.reset()
    yield
    impair.configure(None)
    impair.reset()


def _events_on(*socks) -> None:
    for s in socks:
        s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_EVENT, MIG_EV)


def _recv_data(s, n: int = 65536) -> tuple[bytes, int, list[bytes]]:
    """The next data item, with the events read before it."""
    evs = []
    while True:
        data, sid, flags = quic_recvmsg(s, n)
        if flags & MSG_NOTIFICATION:
            evs.append(data)
            continue
        return data, sid, evs


def _capture(n) -> Capture:
    return Capture(n.pcap, keylog=n.keys)


def _src_ports_to(n, server_port: int) -> list[tuple[str, str]]:
    from tsharkutil import fields

    rows = fields(n.pcap, ["ip.src", "udp.srcport"], display_filter=f"udp.dstport == {server_port}")
    seen: list[tuple[str, str]] = []
    for r in rows:
        if tuple(r) not in seen:
            seen.append(tuple(r))
    return seen


@pytest.mark.parametrize("kind", ["port", "addr", "both"])
def test_nat_rebind_idle(pki, kind):
    """An idle client's NAT mapping changes: its next packet comes from a new source; the server
    validates the path, reports a peer migration (local_migration 0) and answers there; the client's
    own getsockname() does not change (it is behind the NAT)."""
    with emulated() as n:
        c, s, ls = open_pair("psk", pki)
        try:
            _events_on(c, s)
            c.settimeout(5)
            s.settimeout(5)
            before_local, before_peer = c.getsockname(), s.getpeername()
            impair.configure(f"seed=1; out: rebind={kind}@0")  # the next datagram of each flow
            time.sleep(0.2)  # idle
            quic_sendmsg(c, b"after the rebind", -1, MSG_STREAM_NEW | MSG_STREAM_FIN)
            data, sid, evs = _recv_data(s)
            assert data == b"after the rebind"
            quic_sendmsg(s, b"answer", sid, MSG_STREAM_FIN)
            data, _, cevs = _recv_data(c)
            assert data == b"answer"
            assert cevs == []  # the client does not know it moved
            deadline = time.monotonic() + 3
            while s.getpeername() == before_peer and time.monotonic() < deadline:
                time.sleep(0.05)
            after = s.getpeername()
            assert c.getsockname() == before_local
            if kind in ("port", "both"):
                assert after[1] != before_peer[1]
            if kind in ("addr", "both"):
                assert after[0] != before_peer[0]
            s.setblocking(False)
            got = []
            try:
                while True:
                    got.append(quic_recvmsg(s, 100)[0])
            except BlockingIOError:
                pass
            assert bytes([QUIC_EVENT_CONNECTION_MIGRATION, 0]) in evs + got
            server_port = ls.getsockname()[1]
        finally:
            close_all(c, s, ls)
        srcs = _src_ports_to(n, server_port)
        assert len(srcs) == 2, srcs
        cap = _capture(n)
        cap.check(catalogue.build("quic.path_validated"), catalogue.build("quic.no_new_connection"))
        with pytest.raises(AssertionError, match="kept DCID"):  # a rebinding is not a migration
            cap.check(catalogue.build("quic.new_cid_after_migration"))


def _transfer(c, s, size: int, during=None) -> None:
    """Send ``size`` pseudo-random bytes client -> server on one stream and the server's sha256 back;
    ``during(sent)`` runs between chunks (to migrate mid-transfer). Asserts the digests match."""
    box: dict = {}

    def serve():
        try:
            h = hashlib.sha256()
            total = 0
            while True:
                data, sid, flags = quic_recvmsg(s, 1 << 16)
                if flags & MSG_NOTIFICATION:
                    continue
                h.update(data)
                total += len(data)
                if flags & MSG_STREAM_FIN:
                    break
            box["n"] = total
            quic_sendmsg(s, h.hexdigest().encode(), sid, MSG_STREAM_FIN)
        except BaseException as e:
            box["e"] = e

    s.settimeout(60)
    c.settimeout(60)
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    rnd = hashlib.sha256(b"seed")
    mine = hashlib.sha256()
    chunk = 256 * 1024
    sent = 0
    first = True
    while sent < size:
        block = b"".join(hashlib.sha256(rnd.digest() + i.to_bytes(4, "big")).digest() for i in range(chunk // 32))
        rnd = hashlib.sha256(block[:32])
        part = block[: size - sent]
        quic_sendmsg(c, part, 0, (MSG_STREAM_NEW if first else 0) | (MSG_STREAM_FIN if sent + len(part) >= size else 0))
        first = False
        mine.update(part)
        sent += len(part)
        if during is not None:
            during(sent)
    data, _, _ = _recv_data(c)
    joined(t, 60)
    assert "e" not in box, box.get("e")
    assert box["n"] == size
    assert data == mine.hexdigest().encode()


def _validated_peer(c, s, before, timeout: float = 10.0):
    """The server's getpeername once it has validated the client's new address (or ``before`` after
    ``timeout``).

    The server switches only when a PATH_CHALLENGE on the new path is answered, and it abandons the
    validation after three PTOs (RFC 9000 8.2.4), falling back to the last validated path. Under loss
    that happens: during an upload the server sends only ACKs, which elicit none, so a lost challenge
    is found lost by a probe timeout, and two in a row (seen in about 1 run in 60 at 5%) can use up
    the three PTOs. The server starts again on the next non-probing packet from the new address
    (9.3.2), but a client whose upload is done sends nothing more: each round here sends one small
    stream (the server need not read it), as any later request of the client would."""
    deadline = time.monotonic() + timeout
    while (peer := s.getpeername()) == before and time.monotonic() < deadline:
        quic_sendmsg(c, b"nudge", -1, MSG_STREAM_NEW | MSG_STREAM_FIN)
        time.sleep(0.2)
    return peer


@pytest.mark.parametrize("loss", [0, 5])
@pytest.mark.parametrize("kind", ["port", "addr"])
def test_nat_rebind_mid_transfer(pki, kind, loss):
    """The NAT mapping changes in the middle of a 4 MiB upload (datagram 30 of the client's flow: the
    upload is about 65 full-size datagrams on the emulated loopback carrier, 3,000 at 1452 bytes),
    with and without 5% loss each way: every byte arrives once (sha256), the server moved to the new
    path, still one connection."""
    with emulated() as n:
        c, s, ls = open_pair("psk", pki)
        try:
            before = s.getpeername()
            lossy = f" loss={loss}%" if loss else ""
            impair.configure(f"seed=3; out: rebind={kind}@30{lossy}")
            _transfer(c, s, 4 << 20)
            assert _validated_peer(c, s, before) != before
        finally:
            close_all(c, s, ls)
        _capture(n).check(catalogue.build("quic.path_validated"), catalogue.build("quic.no_new_connection"))


def test_nat_rebind_emulated_udp(pki):
    """The same on the udp carrier (cwrap's datagram names): the client's endpoint is re-bound."""
    with emulated("udp") as n:
        c, s, ls = open_pair("psk", pki)
        try:
            before = s.getpeername()
            impair.configure("seed=1; out: rebind=port@0")
            c.settimeout(5)
            s.settimeout(5)
            quic_sendmsg(c, b"moved by the NAT", -1, MSG_STREAM_NEW | MSG_STREAM_FIN)
            data, sid, _ = _recv_data(s)
            assert data == b"moved by the NAT"
            quic_sendmsg(s, b"ok", sid, MSG_STREAM_FIN)
            assert _recv_data(c)[0] == b"ok"
            deadline = time.monotonic() + 3
            while s.getpeername() == before and time.monotonic() < deadline:
                time.sleep(0.05)
            assert s.getpeername()[1] != before[1]
        finally:
            close_all(c, s, ls)
        _capture(n).check(catalogue.build("quic.path_validated"))


def _migrate(c, port_offset: int) -> None:
    host, port = c.getsockname()[:2]
    c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_CONNECTION_MIGRATION, sockaddr_in(host, port + port_offset))


SIZE_2MIG = int(os.environ.get("WIRECHECK_MIGRATION_BYTES", 32 << 20))


@pytest.mark.slow
def test_32mib_across_two_migrations(pki):
    """The issue's proof: a 32 MiB upload while the client migrates twice (at 1/3 and 2/3), sha256
    equal at both ends; the capture shows two new paths, each validated and each with a new DCID,
    and one connection throughout."""
    with emulated() as n:
        c, s, ls = open_pair("psk", pki)
        try:
            _events_on(c)
            start = c.getsockname()[1]
            marks = [SIZE_2MIG // 3, 2 * SIZE_2MIG // 3]

            def during(sent: int) -> None:
                if marks and sent >= marks[0]:
                    marks.pop(0)
                    deadline = time.monotonic() + 10
                    while True:  # the previous migration must have completed (EAGAIN otherwise)
                        try:
                            _migrate(c, 1)
                            return
                        except BlockingIOError:
                            assert time.monotonic() < deadline, "migration stayed in progress"
                            time.sleep(0.02)

            _transfer(c, s, SIZE_2MIG, during)
            assert not marks
            assert c.getsockname()[1] == start + 2
            server_port = ls.getsockname()[1]
        finally:
            close_all(c, s, ls)
        assert len(_src_ports_to(n, server_port)) == 3
        _capture(n).check(catalogue.build("quic.new_cid_after_migration"), catalogue.build("quic.path_validated"),
                          catalogue.build("quic.no_new_connection"))


def test_two_migrations_small(pki):
    """The same path as the 32 MiB proof with 3 MiB, in the default run."""
    with emulated() as n:
        c, s, ls = open_pair("psk", pki)
        try:
            marks = [1 << 20, 2 << 20]

            def during(sent: int) -> None:
                if marks and sent >= marks[0]:
                    marks.pop(0)
                    deadline = time.monotonic() + 10
                    while True:
                        try:
                            _migrate(c, 1)
                            return
                        except BlockingIOError:
                            assert time.monotonic() < deadline, "migration stayed in progress"
                            time.sleep(0.02)

            start = c.getsockname()[1]
            _transfer(c, s, 3 << 20, during)
            assert c.getsockname()[1] == start + 2
        finally:
            close_all(c, s, ls)
        _capture(n).check(catalogue.build("quic.new_cid_after_migration"), catalogue.build("quic.no_new_connection"))


def test_server_migration_then_client_migration(pki):
    """quic.ko lets a server move too: the server sets CONNECTION_MIGRATION to its port+1; the client
    reports a peer migration (local_migration 0) ahead of the data that came on the new path, its
    getpeername() follows, the server's getsockname() shows the new port and its own event is
    local_migration 1. The client can then migrate towards the server's new address, and both new
    paths are validated in the capture."""
    with emulated() as n:
        c, s, ls = open_pair("cert", pki)
        try:
            _events_on(c, s)
            c.settimeout(5)
            s.settimeout(5)
            shost, sport = s.getsockname()[:2]
            s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_CONNECTION_MIGRATION, sockaddr_in(shost, sport + 1))
            quic_sendmsg(s, b"from the new server port", 1, MSG_STREAM_NEW | MSG_STREAM_FIN)
            data, _, evs = _recv_data(c)
            assert data == b"from the new server port"
            assert evs == [bytes([QUIC_EVENT_CONNECTION_MIGRATION, 0])]
            assert c.getpeername()[1] == sport + 1
            quic_sendmsg(c, b"ack", -1, MSG_STREAM_NEW | MSG_STREAM_FIN)
            data, _, sevs = _recv_data(s)
            assert data == b"ack"
            assert sevs == [bytes([QUIC_EVENT_CONNECTION_MIGRATION, 1])]
            assert s.getsockname()[1] == sport + 1
            cport = c.getsockname()[1]
            _migrate(c, 1)
            quic_sendmsg(c, b"client moved too", -1, MSG_STREAM_NEW | MSG_STREAM_FIN)
            data, sid, _ = _recv_data(s)
            assert data == b"client moved too"
            quic_sendmsg(s, b"seen", sid, MSG_STREAM_FIN)
            data, _, cevs = _recv_data(c)
            assert (data, cevs) == (b"seen", [bytes([QUIC_EVENT_CONNECTION_MIGRATION, 1])])
            assert c.getsockname()[1] == cport + 1
        finally:
            close_all(c, s, ls)
        # (quic.new_cid_after_migration takes the first destination as the server for good, so it
        # cannot follow a server that moved; count the client's sources towards the new port instead)
        assert len(_src_ports_to(n, sport + 1)) == 2
        _capture(n).check(catalogue.build("quic.path_validated"), catalogue.build("quic.no_new_connection"))


def test_server_migration_needs_seqpacket(pki):
    """On the udp carrier a server cannot open a path from a new address: EOPNOTSUPP, and the
    connection keeps working."""
    from .funcserver import expect_errno

    with emulated("udp"):
        c, s, ls = open_pair("psk", pki)
        try:
            host, port = s.getsockname()[:2]
            expect_errno(lambda: s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_CONNECTION_MIGRATION,
                                              sockaddr_in(host, port + 1)), 95)
            c.settimeout(5)
            s.settimeout(5)
            quic_sendmsg(c, b"still here", -1, MSG_STREAM_NEW | MSG_STREAM_FIN)
            assert _recv_data(s)[0] == b"still here"
        finally:
            close_all(c, s, ls)


def test_migration_outside_the_emulated_network(pki):
    """A migration to an address no emulated interface has fails with EADDRNOTAVAIL (as a bind to
    it would), another family with EINVAL, the same address with EINVAL, and the connection keeps
    working on its path."""
    from wrappers.quic import sockaddr_in as sa

    from .funcserver import expect_errno

    with emulated():
        c, s, ls = open_pair("psk", pki)
        try:
            port = c.getsockname()[1]
            expect_errno(lambda: c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_CONNECTION_MIGRATION, sa("192.0.2.7", port + 1)),
                         99)
            import socket as so

            expect_errno(lambda: c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_CONNECTION_MIGRATION,
                                              sa("fd00::5357:5f0b", port + 1, so.AF_INET6)), 22)
            expect_errno(lambda: c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_CONNECTION_MIGRATION,
                                              sa(c.getsockname()[0], port)), 22)
            c.settimeout(5)
            s.settimeout(5)
            quic_sendmsg(c, b"still on the old path", -1, MSG_STREAM_NEW | MSG_STREAM_FIN)
            data, sid, _ = _recv_data(s)
            assert data == b"still on the old path"
            assert c.getsockname()[1] == port
        finally:
            close_all(c, s, ls)


def test_server_preferred_address(pki):
    """quic.ko's preferred address: a server sets CONNECTION_MIGRATION between accept() and the
    handshake; after the handshake the client validates that address and moves there by itself
    (event local_migration 1 on the client, getpeername() = the preferred address; the server's
    getsockname() follows); data flows on the new path and the capture shows it validated."""
    from wrappers.quic import client_handshake, server_handshake

    from .conftest import quic_socket

    with emulated() as n:
        ls = quic_socket()
        ls.bind(("127.0.0.11", 0))
        ls.listen(2)
        ls.settimeout(5)
        box: dict = {}

        def serve():
            try:
                s, _ = ls.accept()
                host, port = ls.getsockname()[:2]
                box["pref"] = (host, port + 7)
                s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_CONNECTION_MIGRATION, sockaddr_in(host, port + 7))
                server_handshake(s, pki["server_key"], pki["server"], timeout=5)
                box["s"] = s
            except BaseException as e:
                box["e"] = e

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        c = quic_socket()
        _events_on(c)
        c.connect(ls.getsockname())
        client_handshake(c, None, "server.test", cafile=pki["ca"], timeout=5)
        joined(t, 10)
        assert "e" not in box, box.get("e")
        s = box["s"]
        try:
            c.settimeout(5)
            s.settimeout(5)
            deadline = time.monotonic() + 5
            while c.getpeername()[:2] != box["pref"] and time.monotonic() < deadline:
                time.sleep(0.02)
            assert c.getpeername()[:2] == box["pref"]
            quic_sendmsg(c, b"to the preferred address", -1, MSG_STREAM_NEW | MSG_STREAM_FIN)
            data, sid, _ = _recv_data(s)
            assert data == b"to the preferred address"
            assert s.getsockname()[:2] == box["pref"]
            quic_sendmsg(s, b"ok", sid, MSG_STREAM_FIN)
            data, _, evs = _recv_data(c)
            assert data == b"ok"
            s.setblocking(False)
            assert bytes([QUIC_EVENT_CONNECTION_MIGRATION, 1]) in evs
        finally:
            close_all(c, s, ls)
        assert len(_src_ports_to(n, box["pref"][1])) == 1  # the client's packets reached the new address
        _capture(n).check(catalogue.build("quic.path_validated"), catalogue.build("quic.no_new_connection"))
