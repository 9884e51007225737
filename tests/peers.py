"""Peer programs for the multi-process tests: plain Python, standard library only.

They know nothing about the wrapper: ``wirecheck exec`` (our sitecustomize) or
``LD_PRELOAD=libsocket_wrapper.so`` (cwrap, with ``python3 -I``) is what puts them on the
emulated network. Each prints one JSON object per line on stdout, flushed, so that the test
can follow along (``{"event": "ready", ...}`` once a server listens) and check the addresses
each side saw. Run as ``python peers.py MODE ARGS...``.

Modes:
  tcp-server HOST PORT COUNT     accept one connection, answer COUNT messages (upper-cased)
  tcp-client HOST PORT MSG...    connect, send each MSG and read its answer; lists the
                                 socket directory while connected
  udp-server HOST PORT COUNT     answer COUNT datagrams (upper-cased) to their sender
  udp-client HOST PORT MSG...    sendto each MSG, recvfrom its answer
  http-get URL                   urllib GET, print status and body length
  fdpass-parent-*/fdpass-child   see test_fdpass.py
"""

from __future__ import annotations

import json
import os
import socket
import sys

TIMEOUT = 20.0


def say(**kw: object) -> None:
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


def family_of(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def wrapper_kind() -> str:
    """Who emulates this process's sockets: 'python' (our sitecustomize), 'cwrap' or 'none'."""
    if type(socket.socket(socket.AF_UNIX)).__module__ != "socket":
        return "python"
    if "socket_wrapper" in os.environ.get("LD_PRELOAD", ""):
        return "cwrap"
    return "none"


def socket_dir_listing() -> list[str]:
    d = os.environ.get("SOCKET_WRAPPER_DIR", "")
    return sorted(n for n in os.listdir(d) if not n.startswith(".")) if d else []


def recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def frame(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def recv_frame(conn: socket.socket) -> bytes:
    return recv_exact(conn, int.from_bytes(recv_exact(conn, 4), "big"))


def tcp_server(host: str, port: int, count: int) -> None:
    with socket.socket(family_of(host), socket.SOCK_STREAM) as srv:
        srv.settimeout(TIMEOUT)
        srv.bind((host, port))
        srv.listen(5)
        say(event="ready", wrapper=wrapper_kind(), sockname=srv.getsockname(), pid=os.getpid())
        conn, peer = srv.accept()
        with conn:
            conn.settimeout(TIMEOUT)
            say(event="accepted", peer=peer, sockname=conn.getsockname(), peername=conn.getpeername())
            for _ in range(count):
                conn.sendall(frame(recv_frame(conn).upper()))
            # Wait for the client's close so that both FINs are seen in order.
            rest = conn.recv(1)
            say(event="done", eof=rest == b"")


def tcp_client(host: str, port: int, msgs: list[str]) -> None:
    with socket.socket(family_of(host), socket.SOCK_STREAM) as s:
        s.settimeout(TIMEOUT)
        s.connect((host, port))
        say(event="connected", wrapper=wrapper_kind(), sockname=s.getsockname(), peername=s.getpeername(),
            listing=socket_dir_listing(), pid=os.getpid())
        replies = []
        for m in msgs:
            s.sendall(frame(m.encode()))
            replies.append(recv_frame(s).decode())
        say(event="replies", replies=replies)


def udp_server(host: str, port: int, count: int) -> None:
    with socket.socket(family_of(host), socket.SOCK_DGRAM) as s:
        s.settimeout(TIMEOUT)
        s.bind((host, port))
        say(event="ready", wrapper=wrapper_kind(), sockname=s.getsockname(), pid=os.getpid())
        senders = []
        for _ in range(count):
            data, src = s.recvfrom(65535)
            senders.append(src)
            s.sendto(data.upper(), src)
        say(event="done", senders=senders)


def udp_client(host: str, port: int, msgs: list[str]) -> None:
    with socket.socket(family_of(host), socket.SOCK_DGRAM) as s:
        s.settimeout(TIMEOUT)
        replies, sources = [], []
        for i, m in enumerate(msgs):
            s.sendto(m.encode(), (host, port))
            if i == 0:
                say(event="sent", wrapper=wrapper_kind(), sockname=s.getsockname(), listing=socket_dir_listing(),
                    pid=os.getpid())
            data, src = s.recvfrom(65535)
            replies.append(data.decode())
            sources.append(src)
        say(event="replies", replies=replies, sources=sources)


def tcp_sniff(host: str, port: int) -> None:
    """Accept one connection, report who it is and the first bytes it sends, then hang up."""
    with socket.socket(family_of(host), socket.SOCK_STREAM) as srv:
        srv.settimeout(TIMEOUT)
        srv.bind((host, port))
        srv.listen(5)
        say(event="ready", wrapper=wrapper_kind(), sockname=srv.getsockname(), pid=os.getpid())
        conn, peer = srv.accept()
        with conn:
            conn.settimeout(TIMEOUT)
            data = conn.recv(4096)
            say(event="accepted", peer=peer, sockname=conn.getsockname(), first=data.hex())


def http_get(url: str) -> None:
    import urllib.request

    with urllib.request.urlopen(url, timeout=TIMEOUT) as r:
        body = r.read()
    say(event="http", status=r.status, length=len(body), body=body.decode(errors="replace")[:2000])


# -- fd passing -------------------------------------------------------------------------------

def _send_sock(channel: str, sock: socket.socket, note: bytes) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as u:
        u.settimeout(TIMEOUT)
        u.connect(channel)
        socket.send_fds(u, [note], [sock.fileno()])
        u.recv(1)  # the child says it has the fd


def fdpass_child(channel: str, mode: str) -> None:
    """Receive one socket over the unix channel and use it: 'listener' accepts, 'conn' talks."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as lst:
        lst.bind(channel)
        lst.listen(1)
        say(event="ready", wrapper=wrapper_kind())
        lst.settimeout(TIMEOUT)
        u, _ = lst.accept()
        with u:
            msg, fds, _flags, _addr = socket.recv_fds(u, 1024, 4)
            extra = len(fds) - 1
            fam = socket.AF_INET6 if msg.startswith(b"6") else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_STREAM, fileno=fds[0])
            for fd in fds[1:]:
                os.close(fd)
            u.sendall(b"k")
        s.settimeout(TIMEOUT)
        info = {"event": "got", "nfds": len(fds), "extra": extra, "family": int(s.family),
                "sockname": s.getsockname(), "listing": socket_dir_listing()}
        if mode == "listener":
            say(**info)
            conn, peer = s.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                say(event="accepted", peer=peer, sockname=conn.getsockname(), peername=conn.getpeername())
                conn.sendall(frame(recv_frame(conn).upper()))
                conn.recv(1)
        else:
            info["peername"] = s.getpeername()
            say(**info)
            s.sendall(frame(b"from child"))
            say(event="reply", reply=recv_frame(s).decode())
        s.close()
        say(event="done")


def fdpass_parent_listener(channel: str, host: str, port: int) -> None:
    """Bind and listen on (host, port), hand the listener to the child, close our copy."""
    fam = family_of(host)
    srv = socket.socket(fam, socket.SOCK_STREAM)
    srv.bind((host, port))
    srv.listen(5)
    say(event="listening", sockname=srv.getsockname(), listing=socket_dir_listing())
    _send_sock(channel, srv, b"6" if fam == socket.AF_INET6 else b"4")
    srv.close()
    say(event="passed", listing=socket_dir_listing())


def fdpass_parent_conn(channel: str, host: str, port: int) -> None:
    """Connect to (host, port), hand the connected socket to the child, close our copy."""
    fam = family_of(host)
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    s.connect((host, port))
    say(event="connected", sockname=s.getsockname(), peername=s.getpeername())
    _send_sock(channel, s, b"6" if fam == socket.AF_INET6 else b"4")
    s.close()
    say(event="passed")


def fdpass_parent_conn_hold(channel: str, host: str, port: int, go_file: str) -> None:
    """As fdpass-parent-conn, but keep our copy open until GO_FILE exists, then close it.

    The child then closes first while we still hold the socket: the kernel sends no FIN then;
    our later close is the last one and the FIN goes out with it.
    """
    import time

    fam = family_of(host)
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    s.connect((host, port))
    say(event="connected", sockname=s.getsockname(), peername=s.getpeername())
    _send_sock(channel, s, b"6" if fam == socket.AF_INET6 else b"4")
    say(event="passed")
    deadline = time.monotonic() + TIMEOUT
    while not os.path.exists(go_file):
        if time.monotonic() > deadline:
            raise SystemExit(f"{go_file} never appeared")
        time.sleep(0.01)
    s.close()
    say(event="closed")


def main(argv: list[str]) -> None:
    mode, *args = argv
    if mode == "tcp-server":
        tcp_server(args[0], int(args[1]), int(args[2]))
    elif mode == "tcp-client":
        tcp_client(args[0], int(args[1]), args[2:])
    elif mode == "udp-server":
        udp_server(args[0], int(args[1]), int(args[2]))
    elif mode == "udp-client":
        udp_client(args[0], int(args[1]), args[2:])
    elif mode == "tcp-sniff":
        tcp_sniff(args[0], int(args[1]))
    elif mode == "http-get":
        http_get(args[0])
    elif mode == "fdpass-child":
        fdpass_child(args[0], args[1])
    elif mode == "fdpass-parent-listener":
        fdpass_parent_listener(args[0], args[1], int(args[2]))
    elif mode == "fdpass-parent-conn-hold":
        fdpass_parent_conn_hold(args[0], args[1], int(args[2]), args[3])
    elif mode == "fdpass-parent-conn":
        fdpass_parent_conn(args[0], args[1], int(args[2]))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])
