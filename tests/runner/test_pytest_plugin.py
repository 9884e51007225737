"""The pytest plugin through pytester: one item per matrix cell, skips with reasons, failures naming
the step, fixtures, collection errors with line and column, xdist."""
from __future__ import annotations

import re
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
import tsharkutil

from .scen import FAIL, NOTRUN, PASS

pytest_plugins = ["pytester"]

# Once pyproject declares the pytest11 entry point the plugin loads by itself; `-p` would register it twice.
_LOADED = any(ep.value == "harness.pytest_plugin" for ep in metadata.entry_points(group="pytest11"))
# The inner runs collect in file order: pytest-randomly (loaded by its entry point into every pytester
# run too) would shuffle the cells these tests list and count in order.
P = (() if _LOADED else ("-p", "harness.pytest_plugin")) + ("-p", "no:randomly")

# Every inner run is a subprocess. An in-process run (pytester.runpytest) restores sys.modules after
# it, dropping each module it imported first, while the parent package keeps the dropped module as
# an attribute: a later `from . import connection` in a re-imported multiprocessing.queues then binds
# the stale multiprocessing.connection, and every spawn Process given a Queue fails to pickle
# ("rebuild_connection ... not the same object"), in whatever test the worker runs next (a CI run lost
# three benchmark tests so). A re-imported cryptography backend did the same to aioquic before.
IN_PROCESS_RUN = re.compile(r"\.(runpytest|inline_run|runpytest_inprocess|inline_genitems)\(")

MATRIX = """
id: {id}
description: a matrix
groups: [{groups}]
matrix:
  family: [ipv4, ipv6]
  mode: [a, b]
exclude:
  - {{family: ipv6, mode: b}}
steps:
  - host.run: {{argv: [python, -c, "pass"]}}
"""


@pytest.fixture
def tree(pytester):
    for sid, text in {"tcp/001": PASS, "tcp/002": FAIL, "udp/001": NOTRUN, "udp/002": MATRIX}.items():
        p = pytester.path / "scenarios" / f"{sid}.yaml"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text.format(id=sid, groups="auto, quick")).lstrip())
    (pytester.path / "scenarios/other.yaml").write_text("not: a scenario\n")
    return pytester


def test_cells_are_items_with_cell_ids(tree):
    res = tree.runpytest_subprocess(*P, "scenarios", "--collect-only", "-q")
    ids = [line for line in res.outlines if "::" in line]
    assert ids == ["scenarios/tcp/001.yaml::tcp/001", "scenarios/tcp/002.yaml::tcp/002",
                   "scenarios/udp/001.yaml::udp/001", "scenarios/udp/002.yaml::udp/002[ipv4-a]",
                   "scenarios/udp/002.yaml::udp/002[ipv4-b]", "scenarios/udp/002.yaml::udp/002[ipv6-a]"]


