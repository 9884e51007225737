"""ALPN routing (quic.ko's design since 2026-01): listeners set ALPN before listen(), share one
address:port when their lists are disjoint, and each new connection goes to the first listener that
matches the client's ALPNs in the client's order; no match drops the Initial silently."""

from __future__ import annotations

import errno
import socket
import threading
from typing import Any

import pytest
from threadutil import joined
from tsharkutil import fields

from wrappers.quic import (
    MSG_STREAM_FIN,
    MSG_STREAM_NEW,
    QUIC_SOCKOPT_ALPN,
    SOL_QUIC,
    QuicSocket,
    client_handshake,
    quic_recvmsg,
    quic_sendmsg,
    server_handshake,
)
from wrappers.quic.routing import client_alpns

from .conftest import close_all, emulated, quic_socket

HOST = "127.0.0.11"


class Server:
    """A listener with an ALPN list that answers each connection with its own name."""

    def __init__(self, name: str, alpn: str, pki: dict[str, str], make: Any, addr: tuple):
        self.name = name
        self.ls = make()
        if alpn:
            self.ls.setsockopt(SOL_QUIC, QUIC_SOCKOPT_ALPN, alpn.encode())
        self.ls.bind(addr)
        self.pki = pki
        self.accepted: list[str] = []
        self.conns: list[QuicSocket] = []

    def listen(self) -> Server:
        self.ls.listen(8)
        self.ls.settimeout(0.2)
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()
        return self

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                s, _ = self.ls.accept()
            except OSError:
                continue
            try:
                server_handshake(s, self.pki["server_key"], self.pki["server"], timeout=5)
                data, sid, _ = quic_recvmsg(s, 100)
                self.accepted.append(data.decode())
                quic_sendmsg(s, self.name.encode(), sid, MSG_STREAM_FIN)
                self.conns.append(s)
            except OSError:
                s.close()

    def close(self) -> None:
        self.stop.set()
        joined(self.t, 2)
        close_all(*self.conns, self.ls)


def fetch(addr: tuple, alpns: str, make: Any, timeout: float = 5.0) -> str:
    c = make()
    try:
        c.connect(addr)
        client_handshake(c, None, "server.test", alpns, timeout=timeout)
        quic_sendmsg(c, alpns.encode(), 0, MSG_STREAM_NEW | MSG_STREAM_FIN)
        data, _, _ = quic_recvmsg(c, 100)
        return data.decode()
    finally:
        close_all(c)


def _real() -> QuicSocket:
    return QuicSocket(socket.AF_INET, socket.SOCK_DGRAM)


@pytest.mark.parametrize("carrier", ["seqpacket", "udp", "real"])
def test_smb_and_h3_share_port_443(carrier, pki):
    import contextlib

    ctx = emulated(carrier if carrier != "real" else "seqpacket") if carrier != "real" else contextlib.nullcontext()
    with ctx as n:
        make = _real if carrier == "real" else quic_socket
        addr = (HOST, 443) if carrier != "real" else ("127.0.0.1", 0)
        smb = Server("smb-server", "smb", pki, make, addr).listen()
        addr = smb.ls.getsockname()[:2]
        h3 = Server("h3-server", "h3, h3-29", pki, make, addr).listen()
        try:
            assert h3.ls.getsockname()[:2] == smb.ls.getsockname()[:2]
            assert fetch(addr, "smb", make) == "smb-server"
            assert fetch(addr, "h3", make) == "h3-server"
            assert fetch(addr, "h3-29", make) == "h3-server"
            # the client's order decides, not the listeners'
            assert fetch(addr, "imap, h3, smb", make) == "h3-server"
            assert fetch(addr, "smb,h3", make) == "smb-server"
            assert smb.accepted == ["smb", "smb,h3"]
            assert h3.accepted == ["h3", "h3-29", "imap, h3, smb"]
        finally:
            smb.close()
            h3.close()
        if n is not None:
            rows = fields(n.pcap, ["udp.dstport", "tls.handshake.extensions_alpn_str"],
                          display_filter="tls.handshake.type == 1")
            assert {r[0] for r in rows} == {"443"}
            offered = [r[1] for r in rows]
            assert "smb" in offered and "h3" in offered and "imap,h3,smb" in offered


def test_no_match_is_dropped_and_others_keep_working(net, pki):
    addr = (HOST, 443)
    smb = Server("smb-server", "smb", pki, quic_socket, addr).listen()
    h3 = Server("h3-server", "h3", pki, quic_socket, addr).listen()
    try:
        c = quic_socket()
        c.connect(addr)
        with pytest.raises(OSError) as ei:
            client_handshake(c, None, "server.test", "imap", timeout=1.5)
        assert ei.value.errno == errno.ETIMEDOUT
        close_all(c)
        assert smb.ls.quic_stats()["dropped"] >= 1  # each Initial the client sent was dropped
        assert smb.accepted == [] and h3.accepted == []
        assert fetch(addr, "h3", quic_socket) == "h3-server"
        # a listener that goes away leaves the other one serving the port
        smb.close()
        assert fetch(addr, "h3", quic_socket) == "h3-server"
    finally:
        smb.close()
        h3.close()


