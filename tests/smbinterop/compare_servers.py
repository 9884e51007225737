"""smbtorture suite by suite against Samba's smbd and against `wirecheck serve`, in one run.

Why: a floor of our own says what we pass, not how far that is from a real file server.  This run
puts the two side by side on the same machine and the same smbtorture: for every suite of
``SUITES`` (the 38 suites of the server-semantics comparison) it starts a fresh smbd and a fresh
`wirecheck serve`, each with an empty share, runs the suite against each (both at once, so that both
see the same machine load), and prints::

    suite                      smbd passed/ran   wirecheck passed/ran

"ran" counts the tests smbtorture reported as passed, failed or errored (skips are not run).

smbd is configured as a person would set it up for a fair comparison: ``ea support = yes`` and
``store dos attributes = yes``, otherwise Samba's defaults (no VFS modules, default signing and
dialects; for smb2.replay and smb2.multichannel ``server multi channel support = yes``, Samba 4.17's
default on Linux, said explicitly); only the state directories, the port and the user come from the
test tree.  Our server is ``wirecheck serve --share share=DIR --user ...``; the durable-handle,
session, replay and multichannel suites get ``--multichannel`` and a continuously available share
(``:ca``), as the strict suite tests run them.  Every suite runs whole against both servers
(smb2.replay too, which the strict test runs test by test: the comparison counts what each server
passes of all of it).

``python tests/smbinterop/compare_servers.py --write`` (``make interop-compare``) stores the rows in
``compare.tsv`` beside this file and rewrites the README's comparison table from it
(scripts/interop_figures.py); ``--suites`` narrows a run.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import torture_lists as tl  # noqa: E402

from harness.peers.smb_samba import PASSWORD, USER, Smbd, free_port, launch_logged, need, stop_group  # noqa: E402

COMPARE_TSV = HERE / "compare.tsv"

SUITES = ["smb2.connect", "smb2.rw", "smb2.credits", "smb2.read", "smb2.getinfo", "smb2.setinfo", "smb2.ioctl",
          "smb2.dir", "smb2.create", "smb2.lock", "smb2.oplock", "smb2.lease", "smb2.notify", "smb2.compound",
          "smb2.compound_find", "smb2.streams", "smb2.rename", "smb2.sharemode", "smb2.session",
          "smb2.durable-open", "smb2.durable-v2-open", "smb2.delete-on-close-perms", "smb2.timestamps",
          "smb2.fileid", "smb2.maximum_allowed", "smb2.sdread", "smb2.acls", "smb2.ea", "smb2.dosmode",
          "smb2.tcon", "smb2.mkdir", "smb2.deny", "smb2.charset", "smb2.openattr", "smb2.winattr",
          "smb2.session-id", "smb2.replay", "smb2.multichannel"]
#: Suites our strict tests run with multichannel and a continuously available share.
RECONNECT = {"smb2.durable-open", "smb2.durable-v2-open", "smb2.session", "smb2.replay", "smb2.multichannel"}
SMBD_GLOBAL = "ea support = yes\nstore dos attributes = yes"
#: smbd's settings for a suite beyond SMBD_GLOBAL.  Multichannel is on by default in Samba 4.17 on Linux
#: (testparm -sv: ``server multi channel support = Yes``); said explicitly so that the comparison does
#: not depend on the default of another Samba build.
SMBD_SUITE_GLOBAL = {"smb2.replay": "server multi channel support = yes",
                     "smb2.multichannel": "server multi channel support = yes"}
TIMEOUT = 600.0  # seconds per suite and server (smb2.lease takes ~200 s here: it waits out 35 s break timeouts)
# smbd 4.17 hung once in smb2.notify (9 of 23 reported at the 600 s timeout; it takes ~100 s otherwise):
# its counts are the reference, never judged, so it gets less time to stall a whole run.
SMBD_TIMEOUT = 300.0


@dataclass(frozen=True)
class Count:
    """One suite against one server: tests passed, tests run, and how the run ended."""

    passed: int
    ran: int
    note: str = ""  # "timeout", "exit N without results", ...

    def cell(self) -> str:
        return f"{self.passed}/{self.ran}" + (f" ({self.note})" if self.note else "")


def count(output: str, returncode: int | None) -> Count:
    results = tl.parse(output)
    passed = sum(o == "success" for o in results.values())
    ran = sum(o in ("success", "failure", "error", "xfail") for o in results.values())
    note = ""
    if returncode is None:  # name the test it hung in: the next thing anyone asks
        started = [line[6:].strip() for line in output.splitlines() if line.startswith("test: ")]
        note = f"timeout in {started[-1]}" if started and started[-1] not in results else "timeout"
    return Count(passed, ran, note)


def smbtorture(port: int, suite: str, timeout: float = TIMEOUT) -> Count:
    program = need("smbtorture", "samba-testsuite")
    # smbtorture makes a smbtortureXXXXXX directory where it runs: not in the caller's checkout
    with tempfile.TemporaryDirectory(prefix="wirecheck-smbtorture-") as cwd:
        proc = subprocess.Popen([program, "//127.0.0.1/share", "-p", str(port), "-U", f"{USER}%{PASSWORD}",
                                 "--target=samba3", suite], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True, cwd=cwd)
        try:
            out, _ = proc.communicate(timeout=timeout)
            return count(out, proc.returncode)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate(timeout=30)
            return count(out, None)


class OurServe:
    """`wirecheck serve` as a person runs it, in its own process (its CPU time is its own)."""

    def __init__(self, tree: Path, reconnect: bool = False) -> None:
        share = tree / "share"
        share.mkdir(parents=True)
        self.port = free_port()
        wirecheck = Path(sys.executable).with_name("wirecheck")
        argv = [str(wirecheck) if wirecheck.exists() else "wirecheck", "serve",
                "--listen", f"tcp:127.0.0.1:{self.port}",
                "--share", f"share={share}" + (":ca" if reconnect else ""), "--user", f"{USER}:{PASSWORD}"]
        if reconnect:
            argv.append("--multichannel")
        self.proc, self.log = launch_logged(argv, tree / "serve.out", self.port)

    def stop(self) -> None:
        stop_group(self.proc)
        self.log.close()


def start_smbd(tree: Path, suite: str = "") -> Smbd:
    extra = "\n".join(filter(None, (SMBD_GLOBAL, SMBD_SUITE_GLOBAL.get(suite, ""))))
    return Smbd(tree, signing="default", extra_global=extra, min_protocol=None)


def run_smbd(suite: str, tree: Path, timeout: float) -> Count:
    server = start_smbd(tree / "smbd", suite)
    try:
        return smbtorture(server.port, suite, timeout)
    finally:
        server.stop()


def run_ours(suite: str, tree: Path, timeout: float) -> Count:
    server = OurServe(tree / "ours", reconnect=suite in RECONNECT)
    try:
        return smbtorture(server.port, suite, timeout)
    finally:
        server.stop()


def compare(suite: str, tree: Path, timeout: float = TIMEOUT) -> tuple[Count, Count]:
    """smbd's and our count for ``suite``, both servers run at the same time."""
    with ThreadPoolExecutor(2) as pool:
        theirs = pool.submit(run_smbd, suite, tree, min(timeout, SMBD_TIMEOUT))
        ours = pool.submit(run_ours, suite, tree, timeout)
        return theirs.result(), ours.result()


