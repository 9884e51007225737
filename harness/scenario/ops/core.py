"""Core operations: processes on emulated hosts, waiting, sleeping, impairments (cut, blackhole).

`parallel` is not here: the executor runs its list of steps itself (harness.scenario.execute).
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import yaml

from ..context import Context, OpError, StepFailed
from ..impairspec import problem, to_mapping
from ..registry import operation

HOST = {"type": "integer", "minimum": 1, "maximum": 64}
HOSTS = {"anyOf": [HOST, {"type": "array", "items": HOST, "minItems": 1}]}
ARGV = {"type": "array", "minItems": 1, "items": {"type": ["string", "number"]}}
ENV = {"type": "object", "additionalProperties": {"type": "string"}}


def _last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        return obj if isinstance(obj, dict) else None
    return None


PROGRAM = {"host": HOST, "argv": ARGV, "script": {"type": "string", "minLength": 1}, "env": ENV,
           "name": {"type": "string"}, "cwd": {"type": "string"}, "as": {"type": "string"}}
NEEDS_PROGRAM = {"anyOf": [{"required": ["argv"]}, {"required": ["script"]}]}


def _argv(ctx: Context, args: dict) -> list[str]:
    """`argv`, or this Python running `script` (a path relative to the scenario file) with `argv` as arguments."""
    if "script" in args:
        # absolute: the program runs in the cell's work directory, and the scenario dir may be relative
        return [sys.executable, str((ctx.scenario_dir / args["script"]).resolve()), *map(str, args.get("argv", []))]
    return list(args["argv"])


@operation("proc.start", schema={"type": "object", "additionalProperties": False, **NEEDS_PROGRAM,
                                 "properties": PROGRAM}, timeout=10, files=("script",))
def proc_start(ctx: Context, args: dict) -> dict:
    """Start a program on emulated host `host` (interface number) in the background; `python` = this Python."""
    name = args.get("name") or args.get("as") or f"proc{len(ctx.procs) + 1}"
    proc = ctx.start(name, _argv(ctx, args), host=args.get("host"), env=args.get("env"), cwd=args.get("cwd"))
    return {"pid": proc.popen.pid}


@operation("host.run", schema={"type": "object", "additionalProperties": False, **NEEDS_PROGRAM,
                               "properties": {**PROGRAM, "status": {"type": "integer"}}}, timeout=60, files=("script",))
def host_run(ctx: Context, args: dict) -> dict:
    """Run a program on an emulated host to completion; fail unless it exits with `status` (default 0)."""
    name = args.get("name") or args.get("as") or f"run{len(ctx.procs) + 1}"
    proc = ctx.start(name, _argv(ctx, args), host=args.get("host"), env=args.get("env"), cwd=args.get("cwd"))
    rc = proc.popen.wait()
    out = proc.stdout()
    want = int(args.get("status", 0))
    result = {"status": rc, "stdout": out[-65536:], **(_last_json(out) or {})}
    if rc != want:
        # an OpError, so that a step may `expect: {outcome: error}` of a program that must fail
        raise OpError(f"{name} exited with status {rc}, expected {want}", result=result)
    return result


@operation("expect.exit", schema={"type": "object", "additionalProperties": False, "required": ["proc"],
                                  "properties": {"proc": {"type": "string"}, "status": {"type": "integer"}}},
           timeout=30)
def expect_exit(ctx: Context, args: dict) -> dict:
    """Wait for a started process to exit (within the step timeout) and check its exit status."""
    proc = ctx.proc(args["proc"])
    rc = proc.popen.wait()
    want = int(args.get("status", 0))
    if rc != want:
        raise StepFailed(f"{proc.name} exited with status {rc}, expected {want}")
    return {"status": rc}


@operation("proc.stop", schema={"type": "object", "additionalProperties": False, "required": ["proc"],
                                "properties": {"proc": {"type": "string"}}}, timeout=10)
def proc_stop(ctx: Context, args: dict) -> dict:
    """Stop a process (SIGTERM, then SIGKILL after 2 s)."""
    proc = ctx.proc(args["proc"])
    proc.stop()
    _merge_output(ctx, proc.name)
    return {"status": proc.popen.returncode}


def _merge_output(ctx: Context, name: str) -> None:
    """A process's final JSON line (peers print one) joins its results, usable as ${name.field}."""
    obj = _last_json(ctx.proc(name).stdout())
    if obj:
        with ctx.lock:
            ctx.results.setdefault(name, {}).update(obj)