def test_overlapping_lists_at_listen(net, pki):
    a = quic_socket()
    a.setsockopt(SOL_QUIC, QUIC_SOCKOPT_ALPN, b"smb, h3")
    a.bind((HOST, 443))
    a.listen(1)
    socks = [a]
    try:
        for alpn in (b"h3", b"smb, h3", b"ksmbd, smb"):
            b = quic_socket()
            socks.append(b)
            b.setsockopt(SOL_QUIC, QUIC_SOCKOPT_ALPN, alpn)
            b.bind((HOST, 443))
            with pytest.raises(OSError) as ei:
                b.listen(1)
            assert ei.value.errno == errno.EADDRINUSE
        for _ in range(2):  # two listeners without ALPN: identical (empty) lists
            b = quic_socket()
            socks.append(b)
            b.bind((HOST, 4433))
            if _ == 0:
                b.listen(1)
            else:
                with pytest.raises(OSError) as ei:
                    b.listen(1)
                assert ei.value.errno == errno.EADDRINUSE
        # ALPN on a listening socket: EINVAL
        with pytest.raises(OSError) as ei:
            a.setsockopt(SOL_QUIC, QUIC_SOCKOPT_ALPN, b"x")
        assert ei.value.errno == errno.EINVAL
    finally:
        close_all(*socks)


def test_client_hello_without_alpn_goes_to_a_listener_without_alpn(net, pki):
    """While the key is on, a client without ALPN reaches only a listener without ALPN."""
    addr = (HOST, 443)
    plain = Server("plain", "", pki, quic_socket, addr).listen()
    smb = Server("smb-server", "smb", pki, quic_socket, addr).listen()
    try:
        c = quic_socket()
        c.connect(addr)
        client_handshake(c, None, "server.test", timeout=5)
        quic_sendmsg(c, b"none", 0, MSG_STREAM_NEW | MSG_STREAM_FIN)
        assert quic_recvmsg(c, 100)[0] == b"plain"
        close_all(c)
        assert fetch(addr, "smb", quic_socket) == "smb-server"
        # with the demux key on, a client offering an ALPN no listener has is dropped, even though a
        # listener without ALPN exists
        c = quic_socket()
        c.connect(addr)
        with pytest.raises(OSError):
            client_handshake(c, None, "server.test", "h3", timeout=1.0)
        close_all(c)
    finally:
        plain.close()
        smb.close()


def test_client_alpns_parser():
    assert client_alpns(b"") is None
    assert client_alpns(b"\xc0" + b"\x00" * 1300) is None


CHILD = r"""
import sys
sys.path[:0] = [{root!r}, {root!r} + "/tests"]
import wrappers
from wrappers.quic import *
from tests.quic.test_adv_alpn_routing import Server, quic_socket
with wrappers.activate({sockdir!r}, iface=11, pcap={pcap!r}):
    try:
        srv = Server({name!r}, {alpn!r}, {pki!r}, quic_socket, ("127.0.0.11", 443)).listen()
    except OSError as e:
        print("LISTEN", e.errno, flush=True)
        sys.exit(0)
    print("READY", flush=True)
    sys.stdin.readline()
    srv.close()
    print("ACCEPTED", ";".join(srv.accepted), flush=True)
"""


def _child(n, pki, name: str, alpn: str):
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = CHILD.format(root=root, sockdir=n.socket_dir, pcap=n.pcap, name=name, alpn=alpn, pki=pki)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WIRECHECK_") and k != "LD_PRELOAD"}
    env["WIRECHECK_QUIC_CARRIER"] = "seqpacket"
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         env=env)
    line = p.stdout.readline().strip()  # type: ignore[union-attr]
    return p, line


def test_two_processes_share_port_443_by_alpn(net, pki):
    """The real case: an SMB listener in this process and an HTTP/3 listener in another one, both on
    127.0.0.11:443; each client reaches the process whose listener has its ALPN."""
    addr = (HOST, 443)
    smb = Server("smb-server", "smb", pki, quic_socket, addr).listen()
    p, line = _child(net, pki, "h3-process", "h3")
    try:
        assert line == "READY", line
        # an overlapping list in a third process is refused at listen()
        q, qline = _child(net, pki, "dup", "h3, ksmbd")
        assert qline == f"LISTEN {errno.EADDRINUSE}"
        q.wait(10)
        assert fetch(addr, "h3", quic_socket) == "h3-process"
        assert fetch(addr, "smb", quic_socket) == "smb-server"
        assert fetch(addr, "imap, h3, smb", quic_socket) == "h3-process"  # client order across processes
        out, _ = p.communicate("\n", timeout=10)
        assert out.strip() == "ACCEPTED h3;imap, h3, smb"
        assert smb.accepted == ["smb"]
    finally:
        if p.poll() is None:
            p.kill()
        smb.close()
    rows = fields(net.pcap, ["udp.dstport", "tls.handshake.extensions_alpn_str"], display_filter="tls.handshake.type == 1")
    assert {r[0] for r in rows} == {"443"} and {"h3", "smb"} <= {r[1] for r in rows}
