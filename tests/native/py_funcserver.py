"""func_test's server side in Python (tests/quic/funcserver.py, the port the quicfunc tests use), as a
program under `wirecheck exec`, for lxin/quic's C func_test client:

    py_funcserver.py HOST PORT PSKFILE          (PSK mode)
    py_funcserver.py HOST PORT KEYFILE CERTFILE (certificate mode)
"""

from __future__ import annotations

import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from quic.funcserver import FuncServer  # noqa: E402 - tests/quic, after the path above

from wrappers.quic import (  # noqa: E402
    IPPROTO_QUIC,
    QUIC_SOCKOPT_TRANSPORT_PARAM,
    SOL_QUIC,
    TransportParam,
    server_handshake,
)


def main() -> int:
    host, port, *files = sys.argv[1:]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, IPPROTO_QUIC)
    s.bind((host, int(port)))
    s.listen(1)
    print("ready", flush=True)
    c, _ = s.accept()
    # as func_test's do_server: datagrams on (the client's test26 sends one)
    c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_TRANSPORT_PARAM, TransportParam(max_datagram_frame_size=1400).pack())
    if len(files) == 1:
        server_handshake(c, files[0], None, timeout=30)
    else:
        server_handshake(c, files[0], files[1], timeout=30)
    print("HANDSHAKE DONE", flush=True)
    srv = FuncServer(c)
    srv.run()  # until the client's close
    print("TEST DONE" if not srv.errors else f"errors: {srv.errors}", flush=True)
    return 0 if not srv.errors else 1


if __name__ == "__main__":
    sys.exit(main())
