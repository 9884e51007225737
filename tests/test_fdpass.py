"""fd passing: a wrapped Python process hands an emulated socket to another with socket.send_fds.

Both processes run under `wirecheck exec` (with and without libsocket_wrapper.so preloaded: with
it, cwrap's SCM_RIGHTS hook also runs in both). The receiver rebuilds the socket with
``socket.socket(family, SOCK_STREAM, fileno=fd)`` and must see the emulated addresses and move
data; the sender's close of its copy must not take the socket file away.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from procutil import Procs, listing, py_peer, tuples, wirecheck_exec

from wrappers.addressing import Network, socket_name

NET = Network()
FAMILIES = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}
NATIVE = {"python-only": ["--no-native"], "cwrap-preloaded": []}


# Known pcap bugs with passed sockets (see the report / test_*_pcap_is_clean below):
# LISTENER_DUP: a client of a *passed* listener asks SO_PEERCRED who is at the other end and gets
#   the process that called listen() (the sender, maybe gone), not the one that accepted; it
#   decides "my peer does not log" and logs what it receives, while the accepting process logs
#   its sends too: every server->client segment is in the capture twice.
# CONN_MISSING: a *passed connected* socket's meta is rebuilt without its TcpFlow, so the
#   receiving process logs neither its data nor its FIN; the peer (a logger) does not log them
#   either: "ACKed unseen segment".
LISTENER_DUP = "passed listener: the client classifies the listen()ing process, logs duplicates"
CONN_MISSING = "passed connected socket: the receiver does not log its sends (no TcpFlow after import)"


def addr(family: int, iface: int, port: int) -> tuple:
    host = NET.iface_address(family, iface)
    return (host, port) if family == socket.AF_INET else (host, port, 0, 0)


@pytest.mark.parametrize("preload", list(NATIVE))
@pytest.mark.parametrize("fam", ["ipv4", "ipv6"])
def test_pass_listening_socket(procs: Procs, sockdir: Path, tmp_path: Path, pcaps, fam: str, preload: str) -> None:
    family = FAMILIES[fam]
    extra = NATIVE[preload]
    if preload == "cwrap-preloaded":
        from procutil import need_libsocket_wrapper

        need_libsocket_wrapper()
    pcap = pcaps.new()
    channel = str(tmp_path / "chan")
    listen_addr = addr(family, 10, 6000)
    child = procs.start("child", wirecheck_exec(sockdir, *py_peer("fdpass-child", channel, "listener"), iface=10,
                                                pcap=pcap, extra=extra))
    assert child.expect("ready")["wrapper"] == "python"
    parent = procs.start("parent", wirecheck_exec(
        sockdir, *py_peer("fdpass-parent-listener", channel, listen_addr[0], "6000"), iface=10, pcap=pcap,
        extra=extra))
    name = socket_name(family, socket.SOCK_STREAM, 10, 6000)
    assert tuples(parent.expect("listening"))["sockname"] == listen_addr
    got = tuples(child.expect("got"))
    assert got["nfds"] == 1 and got["extra"] == 0, "exactly the fd that was sent (no extra cwrap pipe fd)"
    assert got["family"] == family
    assert got["sockname"] == listen_addr
    passed = tuples(parent.expect("passed"))
    parent.finish()
    # The sender closed (and exited); the child still listens: the file must still be there.
    assert name in passed["listing"] and name in listing(sockdir)
    client = procs.start("client", wirecheck_exec(sockdir, *py_peer("tcp-client", listen_addr[0], "6000", "ping"),
                                                  iface=11, pcap=pcap, extra=extra))
    conn = tuples(client.expect("connected"))
    accepted = tuples(child.expect("accepted"))
    assert accepted["peer"] == conn["sockname"] and accepted["peername"] == conn["sockname"]
    assert accepted["sockname"] == listen_addr
    assert list(tuples(client.expect("replies"))["replies"]) == ["PING"]
    client.finish()
    child.expect("done")
    child.finish()
    # Tolerates exactly LISTENER_DUP; test_pass_listening_socket_pcap_is_clean fails until it is fixed.
    kinds = pcaps.assert_tolerant(pcap, tolerate={"duplicate"})
    assert set(kinds) <= {"duplicate"}


@pytest.mark.parametrize("preload", list(NATIVE))
@pytest.mark.parametrize("fam", ["ipv4", "ipv6"])
def test_pass_connected_socket(procs: Procs, sockdir: Path, tmp_path: Path, pcaps, fam: str, preload: str) -> None:
    family = FAMILIES[fam]
    extra = NATIVE[preload]
    if preload == "cwrap-preloaded":
        from procutil import need_libsocket_wrapper

        need_libsocket_wrapper()
    pcap = pcaps.new()
    channel = str(tmp_path / "chan")
    server_addr = addr(family, 10, 445)
    server = procs.start("server", wirecheck_exec(sockdir, *py_peer("tcp-server", server_addr[0], "445", "1"),
                                                  iface=10, pcap=pcap, extra=extra))
    server.expect("ready")
    child = procs.start("child", wirecheck_exec(sockdir, *py_peer("fdpass-child", channel, "conn"), iface=11,
                                                pcap=pcap, extra=extra))
    child.expect("ready")
    parent = procs.start("parent", wirecheck_exec(
        sockdir, *py_peer("fdpass-parent-conn", channel, server_addr[0], "445"), iface=11, pcap=pcap, extra=extra))
    connected = tuples(parent.expect("connected"))
    client_addr = connected["sockname"]
    assert connected["peername"] == server_addr
    assert tuples(server.expect("accepted"))["peer"] == client_addr
    parent.expect("passed")
    parent.finish()
    got = tuples(child.expect("got"))
    assert got["nfds"] == 1 and got["extra"] == 0
    assert got["sockname"] == client_addr, "the passed socket keeps its emulated local address"
    assert got["peername"] == server_addr, "... and its peer"
    # The connection lives on in the child: the sender's close left its autobound file in place.
    assert socket_name(family, socket.SOCK_STREAM, 11, client_addr[1]) in got["listing"]
    assert tuples(child.expect("reply"))["reply"] == "FROM CHILD"
    child.expect("done")
    child.finish()
    assert tuples(server.expect("done"))["eof"] is True
    server.finish()
    # Tolerates exactly CONN_MISSING; test_pass_connected_socket_pcap_is_clean fails until it is fixed.
    pcaps.assert_tolerant(pcap, tolerate={"missing"})


def _listener_scenario(procs: Procs, sockdir: Path, tmp_path: Path, pcap: Path) -> None:
    channel = str(tmp_path / "chan")
    child = procs.start("child", wirecheck_exec(sockdir, *py_peer("fdpass-child", channel, "listener"), iface=10,
                                                pcap=pcap, extra=["--no-native"]))
    child.expect("ready")
    parent = procs.run("parent", wirecheck_exec(sockdir, *py_peer("fdpass-parent-listener", channel, "127.0.0.10",
                                                                  "6000"), iface=10, pcap=pcap, extra=["--no-native"]))
    assert parent.lines
    procs.run("client", wirecheck_exec(sockdir, *py_peer("tcp-client", "127.0.0.10", "6000", "ping"), iface=11,
                                       pcap=pcap, extra=["--no-native"]))
    child.finish()


def test_pass_listening_socket_pcap_is_clean(procs: Procs, sockdir: Path, tmp_path: Path, pcaps) -> None:
    pcap = pcaps.new()
    _listener_scenario(procs, sockdir, tmp_path, pcap)
    pcaps.assert_clean(pcap)


def test_pass_connected_socket_pcap_is_clean(procs: Procs, sockdir: Path, tmp_path: Path, pcaps) -> None:
    pcap = pcaps.new()
    channel = str(tmp_path / "chan")
    no_native = ["--no-native"]
    server = procs.start("server", wirecheck_exec(sockdir, *py_peer("tcp-server", "127.0.0.10", "445", "1"),
                                                  iface=10, pcap=pcap, extra=no_native))
    server.expect("ready")
    child = procs.start("child", wirecheck_exec(sockdir, *py_peer("fdpass-child", channel, "conn"), iface=11,
                                                pcap=pcap, extra=no_native))
    child.expect("ready")
    procs.run("parent", wirecheck_exec(sockdir, *py_peer("fdpass-parent-conn", channel, "127.0.0.10", "445"),
                                       iface=11, pcap=pcap, extra=no_native))
    child.finish()
    server.finish()
    pcaps.assert_clean(pcap)
