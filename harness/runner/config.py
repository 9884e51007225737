"""Sections (xfstests `local.config` style): `[name]` then `VAR=value` lines.

Values carry over into later sections, as in xfstests. Variables wirecheck reads itself:
AREAS (scenario areas this section runs, space-separated; default all) and the rest are exported to
scenarios as `${NAME}` (for example TRANSPORT=quic for `requires: {transports: [${TRANSPORT}]}`).
A file without any `[section]` is one unnamed section: results go straight into the results dir.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

SECTION_RE = re.compile(r"^\[([A-Za-z0-9_-]+)\]\s*$")
ASSIGN_RE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


class ConfigError(ValueError):
    pass


@dataclass
class Section:
    name: str | None                 # None: no sections (results not in a subdirectory)
    vars: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name or "global"

    @property
    def areas(self) -> list[str] | None:
        text = self.vars.get("AREAS", "").strip()
        return text.split() if text else None


def _unquote(v: str) -> str:
    v = v.strip()
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
        return v[1:-1]
    return v


def parse(text: str, source: str = "sections.conf") -> list[Section]:
    sections: list[Section] = []
    current: dict[str, str] = {}
    top: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        m = SECTION_RE.match(line)
        if m:
            if any(s.name == m.group(1) for s in sections):
                raise ConfigError(f"{source}:{n}:1: section [{m.group(1)}] defined twice")
            current = dict(sections[-1].vars if sections else top)   # values carry over
            sections.append(Section(m.group(1), current))
            continue
        m = ASSIGN_RE.match(line)
        if not m:
            raise ConfigError(f"{source}:{n}:1: expected [section] or NAME=value, got {raw.strip()!r}")
        current_target = sections[-1].vars if sections else top
        current_target[m.group(1)] = _unquote(m.group(2))
    return sections or [Section(None, top)]


def load(path: str | Path | None) -> list[Section]:
    if path is None or not Path(path).exists():
        return [Section(None, {})]
    return parse(Path(path).read_text(), str(path))


def choose(sections: list[Section], only: list[str], skip: list[str]) -> list[Section]:
    names = [s.name for s in sections]
    for name in only + skip:
        if name not in names:
            raise ConfigError(f"section {name!r} is not in the config (sections: {', '.join(map(str, names))})")
    out = [s for s in sections if (not only or s.name in only) and s.name not in skip]
    return out
