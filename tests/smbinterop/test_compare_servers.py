"""The smbd-vs-ours comparison (compare_servers.py) run in full, against the run the README shows.

Slow (about a quarter of an hour on two cores): every one of the 38 suites against a fresh smbd and a
fresh `wirecheck serve`.  Our count per suite may not fall below the stored run's (compare.tsv) by
more than the suite's flapping tests; smbd's counts are reported, not judged (they are the reference).
The fresh rows go to ``$WIRECHECK_RESULTS/compare.tsv`` when that variable is set, so a CI run leaves
the figures `make interop-compare` would store.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import compare_servers as cs
import pytest
import torture_lists as tl
from peers_smb import need


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_no_suite_falls_below_the_stored_comparison():
    need("smbtorture", "samba-testsuite")
    need("smbd", "samba")
    stored = cs.read_tsv()
    flapping = tl.read_list(tl.FLAPPING)
    fresh: dict[str, tuple[cs.Count, cs.Count]] = {}
    with tempfile.TemporaryDirectory(prefix="wirecheck-compare-") as tmp:
        for suite in cs.SUITES:
            fresh[suite] = cs.compare(suite, Path(tmp) / suite)
            print(cs.row(suite, *fresh[suite]), flush=True)
    if os.environ.get("WIRECHECK_RESULTS"):
        cs.write_tsv(fresh, Path(os.environ["WIRECHECK_RESULTS"]) / "compare.tsv")
    problems = []
    for suite, (_, ours) in fresh.items():
        slack = sum(name.startswith(suite + ".") for name in flapping)
        floor = stored[suite][1].passed - slack
        if ours.note:
            problems.append(f"{suite}: wirecheck run ended by {ours.note}")
        if ours.passed < floor:
            problems.append(f"{suite}: wirecheck passed {ours.passed}, the stored run {stored[suite][1].passed}"
                            f" ({slack} flapping)")
    assert not problems, "\n".join(problems)
