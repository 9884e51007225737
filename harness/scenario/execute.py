"""Run one cell: steps (each with a timeout), background tasks, parallel groups, then expectations.

Why threads with timeouts: an operation may block in a socket call that never returns. The step runs
in a worker thread; when its timeout passes the cell fails naming the step, and the caller (the cell
process, harness.scenario.cellproc) stops every process the cell started and exits, taking any stuck
thread with it.
"""
from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import registry
from .context import Context, OpError, StepFailed, Task
from .marks import key_mark, mark_at, where
from .model import Unresolved, expect_applies, expect_kind, substitute
from .schema import COMMON_STEP_KEYS


@dataclass
class Outcome:
    status: str                    # pass | fail | notrun
    reason: str = ""               # first line: why it failed / was not run
    details: list[str] = field(default_factory=list)   # the .out.bad body
    step: str = ""                 # the step it failed or hung in


class Hung(StepFailed):
    """A step outlived its timeout; its thread may still be blocked."""


class _Runner:
    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.scen = ctx.cell.scenario
        self.source = self.scen.path

    def label(self, path: list, name: str, step: Any) -> str:
        line = key_mark(step, name, mark_at(self.scen.data, path))[0]
        idx = ".".join(str(p) for p in path[1:])
        return f"step {idx} {name} ({Path(self.source).name}:{line})"

    # -- steps

    def run_steps(self, steps: list, path: list) -> None:
        for i, step in enumerate(steps):
            self.run_step(step, path + [i])

    def prepare(self, step: Any, path: list) -> tuple[str, dict, dict, str]:
        (name, raw), = step.items()
        label = self.label(path, name, step)
        try:
            args = substitute(raw if raw is not None else {}, self.ctx.lookup(), strict=True)
        except Unresolved as e:
            raise StepFailed(f"{label}: unknown variable ${{{e.args[0]}}}") from None
        if name == "parallel":
            return name, {"steps": args}, {}, label
        common = {k: args[k] for k in COMMON_STEP_KEYS if k in args}
        own = {k: v for k, v in args.items() if k not in COMMON_STEP_KEYS}
        if "as" in common:
            own["as"] = common["as"]  # operations that start processes name them after it
        return name, own, common, label

    def run_step(self, step: Any, path: list) -> None:
        name, args, common, label = self.prepare(step, path)
        ctx = self.ctx
        if name == "parallel":
            self.run_parallel(args["steps"], path + ["parallel"], label)
            return
        op = registry.get(name)
        if op is None:
            raise StepFailed(f"{label}: operation {name!r} is not available")
        timeout = self.step_timeout(common, op)
        task_name = common.get("as") or f"step{'.'.join(map(str, path[1:]))}"
        expect = common.get("expect") or {}

        def body() -> None:
            ctx.current_step = label
            ctx.log(f"{label}: start {args}")
            t0 = time.monotonic()
            try:
                result = op.func(ctx, args)
            except StepFailed as e:
                raise e if str(e).startswith(label) else StepFailed(f"{label}: {e}") from None
            except OpError as e:
                self.check_outcome(label, expect, e)
                ctx.log(f"{label}: expected error {e.errno or e.ntstatus}: {e}")
                result = {**e.result, "error": str(e), "errno": e.errno, "ntstatus": e.ntstatus}
            else:
                self.check_outcome(label, expect, None)
            if common.get("as") and result is not None:
                ctx.results[common["as"]] = result
            ctx.log(f"{label}: done in {time.monotonic() - t0:.2f}s -> {result}")

        task = self.spawn(task_name, label, body, timeout)
        if common.get("background"):
            with ctx.lock:
                if task_name in ctx.tasks:
                    raise StepFailed(f"{label}: a task named {task_name!r} already exists")
                ctx.tasks[task_name] = task
            return
        self.join(task)

    def step_timeout(self, common: dict, op: registry.Operation) -> float:
        """The step's `timeout:`, else the scenario's `step_timeout:`, else the operation's default."""
        if "timeout" in common:
            return float(common["timeout"])
        if "step_timeout" in self.scen.data:
            return float(self.scen.data["step_timeout"])
        return float(op.timeout)

    def check_outcome(self, label: str, expect: dict, err: OpError | None) -> None:
        want = expect.get("outcome") or ("error" if expect.get("errno") or expect.get("ntstatus") else "success")
        if err is None:
            if want == "error":
                what = expect.get("errno") or expect.get("ntstatus") or "an error"
                raise StepFailed(f"{label}: expected {what}, but the operation succeeded")
            return
        if want == "success":
            raise StepFailed(f"{label}: {err}")
        for key in ("errno", "ntstatus"):
            if expect.get(key) and expect[key] != getattr(err, key):
                raise StepFailed(f"{label}: expected {key} {expect[key]}, got {getattr(err, key) or 'none'}: {err}")

    def spawn(self, name: str, label: str, body, timeout: float) -> Task:
        task = Task(name, label, threading.Thread(target=lambda: None, daemon=True), time.monotonic() + timeout,
                    timeout)

        def run() -> None:
            try:
                body()
            except BaseException as e:  # noqa: BLE001 - reported by join()
                task.error = e
            finally:
                task.done = True
        task.thread = threading.Thread(target=run, name=f"step:{label}", daemon=True)
        task.thread.start()
        return task

    def join(self, task: Task) -> None:
        task.thread.join(max(0.0, task.deadline - time.monotonic()))
        if task.thread.is_alive():
            raise Hung(f"{task.label}: timed out after {task.timeout:g}s")
        if task.error is not None:
            if isinstance(task.error, StepFailed):
                raise task.error
            raise StepFailed(f"{task.label}: {type(task.error).__name__}: {task.error}") from task.error

    def run_parallel(self, steps: list, path: list, label: str) -> None:
        tasks = []
        for i, step in enumerate(steps):
            name, _args, common, sub_label = self.prepare(step, path + [i])
            op = registry.get(name)
            timeout = self.step_timeout(common, op) if op else self.scen.step_timeout
            tasks.append(self.spawn(f"{label}[{i}]", sub_label,
                                    lambda step=step, i=i: self.run_step(step, path + [i]), timeout + 1.0))
        for t in tasks:
            self.join(t)

    # -- expectations

    def wait_all(self) -> None:
        for task in list(self.ctx.tasks.values()):
            self.join(task)

    def expectations(self, items: list) -> list[str]:
        """Every failed expectation as text (all of them are evaluated; the first one is the reason)."""
        failures: list[str] = []
        env = self.ctx.lookup()
        for i, item in enumerate(items):
            if not expect_applies(item, self.ctx.cell, env):
                continue
            kind, raw = expect_kind(item)
            line = mark_at(self.scen.data, ["expect", i])[0]
            label = f"expect[{i}] {kind} ({Path(self.source).name}:{line})"
            if kind == "pcap":
                continue
            try:
                args = substitute(raw, env, strict=True)
            except Unresolved as e:
                failures.append(f"{label}: unknown variable ${{{e.args[0]}}}")
                continue
            msg = self.expect_one(kind, args)
            if msg:
                failures.append(f"{label}: {msg}")
        return failures

    def expect_one(self, kind: str, args: dict) -> str | None:
        ctx = self.ctx
        if kind == "exit":
            proc = ctx.proc(args["proc"])
            rc = proc.wait(float(args.get("timeout", 30)))
            if rc is None:
                return f"{proc.name} still running after {args.get('timeout', 30)}s"
            want = int(args.get("status", 0))
            return None if rc == want else f"{proc.name} exited with status {rc}, expected {want}"
        if kind == "sha256":
            got, want = self.value(args["of"]), self.value_or_literal(args["equals"])
            return None if got == want else f"sha256 of {args['of']} is {got}, expected {want} ({args['equals']})"
        if kind == "file.sha256":
            path = Path(args["path"])
            path = path if path.is_absolute() else ctx.work / path
            if not path.exists():
                return f"no such file {path}"
            got = hashlib.sha256(path.read_bytes()).hexdigest()
            want = self.value_or_literal(args["equals"])
            return None if got == want else f"sha256 of {path.name} is {got}, expected {want}"
        if kind == "value":
            got = self.value(args["of"])
            for op, test in (("eq", lambda a, b: a == b), ("ne", lambda a, b: a != b),
                             ("min", lambda a, b: a >= b), ("max", lambda a, b: a <= b)):
                if op in args and not (got is not None and test(got, args[op])):
                    return f"{args['of']} is {got!r}, expected {op} {args[op]!r}"
            return None
        return f"unknown expectation {kind!r}"

    def value(self, dotted: str) -> Any:
        node: Any = self.ctx.results
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def value_or_literal(self, text: str) -> Any:
        got = self.value(text)
        return text if got is None else got


def run(ctx: Context) -> Outcome:
    """Run the cell's steps and its non-pcap expectations; a failure is the returned outcome."""
    r = _Runner(ctx)
    data = ctx.cell.scenario.data
    try:
        r.run_steps(data["steps"], ["steps"])
        r.wait_all()
    except StepFailed as e:
        ctx.log(f"FAILED: {e}")
        return Outcome("fail", str(e), [str(e)], step=str(e).split(":", 1)[0])
    failures = []
    try:
        failures = r.expectations([i for i in (data.get("expect") or []) if "pcap" not in i])
    except StepFailed as e:
        failures = [str(e)]
    ctx.teardown()
    # pcap expectations run in the parent after this process is gone (harness.scenario.pcapcheck)
    if failures:
        for f in failures:
            ctx.log(f"FAILED: {f}")
        return Outcome("fail", failures[0], failures)
    return Outcome("pass")


__all__ = ["Outcome", "Hung", "run", "where"]
