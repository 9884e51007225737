"""Scenario operations for reconnect and multichannel: `smb.serve_durable`, `smb.restart`,
`smb.reconnect_write`, `smb.multichannel_write`.

Peers run as processes on the emulated network (the peer program harness.peers.smb_reconnect, which
reuses the QUIC listener and connector of harness.peers.smb_ops), so the cell's pcap shows the
reconnect, the replay flag and the binding.

* ``smb.serve_durable`` starts the reference server with a durable state directory (and, with
  ``multichannel: true``, session binding; over tcp it also listens for a second channel on
  ``channel_port`` with ``channel_transport``).


* ``smb.restart {server}`` kills the server process (SIGKILL: a crash, nothing is flushed) and starts
  it again on the same address with the same state directory: durable opens come back detached and
  wait for their owners (the model in README "Reconnect and multichannel").


* ``smb.reconnect_write`` runs a resilient client to completion: it writes ``size`` seeded bytes with
  ``handles`` none | durable1 | durable2 while ``fault`` hits its first connection -- ``reset`` /
  ``blackhole`` after ``after`` bytes sent, or ``restart``: at that point the operation restarts the
  server (the client asks through a file in the cell's scratch directory).  Result: written_sha256,
  read_sha256 (read back after), reconnects, replayed, cut_to_io_ms.


* ``smb.multichannel_write`` binds a second channel (tcp or quic), writes with the second channel
  reset after ``after`` bytes, reads back: written_sha256, read_sha256, losses, replayed, channels.

Faults: the client applies them to its own transport (harness/transport/fault.py), which works for
every transport including QUIC and SMB Direct; the socket-level `cut` operation of the foundation
(the impairment layer) can be used on tcp as well.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from harness.peers.smb_reconnect import FAULTS, HANDLES, TRANSPORTS
from harness.scenario import OpError, StepFailed, operation
from harness.scenario.context import Context
from harness.scenario.ops.core import HOST
from harness.scenario.ops.net import SIZE, address, size_of
from harness.scenario.ops.smb import port_of, quic_argv, wait_line

SERVE = {"type": "object", "additionalProperties": False, "required": ["transport", "host"],
         "properties": {"transport": {"enum": TRANSPORTS}, "host": HOST, "port": {"type": "integer"},
                        "share": {"type": "string"}, "as": {"type": "string"},
                        "multichannel": {"type": "boolean"}, "channel_transport": {"enum": TRANSPORTS},
                        "channel_port": {"type": "integer"}}}


RESTART = {"type": "object", "additionalProperties": False, "required": ["server"],
           "properties": {"server": {"type": "string"}, "as": {"type": "string"}}}


WRITE = {"type": "object", "additionalProperties": False, "required": ["transport", "host", "to", "server"],
         "properties": {"transport": {"enum": TRANSPORTS}, "host": HOST, "to": HOST, "server": {"type": "string"},
                        "port": {"type": "integer"}, "share": {"type": "string"}, "path": {"type": "string"},
                        "size": SIZE, "seed": {"type": "integer"}, "handles": {"enum": HANDLES},
                        "fault": {"enum": FAULTS}, "after": SIZE, "io_timeout": {"type": "number"},
                        "as": {"type": "string"}}}


MCWRITE = {"type": "object", "additionalProperties": False,
           "required": ["transport", "host", "to", "channel_transport", "channel_port"],
           "properties": {"transport": {"enum": TRANSPORTS}, "host": HOST, "to": HOST,
                          "port": {"type": "integer"}, "channel_transport": {"enum": TRANSPORTS},
                          "channel_port": {"type": "integer"}, "share": {"type": "string"},
                          "path": {"type": "string"}, "size": SIZE, "seed": {"type": "integer"},
                          "after": SIZE, "as": {"type": "string"}}}


def _restartable(ctx: Context) -> dict:
    """What smb.restart needs to start a server again (argv, host), kept on the cell's context."""
    if not hasattr(ctx, "_smb_restartable"):
        ctx._smb_restartable = {}  # type: ignore[attr-defined]
    return ctx._smb_restartable  # type: ignore[attr-defined]


def _start_server(ctx: Context, name: str, argv: list[str], host: int) -> dict:
    ctx.start(name, argv, host=host, cwd=os.getcwd())
    return wait_line(ctx, name, 20.0)


@operation("smb.serve_durable", schema=SERVE, timeout=30)
def serve_durable(ctx: Context, args: dict) -> dict:
    """Start the SMB server with a durable state directory (restartable by smb.restart); multichannel optional."""
    addr = address("ipv4", args["host"])
    name = args.get("as") or "smb-server"
    share = args.get("share", "data")
    path = ctx.work / f"{name}.share"
    path.mkdir(mode=0o700, exist_ok=True)
    state = ctx.work / f"{name}.state"
    port = int(args.get("port") or port_of(args))
    argv = [sys.executable, "-m", "harness.peers.smb_reconnect", "server", "--transport", args["transport"],
            "--addr", addr, "--port", str(port), "--share", share, "--path", str(path),
            "--state-dir", str(state)]
    if args.get("multichannel"):
        argv.append("--multichannel")
    if args.get("channel_port"):
        argv += ["--channel-transport", args.get("channel_transport", "tcp"),
                 "--channel-port", str(args["channel_port"])]
    if args["transport"] == "quic" or args.get("channel_transport") == "quic":
        argv += quic_argv(ctx, args)
    line = _start_server(ctx, name, argv, args["host"])
    _restartable(ctx)[name] = {"argv": argv, "host": args["host"], "n": 0, "current": name}
    return {**line, "share": share, "path": str(path), "state_dir": str(state), "transport": args["transport"]}


