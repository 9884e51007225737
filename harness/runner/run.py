"""The run loop: iterations, sections, selection, requirements, cells on -j N workers, verdicts, reports,
Ctrl-C.

xfstests' loop options: `-i N` runs the whole list (every section) N times, `-I N` likewise but stops
after an iteration with a failure; `-L N` reruns a failing cell N more times right after it failed
and prints `<id> aggregate results across K runs: ...` (the cell's verdict stays the first run's; the
reruns' files are kept as `<stem>.<ext>.rerunK`). `-r` shuffles the order (a new order per iteration,
from a seed printed in the header), `--exact-order` keeps the command line's, `-T` prints start and
end times, `-d` copies each cell's log (.full) to stdout after its line.

Each cell runs in its own process and socket directory (harness.scenario.cellproc), so workers are
threads that wait on those processes. The cells of all sections of an iteration share the -j N
workers (a section's last, slow cell no longer leaves the others idle), the longest first; what each
section prints is held back until the sections before it have printed their summaries, so the output
reads as one section after the other. On Ctrl-C (or SIGTERM) every cell process group is killed, their
socket directories removed, `Interrupted!` and the partial summary printed.
"""
from __future__ import annotations

import random
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from harness.scenario import Cell, ScenarioError, load_tree
from harness.scenario.cellproc import allow_cells, run_isolated, stop_all
from harness.scenario.model import substitute
from harness.scenario.requires import check as check_requires

from . import config, lists, matrix, report
from .console import Output, aggregate_line, cell_line, header_lines
from .outcome import CellReport, verdict
from .selection import read_area_exclude_files, read_exclude_file, select


@dataclass
class Options:
    tests: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    exclude_groups: list[str] = field(default_factory=list)
    exclude_tests: list[str] = field(default_factory=list)
    exclude_file: str | None = None
    sections: list[str] = field(default_factory=list)
    skip_sections: list[str] = field(default_factory=list)
    jobs: int = 1
    scenarios: str = "scenarios"
    results: str = "results"
    config: str | None = None               # default <scenarios>/sections.conf
    knownfail: list[str] | None = None      # default <scenarios>/knownfail(.d)
    flapping: list[str] | None = None       # default <scenarios>/flapping(.d)
    list_only: bool = False
    brief: bool = False
    progress: bool | None = None
    xunit_quiet: bool = False
    randomize: bool = False                 # -r
    exact_order: bool = False               # --exact-order
    seed: int | None = None                 # -r's seed (default: random, printed in the header)
    iterations: int = 1                     # -i N / -I N
    iterate_stop: bool = False              # -I: stop after an iteration with failures
    loop_on_fail: int = 0                   # -L N
    timestamps: bool = False                # -T
    dump: bool = False                      # -d
    exclude_names: list[str] = field(default_factory=list)   # -X NAME (file in each area dir)


class UsageError(Exception):
    pass


def _defaults(opts: Options) -> None:
    base = Path(opts.scenarios)
    if opts.config is None:
        opts.config = str(base / "sections.conf")
    if opts.knownfail is None:
        opts.knownfail = [str(base / "knownfail"), str(base / "knownfail.d")]
    if opts.flapping is None:
        opts.flapping = [str(base / "flapping"), str(base / "flapping.d")]


def _needs_tshark(cell: Cell) -> bool:
    return any("pcap" in item for item in (cell.scenario.data.get("expect") or []))


class _Plan:
    """One section of one iteration: its cells, reports, and what it prints (held back while an
    earlier section is still printing, see :meth:`Runner.plan_section`)."""

    def __init__(self, section: config.Section, rdir: Path, out: Output, live: bool):
        self.section = section
        self.rdir = rdir
        self.out = out
        self.live = live
        self.held: list[str] = []
        self.reports: list[CellReport] = []
        self.todo: list[Cell] = []
        self.expected: dict[str, float] = {}   # check.time: seconds each cell took when it last passed
        self.finish: Callable[[Cell, dict], None] = lambda cell, raw: None
        self.pending = 0        # cells queued or running
        self.started = False    # a cell of it has started
        self.closed = False     # its summary is printed

    def say(self, text: str = "") -> None:
        if self.live:
            self.out.line(text)
        else:
            self.held.append(text)

    def go_live(self) -> None:
        if not self.live:
            self.live = True
            for text in self.held:
                self.out.line(text)
            self.held = []


