"""Which frames an assertion talks about: display filters, field predicates, grouping.

Why a Python evaluator for display filters: one tshark pass cannot tell which of several `-Y`
filters a frame matched, so the filters are compiled here and evaluated on the frame table
(the common subset: comparisons, `in`, `contains`, `matches`, `&`, and/or/not, presence). tshark
still validates every filter (folded into the main pass), and a filter this module cannot
evaluate faithfully (slices, functions, CIDR, value-string names...) raises `Unsupported`; the
capture then asks tshark for that filter's frame numbers in a pass of its own.

Semantics follow tshark 4.0 (checked against it in the tests): `==`, `>`... and `~=`/`!==` hold if
any occurrence does; `!=` and `===` need every occurrence and a present field; comparisons on an
absent field are false; `matches` is case-insensitive.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .table import _ABSENT, _ONE, NumColumn, Table, field_type, parse_int
from .tshark import field_catalogue


class Unsupported(Exception):
    """The Python evaluator cannot evaluate this display filter exactly like tshark."""


class QueryError(ValueError):
    """A malformed predicate (bad operator, bad operand) found before tshark runs."""


# --------------------------------------------------------------------------- value typing

_STR_TYPES = {"FT_STRING", "FT_STRINGZ", "FT_UINT_STRING", "FT_STRINGZPAD", "FT_STRINGZTRUNC"}
_BYTES_TYPES = {"FT_BYTES", "FT_UINT_BYTES", "FT_ETHER", "FT_EUI64", "FT_AX25", "FT_VINES", "FT_SYSTEM_ID"}
_INT_PREFIXES = ("FT_UINT", "FT_INT", "FT_FRAMENUM", "FT_BOOLEAN", "FT_CHAR")


def _kind(ftype: str) -> str:
    if ftype in _STR_TYPES:
        return "str"
    if ftype.startswith(_INT_PREFIXES) and ftype not in ("FT_UINT_STRING", "FT_UINT_BYTES"):
        return "int"
    if ftype in ("FT_FLOAT", "FT_DOUBLE", "FT_RELATIVE_TIME"):
        return "float"
    if ftype in ("FT_IPv4", "FT_IPv6"):
        return "ip"
    if ftype in _BYTES_TYPES:
        return "bytes"
    if ftype == "PROTOCOL":
        return "proto"
    return "other"


def _norm_bytes(s: str) -> str:
    return re.sub(r"[:\-.\s]", "", str(s)).lower()


def coerce(fieldname: str, lit: Any, *, quoted: bool = False) -> Any:
    """Turn a literal (from a filter or YAML) into the type of `fieldname`'s table values."""
    kind = _kind(field_type(fieldname))
    if kind == "int":
        if isinstance(lit, bool):
            return int(lit)
        if isinstance(lit, int):
            return lit
        s = str(lit)
        if s in ("True", "False", "true", "false") and not quoted:
            return 1 if s.lower() == "true" else 0
        try:
            return parse_int(s)
        except ValueError:
            raise Unsupported(f"{s!r} is not a number for {fieldname} (value-string names are left to tshark)") from None
    if kind == "float":
        try:
            return float(lit)
        except (TypeError, ValueError):
            raise Unsupported(f"{lit!r} is not a number for {fieldname}") from None
    if kind == "ip":
        s = str(lit)
        if "/" in s:
            raise Unsupported("CIDR")
        try:
            return str(ipaddress.ip_address(s))
        except ValueError:
            raise Unsupported(f"{s!r} is not an address (host names are left to tshark)") from None
    if kind == "bytes":
        return _norm_bytes(lit)
    if kind == "str":
        return str(lit)
    raise Unsupported(f"comparison on {fieldname} ({field_type(fieldname)})")


def _vals(table: Table, fieldname: str, row: int) -> tuple:
    v = table.values(fieldname, row)
    kind = _kind(field_type(fieldname))
    if kind == "bytes":
        return tuple(_norm_bytes(x) for x in v)
    if kind == "ip":
        return tuple(str(x) for x in v)
    return v


# --------------------------------------------------------------------------- predicates

