"""The strict bookkeeping of smbtorture runs: known failures, flapping tests, per-suite floors.

Why strict: a regex over a whole suite hides every test in it, and a list that tolerates passes never
shrinks.  So each file names tests one by one (full names, as smbtorture reports them), each with its
reason; a known failure that passes is an error until its line is removed; every test smbtorture
knows for the suite must be reported (a crash or an early stop is not a pass); the exit status must
agree with the outcomes; and the number of passing tests may not fall below the suite's floor in
floors.tsv (raised when a test is fixed).  The README's interop table is generated from floors.tsv.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
KNOWNFAIL = HERE / "knownfail"
FLAPPING = HERE / "flapping"
FLOORS = HERE / "floors.tsv"

_NAME = re.compile(r"^smb2\.[\w.-]+(?: [\w.-]+)*$")  # full smbtorture test names ("copy-chunk streams" has a space)


class ListError(ValueError):
    """A malformed list file: the message starts with file:line."""


def read_list(path: Path) -> dict[str, str]:
    """{full test name: reason} from a knownfail/flapping file."""
    entries: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, reason = line.partition("  # ")
        name, reason = name.strip(), reason.strip()
        if not sep or not reason:
            raise ListError(f"{path}:{n}: each entry needs its reason after '  # '")
        if not _NAME.match(name):
            raise ListError(f"{path}:{n}: {name!r} is not one full smbtorture test name (no patterns)")
        if name in entries:
            raise ListError(f"{path}:{n}: {name} is listed twice")
        entries[name] = reason
    return entries


@dataclass(frozen=True)
class Floor:
    suite: str
    min_passed: int
    max_skipped: int


def read_floors(path: Path = FLOORS) -> dict[str, Floor]:
    """floors.tsv: suite, min passed, max skipped (tab-separated, '#' comments, a header line)."""
    floors: dict[str, Floor] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#") or line.startswith("suite\t"):
            continue
        cols = line.split("\t")
        if len(cols) != 3 or not cols[1].isdigit() or not cols[2].isdigit():
            raise ListError(f"{path}:{n}: want 'suite<TAB>min passed<TAB>max skipped', got {line!r}")
        if cols[0] in floors:
            raise ListError(f"{path}:{n}: suite {cols[0]} is listed twice")
        floors[cols[0]] = Floor(cols[0], int(cols[1]), int(cols[2]))
    return floors


def parse(output: str) -> dict[str, str]:
    """{test name: success|failure|error|skip|xfail} from smbtorture's subunit-like lines."""
    results = {}
    for line in output.splitlines():
        match = re.match(r"^(success|failure|error|skip|xfail): (.+?)(?: \[.*)?$", line)
        if match:
            results[match.group(2).strip()] = match.group(1)
    return results


def known_tests(listing: str, suite: str) -> list[str]:
    """The test names of `suite` (relative, as in results) from `smbtorture --list` (NAME.LEAF.LEAF)."""
    names = []
    for line in listing.splitlines():
        line = line.strip()
        if not line.startswith(suite + "."):
            continue
        rest = line[len(suite) + 1:]
        parts = rest.split(".")
        if len(parts) >= 2 and parts[-1] == parts[-2]:
            rest = ".".join(parts[:-1])
        names.append(rest)
    return names


def smbtorture_listing(program: str) -> str:
    return subprocess.run([program, "--list"], capture_output=True, text=True, timeout=60).stdout


@dataclass
class SuiteVerdict:
    suite: str
    passed: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)          # listed in knownfail and failed
    skipped: list[str] = field(default_factory=list)
    flapping: list[str] = field(default_factory=list)       # listed in flapping (any outcome)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.suite}: {len(self.passed)} passed / {len(self.known)} known failures / "
                f"{len(self.skipped)} skipped" + (f" / {len(self.flapping)} flapping" if self.flapping else ""))


def judge(suite: str, results: dict[str, str], returncode: int, expected: list[str], knownfail: dict[str, str],
          flapping: dict[str, str], floor: Floor | None) -> SuiteVerdict:
    """Every way the run can be wrong, as a list of problems (empty: the suite is as recorded)."""
    v = SuiteVerdict(suite)
    if floor is None:
        v.problems.append(f"{suite} has no floor in {FLOORS.name} (add: {suite}<TAB>min passed<TAB>max skipped)")
    for name, outcome in results.items():
        full = f"{suite}.{name}"
        if full in flapping:
            v.flapping.append(full)
        elif outcome == "success":
            (v.problems.append(f"now passes, remove it from knownfail (and raise the floor): {full}")
             if full in knownfail else v.passed.append(full))
        elif outcome in ("failure", "error"):
            (v.known if full in knownfail else v.problems).append(
                full if full in knownfail else f"unexpected {outcome}: {full}")
        elif outcome == "skip":
            v.skipped.append(full)
            if full in knownfail:
                v.problems.append(f"skipped, so not a known failure (remove it from knownfail): {full}")
        else:
            v.problems.append(f"unexpected outcome {outcome}: {full}")
    missing = [n for n in expected if n not in results]
    if missing:
        v.problems.append(f"smbtorture did not report {len(missing)} test(s) of {suite}: {', '.join(missing[:10])}")
    failed = any(o in ("failure", "error") for o in results.values())
    if returncode != (1 if failed else 0):
        v.problems.append(f"smbtorture exited with status {returncode} after "
                          f"{'failures' if failed else 'no failure'} (expected {1 if failed else 0})")
    for listed in (knownfail, flapping):
        unknown = [n for n in listed if n.startswith(suite + ".") and n[len(suite) + 1:] not in expected]
        v.problems += [f"listed, but not a test this run of smbtorture has: {n}" for n in unknown]
    if floor is not None:
        if len(v.passed) < floor.min_passed:
            v.problems.append(f"{suite}: {len(v.passed)} passed, below the floor of {floor.min_passed} ({FLOORS.name})")
        if len(v.skipped) > floor.max_skipped:
            v.problems.append(f"{suite}: {len(v.skipped)} skipped, more than the {floor.max_skipped} recorded "
                              f"({FLOORS.name})")
    return v
