"""The frame table: one row per frame, one column per tshark field, values typed by the field's type.

Why a table: tshark is slow to start and slow to dissect, so a capture is read once and every
assertion becomes a scan over the columns. Every cell reads as a tuple because a field can occur
several times in one frame (two SMB2 PDUs in one TCP segment give `smb2.cmd` = (13, 13)); an
absent field is the empty tuple.

Why columnar and compact: a million-frame capture with 20 columns held as a list of tuples per
column costs ~1.5 GB (a tuple and an int object per cell). Numeric columns are stored as typed
arrays (8 bytes a cell, plus one state byte) with the rare multi-value cell aside; other columns
share one tuple per distinct cell text (interned), so a repeated `frame.protocols` string costs a
pointer. Frame numbers are an array searched by bisection instead of a dict.
"""
from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

from .tshark import AGG, field_catalogue

_INT_TYPES = {"FT_UINT8", "FT_UINT16", "FT_UINT24", "FT_UINT32", "FT_UINT40", "FT_UINT48", "FT_UINT56",
              "FT_UINT64", "FT_INT8", "FT_INT16", "FT_INT24", "FT_INT32", "FT_INT40", "FT_INT48", "FT_INT56",
              "FT_INT64", "FT_FRAMENUM", "FT_BOOLEAN", "FT_CHAR"}
_FLOAT_TYPES = {"FT_FLOAT", "FT_DOUBLE", "FT_RELATIVE_TIME"}

# Always read: frame identity and time (for "within N ms") and the protocol chain.
BASE_FIELDS = ("frame.number", "frame.time_relative", "frame.protocols")


def parse_int(s: str) -> int:
    s = s.strip()
    neg = s.startswith("-")
    body = s[1:] if neg else s
    v = int(body, 16) if body[:2].lower() == "0x" else int(body, 10)
    return -v if neg else v


def converter(field: str):
    """A function str -> typed value for one field (int, float or str, by its tshark type)."""
    info = field_catalogue().get(field)
    ftype = info.ftype if info else "FT_STRING"
    base: Callable[[str], int | float]
    if ftype in _INT_TYPES:
        base = parse_int
    elif ftype in _FLOAT_TYPES:
        base = float
    elif ftype == "FT_ABSOLUTE_TIME":
        base = float  # epoch fields print as seconds; others fall back to str below
    else:
        return str

    def conv(s: str):
        try:
            return base(s)
        except ValueError:
            return s
    return conv


def field_type(field: str) -> str:
    info = field_catalogue().get(field)
    return info.ftype if info else "FT_STRING"


_ABSENT, _ONE, _OTHER = 0, 1, 2
_INTERN_LIMIT = 200_000  # distinct cell texts interned per column; unique-per-frame values stop there
_BATCH = 4096  # rows turned into columns at a time
_MEMO_LIMIT = 4096  # distinct cell texts of a numeric column remembered with their value (flags, commands)
_NO_FIT = object()  # a cell kept aside (several values, not a number, beyond 64 bits)


