"""One cell in its own process: `python -m harness.scenario.cellproc ARGS-JSON`.

Why a process per cell: isolation that holds. A cell's operations may activate the socket wrapper
in-process (process-wide), block forever in a socket call, or leave children behind. In its own
session (process group) a cell can be killed whole at its timeout or on Ctrl-C, and the socket
directory removed after, without touching other cells running in parallel.

:func:`run_isolated` is the API the runner and the pytest plugin share.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .model import Cell
from .pcapcheck import failure_ladders, run_checks
from .startup import describe, startup

_ACTIVE: dict[int, Any] = {}
_ACTIVE_LOCK = threading.Lock()
#: set by stop_all() (under _ACTIVE_LOCK): a cell registered after it is killed as it registers
_STOPPING = False
KILL_MARGIN = 5.0
#: what a cell leaves in its results directory (and -L's `.rerunK` copies): removed before it runs again
CELL_FILES = r"\.(full|json|pcap|pcapng|keys|smbkeys|ladder|ladder\.svg|ladder\.html|out\.bad|notrun)(\.rerun\d+)?"


def _killpg(popen: Any, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(popen.pid, sig)
    except (ProcessLookupError, PermissionError):
        # A forked cell that has not reached its setsid() yet has no group of its own: kill it
        # alone (only while it runs: a reaped pid may belong to somebody else by now).
        if popen.returncode is None:
            try:
                os.kill(popen.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass


# ---------------------------------------------------------------------------------------------
# Starting a cell process: forked from a server that has imported the cell's modules already

#: What a cell process imports before its first step: the fork server imports them once, so a
#: cell starts in milliseconds instead of re-importing them (about a second on a loaded 2-core
#: machine, measured as "cell process ready after" in each .full). "harness.cli": a forked child
#: runs the parent's main script again before its target (multiprocessing's "__main__" preload
#: would spare that, but Python 3.11's fork server never receives the script's path), and for
#: `wirecheck` that script imports harness.cli (click, the runner, SMB message classes): 0.17 s of
#: CPU per cell, unless the fork server has imported it already.
PRELOAD = ["harness.scenario.cellproc", "harness.scenario.context", "harness.scenario.execute",
           "harness.scenario.loader", "harness.scenario.marks", "harness.cli"]
_fork_ctx: Any = None
_fork_ctx_lock = threading.Lock()


def _forkserver() -> Any:
    """multiprocessing's fork server (a single-threaded process that forks on request), or None
    where there is none or WIRECHECK_CELL_SPAWN=1 asks for a fresh interpreter per cell."""
    global _fork_ctx
    if os.environ.get("WIRECHECK_CELL_SPAWN") == "1":
        return None
    with _fork_ctx_lock:
        if _fork_ctx is None:
            import multiprocessing

            if "forkserver" not in multiprocessing.get_all_start_methods():
                _fork_ctx = False
            else:
                _fork_ctx = multiprocessing.get_context("forkserver")
                _fork_ctx.set_forkserver_preload(PRELOAD)
        return _fork_ctx or None


class _ForkedCell:
    """The parts of subprocess.Popen that run_isolated and stop_all use, for a forked cell."""

    def __init__(self, process: Any) -> None:
        self._process = process
        self.pid: int = process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired("cell process", timeout or 0)
        return self._process.exitcode


def _cell_child(argj: str, log_path: str, cwd: str, env: dict[str, str]) -> None:
    """A forked cell: what `python -m harness.scenario.cellproc` gets from Popen (its own session,
    stdin from /dev/null, stdout and stderr to the log, the caller's directory and environment)."""
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDONLY)
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND)
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(devnull)
    os.close(log)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    try:
        code = main([argj])
    except BaseException:  # noqa: BLE001 - as an uncaught exception in `python -m`: traceback, status 1
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _start_cell(args: dict[str, Any], full: Path) -> Any:
    ctx = _forkserver()
    if ctx is not None:
        try:
            process = ctx.Process(target=_cell_child, args=(json.dumps(args), str(full), os.getcwd(),
                                                            dict(os.environ)), daemon=False)
            process.start()
            return _ForkedCell(process)
        except OSError:
            pass  # no fork server to be had: a fresh interpreter, as before
    with open(full, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "harness.scenario.cellproc", json.dumps(args)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                                cwd=os.getcwd())