@operation("wait", schema={"type": "object", "additionalProperties": False, "required": ["for"],
                           "properties": {"for": {"anyOf": [{"type": "string"},
                                                            {"type": "array", "items": {"type": "string"}}]}}},
           timeout=60)
def wait(ctx: Context, args: dict) -> None:
    """Wait for background steps (by `as:`) and/or processes (by name) to finish."""
    names = args["for"] if isinstance(args["for"], list) else [args["for"]]
    for name in names:
        if name in ctx.tasks:
            task = ctx.tasks[name]
            task.thread.join(max(0.0, task.deadline - time.monotonic()))
            if task.thread.is_alive():
                raise StepFailed(f"{task.label}: timed out after {task.timeout:g}s")
            if task.error is not None:
                raise task.error if isinstance(task.error, StepFailed) else StepFailed(f"{task.label}: {task.error}")
        elif name in ctx.procs:
            ctx.procs[name].popen.wait()
            _merge_output(ctx, name)
        else:
            raise StepFailed(f"nothing named {name!r} to wait for")


@operation("sleep", schema={"type": "object", "additionalProperties": False, "required": ["seconds"],
                            "properties": {"seconds": {"type": "number", "minimum": 0}}}, timeout=600)
def sleep(ctx: Context, args: dict) -> None:
    """Sleep (prefer `wait`: a scenario that sleeps is slow or flaky)."""
    time.sleep(float(args["seconds"]))


def write_impairments(ctx: Context, hosts: Any, spec: Any) -> None:
    """Rewrite the impairment file of each host; running processes re-read it within 100 ms."""
    mapping = to_mapping(spec)
    for host in hosts if isinstance(hosts, list) else [hosts]:
        path = ctx.impair_file(host)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            yaml.safe_dump(mapping, f)
        os.replace(tmp, path)
        ctx.log(f"impairments of host {host}: {json.dumps(mapping) if mapping else 'none'}")
    if ctx.procs:
        time.sleep(0.25)  # "from now on": the wrappers look at the file at most every 100 ms


SPEC = {"anyOf": [{"type": "string"}, {"type": "object"}, {"type": "null"}]}


@operation("impair", schema={"type": "object", "additionalProperties": False, "required": ["host", "spec"],
                             "properties": {"host": HOSTS, "spec": SPEC}},
           timeout=10, check=lambda a: problem(a.get("spec")))
def impair(ctx: Context, args: dict) -> None:
    """Set (or with `spec: null` clear) the impairments of host(s) from now on (README grammar or mapping)."""
    write_impairments(ctx, args["host"], args["spec"])


def _cut_spec(args: dict, kind: str) -> str:
    match = f"match: tcp:{args['port']}; " if args.get("port") else "match: tcp; "
    seed = f"seed={args['seed']}; " if "seed" in args else ""
    return f"{seed}{match}out: cut={kind}@{args['after']}"


CUT = {"type": "object", "additionalProperties": False, "required": ["host", "after"],
       "properties": {"host": HOSTS, "after": {"type": ["string", "integer"]}, "port": {"type": "integer"},
                      "kind": {"enum": ["rst", "blackhole"]}, "seed": {"type": "integer"}}}


@operation("cut", schema=CUT, timeout=10,
           check=lambda a: problem(_cut_spec(a, a.get("kind", "rst"))))
def cut(ctx: Context, args: dict) -> None:
    """Cut the host's TCP connections (by RST, or `kind: blackhole`) after N bytes sent or a time."""
    write_impairments(ctx, args["host"], _cut_spec(args, args.get("kind", "rst")))


def _blackhole_spec(args: dict) -> str:
    if args.get("proto", "udp") == "tcp":
        return _cut_spec({**args, "after": args.get("start", "0s")}, "blackhole")
    match = f"match: udp:{args['port']}; " if args.get("port") else "match: udp; "
    return f"{match}out: blackhole={args.get('start', '0s')}+{args['duration']}"


BLACKHOLE = {"type": "object", "additionalProperties": False, "required": ["host"],
             "properties": {"host": HOSTS, "proto": {"enum": ["udp", "tcp"]}, "port": {"type": "integer"},
                            "start": {"type": "string"}, "duration": {"type": "string"}}}


@operation("blackhole", schema=BLACKHOLE, timeout=10,
           check=lambda a: (None if a.get("proto", "udp") == "tcp" or "duration" in a
                            else "a udp blackhole needs `duration`") or problem(_blackhole_spec(a)))
def blackhole(ctx: Context, args: dict) -> None:
    """Silently drop what the host sends: UDP in a window `start`+`duration`; TCP from `start` on."""
    write_impairments(ctx, args["host"], _blackhole_spec(args))
