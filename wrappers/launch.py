"""The environment that puts a child process on the emulated network (used by `wirecheck exec`).

Python children get ``wrappers/preload`` on PYTHONPATH, whose sitecustomize activates the wrapper;
native children get Debian's libsocket_wrapper.so in LD_PRELOAD, behind wirecheck's own preload
library for IPPROTO_QUIC (native/quic_preload.c) when setup has built it. Both read the same
SOCKET_WRAPPER_* variables, so they share one socket directory and one pcap.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

import wrappers

from .config import from_environ, with_settings
from .sockdir import check_socket_dir

PRELOAD_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "preload")
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(wrappers.__file__)))

_LIB_GLOBS = (
    "/usr/lib/*-linux-gnu/libsocket_wrapper.so*",
    "/usr/lib64/libsocket_wrapper.so*",
    "/usr/lib/libsocket_wrapper.so*",
    "/usr/local/lib/libsocket_wrapper.so*",
)


def find_libsocket_wrapper() -> str | None:
    """Path of cwrap's library: $WIRECHECK_LIBSOCKET_WRAPPER, else the distribution's."""
    explicit = os.environ.get("WIRECHECK_LIBSOCKET_WRAPPER")
    if explicit:
        return explicit if os.path.exists(explicit) else None
    for pattern in _LIB_GLOBS:
        hits = sorted(p for p in glob.glob(pattern) if "noop" not in p)
        if hits:
            return hits[0]
    if shutil.which("ldconfig"):
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if "libsocket_wrapper.so" in line and "noop" not in line and "=>" in line:
                return line.split("=>", 1)[1].strip()
    return None


NATIVE_DIR = os.path.join(PACKAGE_PARENT, "native")


def find_quic_preload(sanitizers: bool | None = None) -> list[str]:
    """The preload entries that give native programs IPPROTO_QUIC (native/quic_preload.c), to go in
    front of libsocket_wrapper.so: ``$WIRECHECK_QUIC_PRELOAD`` if set, else the library setup built.
    With sanitizers (``WIRECHECK_QUIC_SANITIZE=1``) the ASan+UBSan build, after the sanitizer runtime,
    which must come first in the preload order. Empty when the library is not built."""
    explicit = os.environ.get("WIRECHECK_QUIC_PRELOAD")
    if explicit is not None:
        return explicit.split()
    if sanitizers is None:
        sanitizers = os.environ.get("WIRECHECK_QUIC_SANITIZE", "") not in ("", "0")
    build = os.path.join(NATIVE_DIR, "build")
    if sanitizers:
        lib = os.path.join(build, "libwirecheck_quic_asan.so")
        runtime = _gcc_file("libasan.so")
        return [runtime, lib] if runtime and os.path.exists(lib) else []
    lib = os.path.join(build, "libwirecheck_quic.so")
    return [lib] if os.path.exists(lib) else []


def _gcc_file(name: str) -> str | None:
    if not shutil.which("gcc"):
        return None
    out = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True, check=False).stdout.strip()
    return os.path.realpath(out) if out and os.path.isabs(out) and os.path.exists(out) else None


def child_environ(
    socket_dir: str,
    *,
    iface: int | str | None = None,
    pcap: str | None = None,
    ipv4_network: str | None = None,
    native: bool = True,
    base: dict[str, str] | None = None,
) -> dict[str, str]:
    """A copy of the environment (or of base) that runs a child on the emulated network."""
    env = with_settings(dict(os.environ if base is None else base), socket_dir=check_socket_dir(socket_dir),
                        iface=iface, pcap=pcap, ipv4_network=ipv4_network)
    # Refuse here what a child would die of (cwrap aborts on these at its first socket()).
    from_environ(env)
    paths = [PRELOAD_DIR, PACKAGE_PARENT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    if native:
        lib = find_libsocket_wrapper()
        if lib is not None:
            ours = find_quic_preload()
            preload = [p for p in env.get("LD_PRELOAD", "").split()
                       if "socket_wrapper" not in p and "wirecheck_quic" not in p and p not in ours]
            # the QUIC library first (it sees IPPROTO_QUIC before cwrap refuses it), then cwrap
            env["LD_PRELOAD"] = " ".join(ours + [lib] + preload)
            # the QUIC daemon that native programs' QUIC sockets live in runs on this Python
            env.setdefault("WIRECHECK_PYTHON", sys.executable)
    return env