class NumColumn:
    """A column of int (array 'q') or float (array 'd') cells: `col[row]` is a tuple like a list
    column's. Cells with several values, or ints beyond 64 bits, go to a side dict."""

    __slots__ = ("vals", "state", "other", "conv", "fast", "memo")

    def __init__(self, typecode: str, conv, fast: Callable[[str], int | float] | None = None):
        self.other: dict[int, tuple] = {}
        self.vals: array[Any] = array(typecode)
        self.state, self.conv = bytearray(), conv
        # `fast(text)`: int or float, the same value as conv's for any text it accepts (ValueError
        # otherwise; conv then decides): int() accepts only decimal, where parse_int agrees
        self.fast = fast
        self.memo: dict[str, Any] = {}  # cell text -> its value, or _NO_FIT (extend_texts)

    def append_text(self, cell: str) -> None:
        if not cell:
            self.vals.append(0)
            self.state.append(_ABSENT)
            return
        if AGG not in cell:
            v = self.conv(cell)
            try:
                self.vals.append(v)
                self.state.append(_ONE)
                return
            except (TypeError, OverflowError):
                pass
        self.vals.append(0)
        self.state.append(_OTHER)
        self.other[len(self.state) - 1] = tuple(self.conv(v) for v in cell.split(AGG))

    def extend_texts(self, cells: Sequence[str]) -> None:
        """`append_text` for each cell, in bulk (one loop, no call per cell for the common ones)."""
        fast, conv = self.fast, self.conv
        if fast is None:
            for cell in cells:
                self.append_text(cell)
            return
        n, typecode = len(cells), self.vals.typecode
        if not any(cells):  # a field this stretch of the capture does not have
            self.vals.extend(array(typecode, bytes(self.vals.itemsize * n)))
            self.state += bytes(n)  # _ABSENT
            return
        if all(cells) and AGG not in "".join(cells):  # one plain value each: converted in C
            try:
                plain = array(typecode, map(fast, cells))
            except (ValueError, OverflowError):
                pass  # a hex value, one beyond 64 bits...: cell by cell below
            else:
                self.vals.extend(plain)
                self.state += bytes([_ONE]) * n
                return
        # the general case (some cells empty, hex, several values): each distinct text converted
        # once (cells repeat: flags, commands, ids), the column then built by C-level maps
        value_of: dict[str, Any] = {"": 0}
        state_of: dict[str, int] = {"": _ABSENT}
        aside: set[str] = set()
        for cell in set(cells):
            if cell:
                v = self._value(cell, fast)
                if v is _NO_FIT:
                    value_of[cell], state_of[cell] = 0, _OTHER
                    aside.add(cell)
                else:
                    value_of[cell], state_of[cell] = v, _ONE
        base = len(self.state)
        self.vals.extend(array(typecode, map(value_of.__getitem__, cells)))
        self.state += bytes(map(state_of.__getitem__, cells))
        if aside:
            other = self.other
            for i, cell in enumerate(cells):
                if cell in aside:
                    other[base + i] = tuple(conv(x) for x in cell.split(AGG))

    def _value(self, cell: str, fast: Callable[[str], int | float]) -> Any:
        """A non-empty cell's value as the array stores it, or _NO_FIT (kept aside: several values,
        not a number, beyond 64 bits), remembered for the next cells with that text."""
        memo = self.memo
        v = memo.get(cell)
        if v is None:
            v = _NO_FIT
            if AGG not in cell:
                try:
                    v = fast(cell)
                except ValueError:
                    v = self.conv(cell)
                # what array.append takes (the rest raised TypeError or OverflowError there)
                ints = self.vals.typecode == "q"
                if not ((type(v) is int and -(1 << 63) <= v < (1 << 63)) if ints else type(v) is float):
                    v = _NO_FIT
            if len(memo) < _MEMO_LIMIT:
                memo[cell] = v
        return v

    def __getitem__(self, row: int) -> tuple:
        st = self.state[row]
        if st == _ONE:
            return (self.vals[row],)
        return () if st == _ABSENT else self.other[row]

    def __len__(self) -> int:
        return len(self.state)

    def __iter__(self):
        return (self[r] for r in range(len(self.state)))


class ObjColumn(list):
    """A column of tuples where equal cell texts share one tuple (strings, bytes, addresses)."""

    __slots__ = ("conv", "cache")

    def __init__(self, conv):
        super().__init__()
        self.conv, self.cache = conv, {"": ()}

    def append_text(self, cell: str) -> None:
        t = self.cache.get(cell)
        if t is None:
            t = tuple(self.conv(v) for v in cell.split(AGG))
            if len(self.cache) < _INTERN_LIMIT:
                self.cache[cell] = t
        self.append(t)

    def extend_texts(self, cells: Sequence[str]) -> None:
        """`append_text` for each cell, in bulk."""
        if not any(cells):
            self.extend([self.cache[""]] * len(cells))
            return
        cache, conv = self.cache, self.conv
        new = set(cells).difference(cache)
        if len(cache) + len(new) <= _INTERN_LIMIT:  # every text interned: the column by a C-level map
            for cell in new:
                cache[cell] = tuple(conv(v) for v in cell.split(AGG))
            self.extend(map(cache.__getitem__, cells))
            return
        out: list[tuple] = []
        add = out.append
        for cell in cells:
            t = cache.get(cell)
            if t is None:
                t = tuple(conv(v) for v in cell.split(AGG))
                if len(cache) < _INTERN_LIMIT:
                    cache[cell] = t
            add(t)
        self.extend(out)


