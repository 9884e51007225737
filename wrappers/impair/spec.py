"""The impairment spec: its data model, the parser of the string form and the loader of the file form.

Text in, frozen dataclasses out; nothing here touches a socket, a clock or a thread. The language is
documented in docs/impairments.md. Every error is an :class:`ImpairSpecError` naming the source
(``file:line`` for files), the field and the bad value, so a person can find and fix it.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

ENV_SPEC = "WIRECHECK_IMPAIR"
ENV_FILE = "WIRECHECK_IMPAIR_FILE"
DEFAULT_REORDER_DELAY = 0.010

Direction = Literal["out", "in"]
RebindKind = Literal["port", "addr", "both"]
CutKind = Literal["rst", "blackhole"]


# ==================================================================================================
# Errors
# ==================================================================================================


class ImpairSpecError(ValueError):
    """A malformed impairment spec. The message names where (source[:line]), the field and the value."""

    def __init__(
        self, source: str, field: str | None, value: object, problem: str, line: int | None = None
    ) -> None:
        self.source = source
        self.field = field
        self.value = value
        self.problem = problem
        self.line = line
        where = f"{source}:{line}" if line is not None else source
        head = f"{where}: {field}: " if field else f"{where}: "
        body = f"{value!r} {problem}" if value is not None else problem
        super().__init__(head + body)


# ==================================================================================================
# Data model
# ==================================================================================================


@dataclass(frozen=True)
class Window:
    """A blackhole window, seconds after activation."""

    start: float
    duration: float

    def contains(self, t: float) -> bool:
        return self.start <= t < self.start + self.duration


@dataclass(frozen=True)
class RebindEvent:
    """Rebind the emulated source at datagram ``index`` or at ``at`` seconds after activation."""

    kind: RebindKind
    index: int | None = None
    at: float | None = None


@dataclass(frozen=True)
class Cut:
    """Cut a stream after ``after_bytes`` bytes in that direction, or ``at`` seconds after activation."""

    kind: CutKind
    after_bytes: int | None = None
    at: float | None = None


DATAGRAM_FIELDS = (
    "loss",
    "burst",
    "drop",
    "dup",
    "reorder",
    "reorder_delay",
    "corrupt",
    "blackhole",
    "rebind",
)
STREAM_ONLY_FIELDS = ("cut",)
SHARED_FIELDS = ("delay", "jitter")
ALL_FIELDS = DATAGRAM_FIELDS + SHARED_FIELDS + STREAM_ONLY_FIELDS


@dataclass(frozen=True)
class DirectionRules:
    """The impairments of one direction of a rule set. Defaults mean "no impairment"."""

    direction: Direction = "out"
    loss: float = 0.0
    burst: float | None = None
    drop: tuple[tuple[int, int], ...] = ()  # inclusive ranges
    dup: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = DEFAULT_REORDER_DELAY
    delay: float = 0.0
    jitter: float = 0.0
    corrupt: float = 0.0
    blackhole: tuple[Window, ...] = ()
    rebind: tuple[RebindEvent, ...] = ()
    cut: Cut | None = None

    def affects_datagrams(self) -> bool:
        return bool(
            self.loss
            or self.drop
            or self.dup
            or self.reorder
            or self.delay
            or self.jitter
            or self.corrupt
            or self.blackhole
            or self.rebind
        )

    def affects_streams(self) -> bool:
        return bool(self.delay or self.jitter or self.cut)

    def drops_index(self, index: int) -> bool:
        return any(lo <= index <= hi for lo, hi in self.drop)


@dataclass(frozen=True)
class Selector:
    """``udp``, ``tcp:445``, ``443``: proto None = any, port None = any (local or remote port)."""

    proto: str | None = None
    port: int | None = None

    def matches(self, proto: str, local_port: int | None, remote_port: int | None) -> bool:
        if self.proto is not None and self.proto != proto:
            return False
        return self.port is None or self.port in (local_port, remote_port)

    def __str__(self) -> str:
        if self.proto and self.port is not None:
            return f"{self.proto}:{self.port}"
        return self.proto or str(self.port)


@dataclass(frozen=True)
class Rule:
    """One rule set: which flows (``match``, empty = all) and the rules per direction (None = absent)."""

    match: tuple[Selector, ...] = ()
    out: DirectionRules | None = None
    in_: DirectionRules | None = None

    def matches(self, proto: str, local_port: int | None, remote_port: int | None) -> bool:
        return not self.match or any(s.matches(proto, local_port, remote_port) for s in self.match)

    def for_direction(self, direction: str) -> DirectionRules | None:
        return self.out if direction == "out" else self.in_


@dataclass(frozen=True)
class ImpairConfig:
    """A parsed spec: the seed and the rule sets (first match wins), plus where and when it came from."""

    seed: int = 0
    rules: tuple[Rule, ...] = ()
    source: str = ENV_SPEC
    activated_at: float = field(default_factory=time.monotonic, compare=False)

    def rules_for(
        self, proto: str, local_port: int | None, remote_port: int | None, direction: str
    ) -> DirectionRules | None:
        """The first rule set that matches the flow and has a section for ``direction``."""
        for rule in self.rules:
            d = rule.for_direction(direction)
            if d is not None and rule.matches(proto, local_port, remote_port):
                return d
        return None


# ==================================================================================================
# Value parsers (one per kind of value; they raise _Bad with the problem, the caller adds where)
# ==================================================================================================


class _Bad(Exception):
    def __init__(self, problem: str, value: object = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.value = value


_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)"
_DURATION_RE = re.compile(rf"({_NUM})(us|ms|s)")
_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
_BYTES_RE = re.compile(r"(\d+)(B|k|K|kB|KB|KiB|M|MB|MiB|G|GB|GiB)?")
_BYTES_UNITS = {
    None: 1,
    "B": 1,
    "k": 1000,
    "K": 1000,
    "kB": 1000,
    "KB": 1000,
    "KiB": 1024,
    "M": 10**6,
    "MB": 10**6,
    "MiB": 2**20,
    "G": 10**9,
    "GB": 10**9,
    "GiB": 2**30,
}


def _probability(text: str) -> float:
    bad = _Bad("is not a probability between 0% and 100%")
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise bad from None
    if not (0.0 <= value <= 1.0) or math.isnan(value):
        raise bad
    return value


def _is_duration(text: str) -> bool:
    return text == "0" or _DURATION_RE.fullmatch(text) is not None


def _duration(text: str) -> float:
    if text == "0":
        return 0.0
    m = _DURATION_RE.fullmatch(text)
    if m is None:
        if re.fullmatch(_NUM, text):
            raise _Bad("needs a unit (us, ms or s)")
        raise _Bad("is not a duration like 20ms, 1.5s or 250us")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def _byte_count(text: str) -> int:
    m = _BYTES_RE.fullmatch(text)
    if m is None:
        raise _Bad("is not a byte count like 100000, 64KiB or 1MB")
    return int(m.group(1)) * _BYTES_UNITS[m.group(2)]


def _burst(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value >= 1.0 or math.isinf(value):
        raise _Bad("is not a mean burst length (a number >= 1)")
    return value


def _items(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",")]
    if not text.strip() or any(not t for t in items):
        raise _Bad("is not a comma-separated list (empty item)")
    return items


def _index_ranges(text: str) -> tuple[tuple[int, int], ...]:
    out = []
    for item in _items(text):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", item)
        if m is None:
            raise _Bad(f"is not a list of datagram indices like 3,7-9 (bad item {item!r})")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise _Bad(f"has a backwards range {item!r}")
        out.append((lo, hi))
    return tuple(out)


def _windows(text: str) -> tuple[Window, ...]:
    out = []
    for item in _items(text):
        start, plus, dur = item.partition("+")
        if not plus:
            raise _Bad(f"is not a list of START+DURATION windows like 2s+1s (bad item {item!r})")
        try:
            out.append(Window(_duration(start.strip()), _duration(dur.strip())))
        except _Bad as e:
            raise _Bad(f"has a bad window {item!r}: {e.problem}") from None
    return tuple(out)


def _rebinds(text: str) -> tuple[RebindEvent, ...]:
    out = []
    for item in _items(text):
        kind, at, when = item.partition("@")
        if kind not in ("port", "addr", "both") or not at:
            raise _Bad(f"is not a list of port@N, addr@N, both@N or port@2.5s (bad item {item!r})")
        if re.fullmatch(r"\d+", when):
            out.append(RebindEvent(kind, index=int(when)))  # type: ignore[arg-type]
        elif _is_duration(when):
            out.append(RebindEvent(kind, at=_duration(when)))  # type: ignore[arg-type]
        else:
            raise _Bad(f"has {when!r} in {item!r}, which is neither a datagram index nor a time like 2.5s")
    return tuple(out)


def _cut(text: str) -> Cut:
    kind, at, when = text.partition("@")
    if kind not in ("rst", "blackhole") or not at:
        raise _Bad("is not rst@N, blackhole@N (bytes) or rst@3s (time)")
    if _is_duration(when) and when != "0":
        return Cut(kind, at=_duration(when))  # type: ignore[arg-type]
    try:
        return Cut(kind, after_bytes=_byte_count(when))  # type: ignore[arg-type]
    except _Bad:
        raise _Bad(f"has {when!r}, which is neither a byte count (64KiB) nor a time (3s)") from None


_FIELD_PARSERS: dict[str, Callable[[str], Any]] = {
    "loss": _probability,
    "burst": _burst,
    "drop": _index_ranges,
    "dup": _probability,
    "reorder": _probability,
    "reorder_delay": _duration,
    "delay": _duration,
    "jitter": _duration,
    "corrupt": _probability,
    "blackhole": _windows,
    "rebind": _rebinds,
    "cut": _cut,
}


def _selector(text: str) -> Selector:
    m = re.fullmatch(r"(?:(udp|tcp)(?::(\d+))?|(\d+))", text.strip().lower())
    if m is None:
        raise _Bad("is not a selector: udp, tcp, udp:PORT, tcp:PORT or PORT")
    port_text = m.group(2) or m.group(3)
    port = int(port_text) if port_text is not None else None
    if port is not None and port > 65535:
        raise _Bad("has a port above 65535")
    return Selector(m.group(1), port)


def _seed(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise _Bad("is not an integer seed") from None


# ==================================================================================================
# Building rules from raw (string) fields; shared by the string, file and mapping forms
# ==================================================================================================

LineOf = Callable[[str], "int | None"]


def _no_lines(_path: str) -> int | None:
    return None


@dataclass
class _Ctx:
    source: str
    line_of: LineOf = _no_lines

    def error(self, path: str | None, value: object, problem: str) -> ImpairSpecError:
        return ImpairSpecError(self.source, path, value, problem, self.line_of(path or ""))


def _build_direction(
    ctx: _Ctx, direction: Direction, raw: Mapping[str, str], path: str, protos: frozenset[str]
) -> DirectionRules:
    values: dict[str, Any] = {}
    for name, text in raw.items():
        fpath = f"{path}.{name}"
        if name not in _FIELD_PARSERS:
            raise ctx.error(fpath, None, f"unknown field (known: {', '.join(ALL_FIELDS)})")
        try:
            values[name] = _FIELD_PARSERS[name](text)
        except _Bad as e:
            raise ctx.error(fpath, text, e.problem) from None
        if name in DATAGRAM_FIELDS and "udp" not in protos:
            raise ctx.error(fpath, text, "applies to datagrams, but this rule set matches only tcp")
        if name in STREAM_ONLY_FIELDS and "tcp" not in protos:
            raise ctx.error(fpath, text, "applies to streams, but this rule set matches only udp")
    if "rebind" in values and direction != "out":
        raise ctx.error(f"{path}.rebind", raw["rebind"], "is only possible in out: (the sender's source)")
    if "burst" in values:
        loss = values.get("loss", 0.0)
        if not loss:
            raise ctx.error(f"{path}.burst", raw["burst"], "has no effect without loss")
        need = loss / (1 - loss) if loss < 1 else math.inf
        if values["burst"] < need and loss < 1:
            raise ctx.error(
                f"{path}.burst", raw["burst"], f"is too short for loss={raw['loss']} (needs >= {need:.3g})"
            )
    return DirectionRules(direction=direction, **values)


def _protos_of(match: Sequence[Selector]) -> frozenset[str]:
    if not match or any(s.proto is None for s in match):
        return frozenset({"udp", "tcp"})
    return frozenset(s.proto for s in match if s.proto)


def _build_rule(
    ctx: _Ctx, prefix: str, match_text: str | None, sections: Mapping[str, Mapping[str, str]]
) -> Rule:
    match: tuple[Selector, ...] = ()
    if match_text is not None:
        mpath = f"{prefix}match"
        try:
            match = tuple(_selector(item) for item in _items(match_text))
        except _Bad as e:
            raise ctx.error(mpath, match_text, e.problem) from None
    protos = _protos_of(match)
    out = in_ = None
    if "out" in sections:
        out = _build_direction(ctx, "out", sections["out"], f"{prefix}out", protos)
    if "in" in sections:
        in_ = _build_direction(ctx, "in", sections["in"], f"{prefix}in", protos)
    return Rule(match=match, out=out, in_=in_)


# ---- the string form -----------------------------------------------------------------------------

_CLAUSE_RE = re.compile(r"\s*([A-Za-z_]\w*)\s*([:=])(.*)", re.S)


def parse(text: str, source: str = ENV_SPEC) -> ImpairConfig | None:
    """Parse the compact string form. None for an empty/blank spec (no impairment)."""
    ctx = _Ctx(source)
    if not text.strip():
        return None
    chunks = text.split("|")
    multi = len(chunks) > 1
    seed: int | None = None
    rules: list[Rule] = []
    for ri, chunk in enumerate(chunks):
        prefix = f"rules[{ri}]." if multi else ""
        sections: dict[str, dict[str, str]] = {}
        match_text: str | None = None
        for clause in chunk.split(";"):
            if not clause.strip():
                continue
            m = _CLAUSE_RE.fullmatch(clause)
            name, sep, rest = (m.group(1), m.group(2), m.group(3).strip()) if m else ("", "", "")
            if name == "seed":
                if seed is not None:
                    raise ctx.error("seed", rest, "is a second seed (give it once)")
                try:
                    seed = _seed(rest)
                except _Bad as e:
                    raise ctx.error("seed", rest, e.problem) from None
            elif sep == ":" and name in ("out", "in"):
                spath = f"{prefix}{name}"
                if name in sections:
                    raise ctx.error(spath, None, "section given twice in one rule set")
                fields: dict[str, str] = {}
                for item in rest.split():
                    fname, eq, fvalue = item.partition("=")
                    if not eq or not fname:
                        raise ctx.error(spath, item, "is not name=value")
                    if fname in fields:
                        raise ctx.error(f"{spath}.{fname}", fvalue, "is a second value for this field")
                    fields[fname] = fvalue
                sections[name] = fields
            elif sep == ":" and name == "match":
                if match_text is not None:
                    raise ctx.error(f"{prefix}match", rest, "is a second match: in one rule set")
                match_text = rest
            elif sep == "=" and name in _FIELD_PARSERS:
                raise ctx.error(name, clause.strip(), "is outside a section: put it after 'out:' or 'in:'")
            else:
                raise ctx.error(
                    prefix.rstrip(".") or None,
                    clause.strip(),
                    "is not a clause: seed=N, out: FIELDS, in: FIELDS or match: SELECTORS",
                )
        if sections or match_text is not None:
            if not sections:
                raise ctx.error(f"{prefix}match", match_text, "has no out: or in: section to apply to")
            rules.append(_build_rule(ctx, prefix, match_text, sections))
    return ImpairConfig(seed=seed or 0, rules=tuple(rules), source=source)


# ---- the mapping / file form ---------------------------------------------------------------------


def _scalar_text(ctx: _Ctx, path: str, value: object, list_ok: bool) -> str:
    """File values become the same strings the compact form has, so both share one set of parsers."""
    if isinstance(value, bool) or value is None:
        raise ctx.error(path, value, "is not a valid value here")
    if isinstance(value, int | float | str):
        return str(value).strip()
    if list_ok and isinstance(value, list) and value:
        return ",".join(_scalar_text(ctx, f"{path}[{i}]", v, False) for i, v in enumerate(value))
    raise ctx.error(path, value, "is not a scalar" + (" or a list" if list_ok else ""))


_LIST_FIELDS = {"drop", "blackhole", "rebind"}


def _rule_from_mapping(ctx: _Ctx, prefix: str, data: Mapping[str, Any]) -> Rule:
    sections: dict[str, dict[str, str]] = {}
    match_text = None
    for key, value in data.items():
        kpath = f"{prefix}{key}"
        if key == "match":
            match_text = _scalar_text(ctx, kpath, value, True)
        elif key in ("out", "in"):
            if value is None:
                value = {}
            if not isinstance(value, Mapping):
                raise ctx.error(kpath, value, "is not a mapping of fields")
            sections[key] = {
                str(k): _scalar_text(ctx, f"{kpath}.{k}", v, k in _LIST_FIELDS) for k, v in value.items()
            }
        else:
            raise ctx.error(kpath, None, "unknown key (known: match, out, in)")
    if not sections:
        raise ctx.error(prefix.rstrip(".") or None, None, "has no out: or in: section")
    return _build_rule(ctx, prefix, match_text, sections)


def _from_mapping(ctx: _Ctx, data: object) -> ImpairConfig | None:
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise ctx.error(None, data, "is not a mapping (expected seed/rules or match/out/in)")
    seed = 0
    if "seed" in data:
        value = data["seed"]
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ctx.error("seed", value, "is not an integer seed")
        try:
            seed = _seed(str(value))
        except _Bad as e:
            raise ctx.error("seed", value, e.problem) from None
    rule_keys = {"match", "out", "in"} & set(data)
    unknown = set(data) - {"seed", "rules"} - rule_keys
    if unknown:
        key = sorted(map(str, unknown))[0]
        raise ctx.error(key, None, "unknown key (known: seed, rules, match, out, in)")
    rules: list[Rule] = []
    if "rules" in data:
        if rule_keys:
            raise ctx.error("rules", None, f"cannot be combined with top-level {sorted(rule_keys)[0]}")
        items = data["rules"]
        if not isinstance(items, list):
            raise ctx.error("rules", items, "is not a list of rule sets")
        for i, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise ctx.error(f"rules[{i}]", item, "is not a mapping (match/out/in)")
            rules.append(_rule_from_mapping(ctx, f"rules[{i}].", item))
    elif rule_keys:
        rules.append(_rule_from_mapping(ctx, "", {k: data[k] for k in data if k in rule_keys}))
    return ImpairConfig(seed=seed, rules=tuple(rules), source=ctx.source)


def from_mapping(data: Mapping[str, Any], source: str = "configure()") -> ImpairConfig | None:
    """The file form, already loaded (for :func:`configure` with a dict)."""
    return _from_mapping(_Ctx(source), data)


def _yaml_with_lines(text: str, source: str) -> tuple[object, dict[str, int]]:
    """Load YAML (JSON is YAML) keeping the line of every value, keyed by its field path."""
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ImpairSpecError(source, None, None, f"not valid YAML/JSON: {e}", line) from None
    lines: dict[str, int] = {}
    constructor = yaml.SafeLoader("")

    def walk(n: Any, path: str) -> object:
        lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            out: dict[str, object] = {}
            for knode, vnode in n.value:
                key = str(constructor.construct_object(knode, deep=True))
                kpath = f"{path}.{key}" if path else key
                lines[kpath] = knode.start_mark.line + 1
                out[key] = walk(vnode, kpath)
            return out
        if isinstance(n, yaml.SequenceNode):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(n.value)]
        return constructor.construct_object(n, deep=True)

    if node is None:
        return None, lines
    return walk(node, ""), lines


def load_file(path: str) -> ImpairConfig | None:
    """Parse a YAML/JSON spec file; errors carry ``file:line``."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    data, lines = _yaml_with_lines(text, path)

    def line_of(p: str) -> int | None:
        # The most specific known ancestor: "rules[0].out.loss" -> itself, else "rules[0].out", ...
        while p:
            if p in lines:
                return lines[p]
            p = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", p)
        return lines.get("")

    return _from_mapping(_Ctx(path, line_of), data)