def stop_all() -> None:
    """Kill every running cell process group (Ctrl-C). Their runners then remove the socket dirs.

    Also every cell that registers from now on, until :func:`allow_cells`: a cell runs from its fork
    on, while the thread that started it adds it to _ACTIVE only when it runs again (a forked cell
    is at its first steps within milliseconds), so a Ctrl-C in between would miss it, and it would
    run on after the interrupted run, which waits for its thread at exit."""
    global _STOPPING
    with _ACTIVE_LOCK:
        _STOPPING = True
        procs = list(_ACTIVE.values())
    for p in procs:
        _killpg(p, signal.SIGTERM)
    time.sleep(0.2)
    for p in procs:
        _killpg(p, signal.SIGKILL)


def allow_cells() -> None:
    """Undo stop_all() for a new run in this process: cells started from now on run."""
    global _STOPPING
    with _ACTIVE_LOCK:
        _STOPPING = False


def run_isolated(cell: Cell, outdir: str | Path, *, section_vars: dict[str, str] | None = None,
                 timeout: float | None = None, ladder: bool = True) -> dict[str, Any]:
    """Run one cell in a child process with its own socket directory, then its pcap checks here.

    Returns the result record: status (pass/fail), reason, details (failure lines), step, duration,
    checks (number of pcap checks). Leaves `<stem>.full`, `.pcap`, `.keys`, `.ladder`, `.json` in outdir.
    """
    stem = cell.file_stem
    timeout = cell.scenario.timeout if timeout is None else timeout
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    for old in outdir.glob(f"{glob_escape(stem)}.*"):
        if old.is_file() and re.fullmatch(CELL_FILES, old.name[len(stem):]):
            old.unlink()
    full = outdir / f"{stem}.full"
    result_path = outdir / f"{stem}.json"
    socket_dir = tempfile.mkdtemp(prefix="wc-")
    wall0 = time.time()
    args = {"scenario": str(cell.scenario.path), "cell": cell.label, "outdir": str(outdir), "stem": stem,
            "socket_dir": socket_dir, "vars": section_vars or {}, "started": wall0}
    t0 = time.monotonic()
    hung = False
    try:
        full.touch()
        popen = _start_cell(args, full)
        with _ACTIVE_LOCK:
            _ACTIVE[popen.pid] = popen
            stopping = _STOPPING
        if stopping:  # stop_all() ran while this cell was starting and could not see it
            _killpg(popen)
        try:
            popen.wait(timeout=timeout + KILL_MARGIN)
        except subprocess.TimeoutExpired:
            hung = True
        _killpg(popen)  # the cell and anything it left behind
        popen.wait()
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE.pop(popen.pid, None) if "popen" in locals() else None
        shutil.rmtree(socket_dir, ignore_errors=True)
        shutil.rmtree(socket_dir + ".work", ignore_errors=True)
    duration = time.monotonic() - t0
    if hung:
        step = last_step(full)
        return {"status": "fail", "reason": f"{step or 'cell'}: timed out after {timeout:g}s (cell killed)",
                "details": [], "step": step, "duration": duration}
    try:
        result = json.loads(result_path.read_text())
    except (OSError, ValueError):
        step = last_step(full)
        reason = f"cell process exited with status {popen.returncode} without a result"
        if popen.returncode and popen.returncode < 0:
            reason = f"cell process killed by signal {-popen.returncode}"
        return {"status": "fail", "reason": reason + (f" (in {step})" if step else ""), "details": [tail(full)],
                "step": step, "duration": duration}
    variables = cell.variables(section_vars)
    variables.update(result.get("results") or {})
    pcap = outdir / f"{stem}.pcap"
    ladder_out = outdir / f"{stem}.ladder" if ladder else None
    keys, smbkeys = outdir / f"{stem}.keys", outdir / f"{stem}.smbkeys"
    result["startup"] = startup(pcap, wall0)
    if result["status"] == "pass":
        result["checks"], failures = run_checks(cell, pcap, variables, keys, smbkeys, ladder_out)
        if failures:
            result.update(status="fail", reason=failures[0], details=failures)
    problem = None
    if result["status"] == "fail" and ladder:
        # the failure's picture, decrypted with the cell's keys, named in .full and .out.bad
        paths, problem = failure_ladders(pcap, outdir, stem, keys, smbkeys)
        result["ladder"] = [str(p) for p in paths]
    result["duration"] = time.monotonic() - t0
    with open(full, "a") as log:
        log.write(f"[{time.strftime('%H:%M:%S')}] {describe(result['startup'])}\n")
        log.write(f"[{time.strftime('%H:%M:%S')}] pcap checks: {result.get('checks', 0)}; "
                  f"final outcome: {result['status']} {result.get('reason', '')}\n")
        for line in result.get("details") or []:
            log.write(f"    {line}\n")
        if result.get("ladder"):
            log.write(f"ladder diagram: {' '.join(result['ladder'])}\n")
        elif problem:
            log.write(f"no ladder diagram: {problem}\n")
    return result


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def last_step(full: Path) -> str:
    step = ""
    try:
        for line in full.read_text(errors="replace").splitlines():
            m = re.search(r"\] (step \S+ \S+ \([^)]*\)): start", line)
            if m:
                step = m.group(1)
    except OSError:
        pass
    return step


def tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def main(argv: list[str]) -> int:
    from .context import Context
    from .execute import Hung, Outcome, run
    from .loader import load_file
    from .marks import ScenarioError

    a = json.loads(argv[0])
    outdir = Path(a["outdir"])
    result_path = outdir / f"{a['stem']}.json"

    def log(line: str) -> None:
        sys.stdout.write(f"[{time.strftime('%H:%M:%S')}] {line}\n")
        sys.stdout.flush()

    def finish(outcome: Outcome) -> None:
        record = {"status": outcome.status, "reason": outcome.reason, "details": outcome.details,
                  "step": outcome.step, "results": ctx.results if ctx else {}}
        tmp = result_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=1, default=str))
        os.replace(tmp, result_path)

    ctx = None
    try:
        scen = load_file(a["scenario"], check_pcap=False)
    except ScenarioError as e:
        finish(Outcome("fail", e.problems[0], e.problems))
        return 1
    if scen is None:  # load_file raises rather than return None when no problem list is given
        finish(Outcome("fail", f"{a['scenario']}: not loaded"))
        return 1
    cell = next((c for c in scen.cells() if c.label == a["cell"]), None)
    if cell is None:
        finish(Outcome("fail", f"{scen.id}: no cell {a['cell']!r}"))
        return 1
    log(f"{cell.id}: {scen.description}")
    if "started" in a:
        log(f"cell process ready after {time.time() - float(a['started']):.2f}s")
    log(f"socket directory {a['socket_dir']}, pcap {outdir / (a['stem'] + '.pcap')}")
    ctx = Context(cell, socket_dir=a["socket_dir"], outdir=outdir, stem=a["stem"], section_vars=a["vars"], log=log)
    try:
        outcome = run(ctx)
    except Hung as e:  # pragma: no cover - run() turns Hung into an outcome
        outcome = Outcome("fail", str(e), [str(e)])
    except Exception as e:  # noqa: BLE001 - any crash is this cell's failure
        import traceback
        log(traceback.format_exc())
        outcome = Outcome("fail", f"{ctx.current_step or 'cell'}: {type(e).__name__}: {e}", [str(e)])
    ctx.teardown()
    log(f"outcome: {outcome.status} {outcome.reason}")
    finish(outcome)
    sys.stdout.flush()
    # a step that hung still has its thread blocked: leave without waiting for it
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
