"""Assertion objects and their failure messages.

Why objects and not functions that raise: a batch must collect every assertion first (to know the
union of fields for the single tshark pass), then evaluate them all and report every failure at
once. Each assertion declares the queries and fields it needs and evaluates to a `Result` that
names the frames involved; `format_failure` turns a failed result into expected-vs-actual text
with a short decoded excerpt around those frames.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .query import Query, _coerce_loose, as_query, field_predicate, group_field, groups
from .table import Table
from .tshark import field_catalogue

MAX_LISTED = 20


@dataclass
class Context:
    """What an assertion evaluates against: the table, plus frame sets tshark computed for filters
    the Python evaluator does not support."""

    table: Table
    tshark_frames: dict[str, set[int]] = field(default_factory=dict)

    def rows(self, q: Query) -> list[int]:
        return q.rows(self.table, self.tshark_frames)

    def nums(self, rows: Sequence[int]) -> list[int]:
        return [self.table.numbers[r] for r in rows]


@dataclass
class Result:
    assertion: Assertion
    ok: bool
    expected: str = ""
    actual: str = ""
    frames: list[int] = field(default_factory=list)
    skipped: str = ""

    @property
    def name(self) -> str:
        return self.assertion.label()


def frame_list(nums: Sequence[int]) -> str:
    nums = list(nums)
    if not nums:
        return "no frames"
    head = ", ".join(map(str, nums[:MAX_LISTED]))
    more = f" … and {len(nums) - MAX_LISTED} more" if len(nums) > MAX_LISTED else ""
    return f"frame{'s' if len(nums) > 1 else ''} {head}{more}"


class Assertion:
    """Base class. Subclasses set `kind` and implement `queries()` and `evaluate()`."""

    kind = "assertion"
    name: str | None = None
    where: str = ""  # file:line of a YAML check, for messages

    def queries(self) -> list[Query]:
        return []

    def fields(self) -> set[str]:
        out: set[str] = set()
        for q in self.queries():
            out |= q.fields()
        return out

    def label(self) -> str:
        base = self.name or f"{self.kind} {self.describe()}"
        return f"{self.where}: {base}" if self.where else base

    def describe(self) -> str:
        return ""

    def evaluate(self, ctx: Context) -> Result:  # pragma: no cover - abstract
        raise NotImplementedError

    def named(self, name: str) -> Assertion:
        self.name = name
        return self


def _bounds_text(eq, min_, max_) -> str:
    if eq is not None:
        return "none (absent)" if eq == 0 else f"exactly {eq}"
    if min_ is not None and max_ is not None:
        return f"between {min_} and {max_}"
    if min_ is not None:
        return f"at least {min_}"
    if max_ is not None:
        return f"at most {max_}"
    return "any number"


def _in_bounds(n: int, eq, min_, max_) -> bool:
    return (eq is None or n == eq) and (min_ is None or n >= min_) and (max_ is None or n <= max_)


class Count(Assertion):
    """The number of frames matching `q` is `eq` (0 = absent) / at least `min` / at most `max`
    (no bound given: at least 1); with `per` (tcp, quic, smb_session, smb_tree or a field), in
    every group of that key found anywhere in the capture (session/tree id 0 excluded)."""

    kind = "count"

    def __init__(self, q: Any, eq: int | None = None, min: int | None = None, max: int | None = None,
                 per: str | None = None, name: str | None = None):
        if eq is None and min is None and max is None:
            min = 1
        self.q, self.eq, self.min, self.max, self.per, self.name = as_query(q), eq, min, max, per, name

    def queries(self):
        return [self.q]

    def fields(self):
        return super().fields() | ({group_field(self.per)} if self.per else set())

    def describe(self):
        per = f" per {self.per}" if self.per else ""
        return f"{self.q}{per}"

    def evaluate(self, ctx):
        rows = ctx.rows(self.q)
        want = _bounds_text(self.eq, self.min, self.max)
        if not self.per:
            n = len(rows)
            ok = _in_bounds(n, self.eq, self.min, self.max)
            return Result(self, ok, f"{want} frame(s) matching {self.q}",
                          f"{n} ({frame_list(ctx.nums(rows))})", ctx.nums(rows))
        all_groups = groups(ctx.table, self.per)
        if not all_groups:
            return Result(self, False, f"{want} per {self.per}", f"no {self.per} groups in the capture")
        matching = set(rows)
        bad, frames = [], []
        for key, grows in all_groups.items():
            hit = [r for r in grows if r in matching]
            if not _in_bounds(len(hit), self.eq, self.min, self.max):
                bad.append(f"{self.per} {_fmt_key(key)}: {len(hit)} ({frame_list(ctx.nums(hit))})")
                frames += ctx.nums(hit) or ctx.nums(grows[:1])
        return Result(self, not bad, f"{want} frame(s) matching {self.q} in each of {len(all_groups)} "
                      f"{self.per} group(s)", "; ".join(bad) or "all groups conform", sorted(set(frames)))


def _fmt_key(k) -> str:
    return f"0x{k:x}" if isinstance(k, int) and k > 0xFFFF else str(k)


def Absent(q: Any, name: str | None = None) -> Count:
    """No frame matches `q`."""
    c = Count(q, eq=0, name=name)
    c.kind = "absent"
    return c


class _Edge(Assertion):
    """First/Last: the first (last) frame matching `q` also satisfies `then`."""

    which = "first"

    def __init__(self, q: Any, then: Any, name: str | None = None):
        self.q, self.then, self.name = as_query(q), as_query(then), name
        self.kind = self.which

    def queries(self):
        return [self.q, self.then]

    def describe(self):
        return f"{self.q} is {self.then}"

    def evaluate(self, ctx):
        rows = ctx.rows(self.q)
        exp = f"the {self.which} frame matching {self.q} to match {self.then}"
        if not rows:
            return Result(self, False, exp, f"no frame matches {self.q}")
        r = rows[0] if self.which == "first" else rows[-1]
        ok = r in set(ctx.rows(self.then))
        n = ctx.table.numbers[r]
        return Result(self, ok, exp, f"frame {n} {'matches' if ok else 'does not match'}", [n])


class First(_Edge):
    which = "first"


class Last(_Edge):
    which = "last"


def _window_ok(ctx: Context, ra: int, rb: int, frames: int | None, ms: float | None) -> bool:
    if frames is not None and ctx.table.numbers[rb] - ctx.table.numbers[ra] > frames:
        return False
    if ms is not None and (ctx.table.time(rb) - ctx.table.time(ra)) * 1000.0 > ms + 1e-6:
        return False
    return True


def _window_text(frames, ms) -> str:
    parts = ([f"{frames} frames"] if frames is not None else []) + ([f"{ms:g} ms"] if ms is not None else [])
    return f" within {' and '.join(parts)}" if parts else ""


class Before(Assertion):
    """A frame matching `a` comes before the first frame matching `b` that follows it, optionally
    within N frames and/or N milliseconds of the first `a`."""

    kind = "order"

    def __init__(self, a: Any, b: Any, within_frames: int | None = None, within_ms: float | None = None,
                 name: str | None = None):
        self.a, self.b, self.frames, self.ms, self.name = as_query(a), as_query(b), within_frames, within_ms, name

    def queries(self):
        return [self.a, self.b]

    def describe(self):
        return f"{self.a} before {self.b}{_window_text(self.frames, self.ms)}"

    def evaluate(self, ctx):
        ra, rb = ctx.rows(self.a), ctx.rows(self.b)
        exp = f"{self.a} then {self.b}{_window_text(self.frames, self.ms)}"
        if not ra:
            return Result(self, False, exp, f"no frame matches {self.a}", ctx.nums(rb[:3]))
        after = [r for r in rb if r > ra[0]]
        if not after:
            where = f"; {self.b} only at {frame_list(ctx.nums(rb))}" if rb else f"; no frame matches {self.b}"
            return Result(self, False, exp, f"first {self.a} at frame {ctx.table.numbers[ra[0]]}, nothing after"
                          + where, ctx.nums([ra[0]] + rb[:3]))
        a0, b0 = ra[0], after[0]
        na, nb = ctx.table.numbers[a0], ctx.table.numbers[b0]
        gap = f"{nb - na} frames, {(ctx.table.time(b0) - ctx.table.time(a0)) * 1000:.3f} ms"
        ok = _window_ok(ctx, a0, b0, self.frames, self.ms)
        return Result(self, ok, exp, f"frame {na} then frame {nb} ({gap})", [na, nb])


class FollowedBy(Assertion):
    """Every frame matching `a` is followed by a frame matching `b` (optionally within a window)."""

    kind = "followed_by"

    def __init__(self, a: Any, b: Any, within_frames: int | None = None, within_ms: float | None = None,
                 name: str | None = None):
        self.a, self.b, self.frames, self.ms, self.name = as_query(a), as_query(b), within_frames, within_ms, name

    def queries(self):
        return [self.a, self.b]

    def describe(self):
        return f"each {self.a} followed by {self.b}{_window_text(self.frames, self.ms)}"

    def evaluate(self, ctx):
        ra, rb = ctx.rows(self.a), ctx.rows(self.b)
        exp = f"every {self.a} followed by {self.b}{_window_text(self.frames, self.ms)}"
        if not ra:
            return Result(self, False, exp, f"no frame matches {self.a}")
        lonely = []
        for r in ra:
            nxt = next((x for x in rb if x > r), None)
            if nxt is None or not _window_ok(ctx, r, nxt, self.frames, self.ms):
                lonely.append(r)
        return Result(self, not lonely, exp,
                      f"{len(lonely)} of {len(ra)} not followed in time: {frame_list(ctx.nums(lonely))}"
                      if lonely else f"all {len(ra)} followed", ctx.nums(lonely))


class InOrder(Assertion):
    """Frames matching each step occur in this order (a subsequence of the capture); with `per`,
    in every group of that key."""

    kind = "sequence"

    def __init__(self, steps: Sequence[Any], per: str | None = None, name: str | None = None):
        self.steps = [as_query(s) for s in steps]
        self.per, self.name = per, name

    def queries(self):
        return list(self.steps)

    def fields(self):
        return super().fields() | ({group_field(self.per)} if self.per else set())

    def describe(self):
        return " → ".join(str(s) for s in self.steps) + (f" per {self.per}" if self.per else "")

    def _walk(self, ctx, allowed: set[int] | None):
        pos, found = -1, []
        for i, s in enumerate(self.steps):
            nxt = next((r for r in ctx.rows(s) if r > pos and (allowed is None or r in allowed)), None)
            if nxt is None:
                return i, found
            found.append(nxt)
            pos = nxt
        return len(self.steps), found

    def evaluate(self, ctx):
        exp = "in order: " + " → ".join(str(s) for s in self.steps)
        scopes = ({None: None} if not self.per
                  else {k: set(v) for k, v in groups(ctx.table, self.per).items()})
        if not scopes:
            return Result(self, False, exp, f"no {self.per} groups in the capture")
        bad, frames = [], []
        for key, allowed in scopes.items():
            done, found = self._walk(ctx, allowed)
            if done < len(self.steps):
                scope = f"{self.per} {_fmt_key(key)}: " if self.per else ""
                got = ", ".join(f"{s} at frame {ctx.table.numbers[r]}" for s, r in zip(self.steps, found, strict=False))
                bad.append(f"{scope}step {done + 1} ({self.steps[done]}) not found after "
                           + (got if got else "the start"))
                frames += ctx.nums(found)
        return Result(self, not bad, exp, "; ".join(bad) or "all steps found", frames)


class Values(Assertion):
    """Values of `field` across the frames matching `q` (all occurrences, in frame order):
    `equals` (the exact list), `all` / `any` (a value or operator dict every/some value satisfies),
    `distinct` (number of distinct values: int or {eq,min,max}), `increasing` (strictly)."""

    kind = "values"

    def __init__(self, field: str, q: Any = None, *, equals: list | None = None, all: Any = None,
                 any: Any = None, distinct: Any = None, increasing: bool | None = None, name: str | None = None):
        self.field, self.q = field, as_query(q)
        self.equals, self.all, self.any, self.distinct, self.increasing = equals, all, any, distinct, increasing
        self.name = name
        self._all = field_predicate(field, all) if all is not None else None
        self._any = field_predicate(field, any) if any is not None else None

    def queries(self):
        return [self.q]

    def fields(self):
        return super().fields() | {self.field}

    def describe(self):
        return f"of {self.field} where {self.q}"

    def evaluate(self, ctx):
        t = ctx.table
        rows = [r for r in ctx.rows(self.q) if t.values(self.field, r)]
        pairs = [(t.numbers[r], v) for r in rows for v in t.values(self.field, r)]
        vals = [v for _, v in pairs]
        shown = _show_values(pairs, fieldname=self.field)
        problems, frames = [], []
        if self.equals is not None:
            want = [_coerce_loose(self.field, x) for x in self.equals]
            if vals != want:
                problems.append(f"values {shown}, expected {want!r}")
                frames += [n for n, _ in pairs]
        if self._all is not None:
            badr = [r for r in rows if not _each_value_ok(self._all, t, self.field, r)]
            if badr:
                problems.append(f"{frame_list(ctx.nums(badr))} do not satisfy {self.all!r}: "
                                + _show_values([(t.numbers[r], v) for r in badr for v in t.values(self.field, r)], fieldname=self.field))
                frames += ctx.nums(badr)
        if self._any is not None and not any(self._any(t, r) for r in rows):
            problems.append(f"no value satisfies {self.any!r}; values {shown}")
            frames += [n for n, _ in pairs]
        if self.distinct is not None:
            d = len(set(vals))
            spec = self.distinct if isinstance(self.distinct, dict) else {"eq": self.distinct}
            if not _in_bounds(d, spec.get("eq"), spec.get("min"), spec.get("max")):
                problems.append(f"{d} distinct value(s) {sorted(set(vals), key=str)!r}, expected "
                                f"{_bounds_text(spec.get('eq'), spec.get('min'), spec.get('max'))}")
                frames += [n for n, _ in pairs]
        if self.increasing:
            for (n1, v1), (n2, v2) in zip(pairs, pairs[1:], strict=False):
                try:
                    bad = not v2 > v1
                except TypeError:
                    bad = True
                if bad:
                    problems.append(f"not increasing: {v1!r} (frame {n1}) then {v2!r} (frame {n2})")
                    frames += [n1, n2]
                    break
        if not rows and (self._any is not None or self.equals or self.increasing is not None):
            problems = problems or [f"no frame where {self.q} has {self.field}"]
        exp = ", ".join(f"{k}={v!r}" for k, v in (("equals", self.equals), ("all", self.all), ("any", self.any),
                        ("distinct", self.distinct), ("increasing", self.increasing)) if v is not None)
        return Result(self, not problems, f"{self.field} values where {self.q}: {exp}",
                      "; ".join(problems) or f"values {shown}", sorted(set(frames)))


def _each_value_ok(pred, t: Table, fieldname: str, r: int) -> bool:
    """`all` checks each occurrence on its own: a one-value view of the row."""
    vals = t.values(fieldname, r)
    one = Table([t.numbers[r]], {fieldname: [()]})
    for v in vals:
        one.columns[fieldname][0] = (v,)
        if not pred(one, 0):
            return False
    return True


def _show_values(pairs, limit: int = 12, fieldname: str = "") -> str:
    hexa = is_hex_field(fieldname)
    shown = ", ".join(f"{_fmt_val(v, hexa)}@{n}" for n, v in pairs[:limit])
    return "[" + shown + (f", … {len(pairs) - limit} more" if len(pairs) > limit else "") + "]"


def _fmt_val(v, hexa: bool = False) -> str:
    return hex(v) if isinstance(v, int) and (hexa or v > 0xFFFF) else repr(v)


def is_hex_field(fieldname: str) -> bool:
    info = field_catalogue().get(fieldname)
    return bool(info and info.base == "BASE_HEX")


class Custom(Assertion):
    """An assertion written as a Python function `fn(ctx) -> Result-like (ok, expected, actual, frames)`,
    for catalogue checks that the primitives do not express. `needs` lists its fields."""

    kind = "check"

    def __init__(self, name: str, fn: Callable[[Context], tuple], needs: Sequence[str] = (),
                 queries: Sequence[Any] = ()):
        self.name, self.fn, self.needs, self._queries = name, fn, set(needs), [as_query(q) for q in queries]

    def queries(self):
        return list(self._queries)

    def fields(self):
        return super().fields() | self.needs

    def evaluate(self, ctx):
        ok, expected, actual, frames = self.fn(ctx)
        return Result(self, ok, expected, actual, list(frames))


# --------------------------------------------------------------------------- failure text

def excerpt_frames(res: Result, table: Table, context: int = 1, limit: int = 6) -> list[int]:
    """Frame numbers to show around a failure: each named frame with `context` neighbours."""
    out: list[int] = []
    for n in res.frames[:limit]:
        r = table.row_of.get(n)
        if r is None:
            continue
        for rr in range(max(0, r - context), min(len(table), r + context + 1)):
            if table.numbers[rr] not in out:
                out.append(table.numbers[rr])
    return sorted(out)


def format_failure(res: Result, summaries: dict[int, str], table: Table) -> str:
    lines = [f"{res.name}",
             f"    expected: {res.expected}",
             f"    actual:   {res.actual}"]
    if res.frames:
        lines.append(f"    {frame_list(sorted(set(res.frames)))}")
    shown = excerpt_frames(res, table)
    if shown and summaries:
        marked = set(res.frames)
        lines.append("    excerpt:")
        prev = None
        for n in shown:
            if prev is not None and n != prev + 1:
                lines.append("      ...")
            lines.append(f"    {'>' if n in marked else ' '} {summaries.get(n, f'{n:>6} (no summary)')}")
            prev = n
    return "\n".join(lines)


class AllOf(Assertion):
    """Several assertions reported as one (for catalogue checks built from primitives)."""

    kind = "all_of"

    def __init__(self, name: str, *parts: Assertion):
        self.name, self.parts = name, list(parts)

    def queries(self):
        return [q for p in self.parts for q in p.queries()]

    def fields(self):
        return set().union(*(p.fields() for p in self.parts)) if self.parts else set()

    def evaluate(self, ctx):
        results = [p.evaluate(ctx) for p in self.parts]
        bad = [r for r in results if not r.ok]
        shown = bad or results
        return Result(self, not bad, "; ".join(r.expected for r in results),
                      "; ".join(r.actual for r in shown), sorted({n for r in shown for n in r.frames}))
