"""Dual-stack sockets across processes: `wirecheck exec` servers on ``[::]`` and IPv4 clients.

The server processes bind ``::`` with plain socket calls (tests/peers.py, harness/peers/quic_echo.py,
``python3 -m http.server --bind ::``), as programs do on Linux, where an IPv4 client then reaches
them; the clients are other `wirecheck exec` processes and native programs under Debian's
libsocket_wrapper.so (cwrap), which know nothing of dual-stack and find the server by its IPv4
file name. IPV6_V6ONLY comes from the (stand-in) bindv6only sysctl of the server's process. The
capture is read with tshark, checksum validation on.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import tsharkutil
from procutil import (
    NATIVE_PYTHON,
    PYTHON,
    Procs,
    listing,
    native_env,
    native_peer,
    need_libsocket_wrapper,
    need_program,
    py_peer,
    tuples,
    wait_for_path,
    wirecheck_exec,
)

SERVER_IFACE, CLIENT_IFACE = 10, 21
A4, M4 = "127.0.0.10", "::ffff:127.0.0.10"
A6 = "fd00::5357:5f0a"
C4, CM4, C6 = "127.0.0.21", "::ffff:127.0.0.21", "fd00::5357:5f15"
MESSAGES = ["hello", "x" * 3000, "bye"]
PORTS = {"tcp": 445, "udp": 7}  # NBSS and ECHO: Wireshark dissects the framing cleanly
MIXED_TOLERATES = {"zero-checksum", "duplicate", "ipv6-length", "cwrap-eof-rst", "late"}


def server_env(tmp_path: Path, v6only: bool) -> dict[str, str]:
    """The test's environment, with the server's bindv6only sysctl replaced by a file saying ``v6only``."""
    sysctl = tmp_path / "bindv6only"
    sysctl.write_text("1\n" if v6only else "0\n")
    return {**os.environ, "WIRECHECK_BINDV6ONLY_FILE": str(sysctl)}


def start_server(procs: Procs, sockdir: Path, pcap: Path | None, proto: str, env: dict[str, str]):  # noqa: ANN201
    server = procs.start("server", wirecheck_exec(
        sockdir, *py_peer(f"{proto}-server", "::", str(PORTS[proto]), str(len(MESSAGES))),
        iface=SERVER_IFACE, pcap=pcap), env=env)
    ready = tuples(server.expect("ready"))
    assert ready["sockname"] == ("::", PORTS[proto], 0, 0)
    return server


@pytest.mark.parametrize("client", ["ipv4", "mapped"])
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_ipv4_clients_of_a_wildcard_server(procs: Procs, sockdir: Path, pcaps, tmp_path: Path, proto: str,
                                           client: str) -> None:
    pcap = pcaps.new()
    port = PORTS[proto]
    server = start_server(procs, sockdir, pcap, proto, server_env(tmp_path, v6only=False))
    letter4, letter6 = ("T", "X") if proto == "tcp" else ("U", "Y")
    assert listing(sockdir) == [f"{letter4}0A{port:04X}", f"{letter6}0A{port:04X}"]
    dest = A4 if client == "ipv4" else M4
    c = procs.start("client", wirecheck_exec(sockdir, *py_peer(f"{proto}-client", dest, str(port), *MESSAGES),
                                             iface=CLIENT_IFACE, pcap=pcap))
    first = tuples(c.expect("connected" if proto == "tcp" else "sent"))
    cport = first["sockname"][1]
    assert first["sockname"] == ((C4, cport) if client == "ipv4" else (CM4, cport, 0, 0))
    assert f"{letter4}15{cport:04X}" in first["listing"]  # the client's name is IPv4 either way
    replies = tuples(c.expect("replies"))
    assert list(replies["replies"]) == [m.upper() for m in MESSAGES]
    if proto == "udp":
        want = (A4, port) if client == "ipv4" else (M4, port, 0, 0)
        assert list(replies["sources"]) == [want] * len(MESSAGES)
    else:
        accepted = tuples(server.expect("accepted"))
        assert accepted["peer"] == (CM4, cport, 0, 0) and accepted["peername"] == (CM4, cport, 0, 0)
        assert accepted["sockname"] == (M4, port, 0, 0)
    c.finish()
    done = tuples(server.expect("done"))
    if proto == "udp":
        assert list(done["senders"]) == [(CM4, cport, 0, 0)] * len(MESSAGES)
    server.finish()
    assert listing(sockdir) == []
    pcaps.assert_clean(pcap)
    rows = tsharkutil.fields(pcap, ["ip.src", "ip.dst", "ipv6.src"])
    assert rows and all(r[2] == "" and {r[0], r[1]} == {A4, C4} for r in rows), rows


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_v6only_server_from_the_sysctl(procs: Procs, sockdir: Path, pcaps, tmp_path: Path, proto: str) -> None:
    pcap = pcaps.new()
    port = PORTS[proto]
    server = start_server(procs, sockdir, pcap, proto, server_env(tmp_path, v6only=True))
    assert listing(sockdir) == [f"{'X' if proto == 'tcp' else 'Y'}0A{port:04X}"]
    refused = procs.run("ipv4-client", wirecheck_exec(sockdir, *py_peer(f"{proto}-client", A4, str(port), "x"),
                                                      iface=CLIENT_IFACE), rc=None)
    assert refused.popen.returncode != 0 and "EHOSTUNREACH" in refused.stderr.replace("No route to host",
                                                                                       "EHOSTUNREACH")
    c = procs.start("client", wirecheck_exec(sockdir, *py_peer(f"{proto}-client", A6, str(port), *MESSAGES),
                                             iface=CLIENT_IFACE, pcap=pcap))
    assert list(tuples(c.expect("replies"))["replies"]) == [m.upper() for m in MESSAGES]
    c.finish()
    server.finish()
    pcaps.assert_clean(pcap)
    assert tsharkutil.count_frames(pcap, display_filter="ip") == 0


@pytest.mark.parametrize("client", ["python", "curl"])
def test_http_server_bind_any_fetched_over_ipv4(procs: Procs, sockdir: Path, pcaps, tmp_path: Path, client: str) -> None:
    """`python3 -m http.server --bind ::` under `wirecheck exec`, fetched by an IPv4 client: our
    Python urllib, or curl (a native program: `wirecheck exec` runs it under cwrap)."""
    www = tmp_path / "www"
    www.mkdir()
    body = "dual-stack\n" * 100
    (www / "f.txt").write_text(body)
    pcap = pcaps.new()
    server = procs.start("http.server", wirecheck_exec(sockdir, PYTHON, "-m", "http.server", "8080", "--bind", "::",
                                                       iface=SERVER_IFACE, pcap=pcap), cwd=str(www))
    # bind() names the socket X (IPv6) first and links its IPv4 name T after: wait for the last
    # (waiting for X alone raced the link; a fresh-clone run listed X without T)
    wait_for_path(sockdir / "T0A1F90", server)
    assert listing(sockdir) == ["T0A1F90", "X0A1F90"]
    url = f"http://{A4}:8080/f.txt"
    if client == "python":
        got = tuples(procs.run("client", wirecheck_exec(sockdir, *py_peer("http-get", url), iface=CLIENT_IFACE,
                                                        pcap=pcap)).expect("http"))
        assert got["status"] == 200 and got["length"] == len(body)
    else:
        need_libsocket_wrapper()
        curl = need_program("curl", "curl")
        fetched = procs.run("curl", wirecheck_exec(sockdir, curl, "-sS", "--max-time", "15", url, iface=CLIENT_IFACE,
                                                   pcap=pcap))
        assert "\n".join(fetched.lines) + "\n" == body
    server.kill()
    assert f"{CM4} - - [" in server.stderr  # http.server logs the accept() address
    if client == "python":
        pcaps.assert_clean(pcap)
    else:
        pcaps.assert_tolerant(pcap, tolerate=MIXED_TOLERATES)  # cwrap's own records: zero checksums, copies
    assert tsharkutil.count_frames(pcap, display_filter=f"http.request && ip.src == {C4} && ip.dst == {A4}",
                                   options=tsharkutil.ORDER_FREE) == 1  # curl's cwrap may log it after the reply
    assert tsharkutil.count_frames(pcap, display_filter="ipv6") == 0
    ours = tsharkutil.fields(pcap, ["ip.src", "tcp.checksum.status"], display_filter=f"ip.src == {A4} && tcp.checksum != 0",
                             options=tsharkutil.CHECKSUM_OPTS)
    assert ours and all(r[1] == "1" for r in ours), ours  # the server's IPv4 segments, good checksums
    assert tsharkutil.count_frames(pcap, display_filter=f"http.response.code == 200 && ip.src == {A4}") >= 1


@pytest.mark.peer
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_cwrap_ipv4_client_reaches_dual_stack_server(procs: Procs, sockdir: Path, pcaps, tmp_path: Path,
                                                     proto: str) -> None:
    need_libsocket_wrapper()
    pcap = pcaps.new()
    port = PORTS[proto]
    server = start_server(procs, sockdir, pcap, proto, server_env(tmp_path, v6only=False))
    c = procs.start("cwrap-client", native_peer(f"{proto}-client", A4, str(port), *MESSAGES),
                    env=native_env(sockdir, iface=CLIENT_IFACE, pcap=pcap))
    first = tuples(c.expect("connected" if proto == "tcp" else "sent"))
    assert first["wrapper"] == "cwrap"
    cport = first["sockname"][1]
    replies = tuples(c.expect("replies"))
    assert list(replies["replies"]) == [m.upper() for m in MESSAGES]
    if proto == "udp":
        # cwrap names a source by its file's last component: the answer leaves from the IPv4 one
        assert list(replies["sources"]) == [(A4, port)] * len(MESSAGES)
    else:
        assert tuples(server.expect("accepted"))["peer"] == (CM4, cport, 0, 0)
    c.finish()
    done = tuples(server.expect("done"))
    if proto == "udp":
        assert list(done["senders"]) == [(CM4, cport, 0, 0)] * len(MESSAGES)
    server.finish()
    pcaps.assert_tolerant(pcap, tolerate=MIXED_TOLERATES)
    ours = tsharkutil.fields(pcap, ["ip.src", "ip.dst", "ipv6.src"], display_filter=f"{proto}.checksum != 0")
    assert ours and all(r[2] == "" and {r[0], r[1]} == {A4, C4} for r in ours), ours


@pytest.mark.peer
def test_cwrap_has_no_dual_stack(procs: Procs, sockdir: Path) -> None:
    """The reverse direction: a cwrap server on [::] has its IPv6 file only, so IPv4 clients (ours
    too) cannot reach it, and cwrap refuses v4-mapped destinations (measured with 1.3.5)."""
    need_libsocket_wrapper()
    server = procs.start("cwrap-server", native_peer("tcp-server", "::", "445", "1"),
                         env=native_env(sockdir, iface=SERVER_IFACE))
    assert tuples(server.expect("ready"))["wrapper"] == "cwrap"
    assert listing(sockdir) == ["X0A01BD"]
    code = ("import errno, socket\n"
            "for fam, host in ((socket.AF_INET, '127.0.0.10'), (socket.AF_INET6, '::ffff:127.0.0.10')):\n"
            "    s = socket.socket(fam)\n"
            "    try:\n        s.connect((host, 445))\n        print('connected')\n"
            "    except OSError as e:\n        print(errno.errorcode[e.errno])\n")
    ours = procs.run("ours", wirecheck_exec(sockdir, PYTHON, "-c", code, iface=CLIENT_IFACE))
    assert ours.lines == ["EHOSTUNREACH", "EHOSTUNREACH"]
    theirs = procs.run("cwrap-client", [NATIVE_PYTHON, "-I", "-c", code], env=native_env(sockdir, iface=CLIENT_IFACE))
    assert theirs.lines == ["EHOSTUNREACH", "ENETUNREACH"]
    six = procs.run("ours6", wirecheck_exec(sockdir, *py_peer("tcp-client", A6, "445", "hi"), iface=CLIENT_IFACE))
    assert list(tuples(six.expect("replies"))["replies"]) == ["HI"]
    server.finish()


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_eaddrinuse_across_processes(procs: Procs, sockdir: Path, tmp_path: Path, proto: str) -> None:
    """A dual-stack bind in one process and an IPv4 bind of the same port in another refuse each other."""
    pcap = None  # nothing is sent
    port = PORTS[proto]
    sotype = "socket.SOCK_STREAM" if proto == "tcp" else "socket.SOCK_DGRAM"
    code = ("import errno, socket, sys\n"
            f"s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET, {sotype})\n"
            "try:\n    s.bind((sys.argv[1], int(sys.argv[2])))\n    print('bound')\n"
            "except OSError as e:\n    print(errno.errorcode[e.errno])\n")
    four = procs.start("ipv4-server", wirecheck_exec(sockdir, *py_peer(f"{proto}-server", A4, str(port), "1"),
                                                     iface=SERVER_IFACE, pcap=pcap))
    four.expect("ready")
    dual = procs.run("dual", wirecheck_exec(sockdir, PYTHON, "-c", code, "::", str(port), iface=SERVER_IFACE))
    assert dual.lines == ["EADDRINUSE"]
    four.kill()
    server = start_server(procs, sockdir, pcap, proto, server_env(tmp_path, v6only=False))
    again = procs.run("ipv4", wirecheck_exec(sockdir, PYTHON, "-c", code, A4, str(port), iface=SERVER_IFACE))
    assert again.lines == ["EADDRINUSE"]
    other = procs.run("ipv4-other-port", wirecheck_exec(sockdir, PYTHON, "-c", code, A4, str(port + 1),
                                                        iface=SERVER_IFACE))
    assert other.lines == ["bound"]
    server.kill()
