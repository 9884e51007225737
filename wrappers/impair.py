"""Seeded, reproducible network impairments: the spec, the sans-IO deciders and the process-wide config.

Why this module looks the way it does:

- **Sans-IO.** :class:`DatagramImpairer` and :class:`StreamImpairer` never touch a socket, a clock or a
  thread. The caller passes ``now`` (``time.monotonic()``, the clock of :mod:`wrappers.timers`) and gets
  back a *fate*: what to deliver, when, and whether to rebind or cut first. The socket wrapper carries it
  out (delayed deliveries go to :func:`wrappers.timers.schedule`, the application is never slept), and
  tests drive the same code with a fake clock.
- **Reproducible.** The same seed gives the same fate sequence, run after run. Every flow (stream_key)
  and direction has its own random streams, derived from ``(seed, direction, stream_key, aspect)`` with
  SHA-512 into ``random.Random`` (independent of ``PYTHONHASHSEED``), so two sockets never share a
  stream and their interleaving cannot change each other's fates. Each *aspect* (loss, dup, reorder,
  delay, corrupt) has its own stream too, and draws a fixed amount per datagram whether or not it is
  dropped: adding ``dup=1%`` to a spec does not change which datagrams are lost.
- **What the pcap shows is what the wire carried**: the wrapper records a datagram when it is actually
  delivered (after delay, duplicated, corrupted, from the rebound port); dropped datagrams are not
  recorded. The fate log (``impairer.history``) says why each one went missing.

Spec string (``WIRECHECK_IMPAIR``)
==================================

::

    WIRECHECK_IMPAIR='seed=42; out: loss=10% burst=4 drop=3,7-9 dup=1% reorder=2% reorder_delay=15ms
                      delay=20ms jitter=5ms corrupt=0.5% blackhole=2s+1s,10s+500ms rebind=port@100;
                      in: loss=5%; match: udp:443'

- Clauses are separated by ``;``. ``seed=N`` (an integer, default 0) is global and may be given once.
- ``out:`` (what this process sends) and ``in:`` (what it receives) are followed by ``name=value``
  fields separated by spaces. An empty section (``in:``) means "no impairment in that direction".
- ``match: SEL,SEL...`` restricts the rule set to flows where a selector matches. ``SEL`` is ``udp``,
  ``tcp``, ``udp:PORT``, ``tcp:PORT`` or ``PORT``; a port matches the local *or* the remote port (so
  ``udp:443`` works on the client and on the server). No ``match:`` = every flow.
- Several rule sets are separated by ``|``::

      seed=7; match: tcp:445; out: cut=rst@1MiB | match: udp; out: loss=5% | in: delay=10ms

  For a flow and a direction, the **first** rule set that matches the flow *and* has a section for that
  direction wins; later ones are not consulted. So the example above delays incoming traffic of every
  flow (the first two rule sets have no ``in:``), and an empty ``out:`` in an early rule set exempts
  matching flows from later ones.

Datagram fields (``udp``; QUIC carriers are datagrams too):

===================  =====================================================================================
``loss=P``           long-run loss rate. ``P`` is ``10%``, ``0.5%`` or a fraction ``0.1``.
``burst=B``          mean length of a run of consecutive losses (number >= 1; needs ``loss``). Losses then
                     follow a Gilbert-Elliott chain whose long-run loss rate is ``P`` and mean burst is
                     ``B``. Without ``burst`` losses are independent (their mean run is ``1/(1-P)``).
``drop=LIST``        0-based datagram indices in this direction of the flow, dropped in addition:
                     ``3,7-9``.
``dup=P``            probability that a datagram is delivered twice.
``reorder=P``        probability that a datagram is held back by ``reorder_delay`` (default ``10ms``), so
                     that later datagrams overtake it.
``reorder_delay=D``  see above.
``delay=D``          fixed delay. ``D`` is ``20ms``, ``1.5s``, ``250us`` or ``0`` (a unit is required).
``jitter=D``         delay varies uniformly in ``[delay-jitter, delay+jitter]`` (never below 0).
                     Deliveries stay FIFO: jitter alone never reorders.
``corrupt=P``        probability that a delivered copy has one random byte changed to a different value.
``blackhole=LIST``   windows ``START+DURATION`` (durations), relative to the time the spec became active
                     in this process; every datagram sent inside a window is dropped. ``2s+1s,10s+500ms``.
``rebind=LIST``      out only: NAT rebinding of this process's emulated source. ``port@N``, ``addr@N``,
                     ``both@N`` at datagram index ``N``, or ``port@2.5s`` at a time since activation (the
                     next datagram sent at or after it). Several: ``port@100,addr@5s``.
===================  =====================================================================================

Stream fields (``tcp``):

===================  =====================================================================================
``delay=D``          delay of every chunk of bytes (FIFO).
``jitter=D``         as for datagrams; bytes stay in order.
``cut=KIND@WHEN``    cut the connection: ``KIND`` is ``rst`` (reset) or ``blackhole`` (silently carry
                     nothing more); ``WHEN`` is a byte count in this direction (``100000``, ``64KiB``,
                     ``1MB``) or a time since activation (``3s``).
===================  =====================================================================================

A field that cannot apply to any flow a rule set matches (``loss`` with ``match: tcp``, ``cut`` with
``match: udp``) is an error, so is ``rebind`` in ``in:``.

Spec file (``WIRECHECK_IMPAIR_FILE``)
=====================================

YAML or JSON; the same fields, written as mappings. Re-read when its mtime changes (checked at most
every 100 ms): that is how a parent process changes a child's impairments mid-run. A broken file at
start-up raises; a broken file mid-run is reported on stderr and the previous rules stay. A missing file
means no impairment. ::

    seed: 42
    rules:                       # or, for one rule set: match/out/in at the top level
      - match: [udp:443]
        out: {loss: 10%, burst: 4, drop: "3,7-9", rebind: [port@100]}
        in:  {loss: 5%}
      - match: tcp:445
        out: {cut: rst@64KiB}

Errors are :class:`ImpairSpecError` and name the source, the field and the bad value::

    WIRECHECK_IMPAIR: out.loss: '150%' is not a probability between 0% and 100%
    impair.yaml:4: rules[0].out.delay: '20' needs a unit (us, ms or s)

Python API
==========

- :func:`current` -- the active :class:`ImpairConfig` (in-process override, else env string, else file),
  or None.
- :func:`configure` ``(spec)`` -- replace the rules in-process (a spec string, a mapping as in the file
  form, or an :class:`ImpairConfig`); wins over the environment until ``configure(None)``.
  ``configure("")`` means "no impairment, whatever the environment says".
- :func:`impairer_for` ``(proto, local, remote, direction)`` -- the impairer of a flow, or None when
  nothing applies (the hot path: with nothing configured it is two dict look-ups). Impairers are cached
  per flow and keep their counters and random streams when the rules change mid-run; call it on every
  send/receive (holding on to one misses mid-run changes).
- :func:`rebound` ``(proto, old_local, new_local)`` -- after carrying out a rebind, so that the flow keeps
  its impairer under the new address (otherwise it is a new flow: counters restart and ``rebind=port@100``
  would fire again). :func:`release` forgets a closed socket's flows; :func:`flows` lists them (fate logs).
- ``DatagramImpairer.decide(now, payload) -> Fate``; ``StreamImpairer.on_send(now, nbytes) ->
  StreamFate`` and ``.cut_pending(now)`` / ``.cut_deadline`` for timed cuts of idle connections.

Blackhole windows and time-based rebinds/cuts count from ``ImpairConfig.activated_at``: when the spec was
first read in this process (the wrapper's ``activate()`` should call :func:`current` to pin it), when the
file was re-read, or when :func:`configure` was called.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, overload

__all__ = [
    "ENV_SPEC",
    "ENV_FILE",
    "ImpairSpecError",
    "ImpairConfig",
    "Rule",
    "Selector",
    "DirectionRules",
    "Window",
    "RebindEvent",
    "Cut",
    "Delivery",
    "Fate",
    "FateRecord",
    "StreamFate",
    "StreamRecord",
    "DatagramImpairer",
    "StreamImpairer",
    "parse",
    "from_mapping",
    "load_file",
    "current",
    "configure",
    "impairer_for",
    "flow_key",
    "flows",
    "release",
    "rebound",
    "reset",
]

ENV_SPEC = "WIRECHECK_IMPAIR"
ENV_FILE = "WIRECHECK_IMPAIR_FILE"
RELOAD_INTERVAL = 0.1
DEFAULT_REORDER_DELAY = 0.010
HISTORY_LIMIT = 100_000

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


# ==================================================================================================
# Deciders
# ==================================================================================================


@dataclass(frozen=True)
class Delivery:
    """One copy to deliver at monotonic time ``at`` (``at <= now``: deliver inline, no timer)."""

    at: float
    payload: bytes
    corrupted: bool = False


@dataclass(frozen=True, slots=True)
class FateRecord:
    """A payload-free summary of a :class:`Fate`, kept in ``impairer.history`` (compares equal for equal
    fates, which is what the reproducibility tests compare)."""

    index: int
    now: float
    deliveries: tuple[tuple[float, bool], ...]  # (at, corrupted)
    reasons: tuple[str, ...]
    rebind: str | None

    def __str__(self) -> str:
        if not self.deliveries:
            what = "dropped"
        else:
            what = ", ".join(
                f"+{(at - self.now) * 1000:.1f}ms" + (" corrupted" if bad else "")
                for at, bad in self.deliveries
            )
        extra = f" [{' '.join(self.reasons)}]" if self.reasons else ""
        rebind = f" rebind={self.rebind}" if self.rebind else ""
        return f"#{self.index} {what}{extra}{rebind}"


@dataclass(frozen=True)
class Fate:
    """What happens to one datagram.

    ``deliveries`` is empty when it is dropped and has two entries when duplicated. ``reasons`` says why
    ("loss", "drop-list", "blackhole", "dup", "reorder", "corrupt"). When ``rebind`` is set the caller
    rebinds the emulated source ("port", "addr" or "both") *before* sending this datagram, whether or not
    it is dropped.
    """

    index: int
    now: float
    deliveries: tuple[Delivery, ...]
    reasons: tuple[str, ...] = ()
    rebind: str | None = None

    @property
    def dropped(self) -> bool:
        return not self.deliveries

    def record(self) -> FateRecord:
        return FateRecord(
            self.index,
            self.now,
            tuple((d.at, d.corrupted) for d in self.deliveries),
            self.reasons,
            self.rebind,
        )


def _rng(seed: int, direction: str, stream_key: str, aspect: str) -> random.Random:
    # Our own SHA-512 of the name, so the stream is stable across processes, Python versions and
    # PYTHONHASHSEED, and any stream_key (even one with lone surrogates) is accepted.
    name = f"wirecheck-impair/{seed}/{direction}/{stream_key}/{aspect}"
    digest = hashlib.sha512(name.encode("utf-8", "surrogatepass")).digest()
    return random.Random(int.from_bytes(digest, "big"))


class DatagramImpairer:
    """Decides the fate of each datagram of one flow in one direction.

    ``stream_key`` names the flow; :func:`impairer_for` uses :func:`flow_key` (``"udp
    127.0.0.1:40000>127.0.0.2:443"``: the emulated 5-tuple as seen by this process, before any rebind).
    Use any string that is stable from run to run: a different key gives an independent fate sequence.
    ``epoch`` is the time blackhole windows and timed rebinds count from (None: the first ``decide``).
    Not thread-safe by itself; a lock serialises ``decide`` because a socket may be used by threads.
    """

    kind = "datagram"

    def __init__(
        self,
        rules: DirectionRules,
        seed: int = 0,
        stream_key: str = "",
        *,
        epoch: float | None = None,
        history_limit: int = HISTORY_LIMIT,
    ) -> None:
        self.stream_key = stream_key
        self.direction = rules.direction
        self.index = 0
        self.history: deque[FateRecord] = deque(maxlen=history_limit)
        self._lock = threading.Lock()
        self._seed: int | None = None
        self._bad: bool | None = None  # Gilbert-Elliott state; None until the first draw
        self._fifo = -math.inf  # latest in-order delivery time, keeps jitter from reordering
        self.update(rules, seed=seed, epoch=epoch)

    def update(self, rules: DirectionRules, *, seed: int | None = None, epoch: float | None = None) -> None:
        """Swap the rules mid-run. Counters, random streams and the loss state carry on (new random
        streams only if the seed changes); windows and timed events count from the new ``epoch``."""
        self.rules = rules
        if seed is not None and seed != self._seed:
            self._seed = seed
            key, d = self.stream_key, rules.direction
            self._rng_loss = _rng(seed, d, key, "loss")
            self._rng_dup = _rng(seed, d, key, "dup")
            self._rng_reorder = _rng(seed, d, key, "reorder")
            self._rng_delay = _rng(seed, d, key, "delay")
            self._rng_corrupt = _rng(seed, d, key, "corrupt")
        self.epoch = epoch
        loss = rules.loss
        if rules.burst is None or loss >= 1.0:
            # Independent losses are the Gilbert-Elliott chain with p = loss, r = 1 - loss.
            self._p_enter, self._p_leave = loss, 1.0 - loss
        else:
            self._p_leave = 1.0 / rules.burst
            self._p_enter = min(1.0, loss * self._p_leave / (1.0 - loss))
        self._index_rebinds: dict[int, set[str]] = {}
        for ev in rules.rebind:
            if ev.index is not None:
                self._index_rebinds.setdefault(ev.index, set()).add(ev.kind)
        self._timed_rebinds = sorted((ev.at, ev.kind) for ev in rules.rebind if ev.at is not None)

    # -- aspects ---------------------------------------------------------------------------------
    def _lost(self) -> bool:
        u = self._rng_loss.random()
        if self._bad is None:
            self._bad = u < self.rules.loss  # start in the stationary distribution
        elif self._bad:
            self._bad = u >= self._p_leave
        else:
            self._bad = u < self._p_enter
        return self._bad

    def _rebind(self, index: int, t: float) -> str | None:
        kinds = set(self._index_rebinds.get(index, ()))
        while self._timed_rebinds and self._timed_rebinds[0][0] <= t:
            kinds.add(self._timed_rebinds.pop(0)[1])
        if not kinds:
            return None
        if "both" in kinds or kinds == {"port", "addr"}:
            return "both"
        return kinds.pop()

    def _delay_sample(self) -> float:
        r = self.rules
        if not r.jitter:
            return r.delay
        return max(0.0, r.delay + (2.0 * self._rng_delay.random() - 1.0) * r.jitter)

    def _corrupt(self, payload: bytes) -> bytes | None:
        # Three draws whatever the outcome, so the corrupt stream advances identically per copy.
        rng = self._rng_corrupt
        hit, upos, uval = rng.random(), rng.random(), rng.random()
        if hit >= self.rules.corrupt or not payload:
            return None
        pos = min(int(upos * len(payload)), len(payload) - 1)
        data = bytearray(payload)
        data[pos] = (data[pos] + 1 + int(uval * 255)) % 256  # +1..+255: always a different value
        return bytes(data)

    # -- the decision ------------------------------------------------------------------------------
    def decide(self, now: float, payload: bytes) -> Fate:
        """The fate of the next datagram of this flow, sent (or received) at ``now``."""
        with self._lock:
            fate = self._decide(now, payload)
            self.history.append(fate.record())
            return fate

    def _decide(self, now: float, payload: bytes) -> Fate:
        r = self.rules
        index = self.index
        self.index += 1
        if self.epoch is None:
            self.epoch = now
        t = now - self.epoch
        rebind = self._rebind(index, t) if (self._index_rebinds or self._timed_rebinds) else None

        reasons: list[str] = []
        if r.loss and self._lost():
            reasons.append("loss")
        if r.drop and r.drops_index(index):
            reasons.append("drop-list")
        if r.blackhole and any(w.contains(t) for w in r.blackhole):
            reasons.append("blackhole")
        # Every enabled aspect draws a fixed amount per datagram, dropped or not (see module docstring).
        copies = 2 if r.dup and self._rng_dup.random() < r.dup else 1
        reordered = bool(r.reorder) and self._rng_reorder.random() < r.reorder
        delays = (self._delay_sample(), self._delay_sample()) if r.jitter else (r.delay, r.delay)
        corrupted = (self._corrupt(payload), self._corrupt(payload)) if r.corrupt else (None, None)
        if reasons:
            return Fate(index, now, (), tuple(reasons), rebind)

        if copies == 2:
            reasons.append("dup")
        if reordered:
            reasons.append("reorder")
        deliveries = []
        for c in range(copies):
            if reordered:
                at = now + delays[c] + r.reorder_delay  # not part of the FIFO: later ones overtake it
            else:
                at = max(now + delays[c], self._fifo)
                self._fifo = at
            bad = corrupted[c]
            deliveries.append(Delivery(at, payload if bad is None else bad, bad is not None))
        if any(d.corrupted for d in deliveries):
            reasons.append("corrupt")
        return Fate(index, now, tuple(deliveries), tuple(reasons), rebind)


@dataclass(frozen=True)
class StreamFate:
    """What to do with ``nbytes`` offered to a stream.

    Deliver the first ``allowed`` bytes after ``delay`` seconds; then, if ``cut`` is set, cut the
    connection ("rst": reset it; "blackhole": silently carry nothing more). Once cut, every later call
    returns ``allowed=0`` and the same ``cut``.
    """

    allowed: int
    delay: float = 0.0
    cut: CutKind | None = None


@dataclass(frozen=True, slots=True)
class StreamRecord:
    now: float
    offered: int
    fate: StreamFate

    def __str__(self) -> str:
        cut = f" cut={self.fate.cut}" if self.fate.cut else ""
        return f"{self.offered}B -> {self.fate.allowed}B +{self.fate.delay * 1000:.1f}ms{cut}"


class StreamImpairer:
    """Decides delay and cut for the bytes of one stream in one direction (see DatagramImpairer for
    ``stream_key`` and ``epoch``). ``on_send`` is called for bytes passing in this direction: sent ones
    for an ``out`` impairer, received ones for an ``in`` impairer."""

    kind = "stream"

    def __init__(
        self,
        rules: DirectionRules,
        seed: int = 0,
        stream_key: str = "",
        *,
        epoch: float | None = None,
        history_limit: int = HISTORY_LIMIT,
    ) -> None:
        self.stream_key = stream_key
        self.direction = rules.direction
        self.total = 0  # bytes allowed through so far
        self.cut: CutKind | None = None
        self.history: deque[StreamRecord] = deque(maxlen=history_limit)
        self._lock = threading.Lock()
        self._seed: int | None = None
        self._fifo = -math.inf
        self.update(rules, seed=seed, epoch=epoch)

    def update(self, rules: DirectionRules, *, seed: int | None = None, epoch: float | None = None) -> None:
        """Swap the rules mid-run; byte counts, random stream and an existing cut carry on."""
        self.rules = rules
        if seed is not None and seed != self._seed:
            self._seed = seed
            self._rng_delay = _rng(seed, rules.direction, self.stream_key, "delay")
        self.epoch = epoch

    @property
    def cut_deadline(self) -> float | None:
        """Monotonic time of a timed cut (so the wrapper can cut an idle connection with a timer)."""
        c = self.rules.cut
        if self.cut is not None or c is None or c.at is None or self.epoch is None:
            return None
        return self.epoch + c.at

    def cut_pending(self, now: float) -> CutKind | None:
        """The cut to apply now, without offering bytes: the connection's cut if one was decided, or
        the timed cut once it is due (then it is decided, and recorded in the history)."""
        if self.cut is None:
            deadline = self.cut_deadline
            if deadline is None or now < deadline:
                return None
            self.on_send(now, 0)
        return self.cut

    def on_send(self, now: float, nbytes: int) -> StreamFate:
        """Offer ``nbytes`` passing in this direction at ``now``; see :class:`StreamFate`."""
        with self._lock:
            fate = self._on_send(now, nbytes)
            self.history.append(StreamRecord(now, nbytes, fate))
            return fate

    def _on_send(self, now: float, nbytes: int) -> StreamFate:
        if self.epoch is None:
            self.epoch = now
        if self.cut is not None:
            return StreamFate(0, 0.0, self.cut)
        r = self.rules
        allowed = nbytes
        c = r.cut
        if c is not None:
            if c.at is not None and now - self.epoch >= c.at:
                self.cut, allowed = c.kind, 0
            elif c.after_bytes is not None and self.total + nbytes >= c.after_bytes:
                self.cut, allowed = c.kind, max(0, c.after_bytes - self.total)
        self.total += allowed
        delay = r.delay
        if r.jitter:
            delay = max(0.0, r.delay + (2.0 * self._rng_delay.random() - 1.0) * r.jitter)
        if delay or self._fifo > now:
            at = max(now + delay, self._fifo)
            self._fifo = at
            delay = at - now
        return StreamFate(allowed, delay, self.cut)


# ==================================================================================================
# Process-wide configuration and the per-flow cache
# ==================================================================================================

Address = tuple[Any, ...]  # (host, port) or (host, port, flowinfo, scope_id)
Impairer = DatagramImpairer | StreamImpairer


class _State:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.override_set = False
        self.override: ImpairConfig | None = None
        self.env_checked_at = -math.inf
        self.env_pair: tuple[str | None, str | None] = (None, None)
        self.env_text: str | None = None
        self.env_config: ImpairConfig | None = None
        self.file_path: str | None = None
        self.file_stamp: tuple[int, int] | None = None
        self.file_config: ImpairConfig | None = None
        self.file_checked_at = -math.inf
        self.flows: dict[tuple[str, Address, Address, str], tuple[ImpairConfig, Impairer | None]] = {}


_state = _State()


def _after_fork_in_child() -> None:
    _state.lock = threading.RLock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _check_file(path: str, now: float) -> None:
    s = _state
    first = s.file_path != path
    s.file_checked_at = now
    try:
        st = os.stat(path)
        stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
    except FileNotFoundError:
        stamp = None
    if not first and stamp == s.file_stamp:
        return
    try:
        config = load_file(path) if stamp is not None else None
    except (ImpairSpecError, OSError) as e:
        if first:
            raise
        sys.stderr.write(f"wirecheck: {e}; keeping the previous impairments\n")
        s.file_stamp = stamp  # report once per change
        return
    s.file_path, s.file_stamp, s.file_config = path, stamp, config


def current() -> ImpairConfig | None:
    """The active impairments: :func:`configure` override, else ``WIRECHECK_IMPAIR``, else
    ``WIRECHECK_IMPAIR_FILE`` (stat-ed at most every 100 ms). None when nothing is configured.

    The environment itself is looked at most every 100 ms too (:func:`reset` forces a look)."""
    s = _state
    if s.override_set:
        return s.override
    now = time.monotonic()
    if now - s.env_checked_at >= RELOAD_INTERVAL:
        # os.environ.get of a missing name costs microseconds (it raises KeyError inside): look at most
        # every 100 ms, so that the hot path with nothing configured is a clock read and a compare.
        s.env_pair = (os.environ.get(ENV_SPEC), os.environ.get(ENV_FILE))
        s.env_checked_at = now
    text, path = s.env_pair
    if not text and not path:
        return None
    with s.lock:
        if text and path:
            raise ImpairSpecError(ENV_SPEC, None, None, f"set only one of {ENV_SPEC} and {ENV_FILE}")
        if text:
            if text != s.env_text:
                s.env_config = parse(text, ENV_SPEC)
                s.env_text = text
            return s.env_config
        assert path is not None
        if path != s.file_path or now - s.file_checked_at >= RELOAD_INTERVAL:
            _check_file(path, now)
        return s.file_config


def configure(spec: str | Mapping[str, Any] | ImpairConfig | None) -> ImpairConfig | None:
    """Replace the impairments of this process from Python (mid-run changes). ``None`` goes back to the
    environment; ``""`` means no impairment. Returns the new active config. Raises ImpairSpecError."""
    s = _state
    if spec is None:
        with s.lock:
            s.override_set, s.override = False, None
        return current()
    if isinstance(spec, str):
        config = parse(spec, "configure()")
    elif isinstance(spec, ImpairConfig):
        config = replace(spec, activated_at=time.monotonic())
    else:
        config = from_mapping(spec, "configure()")
    with s.lock:
        s.override_set, s.override = True, config
    return config


def _host_port(addr: Address) -> str:
    host, port = str(addr[0]), addr[1] if len(addr) > 1 else ""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def flow_key(proto: str, local: Address, remote: Address) -> str:
    """The stream_key :func:`impairer_for` gives a flow: ``"udp 127.0.0.1:40000>127.0.0.2:443"``."""
    return f"{proto} {_host_port(local)}>{_host_port(remote)}"


@overload
def impairer_for(
    proto: Literal["udp"], local: Address, remote: Address, direction: str
) -> DatagramImpairer | None: ...
@overload
def impairer_for(
    proto: Literal["tcp"], local: Address, remote: Address, direction: str
) -> StreamImpairer | None: ...
@overload
def impairer_for(proto: str, local: Address, remote: Address, direction: str) -> Impairer | None: ...
def impairer_for(proto: str, local: Address, remote: Address, direction: str) -> Impairer | None:
    """The impairer of a flow (``proto`` "udp" -> DatagramImpairer, "tcp" -> StreamImpairer) in
    ``direction`` ("out" or "in"), or None when no impairment applies. Cached per flow: call it on every
    send/receive; when the rules change the cached impairer is updated in place."""
    config = current()
    if config is None:
        return None
    key = (proto, local, remote, direction)
    entry = _state.flows.get(key)
    if entry is not None and entry[0] is config:
        return entry[1]
    with _state.lock:
        rules = config.rules_for(proto, _port(local), _port(remote), direction)
        stream = proto == "tcp"
        impairer: Impairer | None = None
        if rules is not None and (rules.affects_streams() if stream else rules.affects_datagrams()):
            old = entry[1] if entry is not None else None
            if old is not None:
                old.update(rules, seed=config.seed, epoch=config.activated_at)
                impairer = old
            else:
                cls = StreamImpairer if stream else DatagramImpairer
                impairer = cls(rules, config.seed, flow_key(proto, local, remote), epoch=config.activated_at)
        _state.flows[key] = (config, impairer)
        return impairer


def _port(addr: Address) -> int | None:
    return addr[1] if len(addr) > 1 and isinstance(addr[1], int) else None


def flows() -> dict[tuple[str, Address, Address, str], Impairer]:
    """The cached impairers by (proto, local, remote, direction), for printing fate logs."""
    return {k: v[1] for k, v in list(_state.flows.items()) if v[1] is not None}


def release(proto: str, local: Address, remote: Address, direction: str | None = None) -> None:
    """Forget a flow's impairer(s) (socket closed): a later flow with the same tuple starts afresh."""
    for d in ("out", "in") if direction is None else (direction,):
        _state.flows.pop((proto, local, remote, d), None)


def rebound(proto: str, old_local: Address, new_local: Address) -> None:
    """The emulated source of ``old_local`` flows moved to ``new_local`` (a rebind was carried out):
    their impairers move with them, so :func:`impairer_for` with the new address continues the same flow
    (same counters and random streams; ``rebind=port@100`` does not fire again at the new flow's #100)."""
    with _state.lock:
        for key in [k for k in _state.flows if k[0] == proto and k[1] == old_local]:
            _state.flows[(proto, new_local, key[2], key[3])] = _state.flows.pop(key)


def reset() -> None:
    """Forget every cache and override and look at the environment again (tests; a fresh state)."""
    global _state
    _state = _State()
