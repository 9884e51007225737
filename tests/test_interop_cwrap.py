"""Interop with Debian's libsocket_wrapper.so (cwrap 1.3.5) through one socket directory.

The native side is CPython under LD_PRELOAD=libsocket_wrapper.so started with ``-I`` and no
PYTHONPATH, so our sitecustomize cannot load (peers.py reports "cwrap" and the test checks it),
plus real native binaries run through `wirecheck exec` (smbclient, curl).

What the mixed captures look like (measured here, asserted below, documented in the README):

* cwrap logs every packet its process sends *and* receives, with all checksums 0 and window
  32767; we log our sends (and, from a non-logging peer, our receives) with correct checksums
  and window 65535. Our recorder does not log what a cwrap peer already logs, so:
  - bytes sent by the C process appear **once** (cwrap's record, zero checksum);
  - bytes sent by our process to the C process appear **twice** (ours, then cwrap's receive,
    cut the way cwrap's recv() calls cut them): tshark marks the second copy Retransmission /
    Out-Of-Order / Spurious Retransmission.
  - TCP handshake: once when C connects (cwrap's copy; our server does not log it); twice when
    we connect to a C server (our SYN, and cwrap's accept() view).
  - close: cwrap logs the whole FIN exchange from its own side, and shows EOF as a RST from the
    peer; our side logs its own FIN too.
* tshark (checksum validation on) therefore flags every cwrap frame "checksum incorrect"
  (and refuses to reassemble over them) and the duplicates as retransmissions; nothing else.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import tsharkutil
from procutil import (
    NATIVE_PYTHON,
    PYTHON,
    Procs,
    listing,
    listing_of,
    native_env,
    native_peer,
    need_libsocket_wrapper,
    need_program,
    py_peer,
    tuples,
    wait_for_path,
    wirecheck_exec,
)

from wrappers.addressing import AUTOBIND_FIRST, AUTOBIND_LAST, Network, socket_name

pytestmark = pytest.mark.peer

NET = Network()
FAMILIES = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}
SERVER_IFACE, CLIENT_IFACE = 10, 21
MESSAGES = ["hello", "x" * 3000, "bye"]
MIXED_TOLERATES = {"zero-checksum", "duplicate", "ipv6-length", "cwrap-eof-rst", "late"}


@pytest.fixture(autouse=True)
def _cwrap() -> str:
    return need_libsocket_wrapper()


def frame(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def addr(family: int, iface: int, port: int) -> tuple:
    host = NET.iface_address(family, iface)
    return (host, port) if family == socket.AF_INET else (host, port, 0, 0)


def by_writer(pcap: Path, proto: str) -> dict[tuple[str, str], bytes]:
    """(writer, direction-key) -> concatenated payload; writer 'c' = zero checksum, 'py' = real one."""
    if proto == "tcp":
        names = ["ip.src", "ipv6.src", "tcp.srcport", "tcp.checksum", "tcp.payload"]
        flt = "tcp.len > 0"
    else:
        names = ["ip.src", "ipv6.src", "udp.srcport", "udp.checksum", "udp.payload"]
        flt = "udp"
    out: dict[tuple[str, str], bytes] = {}
    for src4, src6, sport, csum, payload in tsharkutil.fields(
            pcap, names, display_filter=flt, options=["-o", "tcp.desegment_tcp_streams:FALSE"]):
        writer = "c" if int(csum, 16) == 0 else "py"
        key = (writer, f"{src4 or src6}:{sport}")
        out[key] = out.get(key, b"") + bytes.fromhex(payload.replace(":", ""))
    return out


@pytest.mark.parametrize("fam", ["ipv4", "ipv6"])
@pytest.mark.parametrize("proto", ["tcp", "udp"])
@pytest.mark.parametrize("server_side", ["python", "cwrap"])
def test_python_and_cwrap(procs: Procs, sockdir: Path, pcaps, server_side: str, proto: str, fam: str) -> None:
    family = FAMILIES[fam]
    sotype = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    port = 445 if proto == "tcp" else 7
    pcap = pcaps.new()
    server_addr = addr(family, SERVER_IFACE, port)
    host = server_addr[0]
    server_args = (f"{proto}-server", host, str(port), str(len(MESSAGES)))
    client_args = (f"{proto}-client", host, str(port), *MESSAGES)
    if server_side == "python":
        server = procs.start("py-server", wirecheck_exec(sockdir, *py_peer(*server_args), iface=SERVER_IFACE,
                                                         pcap=pcap))
    else:
        server = procs.start("c-server", native_peer(*server_args),
                             env=native_env(sockdir, iface=SERVER_IFACE, pcap=pcap))
    ready = tuples(server.expect("ready"))
    assert ready["wrapper"] == server_side
    assert ready["sockname"] == server_addr
    server_file = socket_name(family, sotype, SERVER_IFACE, port)
    assert listing(sockdir) == [server_file]

    if server_side == "python":
        client = procs.start("c-client", native_peer(*client_args),
                             env=native_env(sockdir, iface=CLIENT_IFACE, pcap=pcap))
    else:
        client = procs.start("py-client", wirecheck_exec(sockdir, *py_peer(*client_args), iface=CLIENT_IFACE,
                                                         pcap=pcap))
    first = tuples(client.expect("connected" if proto == "tcp" else "sent"))
    client_side = "cwrap" if server_side == "python" else "python"
    assert first["wrapper"] == client_side
    client_addr = first["sockname"]
    # Both implementations autobind the same way: own interface, pid % 50000 + 10000.
    assert client_addr[:2] == (NET.iface_address(family, CLIENT_IFACE), first["pid"] % 50000 + 10000)
    assert AUTOBIND_FIRST <= client_addr[1] <= AUTOBIND_LAST
    client_file = socket_name(family, sotype, CLIENT_IFACE, client_addr[1])
    assert sorted(first["listing"]) == sorted([server_file, client_file])
    if proto == "tcp":
        assert first["peername"] == server_addr
        # The server accepted: so the client had bound a correctly named file (cwrap fails
        # accept() with EINVAL for a nameless client) and the name parses back to its address.
        accepted = tuples(server.expect("accepted"))
        assert accepted["peer"] == client_addr and accepted["peername"] == client_addr
        assert accepted["sockname"] == server_addr
    replies = tuples(client.expect("replies"))
    assert list(replies["replies"]) == [m.upper() for m in MESSAGES]
    if proto == "udp":
        assert list(replies["sources"]) == [server_addr] * len(MESSAGES)
    client.finish()
    done = tuples(server.expect("done"))
    if proto == "udp":
        assert list(done["senders"]) == [client_addr] * len(MESSAGES)
    server.finish()
    assert client_file not in listing(sockdir)

    kinds = pcaps.assert_tolerant(pcap, tolerate=MIXED_TOLERATES)
    assert kinds.get("zero-checksum"), "cwrap's frames (checksum 0) should be in the capture"
    # Who logged what: the C process logs both directions, we log only what goes to it.
    seen = by_writer(pcap, proto)
    c_ep = f"{client_addr[0]}:{client_addr[1]}"
    s_ep = f"{server_addr[0]}:{server_addr[1]}"
    ours, theirs = (s_ep, c_ep) if server_side == "python" else (c_ep, s_ep)
    if proto == "tcp":
        sent_by = {c_ep: b"".join(frame(m.encode()) for m in MESSAGES),
                   s_ep: b"".join(frame(m.upper().encode()) for m in MESSAGES)}
    else:
        sent_by = {c_ep: b"".join(m.encode() for m in MESSAGES), s_ep: b"".join(m.upper().encode() for m in MESSAGES)}
    assert seen.get(("c", theirs)) == sent_by[theirs], "cwrap logs its sends"
    assert seen.get(("c", ours)) == sent_by[ours], "cwrap logs its receives"
    assert seen.get(("py", ours)) == sent_by[ours], "we log our sends to a cwrap peer"
    assert ("py", theirs) not in seen, "we must not log again what the cwrap peer logged"
    if proto == "tcp":
        syn = tsharkutil.fields(pcap, ["tcp.checksum"], display_filter="tcp.flags.syn == 1 && tcp.flags.ack == 0")
        # C connects: cwrap's SYN only. We connect: our SYN and cwrap's accept() copy.
        assert len(syn) == (1 if server_side == "python" else 2)


def test_cwrap_client_bound_names_parse(procs: Procs, sockdir: Path) -> None:
    """A C client on iface 64 (the highest) with a port above 0x7FFF: our server parses its name."""
    server = procs.start("py-server", wirecheck_exec(sockdir, *py_peer("tcp-server", "127.0.0.10", "445", "1"),
                                                     iface=10))
    server.expect("ready")
    code = ("import socket\ns = socket.socket()\ns.bind(('127.0.0.64', 65000))\ns.connect(('127.0.0.10', 445))\n"
            "s.sendall(b'\\0\\0\\0\\1a')\nprint(s.recv(5))\ns.close()\n")
    client = procs.run("c-client", [NATIVE_PYTHON, "-I", "-c", code], env=native_env(sockdir, iface=21))
    assert client.lines == ["b'\\x00\\x00\\x00\\x01A'"]
    assert tuples(server.expect("accepted"))["peer"] == ("127.0.0.64", 65000)
    server.finish()


def test_unbound_unix_client_is_refused_by_cwrap_server(procs: Procs, sockdir: Path) -> None:
    """Why our clients bind a named file first: cwrap fails accept() for a nameless client."""
    server = procs.start("c-server", native_peer("tcp-server", "127.0.0.10", "445", "1"),
                         env=native_env(sockdir, iface=10))
    server.expect("ready")
    u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    u.settimeout(10)
    try:
        u.connect(str(sockdir / "T0A01BD"))
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            u.sendall(b"\0\0\0\1a")  # the server may already have closed it: EPIPE here
            if u.recv(5) == b"":
                raise ConnectionResetError
    finally:
        u.close()
    server.finish(rc=None)
    assert server.popen.returncode != 0  # its accept() raised (EINVAL)
    assert "Invalid argument" in server.stderr


@pytest.mark.parametrize("network", ["127.0.0.0", "10.53.57.0"])
def test_smbclient_reaches_python_server(procs: Procs, sockdir: Path, pcaps, network: str) -> None:
    """Samba's smbclient (native, under libsocket_wrapper via `wirecheck exec`) connects to our server."""
    smbclient = need_program("smbclient", "smbclient")
    net = Network(network)
    host = net.iface_address(socket.AF_INET, 10)
    pcap = pcaps.new()
    server = procs.start("py-server", wirecheck_exec(sockdir, *py_peer("tcp-sniff", host, "445"), iface=10,
                                                     pcap=pcap, network=network))
    server.expect("ready")
    client = procs.run("smbclient", wirecheck_exec(sockdir, smbclient, "-s", "/dev/null", "-N", "-L", f"//{host}",
                                                   "-p", "445", iface=21, pcap=pcap, network=network), rc=None)
    got = tuples(server.expect("accepted"))
    assert got["peer"][0] == net.iface_address(socket.AF_INET, 21)
    assert AUTOBIND_FIRST <= got["peer"][1] <= AUTOBIND_LAST
    first = bytes.fromhex(got["first"])
    # An NBSS session message carrying an SMB negotiate (SMB2 \xfeSMB or SMB1 \xffSMB).
    assert first[0] == 0 and first[4:8] in (b"\xfeSMB", b"\xffSMB"), first[:16]
    assert int.from_bytes(first[1:4], "big") == len(first) - 4
    server.finish()
    assert client.popen.returncode != 0  # our sniffer hangs up; smbclient says so
    pcaps.assert_tolerant(pcap, tolerate=MIXED_TOLERATES)
    # smbclient's cwrap logs its NEGOTIATE after the send: our server's ACK and FIN may precede it in the file,
    # and tshark's sequence analysis then calls it a spurious retransmission and decodes no SMB in it
    assert tsharkutil.count_frames(pcap, display_filter="smb2.cmd == 0 || smb.cmd == 0x72",
                                   options=tsharkutil.ORDER_FREE) >= 1


