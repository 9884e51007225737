"""The two programs of `wirecheck demo`, plain Python with no knowledge of the wrapper.

They use ordinary AF_INET/AF_INET6 sockets; `wirecheck exec` is what puts them on the emulated
network. Run as ``python -m harness.peers.net_demo udp-echo HOST PORT`` or ``... client``.
"""

from __future__ import annotations

import socket
import sys
import urllib.request


def udp_echo(host: str, port: int, count: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, port))
        s.settimeout(20)
        for _ in range(count):
            data, peer = s.recvfrom(65535)
            s.sendto(data.upper(), peer)


def client(http_host: str, http_port: int, udp_host: str, udp_port: int, count: int) -> None:
    with urllib.request.urlopen(f"http://{http_host}:{http_port}/", timeout=10) as r:
        body = r.read()
    print(f"client: HTTP GET http://{http_host}:{http_port}/ -> {r.status}, {len(body)} bytes")
    family = socket.AF_INET6 if ":" in udp_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(10)
        for i in range(count):
            s.sendto(f"datagram {i}".encode(), (udp_host, udp_port))
            reply, peer = s.recvfrom(65535)
        print(f"client: {count} UDP datagrams echoed by {peer[0]} port {peer[1]}, last reply {reply!r}")


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "udp-echo":
        udp_echo(args[0], int(args[1]), int(args[2]))
    elif mode == "client":
        client(args[0], int(args[1]), args[2], int(args[3]), int(args[4]))
    else:
        sys.exit(f"unknown mode {mode}")
