"""YAML with positions, and errors as `file:line:col: message`.

Why: scenario files are written by hand; a typo must be reported where it is, before anything runs.
We load with the pcap library's marked loader (harness.pcap.checks_yaml), so that a scenario's
`pcap:` list can be handed to `parse_checks` with its marks intact and its errors point into the
scenario file too.
"""
from __future__ import annotations

import re
from typing import Any

import yaml

from harness.pcap.checks_yaml import LDict, LList, LStr, MarkedLoader

__all__ = ["LDict", "LList", "LStr", "ScenarioError", "load_yaml", "mark_of", "mark_at", "where"]

Mark = tuple[int, int]


class ScenarioError(Exception):
    """Problems found while loading scenarios; each is a `file:line:col: message` string."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class ScenarioLoader(MarkedLoader):
    """YAML 1.2 booleans only: YAML 1.1 reads on/off/yes/no as booleans, and in a scenario
    `smb.read: {on: c}` means a key named "on", not True."""


ScenarioLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in MarkedLoader.yaml_implicit_resolvers.items()
}
ScenarioLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def load_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=ScenarioLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        m = e.problem_mark or e.context_mark
        at = f"{source}:{m.line + 1}:{m.column + 1}" if m else f"{source}:1:1"
        raise ScenarioError([f"{at}: YAML error: {e.problem or e}"]) from None


def mark_of(node: Any, default: Mark = (1, 1)) -> Mark:
    return getattr(node, "mark", None) or default


def mark_at(root: Any, path: list, default: Mark = (1, 1)) -> Mark:
    """Position of the value at `path` (keys and indices) under root; the nearest known ancestor."""
    best, node = mark_of(root, default), root
    for part in path:
        if isinstance(node, LDict) and part in node:
            best = node.value_marks.get(part, best)
            node = node[part]
        elif isinstance(node, LList) and isinstance(part, int) and 0 <= part < len(node):
            best = node.item_marks[part]
            node = node[part]
        else:
            break
        best = getattr(node, "mark", None) or best
    return best


def key_mark(mapping: Any, key: str, default: Mark = (1, 1)) -> Mark:
    if isinstance(mapping, LDict):
        return mapping.key_marks.get(key, mark_of(mapping, default))
    return default


def where(source: str, mark: Mark) -> str:
    return f"{source}:{mark[0]}:{mark[1]}"
