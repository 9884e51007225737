"""How long the scenario runner takes: `wirecheck check -g GROUP -j N` in a temporary results directory.

    python -m benchmarks.scenarios [--group quick] [--jobs 2]

Why a fresh results directory: the runner orders cells by the time each took when it last passed
(check.time) and prints the previous time beside each cell; a fresh directory has no history, so
the figure is what a first run (a CI job, a new checkout) takes, and the repository's own results
stay untouched. The run must pass (exit status 0): a failing cell ends early or waits for its
timeout, and either way its time says nothing about the runner.

Reported: the wall time, the cells and the sum of their times, and from each cell's own capture
(harness.scenario.startup) the start-up to the first request, median and slowest. Start-up is where
a loaded machine shows: processes starting and importing before the first packet.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def cells(matrix: dict) -> list[dict[str, Any]]:
    """Every cell of a matrix.json, with its section: id, section, result, time, startup."""
    return [{**r, "section": t["section"]} for t in matrix.get("tables", []) for r in t.get("results", [])]


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Cell count, results, time sum and slowest cell, and the median and slowest start-up to the first
    request (cells whose capture shows none are left out of the start-up figures)."""
    ran = [r for r in rows if r.get("result") not in ("notrun", "expunged")]
    out: dict[str, Any] = {"cells": len(ran), "results": {}}
    for r in ran:
        out["results"][r.get("result", "?")] = out["results"].get(r.get("result", "?"), 0) + 1
    times = [(float(r.get("time") or 0.0), r) for r in ran]
    out["cell_time_sum"] = sum(t for t, _ in times)
    if times:
        t, r = max(times, key=lambda x: x[0])
        out["cell_time_median"] = statistics.median(t for t, _ in times)
        out["slowest_cell"] = {"id": r["id"], "section": r["section"], "time": t}
    starts = [(float(r["startup"]["first_request"]), r) for r in ran if "first_request" in (r.get("startup") or {})]
    if starts:
        t, r = max(starts, key=lambda x: x[0])
        out["startup_median"] = statistics.median(t for t, _ in starts)
        out["startup_slowest"] = {"id": r["id"], "section": r["section"], "time": t}
    return out


def run(group: str = "quick", jobs: int = 2, exclude: str = "") -> dict[str, Any]:
    """Run `wirecheck check --plain -g GROUP [-x EXCLUDE] -j JOBS` from the repository root (scenario
    settings are relative to it) into a temporary results directory; the wall time and the summary of
    its matrix."""
    wirecheck = Path(sys.executable).parent / "wirecheck"
    argv = [str(wirecheck)] if wirecheck.exists() else [sys.executable, "-c", "from harness.cli import main; main()"]
    with tempfile.TemporaryDirectory(prefix="wc-bench-scenarios-") as tmp:
        cmd = argv + ["check", "--plain", "-g", group, *(["-x", exclude] if exclude else []), "-j", str(jobs),
                      "--results", tmp]
        t0 = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        wall = time.monotonic() - t0
        try:
            matrix = json.loads((Path(tmp) / "matrix.json").read_text())
        except (OSError, ValueError):
            matrix = {}
    summary = summarize(cells(matrix))
    passed = [line for line in proc.stdout.splitlines() if line.startswith("Passed all")]
    return {"group": group + (f" -x {exclude}" if exclude else ""), "jobs": jobs, "wall": wall, "status": proc.returncode, "passed_lines": len(passed),
            "tail": proc.stdout.splitlines()[-20:] + proc.stderr.splitlines()[-10:], **summary}


def format_result(r: dict[str, Any]) -> str:
    results = ", ".join(f"{n} {k}" for k, n in sorted(r["results"].items())) or "none"
    lines = [f"wirecheck check -g {r['group']} -j {r['jobs']}, a fresh results directory (no check.time history)",
             f"  wall time                        {r['wall']:8.1f} s   exit status {r['status']}",
             f"  cells                            {r['cells']:8d}     {results}",
             f"  cell time, sum                   {r['cell_time_sum']:8.1f} s"]
    if "cell_time_median" in r:
        s = r["slowest_cell"]
        lines += [f"  cell time, median                {r['cell_time_median']:8.2f} s",
                  f"  cell time, slowest               {s['time']:8.2f} s   {s['id']} ({s['section']})"]
    if "startup_median" in r:
        s = r["startup_slowest"]
        lines += [f"  start-up to first request, median{r['startup_median']:8.2f} s",
                  f"  start-up to first request, max   {s['time']:8.2f} s   {s['id']} ({s['section']})"]
    if r["status"] != 0:
        lines += ["  the run did not pass; its last lines:"] + ["    " + x for x in r["tail"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scenarios", description=__doc__.split("\n\n")[0])
    p.add_argument("--group", default="quick")
    p.add_argument("--jobs", type=int, default=2)
    a = p.parse_args(argv)
    r = run(a.group, a.jobs)
    print(format_result(r))
    return 0 if r["status"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
