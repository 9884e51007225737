"""Builds and runs the native QUIC test programs (tests/native/c) under `wirecheck exec`.

The vendored lxin/quic (its UAPI header, libquic, func_test) is found through one setting,
``WIRECHECK_LXIN_QUIC``, whose default is ``../shared/vendor/lxin-quic`` next to the repository.
Missing gcc, GnuTLS headers or the vendor folder skip on a laptop and fail under CI.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from procutil import WIRECHECK, _missing, clean_env

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
VENDOR = Path(os.environ.get("WIRECHECK_LXIN_QUIC") or REPO.parent / "shared" / "vendor" / "lxin-quic").resolve()
PYPEER = str(HERE / "pyquic_peer.py")
PSK_LINE = "wirecheck:" + bytes(range(32)).hex()


def need_toolchain() -> None:
    if shutil.which("gcc") is None:
        _missing("gcc", "gcc")
    if shutil.which("pkg-config") is None:
        _missing("pkg-config", "pkg-config")
    if subprocess.run(["pkg-config", "--exists", "gnutls"], check=False).returncode != 0:
        _missing("the GnuTLS headers", "libgnutls28-dev")
    if not (VENDOR / "modules" / "include" / "uapi" / "linux" / "quic.h").exists():
        msg = f"the vendored lxin/quic is not at {VENDOR} (set WIRECHECK_LXIN_QUIC)"
        if os.environ.get("CI"):
            pytest.fail(msg + "; required under CI")
        pytest.skip(msg)


def build_library() -> None:
    """native/ as setup builds it (make rebuilds only what changed)."""
    r = subprocess.run(["make", "-s", "-C", str(REPO / "native")], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


_LXIN_BUILT: dict[Path, Path] = {}


def build_lxin(out: Path) -> Path:
    """lxin/quic's libquic.so, func_test and its keys, built by the vendored build.sh into ``out`` (once per
    process: the quicfunc cases and the native tests each ask for it)."""
    if VENDOR not in _LXIN_BUILT:
        need_toolchain()
        build_library()
        r = subprocess.run(["bash", str(VENDOR / "build.sh"), str(out)], capture_output=True, text=True,
                           timeout=600, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert (out / "func_test").exists() and (out / "libquic.so").exists()
        _LXIN_BUILT[VENDOR] = out
    return _LXIN_BUILT[VENDOR]


def start_c_func_server(peers: Peers, lxin: Path, sockdir: Path, mode: str, env: dict[str, str],
                        iface: int = 12, port: int = 1234) -> Peer:
    """func_test's server (``mode`` psk or cert, with the keys build.sh made) under `wirecheck exec` on
    interface ``iface``; returns once its listener is up. func_test prints nothing when it listens: the
    sign is the listener's name in the socket directory (U, the interface and the port in hex: the
    seqpacket carrier's name for a bound UDP address)."""
    keys = lxin / "keys"
    files = [keys / "server-psk.txt"] if mode == "psk" else [keys / "server-key.pem", keys / "server-cert.pem"]
    # stdbuf: func_test's printf lines (HANDSHAKE DONE, TEST DONE, its errors) as they happen, not at exit
    srv = peers.start("func_server", exec_argv(sockdir, iface, "stdbuf", "-oL", str(lxin / "func_test"), "server",
                                               f"127.0.0.{iface}", str(port), *map(str, files)), env)
    listener = sockdir / f"U{iface:02X}{port:04X}"
    deadline = time.monotonic() + 30
    while not listener.exists() and time.monotonic() < deadline and srv.p.poll() is None:
        time.sleep(0.05)
    assert listener.exists(), srv.describe()
    return srv


def compile_c(src: Path, out: Path, *extra: str) -> Path:
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "gnutls"], capture_output=True, text=True,
                           check=True).stdout.split()
    cmd = ["gcc", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-O1", "-g", f"-I{VENDOR}/modules/include/uapi",
           f"-I{REPO}/native", "-o", str(out), str(src), *flags, "-ldl", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr}"
    return out


def exec_argv(sockdir: Path, iface: int, *cmd: str, pcap: Path | None = None) -> list[str]:
    argv = [WIRECHECK, "exec", "--dir", str(sockdir), "--iface", str(iface)]
    if pcap is not None:
        argv += ["--pcap", str(pcap)]
    return [*argv, "--", *cmd]


def net_env(*, carrier: str = "seqpacket", sanitize: bool = False) -> dict[str, str]:
    env = clean_env()
    env["PYTHONPATH"] = str(REPO)
    env["WIRECHECK_QUIC_CARRIER"] = carrier
    env["WIRECHECK_QUICD_IDLE"] = "3"
    if sanitize:
        env["WIRECHECK_QUIC_SANITIZE"] = "1"
        env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=1"
        env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    return env


class Peer:
    """A process whose stdout lines are read by a thread; stdin stays open for commands."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], tmp: Path):
        self.name = name
        self.argv = argv
        self.err_path = tmp / f"{name}.stderr"
        self._err = open(self.err_path, "wb")  # noqa: SIM115 - closed in kill()
        self.p = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err,
                                  start_new_session=True, text=True)
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.append(line.rstrip("\n"))
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def describe(self) -> str:
        self._err.flush()
        return (f"[{self.name}] rc={self.p.poll()} {' '.join(self.argv)}\n stdout: " + "\n         ".join(self.lines)
                + "\n stderr: " + self.err_path.read_text(errors="replace")[-3000:])

    def expect(self, prefix: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"timed out waiting for {prefix!r}\n{self.describe()}")
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self._q.put(None)
                pytest.fail(f"{self.name} ended before {prefix!r}\n{self.describe()}")
            if line.startswith("FAIL"):
                pytest.fail(f"{self.name}: {line}\n{self.describe()}")
            if line.startswith(prefix):
                return line

    def say(self, line: str) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def finish(self, timeout: float = 60.0, rc: int | None = 0) -> int:
        try:
            code = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.name} did not exit within {timeout}s\n{self.describe()}")
        time.sleep(0.05)
        if rc is not None and code != rc:
            pytest.fail(f"{self.name} exited {code}, expected {rc}\n{self.describe()}")
        return code

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
        if not self._err.closed:
            self._err.close()


class Peers:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.all: list[Peer] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Peer:
        p = Peer(f"{name}{len(self.all)}", argv, env, self.tmp)
        self.all.append(p)
        return p

    def close(self) -> None:
        for p in self.all:
            p.kill()


def python() -> str:
    return sys.executable