@pytest.mark.parametrize("fam", ["ipv4", "ipv6"])
def test_curl_fetches_from_python_http_server(procs: Procs, sockdir: Path, pcaps, tmp_path: Path, fam: str) -> None:
    curl = need_program("curl", "curl")
    family = FAMILIES[fam]
    host = NET.iface_address(family, 10)
    www = tmp_path / "www"
    www.mkdir()
    (www / "f.txt").write_text("fetched by curl\n")
    pcap = pcaps.new()
    server = procs.start("http.server", wirecheck_exec(sockdir, PYTHON, "-m", "http.server", "8080",
                                                       "--bind", host, iface=10, pcap=pcap), cwd=str(www))
    wait_for_path(sockdir / socket_name(family, socket.SOCK_STREAM, 10, 8080), server)
    url = f"http://{host}:8080/f.txt" if family == socket.AF_INET else f"http://[{host}]:8080/f.txt"
    client = procs.run("curl", wirecheck_exec(sockdir, curl, "-sS", "-g", "--max-time", "15", url, iface=21,
                                              pcap=pcap))
    assert client.lines == ["fetched by curl"]
    server.kill()
    assert f"{NET.iface_address(family, 21)} - - [" in server.stderr
    pcaps.assert_tolerant(pcap, tolerate=MIXED_TOLERATES)
    # From curl: once, wherever cwrap's record of it stands: curl's cwrap writes it after the send,
    # so on a loaded machine the server's reply can be in the file first (ORDER_FREE says why that
    # hides it from tshark's HTTP otherwise).
    requests = tsharkutil.count_frames(pcap, display_filter='http.request.uri == "/f.txt"',
                                       options=tsharkutil.ORDER_FREE)
    assert requests == 1, listing_of(pcap)
