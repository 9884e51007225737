"""The errno reference for tests/native/c/smbdtest.c's "errnos" mode: the same misuses, in the same
order, on the Python IPPROTO_SMBDIRECT socket (run under `wirecheck exec`), printed the same way
("case NAME errno N", "value NAME N"). The test compares the two outputs case by case.

    python pysmbd_errnos.py HOST PORT
"""

from __future__ import annotations

import socket
import struct
import sys
from collections.abc import Callable
from typing import Any

from wrappers.smbdirect import constants as C
from wrappers.smbdirect.messages import BufferDescriptor


def case(name: str, fn: Callable[[], Any]) -> Any:
    try:
        out = fn()
    except OSError as e:
        print(f"case {name} errno {e.errno}", flush=True)
        return None
    print(f"case {name} errno 0", flush=True)
    return out


def u32(v: int) -> bytes:
    return struct.pack("<I", v)


def main(host: str, port: int) -> int:
    smbd = C.IPPROTO_SMBDIRECT
    case("socket_dgram", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM, smbd))
    case("socket_unix", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, smbd))
    s = case("socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM, smbd))
    case("set_credits_0", lambda: s.setsockopt(C.SOL_SMBDIRECT, C.SMBDIRECT_RECEIVE_CREDIT_MAX, u32(0)))
    case("set_send_size_100", lambda: s.setsockopt(C.SOL_SMBDIRECT, C.SMBDIRECT_MAX_SEND_SIZE, u32(100)))
    case("set_short_len", lambda: s.setsockopt(C.SOL_SMBDIRECT, C.SMBDIRECT_MAX_SEND_SIZE, u32(100)[:2]))
    case("set_keepalive_0", lambda: s.setsockopt(C.SOL_SMBDIRECT, C.SMBDIRECT_KEEPALIVE_INTERVAL, u32(0)))
    case("set_unknown", lambda: s.setsockopt(C.SOL_SMBDIRECT, 99, u32(1)))
    case("set_readonly", lambda: s.setsockopt(C.SOL_SMBDIRECT, C.SMBDIRECT_SEND_CREDITS, u32(1)))
    case("set_other_level", lambda: s.setsockopt(socket.IPPROTO_TCP, 1, u32(1)))
    v = case("get_default", lambda: s.getsockopt(C.SOL_SMBDIRECT, C.SMBDIRECT_RECEIVE_CREDIT_MAX, 4))
    print(f"value receive_credit_max {struct.unpack('<I', v)[0]}")
    case("get_params_unconnected", lambda: s.getsockopt(C.SOL_SMBDIRECT, C.SMBDIRECT_CONNECTION_PARAMETERS, 64))
    case("get_credits_unconnected", lambda: s.getsockopt(C.SOL_SMBDIRECT, C.SMBDIRECT_SEND_CREDITS, 4))
    case("get_unknown", lambda: s.getsockopt(C.SOL_SMBDIRECT, 99, 4))
    case("send_unconnected", lambda: s.send(b"x"))
    case("recv_unconnected", lambda: s.recv(64, socket.MSG_DONTWAIT))
    case("register_unconnected", lambda: s.register(bytearray(64), 1))
    case("connect_refused", lambda: s.connect((host, 1)))
    s.close()

    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, smbd)
    case("connect", lambda: s.connect((host, port)))
    case("connect_again", lambda: s.connect((host, port)))
    case("set_after_connect", lambda: s.setsockopt(C.SOL_SMBDIRECT, C.SMBDIRECT_RECEIVE_CREDIT_MAX, u32(10)))
    v = case("get_negotiated", lambda: s.getsockopt(C.SOL_SMBDIRECT, C.SMBDIRECT_MAX_SEND_SIZE, 4))
    print(f"value max_send_size {struct.unpack('<I', v)[0]}")
    case("get_params", lambda: s.getsockopt(C.SOL_SMBDIRECT, C.SMBDIRECT_CONNECTION_PARAMETERS, 24))
    buf = bytearray(64)
    case("register_access_0", lambda: s.register(buf, 0))
    case("register_access_8", lambda: s.register(buf, 8))
    case("register_empty", lambda: s.register(bytearray(0), 1))
    case("deregister_unknown", lambda: s.deregister(0xDEADBEEF))
    descs = case("register", lambda: s.register(buf, 3))
    case("deregister", lambda: s.deregister(descs))
    case("deregister_twice", lambda: s.deregister(descs))
    case("recv_oob", lambda: s.recv(64, socket.MSG_OOB))
    case("recv_nothing_waiting", lambda: s.recv(64, socket.MSG_DONTWAIT))
    case("send_oob_without_descriptors", lambda: s.send(b"x", socket.MSG_OOB))
    case("send_bad_cmsg_level", lambda: s.sendmsg([b"abcd"], [(socket.SOL_SOCKET + 1000, 1, bytes(4))]))
    lvl = C.SOL_SMBDIRECT
    case("send_descriptors_without_oob", lambda: s.sendmsg([b"abcd"], [(lvl, C.SMBDIRECT_CMSG_RDMA_DESCRIPTORS, bytes(16))]))
    case("send_oob_short_descriptors",
         lambda: s.sendmsg([b"abcd"], [(lvl, C.SMBDIRECT_CMSG_RDMA_DESCRIPTORS, bytes(12))], socket.MSG_OOB))
    case("send_invalidate_short", lambda: s.sendmsg([b"abcd"], [(lvl, C.SMBDIRECT_CMSG_REMOTE_INVALIDATE, bytes(2))]))
    case("rdma_read_no_descriptors", lambda: s.rdma_read(4, []))
    bad = BufferDescriptor(0x1000, 0x12345678, 4).encode()
    case("rdma_write_bad_token", lambda: s.sendmsg([b"abcd"], [(lvl, C.SMBDIRECT_CMSG_RDMA_DESCRIPTORS, bad)], socket.MSG_OOB))
    case("send_after_abort", lambda: s.send(b"x", socket.MSG_NOSIGNAL))
    s.close()
    print("done")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
