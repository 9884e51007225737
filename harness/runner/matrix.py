"""The matrix table per area at the end of a run, like quic-interop-runner's: in the terminal, in
Markdown (`matrix.md`) and in JSON (`matrix.json`).

Rows are the values of a scenario's first matrix axis, columns those of its second (`-` when it has
fewer); a table cell lists scenario numbers grouped by result: `✓(001,002) ✕(003) ?(004) ~(005)`
(✓ passed, ✕ failed or unexpected success, ? not run, ~ known failure or flapping). Further axes go
into the entry as `003[loss]`. One table per section and area.
"""
from __future__ import annotations

import json
import time
from collections import OrderedDict
from typing import Any

from .outcome import CellReport

SYMBOL = {"pass": "✓", "fail": "✕", "uxsuccess": "✕", "notrun": "?", "xfail": "~", "flapping": "~"}
ORDER = ["✓", "✕", "?", "~"]


def _placement(r: CellReport) -> tuple[str, str, str]:
    items = list(r.labels.items())
    row = f"{items[0][0]}={items[0][1]}" if items else "-"
    col = f"{items[1][0]}={items[1][1]}" if len(items) > 1 else "-"
    rest = "-".join(v for _, v in items[2:])
    number = r.scenario.split("/", 1)[1]
    return row, col, number + (f"[{rest}]" if rest else "")


def build(reports: list[CellReport]) -> list[dict[str, Any]]:
    """[{section, area, rows, columns, cells: {row: {col: {symbol: [entries]}}}}] for the counted cells."""
    tables: OrderedDict[tuple[str, str], dict] = OrderedDict()
    rank: dict[str, int] = {}
    for r in reports:
        rank.setdefault(r.section, len(rank))
    for r in sorted(reports, key=lambda r: (rank[r.section], r.order)):   # -j finishes in any order
        if r.verdict == "expunged":
            continue
        t = tables.setdefault((r.section, r.area), {"section": r.section, "area": r.area, "rows": [],
                                                      "columns": [], "cells": {}, "results": []})
        row, col, entry = _placement(r)
        if row not in t["rows"]:
            t["rows"].append(row)
        if col not in t["columns"]:
            t["columns"].append(col)
        t["cells"].setdefault(row, {}).setdefault(col, {}).setdefault(SYMBOL[r.verdict], []).append(entry)
        t["results"].append({"id": r.id, "result": r.verdict, "reason": r.reason, "time": round(r.duration, 2),
                                **({"startup": r.startup} if r.startup else {})})
    return list(tables.values())


def _cell_text(groups: dict[str, list[str]]) -> str:
    return " ".join(f"{s}({','.join(groups[s])})" for s in ORDER if s in groups)


def text_lines(tables: list[dict]) -> list[str]:
    out = []
    for t in tables:
        out.append(f"{t['area']} ({t['section']}):")
        head = [""] + t["columns"]
        rows = [[r] + [_cell_text(t["cells"].get(r, {}).get(c, {})) for c in t["columns"]] for r in t["rows"]]
        widths = [max(len(x[i]) for x in [head] + rows) for i in range(len(head))]
        out.append("  " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip())
        out.append("  " + "-+-".join("-" * w for w in widths))
        for row in rows:
            out.append("  " + " | ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())
        out.append("")
    return out


def markdown(tables: list[dict]) -> str:
    out = []
    for t in tables:
        out.append(f"### {t['area']} ({t['section']})\n")
        out.append("| | " + " | ".join(t["columns"]) + " |")
        out.append("|---|" + "---|" * len(t["columns"]))
        for r in t["rows"]:
            out.append(f"| **{r}** | " + " | ".join(_cell_text(t["cells"].get(r, {}).get(c, {}))
                                                     for c in t["columns"]) + " |")
        out.append("")
    out.append("✓ passed · ✕ failed · ? not run · ~ known failure/flapping\n")
    return "\n".join(out)


def as_json(tables: list[dict], started: float, ended: float, log_dir: str) -> str:
    fmt = "%Y-%m-%dT%H:%M:%S%z"
    return json.dumps({"start_time": time.strftime(fmt, time.localtime(started)),
                       "end_time": time.strftime(fmt, time.localtime(ended)), "log_dir": log_dir,
                       "legend": {"✓": "passed", "✕": "failed", "?": "not run", "~": "known failure/flapping"},
                       "tables": tables}, indent=1, ensure_ascii=False)


def print_rich(tables: list[dict], stream) -> None:
    """The terminal form with rich (on a TTY)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=stream)
    for t in tables:
        table = Table(title=f"{t['area']} ({t['section']})", title_justify="left")
        table.add_column("")
        for c in t["columns"]:
            table.add_column(c)
        for r in t["rows"]:
            table.add_row(r, *[_cell_text(t["cells"].get(r, {}).get(c, {})) for c in t["columns"]])
        console.print(table)
