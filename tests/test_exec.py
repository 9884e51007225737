"""`wirecheck exec`: separate Python processes on one emulated network, through the real CLI.

Each test starts real subprocesses (`wirecheck exec ... -- python tests/peers.py ...`), checks
the addresses every side sees, the cwrap file names in the socket directory, and reads the
capture with tshark (checksum validation on): clean, and every packet exactly once.
Also: the CLI's refusals of bad input, --create and --clean.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest
import tsharkutil
from procutil import (
    PYTHON,
    WIRECHECK,
    Procs,
    clean_env,
    flows,
    listing,
    py_peer,
    tcp_flags,
    tuples,
    wait_for_path,
    wirecheck_exec,
)

from wrappers.addressing import AUTOBIND_FIRST, AUTOBIND_LAST, Network, socket_name

NET = Network()
FAMILIES = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}
SERVER_IFACE, CLIENT_IFACE = 10, 11
TCP_PORT, UDP_PORT = 445, 7  # NBSS and ECHO: Wireshark dissects our framing cleanly on both
MESSAGES = ["hello", "x" * 5000, "wörld"]  # 5000 bytes: more than one segment


def frame(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def addr(family: int, iface: int, port: int, network: Network = NET) -> tuple:
    host = network.iface_address(family, iface)
    return (host, port) if family == socket.AF_INET else (host, port, 0, 0)


def endpoint(a: tuple) -> str:
    return f"{a[0]}:{a[1]}"


@pytest.mark.parametrize("fam", ["ipv4", "ipv6"])
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_two_python_processes(procs: Procs, sockdir: Path, pcaps, proto: str, fam: str) -> None:
    family = FAMILIES[fam]
    sotype = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    port = TCP_PORT if proto == "tcp" else UDP_PORT
    pcap = pcaps.new()
    server_addr = addr(family, SERVER_IFACE, port)
    host = server_addr[0]

    server = procs.start("server", wirecheck_exec(
        sockdir, *py_peer(f"{proto}-server", host, str(port), str(len(MESSAGES))), iface=SERVER_IFACE, pcap=pcap))
    ready = tuples(server.expect("ready"))
    assert ready["wrapper"] == "python"
    assert ready["sockname"] == server_addr
    server_file = socket_name(family, sotype, SERVER_IFACE, port)
    assert listing(sockdir) == [server_file]
    assert stat.S_ISSOCK(os.lstat(sockdir / server_file).st_mode)

    client = procs.start("client", wirecheck_exec(
        sockdir, *py_peer(f"{proto}-client", host, str(port), *MESSAGES), iface=CLIENT_IFACE, pcap=pcap))
    first = tuples(client.expect("connected" if proto == "tcp" else "sent"))
    assert first["wrapper"] == "python"
    # Autobind: this process's address, cwrap's ephemeral port (pid % 50000 + 10000 for the first one).
    client_addr = first["sockname"]
    assert client_addr[0] == NET.iface_address(family, CLIENT_IFACE)
    assert AUTOBIND_FIRST <= client_addr[1] <= AUTOBIND_LAST
    assert client_addr[1] == first["pid"] % 50000 + 10000
    client_file = socket_name(family, sotype, CLIENT_IFACE, client_addr[1])
    assert sorted(first["listing"]) == sorted([server_file, client_file])
    if proto == "tcp":
        assert first["peername"] == server_addr
        accepted = tuples(server.expect("accepted"))
        assert accepted["peer"] == client_addr
        assert accepted["peername"] == client_addr
        assert accepted["sockname"] == server_addr
    replies = tuples(client.expect("replies"))
    assert list(replies["replies"]) == [m.encode().upper().decode() for m in MESSAGES]
    if proto == "udp":
        assert list(replies["sources"]) == [server_addr] * len(MESSAGES)
    client.finish()
    done = tuples(server.expect("done"))
    if proto == "udp":
        assert list(done["senders"]) == [client_addr] * len(MESSAGES)
    else:
        assert done["eof"] is True
    server.finish()
    assert client_file not in listing(sockdir), "the autobound file outlived the client"

    pcaps.assert_clean(pcap)
    c, s = endpoint(client_addr), endpoint(server_addr)
    seen = flows(pcap)
    assert set(seen) == {(proto, c, s), (proto, s, c)}, seen
    requests = [m.encode() for m in MESSAGES]
    answers = [m.encode().upper() for m in MESSAGES]
    if proto == "tcp":
        # Each byte exactly once, in order, in each direction.
        assert b"".join(seen[(proto, c, s)]) == b"".join(frame(m) for m in requests)
        assert b"".join(seen[(proto, s, c)]) == b"".join(frame(m) for m in answers)
        flags = [f for _src, _dst, f in tcp_flags(pcap)]
        assert sum("S" in f for f in flags) == 2  # SYN and SYN/ACK, once each
        assert sum("F" in f for f in flags) == 2  # one FIN each way
        assert not any("R" in f for f in flags)
    else:
        assert seen[(proto, c, s)] == requests
        assert seen[(proto, s, c)] == answers


def test_unmodified_http_server_on_10_53_57_network(procs: Procs, sockdir: Path, pcaps, tmp_path: Path) -> None:
    """`python -m http.server --bind 0.0.0.0` on iface 35 of 10.53.57.0, fetched from iface 21."""
    net = Network("10.53.57.0", 35)
    docroot = tmp_path / "www"
    docroot.mkdir()
    body = "served over the emulated network\n" * 40
    (docroot / "hello.txt").write_text(body)
    pcap = pcaps.new()
    server = procs.start("http.server", wirecheck_exec(
        sockdir, PYTHON, "-m", "http.server", "8080", "--bind", "0.0.0.0",
        iface=35, pcap=pcap, network="10.53.57.0"), cwd=str(docroot))
    # Wildcard bind -> the default interface: 0x23 = 35, 0x1F90 = 8080.
    wait_for_path(sockdir / "T231F90", server)
    client = procs.run("client", wirecheck_exec(
        sockdir, *py_peer("http-get", "http://10.53.57.35:8080/hello.txt"), iface=21, pcap=pcap,
        network="10.53.57.0"))
    got = tuples(client.expect("http"))
    assert got["status"] == 200 and got["body"] == body[:2000] and got["length"] == len(body)
    server.kill()
    # http.server logs the client address it saw from accept().
    assert "10.53.57.21 - - [" in server.stderr and '"GET /hello.txt HTTP/1.1" 200' in server.stderr
    pcaps.assert_clean(pcap)
    assert tsharkutil.count_frames(pcap, display_filter="http.request") == 1
    assert tsharkutil.count_frames(pcap, display_filter="http.response") == 1
    assert tsharkutil.count_frames(pcap, display_filter="tcp.flags.syn == 1 && tcp.flags.ack == 0") == 1
    assert tsharkutil.count_frames(pcap, display_filter="ip.src == 10.53.57.21 && ip.dst == 10.53.57.35") > 0
    # The 127.0.0.0 network is outside this one: nothing else appears.
    assert tsharkutil.count_frames(pcap, display_filter="!(ip.addr == 10.53.57.0/24)") == 0
    assert net.iface_address(socket.AF_INET, 35) == "10.53.57.35"


def test_other_network_is_unreachable(procs: Procs, sockdir: Path) -> None:
    """Under 10.53.57.0, 127.0.0.x is outside the network: ENETUNREACH, as cwrap."""
    code = ("import errno, socket\n"
            "s = socket.socket()\n"
            "try:\n    s.connect(('127.0.0.10', 445))\nexcept OSError as e:\n    print(errno.errorcode[e.errno])\n")
    p = procs.run("client", wirecheck_exec(sockdir, PYTHON, "-c", code, iface=21, network="10.53.57.0"))
    assert p.lines == ["ENETUNREACH"]


# -- bad input -----------------------------------------------------------------------------------


def _refused(procs: Procs, argv: list[str], marker: Path, *words: str, env: dict | None = None) -> str:
    p = procs.run("wirecheck", argv, env=env if env is not None else clean_env(), rc=None)
    rc = p.popen.returncode
    assert rc == 2, f"expected exit 2, got {rc}\n{p.describe()}"
    assert not marker.exists(), "the command ran although the CLI refused"
    err = p.stderr
    assert "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


def _touch_cmd(marker: Path) -> list[str]:
    return ["touch", str(marker)]


def test_refuses_missing_dir(procs: Procs, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    _refused(procs, [WIRECHECK, "exec", "--dir", "/nonexistent", "--", *_touch_cmd(marker)], marker,
             "/nonexistent", "does not exist")
    assert not os.path.exists("/nonexistent")


def test_refuses_file_instead_of_dir(procs: Procs, tmp_path: Path) -> None:
    marker, f = tmp_path / "ran", tmp_path / "afile"
    f.write_text("x")
    _refused(procs, [WIRECHECK, "exec", "--dir", str(f), "--", *_touch_cmd(marker)], marker, "not a directory")


def test_refuses_world_writable_dir(procs: Procs, tmp_path: Path) -> None:
    marker, d = tmp_path / "ran", tmp_path / "ww"
    d.mkdir()
    d.chmod(0o777)
    _refused(procs, [WIRECHECK, "exec", "--dir", str(d), "--", *_touch_cmd(marker)], marker, "world-writable")


def test_refuses_dir_of_another_user(procs: Procs, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to chown a directory to nobody")
    import pwd

    nobody = pwd.getpwnam("nobody").pw_uid
    marker, d = tmp_path / "theirs", tmp_path / "theirs"
    d.mkdir(mode=0o700)
    os.chown(d, nobody, -1)
    marker = tmp_path / "ran"
    _refused(procs, [WIRECHECK, "exec", "--dir", str(d), "--", *_touch_cmd(marker)], marker,
             f"owned by uid {nobody}")


@pytest.mark.parametrize("iface", ["65", "0", "abc"])
def test_refuses_bad_iface(procs: Procs, sockdir: Path, tmp_path: Path, iface: str) -> None:
    marker = tmp_path / "ran"
    _refused(procs, [WIRECHECK, "exec", "--dir", str(sockdir), "--iface", iface, "--", *_touch_cmd(marker)],
             marker, "1..64")


def test_refuses_too_long_dir(procs: Procs, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    d = tmp_path
    while len(str(d)) <= 99:
        d = d / "d123456789"
    d.mkdir(parents=True, mode=0o700)
    for parent in [d, *d.parents]:
        if parent == tmp_path:
            break
        parent.chmod(0o700)
    _refused(procs, [WIRECHECK, "exec", "--dir", str(d), "--", *_touch_cmd(marker)], marker, "99")


def test_accepts_99_char_dir(procs: Procs, tmp_path: Path) -> None:
    """The longest directory cwrap accepts: sun_path still fits '/' + 7 characters + NUL."""
    base = str(tmp_path / "x")
    d = Path(base + "y" * (99 - len(base)))
    assert len(str(d)) == 99
    d.mkdir(mode=0o700)
    code = ("import socket\ns = socket.socket()\ns.bind(('127.0.0.10', 445))\ns.listen()\n"
            "import os\nprint(sorted(n for n in os.listdir(os.environ['SOCKET_WRAPPER_DIR']) if n[0] != '.'))")
    p = procs.run("py", wirecheck_exec(d, PYTHON, "-c", code, iface=10))
    assert p.lines == ["['T0A01BD']"]


@pytest.mark.parametrize("command", ["python", "native"])
def test_refuses_unknown_ipv4_network(procs: Procs, sockdir: Path, tmp_path: Path, command: str) -> None:
    """cwrap aborts the process on SOCKET_WRAPPER_IPV4_NETWORK=192.168.0.0; we refuse with exit 2."""
    marker = tmp_path / "ran"
    env = clean_env()
    env["SOCKET_WRAPPER_IPV4_NETWORK"] = "192.168.0.0"
    cmd = [PYTHON, "-c", f"open({str(marker)!r}, 'w')"] if command == "python" else _touch_cmd(marker)
    _refused(procs, [WIRECHECK, "exec", "--dir", str(sockdir), "--", *cmd], marker,
             "SOCKET_WRAPPER_IPV4_NETWORK", "192.168.0.0", env=env)


def test_refuses_unknown_network_option(procs: Procs, sockdir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    _refused(procs, [WIRECHECK, "exec", "--dir", str(sockdir), "--network", "192.168.0.0", "--",
                     *_touch_cmd(marker)], marker, "192.168.0.0")


def test_create_makes_private_dir(procs: Procs, tmp_path: Path) -> None:
    d = tmp_path / "new" / "sw"
    code = "import socket\ns = socket.socket()\ns.bind(('127.0.0.10', 80))\nprint(s.getsockname())"
    env = clean_env()
    p = procs.run("py", [WIRECHECK, "exec", "--dir", str(d), "--create", "--iface", "10", "--",
                         PYTHON, "-c", code], env=env)
    assert p.lines == ["('127.0.0.10', 80)"]
    st = os.stat(d)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.geteuid()
    # Without --create the same missing directory is refused.
    marker = tmp_path / "ran"
    _refused(procs, [WIRECHECK, "exec", "--dir", str(tmp_path / "other"), "--", *_touch_cmd(marker)], marker,
             "does not exist")


def test_clean_removes_stale_files_never_follows_symlinks(procs: Procs, sockdir: Path, tmp_path: Path) -> None:
    # A crashed run: a server killed with SIGKILL leaves its explicit-bind file behind.
    crashed = procs.start("crashed", wirecheck_exec(sockdir, *py_peer("tcp-server", "127.0.0.10", "445", "1"),
                                                     iface=10))
    crashed.expect("ready")
    crashed.kill()
    assert "T0A01BD" in listing(sockdir)
    # A live listener (this test process, plain unix socket) must survive --clean.
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(sockdir / "T0A0050"))
    live.listen()
    # A symlink named like a socket file, pointing outside the directory.
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    os.symlink(outside, sockdir / "U0A0035")
    # A file with a non-socket name is none of --clean's business.
    (sockdir / "notes").write_text("keep")
    try:
        p = procs.run("clean", [WIRECHECK, "exec", "--dir", str(sockdir), "--clean", "--", "true"],
                      env=clean_env())
        assert "T0A01BD" in p.stderr
        names = listing(sockdir)
        assert "T0A01BD" not in names
        assert "T0A0050" in names
        assert "notes" in names
        assert not os.path.lexists(sockdir / "U0A0035")
        assert outside.read_text() == "precious"
        # The address is usable again.
        again = procs.start("again", wirecheck_exec(sockdir, *py_peer("tcp-server", "127.0.0.10", "445", "0"),
                                                     iface=10))
        assert tuples(again.expect("ready"))["sockname"] == ("127.0.0.10", 445)
    finally:
        live.close()
