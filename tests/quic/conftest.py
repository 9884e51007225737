"""Fixtures for the IPPROTO_QUIC tests: a test PKI and PSK file, an emulated network with a pcap,
and ``open_pair`` which returns a handshaken (client, server, listener) triple in either mode."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from threadutil import joined

import wrappers
from wrappers.quic import IPPROTO_QUIC, QuicSocket, client_handshake, server_handshake

from .certs import make_pki

MODES = ["psk", "cert"]


@pytest.fixture(scope="session")
def pki() -> Iterator[dict[str, str]]:
    d = tempfile.mkdtemp(prefix="wc-pki-")
    yield make_pki(d)
    shutil.rmtree(d, ignore_errors=True)


@dataclass
class Net:
    socket_dir: str
    pcap: str
    keys: str
    iface: int = 11

    @property
    def addr(self) -> str:
        return f"127.0.0.{self.iface}"


@contextlib.contextmanager
def emulated(carrier: str = "seqpacket") -> Iterator[Net]:
    """The wrapper active in this process (interface 11) with a pcap; QUIC over ``carrier``."""
    saved = dict(os.environ)
    d = tempfile.mkdtemp(prefix="wq-", dir="/tmp")
    out = tempfile.mkdtemp(prefix="wq-out-")
    pcap = os.path.join(out, "run.pcap")
    os.environ["WIRECHECK_QUIC_CARRIER"] = carrier
    try:
        with wrappers.activate(d, iface=11, pcap=pcap):
            yield Net(d, pcap, os.path.join(out, "run.keys"))
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)


@pytest.fixture
def net() -> Iterator[Net]:
    with emulated() as n:
        yield n


def quic_socket(family: int = socket.AF_INET) -> QuicSocket:
    s = socket.socket(family, socket.SOCK_DGRAM, IPPROTO_QUIC)
    assert isinstance(s, QuicSocket)
    return s  # type: ignore[return-value]


def open_pair(mode: str, pki: dict[str, str], *, addr: tuple = ("127.0.0.11", 0), timeout: float = 5.0,
              setup_listener: Callable[[QuicSocket], None] | None = None,
              setup_client: Callable[[QuicSocket], None] | None = None,
              make: Callable[[], QuicSocket] = quic_socket) -> tuple[QuicSocket, QuicSocket, QuicSocket]:
    ls = make()
    ls.bind(addr)
    if setup_listener:
        setup_listener(ls)
    ls.listen(8)
    box: dict[str, Any] = {}

    raw = mode.startswith("raw-")  # the application runs TLS (rawapp.py: libquic's loop), both ends
    mode = mode.removeprefix("raw-")

    def serve() -> None:
        try:
            ls.settimeout(timeout)
            s, _ = ls.accept()
            if raw:
                from . import rawapp

                rawapp.quic_handshake(s, rawapp.raw_server(mode, pki), timeout)
            elif mode == "psk":
                server_handshake(s, pki["psk"], None, timeout=timeout)
            else:
                server_handshake(s, pki["server_key"], pki["server"], timeout=timeout)
            box["s"] = s
        except BaseException as e:  # reported by the client side
            box["e"] = e

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    c = make()
    if setup_client:
        setup_client(c)
    c.connect(ls.getsockname())
    if raw:
        from . import rawapp

        rawapp.quic_handshake(c, rawapp.raw_client(mode, pki), timeout)
    elif mode == "psk":
        client_handshake(c, pki["psk"], timeout=timeout)
    else:
        client_handshake(c, None, "server.test", cafile=pki["ca"], timeout=timeout)
    joined(t, timeout + 5)
    if "e" in box:
        raise box["e"]
    if raw:
        from wrappers.quic import raw as rawmode

        assert rawmode.is_raw(c) and rawmode.is_raw(box["s"])
    return c, box["s"], ls


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def close_all(*socks: Any) -> None:
    for s in socks:
        with contextlib.suppress(OSError):
            s.close()


def serve_thread(fn: Callable[[], None]) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t