class Pred:
    """A frame predicate: `p(table, row)` is true when row `row` matches, and `p.select(table, rows)`
    returns the rows of `rows` (ascending) that match, in order.

    Why both: a batch asks about every frame of a capture, and calling a closure per frame costs
    microseconds each (20,000 frames times a dozen queries was most of a batch's Python time).
    `select` evaluates a whole column at once with exactly the per-row semantics: a leaf computes
    its answer once per distinct cell (cells repeat: commands, flags, protocol chains), `and`
    evaluates each part only on the rows the previous parts kept, `or` only on the rows not yet
    matched, so every (part, row) pair evaluated is one the per-row call evaluates too."""

    __slots__ = ()

    def __call__(self, t: Table, r: int) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def select(self, t: Table, rows: Sequence[int]) -> list[int]:
        return [r for r in rows if self(t, r)]


def select(p: Callable[[Table, int], Any], t: Table, rows: Sequence[int]) -> list[int]:
    """The rows of `rows` that `p` holds for (a Pred column-wise, any other callable per row)."""
    if isinstance(p, Pred):
        return p.select(t, rows)
    return [r for r in rows if p(t, r)]


_MISS = object()


class Cell(Pred):
    """A predicate of one field's values in a frame: `fn(values)`, where values is the frame's cell
    (a tuple; empty when absent), normalized like `_vals` when `norm` (bytes, addresses)."""

    __slots__ = ("fname", "fn", "norm")

    def __init__(self, fname: str, fn: Callable[[tuple], Any], norm: bool = False):
        self.fname, self.fn, self.norm = fname, fn, norm

    def __call__(self, t: Table, r: int) -> Any:
        return self.fn(_vals(t, self.fname, r) if self.norm else t.values(self.fname, r))

    def _cell_fn(self) -> Callable[[tuple], Any]:
        fn = self.fn
        if not self.norm:
            return fn
        kind = _kind(field_type(self.fname))
        if kind == "bytes":
            return lambda v: fn(tuple(_norm_bytes(x) for x in v))
        if kind == "ip":
            return lambda v: fn(tuple(str(x) for x in v))
        return fn

    def select(self, t: Table, rows: Sequence[int]) -> list[int]:
        if not rows:
            return []
        col = t.columns[self.fname]
        fn = self._cell_fn()
        memo: dict = {}
        out: list[int] = []
        add = out.append
        if isinstance(col, NumColumn):  # typed arrays: no tuple per frame for the common one-value cell
            vals, state, other = col.vals, col.state, col.other
            absent = _MISS
            for r in rows:
                st = state[r]
                if st == _ONE:
                    v = vals[r]
                    hit = memo.get(v, _MISS)
                    if hit is _MISS:
                        hit = memo[v] = fn((v,))
                elif st == _ABSENT:
                    if absent is _MISS:
                        absent = fn(())
                    hit = absent
                else:
                    hit = fn(other[r])
                if hit:
                    add(r)
            return out
        for r in rows:
            cell = col[r]
            try:
                hit = memo.get(cell, _MISS)
            except TypeError:  # an unhashable cell: asked directly
                hit = fn(cell)
            else:
                if hit is _MISS:
                    hit = memo[cell] = fn(cell)
            if hit:
                add(r)
        return out


class Const(Pred):
    __slots__ = ("value",)

    def __init__(self, value: bool):
        self.value = value

    def __call__(self, t: Table, r: int) -> bool:
        return self.value

    def select(self, t: Table, rows: Sequence[int]) -> list[int]:
        return list(rows) if self.value else []


class InFrames(Pred):
    """Frames whose number is in a set (tshark's answer for a filter evaluated by tshark)."""

    __slots__ = ("frames",)

    def __init__(self, frames: set[int]):
        self.frames = frames

    def __call__(self, t: Table, r: int) -> bool:
        return t.numbers[r] in self.frames

    def select(self, t: Table, rows: Sequence[int]) -> list[int]:
        nums, frames = t.numbers, self.frames
        return [r for r in rows if nums[r] in frames]


class And(Pred):
    __slots__ = ("parts",)

    def __init__(self, parts: Sequence[Callable[[Table, int], Any]]):
        self.parts = list(parts)

    def __call__(self, t: Table, r: int) -> bool:
        return all(p(t, r) for p in self.parts)

    def select(self, t: Table, rows: Sequence[int]) -> list[int]:
        out = list(rows)
        for p in self.parts:
            if not out:
                break
            out = select(p, t, out)
        return out


