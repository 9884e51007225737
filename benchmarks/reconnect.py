"""Reconnect and multichannel costs, over real loopback, every number against a baseline of the same run.

* cut -> first I/O: a resilient client (durable v2) writes; its connection is reset after N bytes;
  the time from the failure to the first successful reply on the new connection (reconnect =
  connect + NEGOTIATE + SESSION_SETUP + TREE_CONNECT + DH2C + replay).  Printed with its ratio to one
  plain request round trip measured on the same server (baseline).
* channel loss -> first I/O on the surviving channel (no reconnect: replay only).
* throughput: the same file written with one channel and with two channels (tcp+tcp), MB/s and the
  ratio two / one.

    python -m benchmarks.reconnect [--size 8MiB] [--rounds 5]

No wall-clock value is asserted anywhere (tests/test_bench_smoke runs this with tiny sizes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from harness.blocking.faults import faulty_factory
from harness.blocking.multichannel import MultiChannelClient
from harness.blocking.reconnect import ResilientClient
from harness.blocking.server import SMBServer
from harness.smb import messages as m
from harness.smb.constants import Command
from harness.smb.server import ServerConfig, ShareConfig
from harness.transport.fault import FaultPlan, FaultyTransport

USER, PASSWORD = "bench", "Pw-bench1"


def _size(text: str) -> int:
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[:-len(unit)]) * factor)
    return int(text)


def _server(root: str) -> SMBServer:
    share = os.path.join(root, "share")
    os.makedirs(share, exist_ok=True)
    config = ServerConfig(shares={"s": ShareConfig("s", share)}, users={USER: PASSWORD}, multichannel=True,
                          state_dir=os.path.join(root, "state"), max_size=65536)
    return SMBServer(config, "127.0.0.1", 0).start()


def _echo_rtt(server: SMBServer, rounds: int = 50) -> float:
    client = ResilientClient("127.0.0.1", server.port, username=USER, password=PASSWORD, timeout=10)
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        client.request(Command.ECHO, m.EchoRequest())
        samples.append(time.perf_counter() - start)
    client.close()
    return statistics.median(samples)


def _reconnect_time(server: SMBServer, size: int) -> float:
    plan = FaultPlan("reset", size // 2, "send")
    client = ResilientClient("127.0.0.1", server.port, username=USER, password=PASSWORD, timeout=10,
                             transport_factory=faulty_factory("tcp", "127.0.0.1", server.port, plan, 10))
    with client.share("s") as share:
        share.put_bytes("r.bin", os.urandom(size))
    events = dict(client.events)
    client.close()
    return events["first-io"] - events["failure"]


def _channel_loss_time(server: SMBServer, size: int) -> float:
    plan = FaultPlan("reset", size // 4, "send")
    client = MultiChannelClient("127.0.0.1", server.port, username=USER, password=PASSWORD, timeout=10)
    client.add_channel("tcp", "127.0.0.1", server.port, wrap=lambda t: FaultyTransport(t, plan))
    with client.share("s") as share:
        share.put_bytes("c.bin", os.urandom(size))
    events = dict(client.events)
    client.close()
    return events["first-io"] - events["lost"]


def _throughput(server: SMBServer, size: int, channels: int) -> float:
    client = MultiChannelClient("127.0.0.1", server.port, username=USER, password=PASSWORD, timeout=10, window=16)
    for _ in range(channels - 1):
        client.add_channel("tcp", "127.0.0.1", server.port)
    data = os.urandom(size)
    with client.share("s") as share:
        start = time.perf_counter()
        share.put_bytes(f"t{channels}.bin", data)
        elapsed = time.perf_counter() - start
    client.close()
    return size / elapsed / 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.reconnect")
    p.add_argument("--size", default="8MiB")
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args(argv)
    size = _size(a.size)
    with tempfile.TemporaryDirectory() as root:
        server = _server(root)
        try:
            rtt = _echo_rtt(server)
            cut = statistics.median(_reconnect_time(server, size) for _ in range(a.rounds))
            loss = statistics.median(_channel_loss_time(server, size) for _ in range(a.rounds))
            one = statistics.median(_throughput(server, size, 1) for _ in range(a.rounds))
            two = statistics.median(_throughput(server, size, 2) for _ in range(a.rounds))
        finally:
            server.stop()
    print(f"baseline ECHO round trip            {rtt * 1e3:8.3f} ms")
    print(f"cut -> first I/O, new connection    {cut * 1e3:8.3f} ms  ({cut / rtt:6.1f} x ECHO RTT)")
    print(f"channel loss -> first I/O, survivor {loss * 1e3:8.3f} ms  ({loss / rtt:6.1f} x ECHO RTT, "
          f"{loss / cut:4.2f} x reconnect)")
    print(f"write, 1 channel                    {one:8.1f} MB/s")
    print(f"write, 2 channels (tcp+tcp)         {two:8.1f} MB/s  (ratio 2/1 = {two / one:4.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
