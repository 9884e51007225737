"""Two processes under `wirecheck exec` talk IPPROTO_QUIC with plain socket(AF_INET, SOCK_DGRAM, 261):
the wrapper's protocol hook, the SEQPACKET listener name (U + iface + port), one pcap from both."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from procutil import clean_env, wirecheck_exec
from tsharkutil import fields

PEER = ("-m", "harness.peers.quic_echo")


def test_two_processes_over_wirecheck_exec(tmp_path, pki):
    sockdir = tmp_path / "w"
    sockdir.mkdir(mode=0o700)
    pcap = tmp_path / "run.pcap"
    env = clean_env()
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[2])])
    server = subprocess.Popen(wirecheck_exec(sockdir, sys.executable, *PEER, "server", "127.0.0.12", "443", pki["psk"],
                                             iface=12, pcap=pcap), env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        assert (sockdir / "U0C01BB").is_socket()
        out = subprocess.run(wirecheck_exec(sockdir, sys.executable, *PEER, "client", "127.0.0.12", "443", pki["psk"],
                                            "hello over quic", iface=11, pcap=pcap),
                             env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "HELLO OVER QUIC"
        assert server.wait(30) == 0
    finally:
        if server.poll() is None:
            server.kill()
    keys = tmp_path / "run.keys"
    rows = fields(pcap, ["ip.src", "ip.dst", "udp.dstport", "quic.stream_data"], display_filter="quic.stream.stream_id",
                  options=["-o", f"tls.keylog_file:{keys}"])
    data = {bytes.fromhex(r[3].replace(":", "")) for r in rows}
    assert {b"hello over quic", b"HELLO OVER QUIC"} <= data
    assert {(r[0], r[1]) for r in rows} == {("127.0.0.11", "127.0.0.12"), ("127.0.0.12", "127.0.0.11")}