def test_outcomes_skip_reasons_and_failure_naming_the_step(tree, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    res = tree.runpytest_subprocess(*P, "scenarios", "-rs")
    res.assert_outcomes(passed=4, failed=1, skipped=1)
    out = res.stdout.str()
    assert "tcp/002 failed: step 0 host.run (002.yaml:5): run1 exited with status 3, expected 0" in out
    assert "full: " in out
    assert "requires program no-such-program-wirecheck (not found in PATH)" in out


def test_missing_requirement_fails_under_ci(tree, monkeypatch):
    monkeypatch.setenv("CI", "true")
    res = tree.runpytest_subprocess(*P, "scenarios", "-rs")
    res.assert_outcomes(passed=4, failed=2)
    assert "requires program no-such-program-wirecheck (not found in PATH) (a failure under CI)" in res.stdout.str()


def test_group_selection(tree):
    (tree.path / "scenarios/tcp/001.yaml").write_text(
        (tree.path / "scenarios/tcp/001.yaml").read_text().replace("[auto, quick]", "[slow]"))
    res = tree.runpytest_subprocess(*P, "scenarios", "--wirecheck-group", "slow")
    res.assert_outcomes(passed=1)


def test_schema_errors_are_collection_errors_with_positions(pytester):
    p = pytester.path / "scenarios/tcp/001.yaml"
    p.parent.mkdir(parents=True)
    p.write_text("id: tcp/001\ndescription: x\ngroups: [q]\nsteps:\n  - nope.op: {}\n")
    res = pytester.runpytest_subprocess(*P, "scenarios")
    res.assert_outcomes(errors=1)
    assert f"{p}:5:5: unknown operation 'nope.op'" in res.stdout.str()


def test_xdist_runs_cells_isolated(tree, monkeypatch):
    monkeypatch.delenv("CI", raising=False)  # udp/001 is "not run" only outside CI
    res = tree.runpytest_subprocess(*P, "scenarios", "-n", "2")
    res.assert_outcomes(passed=4, failed=1, skipped=1)


@pytest.mark.peer
def test_wirecheck_net_fixture_runs_processes_and_captures(pytester):
    tsharkutil.tshark_path()  # skips on a laptop without tshark, fails under CI
    pytester.makepyfile(test_user="""
        import json, subprocess
        from harness.pcap import Count

        def test_udp(wirecheck_net):
            net = wirecheck_net
            net.start(["python", "-m", "harness.peers.net_exchange", "udp-echo-server", "--addr", net.address(10),
                       "--port", "7", "--timeout", "5"], host=10)
            import os, time
            deadline = time.time() + 20
            while not any(n.startswith("U0A0007") for n in os.listdir(net.socket_dir)):
                assert time.time() < deadline
                time.sleep(0.05)
            done = net.run(["python", "-m", "harness.peers.net_exchange", "udp-client", "--addr", net.address(10),
                            "--port", "7", "--size", "4096", "--chunk", "1024"], host=11,
                           capture_output=True, text=True)
            result = json.loads(done.stdout.splitlines()[-1])
            assert result["received_sha256"] == result["sent_sha256"]
            cap = net.capture()
            cap.check(Count("udp.dstport == 7", eq=4), Count("udp.srcport == 7", eq=4))
    """)
    res = pytester.runpytest_subprocess(*P, "test_user.py")
    res.assert_outcomes(passed=1)


def test_wirecheck_run_fixture(tree):
    tree.makepyfile(test_run="""
        def test_it(wirecheck_run):
            assert wirecheck_run("scenarios/udp/002.yaml", "ipv6-a")["status"] == "pass"
            r = wirecheck_run("scenarios/tcp/002.yaml")
            assert r["status"] == "fail" and "exited with status 3" in r["reason"]
    """)
    res = tree.runpytest_subprocess(*P, "test_run.py")
    res.assert_outcomes(passed=1)


def test_knownfail_is_strict_xfail_and_flapping_is_xfail(tree, monkeypatch):
    monkeypatch.delenv("CI", raising=False)  # udp/001 is "not run" only outside CI
    (tree.path / "scenarios/knownfail").write_text("^tcp/002  # bug 7\n^tcp/001  # fixed already\n")
    (tree.path / "scenarios/flapping").write_text("^udp/002\\[ipv4-a\\]\n")
    res = tree.runpytest_subprocess(*P, "scenarios")
    res.assert_outcomes(passed=2, failed=1, skipped=1, xfailed=1, xpassed=1)
    assert "[XPASS(strict)] knownfail: fixed already" in res.stdout.str()


@pytest.mark.peer
def test_wirecheck_smb_fixture_reference_server_and_client(pytester):
    tsharkutil.tshark_path()
    pytester.makepyfile(test_smb="""
        from harness.pcap import Count

        def test_write_read(wirecheck_smb):
            srv = wirecheck_smb()
            with srv.client() as c:
                share = c.share("data")
                share.put_bytes("a.bin", b"x" * 100000)
                assert share.get_bytes("a.bin") == b"x" * 100000
            assert (srv.path / "a.bin").read_bytes() == b"x" * 100000
            cap = srv.capture()
            cap.check(Count("smb2.cmd == 9 && smb2.flags.response == 0", min=1), Count("smb2.cmd == 8", min=2))

        def test_encrypted(wirecheck_smb):
            srv = wirecheck_smb(encrypt=True)
            with srv.client() as c:
                c.share("data").put_bytes("b.bin", b"secret")
            cap = srv.capture()
            cap.check(Count("smb2.header.transform.msg_size", min=1), Count("smb2.cmd == 9", min=1))
    """)
    res = pytester.runpytest_subprocess(*P, "test_smb.py")
    res.assert_outcomes(passed=2)


@pytest.mark.peer
def test_wirecheck_quic_pair_fixture(pytester):
    tsharkutil.tshark_path()
    pytester.makepyfile(test_q="""
        from harness.pcap import Count
        from wrappers.quic import MSG_STREAM_FIN, MSG_STREAM_NEW, quic_recvmsg, quic_sendmsg

        def test_stream(wirecheck_quic_pair):
            p = wirecheck_quic_pair
            quic_sendmsg(p.client, b"ping", -1, MSG_STREAM_NEW | MSG_STREAM_FIN)
            data, sid, flags = quic_recvmsg(p.server, 100)
            assert (data, sid) == (b"ping", 0) and flags & MSG_STREAM_FIN
            quic_sendmsg(p.server, b"pong", 0, MSG_STREAM_FIN)
            assert quic_recvmsg(p.client, 100)[0] == b"pong"
            cap = p.capture()
            cap.check(Count("quic.stream.fin == 1", min=2), Count("quic.stream_data == 70:69:6e:67", min=1))
    """)
    res = pytester.runpytest_subprocess(*P, "test_q.py")
    res.assert_outcomes(passed=1)


def test_no_test_runs_pytest_in_process() -> None:
    """The rule above, kept: a test file that ran pytester in-process would break whichever test
    the same worker ran after it, depending on the random order."""
    tests = Path(__file__).resolve().parents[1]
    offenders = [f"{f.relative_to(tests)}:{n}" for f in sorted(tests.rglob("*.py"))
                 for n, line in enumerate(f.read_text().splitlines(), 1)
                 if IN_PROCESS_RUN.search(line) and "IN_PROCESS_RUN" not in line]
    assert offenders == []
