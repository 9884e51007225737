"""The emulated socket API inside one process: what applications rely on, errno for errno."""

from __future__ import annotations

import errno
import hashlib
import os
import selectors
import socket
import stat
import threading

import pytest
from threadutil import joined
from wrapfix import swdir, wrapped, wrapped_pcap  # noqa: F401

import wrappers
from wrappers.addressing import parse_socket_name

V4, V6 = socket.AF_INET, socket.AF_INET6
SERVER = {V4: "127.0.0.10", V6: "fd00::5357:5f0a"}


def names(d):
    return sorted(n for n in os.listdir(d) if not n.startswith("."))


def echo_server(family, port, count=1):
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.bind((SERVER[family], port))
    srv.listen()
    seen = []

    def run():
        for _ in range(count):
            c, peer = srv.accept()
            seen.append((peer, c.getsockname(), c.getpeername()))
            with c:
                while data := c.recv(65536):
                    c.sendall(data)
        srv.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, seen


@pytest.mark.parametrize("family", [V4, V6])
def test_tcp_echo_names_and_addresses(wrapped, family):
    t, seen = echo_server(family, 445)
    letter = "T" if family == V4 else "X"
    assert f"{letter}0A01BD" in names(wrapped.socket_dir)
    c = socket.socket(family, socket.SOCK_STREAM)
    c.settimeout(5)
    c.connect((SERVER[family], 445))
    local = c.getsockname()
    # autobind: interface 11 (ours), port from the per-process counter (10000..60000 range start)
    assert local[0] == ("127.0.0.11" if family == V4 else "fd00::5357:5f0b")
    assert 10000 <= local[1] <= 61023
    assert c.getpeername()[:2] == (SERVER[family], 445)
    assert f"{letter}0B{local[1]:04X}" in names(wrapped.socket_dir)
    payload = os.urandom(3 * 1024 * 1024 + 7)
    c.sendall(payload)
    got = bytearray()
    while len(got) < len(payload):
        got += c.recv(1 << 20)
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    c.close()
    joined(t, 5)
    peer, srv_local, srv_peer = seen[0]
    assert peer[:2] == local[:2] and srv_peer[:2] == local[:2]
    assert srv_local[:2] == (SERVER[family], 445)
    # the client's autobind file is gone after close, and so is the server's after its close
    assert names(wrapped.socket_dir) == []


def test_udp_addresses_and_wildcard_bind(wrapped):
    s = socket.socket(V4, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 53))
    assert s.getsockname() == ("0.0.0.0", 53)  # as cwrap: the wildcard is reported as given
    assert "U0B0035" in names(wrapped.socket_dir)  # ... but the file is on our interface (11)
    c = socket.socket(V4, socket.SOCK_DGRAM)
    c.settimeout(5)
    c.sendto(b"query", ("127.0.0.11", 53))
    data, src = s.recvfrom(100)
    assert data == b"query" and src == c.getsockname()
    s.sendto(b"reply", src)
    assert c.recvfrom(100) == (b"reply", ("127.0.0.11", 53))
    s.close()
    c.close()


def test_udp_connect_is_deferred_like_cwrap(wrapped):
    c = socket.socket(V4, socket.SOCK_DGRAM)
    c.connect(("127.0.0.10", 9))  # nothing there: connect still succeeds
    assert c.getpeername() == ("127.0.0.10", 9)
    with pytest.raises(OSError) as e:
        c.send(b"x")
    assert e.value.errno == errno.EHOSTUNREACH
    # once a server exists, the same socket reaches it, and ignores sendto destinations
    s = socket.socket(V4, socket.SOCK_DGRAM)
    s.bind(("127.0.0.10", 9))
    c.send(b"one")
    c.sendto(b"two", ("127.0.0.12", 99))
    s.settimeout(5)
    assert s.recv(10) == b"one" and s.recv(10) == b"two"


