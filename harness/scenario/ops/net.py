"""TCP and UDP exchanges between emulated hosts, with sha256 of the data both ways.

The servers and clients are child processes (harness/peers/net_exchange.py) on emulated hosts given by
interface number; addresses come from the family (`ipv4` 127.0.0.N, `ipv6` fd00::5357:5fNN, `mapped`
::ffff:127.0.0.N on an AF_INET6 socket). A server with `bind: any` binds the wildcard (`::` for ipv6: a
dual-stack socket unless `v6only: true`), so IPv4 clients reach an IPv6 server as on Linux.
"""
from __future__ import annotations

import socket
import sys
from typing import Any

from harness.peers.net_exchange import READY
from wrappers.addressing import Network, socket_name

from ..context import Context, OpError, StepFailed
from ..registry import operation
from .core import HOST, _merge_output

FAMILY = {"enum": ["ipv4", "ipv6", "mapped"]}
SIZE = {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": r"^[0-9]+(k|KiB|M|MiB)?$"}]}
_UNITS = {"k": 1000, "KiB": 1024, "M": 1000_000, "MiB": 1 << 20}


def size_of(value: int | str) -> int:
    if isinstance(value, int):
        return value
    for unit, mult in _UNITS.items():
        if value.endswith(unit):
            return int(value[: -len(unit)]) * mult
    return int(value)


def address(family: str, host: int) -> str:
    if family == "mapped":
        return "::ffff:" + Network().iface_address(socket.AF_INET, int(host))
    return Network().iface_address(socket.AF_INET6 if family == "ipv6" else socket.AF_INET, int(host))


def _server(ctx: Context, args: dict, proto: str) -> dict:
    family = args.get("family", "ipv4")
    addr = address(family, args["host"])
    if args.get("bind") == "any":
        addr = "0.0.0.0" if family == "ipv4" else "::"
    name = args.get("as") or f"{proto}-server-{args['port']}"
    argv = [sys.executable, "-m", "harness.peers.net_exchange", f"{proto}-echo-server", "--family", family,
            "--addr", addr, "--port", str(args["port"]), "--timeout", str(args.get("idle", 20))]
    if "v6only" in args:
        argv += ["--v6only", str(int(bool(args["v6only"])))]
    if proto == "tcp":
        argv += ["--conns", str(args.get("conns", 1)), "--mode", args.get("mode", "echo")]
    proc = ctx.start(name, argv, host=args["host"])
    af = socket.AF_INET6 if family == "ipv6" or (family == "mapped" and addr == "::") else socket.AF_INET
    st = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    ctx.wait_socket(socket_name(af, st, int(args["host"]), int(args["port"])), proc, 10.0, READY)
    return {"address": addr, "port": args["port"]}


def _client(ctx: Context, args: dict, proto: str) -> dict:
    family = args.get("family", "ipv4")
    name = args.get("as") or f"{proto}-client-{len(ctx.procs) + 1}"
    argv = [sys.executable, "-m", "harness.peers.net_exchange", f"{proto}-client", "--family", family,
            "--addr", address(family, args["to"]), "--port", str(args["port"]),
            "--size", str(size_of(args.get("size", 65536))), "--seed", str(args.get("seed", 1)),
            "--timeout", str(args.get("io_timeout", 20))]
    if "chunk" in args:
        argv += ["--chunk", str(size_of(args["chunk"]))]
    if proto == "tcp":
        argv += ["--mode", args.get("mode", "echo")]
    else:
        argv += ["--rto", str(args.get("rto", 0.05))]
    proc = ctx.start(name, argv, host=args["host"])
    rc = proc.popen.wait()
    _merge_output(ctx, name)
    result = dict(ctx.results.get(name, {}))
    if not result:
        raise StepFailed(f"{name} exited with status {rc} and printed no result: {proc.err_path.read_text()[-500:]}")
    if result.get("errno"):
        raise OpError(f"{name}: {result['errno']} after {result.get('sent', 0)} bytes sent, "
                      f"{result.get('received', 0)} received", errno=result["errno"], result=result)
    return result


SERVER: dict[str, Any] = {"type": "object", "additionalProperties": False, "required": ["host", "port"],
          "properties": {"host": HOST, "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                         "family": FAMILY, "conns": {"type": "integer", "minimum": 1},
                         "mode": {"enum": ["echo", "sink"]}, "idle": {"type": "number", "minimum": 0},
                         "bind": {"enum": ["host", "any"]}, "v6only": {"type": "boolean"},
                         "as": {"type": "string"}}}
CLIENT: dict[str, Any] = {"type": "object", "additionalProperties": False, "required": ["host", "to", "port"],
          "properties": {"host": HOST, "to": HOST, "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                         "family": FAMILY, "size": SIZE, "seed": {"type": "integer"}, "chunk": SIZE,
                         "mode": {"enum": ["echo", "sink"]}, "rto": {"type": "number", "exclusiveMinimum": 0},
                         "io_timeout": {"type": "number", "exclusiveMinimum": 0}, "as": {"type": "string"}}}
UDP_SERVER = {**SERVER, "properties": {k: v for k, v in SERVER["properties"].items() if k not in ("conns", "mode")}}
UDP_CLIENT = {**CLIENT, "properties": {k: v for k, v in CLIENT["properties"].items() if k != "mode"}}


@operation("tcp.echo_server", schema=SERVER, timeout=15)
def tcp_echo_server(ctx: Context, args: dict) -> dict:
    """Start a TCP echo (or `mode: sink`) server on a host; returns once it listens."""
    return _server(ctx, args, "tcp")


@operation("tcp.exchange", schema=CLIENT, timeout=60)
def tcp_exchange(ctx: Context, args: dict) -> dict:
    """Connect from `host` to `to`, send `size` seeded bytes, read the echo: sent/received bytes and sha256."""
    return _client(ctx, args, "tcp")


@operation("udp.echo_server", schema=UDP_SERVER, timeout=15)
def udp_echo_server(ctx: Context, args: dict) -> dict:
    """Start a UDP echo server on a host; returns once it is bound."""
    return _server(ctx, args, "udp")


@operation("udp.exchange", schema=UDP_CLIENT, timeout=60)
def udp_exchange(ctx: Context, args: dict) -> dict:
    """Stop-and-wait UDP transfer of `size` bytes through the echo server; every byte checked by sha256."""
    return _client(ctx, args, "udp")
