"""benchmarks/smbtorture_bench.py runs every smb2.bench test against both servers and prints each row
(a 1-second run; no speed is asserted: benchmarks never do)."""

from __future__ import annotations

import os
import re
import time

import pytest
from procutil import _missing

from benchmarks import smbtorture_bench as bench
from harness.peers import smb_samba


def test_rates_are_read_as_smbtorture_prints_them():
    echo = "1.00 second: echo[num/s=100,avslat=0.1]\r2.00 second: echo[num/s=300,avslat=0.1]\n"
    assert bench.parse_rate("echo", echo) == 200
    contention = "1.00 second: open[num/s=50,avslat=1] close[num/s=51,avslat=1]\n"
    assert bench.parse_rate("path-contention-shared", contention) == 50
    assert bench.parse_rate("oplock1", "1495.80 ops/second\r1470.40 ops/second\n") == 1470.40
    with pytest.raises(ValueError, match="no 'ops/second'"):
        bench.parse_rate("oplock1", "success: oplock1\n")


def test_tree_cpu_counts_this_process_and_grows_with_work():
    before = bench.tree_cpu(os.getpid())
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    assert bench.tree_cpu(os.getpid()) - before >= 0.1


def test_every_bench_test_against_both_servers(capsys):
    smb_samba.need("smbtorture", "samba-testsuite", _missing)
    smb_samba.need("smbd", "samba", _missing)
    assert bench.main(["--seconds", "1"]) == 0
    out = capsys.readouterr().out
    for test in bench.TESTS:
        row = re.search(rf"^{re.escape(test)} +([\d.]+) +([\d.]+) +[\d.]+x +([\d.]+) +([\d.]+) +[\d.]+x$", out, re.M)
        assert row, out
        assert all(float(v) > 0 for v in row.groups()), row.group(0)
