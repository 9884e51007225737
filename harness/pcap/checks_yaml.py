"""Declarative pcap checks in YAML (suricata-verify style), with `file:line:col: message` errors.

Why line numbers everywhere: a checks file is data written by hand; a typo in a field name must be
reported where it is, before tshark runs (tshark would abort the whole pass with no rows).

A checks file is a list of checks, or a mapping with `checks:` (and optional `keylog`, `smb_keys`,
`smb_ports`, paths relative to the file). The same list is what a scenario's `pcap:` entry holds.
Each check is a catalogue name (`- quic.handshake_completed`), a catalogue name with arguments
(`- smb2.dialect: {eq: 0x311}`), or one of the kinds:

    - count:    {filter: "smb2.cmd == 9", match: {smb2.write_length: {gt: 100}}, eq|min|max: N, per: tcp}
    - absent:   {filter: "tcp.analysis.retransmission"}
    - first:    {filter: smb2, is: {match: {smb2.cmd: 0}}}          # also `last`
    - before:   {a: "smb2.cmd == 0", b: {match: {smb2.cmd: 1}}, within_frames: 10, within_ms: 50}
    - followed_by: {a: ..., b: ..., within_ms: 100}
    - sequence: {steps: ["smb2.cmd == 0", "smb2.cmd == 1", "smb2.cmd == 3"], per: tcp}
    - values:   {field: smb2.dialect, filter: ..., equals: [...], all: {eq: 0x311}, any: ..., distinct: 1,
                 increasing: true}

`match` operators: eq, ne, in, contains, regex, gt, lt, ge, le, len, exists. Every check may have
`name:` (shown in reports).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from . import catalogue
from .assertions import Absent, Assertion, Before, Count, First, FollowedBy, InOrder, Last, Values
from .query import MATCH_OPS, Query, QueryError, compile_filter, group_field
from .tshark import PcapError, field_catalogue


class ChecksError(PcapError):
    """One or more problems in a checks file; `problems` are `file:line:col: message` strings."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


# --------------------------------------------------------------------------- YAML with marks

class LDict(dict):
    """A mapping that remembers where it and each of its keys and values start."""

    mark: tuple = (0, 0)
    key_marks: dict
    value_marks: dict


class LList(list):
    mark: tuple = (0, 0)
    item_marks: list


class LStr(str):
    mark: tuple = (0, 0)


