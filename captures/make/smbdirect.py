"""captures/smbdirect-own.pcap: SMB Direct over wrappers/smbdirect (IPPROTO_SMBDIRECT sockets over
emulated RDMA, recorded as RoCEv2), client and server in one process.

Why socket level: the SMB client and server cannot use SMB Direct yet (no `--transport
smbdirect`), but the transport itself is ours: the SMBD negotiate, credits, SEND_ONLY records and
the RDMA READ/WRITE with their RETHs are what wrappers/smbdirect puts on the wire. The SMB2 bytes
come from the test generators: a NEGOTIATE, a WRITE with Channel RDMA_V1 that the server pulls by
RDMA READ, a READ with Channel RDMA_V1_INVALIDATE that it pushes by RDMA WRITE and answers with
SEND_WITH_INVALIDATE. No keys (SMB Direct carries no TLS; SMB signing/encryption not used here).

    .venv/bin/python -m captures.make.smbdirect [OUTDIR]
"""
from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import threading
from pathlib import Path

CLIENT, SERVER = "10.53.57.1", "10.53.57.2"
SIZE = 4096


def run(pcap: Path) -> None:
    import wrappers
    from tests.pcap import captures as gen
    from tests.pcap import captures_extra as x
    from wrappers import smbdirect as sd

    d = tempfile.mkdtemp(prefix="wc-sd-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    saved = dict(os.environ)
    try:
        with wrappers.activate(d, iface=2, pcap=str(pcap), ipv4_network="10.53.57.0"):
            srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM, sd.IPPROTO_SMBDIRECT)
            srv.bind((SERVER, 445))
            srv.listen()
            box: dict = {}

            def serve() -> None:
                try:
                    c, _ = srv.accept()
                    c.settimeout(20)
                    c.recv()
                    c.send(gen.negotiate_response(0))
                    req = c.recv()  # WRITE, RDMA_V1: descriptor at 0x70
                    desc = sd.decode_descriptors(req[0x70:0x80])
                    box["pulled"] = c.rdma_read(desc[0].length, desc)
                    c.send(gen.write_response(3, desc[0].length))
                    req = c.recv()  # READ, RDMA_V1_INVALIDATE
                    desc = sd.decode_descriptors(req[0x70:0x80])
                    c.rdma_write(b"R" * desc[0].length, desc)
                    c.sendmsg([x.read_response(4, desc[0].length)],
                              [(sd.SOL_SMBDIRECT, sd.SMBDIRECT_CMSG_REMOTE_INVALIDATE,
                                desc[0].token.to_bytes(4, "little"))])
                    c.recv()
                    c.close()
                except BaseException as e:  # reported below
                    box["e"] = e

            t = threading.Thread(target=serve, daemon=True)
            t.start()
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM, sd.IPPROTO_SMBDIRECT)
            c.settimeout(20)
            c.bind((CLIENT, 0))  # in-process: the client is interface 1, not the server's 2
            c.connect((SERVER, 445))
            c.send(gen.negotiate_request(0))
            c.recv()
            src = bytearray(bytes(range(256)) * (SIZE // 256))
            desc = c.register(src, sd.RDMA_REMOTE_READ)
            c.send(x.rdma_write_request(3, len(src), sd.encode_descriptors(desc)))
            c.recv()
            c.deregister(desc)
            dest = bytearray(SIZE)
            desc = c.register(dest, sd.RDMA_REMOTE_WRITE)
            c.send(x.rdma_read_request(4, len(dest), sd.encode_descriptors(desc)))
            c.recv_message()
            c.close()
            t.join(20)
            srv.close()
            if "e" in box:
                raise box["e"]
            if box.get("pulled") != bytes(src) or bytes(dest) != b"R" * SIZE:
                raise RuntimeError("RDMA transfer did not move the data")
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(d, ignore_errors=True)


def main(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    pcap = out / "smbdirect-own.pcap"
    pcap.unlink(missing_ok=True)
    run(pcap)
    return [pcap]


if __name__ == "__main__":
    for p in main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])):
        print(f"{p}  {p.stat().st_size} bytes")
