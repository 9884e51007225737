"""Which cells run: TESTS (ids, cell ids, globs), -g/-x groups, -e/-E/-X exclusions, and their order
(xfstests semantics).

No TESTS and no -g means `-g quick` (wirecheck's default job). `-g area/group` takes the group from
one area only. Tests named by -e/-E/-X are shown as `[expunged]` and not counted; those left out by -x
are simply not selected. `-X NAME` reads the file NAME inside each area directory (bare `NNN` per line,
as xfstests reads `tests/<area>/NAME`). Order: sorted by id (default), the command line's order
(`--exact-order`), or shuffled (`-r`, seeded so that a run can be repeated).
"""
from __future__ import annotations

import fnmatch
import random
from dataclasses import dataclass
from pathlib import Path

from harness.scenario import Cell, Scenario


@dataclass
class Selection:
    cells: list[tuple[Cell, bool]]          # (cell, expunged)
    unknown: list[str]


def _split(values: tuple[str, ...] | list[str]) -> list[str]:
    out: list[str] = []
    for v in values:
        out += [x for x in v.replace(",", " ").split() if x]
    return out


def read_exclude_file(path: str) -> list[str]:
    out = []
    for raw in Path(path).read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def read_area_exclude_files(scenarios_dir: str | Path, name: str) -> list[str]:
    """`-X NAME`: `<scenarios>/<area>/NAME` of every area, bare ids (`001`, `001[ipv6]`) made `area/001`."""
    out = []
    for f in sorted(Path(scenarios_dir).glob(f"*/{name}")):
        if f.is_file():
            out += [f"{f.parent.name}/{t}" for t in read_exclude_file(str(f))]
    return out


def _in_groups(scen: Scenario, groups: list[str]) -> bool:
    for g in groups:
        area, _, name = g.rpartition("/")
        if (not area or area == scen.area) and (name == "all" or name in scen.groups):
            return True
    return False


def _matches(pattern: str, cell: Cell) -> bool:
    if pattern in (cell.id, cell.scenario.id):
        return True
    if "[" in pattern and pattern.endswith("]"):
        # a cell id or a cell glob: tcp/003[ipv6-*] (the glob applies to the label inside the brackets)
        base, label = pattern[:-1].split("[", 1)
        return fnmatch.fnmatchcase(cell.scenario.id, base) and bool(cell.labels) \
            and fnmatch.fnmatchcase(cell.label, label)
    return fnmatch.fnmatchcase(cell.scenario.id, pattern)


def select(scenarios: list[Scenario], tests: list[str], groups: list[str], exclude_groups: list[str],
           exclude_tests: list[str], areas: list[str] | None = None, *, order: str = "sorted",
           seed: int | None = None) -> Selection:
    """order: "sorted" (by id, xfstests' default), "exact" (TESTS in command-line order, then groups'
    cells sorted) or "random" (shuffled with `seed`)."""
    tests, groups, exclude_groups = _split(tests), _split(groups), _split(exclude_groups)
    excluded = _split(exclude_tests)
    if not tests and not groups:
        groups = ["quick"]
    all_cells = [c for s in scenarios for c in s.cells()]
    chosen: list[Cell] = []
    unknown = []
    if tests:
        for t in tests:
            hits = [c for c in all_cells if _matches(t, c)]
            if not hits:
                unknown.append(t)
            chosen += [c for c in hits if c not in chosen]
    if groups:
        chosen += [c for c in all_cells if _in_groups(c.scenario, groups) and c not in chosen]
    if exclude_groups:
        chosen = [c for c in chosen if not _in_groups(c.scenario, exclude_groups)]
    if areas is not None:
        chosen = [c for c in chosen if c.scenario.area in areas]
    pos = {id(c): i for i, c in enumerate(all_cells)}
    if order != "exact":   # exact: already in command-line order (each pattern's hits in file order)
        chosen.sort(key=lambda c: (c.scenario.id, pos[id(c)]))
        if order == "random":
            random.Random(seed).shuffle(chosen)
    out = [(c, any(_matches(x, c) for x in excluded)) for c in chosen]
    return Selection(out, unknown)
