"""lxin/quic's func_test for a scenario cell (the vendored sources, unmodified, built by their build.sh).

``lxin_func.py build DEFAULT``: libquic.so, func_test and its keys, reached as ./lxin of the cell's
work directory; the sources are where the setting WIRECHECK_LXIN_QUIC says, else at DEFAULT from the
repository root (the scenario's ``requires: paths`` has already checked the folder is there). The
build is cached: build.sh's output for the same sources, build script, compiler and GnuTLS flags is
the same program, so it is built once (under a lock, so that two cells that start together build it
once) into a per-user directory named after a hash of all of them, and ./lxin links to it. Building
took 4-8 s of both cores per cell, which slowed every other cell running beside it.
WIRECHECK_LXIN_CACHE=0 builds into the work directory each time, as before.
``lxin_func.py listening HOST PORT``: wait (at most 30 s) until a QUIC listener on that emulated host
and port exists in the socket directory: func_test's server prints nothing when it listens, and its
client gives up at once if its first packets go nowhere.
Each prints one JSON line.
"""

import fcntl
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

from harness.scenario.requires import setting_path
from wrappers.addressing import socket_name


def _run_build(src: str, out: str) -> None:
    subprocess.run(["bash", os.path.join(src, "build.sh"), out], check=True, timeout=600,
                   stdout=subprocess.DEVNULL)


def _tool_output(argv: list[str]) -> bytes:
    try:
        return subprocess.run(argv, capture_output=True, timeout=60, check=False).stdout
    except OSError:
        return b""


def build_key(src: str) -> str:
    """A hash of what decides build.sh's output: every file of the source tree, the compiler and
    GnuTLS's flags (a new gcc or libgnutls28-dev is a new build)."""
    h = hashlib.sha256()
    for root, dirs, files in os.walk(src):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            h.update(os.path.relpath(path, src).encode() + b"\0")
            with open(path, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
    for argv in (["gcc", "--version"], ["pkg-config", "--cflags", "--libs", "--modversion", "gnutls"]):
        h.update(_tool_output(argv))
    return h.hexdigest()[:24]


def cached_build(src: str) -> str:
    """The cache directory holding build.sh's output for ``src``, built now unless it is there.
    Built in place (func_test's rpath names its directory), marked complete only at the end."""
    base = os.path.join(tempfile.gettempdir(), f"wirecheck-lxin-{os.getuid()}")
    os.makedirs(base, mode=0o700, exist_ok=True)
    out = os.path.join(base, build_key(src))
    done = os.path.join(out, ".complete")
    with open(out + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # released when the file closes, or when this process dies
        if not os.path.exists(done):
            _run_build(src, out)
            with open(done, "w"):
                pass
    return out


def build(default: str) -> None:
    src = setting_path("WIRECHECK_LXIN_QUIC", default)
    out = os.path.abspath("lxin")
    if os.environ.get("WIRECHECK_LXIN_CACHE", "1") == "0":
        _run_build(src, out)
    else:
        os.symlink(cached_build(src), out)
    print(json.dumps({"built": os.path.join(out, "func_test")}))


def listening(host: int, port: int) -> None:
    path = os.path.join(os.environ["SOCKET_WRAPPER_DIR"], socket_name(socket.AF_INET, socket.SOCK_DGRAM, host, port))
    deadline = time.monotonic() + 30
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            sys.exit(f"no listener {os.path.basename(path)} after 30 s")
        time.sleep(0.05)
    print(json.dumps({"listening": os.path.basename(path)}))


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build(sys.argv[2])
    else:
        listening(int(sys.argv[2]), int(sys.argv[3]))
