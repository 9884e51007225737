"""What `wirecheck check` prints: xfstests' lines, byte for byte where xfstests defines them.

On a terminal a rich progress bar (transient) shows what is running; in CI (no TTY, or CI set) only
the plain lines are printed, so logs stay greppable. The line builders are pure functions (golden
tests compare them).
"""
from __future__ import annotations

import os
import platform
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from .outcome import CellReport

if TYPE_CHECKING:  # rich is imported only when a progress bar is shown (it is slow to import)
    from rich.progress import Progress, TaskID

LABEL_WIDTH = 14


def header_lines(section: str | None, variables: dict[str, str]) -> list[str]:
    lines = []
    if section is not None:
        lines.append(f"{'SECTION':<{LABEL_WIDTH}}-- {section}")
    lines.append(f"{'PLATFORM':<{LABEL_WIDTH}}-- Linux/{platform.machine()} {socket.gethostname()} {platform.release()}")
    for k, v in variables.items():
        if v:
            lines.append(f"{k:<{LABEL_WIDTH - 1}} -- {v}")
    return lines + [""]


def diff_length() -> int:
    try:
        return int(os.environ.get("DIFF_LENGTH", "10"))
    except ValueError:
        return 10


def clock(ts: float) -> str:
    """`date +%T` of a wall-clock time."""
    return time.strftime("%H:%M:%S", time.localtime(ts))


def cell_line(r: CellReport, width: int, prev: float | None, bad_path: str | Path | None = None,
              stamps: tuple[float, float] | None = None) -> str:
    """`tcp/001[ipv4] 4s ...  5s`, `... [not run] reason`, `- output mismatch (see X.out.bad)` + excerpt.

    With `stamps` (-T) the start and end clock times follow as xfstests prints them: a tab, `[HH:MM:SS]`,
    ` [HH:MM:SS]`; a not-run reason then goes on its own line, `\t<id> -- <reason>`.
    """
    head = r.id.ljust(width)
    if r.verdict == "expunged":
        return head + "       [expunged]"
    mid = f" {int(prev)}s ... " if prev is not None else "       "
    if stamps is not None:
        mid += f"\t[{clock(stamps[0])}] [{clock(stamps[1])}]"
        if r.verdict == "notrun":
            return f"{head}{mid} [not run]\n\t{r.id} -- {r.reason}"
        mid += " "
    if r.verdict == "pass":
        return f"{head}{mid} {int(round(r.duration))}s" if stamps is None else f"{head}{mid}{int(round(r.duration))}s"
    if r.verdict == "notrun":
        return f"{head}{mid}[not run] {r.reason}"
    if r.verdict == "uxsuccess":
        return f"{head}{mid}[unexpected success] {r.list_reason}"
    if r.verdict in ("xfail", "flapping"):
        word = "known failure" if r.verdict == "xfail" else "flapping"
        return f"{head}{mid}[{word}] {r.reason}"
    lines = [f"{head}{mid}- output mismatch (see {bad_path})"]
    body = r.details or [r.reason]
    n = diff_length()
    shown = body if n == 0 else body[:n]
    lines += ["    " + x for x in shown]
    if len(shown) < len(body):
        lines += ["    ...", f"(Run 'cat {bad_path}'  to see the entire report)"]
    return "\n".join(lines)


class Output:
    """Plain lines, plus a transient rich progress bar on a terminal."""

    def __init__(self, stream: TextIO | None = None, progress: bool | None = None):
        self.stream = stream or sys.stdout
        if progress is None:
            progress = self.stream.isatty() and not os.environ.get("CI")
        self.progress_on = progress
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def line(self, text: str = "") -> None:
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def start(self, total: int, what: str) -> None:
        if not self.progress_on or total == 0:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=Console(file=self.stream), transient=True)
        progress.start()
        self._progress = progress
        self._task = progress.add_task(what, total=total)

    def running(self, names: list[str]) -> None:
        if self._progress is not None and self._task is not None:
            from rich.markup import escape

            desc = "running " + ", ".join(names[:3]) + (" ..." if len(names) > 3 else "") if names else "done"
            self._progress.update(self._task, description=escape(desc))  # cell ids have [brackets]

    def advance(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def aggregate_line(cell_id: str, statuses: list[str]) -> str:
    """-L N: `<id> aggregate results across K runs: fail=a (x.x%), pass=b (y.y%)` (xfstests' line)."""
    k = len(statuses)
    fail = sum(s == "fail" for s in statuses)
    passed = sum(s == "pass" for s in statuses)
    return (f"{cell_id} aggregate results across {k} runs: fail={fail} ({100.0 * fail / k:.1f}%), "
            f"pass={passed} ({100.0 * passed / k:.1f}%)")
