"""A QUIC echo peer for cross-process runs under `wirecheck exec`: plain socket(..., 261) calls, as a
C program on quic.ko would make them (external PSK, one stream).

    python -m harness.peers.quic_echo server HOST PORT PSKFILE     -> prints "ready", then "peer ADDR PORT"
                                                                      (accept()'s answer), echoes one stream upper-cased
    python -m harness.peers.quic_echo client HOST PORT PSKFILE MSG -> prints the reply

PEER_QUIC_TIMEOUT (seconds, default 20) bounds the handshake and every wait.
"""

from __future__ import annotations

import os
import socket
import sys

from wrappers.quic import (
    IPPROTO_QUIC,
    MSG_STREAM_FIN,
    MSG_STREAM_NEW,
    client_handshake,
    quic_recvmsg,
    quic_sendmsg,
    server_handshake,
)


def main() -> int:
    role, host, port, psk = sys.argv[1:5]
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM, IPPROTO_QUIC)
    timeout = float(os.environ.get("PEER_QUIC_TIMEOUT", "20"))
    s.settimeout(timeout)
    if role == "server":
        s.bind((host, int(port)))
        s.listen(1)
        print("ready", flush=True)
        c, peer = s.accept()
        print("peer", peer[0], peer[1], flush=True)
        server_handshake(c, psk, None, timeout=timeout)
        data, sid, _ = quic_recvmsg(c, 1000)
        quic_sendmsg(c, data.upper(), sid, MSG_STREAM_FIN)
        c.settimeout(5)
        try:
            c.recv(10)  # until the client closes
        except OSError:
            pass
        c.close()
    else:
        s.connect((host, int(port)))
        client_handshake(s, psk, timeout=timeout)
        quic_sendmsg(s, sys.argv[5].encode(), -1, MSG_STREAM_NEW | MSG_STREAM_FIN)
        print(quic_recvmsg(s, 1000)[0].decode(), flush=True)
    s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
