"""Run our SMB server and client on the emulated network (`wirecheck exec --pcap`), one pcap for all.

Why through `wirecheck exec` and the CLI: the reference captures must show what the shipped
tools put on the wire, recorded by the socket wrapper exactly as a scenario run records it.
Addresses: server 10.53.57.2 (interface 2), client 10.53.57.1 (interface 1).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WIRECHECK = [sys.executable, "-c", "from harness.cli import main; main()"]
NETWORK = "10.53.57.0"
SERVER = "10.53.57.2"
USER = "alice:wirecheck-pw"


def _exec(socket_dir: str, iface: int, pcap: Path) -> list[str]:
    return [*WIRECHECK, "exec", "--dir", socket_dir, "--iface", str(iface), "--pcap", str(pcap),
            "--network", NETWORK, "--"]


class Session:
    """A socket directory, a share and a running `wirecheck serve`; clients run one by one."""

    def __init__(self, pcap: Path, serve_args: Sequence[str], env: dict | None = None):
        self.pcap = Path(pcap)
        if self.pcap.exists():
            self.pcap.unlink()
        self.tmp = Path(tempfile.mkdtemp(prefix="wc-capture-"))
        self.socket_dir = tempfile.mkdtemp(prefix="wc-sd-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        self.share = self.tmp / "share"
        self.share.mkdir()
        (self.share / "hello.txt").write_text("hello from the wirecheck reference share\n")
        self.env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
        cmd = [*_exec(self.socket_dir, 2, self.pcap), *WIRECHECK, "serve", "--share", f"share={self.share}",
               "--user", USER, *serve_args]
        self.log = open(self.tmp / "server.log", "w+")
        self.server = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while "serving" not in (self.tmp / "server.log").read_text():
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("server did not start:\n" + (self.tmp / "server.log").read_text())
            time.sleep(0.1)

    def client(self, args: Sequence[str], env: dict | None = None) -> str:
        cmd = [*_exec(self.socket_dir, 1, self.pcap), *WIRECHECK, "smb", *args]
        r = subprocess.run(cmd, cwd=ROOT, env={**self.env, **(env or {})}, capture_output=True, text=True,
                           timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"client {' '.join(args)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
        return r.stdout

    def close(self) -> None:
        if self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.server.kill()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def keep_first_keys(path: Path) -> None:
    """`--keys-out` appends: keep each session's line once (server and client both write it)."""
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    path.write_text("".join(f"{ln}\n" for ln in dict.fromkeys(lines)))
