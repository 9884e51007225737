"""Fixtures for the SMB Direct tests: an emulated network in this process (interface 11) and a
peer process (harness.peers.smbdirect_commands, interface 2) on the same socket directory."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from wrapfix import emulated_network

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


@pytest.fixture
def net(tmp_path):
    with emulated_network(iface=11, pcap=str(tmp_path / "run.pcap")) as cfg:
        yield cfg


class Peer:
    def __init__(self, env: dict[str, str]):
        self.p = subprocess.Popen([sys.executable, "-m", "harness.peers.smbdirect_commands"], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, cwd=str(ROOT), start_new_session=True)
        self._buf = b""

    def line(self, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("peer said nothing")
            r, _, _ = select.select([self.p.stdout], [], [], left)
            if r:
                chunk = os.read(self.p.stdout.fileno(), 65536)
                if not chunk:
                    raise EOFError("peer exited: " + self.p.stderr.read().decode(errors="replace")[-2000:])
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def expect(self, event: str, timeout: float = 20.0) -> dict:
        d = self.line(timeout)
        assert d.get("event") == event, d
        return d

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(10)


@pytest.fixture
def peer(net):
    peers: list[Peer] = []

    def start(**extra: str) -> Peer:
        env = dict(os.environ)
        env.update({"SOCKET_WRAPPER_DIR": net.socket_dir, "PYTHONPATH": str(ROOT)})
        env.update(extra)
        p = Peer(env)
        peers.append(p)
        p.expect("listening")
        return p

    yield start
    for p in peers:
        p.kill()
