"""Dual-stack IPPROTO_QUIC sockets in one process, on both emulated carriers.

An AF_INET6 QUIC listener on ``[::]:port`` (lxin/quic's perf_test default) takes IPv4 clients and
AF_INET6 clients speaking to ``::ffff:127.0.0.N``; both ends report what Linux reports for an IPv4
peer of a dual-stack socket; the pcap shows IPv4 UDP with good checksums. With IPV6_V6ONLY the
listener is IPv6-only and a v4-mapped connect is ENETUNREACH.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import tsharkutil
from procutil import Procs, clean_env, listing, wait_for_path, wirecheck_exec

from wrappers.quic import (
    MSG_STREAM_FIN,
    MSG_STREAM_NEW,
    client_handshake,
    quic_recvmsg,
    quic_sendmsg,
    server_handshake,
)

from .conftest import close_all, emulated, quic_socket

A4, A6, M4 = "127.0.0.11", "fd00::5357:5f0b", "::ffff:127.0.0.11"
V6ONLY = (socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
QUIC_PEER = ("-m", "harness.peers.quic_echo")
SERVER_IFACE, CLIENT_IFACE = 10, 21
A4S, M4S, C4 = "127.0.0.10", "::ffff:127.0.0.10", "127.0.0.21"
CLIENTS = {"ipv4": (socket.AF_INET, A4), "mapped": (socket.AF_INET6, M4), "ipv6": (socket.AF_INET6, A6)}


def names(d: str) -> list[str]:
    return sorted(n for n in os.listdir(d) if n[:1] in "UY" and "~" not in n and "." not in n)


def handshake_pair(ls: Any, family: int, dest: str, pki: dict[str, str], timeout: float = 5.0) -> tuple[Any, Any, Any]:
    box: dict[str, Any] = {}

    def serve() -> None:
        try:
            ls.settimeout(timeout)
            s, peer = ls.accept()
            box["peer"] = peer
            server_handshake(s, pki["psk"], None, timeout=timeout)
            box["s"] = s
        except BaseException as e:  # noqa: BLE001 - reported by the client side
            box["e"] = e

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    c = quic_socket(family)
    c.connect((dest, ls.getsockname()[1]))
    client_handshake(c, pki["psk"], timeout=timeout)
    t.join(timeout + 5)
    if "e" in box:
        raise box["e"]
    return c, box["s"], box["peer"]


@pytest.mark.parametrize("carrier", ["seqpacket", "udp"])
@pytest.mark.parametrize("client", list(CLIENTS))
def test_wildcard_listener_takes_both_families(pki, carrier, client):
    family, dest = CLIENTS[client]
    with emulated(carrier) as n:
        ls = quic_socket(socket.AF_INET6)
        assert ls.getsockopt(*V6ONLY) == 0
        ls.bind(("::", 4433))
        ls.listen(8)
        assert names(n.socket_dir) == ["U0B1151", "Y0B1151"]
        c, s, peer = handshake_pair(ls, family, dest, pki)
        try:
            quic_sendmsg(c, b"hello", -1, MSG_STREAM_NEW | MSG_STREAM_FIN)
            data, sid, _flags = quic_recvmsg(s, 100)
            quic_sendmsg(s, b"HELLO", sid, MSG_STREAM_FIN)
            assert data == b"hello" and quic_recvmsg(c, 100)[0] == b"HELLO"
            cport = c.getsockname()[1]
            if client == "ipv6":
                assert peer == (A6, cport, 0, 0) and s.getsockname() == (A6, 4433, 0, 0)
            else:
                assert peer == (M4, cport, 0, 0) and s.getpeername() == peer
                assert s.getsockname() == (M4, 4433, 0, 0)
                want = (A4, cport) if family == socket.AF_INET else (M4, cport, 0, 0)
                assert c.getsockname() == want
                assert c.getpeername() == ((A4, 4433) if family == socket.AF_INET else (M4, 4433, 0, 0))
        finally:
            close_all(c, s, ls)
        rows = tsharkutil.fields(n.pcap, ["ip.src", "ipv6.src", "udp.checksum.status", "ip.checksum.status"],
                                 display_filter="udp", options=tsharkutil.CHECKSUM_OPTS)
        assert len(rows) >= 4
        if client == "ipv6":
            assert all(r[1] == A6 and not r[0] and r[2] == "1" for r in rows), rows
        else:
            assert all(r[0] == A4 and not r[1] and r[2] == "1" and r[3] == "1" for r in rows), rows
        assert tsharkutil.count_frames(n.pcap, display_filter="quic") == len(rows)
        assert tsharkutil.count_frames(n.pcap, display_filter="_ws.malformed") == 0


@pytest.mark.parametrize("carrier", ["seqpacket", "udp"])
def test_v6only_listener(pki, carrier):
    with emulated(carrier) as n:
        ls = quic_socket(socket.AF_INET6)
        ls.setsockopt(*V6ONLY, 1)
        assert ls.getsockopt(*V6ONLY) == 1
        ls.bind(("::", 4434))
        ls.listen(8)
        assert names(n.socket_dir) == ["Y0B1152"]
        c, s, peer = handshake_pair(ls, socket.AF_INET6, A6, pki)
        assert peer[0] == A6
        close_all(c, s)
        four = quic_socket(socket.AF_INET)
        four.connect((A4, 4434))  # nobody has the IPv4 name: the Initial goes unanswered
        with pytest.raises(OSError) as e:
            client_handshake(four, pki["psk"], timeout=1.0)
        assert e.value.errno in (errno.ETIMEDOUT, errno.ECONNREFUSED)
        close_all(four, ls)


def test_v6only_client_and_bind_errnos(net):
    c = quic_socket(socket.AF_INET6)
    c.setsockopt(*V6ONLY, 1)
    with pytest.raises(OSError) as e:
        c.connect((M4, 4435))
    assert e.value.errno == errno.ENETUNREACH
    with pytest.raises(OSError) as e:
        c.bind((M4, 4435))
    assert e.value.errno == errno.EINVAL
    b = quic_socket(socket.AF_INET6)
    b.bind(("::", 4435))
    with pytest.raises(OSError) as e:
        b.setsockopt(*V6ONLY, 1)
    assert e.value.errno == errno.EINVAL
    close_all(c, b)


@pytest.mark.parametrize("carrier", ["seqpacket", "udp"])
def test_eaddrinuse_on_the_ipv4_name(pki, carrier):
    with emulated(carrier):
        four = quic_socket(socket.AF_INET)
        four.bind((A4, 4436))
        four.listen(8)
        dual = quic_socket(socket.AF_INET6)
        dual.bind(("::", 4436))
        with pytest.raises(OSError) as e:
            dual.listen(8)
        assert e.value.errno == errno.EADDRINUSE
        close_all(four, dual)
        again = quic_socket(socket.AF_INET6)
        again.bind(("::", 4436))
        again.listen(8)  # the IPv4 name went with its listener
        other = quic_socket(socket.AF_INET)
        other.bind((A4, 4436))
        with pytest.raises(OSError) as e:
            other.listen(8)  # ... and is the dual-stack listener's now
        assert e.value.errno == errno.EADDRINUSE
        close_all(again, other)


def test_bind_to_v4_mapped_address(pki):
    with emulated() as n:
        ls = quic_socket(socket.AF_INET6)
        ls.bind((M4, 4437))
        ls.listen(8)
        assert names(n.socket_dir) == ["U0B1155"] and ls.getsockname() == (M4, 4437, 0, 0)
        c, s, peer = handshake_pair(ls, socket.AF_INET, A4, pki)
        assert peer[0] == M4 and s.getsockname() == (M4, 4437, 0, 0)
        close_all(c, s, ls)


# -- across processes (`wirecheck exec`) ----------------------------------------------------------

@pytest.mark.parametrize("carrier", ["seqpacket", "udp"])
@pytest.mark.parametrize("client", ["ipv4", "mapped"])
def test_quic_wildcard_server_across_processes(procs: Procs, sockdir: Path, tmp_path: Path, pki, carrier: str,
                                               client: str) -> None:
    pcap = tmp_path / "run.pcap"
    env = clean_env()
    env["PYTHONPATH"] = str(Path(__file__).parents[1])
    env["WIRECHECK_QUIC_CARRIER"] = carrier
    server = procs.start("server", wirecheck_exec(sockdir, sys.executable, *QUIC_PEER, "server", "::", "443",
                                                  pki["psk"], iface=SERVER_IFACE, pcap=pcap), env=env)
    wait_for_path(sockdir / "U0A01BB", server)
    assert [n for n in listing(sockdir) if "." not in n] == ["U0A01BB", "Y0A01BB"]
    dest = A4S if client == "ipv4" else M4S
    c = procs.run("client", wirecheck_exec(sockdir, sys.executable, *QUIC_PEER, "client", dest, "443", pki["psk"],
                                           "hello over quic", iface=CLIENT_IFACE, pcap=pcap), env=env, timeout=60)
    assert c.lines == ["HELLO OVER QUIC"]
    server.finish()
    peer_line = next(line for line in server.lines if line.startswith("peer "))
    assert peer_line.split()[1] == "::ffff:127.0.0.21"  # accept() saw the IPv4 client as ::ffff:127.0.0.21
    keys = tmp_path / "run.keys"
    rows = tsharkutil.fields(pcap, ["ip.src", "ip.dst", "ipv6.src", "udp.checksum.status", "quic.stream_data"],
                             display_filter="udp", options=[*tsharkutil.CHECKSUM_OPTS, "-o", f"tls.keylog_file:{keys}"])
    assert rows and all(r[2] == "" and {r[0], r[1]} == {A4S, C4} and r[3] == "1" for r in rows), rows
    data = {bytes.fromhex(r[4].replace(":", "").split(",")[0]) for r in rows if r[4]}
    assert {b"hello over quic", b"HELLO OVER QUIC"} <= data


@pytest.mark.peer
def test_native_ipv4_quic_client_of_a_wildcard_server(pki, tmp_path):
    """ngtcp2's gtlsclient, a native IPv4 QUIC client under cwrap, GETs over HTTP/3 from
    `wirecheck h3 serve --listen [::]:4433` (udp carrier: cwrap's UDP names)."""
    from procutil import native_env, need_libsocket_wrapper, need_program

    need_libsocket_wrapper()
    client = need_program("gtlsclient", "ngtcp2-client")
    www = tmp_path / "www"
    www.mkdir()
    blob = os.urandom(200_000)
    (www / "f.bin").write_bytes(blob)
    sockdir = tmp_path / "w"
    sockdir.mkdir(mode=0o700)
    pcap, dl = tmp_path / "run.pcap", tmp_path / "dl"
    dl.mkdir()
    env = clean_env()
    env["WIRECHECK_QUIC_CARRIER"] = "udp"
    wirecheck = [sys.executable, "-c", "from harness.cli import main; main()"]
    serve = subprocess.Popen([*wirecheck, "exec", "--dir", str(sockdir), "--iface", "10", "--pcap", str(pcap), "--",
                              *wirecheck, "h3", "serve", "--listen", "[::]:4433", "--cert", pki["server"],
                              "--key", pki["server_key"], "--root", str(www), "--count", "1", "--timeout", "20"],
                             env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "serve.log", "wb"),  # noqa: SIM115
                             start_new_session=True)
    gc = None
    try:
        wait_for_path(sockdir / "U0A1151")
        assert (sockdir / "Y0A1151").exists()
        gc = subprocess.run([client, "-q", "--exit-on-all-streams-close", f"--download={dl}", A4S, "4433",
                             "https://localhost:4433/f.bin"], env=native_env(sockdir, iface=CLIENT_IFACE),
                            capture_output=True, timeout=30, start_new_session=True)
        assert gc.returncode == 0, gc.stdout[-2000:] + gc.stderr[-2000:]
        try:  # the server leaves when the client's CONNECTION_CLOSE reaches its application
            rc = serve.wait(20)
        except subprocess.TimeoutExpired:
            pytest.fail("wirecheck h3 serve still running 20 s after the client left:\n" +
                        (tmp_path / "serve.log").read_text())
        assert rc == 0, (tmp_path / "serve.log").read_text()
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait(5)
    assert (dl / "f.bin").read_bytes() == blob
    rows = tsharkutil.fields(pcap, ["ip.src", "ip.dst", "ipv6.src", "udp.checksum.status"], display_filter="udp",
                             options=tsharkutil.CHECKSUM_OPTS)
    ours = [r for r in rows if r[0] == A4S]
    assert ours and all(not r[2] and r[3] == "1" for r in ours), rows  # our answers: IPv4, good checksums
    assert len({r[1] for r in ours}) == 1, rows  # to the one client address cwrap gave gtlsclient
    assert not any(r[2] for r in rows), rows  # nothing went as IPv6
    assert tsharkutil.count_frames(pcap, display_filter=f"quic && ip.dst == {A4S}") >= 1  # the client's, logged by us


