"""Impairment specs in scenarios: the grammar string (README "Impairments") or the file mapping.

Why convert: a cell changes a host's impairments mid-run by rewriting that host's
WIRECHECK_IMPAIR_FILE, which the wrappers re-read when it changes; the file takes the mapping form
only. The string is validated by the wrappers' own parser first, so errors read exactly as the README
documents them.
"""
from __future__ import annotations

from typing import Any

from wrappers import impair


def to_mapping(spec: str | dict | None) -> dict[str, Any]:
    """The file form of a spec; raises impair.ImpairSpecError for a bad one."""
    if spec is None or spec == "":
        return {}
    if isinstance(spec, dict):
        impair.from_mapping(spec, "impair")
        return dict(spec)
    impair.parse(spec, "impair")
    seed: int | None = None
    rules = []
    for ruleset in spec.split("|"):
        rule: dict[str, Any] = {}
        for clause in ruleset.split(";"):
            clause = clause.strip()
            if not clause:
                continue
            if clause.startswith("seed="):
                seed = int(clause[5:].strip(), 0)
                continue
            head, _, rest = clause.partition(":")
            head = head.strip()
            if head in ("out", "in"):
                rule[head] = dict(f.split("=", 1) for f in rest.split())
            elif head == "match":
                rule["match"] = [x.strip() for x in rest.split(",") if x.strip()]
        if rule:
            rules.append(rule)
    out: dict[str, Any] = {"rules": rules}
    if seed is not None:
        out["seed"] = seed
    impair.from_mapping(out, "impair")
    return out


def problem(spec: Any) -> str | None:
    try:
        to_mapping(spec)
    except (impair.ImpairSpecError, ValueError) as e:
        return str(e)
    return None
