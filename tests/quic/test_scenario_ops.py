"""The QUIC scenario operations (harness/scenario/ops/quic.py) and the scenarios that use them:
migration/001 (client migration and NAT rebinding under SMB I/O) and quic/002 (resumed and 0-RTT
handshakes). One real cell of each runs here (slow: a server, a client and tshark per cell); the
full matrices run with `wirecheck check -s quic -j 2 migration/001 quic/002`."""

from __future__ import annotations

import pytest

from harness.scenario import load_file, load_tree
from harness.scenario.cellproc import run_isolated


def test_rebind_spec_keeps_the_hosts_other_impairments():
    from harness.scenario.ops.quic import _rebind_problem, _rebind_spec

    assert _rebind_spec({"kind": "port"}) == "out: rebind=port@0s"
    assert _rebind_spec({"kind": "addr", "spec": "seed=5; out: loss=5%; in: loss=5%"}) == \
        "seed=5; out: loss=5% rebind=addr@0s; in: loss=5%"
    assert _rebind_spec({"kind": "both", "spec": "in: loss=1%"}) == "in: loss=1%; out: rebind=both@0s"
    assert _rebind_problem({"kind": "port", "spec": "out: loss=150%"})  # a bad base spec is a load error
    assert "one rule set" in _rebind_problem({"kind": "port", "spec": "out: loss=1% | in: loss=1%"})


def test_the_scenarios_load_with_their_matrices():
    by_id = {s.id: s for s in load_tree("scenarios")}
    mig, res = by_id["migration/001"], by_id["quic/002"]
    assert len(list(mig.cells())) == 3 * 2 * 2 * 2
    assert len(list(res.cells())) == 3 * 2 * 2 * 2


def _cell(path: str, cell_id: str):
    cells = {c.id: c for c in load_file(path).cells()}
    return cells[cell_id]


@pytest.mark.slow
def test_migration_cell_option_mid_transfer_with_loss(tmp_path):
    r = run_isolated(_cell("scenarios/migration/001.yaml", "migration/001[option-mid-transfer-5pct-ipv4]"),
                     tmp_path / "out", ladder=False)
    assert r["status"] == "pass", r


@pytest.mark.slow
def test_resumption_cell_0rtt_cert_client_v2(tmp_path):
    r = run_isolated(_cell("scenarios/quic/002.yaml", "quic/002[cert-client-v2-ipv6-0-rtt]"),
                     tmp_path / "out", ladder=False)
    assert r["status"] == "pass", r
    assert r["results"]["st"]["resumed"] is True and r["results"]["st"]["early_data"] is True