def _pos(node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class MarkedLoader(yaml.SafeLoader):
    """SafeLoader that records node.start_mark on every mapping, sequence and string."""

    def construct_mapping(self, node, deep=False):
        self.flatten_mapping(node)
        out = LDict()
        out.mark, out.key_marks, out.value_marks = _pos(node), {}, {}
        for knode, vnode in node.value:
            key = self.construct_object(knode, deep=True)
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise yaml.constructor.ConstructorError(None, None, "unhashable key", knode.start_mark)
            out[key] = self.construct_object(vnode, deep=True)
            out.key_marks[key] = _pos(knode)
            out.value_marks[key] = _pos(vnode)
        return out

    def construct_sequence(self, node, deep=False):
        out = LList(self.construct_object(c, deep=True) for c in node.value)
        out.mark, out.item_marks = _pos(node), [_pos(c) for c in node.value]
        return out

    def construct_yaml_str(self, node):
        s = LStr(super().construct_scalar(node))
        s.mark = _pos(node)
        return s


MarkedLoader.add_constructor("tag:yaml.org,2002:map", lambda ld, n: ld.construct_mapping(n))
MarkedLoader.add_constructor("tag:yaml.org,2002:seq", lambda ld, n: ld.construct_sequence(n))
MarkedLoader.add_constructor("tag:yaml.org,2002:str", MarkedLoader.construct_yaml_str)


def load_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=MarkedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        m = e.problem_mark or e.context_mark
        where = f"{source}:{m.line + 1}:{m.column + 1}" if m else source
        raise ChecksError([f"{where}: YAML error: {e.problem or e}"]) from None


# --------------------------------------------------------------------------- schema

_QUERY_STR = {"type": "string", "minLength": 1}
_MATCH_VALUE = {"anyOf": [
    {"type": ["string", "number", "boolean", "array"]},
    {"type": "object", "minProperties": 1, "propertyNames": {"enum": list(MATCH_OPS)}},
]}
_MATCH = {"type": "object", "additionalProperties": _MATCH_VALUE}
_QUERY_OBJ = {"type": "object", "additionalProperties": False,
              "properties": {"filter": _QUERY_STR, "match": _MATCH}}
_QUERY = {"anyOf": [_QUERY_STR, _QUERY_OBJ]}
_N = {"type": "integer", "minimum": 0}
_NAME = {"type": "string"}
_PER = {"type": "string"}

KIND_SCHEMAS: dict[str, dict] = {
    "count": {"type": "object", "additionalProperties": False,
              "properties": {"filter": _QUERY_STR, "match": _MATCH, "eq": _N, "min": _N, "max": _N,
                             "per": _PER, "name": _NAME}},
    "absent": {"type": "object", "additionalProperties": False,
               "properties": {"filter": _QUERY_STR, "match": _MATCH, "name": _NAME}},
    "first": {"type": "object", "additionalProperties": False, "required": ["is"],
              "properties": {"filter": _QUERY_STR, "match": _MATCH, "is": _QUERY, "name": _NAME}},
    "before": {"type": "object", "additionalProperties": False, "required": ["a", "b"],
               "properties": {"a": _QUERY, "b": _QUERY, "within_frames": _N,
                              "within_ms": {"type": "number", "minimum": 0}, "name": _NAME}},
    "sequence": {"type": "object", "additionalProperties": False, "required": ["steps"],
                 "properties": {"steps": {"type": "array", "minItems": 1, "items": _QUERY}, "per": _PER,
                                "name": _NAME}},
    "values": {"type": "object", "additionalProperties": False, "required": ["field"],
               "properties": {"field": {"type": "string"}, "filter": _QUERY_STR, "match": _MATCH,
                              "equals": {"type": "array"}, "all": _MATCH_VALUE, "any": _MATCH_VALUE,
                              "distinct": {"anyOf": [_N, {"type": "object", "additionalProperties": False,
                                                          "properties": {"eq": _N, "min": _N, "max": _N}}]},
                              "increasing": {"type": "boolean"}, "name": _NAME}},
}
KIND_SCHEMAS["last"] = KIND_SCHEMAS["first"]
KIND_SCHEMAS["followed_by"] = KIND_SCHEMAS["before"]

FILE_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["checks"],
               "properties": {"checks": {"type": "array"}, "keylog": {"type": "string"},
                              "smb_keys": {"type": "string"},
                              "smb_ports": {"type": "array", "items": {"type": "integer"}},
                              "description": {"type": "string"}}}


# --------------------------------------------------------------------------- building

@dataclass
class CheckSet:
    """Checks loaded from a file: the assertions and the capture options the file names."""

    assertions: list[Assertion]
    source: str
    keylog: str | None = None
    smb_keys: str | None = None
    smb_ports: list[int] = field(default_factory=list)


