"""benchmarks/reconnect.py runs and prints every ratio (no time is asserted: benchmarks never do)."""

from __future__ import annotations

from benchmarks import reconnect


def test_reconnect_benchmark_prints_ratios(capsys):
    assert reconnect.main(["--size", "512KiB", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "x ECHO RTT" in out and "x reconnect" in out and "ratio 2/1" in out
