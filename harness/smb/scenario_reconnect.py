"""Scenario operations for reconnect and multichannel: `smb.serve_durable`, `smb.restart`,
`smb.reconnect_write`, `smb.multichannel_write`.

Peers run as processes on the emulated network like those of harness/smb/scenario_ops.py (whose
QUIC listener/connector they reuse), so the cell's pcap shows the reconnect, the replay flag and the
binding.  This module is also the peer program: ``python -m harness.smb.scenario_reconnect ...``.

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

import argparse
import hashlib
import json
import os
import random
import signal
import sys
import time
from pathlib import Path

TRANSPORTS = ["tcp", "nbt", "quic", "smbdirect"]
HANDLES = ["none", "durable1", "durable2"]
FAULTS = ["reset", "blackhole", "restart"]


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def run_server(a: argparse.Namespace) -> int:
    from harness.smb import scenario_ops as base
    from harness.smb.server import ServerConfig, ShareConfig
    from harness.smb_server import SMBServer
    from harness.transport import listen

    user, password = a.user.split(":", 1)
    config = ServerConfig(shares={a.share: ShareConfig(a.share, a.path, False)}, users={user: password},
                          state_dir=a.state_dir, multichannel=a.multichannel, max_size=a.max_size)
    listener = base._quic_listener(a) if a.transport == "quic" else listen(a.transport, a.addr, a.port)
    server = SMBServer(config, transport=a.transport, listener=listener)
    servers = [server]
    if a.channel_port:
        if a.channel_transport == "quic":
            second = argparse.Namespace(**{**vars(a), "port": a.channel_port})
            channel_listener = base._quic_listener(second)
        else:
            channel_listener = listen(a.channel_transport, a.addr, a.channel_port)
        servers.append(SMBServer(config, transport=a.channel_transport, listener=channel_listener, share_with=server))
    for s in servers:
        s.start()
    _emit({"state": "listening", "address": a.addr, "port": server.port})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(0.5)
    finally:
        for s in servers:
            s.stop()


def _factory(a: argparse.Namespace, plan, port: int, transport: str):
    from harness.smb import scenario_ops as base
    from harness.transport import connect
    from harness.transport.fault import FaultyTransport

    made: list = []

    def factory():
        if transport == "quic":
            t = base._connect_quic(argparse.Namespace(**{**vars(a), "port": port}))
        else:
            t = connect(transport, a.addr, port, timeout=a.timeout)
        made.append(t)
        return FaultyTransport(t, plan) if plan is not None and len(made) == 1 else t

    return factory


def run_client(a: argparse.Namespace) -> int:
    from harness.smb_reconnect import ResilientClient
    from harness.transport.fault import FaultPlan

    user, password = a.user.split(":", 1)
    restart_file = Path(a.control) / "restart.req" if a.control else None

    def ask_restart() -> None:
        restart_file.write_text("restart")
        done = restart_file.with_suffix(".done")
        deadline = time.monotonic() + 30
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.02)

    kind = "reset" if a.fault == "restart" else a.fault
    plan = FaultPlan(kind, a.after, "send", on_fire=ask_restart if a.fault == "restart" else None)
    data = random.Random(a.seed).randbytes(a.size)
    try:
        client = ResilientClient(a.addr, a.port, transport=a.transport, username=user, password=password,
                                 handles=a.handles, timeout=a.timeout, reconnect_timeout=60,
                                 transport_factory=_factory(a, plan, a.port, a.transport), keys_out=a.keys_out,
                                 server_name="server.test")
        with client.share(a.share) as share:
            share.put_bytes(a.path, data)
            read = share.get_bytes(a.path)
        events = dict(client.events)
        cut_to_io = (events["first-io"] - events["failure"]) * 1000 if "first-io" in events and \
            "failure" in events else None
        client.close()
    except Exception as exc:  # noqa: BLE001 - reported to the operation
        status = getattr(exc, "status", None)
        _emit({"error": f"{type(exc).__name__}: {exc}", "ntstatus": f"0x{status:08X}" if status else None})
        return 1
    _emit({"written": len(data), "written_sha256": hashlib.sha256(data).hexdigest(),
           "read_sha256": hashlib.sha256(read).hexdigest(), "reconnects": client.reconnects,
           "replayed": client.replayed, "fault_fired": plan.fired, "cut_to_io_ms": cut_to_io})
    return 0


def run_multichannel(a: argparse.Namespace) -> int:
    from harness.smb_multichannel import MultiChannelClient
    from harness.transport.fault import FaultPlan, FaultyTransport

    user, password = a.user.split(":", 1)
    plan = FaultPlan("reset", a.after, "send")
    data = random.Random(a.seed).randbytes(a.size)
    try:
        primary = _factory(a, None, a.port, a.transport)()
        client = MultiChannelClient(a.addr, a.port, transport=a.transport, username=user, password=password,
                                    timeout=a.timeout, transport_obj=primary, keys_out=a.keys_out,
                                    server_name="server.test")
        second = _factory(a, None, a.channel_port, a.channel_transport)()
        channel = client._bind(FaultyTransport(second, plan), (a.channel_transport, a.addr, a.channel_port,
                                                               _channel_options(a)))
        client.channels.append(channel)
        with client.share(a.share) as share:
            share.put_bytes(a.path, data)
            read = share.get_bytes(a.path)
        result = {"written": len(data), "written_sha256": hashlib.sha256(data).hexdigest(),
                  "read_sha256": hashlib.sha256(read).hexdigest(), "losses": client.losses,
                  "replayed": client.replayed, "channels": len(client.channels), "fault_fired": plan.fired}
        client.close()
    except Exception as exc:  # noqa: BLE001 - reported to the operation
        status = getattr(exc, "status", None)
        _emit({"error": f"{type(exc).__name__}: {exc}", "ntstatus": f"0x{status:08X}" if status else None})
        return 1
    _emit(result)
    return 0


def _channel_options(a: argparse.Namespace) -> dict:
    return {"server_name": "server.test", "ca": a.ca} if a.channel_transport == "quic" else {}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.smb.scenario_reconnect")
    p.add_argument("role", choices=["server", "client", "multichannel"])
    p.add_argument("--transport", choices=TRANSPORTS, required=True)
    p.add_argument("--addr", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--channel-transport", choices=TRANSPORTS, default="tcp")
    p.add_argument("--channel-port", type=int, default=0)
    p.add_argument("--share", default="data")
    p.add_argument("--path", default="f.bin")
    p.add_argument("--user", default="wirecheck:wirecheck-pass")
    p.add_argument("--state-dir")
    p.add_argument("--multichannel", action="store_true")
    p.add_argument("--max-size", type=int, default=65536)
    p.add_argument("--handles", choices=HANDLES, default="durable2")
    p.add_argument("--fault", choices=FAULTS, default="reset")
    p.add_argument("--after", type=int, default=256 * 1024)
    p.add_argument("--size", type=int, default=1 << 20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--control")
    p.add_argument("--keys-out")
    p.add_argument("--timeout", type=float, default=5.0)
    # QUIC (what harness.smb.scenario_ops' helpers read)
    p.add_argument("--auth", choices=["psk", "cert", "cert-client"], default="cert")
    p.add_argument("--version", choices=["v1", "v2"], default="v1")
    p.add_argument("--no-1rtt-encryption", action="store_true")
    p.add_argument("--alpn", default="smb")
    p.add_argument("--server-name")
    p.add_argument("--resume", choices=["none"], default="none")
    for name in ("--cert", "--key", "--ca", "--client-cert", "--client-key", "--psk"):
        p.add_argument(name)
    a = p.parse_args(argv)
    return {"server": run_server, "client": run_client, "multichannel": run_multichannel}[a.role](a)


# ------------------------------------------------------------------------------------- operations

if __name__ != "__main__":
    from harness.scenario import OpError, StepFailed, operation
    from harness.scenario.context import Context
    from harness.scenario.ops.core import HOST
    from harness.scenario.ops.net import SIZE, address, size_of

    def _base():
        from harness.smb import scenario_ops

        return scenario_ops

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
        return _base()._wait_line(ctx, name, 20.0)

    @operation("smb.serve_durable", schema=SERVE, timeout=30)
    def serve_durable(ctx: Context, args: dict) -> dict:
        """Start the SMB server with a durable state directory (restartable by smb.restart); multichannel optional."""
        addr = address("ipv4", args["host"])
        name = args.get("as") or "smb-server"
        share = args.get("share", "data")
        path = ctx.work / f"{name}.share"
        path.mkdir(mode=0o700, exist_ok=True)
        state = ctx.work / f"{name}.state"
        port = int(args.get("port") or _base()._port(args))
        argv = [sys.executable, "-m", "harness.smb.scenario_reconnect", "server", "--transport", args["transport"],
                "--addr", addr, "--port", str(port), "--share", share, "--path", str(path),
                "--state-dir", str(state)]
        if args.get("multichannel"):
            argv.append("--multichannel")
        if args.get("channel_port"):
            argv += ["--channel-transport", args.get("channel_transport", "tcp"),
                     "--channel-port", str(args["channel_port"])]
        if args["transport"] == "quic" or args.get("channel_transport") == "quic":
            argv += _base()._quic_argv(ctx, args)
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
        argv = [sys.executable, "-m", "harness.smb.scenario_reconnect", "client", "--transport", args["transport"],
                "--addr", address("ipv4", args["to"]), "--port", str(int(args.get("port") or _base()._port(args))),
                "--share", args.get("share", "data"), "--path", args.get("path", "f.bin"),
                "--size", str(size_of(args.get("size", "1MiB"))), "--seed", str(args.get("seed", 1)),
                "--handles", args.get("handles", "durable2"), "--fault", args.get("fault", "reset"),
                "--after", str(size_of(args.get("after", "256KiB"))), "--control", str(ctl),
                "--keys-out", ctx.smb_keys,
                "--timeout", str(args.get("io_timeout", 2.0 if args.get("fault") == "blackhole" else 5.0))]
        if args["transport"] == "quic":
            argv += _base()._quic_argv(ctx, args)
        return _run_peer(ctx, name, argv, args["host"], args["server"], ctl, 170)

    @operation("smb.multichannel_write", schema=MCWRITE, timeout=180)
    def multichannel_write(ctx: Context, args: dict) -> dict:
        """Bind a second channel, write with that channel reset after `after` bytes, read back."""
        name = args.get("as") or f"smb-mc-{len(ctx.procs) + 1}"
        ctl = ctx.work / f"{name}.ctl"
        ctl.mkdir(mode=0o700, exist_ok=True)
        argv = [sys.executable, "-m", "harness.smb.scenario_reconnect", "multichannel",
                "--transport", args["transport"], "--addr", address("ipv4", args["to"]),
                "--port", str(int(args.get("port") or _base()._port(args))),
                "--channel-transport", args["channel_transport"], "--channel-port", str(args["channel_port"]),
                "--share", args.get("share", "data"), "--path", args.get("path", "m.bin"),
                "--size", str(size_of(args.get("size", "1MiB"))), "--seed", str(args.get("seed", 1)),
                "--after", str(size_of(args.get("after", "256KiB"))), "--keys-out", ctx.smb_keys]
        if "quic" in (args["transport"], args["channel_transport"]):
            argv += _base()._quic_argv(ctx, args)
        return _run_peer(ctx, name, argv, args["host"], None, ctl, 170)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
