"""captures/quic-migration-keyupdate.pcap: wrappers/quic (our IPPROTO_QUIC sockets) doing a key update
and a client migration, on the emulated network over the emulated-UDP carrier.

The client (10.53.57.1) connects to 10.53.57.2:443 with ALPN `smb` (so tshark dissects the stream
as SMB2) and sends an SMB2 NEGOTIATE the server answers; then it starts a 1-RTT key update
(QUIC_SOCKOPT_KEY_UPDATE) and sends an ECHO; then it migrates to its port + 1
(QUIC_SOCKOPT_CONNECTION_MIGRATION: PATH_CHALLENGE with a fresh destination connection id) and sends
another ECHO. The SMB2 bytes come from tests/pcap/captures.py: no SMB server logic is needed to
show the transport features. Keys: the key log the QUIC socket writes (SSLKEYLOGFILE).

    .venv/bin/python -m captures.make.quic_migration [OUTDIR]
"""
from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from .smb_quic import server_cert

CLIENT, SERVER = "10.53.57.1", "10.53.57.2"


def _recv_exact(s, n: int) -> bytes:
    from wrappers.quic import quic_recvmsg

    buf = b""
    while len(buf) < n:
        data, _, _ = quic_recvmsg(s, n - len(buf))
        if not data:
            raise EOFError("stream ended")
        buf += data
    return buf


def _recv_msg(s) -> bytes:
    head = _recv_exact(s, 4)
    return head + _recv_exact(s, int.from_bytes(head[1:], "big"))


def run(pcap: Path, keylog: Path) -> None:
    import wrappers
    from tests.pcap import captures as gen
    from wrappers.quic import (
        IPPROTO_QUIC,
        MSG_STREAM_NEW,
        QUIC_SOCKOPT_CONNECTION_MIGRATION,
        QUIC_SOCKOPT_KEY_UPDATE,
        SOL_QUIC,
        client_handshake,
        quic_sendmsg,
        server_handshake,
        sockaddr_in,
    )

    d = Path(tempfile.mkdtemp(prefix="wc-qm-"))
    sd = tempfile.mkdtemp(prefix="wc-qm-sd-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    saved = dict(os.environ)
    os.environ.update(WIRECHECK_QUIC_CARRIER="udp", SSLKEYLOGFILE=str(keylog))
    cert, key = server_cert(d)
    try:
        with wrappers.activate(sd, iface=2, pcap=str(pcap), ipv4_network="10.53.57.0"):
            ls = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, IPPROTO_QUIC)
            ls.bind((SERVER, 443))
            ls.listen(1)
            box: dict = {}

            def serve() -> None:
                try:
                    s, _ = ls.accept()
                    server_handshake(s, str(key), str(cert), "smb", timeout=10)
                    for reply in (gen.negotiate_response(0), gen.echo(1, response=True, sesid=0),
                                  gen.echo(2, response=True, sesid=0)):
                        _recv_msg(s)
                        quic_sendmsg(s, gen.direct_tcp(reply), 0, 0)
                    box["s"] = s
                except BaseException as e:  # reported below
                    box["e"] = e

            t = threading.Thread(target=serve, daemon=True)
            t.start()
            # the client is interface 1: bind explicitly so that its address is 10.53.57.1
            c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, IPPROTO_QUIC)
            c.bind((CLIENT, 50001))
            c.connect((SERVER, 443))
            client_handshake(c, None, "server.test", "smb", cafile=str(cert), timeout=10)
            quic_sendmsg(c, gen.direct_tcp(gen.negotiate_request(0)), 0, MSG_STREAM_NEW)
            _recv_msg(c)
            c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_KEY_UPDATE, None, 0)
            quic_sendmsg(c, gen.direct_tcp(gen.echo(1, sesid=0)), 0, 0)
            _recv_msg(c)
            c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_CONNECTION_MIGRATION, sockaddr_in(CLIENT, 50002))
            time.sleep(0.5)
            quic_sendmsg(c, gen.direct_tcp(gen.echo(2, sesid=0)), 0, 0)
            _recv_msg(c)
            t.join(15)
            if "e" in box:
                raise box["e"]
            time.sleep(0.3)
            c.close()
            box["s"].close()
            ls.close()
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(sd, ignore_errors=True)


def main(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    pcap, keylog = out / "quic-migration-keyupdate.pcap", out / "quic-migration-keyupdate.keys"
    for p in (pcap, keylog):
        p.unlink(missing_ok=True)
    run(pcap, keylog)
    return [pcap, keylog]


if __name__ == "__main__":
    for p in main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])):
        print(f"{p}  {p.stat().st_size} bytes")
