"""smbtorture 4.17 against our server.

Each test of each suite passes or matches a regex in ``knownfail`` (with its reason).  The counts
per suite are printed (run with -s) and written to ``$WIRECHECK_RESULTS/smbtorture-counts.json``
when that variable is set.  Suites that take longer than a few seconds are marked slow.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import OurServer
from peers_smb import PASSWORD, USER, need

KNOWNFAIL = Path(__file__).with_name("knownfail")
FAST = ["smb2.connect", "smb2.rw", "smb2.credits", "smb2.ioctl", "smb2.getinfo", "smb2.read"]
SLOW = ["smb2.bench", "smb2.dir", "smb2.create"]


def knownfail() -> list[tuple[re.Pattern, str]]:
    entries = []
    for line in KNOWNFAIL.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pattern, _, reason = line.partition("  #")
        entries.append((re.compile(pattern.strip()), reason.strip()))
    return entries


def parse(output: str) -> dict[str, str]:
    """{test name: success|failure|error|skip} from smbtorture's subunit-ish lines."""
    results = {}
    for line in output.splitlines():
        match = re.match(r"^(success|failure|error|skip|xfail): (.+?)(?: \[.*)?$", line)
        if match:
            results[match.group(2).strip()] = match.group(1)
    return results


def run_suite(suite: str, tmp_path: Path, tests: list[str] | None = None, **server_options) -> dict:
    program = need("smbtorture", "samba-testsuite")
    server = OurServer(tmp_path, **server_options)
    try:
        result = subprocess.run([program, "//127.0.0.1/share", "-p", str(server.port), "-U", f"{USER}%{PASSWORD}",
                                 "--target=samba3", *(tests or [suite])], capture_output=True, text=True,
                                timeout=600)
    finally:
        server.server.stop()
    results = parse(result.stdout)
    assert results, f"smbtorture printed no results:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}"
    entries = knownfail()
    unexpected, known, fixed = [], [], []
    for name, outcome in results.items():
        full = f"{suite}.{name}"
        listed = next((reason for pattern, reason in entries if pattern.search(full)), None)
        if outcome in ("failure", "error"):
            (known if listed else unexpected).append(full)
        elif outcome == "success" and listed:
            fixed.append(full)
    counts = {outcome: sum(1 for o in results.values() if o == outcome) for outcome in ("success", "failure", "error",
                                                                                        "skip")}
    counts.update(knownfail=len(known), unexpected=unexpected, now_passing=fixed)
    print(f"{suite}: {json.dumps(counts)}")
    if os.environ.get("WIRECHECK_RESULTS"):
        out = Path(os.environ["WIRECHECK_RESULTS"]) / "smbtorture-counts.json"
        data = json.loads(out.read_text()) if out.exists() else {}
        data[suite] = counts
        out.write_text(json.dumps(data, indent=1))
    assert not server.server.errors, server.server.errors
    assert not unexpected, "\n".join(f"unexpected failure: {name}" for name in unexpected) + "\n" + result.stdout[-4000:]
    return counts


@pytest.mark.parametrize("suite", FAST)
def test_smbtorture(suite, tmp_path):
    run_suite(suite, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("suite", SLOW)
def test_smbtorture_slow(suite, tmp_path):
    run_suite(suite, tmp_path)


# Durable handles, replay, session binding, multichannel.  smb2.replay is run test by test:
# replay-regular is left out (smbtorture's cleanup loops forever on a file it cannot delete here) and so
# are the dhv2-pending* tests (each waits ~35 s for an oplock/lease break this server does not send).
RECONNECT = ["smb2.durable-open", "smb2.durable-v2-open", "smb2.session", "smb2.multichannel"]
REPLAY_TESTS = ["replay-commands", "replay-dhv2-oplock1", "replay-dhv2-oplock2", "replay-dhv2-oplock3",
                "replay-dhv2-oplock-lease", "replay-dhv2-lease1", "replay-dhv2-lease2", "replay-dhv2-lease3",
                "replay-dhv2-lease-oplock", "channel-sequence", "replay3", "replay4", "replay5", "replay6",
                "replay7"]


@pytest.mark.parametrize("suite", RECONNECT)
def test_smbtorture_reconnect_suites(suite, tmp_path):
    run_suite(suite, tmp_path, multichannel=True, continuously_available=True)


@pytest.mark.slow
def test_smbtorture_replay(tmp_path):
    counts = run_suite("smb2.replay", tmp_path, multichannel=True, continuously_available=True,
                       tests=[f"smb2.replay.{name}" for name in REPLAY_TESTS])
    assert counts["success"] >= 9


def test_parse_and_knownfail_format():
    assert parse("success: a\nfailure: b [\nreason\n]\nskip: c [\nwhy\n]\n") == {
        "a": "success", "b": "failure", "c": "skip"}
    assert all(reason for _, reason in knownfail())
