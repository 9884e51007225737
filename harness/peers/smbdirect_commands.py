"""An SMB Direct peer driven by text commands: ``python -m harness.peers.smbdirect_commands``.

A second process for two-process SMB Direct runs (the tests of the RDMA emulation use it).

Runs under the wrapper (SOCKET_WRAPPER_DIR from the environment, interface 2), listens on
127.0.0.2:445, accepts one connection and obeys text commands sent as SMB Direct messages.
Every result is one JSON line on stdout (also after the connection died).

    REG size seed          register a region filled from ``seed``: {"descs": hex, "sha": ...}
    SHA token              deregister ``token`` and hash the region: {"sha": ...}
    PUSH seed hexdescs     RDMA WRITE data from ``seed`` into the caller's descriptors
    PULL hexdescs [off n]  RDMA READ the caller's descriptors (or n bytes at off)
    SENDINV token          send "bye" with SEND with Invalidate of ``token``
    ECHO                   answer with the same message
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import sys

import wrappers


def out(**kw) -> None:
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


def data_of(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def main() -> None:
    wrappers.activate(iface=2)
    from wrappers import smbdirect as sd

    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM, sd.IPPROTO_SMBDIRECT)
    srv.bind(("127.0.0.2", 445))
    srv.listen()
    out(event="listening")
    c, addr = srv.accept()
    out(event="accepted", peer=list(addr), mode=c.getsockopt(sd.SOL_SMBDIRECT, sd.SMBDIRECT_RDMA_MODE))
    regs: dict[int, bytearray] = {}
    while True:
        try:
            msg = c.recv()
        except OSError as e:
            out(event="error", errno=e.errno, text=str(e))
            return
        if not msg:
            out(event="eof")
            return
        words = msg.decode().split()
        try:
            if words[0] == "REG":
                n, seed = int(words[1]), int(words[2])
                buf = bytearray(data_of(seed, n))
                descs = c.register(buf, sd.RDMA_REMOTE_READ | sd.RDMA_REMOTE_WRITE)
                regs[descs[0].token] = buf
                out(event="reg", descs=sd.encode_descriptors(descs).hex(), sha=hashlib.sha256(buf).hexdigest())
            elif words[0] == "SHA":
                token = int(words[1])
                c.deregister(token)
                out(event="sha", sha=hashlib.sha256(regs.pop(token)).hexdigest())
            elif words[0] == "PUSH":
                descs = sd.decode_descriptors(bytes.fromhex(words[2]))
                data = data_of(int(words[1]), sum(d.length for d in descs))
                c.rdma_write(data, descs)
                out(event="pushed", sha=hashlib.sha256(data).hexdigest())
            elif words[0] == "PULL":
                descs = sd.decode_descriptors(bytes.fromhex(words[1]))
                off = int(words[2]) if len(words) > 2 else 0
                n = int(words[3]) if len(words) > 3 else sum(d.length for d in descs)
                data = c.rdma_read(n, descs, off)
                out(event="pulled", sha=hashlib.sha256(data).hexdigest())
            elif words[0] == "SENDINV":
                c.sendmsg([b"bye"], [(sd.SOL_SMBDIRECT, sd.SMBDIRECT_CMSG_REMOTE_INVALIDATE,
                                      int(words[1]).to_bytes(4, "little"))])
                out(event="sent")
            elif words[0] == "ECHO":
                c.send(msg)
            else:
                out(event="unknown")
        except OSError as e:
            out(event="error", errno=e.errno, text=str(e))
            if e.errno in (errno_of("EREMOTEIO"), errno_of("ECONNRESET"), errno_of("ECONNABORTED")):
                try:
                    c.recv()
                except OSError as e2:
                    out(event="after", errno=e2.errno)
                return


def errno_of(name: str) -> int:
    import errno

    return getattr(errno, name)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
