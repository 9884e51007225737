"""`make test` runs in a random order (pytest-randomly) that one number reproduces.

The seed is printed in the run's header (``Using --randomly-seed=N``); ``PYTEST_ADDOPTS=--randomly-seed=N
make test`` runs the same order again. Under xdist (``-n 2``) each worker collects and orders the tests
itself, so both must get the controller's seed: a worker with another seed would order (and seed
``random``) differently. Checked on a throwaway test module, in a child pytest, as `make test` runs it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MODULE = '''
import json
import os
import random

import pytest


@pytest.mark.parametrize("n", range(12))
def test_record(n, request):
    seed = request.config.getoption("randomly_seed")
    line = {"n": n, "seed": seed, "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
            "draw": random.random()}
    with open(os.environ["RECORD"], "a") as f:
        f.write(json.dumps(line) + "\\n")
'''


def _run(tmp_path: Path, record: Path, addopts: str = "") -> tuple[int, list[dict]]:
    env = dict(os.environ, RECORD=str(record), PYTEST_ADDOPTS=addopts)
    r = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "-p", "randomly", "-p", "no:cacheprovider",
                        str(tmp_path / "test_recorded.py")], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    m = re.search(r"Using --randomly-seed=(\d+)", r.stdout)
    assert m, r.stdout[-3000:]
    return int(m.group(1)), [json.loads(line) for line in record.read_text().splitlines()]


def test_both_workers_use_the_printed_seed_and_the_seed_reproduces_the_run(tmp_path):
    (tmp_path / "test_recorded.py").write_text(MODULE)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # keep the child out of this repository's settings
    seed, first = _run(tmp_path, tmp_path / "first.jsonl")
    assert len(first) == 12
    assert {line["worker"] for line in first} == {"gw0", "gw1"}, first
    assert {line["seed"] for line in first} == {seed}, first

    again, second = _run(tmp_path, tmp_path / "second.jsonl", addopts=f"--randomly-seed={seed}")
    assert again == seed
    # every test drew the same number as in the first run (an unseeded draw would differ)
    assert {line["n"]: line["draw"] for line in second} == {line["n"]: line["draw"] for line in first}


def test_make_test_loads_the_plugin_in_both_runs():
    """Neither pytest line of `make test` turns pytest-randomly off (the quicfunc cases keep their order
    by themselves: tests/quic/func/conftest.py)."""
    lines = [line for line in (ROOT / "Makefile").read_text().split("\ntest:", 1)[1].split("\n\n", 1)[0]
             .splitlines() if "-m pytest" in line]
    assert len(lines) == 2, lines
    assert not any("no:randomly" in line or "randomly-dont-reorganize" in line for line in lines), lines
