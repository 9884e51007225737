"""Samba's smbd as a private test peer (interop tests and the SMB benchmark).

smbd runs on real loopback (under Debian's libsocket_wrapper 1.3.5 it panics at start: Samba sets
SO_REUSEPORT, which 1.3.5 passes to the unix socket and gets EOPNOTSUPP), on a port above
20000, with a private smb.conf and every state directory inside the test's tmp dir; its user comes
from libnss_wrapper files plus ``smbpasswd``, so /etc/passwd is never touched.  Under ``CI`` a missing
program is a failure, not a skip (procutil._missing).
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO


def _missing(program: str, apt: str) -> None:
    raise RuntimeError(f"{program} is not installed (apt-get install -y {apt})")

USER = "smbuser"
PASSWORD = "Wirecheck-Pw1"
NSS_WRAPPER = "/usr/lib/x86_64-linux-gnu/libnss_wrapper.so"


def need(program: str, apt: str, missing: Callable[[str, str], None] = _missing) -> str:
    path = shutil.which(program) or (f"/usr/sbin/{program}" if os.path.exists(f"/usr/sbin/{program}") else None)
    if path is None:
        missing(program, apt)
    return path  # type: ignore[return-value]


def free_port() -> int:
    """A TCP port above 20000 that is free on 127.0.0.1 right now."""
    for _ in range(200):
        port = random.randint(20001, 60000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def wait_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


class Smbd:
    """smbd with two shares: ``share`` (signing mandatory) and ``enc`` (encryption required)."""

    def __init__(self, tree: Path, signing: str = "mandatory",
                 missing: Callable[[str, str], None] = _missing, extra_global: str = "",
                 min_protocol: str | None = "SMB3_11") -> None:
        """``min_protocol`` None: smbd's own default (SMB2_02), as a server configured with defaults."""
        self.smbd = need("smbd", "samba", missing)
        self.smbpasswd = need("smbpasswd", "samba-common-bin", missing)
        if not os.path.exists(NSS_WRAPPER):
            missing("libnss_wrapper.so", "libnss-wrapper")
        self.tree = tree
        self.port = free_port()
        self.share_dir = tree / "share"
        self.enc_dir = tree / "enc"
        for sub in ("lock", "state", "cache", "private", "pid", "ncalrpc", "binddns", "log", "share", "enc"):
            (tree / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.share_dir, 0o777)
        os.chmod(self.enc_dir, 0o777)
        uid, gid = os.getuid(), os.getgid()
        (tree / "passwd").write_text(f"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
                                     f"{USER}:x:{uid}:{gid}:smb user:{tree}:/bin/false\n")
        (tree / "group").write_text(f"root:x:0:\nnogroup:x:65534:\nsmbgroup:x:{gid}:{USER}\n")
        self.conf = tree / "smb.conf"
        self.conf.write_text(f"""[global]
server role = standalone server
smb ports = {self.port}
interfaces = 127.0.0.1
bind interfaces only = yes
disable netbios = yes
{f"server min protocol = {min_protocol}" if min_protocol else ""}
server signing = {signing}
lock directory = {tree}/lock
state directory = {tree}/state
cache directory = {tree}/cache
private dir = {tree}/private
pid directory = {tree}/pid
ncalrpc dir = {tree}/ncalrpc
binddns dir = {tree}/binddns
log file = {tree}/log/log.%m
passdb backend = tdbsam:{tree}/private/passdb.tdb
load printers = no
printcap name = /dev/null
disable spoolss = yes
map to guest = never
{extra_global}
[share]
path = {self.share_dir}
read only = no
valid users = {USER}
[enc]
path = {self.enc_dir}
read only = no
valid users = {USER}
server smb encrypt = required
""")
        self.env = {**os.environ, "LD_PRELOAD": NSS_WRAPPER, "NSS_WRAPPER_PASSWD": str(tree / "passwd"),
                    "NSS_WRAPPER_GROUP": str(tree / "group")}
        for key in [k for k in self.env if k.startswith("SOCKET_WRAPPER")]:
            del self.env[key]
        subprocess.run([self.smbpasswd, "-s", "-a", "-c", str(self.conf), USER], input=f"{PASSWORD}\n{PASSWORD}\n",
                       text=True, env=self.env, check=True, capture_output=True, timeout=30)
        self.proc, self.log = launch_logged([self.smbd, "--foreground", "--no-process-group", "-s", str(self.conf)],
                                            tree / "smbd.out", self.port, env=self.env)

    def stop(self) -> None:
        stop_group(self.proc)
        self.log.close()


def launch_logged(argv: list[str], log_path: Path, port: int,
                  env: dict[str, str] | None = None) -> tuple[subprocess.Popen, IO[bytes]]:
    """Start a server in its own session with its output in `log_path`, and wait until it listens on
    `port`; a server that does not come up is stopped (group and log) before the error goes on."""
    log = open(log_path, "wb")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_port(port, 30, proc)
    except Exception:
        stop_group(proc)
        log.close()
        raise
    return proc, log


def stop_group(proc: subprocess.Popen) -> None:
    """End a server started with ``start_new_session``: its whole process group (smbd forks one
    process per connection), SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(5)