class Or(Pred):
    __slots__ = ("parts",)

    def __init__(self, parts: Sequence[Callable[[Table, int], Any]]):
        self.parts = list(parts)

    def __call__(self, t: Table, r: int) -> bool:
        return any(p(t, r) for p in self.parts)

    def select(self, t: Table, rows: Sequence[int]) -> list[int]:
        rest = list(rows)
        matched: set[int] = set()
        for p in self.parts:
            if not rest:
                break
            hit = set(select(p, t, rest))
            if hit:
                matched |= hit
                rest = [r for r in rest if r not in hit]
        return [r for r in rows if r in matched]


class Not(Pred):
    __slots__ = ("inner",)

    def __init__(self, inner: Callable[[Table, int], Any]):
        self.inner = inner

    def __call__(self, t: Table, r: int) -> bool:
        return not self.inner(t, r)

    def select(self, t: Table, rows: Sequence[int]) -> list[int]:
        hit = set(select(self.inner, t, rows))
        return [r for r in rows if r not in hit]


# --------------------------------------------------------------------------- display filter parser

_TOKEN = re.compile(r"""\s*(?:
    (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<op>===|!==|==|!=|~=|>=|<=|&&|\|\||\^\^|[><!~&(){},\[\]])
  | (?P<word>[A-Za-z0-9_.:\-/$@]+)
)""", re.X)

_KEYWORDS = {"and", "or", "not", "eq", "ne", "gt", "lt", "ge", "le", "contains", "matches", "in",
             "any_eq", "all_eq", "any_ne", "all_ne", "bitwise_and", "xor"}
_REL = {"==": "any_eq", "eq": "any_eq", "any_eq": "any_eq", "!=": "all_ne", "ne": "all_ne",
        "all_ne": "all_ne", "===": "all_eq", "all_eq": "all_eq", "!==": "any_ne", "~=": "any_ne",
        "any_ne": "any_ne", ">": "gt", "gt": "gt", "<": "lt", "lt": "lt", ">=": "ge", "ge": "ge",
        "<=": "le", "le": "le"}
_CMP = {"any_eq": lambda a, b: a == b, "all_eq": lambda a, b: a == b, "all_ne": lambda a, b: a != b,
        "any_ne": lambda a, b: a != b, "gt": lambda a, b: a > b, "lt": lambda a, b: a < b,
        "ge": lambda a, b: a >= b, "le": lambda a, b: a <= b}


def tokenize(text: str) -> list[tuple[str, str]]:
    toks, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise Unsupported(f"unexpected character at {pos}: {text[pos:pos + 10]!r}")
        kind = m.lastgroup
        assert kind is not None  # every alternative of _TOKEN is a named group
        toks.append((kind, m.group(kind)))
        pos = m.end()
    return toks


def _looks_like_field(word: str) -> bool:
    return bool(re.match(r"^[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)*$", word)) and word not in _KEYWORDS


