"""Expected-result lists in Samba selftest format: knownfail(.d) and flapping(.d).

One Python regex per line, matched with `re.match` (anchored at the start only); blank lines and lines
starting with `#` ignored; text after the first `#` is the reason; a directory means every file in it
(files ending in `~` ignored). The string matched is the cell's list id: `<cell id>(<section>)`, for
example `tcp/003[ipv6-loss](tcp)`; write `^tcp/003\\[` or `^tcp/003.*\\(quic\\)$`.

Verdicts (harness.runner.outcome): a failing cell that matches knownfail is an expected failure; a
passing one is an unexpected success and fails the run. A failing cell that matches flapping is
ignored; a passing one is a pass.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class ListError(ValueError):
    pass


@dataclass
class Entry:
    pattern: re.Pattern
    reason: str
    where: str


@dataclass
class ExpectedList:
    name: str
    entries: list[Entry]

    def match(self, list_id: str) -> Entry | None:
        for e in self.entries:
            if e.pattern.match(list_id):
                return e
        return None


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and not p.name.endswith("~"))
    return [path] if path.exists() else []


def load(name: str, paths: Sequence[str | Path]) -> ExpectedList:
    entries: list[Entry] = []
    problems = []
    for base in paths:
        for f in _files(Path(base)):
            for n, raw in enumerate(f.read_text().splitlines(), 1):
                line = raw.strip()
                if not line or line.startswith("#"):
                    continue
                regex, _, reason = line.partition("#")
                try:
                    entries.append(Entry(re.compile(regex.strip()), reason.strip(), f"{f}:{n}"))
                except re.error as e:
                    problems.append(f"{f}:{n}:{(e.pos or 0) + 1}: bad regex {regex.strip()!r}: {e.msg}")
    if problems:
        raise ListError("\n".join(problems))
    return ExpectedList(name, entries)


def list_id(cell_id: str, section: str) -> str:
    return f"{cell_id}({section})"
