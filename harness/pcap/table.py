"""The frame table: one row per frame, one column per tshark field, values typed by the field's type.

Why a table: tshark is slow to start and slow to dissect, so a capture is read once and every
assertion becomes a scan over plain Python tuples. Every cell is a tuple because a field can occur
several times in one frame (two SMB2 PDUs in one TCP segment give `smb2.cmd` = (13, 13));
an absent field is the empty tuple.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

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


class Table:
    """Columns of typed tuples, rows in frame order."""

    def __init__(self, numbers: Sequence[int], columns: dict[str, list[tuple]]):
        self.numbers = list(numbers)
        self.columns = columns
        self.row_of = {n: i for i, n in enumerate(self.numbers)}

    @classmethod
    def from_rows(cls, fields: Sequence[str], rows: Iterable[Sequence[str]]) -> Table:
        convs = [converter(f) for f in fields]
        cols: list[list[tuple]] = [[] for _ in fields]
        for row in rows:
            for j, cell in enumerate(row):
                if cell == "":
                    cols[j].append(())
                else:
                    c = convs[j]
                    cols[j].append(tuple(c(v) for v in cell.split(AGG)))
        columns = dict(zip(fields, cols, strict=True))
        numbers = [v[0] for v in columns["frame.number"]]
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
                by_num = dict(zip(other.numbers, col, strict=True))
                self.columns[name] = [by_num.get(n, ()) for n in self.numbers]

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