@dataclass
class _Parser:
    toks: list
    fields: set = field(default_factory=set)
    unknown: set = field(default_factory=set)
    i: int = 0

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else (None, None)

    def take(self):
        t = self.peek()
        self.i += 1
        return t

    def expect(self, val):
        k, v = self.take()
        if v != val:
            raise Unsupported(f"expected {val!r}, got {v!r}")

    def parse(self) -> Pred:
        if not self.toks:
            raise Unsupported("empty filter")
        p = self.or_expr()
        if self.i != len(self.toks):
            raise Unsupported(f"unexpected {self.peek()[1]!r}")
        return p

    def or_expr(self) -> Pred:
        parts = [self.and_expr()]
        while self.peek()[1] in ("or", "||"):
            self.take()
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else Or(parts)

    def and_expr(self) -> Pred:
        parts = [self.not_expr()]
        while self.peek()[1] in ("and", "&&"):
            self.take()
            parts.append(self.not_expr())
        return parts[0] if len(parts) == 1 else And(parts)

    def not_expr(self) -> Pred:
        if self.peek()[1] in ("not", "!"):
            self.take()
            return Not(self.not_expr())
        return self.atom()

    def atom(self) -> Pred:
        k, v = self.peek()
        if v == "(":
            self.take()
            p = self.or_expr()
            self.expect(")")
            return p
        if k != "word" or not _looks_like_field(v):
            raise Unsupported(f"{v!r} where a field was expected")
        self.take()
        fname = v
        if self.peek()[1] == "(":
            raise Unsupported(f"function {fname}()")
        if fname not in field_catalogue():
            self.unknown.add(fname)
            return Const(False)
        self.fields.add(fname)
        nk, nv = self.peek()
        if nv in ("[", "#"):
            raise Unsupported("slices and layer operators")
        if nv in _REL:
            self.take()
            return self.comparison(fname, _REL[nv])
        if nv == "in":
            self.take()
            return self.membership(fname)
        if nv == "contains":
            self.take()
            return self.contains(fname)
        if nv in ("matches", "~"):
            self.take()
            return self.matches(fname)
        if nv in ("&", "bitwise_and"):
            self.take()
            mask = coerce(fname, self.literal()[0])
            if not isinstance(mask, int):
                raise Unsupported("& on a non-integer field")
            return Cell(fname, lambda vs: any(x & mask for x in vs))
        return Cell(fname, bool)

    def literal(self) -> tuple[str, bool]:
        k, v = self.take()
        if k == "str":
            return _unquote(v), True
        if k == "word":
            if v in field_catalogue() and not re.match(r"^[0-9]", v):
                raise Unsupported("field-to-field comparison")
            return v, False
        raise Unsupported(f"{v!r} where a value was expected")

    def comparison(self, fname: str, op: str) -> Pred:
        lit, quoted = self.literal()
        if _kind(field_type(fname)) == "proto":
            raise Unsupported("comparison on a protocol")
        val = coerce(fname, lit, quoted=quoted)
        cmp = _CMP[op]
        if op in ("all_ne", "all_eq"):
            return Cell(fname, lambda vs: bool(vs) and all(_safe(cmp, x, val) for x in vs), norm=True)
        return Cell(fname, lambda vs: any(_safe(cmp, x, val) for x in vs), norm=True)

    def membership(self, fname: str) -> Pred:
        self.expect("{")
        singles, ranges = set(), []
        while self.peek()[1] != "}":
            if self.peek()[1] is None:
                raise Unsupported("unterminated set")
            lit, quoted = self.literal()
            if not quoted and ".." in lit:
                lo, hi = lit.split("..", 1)
                ranges.append((coerce(fname, lo), coerce(fname, hi)))
            else:
                singles.add(coerce(fname, lit, quoted=quoted))
            if self.peek()[1] == ",":
                self.take()
            elif self.peek()[1] != "}":
                raise Unsupported("set elements must be separated by commas in tshark 4.0")
        self.take()

        return Cell(fname, lambda vs: any(x in singles or any(_safe(lambda a, b: b[0] <= a <= b[1], x, rg)
                                                               for rg in ranges) for x in vs), norm=True)

    def contains(self, fname: str) -> Pred:
        lit, quoted = self.literal()
        kind = _kind(field_type(fname))
        if kind == "str":
            return Cell(fname, lambda vs: any(lit in x for x in vs))
        if kind == "bytes":
            needle = _norm_bytes(lit) if not quoted else lit.encode().hex()
            return Cell(fname, lambda vs: any(needle in x for x in vs), norm=True)
        raise Unsupported(f"contains on {field_type(fname)}")

    def matches(self, fname: str) -> Pred:
        lit, quoted = self.literal()
        if _kind(field_type(fname)) != "str" or not quoted:
            raise Unsupported("matches on a non-string field")
        flags: int = re.IGNORECASE
        if lit.startswith("(?-i)"):
            lit, flags = lit[5:], 0
        try:
            rx = re.compile(lit, flags)
        except re.error as e:
            raise Unsupported(f"regex: {e}") from None
        return Cell(fname, lambda vs: any(rx.search(x) for x in vs))


def _safe(cmp, a, b) -> bool:
    try:
        return bool(cmp(a, b))
    except TypeError:  # a value tshark printed in a form we could not type (kept as str)
        return False


def _unquote(s: str) -> str:
    body = s[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "r": "\r"}.get(m.group(1), m.group(1)), body)


@dataclass
class CompiledFilter:
    text: str
    pred: Pred | None  # None: left to tshark (`Unsupported`)
    fields: set
    unknown: set
    why_unsupported: str = ""


