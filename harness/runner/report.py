"""The results tree, check.log, check.time and the xunit result.xml (xfstests formats).

    <results>/check.log, check.time          across sections (check.log appended per run)
    <results>/<section>/check.log, check.time, result.xml
    <results>/<section>/<area>/<stem>.full   the cell's log (steps, processes' output, outcome)
                              <stem>.out.bad  why it failed (first line names the step or the check)
                              <stem>.notrun   the not-run reason (one line)
                              <stem>.pcap .keys .smbkeys .ladder .json

Without sections the per-section files sit directly in <results>.
"""
from __future__ import annotations

import os
import platform
import socket
import time
from datetime import datetime
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from .outcome import CellReport

XUNIT_NS = "https://git.kernel.org/pub/scm/fs/xfs/xfstests-dev.git"


def iso(ts: float) -> str:
    """ISO 8601 with the UTC offset, as the xunit schema wants (2026-11-22T02:40:00+00:00)."""
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def summary_lines(reports: list[CellReport], brief: bool = False) -> list[str]:
    """Ran:/Not run:/Failures:/Failed N of M tests|Passed all N tests, as xfstests prints them.

    Only cells that ran count (not run and expunged ones do not); when nothing ran there is no
    `Ran:` and no `Passed all` line (a run of nothing has passed nothing), but a line that says so.
    """
    cells = sorted((r for r in reports if r.verdict != "expunged"), key=lambda r: r.order)
    ran = [r for r in cells if r.verdict != "notrun"]
    notrun = [r.id for r in cells if r.verdict == "notrun"]
    failures = [r.id for r in ran if r.failed]
    known = [r.id for r in ran if r.verdict in ("xfail", "flapping")]
    lines = []
    if not brief:
        if ran:
            lines.append("Ran: " + " ".join(r.id for r in ran))
        if notrun:
            lines.append("Not run: " + " ".join(notrun))
    if known:
        lines.append("Known failures: " + " ".join(known))
    if failures:
        lines.append("Failures: " + " ".join(failures))
        lines.append(f"Failed {len(failures)} of {len(ran)} tests")
    elif ran:
        lines.append(f"Passed all {len(ran)} tests")
    else:
        lines.append(f"No tests ran ({len(notrun)} not run)")
    return lines


