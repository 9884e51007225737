"""SMB Direct throughput: 1 MiB I/O as SMB2 READ/WRITE would move it, against emulated TCP, same run.

Three ways to move N x 1 MiB from a server thread to a client (the READ direction) and back (WRITE),
each as request -> data -> small response, on the emulated network (no pcap unless --pcap):

* tcp:          wrapped AF_INET SOCK_STREAM, the data inline in the reply (Direct-TCP style);
* smbd-inline:  IPPROTO_SMBDIRECT, the data inline as one fragmented SMBD message;
* smbd-rdma:    IPPROTO_SMBDIRECT, a small request carrying a Buffer Descriptor, the data moved by
                RDMA WRITE (READ direction) / RDMA READ (WRITE direction), a small response,
                register/deregister per I/O (SMB2_CHANNEL_RDMA_V1).

    python -m benchmarks.smbdirect [--count 64] [--pcap FILE] [--rdma memfd|auto]

Prints MB/s per mechanism and the ratio smbd-rdma / tcp.
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import tempfile
import threading
import time

import wrappers

MIB = 1 << 20


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = s.recv_into(view[got:])
        if not k:
            raise EOFError
        got += k
    return bytes(buf)


def bench_tcp(count: int, port: int) -> float:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.11", port))
    srv.listen()
    payload = os.urandom(MIB)

    def server():
        c, _ = srv.accept()
        for _ in range(count):
            op = _recv_exact(c, 1)
            if op == b"R":
                c.sendall(struct.pack(">I", MIB) + payload)
            else:
                _recv_exact(c, MIB)
                c.sendall(b"\0\0\0\0")
        c.close()

    t = threading.Thread(target=server)
    t.start()
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.connect(("127.0.0.11", port))
    t0 = time.perf_counter()
    for i in range(count):
        if i % 2 == 0:
            c.sendall(b"R")
            n = struct.unpack(">I", _recv_exact(c, 4))[0]
            _recv_exact(c, n)
        else:
            c.sendall(b"W" + payload)
            _recv_exact(c, 4)
    dt = time.perf_counter() - t0
    c.close()
    t.join()
    srv.close()
    return count * MIB / dt / 1e6


def bench_smbd(count: int, port: int, rdma: bool) -> float:
    from wrappers import smbdirect as sd

    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM, sd.IPPROTO_SMBDIRECT)
    srv.bind(("127.0.0.11", port))
    srv.listen()
    payload = os.urandom(MIB)
    sink = bytearray(MIB)

    def server():
        c, _ = srv.accept()
        for _ in range(count):
            req = c.recv()
            if req[:1] == b"R":
                if rdma:
                    c.rdma_write(payload, sd.decode_descriptors(req[1:]))
                    c.send(b"done")
                else:
                    c.send(payload)
            else:
                if rdma:
                    c.rdma_read(sink, sd.decode_descriptors(req[1:]))
                c.send(b"done")
        c.close()

    t = threading.Thread(target=server)
    t.start()
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM, sd.IPPROTO_SMBDIRECT)
    c.settimeout(30)
    c.connect(("127.0.0.11", port))
    dest = bytearray(MIB)
    t0 = time.perf_counter()
    for i in range(count):
        if i % 2 == 0:
            if rdma:
                d = c.register(dest, sd.RDMA_REMOTE_WRITE)
                c.send(b"R" + sd.encode_descriptors(d))
                c.recv()
                c.deregister(d)
            else:
                c.send(b"R")
                c.recv()
        else:
            if rdma:
                d = c.register(payload, sd.RDMA_REMOTE_READ)
                c.send(b"W" + sd.encode_descriptors(d))
                c.recv()
                c.deregister(d)
            else:
                c.send(b"W" + payload[:-1])  # stays within MaxFragmentedSize (1 MiB)
                c.recv()
    dt = time.perf_counter() - t0
    c.close()
    t.join()
    srv.close()
    return count * MIB / dt / 1e6


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=64)
    ap.add_argument("--pcap")
    ap.add_argument("--rdma", default="auto", choices=["auto", "memfd"])
    a = ap.parse_args(argv)
    os.environ["WIRECHECK_SMBDIRECT_RDMA"] = a.rdma
    d = tempfile.mkdtemp(prefix="wcsdb-", dir="/tmp")
    with wrappers.activate(d, iface=11, pcap=a.pcap):
        res = {"tcp": bench_tcp(a.count, 4450), "smbd-inline": bench_smbd(a.count, 4451, False),
               "smbd-rdma": bench_smbd(a.count, 4452, True)}
    for k, v in res.items():
        print(f"{k:12s} {v:8.1f} MB/s")
    print(f"ratio smbd-rdma/tcp = {res['smbd-rdma'] / res['tcp']:.2f}x   smbd-inline/tcp = "
          f"{res['smbd-inline'] / res['tcp']:.2f}x")
    return res


if __name__ == "__main__":
    main()
