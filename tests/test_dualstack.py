"""Dual-stack AF_INET6 TCP and UDP sockets in one process, against what Linux does.

Every expectation here was first measured on this machine's kernel with real sockets on loopback
(net.ipv6.bindv6only = 0): the ``::ffff:a.b.c.d`` addresses accept()/recvfrom() report, getsockname
and getpeername, the errnos of IPV6_V6ONLY (ENETUNREACH for a v4-mapped destination, EINVAL for a
v4-mapped bind or a change after bind, ENOPROTOOPT on AF_INET) and EADDRINUSE when a dual-stack bind
and an IPv4 bind want the same port. ``test_kernel_agrees`` repeats the main facts on the real kernel
so a kernel that disagrees shows up here, not in a user's program.
"""

from __future__ import annotations

import errno
import os
import socket

import pytest
import tsharkutil
from wrapfix import swdir, wrapped, wrapped_pcap  # noqa: F401

import wrappers
from wrappers.socket_wrapper import orig_socket

V4, V6 = socket.AF_INET, socket.AF_INET6
IFACE = 11
A4, A6, M4 = "127.0.0.11", "fd00::5357:5f0b", "::ffff:127.0.0.11"
V6ONLY = (socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)


def names(d: str) -> list[str]:
    return sorted(n for n in os.listdir(d) if not n.startswith(".") and not n.endswith(".pcap"))


def dual_listener(port: int, *, v6only: bool | None = None) -> socket.socket:
    s = socket.socket(V6, socket.SOCK_STREAM)
    if v6only is not None:
        s.setsockopt(*V6ONLY, int(v6only))
    s.bind(("::", port))
    s.listen(8)
    s.settimeout(5)
    return s


def exchange(client: socket.socket, server: socket.socket) -> None:
    client.sendall(b"ping")
    assert server.recv(10) == b"ping"
    server.sendall(b"pong")
    assert client.recv(10) == b"pong"


def pcap_rows(pcap: str) -> list[list[str]]:
    """(ip.src, ip.dst, ipv6.src, tcp/udp checksum status, ip checksum status) of every frame."""
    return tsharkutil.fields(pcap, ["ip.src", "ip.dst", "ipv6.src", "tcp.checksum.status", "udp.checksum.status",
                                    "ip.checksum.status"], options=tsharkutil.CHECKSUM_OPTS)


# -- TCP ---------------------------------------------------------------------------------------

def test_ipv4_client_reaches_wildcard_listener(wrapped_pcap):
    cfg, pcap = wrapped_pcap
    lst = dual_listener(8080)
    assert names(cfg.socket_dir) == ["T0B1F90", "X0B1F90"]  # one socket, both names
    assert os.stat(os.path.join(cfg.socket_dir, "T0B1F90")).st_ino == \
        os.stat(os.path.join(cfg.socket_dir, "X0B1F90")).st_ino
    assert lst.getsockname() == ("::", 8080, 0, 0)
    c = socket.create_connection((A4, 8080), timeout=5)
    conn, peer = lst.accept()
    port = c.getsockname()[1]
    assert peer == (M4, port, 0, 0) and conn.getpeername() == peer
    assert conn.getsockname() == (M4, 8080, 0, 0)
    assert c.getpeername() == (A4, 8080) and c.getsockname() == (A4, port)
    exchange(c, conn)
    c6 = socket.create_connection((A6, 8080), timeout=5)  # and IPv6 clients still arrive as such
    conn6, peer6 = lst.accept()
    assert peer6 == (A6, c6.getsockname()[1], 0, 0) and conn6.getsockname() == (A6, 8080, 0, 0)
    exchange(c6, conn6)
    for s in (c, conn, c6, conn6, lst):
        s.close()
    assert names(cfg.socket_dir) == []  # both names go with the listener
    rows = pcap_rows(pcap)
    v4 = [r for r in rows if r[0]]
    assert v4 and all(r[0] == A4 and r[1] == A4 and r[3] == "1" and r[5] == "1" for r in v4), rows
    assert len(v4) == 9  # SYN, SYN/ACK, ACK, 2 data, FIN+ACK each way: IPv4, good checksums
    assert len([r for r in rows if r[2] == A6]) == 9
    assert tsharkutil.problems(pcap) == []


