"""The Python peer of smbdtest's "rdma-server" mode (run under `wirecheck exec`): registers a buffer for
the C program to RDMA WRITE into and one for it to RDMA READ from, then RDMA-WRITEs into the buffer
the C program registered. Prints what the test compares with the C program's output.

    python pysmbd_peer.py HOST PORT SIZE
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import sys

from wrappers.smbdirect import constants as C
from wrappers.smbdirect.messages import BufferDescriptor, encode_descriptors


def main(host: str, port: int, size: int) -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, C.IPPROTO_SMBDIRECT)
    s.settimeout(60)
    s.connect((host, port))
    into = bytearray(size)
    source = bytearray(os.urandom(size))
    wd = s.register(into, C.RDMA_REMOTE_WRITE)
    rd = s.register(source, C.RDMA_REMOTE_READ)
    s.sendmsg([b"DESC" + encode_descriptors(wd + rd) + struct.pack("<I", size)])
    msg, token = s.recv_message()
    if msg[:4] != b"MINE" or len(msg) != 20:
        print(f"FAIL bad MINE message {msg[:8]!r} ({len(msg)} bytes)")
        return 1
    print(f"invalidated {token == wd[0].token}")
    try:
        s.deregister(wd)
        print("deregister 0")
    except OSError as e:
        print(f"deregister {e.errno}")
    print(f"got {hashlib.sha256(into).hexdigest()}")
    print(f"source {hashlib.sha256(source).hexdigest()}")
    theirs = BufferDescriptor.decode(msg, 4)
    payload = os.urandom(theirs.length)
    s.rdma_write(payload, [theirs])
    digest = hashlib.sha256(payload).hexdigest()
    s.sendmsg([b"WROTE" + digest.encode()])
    print(f"wrote {digest}")
    s.deregister(rd)
    s.close()
    print("done")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
