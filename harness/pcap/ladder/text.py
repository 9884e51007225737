"""The ladder as text: endpoints as lanes, one line per event (`wirecheck pcap show`).

Why text: it goes into CI logs and failure reports, where a Wireshark flow graph cannot.
"""
from __future__ import annotations

from ..capture import Capture
from .rows import events


def ladder(cap: Capture, all_tcp: bool = False, lane: int = 28) -> list[str]:
    lanes, evs = events(cap, all_tcp)
    width = max(1, len(lanes) - 1) * lane + 1
    head = [" " * 18 + _header(lanes, lane)]
    out = head + [" " * 18 + _lanes(width, lane)]
    for num, t, i, j, label in evs:
        row = list(_lanes(width, lane))
        lo, hi = sorted((i * lane, j * lane))
        for k in range(lo + 1, hi):
            row[k] = "-"
        if j > i:
            row[hi - 1] = ">"
        elif j < i:
            row[lo + 1] = "<"
        out.append(f"{num:>6} {t:10.6f} " + "".join(row) + "  " + label)
    return out


def _lanes(width: int, lane: int) -> str:
    return "".join("|" if k % lane == 0 else " " for k in range(width))


def _header(lanes: list[str], lane: int) -> str:
    s = ""
    for i, name in enumerate(lanes):
        pos = i * lane
        start = max(len(s), pos - len(name) // 2) if i else 0
        s = s.ljust(start) + name
    return s