def test_v4_mapped_connect(wrapped_pcap):
    cfg, pcap = wrapped_pcap
    lst4 = socket.socket(V4)
    lst4.bind((A4, 9000))
    lst4.listen()
    lst4.settimeout(5)
    c = socket.socket(V6)
    c.settimeout(5)
    c.connect((M4, 9000))
    conn, peer = lst4.accept()
    assert c.getpeername() == (M4, 9000, 0, 0)
    assert c.getsockname() == (M4, peer[1], 0, 0)  # the IPv4 client name, mapped
    assert peer == (A4, c.getsockname()[1]) and conn.getsockname() == (A4, 9000)
    assert names(cfg.socket_dir) == sorted(["T0B2328", f"T0B{peer[1]:04X}"])  # the client's name is IPv4
    exchange(c, conn)
    # the same client family to a dual-stack listener: an IPv4 peer on both sides
    lst = dual_listener(9001)
    c2 = socket.socket(V6)
    c2.settimeout(5)
    c2.connect(("::FFFF:127.0.0.11", 9001))  # any spelling
    conn2, peer2 = lst.accept()
    assert peer2 == c2.getsockname() and peer2[0] == M4
    assert conn2.getsockname() == (M4, 9001, 0, 0) and c2.getpeername() == (M4, 9001, 0, 0)
    exchange(c2, conn2)
    for s in (c, conn, lst4, c2, conn2, lst):
        s.close()
    rows = pcap_rows(pcap)
    assert rows and all(r[0] == A4 and not r[2] and r[3] == "1" for r in rows), rows
    assert tsharkutil.problems(pcap) == []


def test_v6only_listener_is_ipv6_only(wrapped):
    lst = dual_listener(8081, v6only=True)
    assert lst.getsockopt(*V6ONLY) == 1
    assert names(wrapped.socket_dir) == ["X0B1F91"]
    c = socket.socket(V4)
    with pytest.raises(OSError) as e:
        c.connect((A4, 8081))
    nobody = socket.socket(V4)
    with pytest.raises(OSError) as e2:
        nobody.connect((A4, 8099))
    assert e.value.errno == e2.value.errno  # as for a port nobody listens on
    # IPv4 may take the same port beside an IPv6-only socket (Linux allows it too)
    lst4 = socket.socket(V4)
    lst4.bind((A4, 8081))
    lst4.listen()
    assert [n for n in names(wrapped.socket_dir) if n.endswith("1F91")] == ["T0B1F91", "X0B1F91"]
    assert os.stat(os.path.join(wrapped.socket_dir, "T0B1F91")).st_ino != \
        os.stat(os.path.join(wrapped.socket_dir, "X0B1F91")).st_ino
    c6 = socket.create_connection((A6, 8081), timeout=5)
    conn, peer = lst.accept()
    assert peer[0] == A6
    for s in (c, nobody, c6, conn, lst, lst4):
        s.close()


def test_v6only_errnos(wrapped):
    s = socket.socket(V6)
    s.setsockopt(*V6ONLY, 1)
    with pytest.raises(OSError) as e:
        s.connect((M4, 80))
    assert e.value.errno == errno.ENETUNREACH
    with pytest.raises(OSError) as e:
        s.bind((M4, 80))
    assert e.value.errno == errno.EINVAL
    u = socket.socket(V6, socket.SOCK_DGRAM)
    u.setsockopt(*V6ONLY, 1)
    with pytest.raises(OSError) as e:
        u.sendto(b"x", (M4, 80))
    assert e.value.errno == errno.ENETUNREACH
    b = socket.socket(V6)
    b.bind(("::", 0))
    with pytest.raises(OSError) as e:
        b.setsockopt(*V6ONLY, 1)  # decides the names a bind takes: not after bind
    assert e.value.errno == errno.EINVAL
    bound6 = socket.socket(V6)
    bound6.bind((A6, 0))
    with pytest.raises(OSError) as e:
        bound6.connect((M4, 80))  # bound to an IPv6 address: no IPv4 source
    assert e.value.errno == errno.ENETUNREACH
    four = socket.socket(V4)
    with pytest.raises(OSError) as e:
        four.setsockopt(*V6ONLY, 1)
    assert e.value.errno == errno.ENOPROTOOPT
    for x in (s, u, b, bound6, four):
        x.close()


