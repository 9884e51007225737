"""A cell's `pcap:` expectations and its ladder diagram, run after the cell's processes are gone.

Why here and not in the cell process: the pcap library validates field names against tshark's field
catalogue, which takes seconds to load. The runner (and each pytest worker) loads it once, so pcap
checks run in that long-lived process, after every packet of the cell is on disk.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from .marks import mark_at
from .model import Cell, expect_applies, substitute


def _nonempty(path: str | Path) -> str | None:
    p = Path(path)
    return str(p) if p.exists() and p.stat().st_size else None


def run_checks(cell: Cell, pcap: str | Path, variables: dict[str, Any], keylog: str | Path | None = None,
               smb_keys: str | Path | None = None, ladder_out: str | Path | None = None) -> tuple[int, list[str]]:
    """(number of checks, failure lines) for the cell's `pcap:` expectations; with `ladder_out`, the ladder
    diagram too, from the same tshark pass."""
    from harness.pcap import Capture, ChecksError, PcapError, load_checks, parse_checks

    scen = cell.scenario
    items = [(i, item["pcap"]) for i, item in enumerate(scen.data.get("expect") or [])
             if "pcap" in item and expect_applies(item, cell, variables)]
    assertions = []
    try:
        for i, raw in items:
            checks = substitute(raw, variables)
            if isinstance(checks, dict):
                assertions += load_checks(Path(scen.path).parent / checks["file"]).assertions
            else:
                assertions += parse_checks(checks, scen.path, mark_at(scen.data, ["expect", i, "pcap"]))
    except ChecksError as e:
        return 0, [f"pcap checks: {p}" for p in e.problems]
    if not Path(pcap).exists() or Path(pcap).stat().st_size <= 24:
        return len(assertions), ([f"pcap: no packets were captured ({pcap})"] if assertions else [])
    try:
        cap = Capture(pcap, keylog=_nonempty(keylog) if keylog else None,
                      smb_keys=_nonempty(smb_keys) if smb_keys else None)
        fields: set[str] = set()
        queries = []
        for a in assertions:
            fields |= a.fields()
            queries += a.queries()
        if ladder_out is not None and shutil.which("tshark"):
            from harness.pcap.ladder import FIELDS
            fields |= set(FIELDS)
        cap.load(fields, queries)   # one tshark pass for the checks and the ladder
        results = cap.results(assertions) if assertions else []
    except PcapError as e:
        return len(assertions), [f"pcap: {e}"]
    if ladder_out is not None:
        _ladder(cap, ladder_out)
    failed = [r for r in results if not r.ok]
    if not failed:
        return len(results), []
    return len(results), ["pcap: " + line for line in cap.report(failed, total=len(results)).splitlines()]


def _ladder(cap: Any, out: str | Path) -> None:
    try:
        from harness.pcap.ladder import ladder
        Path(out).write_text("\n".join(ladder(cap)) + "\n")
    except Exception:  # noqa: BLE001, S110 - a missing ladder never fails a cell
        pass


def write_ladder(pcap: str | Path, out: str | Path, keylog: str | Path | None = None,
                 smb_keys: str | Path | None = None) -> str | None:
    """Write the capture's text ladder diagram to `out`; the problem text when it could not be drawn."""
    if not shutil.which("tshark") or not Path(pcap).exists() or Path(pcap).stat().st_size <= 24:
        return "no packets"
    try:
        from harness.pcap import Capture
        from harness.pcap.ladder import ladder
        lines = ladder(Capture(pcap, keylog=_nonempty(keylog) if keylog else None,
                               smb_keys=_nonempty(smb_keys) if smb_keys else None))
    except Exception as e:  # noqa: BLE001 - a missing ladder never fails a cell
        return str(e)
    Path(out).write_text("\n".join(lines) + "\n")
    return None


def failure_ladders(pcap: str | Path, outdir: str | Path, stem: str, keylog: str | Path | None = None,
                    smb_keys: str | Path | None = None) -> tuple[list[Path], str | None]:
    """A failing cell's pictures: `<stem>.ladder` (text) and harness.pcap.write_ladder's
    `<stem>.ladder.svg` / `.ladder.html`, decrypted with the cell's TLS/QUIC and SMB keys.

    Returns (the files written, the problem text when the capture could not be drawn)."""
    outdir = Path(outdir)
    text = outdir / f"{stem}.ladder"
    problem = None if text.exists() and text.stat().st_size else write_ladder(pcap, text, keylog, smb_keys)
    if problem:
        return [], problem
    paths = [text]
    try:
        from harness.pcap import write_ladder as pictures
        paths += pictures(pcap, outdir, keylog=_nonempty(keylog) if keylog else None,
                          smb_keys=_nonempty(smb_keys) if smb_keys else None, stem=stem)
    except Exception as e:  # noqa: BLE001 - the text ladder is still there
        return paths, f"no SVG/HTML ladder: {e}"
    return paths, None