class _Builder:
    def __init__(self, source: str):
        self.source = source
        self.problems: list[str] = []

    def at(self, mark) -> str:
        line, col = mark if mark else (0, 0)
        return f"{self.source}:{line}:{col}"

    def err(self, mark, msg: str) -> None:
        self.problems.append(f"{self.at(mark)}: {msg}")

    def schema(self, data: Any, schema: dict, mark, what: str) -> bool:
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.path))
        for e in errors:
            self.err(_mark_at(data, list(e.absolute_path), mark), f"{what}: {_schema_msg(e)}")
        return not errors

    # -- fields

    def check_field(self, name: Any, mark) -> None:
        if isinstance(name, str) and name not in field_catalogue():
            self.err(mark, f"unknown field {name!r} (not a tshark field; see `tshark -G fields`)")

    def check_filter(self, text: str, mark) -> None:
        for name in sorted(compile_filter(text).unknown):
            self.err(mark, f"unknown field {name!r} in display filter {text!r}")

    def query(self, spec: Any, mark) -> Query | None:
        if isinstance(spec, str):
            self.check_filter(spec, getattr(spec, "mark", mark))
            return Query(filter=str(spec))
        spec = spec or {}
        flt = spec.get("filter")
        if flt:
            self.check_filter(flt, getattr(flt, "mark", mark))
        match = spec.get("match") or {}
        if match:
            for k in match:
                self.check_field(k, match.key_marks.get(k, mark) if isinstance(match, LDict) else mark)
        try:
            return Query(filter=str(flt) if flt else None, match={str(k): _plain(v) for k, v in match.items()})
        except QueryError as e:
            self.err(mark, str(e))
            return None

    # -- one check

    def check(self, item: Any, mark) -> Assertion | None:
        if isinstance(item, str):
            kind, args, amark = str(item), None, mark
        elif isinstance(item, dict) and len(item) == 1:
            kind = str(next(iter(item)))
            args = item[kind]
            amark = item.value_marks.get(kind, mark) if isinstance(item, LDict) else mark
        else:
            self.err(mark, "a check is a catalogue name or a mapping with exactly one key "
                     f"(one of {', '.join(sorted(KIND_SCHEMAS))} or a catalogue name)")
            return None
        n_before = len(self.problems)
        a: Assertion | None
        if kind in catalogue.CATALOGUE:
            entry = catalogue.CATALOGUE[kind]
            if not self.schema(args if args is not None else {}, entry.params, amark, kind):
                return None
            try:
                a = catalogue.build(kind, _plain(args))
            except (ValueError, TypeError) as e:  # arguments the schema cannot express
                self.err(amark, f"{kind}: {e}")
                return None
        elif kind in KIND_SCHEMAS:
            if args is None or not self.schema(args, KIND_SCHEMAS[kind], amark, kind):
                if args is None:
                    self.err(amark, f"{kind}: needs arguments")
                return None
            a = self.kind(kind, args, amark)
        else:
            self.err(mark, f"unknown check {kind!r}; kinds: {', '.join(sorted(KIND_SCHEMAS))}; "
                     f"catalogue: {', '.join(sorted(catalogue.CATALOGUE))}")
            return None
        if a is None or len(self.problems) > n_before:
            return None
        a.where = self.at(mark)
        if isinstance(args, dict) and args.get("name"):
            a.name = str(args["name"])
        return a

    def kind(self, kind: str, args: dict, mark) -> Assertion | None:
        vm = args.value_marks if isinstance(args, LDict) else {}

        def sub(key):
            return self.query(args[key], vm.get(key, mark))

        own = self.query({k: args[k] for k in ("filter", "match") if k in args}, mark)
        if "per" in args:
            self.check_field(group_field(str(args["per"])), vm.get("per", mark))
        if own is None and kind not in ("before", "followed_by", "sequence"):
            return None
        if kind == "count":
            return Count(own, eq=args.get("eq"), min=args.get("min"), max=args.get("max"), per=args.get("per"))
        if kind == "absent":
            return Absent(own)
        if kind in ("first", "last"):
            then = sub("is")
            return None if then is None else (First if kind == "first" else Last)(own, then)
        if kind in ("before", "followed_by"):
            a, b = sub("a"), sub("b")
            if a is None or b is None:
                return None
            cls = Before if kind == "before" else FollowedBy
            return cls(a, b, within_frames=args.get("within_frames"), within_ms=args.get("within_ms"))
        if kind == "sequence":
            steps = args["steps"]
            marks = steps.item_marks if isinstance(steps, LList) else [mark] * len(steps)
            qs = [self.query(s, m) for s, m in zip(steps, marks, strict=True)]
            return None if any(q is None for q in qs) else InOrder(qs, per=args.get("per"))
        # values
        self.check_field(args["field"], vm.get("field", mark))
        try:
            return Values(str(args["field"]), own, equals=_plain(args.get("equals")), all=_plain(args.get("all")),
                          any=_plain(args.get("any")), distinct=_plain(args.get("distinct")),
                          increasing=args.get("increasing"))
        except QueryError as e:
            self.err(mark, str(e))
            return None