def test_bind_to_v4_mapped_address_is_ipv4_only(wrapped):
    lst = socket.socket(V6)
    lst.bind((M4, 8082))
    lst.listen()
    lst.settimeout(5)
    assert lst.getsockname() == (M4, 8082, 0, 0)
    assert names(wrapped.socket_dir) == ["T0B1F92"]
    c6 = socket.socket(V6)
    with pytest.raises(OSError):
        c6.connect((A6, 8082))
    c = socket.create_connection((A4, 8082), timeout=5)
    conn, peer = lst.accept()
    assert peer == (M4, c.getsockname()[1], 0, 0) and conn.getsockname() == (M4, 8082, 0, 0)
    for s in (c6, c, conn, lst):
        s.close()


@pytest.mark.parametrize("sotype", [socket.SOCK_STREAM, socket.SOCK_DGRAM])
def test_eaddrinuse_on_either_name(wrapped, sotype):
    four = socket.socket(V4, sotype)
    four.bind((A4, 7070))
    dual = socket.socket(V6, sotype)
    with pytest.raises(OSError) as e:
        dual.bind(("::", 7070))  # the IPv4 name is taken
    assert e.value.errno == errno.EADDRINUSE
    letter = "T" if sotype == socket.SOCK_STREAM else "U"
    assert names(wrapped.socket_dir) == [f"{letter}0B1B9E"]  # nothing half-bound left behind
    dual.bind(("::", 7071))  # the failed bind left the socket usable
    with pytest.raises(OSError) as e:
        socket.socket(V4, sotype).bind((A4, 7071))  # the twin name is alive
    assert e.value.errno == errno.EADDRINUSE
    with pytest.raises(OSError) as e:
        socket.socket(V6, sotype).bind((A6, 7071))
    assert e.value.errno == errno.EADDRINUSE
    dual.close()
    again = socket.socket(V4, sotype)
    again.bind((A4, 7071))  # both names went with the socket
    for s in (four, again):
        s.close()


def test_stale_twin_does_not_block(wrapped):
    """A crashed dual-stack server leaves two dead names: the next bind of either family takes them."""
    d = wrapped.socket_dir
    dead = orig_socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(os.path.join(d, "X0B1F93"))
    os.link(os.path.join(d, "X0B1F93"), os.path.join(d, "T0B1F93"))
    dead.close()
    s4 = socket.socket(V4)
    s4.bind((A4, 8083))
    s4.close()
    dual = socket.socket(V6)
    dual.bind(("::", 8083))
    dual.listen()
    assert names(d) == ["T0B1F93", "X0B1F93"]
    dual.close()


def test_default_follows_bindv6only_sysctl(wrapped, tmp_path, monkeypatch):
    real = orig_socket(V6, socket.SOCK_STREAM)
    assert socket.socket(V6).getsockopt(*V6ONLY) == real.getsockopt(*V6ONLY)  # the machine's own setting
    real.close()
    sysctl = tmp_path / "bindv6only"
    monkeypatch.setenv("WIRECHECK_BINDV6ONLY_FILE", str(sysctl))
    for value, want in (("1\n", ["X0B1F94"]), ("0\n", ["T0B1F94", "X0B1F94"])):
        sysctl.write_text(value)
        s = socket.socket(V6)
        assert s.getsockopt(*V6ONLY) == int(value)
        s.bind(("::", 8084))
        s.listen()
        assert names(wrapped.socket_dir) == want
        s.close()


# -- UDP ---------------------------------------------------------------------------------------