def new_column(field: str):
    ftype = field_type(field)
    if ftype in _INT_TYPES:
        return NumColumn("q", converter(field), fast=int)
    if ftype in _FLOAT_TYPES:
        return NumColumn("d", converter(field), fast=float)
    return ObjColumn(converter(field))


class RowIndex:
    """frame number -> row, by bisection over the (increasing) frame numbers; dict-like `get`/`[]`."""

    __slots__ = ("numbers",)

    def __init__(self, numbers):
        self.numbers = numbers

    def get(self, n: int, default=None):
        i = bisect_left(self.numbers, n)
        return i if i < len(self.numbers) and self.numbers[i] == n else default

    def __getitem__(self, n: int) -> int:
        i = self.get(n)
        if i is None:
            raise KeyError(n)
        return i

    def __contains__(self, n: int) -> bool:
        return self.get(n) is not None


class Table:
    """Columns of typed cells (each read as a tuple), rows in frame order."""

    def __init__(self, numbers: Sequence[int], columns: dict):
        self.numbers = numbers if isinstance(numbers, array) else array("q", numbers)
        self.columns = columns
        self.row_of = RowIndex(self.numbers)

    @classmethod
    def from_rows(cls, fields: Sequence[str], rows: Iterable[Sequence[str]]) -> Table:
        cols = [new_column(f) for f in fields]
        appends = [c.append_text for c in cols]
        nf, it = len(fields), iter(rows)
        while chunk := list(islice(it, _BATCH)):
            if all(len(row) >= nf for row in chunk):  # column by column (a row too long: extra cells ignored)
                for col, cells in zip(cols, zip(*chunk, strict=False), strict=False):
                    col.extend_texts(cells)
                continue
            for row in chunk:  # a short row fills only its first columns, as cell-by-cell appends do
                for app, cell in zip(appends, row, strict=False):
                    app(cell)
        columns = dict(zip(fields, cols, strict=True))
        fn = columns["frame.number"]
        numbers = fn.vals if isinstance(fn, NumColumn) else array("q", (v[0] for v in fn))
        return cls(numbers, columns)

    def __len__(self) -> int:
        return len(self.numbers)

    def has(self, field: str) -> bool:
        return field in self.columns

    def merge(self, other: Table) -> None:
        """Add the columns of a later pass over the same capture (same frames, other fields)."""
        for name, col in other.columns.items():
            if name in self.columns:
                continue
            if other.numbers == self.numbers:
                self.columns[name] = col
            else:
                idx = other.row_of
                self.columns[name] = [col[i] if (i := idx.get(n)) is not None else () for n in self.numbers]

    def values(self, field: str, row: int) -> tuple:
        return self.columns[field][row]

    def frame(self, row: int) -> Frame:
        return Frame(self, row)

    def time(self, row: int) -> float:
        v = self.columns["frame.time_relative"][row]
        return v[0] if v else 0.0


@dataclass(frozen=True)
class Frame:
    """A read-only view of one row: `f.number`, `f.time`, `f["smb2.cmd"]` (scalar, tuple or None)."""

    table: Table
    row: int

    @property
    def number(self) -> int:
        return self.table.numbers[self.row]

    @property
    def time(self) -> float:
        return self.table.time(self.row)

    def all(self, field: str) -> tuple:
        return self.table.values(field, self.row)

    def __getitem__(self, field: str):
        v = self.table.values(field, self.row)
        return None if not v else v[0] if len(v) == 1 else v

    def get(self, field: str, default=None):
        if not self.table.has(field):
            return default
        v = self[field]
        return default if v is None else v

    def __repr__(self) -> str:
        return f"<Frame {self.number}>"