def compile_filter(text: str) -> CompiledFilter:
    """Parse a display filter. Unknown field names are collected (the caller reports them)."""
    p = _Parser(tokenize_or_empty(text))
    try:
        pred = p.parse()
        return CompiledFilter(text, pred, p.fields, p.unknown)
    except Unsupported as e:
        # still report the names we saw, so a typo is named even in an unsupported filter
        words = {v for k, v in p.toks if k == "word" and _looks_like_field(v) and "." in v}
        unknown = {w for w in words if w not in field_catalogue()}
        return CompiledFilter(text, None, words - unknown, unknown | p.unknown, str(e))


def tokenize_or_empty(text: str) -> list:
    try:
        return tokenize(text)
    except Unsupported:
        return []


# --------------------------------------------------------------------------- field predicates

MATCH_OPS = ("eq", "ne", "in", "contains", "regex", "gt", "lt", "ge", "le", "len", "exists")


def field_predicate(fname: str, spec: Any) -> Pred:
    """A predicate for `{field: spec}`: spec is a value (eq), a list (exact occurrences), or a dict
    of operators. Operators other than `ne`, `len` and `exists` hold if any occurrence does; `ne`
    holds if no occurrence equals (an absent field is not equal); `len` counts occurrences."""
    if isinstance(spec, dict):
        return And([_op_pred(fname, op, arg) for op, arg in spec.items()])
    if isinstance(spec, list | tuple):
        want = tuple(_coerce_loose(fname, x) for x in spec)
        return Cell(fname, lambda vs: vs == want, norm=True)
    return _op_pred(fname, "eq", spec)


def _coerce_loose(fname: str, v: Any) -> Any:
    try:
        return coerce(fname, v, quoted=isinstance(v, str))
    except Unsupported:
        return v


def _num(fname: str, op: str, arg: Any):
    if isinstance(arg, bool) or not isinstance(arg, int | float):
        try:
            return parse_int(str(arg)) if not isinstance(arg, float) else arg
        except ValueError:
            raise QueryError(f"{fname}: {op} needs a number, got {arg!r}") from None
    return arg


def _op_pred(fname: str, op: str, arg: Any) -> Pred:
    if op not in MATCH_OPS:
        raise QueryError(f"{fname}: unknown operator {op!r} (known: {', '.join(MATCH_OPS)})")
    if op == "eq":
        val = _coerce_loose(fname, arg)
        return Cell(fname, lambda vs: val in vs, norm=True)
    if op == "ne":
        val = _coerce_loose(fname, arg)
        return Cell(fname, lambda vs: val not in vs, norm=True)
    if op == "in":
        if not isinstance(arg, list | tuple | set):
            raise QueryError(f"{fname}: in needs a list, got {arg!r}")
        vals = {_coerce_loose(fname, x) for x in arg}
        return Cell(fname, lambda vs: any(x in vals for x in vs), norm=True)
    if op == "contains":
        if _kind(field_type(fname)) in ("str", "other", "proto"):
            return Cell(fname, lambda vs: any(str(arg) in str(x) for x in vs))
        val = _coerce_loose(fname, arg)
        return Cell(fname, lambda vs: any(x == val or (isinstance(x, str) and str(val) in x) for x in vs), norm=True)
    if op == "regex":
        try:
            rx = re.compile(str(arg))
        except re.error as e:
            raise QueryError(f"{fname}: bad regex {arg!r}: {e}") from None
        return Cell(fname, lambda vs: any(rx.search(str(x)) for x in vs))
    if op in ("gt", "lt", "ge", "le"):
        n = _num(fname, op, arg)
        cmp = _CMP[op]
        return Cell(fname, lambda vs: any(_safe(cmp, x, n) for x in vs))
    if op == "len":
        if isinstance(arg, dict):
            subs = []
            for sop, sarg in arg.items():
                if sop not in ("eq", "ne", "gt", "lt", "ge", "le"):
                    raise QueryError(f"{fname}: len supports eq/ne/gt/lt/ge/le, not {sop!r}")
                subs.append((_CMP.get(sop) or _CMP["any_eq" if sop == "eq" else "any_ne"], _num(fname, sop, sarg)))
            return Cell(fname, lambda vs: all(c(len(vs), n) for c, n in subs))
        n = _num(fname, op, arg)
        return Cell(fname, lambda vs: len(vs) == n)
    # exists
    want = bool(arg)
    return Cell(fname, lambda vs: bool(vs) == want)