@pytest.mark.parametrize(
    "call,err",
    [
        (lambda: socket.create_connection(("192.168.1.1", 80), timeout=2), errno.ENETUNREACH),
        (lambda: socket.create_connection(("127.0.1.5", 80), timeout=2), errno.ENETUNREACH),
        (lambda: socket.socket(V6).connect(("::1", 80)), errno.ENETUNREACH),
        (lambda: socket.create_connection(("127.0.0.99", 80), timeout=2), errno.EHOSTUNREACH),
        (lambda: socket.socket(V4).bind(("192.168.1.1", 80)), errno.EADDRNOTAVAIL),
        (lambda: socket.socket(V4).bind(("127.0.0.65", 80)), errno.EINVAL),
        (lambda: socket.socket(V6).bind(("fd00::5357:5f41", 80)), errno.EINVAL),
        (lambda: socket.socket(V4).getpeername(), errno.ENOTCONN),
        (lambda: socket.socket(V4, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.10", 0)), errno.EINVAL),
        (lambda: socket.socket(V4, socket.SOCK_RAW, 1), errno.EPROTONOSUPPORT),
        (lambda: socket.socket(V4, socket.SOCK_SEQPACKET), errno.EPROTONOSUPPORT),
        (lambda: socket.socket(V4).getsockopt(socket.IPPROTO_TCP, 99), errno.ENOPROTOOPT),
        (lambda: socket.socket(V4).recv(10), errno.ENOTCONN),
    ],
)
def test_errnos(wrapped, call, err):
    with pytest.raises(OSError) as e:
        call()
    assert e.value.errno == err


def test_connect_to_stale_file_is_refused(wrapped):
    s = socket.socket(V4)
    s.bind(("127.0.0.10", 700))
    s.listen()
    path = os.path.join(wrapped.socket_dir, "T0A02BC")
    os.link(path, path + ".keep")  # keep the file after the listener is gone
    s.close()
    os.rename(path + ".keep", path)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.10", 700), timeout=2)


def test_bind_refuses_a_live_name_but_takes_a_stale_one(wrapped):
    a = socket.socket(V4)
    a.bind(("127.0.0.10", 700))
    a.listen()
    b = socket.socket(V4)
    with pytest.raises(OSError) as e:
        b.bind(("127.0.0.10", 700))  # cwrap would silently steal the name here
    assert e.value.errno == errno.EADDRINUSE
    path = os.path.join(wrapped.socket_dir, "T0A02BC")
    os.link(path, path + ".keep")
    a.close()
    os.rename(path + ".keep", path)  # a leftover from a crashed run
    b.bind(("127.0.0.10", 700))
    b.listen()
    with socket.create_connection(("127.0.0.10", 700), timeout=2):
        conn, _ = b.accept()
        conn.close()


def test_bind_port_zero_scans_from_5001(wrapped):
    a = socket.socket(V4)
    a.bind(("127.0.0.10", 0))
    assert a.getsockname() == ("127.0.0.10", 5001)
    b = socket.socket(V4)
    b.bind(("127.0.0.10", 0))
    assert b.getsockname() == ("127.0.0.10", 5002)
    u = socket.socket(V6, socket.SOCK_DGRAM)
    u.bind(("::", 0))
    assert u.getsockname()[:2] == ("::", 5001)
    assert "Y0B1389" in names(wrapped.socket_dir)


def test_listen_without_bind_autobinds(wrapped):
    s = socket.socket(V4)
    s.listen()
    host, port = s.getsockname()
    assert host == "127.0.0.11" and port >= 10000
    parsed = parse_socket_name(names(wrapped.socket_dir)[0])
    assert (parsed.iface, parsed.port) == (11, port)


def test_options(wrapped):
    s = socket.socket(V6, socket.SOCK_STREAM)
    assert s.family == V6 and s.type == socket.SOCK_STREAM
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN) == V6
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_STREAM
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL) == socket.IPPROTO_TCP
    assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    assert s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # 1.4.4+: accepted, emulated
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1


def test_timeouts_and_nonblocking(wrapped):
    srv = socket.socket(V4)
    srv.bind(("127.0.0.10", 80))
    srv.listen()
    srv.settimeout(0.2)
    with pytest.raises(TimeoutError):
        srv.accept()
    srv.setblocking(False)
    with pytest.raises(BlockingIOError):
        srv.accept()
    c = socket.create_connection(("127.0.0.10", 80), timeout=5)
    srv.setblocking(True)
    conn, _ = srv.accept()
    conn.settimeout(0.2)
    with pytest.raises(TimeoutError):
        conn.recv(10)
    conn.setblocking(False)
    assert conn.getblocking() is False and conn.gettimeout() == 0.0
    with pytest.raises(BlockingIOError):
        conn.recv(10)
    c.sendall(b"hi")
    conn.settimeout(5)
    assert conn.recv(10) == b"hi"
    # a blocking sender against a reader that never reads: the timeout fires, nothing hangs
    c.settimeout(0.3)
    with pytest.raises(TimeoutError):
        while True:
            c.send(b"x" * 65536)


def test_selectors_see_readiness(wrapped):
    srv = socket.socket(V4)
    srv.bind(("127.0.0.10", 80))
    srv.listen()
    srv.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(srv, selectors.EVENT_READ)
    assert sel.select(0) == []
    c = socket.create_connection(("127.0.0.10", 80), timeout=5)
    assert len(sel.select(2)) == 1
    conn, _ = srv.accept()
    sel.register(conn, selectors.EVENT_READ)
    c.sendall(b"ping")
    keys = [k.fileobj for k, _ in sel.select(2)]
    assert conn in keys
    sel.close()