def _restart(ctx: Context, server: str) -> dict:
    info = _restartable(ctx).get(server)
    if info is None:
        raise StepFailed(f"{server!r} was not started by smb.serve_durable")
    proc = ctx.proc(info["current"])
    if proc.popen.poll() is None:
        proc.popen.kill()  # a crash: nothing flushed, nothing closed politely
        proc.popen.wait(timeout=10)
    info["n"] += 1
    info["current"] = f"{server}.restart{info['n']}"
    line = {}
    deadline = time.monotonic() + 20
    while True:  # the port may need a moment to be free again
        try:
            line = _start_server(ctx, info["current"], info["argv"], info["host"])
            break
        except StepFailed:
            if time.monotonic() > deadline:
                raise
            info["n"] += 1
            info["current"] = f"{server}.restart{info['n']}"
            time.sleep(0.2)
    return {**line, "restarts": info["n"]}


@operation("smb.restart", schema=RESTART, timeout=60)
def smb_restart(ctx: Context, args: dict) -> dict:
    """Kill the server of smb.serve_durable and start it again on the same address and state directory."""
    return _restart(ctx, args["server"])


def _run_peer(ctx: Context, name: str, argv: list[str], host: int, server: str | None, ctl: Path,
              timeout: float) -> dict:
    proc = ctx.start(name, argv, host=host, cwd=os.getcwd())
    deadline = time.monotonic() + timeout
    while proc.popen.poll() is None:
        req = ctl / "restart.req"
        if server and req.exists():
            req.unlink()
            _restart(ctx, server)
            (ctl / "restart.done").write_text("done")
        if time.monotonic() > deadline:
            proc.stop()
            raise StepFailed(f"{name} did not finish within {timeout:g}s")
        time.sleep(0.02)
    lines = [x for x in proc.stdout().splitlines() if x.strip().startswith("{")]
    if not lines:
        raise StepFailed(f"{name} exited with status {proc.popen.returncode} and no result: "
                         + proc.err_path.read_text(errors="replace")[-800:])
    res = json.loads(lines[-1])
    if res.get("error"):
        raise OpError(f"{name}: {res['error']}", ntstatus=res.get("ntstatus"), result=res)
    return res


@operation("smb.reconnect_write", schema=WRITE, timeout=180)
def reconnect_write(ctx: Context, args: dict) -> dict:
    """Write seeded data through a resilient client whose first connection meets `fault`; read it back."""
    name = args.get("as") or f"smb-rc-{len(ctx.procs) + 1}"
    ctl = ctx.work / f"{name}.ctl"
    ctl.mkdir(mode=0o700, exist_ok=True)
    argv = [sys.executable, "-m", "harness.peers.smb_reconnect", "client", "--transport", args["transport"],
            "--addr", address("ipv4", args["to"]), "--port", str(int(args.get("port") or port_of(args))),
            "--share", args.get("share", "data"), "--path", args.get("path", "f.bin"),
            "--size", str(size_of(args.get("size", "1MiB"))), "--seed", str(args.get("seed", 1)),
            "--handles", args.get("handles", "durable2"), "--fault", args.get("fault", "reset"),
            "--after", str(size_of(args.get("after", "256KiB"))), "--control", str(ctl),
            "--keys-out", ctx.smb_keys,
            "--timeout", str(args.get("io_timeout", 2.0 if args.get("fault") == "blackhole" else 5.0))]
    if args["transport"] == "quic":
        argv += quic_argv(ctx, args)
    return _run_peer(ctx, name, argv, args["host"], args["server"], ctl, 170)


@operation("smb.multichannel_write", schema=MCWRITE, timeout=180)
def multichannel_write(ctx: Context, args: dict) -> dict:
    """Bind a second channel, write with that channel reset after `after` bytes, read back."""
    name = args.get("as") or f"smb-mc-{len(ctx.procs) + 1}"
    ctl = ctx.work / f"{name}.ctl"
    ctl.mkdir(mode=0o700, exist_ok=True)
    argv = [sys.executable, "-m", "harness.peers.smb_reconnect", "multichannel",
            "--transport", args["transport"], "--addr", address("ipv4", args["to"]),
            "--port", str(int(args.get("port") or port_of(args))),
            "--channel-transport", args["channel_transport"], "--channel-port", str(args["channel_port"]),
            "--share", args.get("share", "data"), "--path", args.get("path", "m.bin"),
            "--size", str(size_of(args.get("size", "1MiB"))), "--seed", str(args.get("seed", 1)),
            "--after", str(size_of(args.get("after", "256KiB"))), "--keys-out", ctx.smb_keys]
    if "quic" in (args["transport"], args["channel_transport"]):
        argv += quic_argv(ctx, args)
    return _run_peer(ctx, name, argv, args["host"], None, ctl, 170)
