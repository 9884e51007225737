"""Load and validate scenario files: every problem, with `file:line:col`, before anything runs.

Checks, in order: YAML, the file schema (harness.scenario.schema), the matrix and its exclusions,
every step's operation (known, arguments valid against the operation's schema, referenced files
present), every expectation (pcap checks through the pcap library's parser), duplicate ids across
the tree. A step may name an operation that is not registered only when the scenario's `requires`
are unmet here: that is a capability still being built, and its cells show as not run.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import jsonschema

from . import registry
from .marks import LDict, ScenarioError, key_mark, load_yaml, mark_at, mark_of, where
from .model import Scenario, has_placeholder, label_of, substitute
from .requires import unmet
from .schema import COMMON_STEP_KEYS, SCENARIO

SUFFIXES = (".yaml", ".yml")


class _Problems:
    def __init__(self, source: str):
        self.source = source
        self.items: list[str] = []

    def add(self, mark: tuple[int, int], msg: str) -> None:
        self.items.append(f"{where(self.source, mark)}: {msg}")


def _schema_errors(instance: Any, schema: dict, root: Any, prefix: list, probs: _Problems, what: str = "") -> None:
    validator = jsonschema.Draft202012Validator(schema)
    for e in sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path]):
        if has_placeholder(e.instance) and e.validator in ("type", "enum", "pattern", "minimum", "maximum",
                                                           "exclusiveMinimum", "anyOf", "oneOf"):
            continue  # decided when the cell runs and the variable is known
        path = prefix + list(e.absolute_path)
        mark = mark_at(root, path)
        msg = e.message
        if e.validator == "additionalProperties":
            extra = sorted(set(e.instance) - set(e.schema.get("properties", {})))
            node = e.instance if isinstance(e.instance, LDict) else _node_at(root, path)
            if extra and isinstance(node, LDict):
                mark = key_mark(node, extra[0], mark)
            msg = f"unknown key {extra[0]!r}" if extra else msg
            known = sorted(e.schema.get("properties", {}))
            if known:
                msg += f" (known: {', '.join(known)})"
        elif e.validator == "anyOf" and all(set(sub) == {"required"} for sub in e.validator_value):
            msg = "needs one of: " + ", ".join(k for sub in e.validator_value for k in sub["required"])
        elif e.validator in ("minProperties", "maxProperties") and "steps" in path[:1] + prefix[:1]:
            msg = "a step is a mapping with exactly one operation name"
        label = _label(path)
        probs.add(mark, f"{what}{label + ': ' if label else ''}{msg}")


def _node_at(root: Any, path: list) -> Any:
    node = root
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _check_steps(steps: list, path: list, root: Any, scen_dir: Path, probs: _Problems, gated: str | None,
                 env: dict, missing: set[str]) -> None:
    for i, step in enumerate(steps):
        if not isinstance(step, dict) or len(step) != 1:
            continue  # reported by the file schema
        (name, raw), = step.items()
        spath = path + [i, name]
        mark = key_mark(step, name, mark_at(root, path + [i]))
        args = substitute(raw if raw is not None else {}, env)
        if name == "parallel":
            if not isinstance(args, list) or not args:
                probs.add(mark, f"{_label(spath)}: parallel takes a non-empty list of steps")
            else:
                _check_steps(args, spath, root, scen_dir, probs, gated, env, missing)
            continue
        op = registry.get(name)
        if op is None:
            if gated is None and not registry.pending(name):
                probs.add(mark, f"unknown operation {name!r} (known: {', '.join(registry.known())})")
            missing.add(name)
            continue
        if not isinstance(args, dict):
            probs.add(mark, f"{_label(spath)}: arguments must be a mapping")
            continue
        common = {k: v for k, v in args.items() if k in COMMON_STEP_KEYS}
        own = {k: v for k, v in args.items() if k not in COMMON_STEP_KEYS}
        _schema_errors(common, {"type": "object", "properties": COMMON_STEP_KEYS}, root, spath, probs)
        _schema_errors(own, op.schema, root, spath, probs, "")
        if op.check is not None and not has_placeholder(own):
            problem = op.check(own)
            if problem:
                probs.add(mark, f"{_label(spath)}: {problem}")
        for fname in op.files:
            ref = own.get(fname)
            if isinstance(ref, str) and not has_placeholder(ref) and not (scen_dir / ref).exists():
                probs.add(mark_at(root, spath + [fname]), f"{_label(spath + [fname])}: no such file {ref!r}")


def _label(path: list) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (("." if out else "") + str(p))
    return out


def _check_expect(items: list, root: Any, scen_dir: Path, probs: _Problems, env: dict) -> None:
    from harness.pcap import ChecksError, load_checks, parse_checks

    for i, item in enumerate(items):
        if not isinstance(item, dict) or "pcap" not in item:
            continue
        checks = substitute(item["pcap"], env)
        mark = mark_at(root, ["expect", i, "pcap"])
        if isinstance(checks, dict):
            ref = scen_dir / checks["file"]
            if not ref.exists():
                probs.add(mark, f"expect[{i}].pcap.file: no such file {checks['file']!r}")
                continue
            try:
                load_checks(ref)
            except ChecksError as e:
                probs.items.extend(e.problems)
            continue
        if has_placeholder(checks) or shutil.which("tshark") is None:
            continue  # checked when the cell runs (its requirements say tshark)
        try:
            parse_checks(checks, probs.source, mark)
        except ChecksError as e:
            probs.items.extend(e.problems)


def load_file(path: str | os.PathLike, probs: _Problems | None = None, *, check_pcap: bool = True) -> Scenario | None:
    """One scenario; problems go to `probs` (or raise ScenarioError when none is given).

    check_pcap=False skips the pcap checks' field validation (seconds of tshark catalogue loading): the
    cell process uses it, the runner having validated the file already."""
    own = probs is None
    source = str(path)
    probs = probs or _Problems(source)
    try:
        data = load_yaml(Path(path).read_text(), source)
    except ScenarioError as e:
        probs.items.extend(e.problems)
        data = None
    except OSError as e:
        probs.add((1, 1), f"cannot read: {e.strerror}")
        data = None
    scen = None
    if data is not None:
        scen = _build(data, Path(path), probs, check_pcap)
    if own and probs.items:
        raise ScenarioError(probs.items)
    return scen


def _build(data: Any, path: Path, probs: _Problems, check_pcap: bool = True) -> Scenario | None:
    before = len(probs.items)
    if not isinstance(data, dict):
        probs.add(mark_of(data), "a scenario file is a mapping (id, description, groups, steps, ...)")
        return None
    _schema_errors(data, SCENARIO, data, [], probs)
    if len(probs.items) > before:
        return None
    axes: dict[str, dict[str, Any]] = {}
    for axis, values in (data.get("matrix") or {}).items():
        axes[axis] = ({label_of(v): v for v in values}
                      if isinstance(values, list) else dict(values))
    excludes = []
    for i, ex in enumerate(data.get("exclude") or []):
        norm = {}
        for axis, v in ex.items():
            vals = [label_of(x) for x in (v if isinstance(v, list) else [v])]
            if axis not in axes:
                probs.add(key_mark(ex, axis), f"exclude[{i}]: {axis!r} is not a matrix axis")
                continue
            for x in vals:
                if x not in axes[axis]:
                    probs.add(mark_at(data, ["exclude", i, axis]),
                              f"exclude[{i}].{axis}: {x!r} is not a value of the axis (values: {', '.join(axes[axis])})")
            norm[axis] = vals
        excludes.append(norm)
    scen = Scenario(id=str(data["id"]), path=str(path), description=str(data["description"]),
                    groups=[str(g) for g in data["groups"]], data=data, requires=dict(data.get("requires") or {}),
                    axes=axes, excludes=excludes, timeout=float(data.get("timeout", 120)),
                    step_timeout=float(data.get("step_timeout", 30)), line=mark_of(data)[0])
    cells = scen.cells()
    if not cells:
        probs.add(mark_at(data, ["exclude"]), "the exclusions leave no cell of the matrix")
        return None
    gated = unmet(scen.requires)
    seen: set[str] = set()
    for cell in cells:
        env = cell.variables()
        n = len(probs.items)
        _check_steps(data["steps"], ["steps"], data, path.parent, probs, gated, env, scen.missing_ops)
        if check_pcap:
            _check_expect(data.get("expect") or [], data, path.parent, probs, env)
        # the same mistake in every cell is reported once
        new = probs.items[n:]
        del probs.items[n:]
        probs.items.extend(p for p in new if p not in seen)
        seen.update(new)
    return scen if len(probs.items) == before else None


def scenario_files(root: str | os.PathLike) -> list[Path]:
    root = Path(root)
    return sorted(p for p in root.glob("*/*") if p.suffix in SUFFIXES and p.is_file())


def load_tree(root: str | os.PathLike, files: list[Path] | None = None) -> list[Scenario]:
    """Every scenario under root (`<root>/<area>/<NNN>.yaml`); ScenarioError lists every problem."""
    registry.discover()
    problems: list[str] = []
    out: list[Scenario] = []
    by_id: dict[str, Scenario] = {}
    for path in files if files is not None else scenario_files(root):
        probs = _Problems(str(path))
        scen = load_file(path, probs)
        problems.extend(probs.items)
        if scen is None:
            continue
        if scen.id in by_id:
            problems.append(f"{where(str(path), mark_at(scen.data, ['id']))}: duplicate id {scen.id!r} "
                            f"(also {by_id[scen.id].path}:{by_id[scen.id].line})")
            continue
        by_id[scen.id] = scen
        out.append(scen)
    if problems:
        raise ScenarioError(problems)
    return sorted(out, key=lambda s: s.id)
