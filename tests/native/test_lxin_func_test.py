"""lxin/quic's own libquic and func_test, unmodified, built from the vendored sources by their build.sh,
server and client in separate processes under `wirecheck exec` (the native preload library).

libquic runs the TLS handshake in the program (GnuTLS) and drives the socket through the raw
interface (TRANSPORT_PARAM_EXT, HANDSHAKE_INFO cmsgs, CRYPTO_SECRET), which QuicSocket serves
(wrappers/quic/raw.py): every one of the 98 cases must pass, in PSK and in certificate mode.
The reverse mix, the Python port of func_test's client side against this C server, runs with the
other quicfunc cases (tests/quic/func, the ``c-server-*`` connections).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .nativeutil import HERE, build_lxin, exec_argv, net_env, python, start_c_func_server

PASS = re.compile(r"^test\d+: PASS", re.M)


@pytest.fixture(scope="session")
def lxin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_lxin(tmp_path_factory.mktemp("lxin"))


def _run(lxin: Path, sockdir: Path, peers, mode: str, timeout: float, server: str = "c") -> tuple:
    """func_test's client against func_test's server (``server="c"``) or the Python port of its server
    side (tests/quic/funcserver.py through tests/native/py_funcserver.py)."""
    keys = lxin / "keys"
    if mode == "psk":
        sargs, cargs = [str(keys / "server-psk.txt")], [str(keys / "client-psk.txt")]
    else:
        sargs, cargs = [str(keys / "server-key.pem"), str(keys / "server-cert.pem")], []
    env = net_env()
    if server == "c":
        srv = start_c_func_server(peers, lxin, sockdir, mode, env)
    else:
        srv = peers.start("py_funcserver", exec_argv(sockdir, 12, python(), str(HERE / "py_funcserver.py"),
                                                     "127.0.0.12", "1234", *sargs), env)
        srv.expect("ready")
    cli = peers.start("func_client", exec_argv(sockdir, 11, str(lxin / "func_test"), "client", "127.0.0.12", "1234",
                                               *cargs), env)
    rc = cli.finish(timeout=timeout, rc=None)
    return srv, cli, rc


@pytest.mark.parametrize("server", ["c", "python"])
@pytest.mark.parametrize("mode", ["psk", "cert"])
def test_func_test_all_98_cases(lxin, sockdir, peers, mode, server):
    """Both C (client and server in separate processes), and mixed: the C client against the Python
    server. Measured on a 2-core machine: 98/98 in all four runs, 30-35 s each."""
    srv, cli, rc = _run(lxin, sockdir, peers, mode, 300, server)
    passed = [ln for ln in cli.lines if PASS.match(ln)]
    daemon_log = sockdir / ".quicd.log"  # the QUIC daemon serving the C programs' sockets
    assert rc == 0 and len(passed) == 98 and not [ln for ln in cli.lines if "FAIL" in ln], (
        f"{cli.describe()}\n{srv.describe()}\n[quic daemon log]\n"
        + (daemon_log.read_text(errors="replace")[-4000:] if daemon_log.exists() else "(none)"))
    # the server saw the whole run: the client's "client close" reached it (the C server and the
    # Python one both say so) and it ended without an error of its own
    assert srv.finish(timeout=30, rc=0) == 0 and "TEST DONE" in srv.lines, srv.describe()
