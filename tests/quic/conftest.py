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


#: the func_test port runs on the default carrier and on the udp one (carriers.py), each in both modes;
#: "raw-psk" (the handshake is libquic's on both ends: the application's TLS over the raw interface)
#: runs the same 98 cases on the default carrier.
FUNC_PARAMS = [(m, c) for c in ("seqpacket", "udp") for m in MODES] + [("raw-psk", "seqpacket")]


@pytest.fixture(scope="session", params=FUNC_PARAMS, ids=[f"{m}-{c}" for m, c in FUNC_PARAMS])
def func(request: pytest.FixtureRequest, pki: dict[str, str]) -> Iterator[Any]:
    """The func_test connection for one mode and carrier, shared by test_func_1..4 in order (STREAM,
    CONNECTION, NOTIFICATION, CLOSE), as tests/func_test.c runs its groups on one connection. Both
    ends set max_datagram_frame_size = 1400 and keep every other default.  The server side's
    failures fail the case that was running (``func_server_clean``); its thread must end at teardown."""
    from wrappers.quic import QUIC_SOCKOPT_TRANSPORT_PARAM, SOL_QUIC, TransportParam

    from .funcserver import FuncServer, Session

    mode, carrier = request.param

    def tp(s: QuicSocket) -> None:
        s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_TRANSPORT_PARAM, TransportParam(max_datagram_frame_size=1400).pack())

    with emulated(carrier) as n:
        c, s, ls = open_pair(mode, pki, setup_listener=tp, setup_client=tp)
        c.settimeout(5)
        srv = FuncServer(s, carrier)
        srv.start()
        sess = Session(c, srv, [s, ls])
        sess.memo["net"] = n
        sess.memo["carrier"] = carrier
        try:
            yield sess
        finally:
            srv.stop = True
            srv.join(2)
            close_all(c, s, ls)
        assert not srv.is_alive(), "func server thread still running after stop"
        assert not srv.errors, srv.errors


@pytest.fixture(autouse=True)
def func_server_clean(request: pytest.FixtureRequest) -> Iterator[None]:
    """A func_test case fails when the server side failed while it ran (and the server's loop must
    still be running unless the connection was closed on purpose)."""
    if "func" not in request.fixturenames:
        yield
        return
    sess = request.getfixturevalue("func")
    before = len(sess.server.errors)
    yield
    assert not sess.server.errors[before:], sess.server.errors[before:]
    assert sess.server.is_alive() or sess.server.closing, "the func server's loop ended"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the func_test cases `quicfunc`: they share one connection per mode (the `func`
    fixture), whose stream numbers carry from one group to the next, as in tests/func_test.c, so
    they must run in one process, in file order. The Makefile runs them apart, without xdist."""
    for item in items:
        if "func" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.quicfunc)