@pytest.mark.parametrize("carrier", ["seqpacket", "udp"])
def test_quic_v6only_server_across_processes(procs: Procs, sockdir: Path, tmp_path: Path, pki, carrier: str) -> None:
    """IPV6_V6ONLY from the server process's (stand-in) bindv6only sysctl: IPv6 only, IPv4 goes unanswered."""
    sysctl = tmp_path / "bindv6only"
    sysctl.write_text("1\n")
    env = clean_env()
    env["PYTHONPATH"] = str(Path(__file__).parents[1])
    env["WIRECHECK_QUIC_CARRIER"] = carrier
    server = procs.start("server", wirecheck_exec(sockdir, sys.executable, *QUIC_PEER, "server", "::", "443",
                                                  pki["psk"], iface=SERVER_IFACE),
                         env={**env, "WIRECHECK_BINDV6ONLY_FILE": str(sysctl)})
    wait_for_path(sockdir / "Y0A01BB", server)
    assert [n for n in listing(sockdir) if "." not in n] == ["Y0A01BB"]
    four = procs.run("ipv4-client", wirecheck_exec(sockdir, sys.executable, *QUIC_PEER, "client", A4S, "443",
                                                   pki["psk"], "x", iface=CLIENT_IFACE),
                     env={**env, "PEER_QUIC_TIMEOUT": "1.5"}, timeout=30, rc=None)
    assert four.popen.returncode != 0 and four.lines == []
    six = procs.run("ipv6-client", wirecheck_exec(sockdir, sys.executable, *QUIC_PEER, "client", "fd00::5357:5f0a",
                                                  "443", pki["psk"], "six", iface=CLIENT_IFACE), env=env, timeout=60)
    assert six.lines == ["SIX"]
    server.finish()
    assert next(line for line in server.lines if line.startswith("peer ")).split()[1] == "fd00::5357:5f15"
