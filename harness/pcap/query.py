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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .table import Table, field_type, parse_int
from .tshark import field_catalogue

Pred = Callable[[Table, int], bool]


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
        return parts[0] if len(parts) == 1 else (lambda t, r: any(p(t, r) for p in parts))

    def and_expr(self) -> Pred:
        parts = [self.not_expr()]
        while self.peek()[1] in ("and", "&&"):
            self.take()
            parts.append(self.not_expr())
        return parts[0] if len(parts) == 1 else (lambda t, r: all(p(t, r) for p in parts))

    def not_expr(self) -> Pred:
        if self.peek()[1] in ("not", "!"):
            self.take()
            inner = self.not_expr()
            return lambda t, r: not inner(t, r)
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
            return lambda t, r: False
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
            return lambda t, r: any(x & mask for x in t.values(fname, r))
        return lambda t, r: bool(t.values(fname, r))

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
            def p(t, r):
                vs = _vals(t, fname, r)
                return bool(vs) and all(_safe(cmp, x, val) for x in vs)
        else:
            def p(t, r):
                return any(_safe(cmp, x, val) for x in _vals(t, fname, r))
        return p

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

        def p(t, r):
            return any(x in singles or any(_safe(lambda a, b: b[0] <= a <= b[1], x, rg) for rg in ranges)
                       for x in _vals(t, fname, r))
        return p

    def contains(self, fname: str) -> Pred:
        lit, quoted = self.literal()
        kind = _kind(field_type(fname))
        if kind == "str":
            return lambda t, r: any(lit in x for x in t.values(fname, r))
        if kind == "bytes":
            needle = _norm_bytes(lit) if not quoted else lit.encode().hex()
            return lambda t, r: any(needle in x for x in _vals(t, fname, r))
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
        return lambda t, r: any(rx.search(x) for x in t.values(fname, r))


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
        preds = [_op_pred(fname, op, arg) for op, arg in spec.items()]
        return lambda t, r: all(p(t, r) for p in preds)
    if isinstance(spec, list | tuple):
        want = tuple(_coerce_loose(fname, x) for x in spec)
        return lambda t, r: _vals(t, fname, r) == want
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
        return lambda t, r: val in _vals(t, fname, r)
    if op == "ne":
        val = _coerce_loose(fname, arg)
        return lambda t, r: val not in _vals(t, fname, r)
    if op == "in":
        if not isinstance(arg, list | tuple | set):
            raise QueryError(f"{fname}: in needs a list, got {arg!r}")
        vals = {_coerce_loose(fname, x) for x in arg}
        return lambda t, r: any(x in vals for x in _vals(t, fname, r))
    if op == "contains":
        if _kind(field_type(fname)) in ("str", "other", "proto"):
            return lambda t, r: any(str(arg) in str(x) for x in t.values(fname, r))
        val = _coerce_loose(fname, arg)
        return lambda t, r: any(x == val or (isinstance(x, str) and str(val) in x) for x in _vals(t, fname, r))
    if op == "regex":
        try:
            rx = re.compile(str(arg))
        except re.error as e:
            raise QueryError(f"{fname}: bad regex {arg!r}: {e}") from None
        return lambda t, r: any(rx.search(str(x)) for x in t.values(fname, r))
    if op in ("gt", "lt", "ge", "le"):
        n = _num(fname, op, arg)
        cmp = _CMP[op]
        return lambda t, r: any(_safe(cmp, x, n) for x in t.values(fname, r))
    if op == "len":
        if isinstance(arg, dict):
            subs = []
            for sop, sarg in arg.items():
                if sop not in ("eq", "ne", "gt", "lt", "ge", "le"):
                    raise QueryError(f"{fname}: len supports eq/ne/gt/lt/ge/le, not {sop!r}")
                subs.append((_CMP.get(sop) or _CMP["any_eq" if sop == "eq" else "any_ne"], _num(fname, sop, sarg)))
            return lambda t, r: all(c(len(t.values(fname, r)), n) for c, n in subs)
        n = _num(fname, op, arg)
        return lambda t, r: len(t.values(fname, r)) == n
    # exists
    want = bool(arg)
    return lambda t, r: bool(t.values(fname, r)) == want


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
        preds = list(self._preds)
        if self._compiled:
            if self._compiled.pred is not None:
                preds.insert(0, self._compiled.pred)
            else:
                assert self.filter is not None  # _compiled is set only from a filter
                frames = (tshark_frames or {})[self.filter]
                nums = table.numbers
                preds.insert(0, lambda t, r: nums[r] in frames)
        return [r for r in range(len(table)) if all(p(table, r) for p in preds)]

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
    for r in (range(len(table)) if rows is None else rows):
        for v in dict.fromkeys(table.values(fname, r)):
            if skip_zero and v == 0:
                continue
            out.setdefault(v, []).append(r)
    return out
