"""The deciders: the fate of each datagram or stream chunk of one flow in one direction, sans-IO.

:class:`DatagramImpairer` and :class:`StreamImpairer` never touch a socket, a clock or a thread. The
caller passes ``now`` (``time.monotonic()``, the clock of :mod:`wrappers.timers`) and gets back a
*fate*: what to deliver, when, and whether to rebind or cut first. The socket wrapper carries it out
(delayed deliveries go to :func:`wrappers.timers.schedule`, the application is never slept), and tests
drive the same code with a fake clock.

The same seed gives the same fate sequence, run after run. Every flow (stream_key) and direction has
its own random streams, derived from ``(seed, direction, stream_key, aspect)`` with SHA-512 into
``random.Random`` (independent of ``PYTHONHASHSEED``), so two sockets never share a stream and their
interleaving cannot change each other's fates. Each *aspect* (loss, dup, reorder, delay, corrupt) has
its own stream too, and draws a fixed amount per datagram whether or not it is dropped: adding
``dup=1%`` to a spec does not change which datagrams are lost.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

from .spec import CutKind, DirectionRules

HISTORY_LIMIT = 100_000


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


_Record = TypeVar("_Record")


class _Decider(Generic[_Record]):
    """What both deciders keep: one flow in one direction, its rules, the history of decisions.

    ``stream_key`` names the flow; :func:`impairer_for` uses :func:`flow_key` (``"udp
    127.0.0.1:40000>127.0.0.2:443"``: the emulated 5-tuple as seen by this process, before any rebind).
    Use any string that is stable from run to run: a different key gives an independent fate sequence.
    ``epoch`` is the time blackhole windows, timed rebinds and timed cuts count from (None: the first
    decision).  Not thread-safe by itself; a lock serialises decisions because a socket may be used by
    threads.  A subclass keeps its own state in class attributes with immutable defaults, so the one
    constructor here serves both.
    """

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
        self.history: deque[_Record] = deque(maxlen=history_limit)
        self._lock = threading.Lock()
        self._seed: int | None = None
        self._fifo = -math.inf  # latest in-order delivery time, keeps jitter from reordering
        self.update(rules, seed=seed, epoch=epoch)

    def update(self, rules: DirectionRules, *, seed: int | None = None, epoch: float | None = None) -> None:
        raise NotImplementedError

    rules: DirectionRules
    _rng_delay: random.Random

    def _delay_sample(self) -> float:
        """The delay of one delivery: ``delay``, spread evenly over +-``jitter`` (never below 0)."""
        r = self.rules
        if not r.jitter:
            return r.delay
        return max(0.0, r.delay + (2.0 * self._rng_delay.random() - 1.0) * r.jitter)


class DatagramImpairer(_Decider[FateRecord]):
    """Decides the fate of each datagram of one flow in one direction (``stream_key`` and ``epoch``:
    see :class:`_Decider`)."""

    kind = "datagram"
    index = 0  # the next datagram's number
    _bad: bool | None = None  # Gilbert-Elliott state; None until the first draw

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


class StreamImpairer(_Decider[StreamRecord]):
    """Decides delay and cut for the bytes of one stream in one direction (``stream_key`` and
    ``epoch``: see :class:`_Decider`). ``on_send`` is called for bytes passing in this direction: sent
    ones for an ``out`` impairer, received ones for an ``in`` impairer."""

    kind = "stream"
    total = 0  # bytes allowed through so far
    cut: CutKind | None = None

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
        delay = self._delay_sample()
        if delay or self._fifo > now:
            at = max(now + delay, self._fifo)
            self._fifo = at
            delay = at - now
        return StreamFate(allowed, delay, self.cut)
