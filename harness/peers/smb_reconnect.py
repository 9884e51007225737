"""The SMB peers behind the reconnect and multichannel scenario operations of
harness.scenario.ops.smb_reconnect: ``python -m harness.peers.smb_reconnect server|client|multichannel ...``.

They run as processes on the emulated network like those of harness.peers.smb_ops (whose QUIC
listener and connector they reuse), so the cell's pcap shows the reconnect, the replay flag and the
binding. Each prints JSON lines on stdout; the last one is its result.

* ``server``: the reference server with a durable state directory (``--state-dir``), session binding
  with ``--multichannel``, and a second listener on ``--channel-port`` with ``--channel-transport``.
* ``client``: a resilient client writes ``--size`` seeded bytes with ``--handles`` none | durable1 |
  durable2 while ``--fault`` hits its first connection (``reset`` / ``blackhole`` after ``--after``
  bytes sent, or ``restart``: it asks the operation to restart the server through ``restart.req`` in
  its control directory and waits for ``restart.done``), then reads the data back.
* ``multichannel``: binds a second channel, writes with that channel reset after ``--after`` bytes,
  reads back.

Faults: the client applies them to its own transport (harness.transport.fault), which works for every
transport including QUIC and SMB Direct.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import signal
import sys
import time
from pathlib import Path

from harness.peers.smb_ops import connect_quic, quic_listener

TRANSPORTS = ["tcp", "nbt", "quic", "smbdirect"]
HANDLES = ["none", "durable1", "durable2"]
FAULTS = ["reset", "blackhole", "restart"]


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def run_server(a: argparse.Namespace) -> int:
    """Listen first (both listeners), say so, then load and start the SMB server, as smb_ops' server
    does: its modules take most of a second to import, and a client connecting meanwhile waits in
    the listen backlog instead of the cell waiting for the import before it starts the client."""
    from harness.transport import listen

    listener = quic_listener(a) if a.transport == "quic" else listen(a.transport, a.addr, a.port)
    channel_listener = None
    if a.channel_port:
        if a.channel_transport == "quic":
            second = argparse.Namespace(**{**vars(a), "port": a.channel_port})
            channel_listener = quic_listener(second)
        else:
            channel_listener = listen(a.channel_transport, a.addr, a.channel_port)
    _emit({"state": "listening", "address": a.addr, "port": listener.address[1]})

    from harness.blocking.server import SMBServer
    from harness.smb.server import ServerConfig, ShareConfig

    user, password = a.user.split(":", 1)
    config = ServerConfig(shares={a.share: ShareConfig(a.share, a.path, False)}, users={user: password},
                          state_dir=a.state_dir, multichannel=a.multichannel, max_size=a.max_size)
    server = SMBServer(config, transport=a.transport, listener=listener)
    servers = [server]
    if channel_listener is not None:
        servers.append(SMBServer(config, transport=a.channel_transport, listener=channel_listener, share_with=server))
    for s in servers:
        s.start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(0.5)
    finally:
        for s in servers:
            s.stop()


def _factory(a: argparse.Namespace, plan, port: int, transport: str):
    from harness.transport import connect
    from harness.transport.fault import FaultyTransport

    made: list = []

    def factory():
        if transport == "quic":
            t = connect_quic(argparse.Namespace(**{**vars(a), "port": port}))
        else:
            t = connect(transport, a.addr, port, timeout=a.timeout)
        made.append(t)
        return FaultyTransport(t, plan) if plan is not None and len(made) == 1 else t

    return factory


def run_client(a: argparse.Namespace) -> int:
    from harness.blocking.reconnect import ResilientClient
    from harness.transport.fault import FaultPlan

    user, password = a.user.split(":", 1)
    restart_file = Path(a.control) / "restart.req" if a.control else None

    def ask_restart() -> None:
        assert restart_file is not None  # only a "restart" fault calls this; main() requires --control for it
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
    from harness.blocking.multichannel import MultiChannelClient
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
    p = argparse.ArgumentParser(prog="python -m harness.peers.smb_reconnect")
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
    # QUIC (what harness.peers.smb_ops' helpers read)
    p.add_argument("--auth", choices=["psk", "cert", "cert-client"], default="cert")
    p.add_argument("--version", choices=["v1", "v2"], default="v1")
    p.add_argument("--no-1rtt-encryption", action="store_true")
    p.add_argument("--alpn", default="smb")
    p.add_argument("--server-name")
    p.add_argument("--resume", choices=["none"], default="none")
    for name in ("--cert", "--key", "--ca", "--client-cert", "--client-key", "--psk"):
        p.add_argument(name)
    a = p.parse_args(argv)
    if a.role == "client" and a.fault == "restart" and not a.control:
        p.error("--fault restart needs --control: the directory where restart.req asks for the restart")
    return {"server": run_server, "client": run_client, "multichannel": run_multichannel}[a.role](a)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
