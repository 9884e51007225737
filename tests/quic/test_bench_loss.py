"""benchmarks/quic.py's loss measurement runs and prints its ratios (tiny size; timing never asserted)."""

from __future__ import annotations

import json
import re

from benchmarks import quic as bench


def test_loss_benchmark_prints_ratios_against_no_loss(tmp_path, capsys) -> None:
    out = tmp_path / "loss.json"
    assert bench.main(["--only", "loss", "--loss-size", "256KiB", "--loss", "10%", "--repeat", "1",
                       "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ratio vs the same transfer without loss" in text
    for rate in ("0%", "10%"):
        assert re.search(rf"^  loss {re.escape(rate)} +[\d.]+ MB/s +[\d.]+x$", text, re.M), text
    r = json.loads(out.read_text())["loss"]
    assert r["size"] == 256 * 1024 and r["rates"]["0%"]["ratio"] == 1.0
    assert all(v["median"] > 0 for v in r["rates"].values())