def test_udp_dual_stack(wrapped_pcap):
    cfg, pcap = wrapped_pcap
    srv = socket.socket(V6, socket.SOCK_DGRAM)
    srv.bind(("::", 4000))
    srv.settimeout(5)
    assert names(cfg.socket_dir) == ["U0B0FA0", "Y0B0FA0"]
    c4 = socket.socket(V4, socket.SOCK_DGRAM)
    c4.settimeout(5)
    c4.sendto(b"four", (A4, 4000))
    data, src = srv.recvfrom(100)
    assert (data, src) == (b"four", (M4, c4.getsockname()[1], 0, 0))
    srv.sendto(b"FOUR", src)
    assert c4.recvfrom(100) == (b"FOUR", (A4, 4000))  # the answer comes from the IPv4 address
    cc = socket.socket(V4, socket.SOCK_DGRAM)  # connected: the answer must come from its peer
    cc.settimeout(5)
    cc.connect((A4, 4000))
    cc.send(b"conn")
    data, src = srv.recvfrom(100)
    srv.sendto(b"CONN", src)
    assert cc.recvfrom(100) == (b"CONN", (A4, 4000))
    cc.close()
    cm = socket.socket(V6, socket.SOCK_DGRAM)  # an AF_INET6 client speaking IPv4
    cm.settimeout(5)
    cm.sendto(b"mapped", (M4, 4000))
    data, src = srv.recvfrom(100)
    assert src == (M4, cm.getsockname()[1], 0, 0) and cm.getsockname()[0] == M4
    srv.sendto(b"MAPPED", src)
    assert cm.recvfrom(100) == (b"MAPPED", (M4, 4000, 0, 0))
    # the same socket to an IPv6-only server: it takes its IPv6 name first (Linux bound it to ::)
    srv6 = socket.socket(V6, socket.SOCK_DGRAM)
    srv6.setsockopt(*V6ONLY, 1)
    srv6.bind(("::", 4002))
    srv6.settimeout(5)
    cm.sendto(b"six", (A6, 4002))
    assert f"Y0B{src[1]:04X}" in names(cfg.socket_dir)
    data, src6 = srv6.recvfrom(100)
    assert (data, src6) == (b"six", (A6, src[1], 0, 0))
    srv6.sendto(b"SIX", src6)
    assert cm.recvfrom(100) == (b"SIX", (A6, 4002, 0, 0))
    c6 = socket.socket(V6, socket.SOCK_DGRAM)
    c6.settimeout(5)
    c6.connect((A6, 4000))
    c6.send(b"plain6")
    data, src = srv.recvfrom(100)
    assert src == c6.getsockname() and src[0] == A6
    for s in (srv, srv6, c4, cm, c6):
        s.close()
    rows = pcap_rows(pcap)
    v4 = [r for r in rows if r[0]]
    assert len(v4) == 6 and all(r[0] == A4 and r[4] == "1" and r[5] == "1" for r in v4), rows
    assert len([r for r in rows if r[2]]) == 3  # six, SIX, plain6
    assert tsharkutil.problems(pcap) == []


def test_udp_v6only_server_not_reached_by_ipv4(wrapped):
    srv = socket.socket(V6, socket.SOCK_DGRAM)
    srv.setsockopt(*V6ONLY, 1)
    srv.bind(("::", 4001))
    assert names(wrapped.socket_dir) == ["Y0B0FA1"]
    c4 = socket.socket(V4, socket.SOCK_DGRAM)
    with pytest.raises(OSError) as e:
        c4.sendto(b"x", (A4, 4001))
    assert e.value.errno == errno.EHOSTUNREACH  # nobody at the IPv4 name, as for any free port
    srv.close()
    c4.close()


def test_kernel_agrees():
    """The facts above on the real kernel (skipped where this machine has no IPv6 loopback, failed
    under CI)."""
    if wrappers.socket_wrapper.active_config() is not None:
        pytest.skip("the wrapper is active")
    try:
        lst = orig_socket(V6)
        lst.setsockopt(*V6ONLY, 0)
        lst.bind(("::", 0))
    except OSError as e:
        if os.environ.get("CI"):
            pytest.fail(f"no IPv6 loopback to compare with (required under CI): {e}")
        pytest.skip(f"no IPv6 here: {e}")
    lst.listen()
    port = lst.getsockname()[1]
    c = orig_socket(V4)
    c.connect(("127.0.0.1", port))
    conn, peer = lst.accept()
    assert peer == ("::ffff:127.0.0.1", c.getsockname()[1], 0, 0)
    assert conn.getsockname() == ("::ffff:127.0.0.1", port, 0, 0)
    with pytest.raises(OSError) as e:
        orig_socket(V4).bind(("127.0.0.1", port))
    assert e.value.errno == errno.EADDRINUSE
    x = orig_socket(V6)
    x.setsockopt(*V6ONLY, 1)
    with pytest.raises(OSError) as e:
        x.connect(("::ffff:127.0.0.1", port))
    assert e.value.errno == errno.ENETUNREACH
    with pytest.raises(OSError) as e:
        x.bind(("::ffff:127.0.0.1", 0))
    assert e.value.errno == errno.EINVAL
    for s in (lst, c, conn, x):
        s.close()
