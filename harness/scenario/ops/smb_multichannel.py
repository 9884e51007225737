"""Scenario operations for multichannel discovery: ``smb.serve_listeners`` and
``smb.multichannel_discover``.

* ``smb.serve_listeners {host, listen: [TRANSPORT:PORT, ...], share, multichannel, as}`` runs
  ``wirecheck serve`` itself (the command a person runs) on emulated host ``host`` with one
  ``--listen`` per entry on that host's IPv4 address (``ipv6:TRANSPORT:PORT`` for its IPv6 one), and
  returns once every listener is up (the command says ``serving ... on TRANSPORT://ADDR:PORT`` for each).
* ``smb.multichannel_discover {host, to, port, size, as}`` runs a client (harness.peers.smb_multichannel)
  that starts on TCP, asks for the server's interfaces, binds a channel to each by itself (SMB
  Direct where RDMA_CAPABLE), writes and reads back ``size`` seeded bytes.  Result: interfaces,
  channels (transport of each), written_sha256, read_sha256, rdma_write, rdma_read.
"""

from __future__ import annotations

import os
import sys
import time

from harness.peers.smb_ops import DEFAULT_USER
from harness.scenario import StepFailed, operation
from harness.scenario.context import Context
from harness.scenario.ops.core import HOST
from harness.scenario.ops.net import SIZE, address, size_of
from harness.scenario.ops.smb_reconnect import _run_peer

LISTEN = {"type": "string", "pattern": r"^(ipv6:)?(tcp|nbt|smbdirect):[0-9]{1,5}$"}
SERVE = {"type": "object", "additionalProperties": False, "required": ["host", "listen"],
         "properties": {"host": HOST, "listen": {"type": "array", "minItems": 1, "items": LISTEN},
                        "share": {"type": "string"}, "multichannel": {"type": "boolean"}, "as": {"type": "string"}}}
DISCOVER = {"type": "object", "additionalProperties": False, "required": ["host", "to"],
            "properties": {"host": HOST, "to": HOST, "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                           "share": {"type": "string"}, "path": {"type": "string"}, "size": SIZE,
                           "seed": {"type": "integer"}, "as": {"type": "string"}}}


def _listen_arg(host: int, entry: str) -> str:
    family, _, rest = entry.partition(":") if entry.startswith("ipv6:") else ("ipv4", "", entry)
    transport, port = rest.split(":")
    addr = address(family, host)
    return f"{transport}:[{addr}]:{port}" if family == "ipv6" else f"{transport}:{addr}:{port}"


@operation("smb.serve_listeners", schema=SERVE, timeout=30)
def serve_listeners(ctx: Context, args: dict) -> dict:
    """Start `wirecheck serve` with several --listen; return once each of them listens."""
    name = args.get("as") or "smb-server"
    share = args.get("share", "data")
    path = ctx.work / f"{name}.share"
    path.mkdir(mode=0o700, exist_ok=True)
    argv = [sys.executable, "-c", "from harness.cli import main; main()", "serve", "--share", f"{share}={path}",
            "--user", DEFAULT_USER]
    for entry in args["listen"]:
        argv += ["--listen", _listen_arg(args["host"], entry)]
    if args.get("multichannel", True):
        argv.append("--multichannel")
    proc = ctx.start(name, argv, host=args["host"], cwd=os.getcwd())
    deadline = time.monotonic() + 20
    while True:
        lines = [x.split(" on ", 1)[1] for x in proc.err_path.read_text(errors="replace").splitlines()
                 if x.startswith("serving ")]
        if len(lines) == len(args["listen"]):
            return {"listeners": lines, "share": share, "path": str(path)}
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            raise StepFailed(f"{name} did not start its listeners: "
                             + proc.err_path.read_text(errors="replace")[-800:])
        time.sleep(0.02)


@operation("smb.multichannel_discover", schema=DISCOVER, timeout=120)
def multichannel_discover(ctx: Context, args: dict) -> dict:
    """Start on TCP, query the interfaces, bind what is offered, write and read back through the channels."""
    name = args.get("as") or f"smb-mcd-{len(ctx.procs) + 1}"
    ctl = ctx.work / f"{name}.ctl"
    ctl.mkdir(mode=0o700, exist_ok=True)
    argv = [sys.executable, "-m", "harness.peers.smb_multichannel", "--addr", address("ipv4", args["to"]),
            "--port", str(args.get("port", 445)), "--share", args.get("share", "data"),
            "--path", args.get("path", "m.bin"), "--size", str(size_of(args.get("size", "1MiB"))),
            "--seed", str(args.get("seed", 1)), "--user", DEFAULT_USER, "--keys-out", ctx.smb_keys]
    return _run_peer(ctx, name, argv, args["host"], None, ctl, 110)
