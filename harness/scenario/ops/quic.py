"""Scenario operations on QUIC: `quic.streams` (the stream matrix) on IPPROTO_QUIC sockets, and
`quic.migrate`, `quic.rebind`, `quic.state` on the QUIC connection of an SMB client.

The two ends are processes on emulated hosts (harness.peers.quic_streams), so the cell's pcap and key
log capture them like any other peer. The operation starts the server, then the client, waits for
both within its timeout, and returns both sides' reports plus the verdicts a scenario checks:

* ``intact``: every stream the opener ended with FIN arrived whole (same sha256 at the peer, and on a
  bidi stream the peer's digest came back);
* ``reset_seen``: the peer saw RESET_STREAM with code 7 on every stream (end: reset), no FIN;
* ``stop_seen``: the opener's send side of every stream went to RESET_RECVD with code 9 after the
  peer's STOP_SENDING (end: stop_sending);
* ``late_send_failed``: after a reset or stop, one more send on each stream failed (EINVAL/ENOSTR);
* ``streams``: how many streams the peer saw; ``eagain``: DONTWAIT retries per side.

A side that fails (an errno, a timeout) makes the step fail with that errno, so `expect: {errno: ...}`
works as for any operation.
"""
from __future__ import annotations

import json
import os
import sys

from ..context import Context, OpError, StepFailed
from ..impairspec import problem
from ..registry import operation
from .core import HOST, HOSTS, write_impairments
from .net import FAMILY, SIZE, address, size_of
from .smb import request

STREAMS = {
    "type": "object", "additionalProperties": False, "required": ["host", "to"],
    "properties": {
        "host": HOST, "to": HOST, "family": FAMILY, "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "kind": {"enum": ["bidi", "uni"]}, "opener": {"enum": ["client", "server"]},
        "end": {"enum": ["fin", "reset", "stop_sending"]}, "mode": {"enum": ["blocking", "dontwait"]},
        "size": SIZE, "streams": {"type": "integer", "minimum": 1, "maximum": 4000},
        "limit": {"type": "integer", "minimum": 1, "maximum": 1000}, "interleave": {"type": "boolean"},
        "chunk": {"type": "integer", "minimum": 1, "maximum": 1048576},
        "io_timeout": {"type": "number", "exclusiveMinimum": 0}, "as": {"type": "string"},
    },
}

MIGRATE = {"type": "object", "additionalProperties": False, "required": ["on"],
           "properties": {"on": {"type": "string"}, "as": {"type": "string"},
                          "port_offset": {"type": "integer", "minimum": 1, "maximum": 1000},
                          "how": {"enum": ["option", "nat-port", "nat-addr", "nat-both"]},
                          "host": {"type": "integer", "minimum": 1, "maximum": 64},
                          "spec": {"type": ["string", "null"]}}}
REBIND = {"type": "object", "additionalProperties": False, "required": ["host", "kind"],
          "properties": {"host": HOSTS, "kind": {"enum": ["port", "addr", "both"]},
                         "spec": {"type": ["string", "null"]}, "as": {"type": "string"}}}
STATE = {"type": "object", "additionalProperties": False, "required": ["on"],
         "properties": {"on": {"type": "string"}, "as": {"type": "string"}}}


def _psk(ctx: Context) -> str:
    path = ctx.work / "quic-streams.psk"
    if not path.exists():
        path.write_text(f"wirecheck:{os.urandom(32).hex()}\n")
    return str(path)


def _last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and "role" in obj:
            return obj
    return None


