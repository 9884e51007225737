"""`wirecheck demo`: the README's main job until the scenario runner lands.

An unmodified ``python3 -m http.server`` and a UDP echo server run on emulated host 127.0.0.10, a
client on 127.0.0.11 fetches a page over TCP and exchanges UDP datagrams over IPv6; every packet
goes to one pcap, which tshark then reads with checksum validation on.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import click

from wrappers.addressing import Network, socket_name
from wrappers.launch import child_environ
from wrappers.sockdir import make_socket_dir

TSHARK_CHECKS = ["-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE"]


def _wait_for(path: str, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before listening")
        if time.monotonic() > deadline:
            raise RuntimeError(f"server did not bind {os.path.basename(path)} within {timeout:.0f} s")
        time.sleep(0.05)


def run_demo(out: str) -> int:
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    pcap = os.path.join(out, "demo.pcap")
    if os.path.exists(pcap):
        os.unlink(pcap)
    socket_dir = make_socket_dir("wirecheck-demo-")
    py = sys.executable
    net = Network()
    servers: list[subprocess.Popen] = []
    try:
        server_env = child_environ(socket_dir, iface=10, pcap=pcap)
        client_env = child_environ(socket_dir, iface=11, pcap=pcap)
        v6_server = net.iface_address(socket.AF_INET6, 10)
        http = subprocess.Popen([py, "-m", "http.server", "8080", "--bind", "127.0.0.10"], env=server_env,
                                cwd=out, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        servers.append(http)
        udp = subprocess.Popen([py, "-m", "harness.peers.net_demo", "udp-echo", v6_server, "7", "5"], env=server_env)
        servers.append(udp)
        _wait_for(os.path.join(socket_dir, socket_name(socket.AF_INET, socket.SOCK_STREAM, 10, 8080)), http)
        _wait_for(os.path.join(socket_dir, socket_name(socket.AF_INET6, socket.SOCK_DGRAM, 10, 7)), udp)
        print(f"demo: servers up on emulated 127.0.0.10:8080 (http.server) and [{v6_server}]:7 (UDP echo)")
        print(f"demo: socket directory {socket_dir}: {', '.join(sorted(n for n in os.listdir(socket_dir) if not n.startswith('.')))}")
        rc = subprocess.run([py, "-m", "harness.peers.net_demo", "client", "127.0.0.10", "8080", v6_server, "7", "5"],
                            env=client_env, timeout=60).returncode
        if rc != 0:
            print(f"demo: FAILED: client exited with status {rc}")
            return 1
        udp.wait(timeout=20)
    finally:
        for p in servers:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(socket_dir, ignore_errors=True)
    return _report(pcap)


def _report(pcap: str) -> int:
    print(f"demo: pcap written to {pcap} ({os.path.getsize(pcap)} bytes)")
    tshark = shutil.which("tshark")
    if tshark is None:
        print("demo: tshark is not installed (apt-get install tshark); cannot show the dissection")
        return 1
    run = lambda *a: subprocess.run([tshark, "-r", pcap, *TSHARK_CHECKS, *a], capture_output=True,  # noqa: E731
                                    text=True, timeout=120)
    listing = run()
    if listing.returncode != 0:
        print(f"demo: tshark failed: {listing.stderr.strip()}")
        return 1
    lines = listing.stdout.splitlines()
    print(f"demo: tshark sees {len(lines)} frames:")
    for line in lines:
        print("   " + line)
    problems = run("-Y", "_ws.malformed || _ws.expert.severity >= warning || tcp.analysis.retransmission "
                   "|| tcp.analysis.out_of_order || ip.checksum.status == 0 || tcp.checksum.status == 0 "
                   "|| udp.checksum.status == 0").stdout.splitlines()
    if problems:
        print(f"demo: FAILED: tshark flags {len(problems)} frames (malformed, bad checksum or TCP analysis):")
        for line in problems:
            print("   " + line)
        return 1
    print("demo: OK: no malformed packet, no bad checksum, no retransmission "
          "(checksum validation on for IP, TCP and UDP)")
    return 0


@click.command("demo")
@click.option("--out", default="results/demo", show_default=True, help="Where the run leaves its pcap.")
def demo(out: str) -> None:
    """The built-in default job: two processes talk TCP and UDP on the emulated network."""
    sys.exit(run_demo(out))
