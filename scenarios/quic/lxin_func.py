"""lxin/quic's func_test for a scenario cell (the vendored sources, unmodified, built by their build.sh).

``lxin_func.py build DEFAULT``: libquic.so, func_test and its keys into ./lxin of the cell's work
directory; the sources are where the setting WIRECHECK_LXIN_QUIC says, else at DEFAULT from the
repository root (the scenario's ``requires: paths`` has already checked the folder is there).
``lxin_func.py listening HOST PORT``: wait (at most 30 s) until a QUIC listener on that emulated host
and port exists in the socket directory: func_test's server prints nothing when it listens, and its
client gives up at once if its first packets go nowhere.
Each prints one JSON line.
"""

import json
import os
import socket
import subprocess
import sys
import time

from harness.scenario.requires import setting_path
from wrappers.addressing import socket_name


def build(default: str) -> None:
    src = setting_path("WIRECHECK_LXIN_QUIC", default)
    out = os.path.abspath("lxin")
    subprocess.run(["bash", os.path.join(src, "build.sh"), out], check=True, timeout=600,
                   stdout=subprocess.DEVNULL)
    print(json.dumps({"built": os.path.join(out, "func_test")}))


def listening(host: int, port: int) -> None:
    path = os.path.join(os.environ["SOCKET_WRAPPER_DIR"], socket_name(socket.AF_INET, socket.SOCK_DGRAM, host, port))
    deadline = time.monotonic() + 30
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            sys.exit(f"no listener {os.path.basename(path)} after 30 s")
        time.sleep(0.05)
    print(json.dumps({"listening": os.path.basename(path)}))


if sys.argv[1] == "build":
    build(sys.argv[2])
else:
    listening(int(sys.argv[2]), int(sys.argv[3]))