class Runner:
    def __init__(self, opts: Options, out: Output):
        self.opts = opts
        self.out = out
        self.started = time.time()
        self.all_reports: list[CellReport] = []
        self.section_reports: list[tuple[config.Section, list[CellReport]]] = []
        self.interrupted = False
        self.iteration = 0

    # -- setup (every problem here is exit 2, before anything runs)

    def prepare(self) -> None:
        opts = self.opts
        _defaults(opts)
        if not Path(opts.scenarios).is_dir():
            raise UsageError(f"{opts.scenarios}: no such scenario directory (--scenarios DIR)")
        try:
            self.scenarios = load_tree(opts.scenarios)
        except ScenarioError as e:
            raise UsageError("\n".join(e.problems)) from None
        try:
            self.sections = config.choose(config.load(opts.config), opts.sections, opts.skip_sections)
        except config.ConfigError as e:
            raise UsageError(str(e)) from None
        try:
            self.knownfail = lists.load("knownfail", list(opts.knownfail or []))
            self.flapping = lists.load("flapping", list(opts.flapping or []))
        except lists.ListError as e:
            raise UsageError(str(e)) from None
        if opts.randomize and opts.exact_order:
            raise UsageError("Cannot specify -r and --exact-order.")
        if opts.randomize and opts.seed is None:
            opts.seed = random.SystemRandom().randrange(1 << 32)
        self.excluded = list(opts.exclude_tests)
        for name in opts.exclude_names:
            self.excluded += read_area_exclude_files(opts.scenarios, name)
        if opts.exclude_file:
            try:
                self.excluded += read_exclude_file(opts.exclude_file)
            except OSError as e:
                raise UsageError(f"{opts.exclude_file}: {e.strerror}") from None

    # -- one section

    def report_dir(self, section: config.Section) -> Path:
        base = Path(self.opts.results)
        return base / section.name if section.name else base

    def plan_section(self, section: config.Section, live: bool) -> _Plan:
        """A section's selection, header, not-run and expunged lines, and the cells it will run.

        Nothing runs here: the cells of every section go into one queue (:meth:`run_plans`), so that
        a section's slow last cell does not leave the other workers idle until it ends. What a
        section prints is held back until the sections before it have printed their summaries
        (``live``: this is the section printing now), so the output is the same as one section
        after the other."""
        opts = self.opts
        ordering = "random" if opts.randomize else "exact" if opts.exact_order else "sorted"
        seed = None if opts.seed is None else opts.seed + self.iteration
        sel = select(self.scenarios, opts.tests, opts.groups, opts.exclude_groups, self.excluded, section.areas,
                     order=ordering, seed=seed)
        rdir = self.report_dir(section)
        rdir.mkdir(parents=True, exist_ok=True)
        plan = _Plan(section, rdir, self.out, live)
        shown = {k: v for k, v in section.vars.items() if k != "AREAS"}
        if opts.randomize:
            shown["RANDOM_SEED"] = f"{seed} (-r --seed {opts.seed})"
        for line in header_lines(section.name, shown):
            plan.say(line)
        width = max([len(c.id) for c, _ in sel.cells] + [7])
        order = {c.id: i for i, (c, _) in enumerate(sel.cells)}
        prev = report.read_times(rdir / "check.time")
        plan.expected = prev
        reports = plan.reports
        props = {"SECTION": section.label, "CHECK_OPTIONS": " ".join(sys.argv[1:]),
                 "SCENARIOS": str(Path(opts.scenarios).resolve()), "JOBS": str(opts.jobs),
                 **{k: v for k, v in section.vars.items()}}

        printed = {"next": 0}
        ready: dict[int, str] = {}

        def emit(index: int, text: str) -> None:
            """Print lines in selection order, whatever order -j finishes cells in."""
            ready[index] = text
            while printed["next"] in ready:
                plan.say(ready.pop(printed["next"]))
                printed["next"] += 1

        def finish(cell: Cell, raw: dict) -> None:
            v, why = verdict(raw["status"], cell.id, section.label, self.knownfail, self.flapping)
            r = CellReport(cell.id, cell.scenario.id, cell.scenario.area, cell.file_stem, cell.labels,
                           section.label, v, raw.get("reason", ""), list(raw.get("details") or []),
                           float(raw.get("duration", 0.0)), why, order[cell.id], dict(raw.get("startup") or {}))
            reports.append(r)
            report.write_cell_files(rdir, r, raw.get("ladder"))
            bad = rdir / r.area / f"{r.stem}.out.bad"
            stamps = (raw["started"], raw["ended"]) if opts.timestamps and "started" in raw else None
            text = cell_line(r, width, prev.get(r.id), bad, stamps)
            if raw.get("loops"):
                text += "\n" + aggregate_line(r.id, raw["loops"])
            if opts.dump:
                full = rdir / r.area / f"{r.stem}.full"
                if full.exists():
                    text += "\n" + full.read_text(errors="replace").rstrip("\n")
            emit(order[cell.id], text)
            report.write_xunit(rdir / "result.xml", reports, section.label, self.started, props, rdir,
                               opts.xunit_quiet)

        plan.finish = finish
        for cell, expunged in sel.cells:
            if expunged:
                r = CellReport(cell.id, cell.scenario.id, cell.scenario.area, cell.file_stem, cell.labels,
                               section.label, "expunged", order=order[cell.id])
                reports.append(r)
                emit(order[cell.id], cell_line(r, width, None))
                continue
            if opts.list_only:
                emit(order[cell.id], cell.id)
                continue
            found = check_requires(substitute(cell.scenario.requires, cell.variables(section.vars)),
                                   section=section.name, needs_tshark=_needs_tshark(cell),
                                   missing_ops=cell.scenario.missing_ops)
            if found:
                now = time.time()
                if found.fails_here():  # under CI: a failure that no knownfail/flapping entry can excuse
                    finish(cell, {"status": "missing", "reason": f"{found.reason} (a failure under CI)",
                                  "started": now, "ended": now})
                else:
                    finish(cell, {"status": "notrun", "reason": found.reason, "started": now, "ended": now})
                continue
            plan.todo.append(cell)
        return plan

    def queue_order(self, plans: list[_Plan]) -> list[tuple[_Plan, Cell]]:
        """Every section's cells in one queue. With -j N (N > 1) and the default order, the longest
        first (longest-processing-time scheduling), so that a slow cell does not start last and run
        alone at the end: first the cells with no time on record (new ones, or a results directory
        without check.time), the longest scenario timeout first (a scenario that allows itself long
        expects to take long), then the others by the time they took when they last passed. -r and
        --exact-order keep their order, and so does -j 1 (the order does not change its length)."""
        queue = [(plan, cell) for plan in plans for cell in plan.todo]
        if self.opts.jobs <= 1 or self.opts.randomize or self.opts.exact_order:
            return queue

        def key(item: tuple[_Plan, Cell]) -> tuple[int, float]:
            plan, cell = item
            known = plan.expected.get(cell.id)
            return (0, -float(cell.scenario.timeout)) if known is None else (1, -known)

        return sorted(queue, key=key)   # stable: cells that tie keep the listed order

    def run_plans(self, plans: list[_Plan]) -> None:
        """Run the cells of every planned section on -j N workers, and each section's summary (in
        section order) once its last cell finished."""
        queue = self.queue_order(plans)
        for plan in plans:
            plan.pending = len(plan.todo)
        self.out.start(len(queue), "section " + ", ".join(p.section.label for p in plans if p.todo))
        try:
            self._close_sections(plans)
            self._run_cells(queue, plans)
        finally:
            self.out.stop()

    def _close_sections(self, plans: list[_Plan], interrupted: bool = False) -> None:
        """Summaries of the sections, in order, whose cells have all finished; the section after the
        last one summarised prints what it held back and from then on prints as it goes."""
        for plan in plans:
            if plan.closed:
                continue
            plan.go_live()
            if plan.pending and not interrupted:
                return
            plan.closed = True
            self.section_reports.append((plan.section, plan.reports))
            self.all_reports += plan.reports
            if not self.opts.list_only:
                self.finish_section(plan.section, plan.reports, interrupted=interrupted and plan.pending > 0)

    def _run_cells(self, queue: list[tuple[_Plan, Cell]], plans: list[_Plan]) -> None:
        running: dict[Future, tuple[_Plan, Cell]] = {}
        pool = ThreadPoolExecutor(max_workers=max(1, self.opts.jobs))
        queue = list(queue)
        try:
            while queue or running:
                while queue and len(running) < max(1, self.opts.jobs):
                    plan, cell = queue.pop(0)
                    plan.started = True
                    fut = pool.submit(self.run_cell, cell, plan.rdir / cell.scenario.area, plan.section.vars)
                    running[fut] = (plan, cell)
                self.out.running([c.id for _, c in running.values()])
                done, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in done:
                    plan, cell = running.pop(fut)
                    try:
                        raw = fut.result()
                    except Exception as e:  # noqa: BLE001 - an infrastructure error fails the cell
                        raw = {"status": "fail", "reason": f"runner error: {type(e).__name__}: {e}"}
                    plan.finish(cell, raw)
                    plan.pending -= 1
                    self.out.advance()
                    self._close_sections(plans)
        except KeyboardInterrupt:
            self.interrupted = True
            stop_all()
            for fut in running:
                try:
                    fut.result(timeout=30)   # run_isolated removes its socket directory on the way out
                except Exception:  # noqa: BLE001, S110
                    pass
            raise
        finally:
            pool.shutdown(wait=not self.interrupted, cancel_futures=True)

    def run_cell(self, cell: Cell, outdir: Path, section_vars: dict[str, str]) -> dict:
        """One cell (in a worker thread), plus its -L reruns when it failed."""
        started = time.time()
        raw = run_isolated(cell, outdir, section_vars=section_vars)
        raw["started"], raw["ended"] = started, time.time()
        if raw.get("status") != "fail" or self.opts.loop_on_fail <= 0:
            return raw
        loops = ["fail"]
        for k in range(1, self.opts.loop_on_fail + 1):
            if self.interrupted:
                break
            rerun_dir = outdir / f".rerun-{cell.file_stem}"
            shutil.rmtree(rerun_dir, ignore_errors=True)
            again = run_isolated(cell, rerun_dir, section_vars=section_vars)
            loops.append(again.get("status", "fail"))
            if again.get("status") == "fail":
                (rerun_dir / f"{cell.file_stem}.out.bad").write_text("\n".join(again.get("details") or
                                                                                [again.get("reason", "")]) + "\n")
            for f in rerun_dir.iterdir():
                f.replace(outdir / f"{f.name}.rerun{k}")
            shutil.rmtree(rerun_dir, ignore_errors=True)
        raw["loops"] = loops
        return raw

    # -- everything

    def run(self) -> int:
        self.prepare()
        sel_unknown = select(self.scenarios, self.opts.tests, self.opts.groups, [], [], None).unknown
        for t in sel_unknown:
            self.out.line(f"{t} - unknown test, ignored")
        plans: list[_Plan] = []
        try:
            for iteration in range(max(1, self.opts.iterations)):
                self.iteration = iteration
                plans = []
                for section in self.sections:
                    plans.append(self.plan_section(section, live=not plans))
                if self.opts.list_only:
                    self._close_sections(plans)
                    break
                self.run_plans(plans)
                failed = any(r.failed for plan in plans for r in plan.reports)
                if failed and self.opts.iterate_stop:
                    break
        except KeyboardInterrupt:
            # the sections up to the last one that started a cell: the finished ones summarised as
            # usual, the others as interrupted; sections that had not started are left out
            last = max([i for i, p in enumerate(plans) if p.started] + [0])
            self._close_sections(plans[:last + 1], interrupted=True)
            self.out.line("Interrupted!")
        if self.opts.list_only:
            return 0
        self.final_summary()
        failed = any(r.failed for r in self.all_reports)
        return 1 if failed or self.interrupted else 0

    def finish_section(self, section: config.Section, reports: list[CellReport], interrupted: bool = False) -> None:
        rdir = self.report_dir(section)
        for line in report.summary_lines(reports, self.opts.brief):
            self.out.line(line)
        line = report.startup_line(reports)
        if line:
            self.out.line(line)
        self.out.line()
        report.append_log(rdir / "check.log", reports, self.started, interrupted)
        report.update_times(rdir / "check.time", reports)
        if section.name:
            report.append_log(Path(self.opts.results) / "check.log", reports, self.started, interrupted)
            report.update_times(Path(self.opts.results) / "check.time", reports)

    def final_summary(self) -> None:
        if len(self.section_reports) > 1:
            for section, reports in self.section_reports:
                self.out.line(f"{'SECTION':<14}-- {section.label}")
                self.out.line("=========================")
                for line in report.summary_lines(reports, self.opts.brief):
                    self.out.line(line)
                self.out.line()
        latest = {(r.section, r.id): r for r in self.all_reports}   # -i N: the last iteration's result
        tables = matrix.build(list(latest.values()))
        base = Path(self.opts.results)
        base.mkdir(parents=True, exist_ok=True)
        (base / "matrix.md").write_text(matrix.markdown(tables))
        (base / "matrix.json").write_text(matrix.as_json(tables, self.started, time.time(), str(base)) + "\n")
        if tables:
            if self.out.progress_on:
                matrix.print_rich(tables, self.out.stream)
            else:
                for line in matrix.text_lines(tables):
                    self.out.line(line)
        for section, _ in self.section_reports:
            self.out.line(f"Xunit report: {self.report_dir(section) / 'result.xml'}")
        self.out.line(f"Matrix: {base / 'matrix.md'} {base / 'matrix.json'}")


def run_check(opts: Options, out: Output | None = None) -> int:
    """The whole `wirecheck check`; returns the exit status (0 ok, 1 failures/interrupted, 2 bad input)."""
    out = out or Output(progress=opts.progress)
    runner = Runner(opts, out)
    allow_cells()  # a stop_all() of an earlier, interrupted run in this process ends here
    previous = None
    if threading.current_thread() is threading.main_thread():
        def on_term(_sig: int, _frame: object) -> None:
            raise KeyboardInterrupt
        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        return runner.run()
    except UsageError as e:
        sys.stderr.write(f"{e}\n")
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
