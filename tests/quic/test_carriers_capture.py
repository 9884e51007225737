"""Each carrier carries a connection; the capture holds the datagrams as UDP and tshark decrypts them
with the key log written next to it (and with SSLKEYLOGFILE)."""

from __future__ import annotations

import os
import socket

import pytest
from tsharkutil import CHECKSUM_OPTS, fields, problems

from wrappers.quic import MSG_STREAM_FIN, MSG_STREAM_NEW, QuicSocket, quic_recvmsg, quic_sendmsg

from .conftest import close_all, emulated, open_pair


def _exchange(c, s):
    quic_sendmsg(c, b"hello quic server!", 2, MSG_STREAM_NEW | MSG_STREAM_FIN)
    data, sid, _ = quic_recvmsg(s, 100)
    assert (data, sid) == (b"hello quic server!", 2)
    quic_sendmsg(s, b"hello quic client!", 1, MSG_STREAM_NEW | MSG_STREAM_FIN)
    data, sid, _ = quic_recvmsg(c, 100)
    assert (data, sid) == (b"hello quic client!", 1)


@pytest.mark.parametrize("carrier", ["seqpacket", "udp"])
def test_emulated_carrier_capture_decrypts(carrier, mode, pki, tmp_path, monkeypatch):
    extra = tmp_path / "ssl.keys"
    monkeypatch.setenv("SSLKEYLOGFILE", str(extra))
    with emulated(carrier) as n:
        c, s, ls = open_pair(mode, pki)
        try:
            _exchange(c, s)
        finally:
            close_all(c, s, ls)
        assert os.path.exists(n.keys) and extra.exists()
        assert "CLIENT_TRAFFIC_SECRET_0" in open(n.keys).read()
        rows = fields(n.pcap, ["udp.srcport", "udp.dstport", "quic.stream.stream_id", "quic.stream_data"],
                      display_filter="quic.stream.stream_id", options=["-o", f"tls.keylog_file:{n.keys}"])
        streams = {r[2]: bytes.fromhex(r[3].replace(":", "")) for r in rows}
        assert streams.get("2") == b"hello quic server!"
        assert streams.get("1") == b"hello quic client!"
        assert problems(n.pcap, options=(*CHECKSUM_OPTS, "-o", f"tls.keylog_file:{n.keys}")) == []
        # the capture holds each datagram once: no frame is a duplicate of the previous one
        frames = fields(n.pcap, ["frame.number", "udp.payload"])
        payloads = [r[1] for r in frames]
        assert all(a != b for a, b in zip(payloads, payloads[1:], strict=False))


def test_seqpacket_names_use_the_udp_letters(net, pki):
    ls = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 261)
    ls.bind(("127.0.0.11", 443))
    ls.listen(1)
    path = os.path.join(net.socket_dir, "U0B01BB")
    import stat

    assert stat.S_ISSOCK(os.stat(path).st_mode)
    import _socket

    u = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    u.connect(path)  # a SEQPACKET listener, as socket_wrapper 1.5 names QUIC listeners
    u.close()
    close_all(ls)


def test_real_udp_carrier(mode, pki):
    def make() -> QuicSocket:
        return QuicSocket(socket.AF_INET, socket.SOCK_DGRAM)

    c, s, ls = open_pair(mode, pki, addr=("127.0.0.1", 0), make=make)
    try:
        assert c._carrier == "real"
        _exchange(c, s)
    finally:
        close_all(c, s, ls)


def test_ipv6_emulated(net, pki):
    from .conftest import quic_socket

    def make():
        return quic_socket(socket.AF_INET6)

    c, s, ls = open_pair("psk", pki, addr=("fd00::5357:5f0b", 0), make=make)
    try:
        _exchange(c, s)
        assert c.family == socket.AF_INET6
    finally:
        close_all(c, s, ls)


def test_quic_on_a_port_tshark_gives_to_another_protocol(pki):
    """27960 is quake3's in tshark's UDP port table; ephemeral ports land on such ports now and then.
    Both the test helper and the pcap library must still see QUIC there (heuristics first)."""
    from harness.pcap import Capture

    with emulated() as n:
        c, s, ls = open_pair("cert", pki, addr=("127.0.0.11", 27960))
        try:
            _exchange(c, s)
        finally:
            close_all(c, s, ls)
        assert fields(n.pcap, ["quic.version"], display_filter="quic.header_form == 1")
        # a query that names only TLS (the handshake inside QUIC's CRYPTO frames) must find it too
        # (a CI run once saw "ClientHello in frames []" from a listener that landed on such a port)
        hellos = fields(n.pcap, ["frame.number"], display_filter="tls.handshake.type == 1",
                        options=["-o", f"tls.keylog_file:{n.keys}"])
        assert len(hellos) == 1, hellos
        cap = Capture(n.pcap, keylog=n.keys)
        assert cap.count("quic.stream.stream_id") >= 2
        assert Capture(n.pcap).count("quic.header_form == 1") >= 2