def startup_line(reports: list[CellReport]) -> str:
    """Start-up per cell (cell start to its first request on the wire, from the cell's capture): the
    median and the slowest cell; empty when no cell's capture showed a request."""
    times = sorted((r.startup["first_request"], r.id) for r in reports if "first_request" in r.startup)
    if not times:
        return ""
    median = times[len(times) // 2][0] if len(times) % 2 else (times[len(times) // 2 - 1][0]
                                                                + times[len(times) // 2][0]) / 2
    return (f"Start-up to the first request: median {median:.2f}s, max {times[-1][0]:.2f}s ({times[-1][1]}) "
            f"over {len(times)} cells")


def cell_dir(report_dir: Path, r: CellReport) -> Path:
    return report_dir / r.area


def write_cell_files(report_dir: Path, r: CellReport, ladder: list[str] | None = None) -> None:
    """`.notrun` or `.out.bad` (why it failed, then the ladder diagram's files when there are any)."""
    d = cell_dir(report_dir, r)
    d.mkdir(parents=True, exist_ok=True)
    for suffix in (".out.bad", ".notrun"):
        p = d / f"{r.stem}{suffix}"
        if p.exists():
            p.unlink()
    if r.verdict == "notrun":
        (d / f"{r.stem}.notrun").write_text(r.reason + "\n")
    elif r.verdict in ("fail", "xfail", "flapping", "uxsuccess"):
        lines = list(r.details or [r.reason])
        if r.verdict == "uxsuccess":
            lines = [f"unexpected success: listed as a known failure: {r.list_reason}"]
        elif r.verdict != "fail":
            lines.append(f"({'known failure' if r.verdict == 'xfail' else 'flapping'}: {r.list_reason})")
        if ladder:
            lines.append(f"ladder diagram: {' '.join(ladder)}")
        (d / f"{r.stem}.out.bad").write_text("\n".join(lines) + "\n")


def read_times(path: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                out[parts[0]] = float(parts[1])
    except (OSError, ValueError):
        pass
    return out


def update_times(path: Path, reports: list[CellReport]) -> None:
    times = read_times(path)
    for r in reports:
        if r.verdict == "pass":
            times[r.id] = round(r.duration)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k} {int(v)}\n" for k, v in sorted(times.items())))


def append_log(path: Path, reports: list[CellReport], started: float, interrupted: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["", f"Kernel version: {platform.release()}", time.strftime("%a %b %d %H:%M:%S %Z %Y", time.localtime(started))]
    lines += summary_lines(reports)
    if interrupted:
        lines.append("Interrupted!")
    with open(path, "a") as f:
        f.write("\n".join(lines) + "\n")


def _cdata(text: str) -> str:
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def _clean(text: str) -> str:
    return "".join(ch for ch in text if ch in "\t\n\r" or ord(ch) >= 0x20)


def write_xunit(path: Path, reports: list[CellReport], section: str, started: float, properties: dict[str, str],
                report_dir: Path, quiet: bool = False) -> None:
    """xfstests' result.xml: <testsuite> with sorted <property>s and a <testcase> per cell (atomic rewrite)."""
    ran = sorted((r for r in reports if r.verdict != "expunged"), key=lambda r: r.order)
    failures = sum(r.failed for r in ran)
    skipped = sum(r.verdict == "notrun" for r in ran)
    now = time.time()
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<testsuite xmlns={quoteattr(XUNIT_NS)} name="wirecheck" failures="{failures}" skipped="{skipped}" '
           f'tests="{len(ran)}" time="{int(sum(r.duration for r in ran))}" '
           f'hostname={quoteattr(socket.gethostname() or "localhost")} start_timestamp="{iso(started)}" '
           f'timestamp="{iso(now)}" report_timestamp="{iso(now)}">',
           "\t<properties>"]
    for k, v in sorted(properties.items()):
        out.append(f"\t\t<property name={quoteattr(k)} value={quoteattr(_clean(str(v)))}/>")
    out.append("\t</properties>")
    for r in ran:
        head = f'\t<testcase classname="wirecheck.{escape(section)}" name={quoteattr(r.id)} time="{int(r.duration)}"'
        if r.verdict in ("pass", "xfail", "flapping"):
            out.append(head + "/>" if r.verdict == "pass" else head + ">")
            if r.verdict != "pass":
                # a known failure is not a failure in xunit; the note keeps it visible
                out.append(f"\t\t<system-err>{_cdata(_clean(r.verdict + ': ' + r.reason))}</system-err>")
                out.append("\t</testcase>")
            continue
        out.append(head + ">")
        if r.verdict == "notrun":
            out.append(f"\t\t<skipped message={quoteattr(_clean(r.reason))}/>")
        else:
            msg = r.reason if r.verdict == "fail" else f"unexpected success: {r.list_reason}"
            out.append(f"\t\t<failure message={quoteattr(_clean(msg))} type=\"TestFail\"/>")
            if not quiet:
                full = report_dir / r.area / f"{r.stem}.full"
                bad = report_dir / r.area / f"{r.stem}.out.bad"
                if full.exists():
                    out.append(f"\t\t<system-out>{_cdata(_clean(full.read_text(errors='replace')[-200000:]))}</system-out>")
                if bad.exists():
                    out.append(f"\t\t<system-err>{_cdata(_clean(bad.read_text(errors='replace')))}</system-err>")
        out.append("\t</testcase>")
    out.append("</testsuite>")
    tmp = path.with_suffix(".xml.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text("\n".join(out) + "\n")
    os.replace(tmp, path)