def row(suite: str, theirs: Count, ours: Count) -> str:
    return f"{suite:<28} smbd {theirs.cell():<12} wirecheck {ours.cell()}"


def write_tsv(rows: dict[str, tuple[Count, Count]], path: Path = COMPARE_TSV) -> None:
    lines = ["# smbtorture against smbd and against `wirecheck serve` in one run (tests/smbinterop/compare_servers.py,",
             "# `make interop-compare`); the README's comparison table is generated from this file.",
             "suite\tsmbd passed\tsmbd ran\twirecheck passed\twirecheck ran\tnote"]
    for suite in SUITES:
        if suite not in rows:
            continue
        theirs, ours = rows[suite]
        notes = "; ".join(f"{who}: {c.note}" for who, c in (("smbd", theirs), ("wirecheck", ours)) if c.note)
        lines.append(f"{suite}\t{theirs.passed}\t{theirs.ran}\t{ours.passed}\t{ours.ran}\t{notes}")
    path.write_text("\n".join(lines) + "\n")


def read_tsv(path: Path = COMPARE_TSV) -> dict[str, tuple[Count, Count]]:
    rows: dict[str, tuple[Count, Count]] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#") or line.startswith("suite\t"):
            continue
        cols = line.split("\t")
        if len(cols) != 6 or not all(c.isdigit() for c in cols[1:5]):
            raise tl.ListError(f"{path}:{n}: want suite, 4 counts and a note (tab-separated), got {line!r}")
        rows[cols[0]] = (Count(int(cols[1]), int(cols[2])), Count(int(cols[3]), int(cols[4])))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suites", nargs="*", default=SUITES, help="a subset of the suites")
    ap.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds per suite and server")
    ap.add_argument("--write", action="store_true", help=f"store the rows in {COMPARE_TSV.name} and regenerate "
                                                         "the README table (needs every suite)")
    args = ap.parse_args(argv)
    unknown = [s for s in args.suites if s not in SUITES]
    if unknown:
        ap.error(f"not a suite of the comparison: {', '.join(unknown)}")
    if args.write and set(args.suites) != set(SUITES):
        ap.error("--write needs the whole run (no --suites)")
    rows: dict[str, tuple[Count, Count]] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="wirecheck-compare-") as tmp:
        for suite in args.suites:
            t0 = time.monotonic()
            rows[suite] = compare(suite, Path(tmp) / suite, args.timeout)
            print(row(suite, *rows[suite]) + f"   [{time.monotonic() - t0:.0f} s]", flush=True)
    total = [sum(c.passed for c, _ in rows.values()), sum(c.passed for _, c in rows.values())]
    below = sum(ours.passed < theirs.passed for theirs, ours in rows.values())
    print(f"{len(rows)} suites: smbd {total[0]} passing, wirecheck {total[1]} passing, "
          f"{below} suites below smbd ({time.monotonic() - started:.0f} s)")
    if args.write:
        write_tsv(rows)
        subprocess.run([sys.executable, str(HERE.parents[1] / "scripts" / "interop_figures.py")], check=True,
                       timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
