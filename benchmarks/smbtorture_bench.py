"""smbtorture's smb2.bench suites against `wirecheck serve` and Samba's smbd, in one run.

    python -m benchmarks.smbtorture_bench [--seconds 10] [--tests echo oplock1 ...] [--json FILE]

smbtorture 4.17 offers three: ``echo`` (ECHO round trips, 4 connections), ``oplock1`` (a batch-oplock
open broken by a second client's open, then closes: the break/acknowledge path) and
``path-contention-shared`` (4 connections opening and closing one file).  Each runs for
``torture:timelimit`` seconds against a fresh server of each kind, one server at a time (so they
never compete for the two cores), and reports:

- ops/s: smbtorture's own figure (``echo`` and ``path-contention-shared``: the mean of its
  per-second ``num/s`` reports of echo, resp. open; ``oplock1``: its last ``ops/second`` line);
- server CPU per op: the server's user + system CPU seconds over the run, from /proc/<pid>/stat
  (fields 14-17: its own and its reaped children's; for smbd, which forks a process per
  connection, the live descendants are added), divided by ops/s x seconds;
- ratios ours / smbd (ops/s: higher is better; CPU per op: lower is better).

smbd: ``ea support`` and ``store dos attributes`` on, otherwise defaults; ours: `wirecheck serve`.
Benchmarks never assert a speed; tests/smb/test_bench_smbtorture.py only checks that a short run
prints every row.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.smb import OurServerProcess
from harness.peers.smb_samba import PASSWORD, USER, Smbd, need

TESTS = ("echo", "oplock1", "path-contention-shared")
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Result:
    test: str
    server: str
    ops_per_s: float
    seconds: float
    cpu_s: float

    @property
    def cpu_us_per_op(self) -> float:
        ops = self.ops_per_s * self.seconds
        return self.cpu_s / ops * 1e6 if ops else float("inf")


def _stat_cpu(pid: int) -> tuple[int, float]:
    """(parent pid, CPU seconds of the process and its reaped children) from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "; field 3 is fields[0]
    return int(fields[1]), sum(int(f) for f in fields[11:15]) / CLK_TCK


def tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and every live descendant (each including its reaped children)."""
    procs: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                procs[int(entry)] = _stat_cpu(int(entry))
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
    keep, total, frontier = {root}, 0.0, [root]
    while frontier:
        pid = frontier.pop()
        total += procs.get(pid, (0, 0.0))[1]
        children = [p for p, (ppid, _) in procs.items() if ppid == pid and p not in keep]
        keep.update(children)
        frontier += children
    return total


def parse_rate(test: str, output: str) -> float:
    """smbtorture's ops/s for ``test`` (see the module docstring); ValueError when it printed none."""
    if test == "oplock1":
        rates = re.findall(r"([\d.]+) ops/second", output)
        if not rates:
            raise ValueError(f"smbtorture printed no 'ops/second' for {test}")
        return float(rates[-1])
    name = "echo" if test == "echo" else "open"
    rates = [float(r) for r in re.findall(rf"\b{name}\[num/s=(\d+)", output)]
    if not rates:
        raise ValueError(f"smbtorture printed no '{name}[num/s=' for {test}")
    return sum(rates) / len(rates)


def run_test(test: str, port: int, pid: int, seconds: int, server: str) -> Result:
    program = need("smbtorture", "samba-testsuite")
    before = tree_cpu(pid)
    began = time.monotonic()
    # smbtorture makes a smbtortureXXXXXX directory where it runs: not in the caller's checkout
    with tempfile.TemporaryDirectory(prefix="wirecheck-smbtorture-") as cwd:
        res = subprocess.run([program, "//127.0.0.1/share", "-p", str(port), "-U", f"{USER}%{PASSWORD}",
                              "--target=samba3", f"--option=torture:timelimit={seconds}", f"smb2.bench.{test}"],
                             capture_output=True, text=True, timeout=seconds * 10 + 120, cwd=cwd)
    elapsed = time.monotonic() - began
    if res.returncode != 0 or f"success: {test}" not in res.stdout:
        raise RuntimeError(f"smb2.bench.{test} against {server}: exit {res.returncode}\n{res.stdout[-2000:]}"
                           f"{res.stderr[-1000:]}")
    time.sleep(0.5)  # smbd reaps the per-connection children it forked; their CPU joins its cutime
    cpu = tree_cpu(pid) - before
    return Result(test, server, parse_rate(test, res.stdout + res.stderr), min(float(seconds), elapsed), cpu)


def run(tests: list[str], seconds: int) -> list[tuple[Result, Result]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="torturebench-") as tmp:
        for test in tests:
            tree = Path(tmp) / test
            smbd = Smbd(tree / "smbd", signing="default", extra_global="ea support = yes\nstore dos attributes = yes",
                        min_protocol=None)
            try:
                theirs = run_test(test, smbd.port, smbd.proc.pid, seconds, "smbd")
            finally:
                smbd.stop()
            (tree / "ours").mkdir()
            ours_server = OurServerProcess(tree / "ours")
            try:
                ours = run_test(test, ours_server.port, ours_server.proc.pid, seconds, "wirecheck")
            finally:
                ours_server.stop()
            rows.append((theirs, ours))
    return rows


def table(rows: list[tuple[Result, Result]]) -> str:
    lines = [f"{'smb2.bench':<24}{'smbd ops/s':>12}{'ours ops/s':>12}{'ratio':>8}"
             f"{'smbd CPU us/op':>16}{'ours CPU us/op':>16}{'ratio':>8}"]
    for theirs, ours in rows:
        speed = ours.ops_per_s / theirs.ops_per_s if theirs.ops_per_s else float("inf")
        cost = ours.cpu_us_per_op / theirs.cpu_us_per_op if theirs.cpu_us_per_op else float("inf")
        lines.append(f"{theirs.test:<24}{theirs.ops_per_s:>12.1f}{ours.ops_per_s:>12.1f}{speed:>7.2f}x"
                     f"{theirs.cpu_us_per_op:>16.1f}{ours.cpu_us_per_op:>16.1f}{cost:>7.2f}x")
    lines.append("ratio = ours / smbd: ops/s higher is better, CPU per op lower is better")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=10, help="torture:timelimit of each run")
    ap.add_argument("--tests", nargs="*", default=list(TESTS), choices=TESTS)
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    rows = run(args.tests, args.seconds)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps([{**asdict(r), "cpu_us_per_op": r.cpu_us_per_op} for row in rows for r in row],
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
