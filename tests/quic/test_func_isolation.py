"""The ported func_test cases (tests/quic/func) neither leak their emulated network into the tests that
run after them nor lose their order under pytest-randomly.

Both run pytest in a child process, as a user would: the first with a probe test placed after one group
of func cases, the second collecting under a few random seeds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = '''
import os
import socket


def test_no_emulated_network_left_behind():
    assert os.environ.get("SOCKET_WRAPPER_DIR") is None, os.environ.get("SOCKET_WRAPPER_DIR")
    assert os.environ.get("WIRECHECK_QUIC_CARRIER") is None
    assert socket.socket.__module__ == "socket", socket.socket
'''


def _pytest(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir",
                           str(ROOT), "-p", "no:cacheprovider", "-n", "0", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_a_test_after_the_func_cases_runs_outside_their_network(tmp_path):
    """The shared func_test connection was session-scoped: its emulated network (SOCKET_WRAPPER_DIR in
    the environment, the wrapped socket module) stayed active after the last func case, so a later test
    in the same process ran inside it (`wirecheck h3 serve` started by tests/quic/test_h3_cli.py listened
    on the emulated network and ngtcp2's client, on the real loopback, downloaded nothing)."""
    probe = tmp_path / "test_probe_after_func.py"
    probe.write_text(PROBE)
    r = _pytest("-p", "no:randomly", "-v", "tests/quic/func/test_func_4_close.py", str(probe),
                "-k", "psk-seqpacket or no_emulated")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    ran = [line for line in r.stdout.splitlines() if " PASSED" in line]
    assert len(ran) > 1 and "test_func_4_close.py::" in ran[0], r.stdout[-3000:]
    assert "::test_no_emulated_network_left_behind PASSED" in ran[-1], r.stdout[-3000:]


def _collected(*order: str) -> list[str]:
    r = _pytest(*order, "--collect-only", "-q", "tests/quic/func", "tests/quic/test_h3_cli.py",
                "tests/quic/test_basic.py", timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return [line for line in r.stdout.splitlines() if "::" in line]


def test_random_order_keeps_the_func_cases_in_file_order_in_one_block():
    from .func.conftest import FUNC_PARAMS

    ids = [f"{m}-{c}" for m, c in FUNC_PARAMS]
    listed = _collected("-p", "no:randomly")
    given = [n for n in listed if not n.startswith("tests/quic/func/")]
    for seed in (1, 2):
        nodeids = _collected("-p", "randomly", f"--randomly-seed={seed}")
        where = [i for i, n in enumerate(nodeids) if n.startswith("tests/quic/func/")]
        assert where, nodeids
        assert where == list(range(where[0], where[0] + len(where))), f"seed {seed}: func cases not in one block"
        cases = [nodeids[i] for i in where]

        def key(nodeid: str) -> tuple[int, str, int]:
            path, _, rest = nodeid.partition("::")
            name, _, param = rest.partition("[")
            return ids.index(param.rstrip("]")), path, int(name.removeprefix("test"))

        assert cases == sorted(cases, key=key), f"seed {seed}: func cases out of func_test.c's order"
        others = [n for n in nodeids if not n.startswith("tests/quic/func/")]
        # else this test would pass without pytest-randomly shuffling anything
        assert sorted(others) == sorted(given) and others != given, f"seed {seed}: nothing was shuffled"
    # `make test`'s second run selects them by their marker (set before -m selects)
    selected = _collected("-p", "randomly", "--randomly-seed=3", "-m", "quicfunc")
    assert selected == [n for n in listed if n.startswith("tests/quic/func/")]
