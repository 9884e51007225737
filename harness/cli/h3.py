"""``wirecheck h3``: a small HTTP/3 GET client and file server over the IPPROTO_QUIC socket API
(wrappers/quic/h3.py), as lxin/quic's http3_test is over quic.ko.

    wirecheck h3 serve --listen ADDR:PORT --cert F --key F --root DIR [--count N]
    wirecheck h3 get https://HOST:PORT/PATH [--insecure | --ca F] [-o FILE]

Under the wrapper (``wirecheck exec``) the sockets are emulated; without it they use real UDP (a
user-space quic.ko), which is how ngtcp2's gtlsclient/gtlsserver can be the other end. ``get`` exits 0
on status 200, 1 on another status (printed), 2 on a connection or handshake failure (errno text).
Every network wait has a timeout (``--timeout``).
"""
from __future__ import annotations

import socket
import sys
import threading
from urllib.parse import urlsplit

import click


def _qsocket(family: int):
    from wrappers.quic import QuicSocket

    try:
        s = socket.socket(family, socket.SOCK_DGRAM, 261)
    except OSError:  # no wrapper: our QUIC socket over real UDP
        return QuicSocket(family, socket.SOCK_DGRAM)
    return s if isinstance(s, QuicSocket) else QuicSocket(family, socket.SOCK_DGRAM)


def _split_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter(f"{text!r}: expected ADDR:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


@click.group("h3")
def h3() -> None:
    """HTTP/3 over the QUIC socket: a GET client and a file server."""


@h3.command("serve")
@click.option("--listen", "listen", required=True, metavar="ADDR:PORT", help="Address and UDP port to listen on.")
@click.option("--cert", required=True, type=click.Path(exists=True, dir_okay=False), help="Certificate (PEM).")
@click.option("--key", required=True, type=click.Path(exists=True, dir_okay=False), help="Private key (PEM).")
@click.option("--root", required=True, type=click.Path(exists=True, file_okay=False), help="Directory served.")
@click.option("--count", type=int, default=0, help="Exit after this many connections (0: serve until killed).")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Handshake and idle timeout (s).")
def serve(listen: str, cert: str, key: str, root: str, count: int, timeout: float) -> None:
    """Serve files under --root to HTTP/3 GETs (ALPN h3), one request per connection."""
    from wrappers.quic import QUIC_SOCKOPT_ALPN, SOL_QUIC, server_handshake
    from wrappers.quic import h3 as h3lib

    host, port = _split_hostport(listen)
    ls = _qsocket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    ls.bind((host, port))
    ls.setsockopt(SOL_QUIC, QUIC_SOCKOPT_ALPN, b"h3")
    ls.listen(16)
    click.echo(f"listening on {host}:{ls.getsockname()[1]}", err=True)
    done = 0
    threads = []

    def one(s) -> None:
        try:
            server_handshake(s, key, cert, "h3", timeout=timeout)
            s.settimeout(timeout)
            h3lib.serve(s, root)
        except OSError as e:
            click.echo(f"connection: {e}", err=True)
        finally:
            s.close()

    try:
        while not count or done < count:
            s, peer = ls.accept()
            click.echo(f"connection from {peer[0]}:{peer[1]}", err=True)
            t = threading.Thread(target=one, args=(s,), daemon=True)
            t.start()
            threads.append(t)
            done += 1
        for t in threads:
            t.join(timeout + 5)
    finally:
        ls.close()


@h3.command("get")
@click.argument("url")
@click.option("--insecure", is_flag=True, help="Do not verify the server's certificate.")
@click.option("--ca", type=click.Path(exists=True, dir_okay=False), help="CA bundle to verify the server with.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write the body here (default stdout).")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Handshake and response timeout (s).")
def get(url: str, insecure: bool, ca: str | None, output: str | None, timeout: float) -> None:
    """GET https://HOST:PORT/PATH over HTTP/3."""
    from wrappers.quic import client_handshake
    from wrappers.quic import h3 as h3lib

    u = urlsplit(url)
    if u.scheme != "https" or not u.hostname:
        raise click.BadParameter(f"{url!r}: expected https://HOST[:PORT]/PATH")
    port = u.port or 443
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    family = socket.AF_INET6 if ":" in u.hostname else socket.AF_INET
    c = _qsocket(family)
    try:
        c.settimeout(timeout)
        try:
            addr = socket.getaddrinfo(u.hostname, port, family, socket.SOCK_DGRAM)[0][4][0]
            c.connect((addr, port))
            cafile = None if insecure else ca
            if not insecure and cafile is None:
                import os

                cafile = "/etc/ssl/certs/ca-certificates.crt" if os.path.exists("/etc/ssl/certs/ca-certificates.crt") else None
            client_handshake(c, None, u.hostname, "h3", cafile=cafile, timeout=timeout)
            status, _, body = h3lib.get(c, u.netloc, path)
        except OSError as e:
            click.echo(f"wirecheck h3 get: {url}: {e}", err=True)
            sys.exit(2)
    finally:
        c.close()
    if output:
        with open(output, "wb") as f:
            f.write(body)
    else:
        sys.stdout.buffer.write(body)
        sys.stdout.flush()
    if status != 200:
        click.echo(f"wirecheck h3 get: {url}: HTTP status {status}", err=True)
        sys.exit(1)
