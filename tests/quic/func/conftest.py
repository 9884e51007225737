"""The ported func_test cases (quicfunc): one shared connection per mode and carrier, run in file order.

Why a package of their own: the shared connection lives in an emulated network that is global to the
process (the wrapper's environment variables and the patched socket module). Scoped to this package,
pytest tears it down as soon as the last case here has run; scoped to the session it stayed active
until the end of the run, so any test that ran after these cases in the same process (a whole
``pytest tests/quic``, for one) ran inside it, and its subprocesses inherited ``SOCKET_WRAPPER_DIR``.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from wrappers.quic import QuicSocket

from ..conftest import MODES, close_all, emulated, open_pair

#: the func_test port runs on the default carrier and on the udp one (carriers.py), each in both modes;
#: "raw-psk" (the handshake is libquic's on both ends: the application's TLS over the raw interface)
#: runs the same 98 cases on the default carrier; "c-server-psk" and "c-server-cert" run them against
#: lxin/quic's own func_test server (C, libquic's handshake, built from the vendored sources) in a
#: process of its own under `wirecheck exec`, on the same emulated network.
FUNC_PARAMS = ([(m, c) for c in ("seqpacket", "udp") for m in MODES] + [("raw-psk", "seqpacket")]
               + [("c-server-psk", "seqpacket"), ("c-server-cert", "seqpacket")])


class CFuncServer:
    """func_test's C server process seen as the ``server`` of a Session: ``errors`` are the lines it
    printed besides its two status lines (it prints only on a failure) and a non-zero exit; it is
    ``closing`` once it printed "TEST DONE" (it got "client close" and will exit)."""

    def __init__(self, peer: Any):
        self.peer = peer
        self.stop = False

    @property
    def errors(self) -> list[str]:
        errs = [f"func_test server: {ln}" for ln in self.peer.lines if ln not in ("HANDSHAKE DONE", "TEST DONE")]
        rc = self.peer.p.poll()
        if rc not in (None, 0):
            errs.append(f"func_test server exited {rc}: {self.peer.describe()}")
        return errs

    @property
    def closing(self) -> bool:
        return "TEST DONE" in self.peer.lines

    def is_alive(self) -> bool:
        return self.peer.p.poll() is None

    def join(self, timeout: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.peer.p.wait(timeout=timeout)


def c_server_pair(mode: str, net: Any, tmp: Path, setup: Callable[[QuicSocket], None]) -> tuple:
    """A client QuicSocket in this process, handshaken with func_test's C server (interface 12)."""
    from native.nativeutil import Peers, build_lxin, net_env, start_c_func_server

    from wrappers.quic import client_handshake

    from ..conftest import quic_socket

    lxin = build_lxin(tmp / "lxin")
    peers = Peers(tmp)
    peer = start_c_func_server(peers, lxin, Path(net.socket_dir), mode, net_env())
    c = quic_socket()
    try:
        setup(c)
        c.connect(("127.0.0.12", 1234))
        if mode == "psk":
            client_handshake(c, str(lxin / "keys" / "client-psk.txt"), timeout=30)
        else:
            client_handshake(c, None, "server.test", cafile=str(lxin / "keys" / "ca-cert.pem"), timeout=30)
        peer.expect("HANDSHAKE DONE")
    except BaseException:
        c.close()
        peers.close()
        raise
    return c, CFuncServer(peer), peers


@pytest.fixture(scope="package", params=FUNC_PARAMS, ids=[f"{m}-{c}" for m, c in FUNC_PARAMS])
def func(request: pytest.FixtureRequest, pki: dict[str, str],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The func_test connection for one mode and carrier, shared by test_func_1..4 in order (STREAM,
    CONNECTION, NOTIFICATION, CLOSE), as tests/func_test.c runs its groups on one connection. Both
    ends set max_datagram_frame_size = 1400 and keep every other default.  The server side's
    failures fail the case that was running (``func_server_clean``); its thread must end at teardown."""
    from wrappers.quic import QUIC_SOCKOPT_TRANSPORT_PARAM, SOL_QUIC, TransportParam

    from ..funcserver import FuncServer, Session

    mode, carrier = request.param

    def tp(s: QuicSocket) -> None:
        s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_TRANSPORT_PARAM, TransportParam(max_datagram_frame_size=1400).pack())

    with emulated(carrier) as n:
        peers = None
        if mode.startswith("c-server-"):
            c, srv, peers = c_server_pair(mode.removeprefix("c-server-"), n,
                                          tmp_path_factory.mktemp("func-c-server"), tp)
            others: list = []
        else:
            c, s, ls = open_pair(mode, pki, setup_listener=tp, setup_client=tp)
            srv = FuncServer(s, carrier)
            srv.start()
            others = [s, ls]
        c.settimeout(5)
        sess = Session(c, srv, others)
        sess.memo["net"] = n
        sess.memo["carrier"] = carrier
        try:
            yield sess
        finally:
            srv.stop = True
            srv.join(2 if peers is None else 10)  # the C server sleeps 1 s after "client close"
            close_all(c, *others)
            if peers is not None:
                alive = srv.is_alive()
                peers.close()
                assert not alive, "func_test's C server still running after the CLOSE group"
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


def _file_order(item: pytest.Item) -> tuple[int, str, int]:
    """Where a case stands in func_test.c's sequence: its connection (mode and carrier), then its group
    (the files are numbered in func_test.c's order), then its place in the file."""
    param = tuple(item.callspec.params["func"])  # type: ignore[attr-defined]
    return FUNC_PARAMS.index(param), item.path.name, item.location[1] or 0


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the func_test cases `quicfunc`: they share one connection per mode (the `func` fixture),
    whose stream numbers carry from one case and one group to the next, as in tests/func_test.c, so
    they must run in one process (the Makefile runs them apart, without xdist). tryfirst: before
    ``-m`` selects by marker."""
    for item in items:
        if "func" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.quicfunc)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Put the func_test cases back in func_test.c's order, in one block.

    A random order (pytest-randomly shuffles before every other hook) would break them for that reason
    alone; every other test keeps the order it was given. Once collection is finished: after ``-m``
    and ``-k`` selected, after pytest grouped the items by fixture parameter; tryfirst: before the
    list is printed (``--collect-only``) or sent to xdist's controller."""
    items = session.items
    cases = [item for item in items if "func" in getattr(item, "fixturenames", ())]
    if not cases:
        return
    first = items.index(cases[0])
    ids = {id(item) for item in cases}
    rest = [item for item in items if id(item) not in ids]
    items[:] = rest[:first] + sorted(cases, key=_file_order) + rest[first:]
