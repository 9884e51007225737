"""Scenarios and cells: the loaded form of a scenario file, matrix expansion and `${var}` substitution.

A scenario with a matrix is many cells, one per combination of axis values not excluded; each cell
runs alone (own socket directory, own pcap). Cell ids follow pytest parametrisation:
`quic/012[psk-v2-ipv6]` (labels in axis order, joined by `-`); a scenario without a matrix is one cell
whose id is the scenario id.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from .marks import LDict, LList, LStr

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.-]*)\}")


@dataclass
class Scenario:
    id: str
    path: str
    description: str
    groups: list[str]
    data: Any                                  # the marked YAML document
    requires: dict = field(default_factory=dict)
    axes: dict[str, dict[str, Any]] = field(default_factory=dict)   # axis -> label -> value
    excludes: list[dict[str, list[str]]] = field(default_factory=list)
    timeout: float = 120.0
    step_timeout: float = 30.0
    line: int = 1
    missing_ops: set[str] = field(default_factory=set)   # operations of capabilities not landed yet

    @property
    def area(self) -> str:
        return self.id.split("/", 1)[0]

    @property
    def number(self) -> str:
        return self.id.split("/", 1)[1]

    def cells(self) -> list[Cell]:
        if not self.axes:
            return [Cell(self, {}, {})]
        names = list(self.axes)
        out = []
        for labels in itertools.product(*(list(self.axes[n]) for n in names)):
            chosen = dict(zip(names, labels, strict=True))
            if any(all(chosen.get(k) in v for k, v in ex.items()) for ex in self.excludes):
                continue
            out.append(Cell(self, chosen, {n: self.axes[n][lab] for n, lab in chosen.items()}))
        return out


@dataclass
class Cell:
    scenario: Scenario
    labels: dict[str, str]
    values: dict[str, Any]

    @property
    def label(self) -> str:
        return "-".join(self.labels.values())

    @property
    def id(self) -> str:
        """`tcp/001` or `tcp/001[ipv4-loss]` (console, pytest, results)."""
        return f"{self.scenario.id}[{self.label}]" if self.labels else self.scenario.id

    @property
    def file_stem(self) -> str:
        """`001` or `001.ipv4-loss`: results files are `<area>/<stem>.full` (shell-safe, no brackets)."""
        return f"{self.scenario.number}.{self.label}" if self.labels else self.scenario.number

    def variables(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Matrix values, then the scenario's `vars:` (which may use them), then `extra`."""
        env: dict[str, Any] = dict(extra or {})
        env.update(self.values)
        for name, value in (self.scenario.data.get("vars") or {}).items():
            env[name] = substitute(value, env)
        return env


def expect_kind(item: dict) -> tuple[str, Any]:
    """(kind, arguments) of an `expect:` item, leaving out its `when:`."""
    (kind, raw), = ((k, v) for k, v in item.items() if k != "when")
    return kind, raw


def expect_applies(item: dict, cell: Cell, variables: dict[str, Any]) -> bool:
    """Whether an `expect:` item's `when:` holds for this cell: every name's label (matrix axis) or value
    (section variable, `vars:`; unset = "") is one of the listed values, compared as text. A list of
    such mappings holds when any of them does."""
    when = item.get("when")
    if isinstance(when, list):
        return any(expect_applies({"when": w}, cell, variables) for w in when)
    for name, want in (when or {}).items():
        have = cell.labels[name] if name in cell.labels else variables.get(name, "")
        wanted = want if isinstance(want, list) else [want]
        if str("" if have is None else have) not in {str("" if w is None else w) for w in wanted}:
            return False
    return True


def label_of(value: Any) -> str:
    """A matrix value as a cell label: `5%` -> `5pct`, `0.5` -> `0_5`, True -> `true` (ids stay shell-safe)."""
    text = str(value).lower() if isinstance(value, bool) or value is None else str(value)
    text = text.replace("%", "pct").replace(".", "_").replace(":", "_").replace("/", "_").replace(" ", "_")
    return re.sub(r"[^A-Za-z0-9_+-]", "", text) or "_"


class Unresolved(KeyError):
    pass


def _lookup(name: str, env: dict[str, Any]) -> Any:
    if name in env:
        return env[name]
    head, _, rest = name.partition(".")
    node: Any = env.get(head, _MISSING)
    for part in rest.split(".") if rest else []:
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return _MISSING
    return node


_MISSING = object()


def substitute(value: Any, env: dict[str, Any], strict: bool = False) -> Any:
    """Replace `${name}` (and `${name.field}`) in strings, recursively, keeping YAML marks.

    A string that is exactly one `${name}` takes the variable's own type (a number stays a number).
    Unknown names stay as they are unless `strict` (then Unresolved is raised), because section
    variables and results of earlier steps are only known when the cell runs.
    """
    if isinstance(value, str):
        m = _VAR.fullmatch(value)
        if m:
            got = _lookup(m.group(1), env)
            if got is not _MISSING:
                return got
            if strict:
                raise Unresolved(m.group(1))
            return value

        def one(m: re.Match) -> str:
            got = _lookup(m.group(1), env)
            if got is _MISSING:
                if strict:
                    raise Unresolved(m.group(1))
                return m.group(0)
            return "" if got is None else str(got)
        out = _VAR.sub(one, value)
        if isinstance(value, LStr):
            out = LStr(out)
            out.mark = value.mark
        return out
    if isinstance(value, dict):
        new = LDict() if isinstance(value, LDict) else {}
        for k, v in value.items():
            new[k] = substitute(v, env, strict)
        if isinstance(value, LDict) and isinstance(new, LDict):
            new.mark, new.key_marks, new.value_marks = value.mark, value.key_marks, value.value_marks
        return new
    if isinstance(value, list):
        items = [substitute(v, env, strict) for v in value]
        if isinstance(value, LList):
            new_list = LList(items)
            new_list.mark, new_list.item_marks = value.mark, value.item_marks
            return new_list
        return items
    return value


def has_placeholder(value: Any) -> bool:
    if isinstance(value, str):
        return bool(_VAR.search(value))
    if isinstance(value, dict):
        return any(has_placeholder(v) for v in value.values())
    if isinstance(value, list):
        return any(has_placeholder(v) for v in value)
    return False
