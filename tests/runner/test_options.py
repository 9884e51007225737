"""xfstests' loop, order and output options of `wirecheck check`: -r/--exact-order, -i/-I, -L, -T, -d, -X,
against the formats xfstests' `check` prints (its options and console lines, fstests 63a2972)."""
from __future__ import annotations

import re

from .scen import FAIL, NOTRUN, PASS, write
from .test_check import check, sc

# fails on its 1st, 3rd, ... run: a counter file beside the scenario tree
FLAKY = """
id: {id}
description: fails every other run
groups: [{groups}]
steps:
  - host.run: {{argv: [python, -c, "import pathlib,sys; p=pathlib.Path('COUNTER'); n=int(p.read_text() or 0) if p.exists() else 0; p.write_text(str(n+1)); sys.exit(3 if n % 2 == 0 else 0)"]}}
"""


def flaky(tmp_path, sid: str) -> str:
    return FLAKY.replace("COUNTER", str(tmp_path / f"counter-{sid.replace('/', '-')}"))


def cell_lines(out: str, prefix: str = "tcp/") -> list[str]:
    return [line for line in out.splitlines() if line.startswith(prefix)]


def test_default_order_is_sorted_exact_order_keeps_the_command_line(tmp_path):
    sc(tmp_path, **{"tcp/001": PASS, "tcp/002": PASS, "tcp/003": PASS})
    res = check(tmp_path, "tcp/003", "tcp/001", "tcp/002")
    assert [x.split()[0] for x in cell_lines(res.stdout)] == ["tcp/001", "tcp/002", "tcp/003"]
    res = check(tmp_path, "--exact-order", "tcp/003", "tcp/001", "tcp/002")
    assert res.returncode == 0, res.stdout + res.stderr
    assert [x.split()[0] for x in cell_lines(res.stdout)] == ["tcp/003", "tcp/001", "tcp/002"]
    assert "Ran: tcp/003 tcp/001 tcp/002" in res.stdout


def test_randomize_is_seeded_and_exclusive_with_exact_order(tmp_path):
    sc(tmp_path, **{f"tcp/{i:03d}": PASS for i in range(1, 9)})
    res = check(tmp_path, "-r", "--exact-order")
    assert res.returncode == 2 and "Cannot specify -r and --exact-order." in res.stderr
    assert not (tmp_path / "results").exists()
    orders = []
    for _ in range(2):
        res = check(tmp_path, "-n", "-r", "--seed", "7")
        assert res.returncode == 0, res.stderr
        assert "RANDOM_SEED   -- 7 (-r --seed 7)" in res.stdout
        orders.append(cell_lines(res.stdout))
    assert orders[0] == orders[1] and sorted(orders[0]) == [f"tcp/{i:03d}" for i in range(1, 9)]
    assert orders[0] != sorted(orders[0])   # seed 7 does shuffle these eight
    other = cell_lines(check(tmp_path, "-n", "-r", "--seed", "8").stdout)
    assert other != orders[0]


def test_iterate_runs_every_section_n_times_and_stop_on_failure(tmp_path):
    sc(tmp_path, **{"tcp/001": PASS})
    (tmp_path / "sc/tcp/002.yaml").write_text(flaky(tmp_path, "tcp/002").format(id="tcp/002", groups="quick"))
    res = check(tmp_path, "-i", "3")
    assert res.returncode == 1
    # iterations 1 and 3 fail (first and third run of the flaky cell), 2 passes
    assert res.stdout.count("Ran: tcp/001 tcp/002") == 3 + 3   # each iteration, then the final re-print
    assert res.stdout.count("Failed 1 of 2 tests") == 2 + 2
    assert res.stdout.count("Passed all 2 tests") == 1 + 1
    assert res.stdout.count("SECTION       -- global\n=========================") == 3
    # -I stops after the first iteration with a failure: the counter is now odd, so run 4 passes, 5 fails
    res = check(tmp_path, "-I", "5")
    assert res.returncode == 1
    assert res.stdout.count("Passed all 2 tests") == 1 + 1 and res.stdout.count("Failed 1 of 2 tests") == 1 + 1
    assert (tmp_path / "counter-tcp-002").read_text() == "5"
    res = check(tmp_path, "-i", "2", "-I", "2")
    assert res.returncode == 2