@operation("quic.streams", schema=STREAMS, timeout=90)
def quic_streams(ctx: Context, args: dict) -> dict:
    """Open streams on one QUIC connection and end them with FIN, RESET or STOP_SENDING; blocking or DONTWAIT."""
    family = args.get("family", "ipv4")
    addr = address(family, args["to"])
    port = int(args.get("port", 4433))
    timeout = float(args.get("io_timeout", 60))
    name = args.get("as") or "streams"
    common = ["--addr", addr, "--port", str(port), "--psk", _psk(ctx),
              "--kind", args.get("kind", "bidi"), "--opener", args.get("opener", "client"),
              "--end", args.get("end", "fin"), "--mode", args.get("mode", "blocking"),
              "--size", str(size_of(args.get("size", 65536))), "--streams", str(args.get("streams", 1)),
              "--chunk", str(args.get("chunk", 16384)), "--timeout", str(timeout)]
    if args.get("limit"):
        common += ["--limit", str(args["limit"])]
    if args.get("interleave"):
        common.append("--interleave")
    py = [sys.executable, "-m", "harness.peers.quic_streams"]
    srv = ctx.start(f"{name}-server", [*py, "server", *common], host=args["to"], cwd=os.getcwd())
    if not srv.wait_output(lambda text: '"listening"' in text, 20):  # woken by the line, no polling
        if srv.stdout_closed:
            srv.wait(2.0)
        if srv.popen.poll() is not None:
            raise StepFailed(f"{srv.name} exited with status {srv.popen.returncode} before listening: "
                             + srv.err_path.read_text(errors="replace")[-800:])
        raise StepFailed(f"{srv.name} did not listen within 20s")
    cli = ctx.start(f"{name}-client", [*py, "client", *common], host=args["host"], cwd=os.getcwd())
    reports = {}
    for proc in (cli, srv):
        rc = proc.wait(timeout + 15)
        if rc is None:
            proc.stop()
            raise StepFailed(f"{proc.name} still running after {timeout + 15:g}s")
        rep = _last_json(proc.stdout())
        if rep is None:
            raise StepFailed(f"{proc.name} exited with status {rc} without a report: "
                             + proc.err_path.read_text(errors="replace")[-800:])
        reports[rep["role"]] = rep
    opener_role = args.get("opener", "client")
    op, pe = reports[opener_role], reports["server" if opener_role == "client" else "client"]
    end = args.get("end", "fin")
    result = {"client": reports["client"], "server": reports["server"], "opener": op, "peer": pe,
              "streams": len(pe.get("sids") or []),
              "eagain": {"opener": op.get("eagain"), "peer": pe.get("eagain")}}
    if end == "fin":
        result["intact"] = (sorted(pe.get("sha256") or []) == sorted(op.get("sent_sha256") or [])
                            and all(pe.get("fin") or [False]) and op.get("replies_ok", True))
    result["reset_seen"] = bool(pe.get("reset")) and all(r == 7 for r in pe["reset"]) and not any(pe.get("fin") or [])
    result["stop_seen"] = bool(op.get("send_reset")) and all(r == 9 for r in op["send_reset"])
    late = op.get("after_end_errno") or []
    result["late_send_failed"] = bool(late) and all(e in ("EINVAL", "ENOSTR", "EPIPE") for e in late)
    for side in (op, pe):
        if side.get("errno"):
            raise OpError(f"{side['role']}: {side['errno']}", errno=side["errno"], result=result)
    return result


def _side(ctx: Context, on: str, req: dict, timeout: float = 10.0) -> dict:
    return request(ctx, on, req, timeout, side=True)


def _rebind_spec(args: dict) -> str:
    base = (args.get("spec") or "").strip()
    field = f"rebind={args['kind']}@0s"
    if not base:
        return f"out: {field}"
    if "|" in base:
        raise ValueError("quic.rebind spec: one rule set only")
    clauses = [c.strip() for c in base.split(";") if c.strip()]
    for i, c in enumerate(clauses):
        if c.startswith("out:"):
            clauses[i] = f"{c} {field}"
            break
    else:
        clauses.append(f"out: {field}")
    return "; ".join(clauses)


def _rebind_problem(args: dict) -> str | None:
    try:
        return problem(_rebind_spec(args))
    except ValueError as e:
        return str(e)


def _migrate_problem(args: dict) -> str | None:
    how = args.get("how", "option")
    if how == "option":
        return None
    if "host" not in args:
        return f"quic.migrate how: {how} needs `host` (the client's host, whose NAT rebinds)"
    return _rebind_problem({"kind": how[4:], "spec": args.get("spec")})


@operation("quic.migrate", schema=MIGRATE, timeout=15, check=_migrate_problem)
def quic_migrate(ctx: Context, args: dict) -> dict:
    """The smb.connect client's path changes, even mid-transfer: `how: option` (default) moves it to its
    port + port_offset with CONNECTION_MIGRATION; `nat-port|nat-addr|nat-both` rebinds `host`'s NAT
    (quic.rebind with `spec`, the host's other impairments), the client unaware."""
    how = args.get("how", "option")
    if how != "option":
        return {"how": how, **quic_rebind(ctx, {"host": args["host"], "kind": how[4:], "spec": args.get("spec")})}
    return {"how": how, **_side(ctx, args["on"], {"op": "quic.migrate", "port_offset": args.get("port_offset", 1)})}


@operation("quic.rebind", schema=REBIND, timeout=10, check=_rebind_problem)
def quic_rebind(ctx: Context, args: dict) -> dict:
    """NAT rebinding: what `host` sends next comes from a new port/address (`spec`: its other impairments)."""
    spec = _rebind_spec(args)
    write_impairments(ctx, args["host"], spec)
    return {"spec": spec}


@operation("quic.state", schema=STATE, timeout=10)
def quic_state(ctx: Context, args: dict) -> dict:
    """The client's QUIC handshake facts: resumed, early_data."""
    return request(ctx, args["on"], {"op": "quic.state"})