# --------------------------------------------------------------------------- Query

@dataclass
class Query:
    """A frame selection: a display filter and/or field predicates, all of which must hold."""

    filter: str | None = None
    match: dict = field(default_factory=dict)

    def __post_init__(self):
        self._compiled = compile_filter(self.filter) if self.filter else None
        self._preds = [field_predicate(f, s) for f, s in self.match.items()]

    @property
    def compiled(self) -> CompiledFilter | None:
        return self._compiled

    def fields(self) -> set[str]:
        out = set(self.match)
        if self._compiled:
            out |= self._compiled.fields
        return out

    def unknown_fields(self) -> set[str]:
        cat = field_catalogue()
        out = {f for f in self.match if f not in cat}
        if self._compiled:
            out |= self._compiled.unknown
        return out

    @property
    def needs_tshark(self) -> bool:
        return self._compiled is not None and self._compiled.pred is None

    def rows(self, table: Table, tshark_frames: dict[str, set[int]] | None = None) -> list[int]:
        """Row indices (in frame order) that satisfy the query."""
        preds: list[Pred] = list(self._preds)
        if self._compiled:
            if self._compiled.pred is not None:
                preds.insert(0, self._compiled.pred)
            else:
                assert self.filter is not None  # _compiled is set only from a filter
                preds.insert(0, InFrames((tshark_frames or {})[self.filter]))
        return And(preds).select(table, range(len(table)))

    def describe(self) -> str:
        parts = []
        if self.filter:
            parts.append(repr(self.filter))
        if self.match:
            parts.append("{" + ", ".join(f"{k}: {v!r}" for k, v in self.match.items()) + "}")
        return " and ".join(parts) or "all frames"

    def __str__(self) -> str:
        return self.describe()


def as_query(q: Any) -> Query:
    """Accept a Query, a display filter string, a {field: spec} dict, or a dict with 'filter'/'match'."""
    if isinstance(q, Query):
        return q
    if q is None:
        return Query()
    if isinstance(q, str):
        return Query(filter=q)
    if isinstance(q, dict):
        if set(q) <= {"filter", "match"}:
            return Query(filter=q.get("filter"), match=dict(q.get("match") or {}))
        return Query(match=dict(q))
    raise QueryError(f"cannot make a frame query from {q!r}")


# --------------------------------------------------------------------------- grouping

GROUP_KEYS = {"tcp": "tcp.stream", "tcp.stream": "tcp.stream", "quic": "quic.connection.number",
              "quic.connection": "quic.connection.number", "quic.connection.number": "quic.connection.number",
              "smb_session": "smb2.sesid", "session": "smb2.sesid", "smb2.sesid": "smb2.sesid",
              "smb_tree": "smb2.tid", "tree": "smb2.tid", "smb2.tid": "smb2.tid"}


def group_field(name: str) -> str:
    """The tshark field behind a grouping name (tcp, quic, smb_session, smb_tree, or any field)."""
    return GROUP_KEYS.get(name, name)


def groups(table: Table, key: str, rows: Iterable[int] | None = None) -> dict[Any, list[int]]:
    """Rows per value of `key` (a frame with several values belongs to each). Session and tree id 0
    (before SESSION_SETUP completes) is not a group."""
    fname = group_field(key)
    skip_zero = fname in ("smb2.sesid", "smb2.tid")
    out: dict[Any, list[int]] = {}
    todo = range(len(table)) if rows is None else rows
    col = None
    keys_of: dict = {}  # cell -> its group keys (cells repeat: one per stream/session)
    for r in todo:
        if col is None:
            col = table.columns[fname]
        cell = col[r]
        try:
            keys = keys_of.get(cell)
        except TypeError:  # an unhashable cell
            keys = None
        if keys is None:
            keys = [v for v in dict.fromkeys(cell) if not (skip_zero and v == 0)]
            try:
                keys_of[cell] = keys
            except TypeError:
                pass
        for v in keys:
            out.setdefault(v, []).append(r)
    return out