def test_loop_on_failure_prints_aggregate_and_keeps_rerun_files(tmp_path):
    sc(tmp_path, **{"tcp/001": PASS, "tcp/003": FAIL})
    (tmp_path / "sc/tcp/002.yaml").write_text(flaky(tmp_path, "tcp/002").format(id="tcp/002", groups="quick"))
    res = check(tmp_path, "-L", "3")
    assert res.returncode == 1
    out = res.stdout.splitlines()
    i = next(k for k, line in enumerate(out) if line.startswith("tcp/002 "))
    agg = [line for line in out if "aggregate" in line]
    # runs: fail pass fail pass
    assert "tcp/002 aggregate results across 4 runs: fail=2 (50.0%), pass=2 (50.0%)" in agg
    assert "tcp/003 aggregate results across 4 runs: fail=4 (100.0%), pass=0 (0.0%)" in agg
    assert out.index(agg[0]) > i
    assert not any(line.startswith("tcp/001 aggregate") for line in out)   # a pass is not looped
    assert "Failures: tcp/002 tcp/003" in out and "Failed 2 of 3 tests" in out   # reruns are not counted
    r = tmp_path / "results/tcp"
    names = {p.name for p in r.iterdir()}
    assert {"002.full.rerun1", "002.full.rerun2", "002.full.rerun3", "002.out.bad.rerun2"} <= names
    assert "002.out.bad.rerun1" not in names                              # rerun 1 passed
    assert (r / "002.out.bad").read_text().startswith("step 0 host.run")  # the reported failure stays
    assert not any(n.startswith(".rerun") for n in names)
    # the next run starts clean: old rerun copies go
    res = check(tmp_path, "tcp/001")
    assert res.returncode == 0
    check(tmp_path, "tcp/002")     # 5th run: fails, no -L
    assert not any(p.name.endswith(".rerun1") for p in r.iterdir() if p.name.startswith("002."))


def test_timestamps_lines(tmp_path):
    sc(tmp_path, **{"tcp/001": PASS, "tcp/002": FAIL, "tcp/003": NOTRUN})
    res = check(tmp_path, "-T")
    out = res.stdout.splitlines()
    t = r"\[\d\d:\d\d:\d\d\]"
    assert re.fullmatch(rf"tcp/001       \t{t} {t} \d+s", out[2]), out[2]
    assert re.fullmatch(rf"tcp/002       \t{t} {t} - output mismatch \(see .*/tcp/002\.out\.bad\)", out[3]), out[3]
    i = next(k for k, line in enumerate(out) if line.startswith("tcp/003"))
    assert re.fullmatch(rf"tcp/003       \t{t} {t} \[not run\]", out[i]), out[i]
    assert out[i + 1] == "\ttcp/003 -- requires program no-such-program-wirecheck (not found in PATH)"


def test_dump_prints_the_cells_output(tmp_path):
    sc(tmp_path, **{"tcp/001": PASS})
    res = check(tmp_path, "-d")
    assert res.returncode == 0
    out = res.stdout
    assert re.search(r"^tcp/001 .*\n\[\d\d:\d\d:\d\d\] tcp/001: passes quickly$", out, re.M)
    assert "final outcome: pass" in out


def test_exclude_file_in_each_area_dir(tmp_path):
    sc(tmp_path, **{"tcp/001": PASS, "tcp/002": PASS, "udp/001": PASS, "udp/002": PASS})
    write(tmp_path / "sc", "tcp/skip-on-ci", "002  # too slow\n")
    write(tmp_path / "sc", "udp/skip-on-ci", "# nothing\n001\n")
    res = check(tmp_path, "-X", "skip-on-ci")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "tcp/002       [expunged]" in res.stdout and "udp/001       [expunged]" in res.stdout
    assert "Ran: tcp/001 udp/002" in res.stdout and "Passed all 2 tests" in res.stdout