def _plain(v: Any) -> Any:
    """Drop the mark-carrying subclasses (jsonschema and equality do not care, repr() does)."""
    if isinstance(v, dict):
        return {_plain(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, str):
        return str(v)
    return v


def _mark_at(data: Any, path: list, default) -> tuple:
    """The position of the node at a jsonschema error path (deepest node we know a mark for)."""
    mark = getattr(data, "mark", None) or default
    node = data
    for p in path:
        if isinstance(node, LDict) and p in node:
            mark = node.key_marks.get(p, mark) if not isinstance(node[p], LDict | LList) else node[p].mark
            mark = node.value_marks.get(p, mark) if not isinstance(node[p], LDict | LList) else mark
            node = node[p]
        elif isinstance(node, LList) and isinstance(p, int) and p < len(node):
            mark = node.item_marks[p]
            node = node[p]
        else:
            break
    return mark


def _schema_msg(e: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in e.absolute_path)
    if e.validator == "additionalProperties":
        extra = sorted(set(e.instance) - set(e.schema.get("properties", {})))
        known = ", ".join(sorted(e.schema.get("properties", {})))
        return f"unknown key(s) {', '.join(map(repr, extra))}" + (f" (known: {known})" if known else " (takes no arguments)")
    if e.validator == "anyOf" and isinstance(e.instance, dict):
        bad = [k for k in e.instance if k not in MATCH_OPS]
        if bad:
            return f"{path + ': ' if path else ''}unknown operator(s) {', '.join(map(repr, bad))} (known: {', '.join(MATCH_OPS)})"
    if e.validator == "propertyNames":
        return f"{path}: unknown operator (known: {', '.join(MATCH_OPS)})"
    return f"{path + ': ' if path else ''}{e.message}"


def parse_checks(items: Any, source: str = "<checks>", mark=None) -> list[Assertion]:
    """Assertions from a list of check items (as found in a scenario's `pcap:` entry)."""
    b = _Builder(source)
    if not isinstance(items, list):
        raise ChecksError([f"{b.at(getattr(items, 'mark', mark))}: checks must be a list"])
    marks = items.item_marks if isinstance(items, LList) else [mark or (0, 0)] * len(items)
    out = [b.check(item, m) for item, m in zip(items, marks, strict=True)]
    if b.problems:
        raise ChecksError(b.problems)
    return [a for a in out if a is not None]


def load_checks(path: str | os.PathLike) -> CheckSet:
    """Load a checks file; every problem (YAML, schema, unknown field or check) is reported at once,
    before any tshark pass runs."""
    p = Path(path)
    if not p.exists():
        raise ChecksError([f"{p}: no such checks file"])
    source = str(p)
    data = load_yaml(p.read_text(), source)
    if isinstance(data, list):
        return CheckSet(parse_checks(data, source), source)
    b = _Builder(source)
    if not isinstance(data, dict) or not b.schema(data, FILE_SCHEMA, getattr(data, "mark", (1, 1)), "checks file"):
        raise ChecksError(b.problems or [f"{source}:1:1: a checks file is a list of checks or has `checks:`"])
    base = p.parent

    def rel(v):
        return str(base / v) if v is not None else None
    return CheckSet(parse_checks(data["checks"], source), source, keylog=rel(data.get("keylog")),
                    smb_keys=rel(data.get("smb_keys")), smb_ports=list(data.get("smb_ports", [])))
