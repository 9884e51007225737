"""The per-cell context: everything one cell owns, and the clean-up that gives it back.

Why one object: isolation is what lets cells run in parallel (-j N, pytest-xdist). A cell has its own
socket directory (its emulated network), its own pcap and key files, its own impairment files (one per
emulated host, re-read by the wrappers when they change), and it tracks every process and background
task it started, so that the end of the cell -- pass, fail, timeout or Ctrl-C -- stops all of them.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wrappers.launch import child_environ

from .model import Cell


class OpError(Exception):
    """An operation's outcome that a step may expect: an errno name or an NTSTATUS name."""

    def __init__(self, message: str, *, errno: str | None = None, ntstatus: str | None = None,
                 result: dict | None = None):
        super().__init__(message)
        self.errno = errno
        self.ntstatus = ntstatus
        self.result = dict(result or {})   # what the operation got before the error (bytes sent, ...)


class StepFailed(Exception):
    """The cell fails here; the message names the step."""


@dataclass
class Proc:
    """A process the cell started. Its stdout is a pipe that a thread copies into ``out_path`` and
    keeps in memory: an operation waiting for a peer's state line (``wait_output``) wakes up when the
    line arrives or the process closes its stdout, rather than polling a file."""

    name: str
    popen: subprocess.Popen
    argv: list[str]
    host: int | None
    out_path: Path
    err_path: Path
    started: float = field(default_factory=time.monotonic)
    _text: str = ""
    _eof: bool = True      # no pipe to read (a Proc made without start())
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _tee: threading.Thread | None = None

    def follow(self, pipe: Any) -> None:
        """Copy ``pipe`` (the child's stdout) to ``out_path`` and memory, waking waiters per chunk."""
        self._eof = False

        def copy() -> None:
            with open(self.out_path, "ab", buffering=0) as f:
                try:
                    while chunk := os.read(pipe.fileno(), 65536):
                        f.write(chunk)
                        with self._cond:
                            self._text += chunk.decode(errors="replace")
                            self._cond.notify_all()
                except OSError:
                    pass
                finally:
                    pipe.close()
                    with self._cond:
                        self._eof = True
                        self._cond.notify_all()
        self._tee = threading.Thread(target=copy, name=f"stdout:{self.name}", daemon=True)
        self._tee.start()

    def tell(self, line: str) -> None:
        """One line on the process's stdin (started with ``stdin=True``); several threads may tell."""
        with self._cond:
            if self.popen.stdin is None:
                raise StepFailed(f"{self.name} was started without a stdin pipe")
            try:
                self.popen.stdin.write(line.encode() + b"\n")
                self.popen.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass  # it exited; the caller's wait for an answer reports how

    @property
    def stdout_closed(self) -> bool:
        with self._cond:
            return self._eof

    def wait_output(self, done: Callable[[str], Any], timeout: float) -> Any:
        """``done(stdout so far)`` once it is true; None when stdout closed (the process exited, or
        closed it) or ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = done(self._text)
                if got or self._eof:
                    return got or None
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def wait(self, timeout: float | None) -> int | None:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float = 2.0) -> None:
        if self.popen.poll() is not None:
            return
        try:
            self.popen.send_signal(signal.SIGTERM)
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=5)
        except ProcessLookupError:
            pass

    def stdout(self) -> str:
        """What the process printed; once it exited, all of it (the copy thread drained the pipe,
        unless a child it left behind holds the pipe open for more than a second)."""
        if self._tee is None:
            try:
                return self.out_path.read_text(errors="replace")
            except OSError:
                return ""
        if self.popen.poll() is not None:
            self._tee.join(1.0)
        with self._cond:
            return self._text


@dataclass
class Task:
    name: str
    label: str
    thread: threading.Thread
    deadline: float
    timeout: float = 0.0
    error: BaseException | None = None
    done: bool = False


class Context:
    """Handed to every operation as `ctx`."""

    def __init__(self, cell: Cell, *, socket_dir: str, outdir: str | Path, stem: str,
                 section_vars: dict[str, str] | None = None, log: Callable[[str], None] | None = None):
        self.cell = cell
        self.scenario_dir = Path(cell.scenario.path).parent
        self.socket_dir = socket_dir
        # absolute: the cell's processes run in the work directory, and so do the QUIC daemons their
        # first socket starts, which open the key logs by the names given here
        self.outdir = Path(outdir).resolve()
        self.stem = stem
        self.work = Path(socket_dir + ".work")  # scratch beside the socket directory, removed with it
        self.work.mkdir(mode=0o700, exist_ok=True)
        self.pcap = str(self.outdir / f"{stem}.pcap")
        self.keylog = str(self.outdir / f"{stem}.keys")       # TLS/QUIC NSS key log
        self.smb_keys = str(self.outdir / f"{stem}.smbkeys")  # `SESID S2C C2S` lines
        self.section_vars = dict(section_vars or {})
        self.vars: dict[str, Any] = cell.variables(self.section_vars)
        self.results: dict[str, Any] = {}
        self.procs: dict[str, Proc] = {}
        self.tasks: dict[str, Task] = {}
        self.lock = threading.Lock()
        self._cleanups: list[Callable[[], None]] = []
        self._log = log or (lambda line: None)
        self.current_step = ""
        self.torn_down = False

    # -- logging and variables

    def log(self, line: str) -> None:
        self._log(line)

    def lookup(self) -> dict[str, Any]:
        """Variables for `${...}`: section, matrix, vars, then results of earlier steps by their `as:`."""
        env = dict(self.vars)
        env.update(self.results)
        env.update({"cell": {"id": self.cell.id, "pcap": self.pcap, "keylog": self.keylog,
                             "socket_dir": self.socket_dir, "work": str(self.work)}})
        return env

    def on_cleanup(self, fn: Callable[[], None]) -> None:
        self._cleanups.append(fn)

    # -- emulated hosts and processes

    def impair_file(self, host: int) -> str:
        return str(self.work / f"impair-{int(host)}.yaml")

    def env(self, host: int | None, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of a process on emulated host `host` (interface number) in this cell."""
        env = child_environ(self.socket_dir, iface=host, pcap=self.pcap)
        env.pop("WIRECHECK_IMPAIR", None)
        if host is not None:
            env["WIRECHECK_IMPAIR_FILE"] = self.impair_file(host)
        env["SSLKEYLOGFILE"] = self.keylog
        env["WIRECHECK_SMB_KEYS"] = self.smb_keys
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra or {})
        return env

    def start(self, name: str, argv: list[str], *, host: int | None, env: dict[str, str] | None = None,
              cwd: str | None = None, stdin: bool = False) -> Proc:
        """Start `argv` on emulated host `host`; ``stdin``: a pipe the cell writes to (Proc.tell)."""
        if name in self.procs:
            raise StepFailed(f"a process named {name!r} already exists in this cell")
        argv = [sys.executable if a == "python" and i == 0 else str(a) for i, a in enumerate(argv)]
        out, err = self.work / f"{name}.stdout", self.work / f"{name}.stderr"
        out.write_bytes(b"")
        with open(err, "wb") as fe:
            try:
                popen = subprocess.Popen(argv, env=self.env(host, env), cwd=cwd or str(self.work),
                                         stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=fe)
            except OSError as e:
                raise OpError(f"cannot start {argv[0]}: {e.strerror}", errno=_errno_name(e.errno)) from None
        proc = Proc(name, popen, argv, host, out, err)
        proc.follow(popen.stdout)
        with self.lock:
            self.procs[name] = proc
        self.log(f"started {name} (pid {popen.pid}, host {host}): {' '.join(argv)}")
        return proc

    def proc(self, name: str) -> Proc:
        try:
            return self.procs[name]
        except KeyError:
            raise StepFailed(f"no process named {name!r} (started: {', '.join(self.procs) or 'none'})") from None

    def wait_socket(self, filename: str, proc: Proc, timeout: float, ready: str) -> None:
        """Wait until a server says it listens (the line ``ready`` on its stdout, no polling), then
        check that its socket file is in the socket directory (it listens where it should)."""
        path = os.path.join(self.socket_dir, filename)
        if not proc.wait_output(lambda text: f"{ready}\n" in text, timeout):
            if proc.stdout_closed:
                proc.wait(2.0)
            if proc.popen.poll() is not None:
                raise StepFailed(f"{proc.name} exited with status {proc.popen.returncode} before listening: "
                                 + _tail(proc.err_path))
            raise StepFailed(f"{proc.name} did not bind {filename} within {timeout:g}s")
        if not os.path.exists(path):
            raise StepFailed(f"{proc.name} says it listens, but {filename} is not in the socket directory")

    # -- teardown

    def teardown(self) -> None:
        """Run clean-ups, stop every process, copy their output into the log (once)."""
        if self.torn_down:
            return
        self.torn_down = True
        for fn in reversed(self._cleanups):
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - clean-up goes on
                self.log(f"clean-up {fn!r} failed: {e}")
        for proc in list(self.procs.values()):
            proc.stop()
        for proc in self.procs.values():
            self.log(f"--- {proc.name}: exit status {proc.popen.returncode}; argv: {' '.join(proc.argv)}")
            for kind, path in (("stdout", None), ("stderr", proc.err_path)):
                if path is None:
                    text = proc.stdout()
                else:
                    text = path.read_text(errors="replace") if path.exists() else ""
                if text.strip():
                    self.log(f"--- {proc.name} {kind}:\n{text.rstrip()}")


def _tail(path: Path, n: int = 5) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(lines[-n:])


def _errno_name(num: int | None) -> str | None:
    import errno as _errno
    return _errno.errorcode.get(num or 0)