def test_shutdown_half_close(wrapped):
    srv = socket.socket(V4)
    srv.bind(("127.0.0.10", 80))
    srv.listen()
    c = socket.create_connection(("127.0.0.10", 80), timeout=5)
    conn, _ = srv.accept()
    conn.settimeout(5)
    c.sendall(b"request")
    c.shutdown(socket.SHUT_WR)
    assert conn.recv(100) == b"request"
    assert conn.recv(100) == b""  # EOF after the half-close
    conn.sendall(b"response")  # the other direction still works
    assert c.recv(100) == b"response"
    with pytest.raises(BrokenPipeError):
        c.send(b"more")


def test_dup_and_makefile_share_identity(wrapped):
    srv = socket.socket(V4)
    srv.bind(("127.0.0.10", 80))
    srv.listen()
    c = socket.create_connection(("127.0.0.10", 80), timeout=5)
    d = c.dup()
    assert d.getsockname() == c.getsockname() and d.getpeername() == c.getpeername()
    conn, _ = srv.accept()
    d.close()  # not the last reference: the connection stays up
    f = conn.makefile("rwb")
    c.sendall(b"line one\n")
    assert f.readline() == b"line one\n"
    f.write(b"back\n")
    f.flush()
    c.settimeout(5)
    assert c.recv(10) == b"back\n"


def test_broadcast_reaches_every_listener(wrapped):
    receivers = []
    for iface in (3, 4, 5):
        r = socket.socket(V4, socket.SOCK_DGRAM)
        r.bind((f"127.0.0.{iface}", 137))
        r.settimeout(5)
        receivers.append(r)
    s = socket.socket(V4, socket.SOCK_DGRAM)
    with pytest.raises(PermissionError):  # the kernel wants SO_BROADCAST first
        s.sendto(b"hello", ("127.255.255.255", 137))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    assert s.sendto(b"hello", ("127.255.255.255", 137)) == 5
    for r in receivers:
        assert r.recvfrom(10) == (b"hello", s.getsockname())


def test_deactivate_restores_real_sockets(swdir):
    with wrappers.activate(swdir, iface=3):
        assert socket.socket is wrappers.WrappedSocket
        s = socket.socket(V4)
        assert s.emulated
    assert socket.socket is not wrappers.WrappedSocket
    plain = socket.socket(V4)
    assert plain.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN) == V4
    plain.close()
    s.bind(("127.0.0.3", 80))  # an emulated socket made before deactivate keeps working
    s.close()


def test_invisible_without_socket_dir(monkeypatch):
    monkeypatch.delenv("SOCKET_WRAPPER_DIR", raising=False)
    s = wrappers.WrappedSocket(V4, socket.SOCK_STREAM)
    assert not s.emulated
    s.bind(("127.0.0.1", 0))
    assert s.getsockname()[1] != 0
    s.close()


@pytest.mark.parametrize(
    "setup,message",
    [
        (lambda d: os.rmdir(d), "does not exist"),
        (lambda d: os.chmod(d, 0o777), "world-writable"),
        (lambda d: os.chown(d, 65534, 65534), "owned by uid 65534"),
    ],
)
def test_bad_socket_dir_is_refused(swdir, setup, message):
    target = swdir
    setup(target)
    try:
        with pytest.raises(wrappers.WrapperConfigError, match=message):
            wrappers.activate(target)
    finally:
        if not os.path.exists(target):
            os.mkdir(target, 0o700)
        os.chown(target, os.geteuid(), os.getegid())
        os.chmod(target, 0o700)
    assert socket.socket is not wrappers.WrappedSocket


def test_socket_dir_checks(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(wrappers.WrapperConfigError, match="not a directory"):
        wrappers.activate(str(f))
    long = "/tmp/" + "d" * 100
    with pytest.raises(wrappers.WrapperConfigError, match="at most 99"):
        wrappers.activate(long, create=True)
    os.rmdir(long)
    made = tmp_path / "made"
    with wrappers.activate(str(made), create=True):
        assert stat.S_IMODE(os.stat(made).st_mode) == 0o700
    with pytest.raises(wrappers.WrapperConfigError, match="SOCKET_WRAPPER_DEFAULT_IFACE: 65"):
        wrappers.activate(str(made), iface=65)
    with pytest.raises(wrappers.WrapperConfigError, match="SOCKET_WRAPPER_IPV4_NETWORK"):
        wrappers.activate(str(made), ipv4_network="192.168.0.0")
    os.environ.pop("SOCKET_WRAPPER_IPV4_NETWORK", None)
