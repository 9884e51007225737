"""The wire format between the native preload library (native/quic_preload.c) and the QUIC daemon.

Sans-IO: bytes in, values out. Both ends run on one machine, so integers are little-endian and the
C side writes the same layout with plain structs (native/wqd_proto.h holds the C copy; a test
compiles a C program that prints its sizes and offsets and compares them with these).

A control connection is a unix SOCK_STREAM connection (no message-size limit, so a large send is one
call). One request is a 32-byte header,
``len1`` bytes of data (address, option value, payload) and ``len2`` bytes of ancillary items. Every
request except SOCKET carries, by SCM_RIGHTS, the application's QUIC fd: the daemon finds the socket
by that fd's inode, so the call works from any process that holds the fd (after fork, dup or fd
passing), never from a per-process table. One reply follows: a 32-byte header (``ret`` >= 0 or
-errno), data and ancillary items; SOCKET and ACCEPT replies carry the new fd by SCM_RIGHTS. On an
error the data part is the reason as text (the library prints it when WIRECHECK_QUIC_DEBUG is set).

Ancillary items (sendmsg cmsgs in, recvmsg cmsgs out) are a sequence of ``level i32, type i32,
length u32`` followed by ``length`` bytes, without padding.
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass

MAGIC = 0x31445157  # "WQD1"
REQ = struct.Struct("<IHHiiiiII")
REP = struct.Struct("<qIIIiq")
ANC = struct.Struct("<iiI")
MAX_CALL = 64 * 1024 * 1024 + 4096  # the largest request (a send of up to 64 MiB; the library splits larger ones)

OP_SOCKET, OP_BIND, OP_CONNECT, OP_LISTEN, OP_ACCEPT = 1, 2, 3, 4, 5
OP_GETSOCKNAME, OP_GETPEERNAME, OP_SETSOCKOPT, OP_GETSOCKOPT = 6, 7, 8, 9
OP_SENDMSG, OP_RECVMSG, OP_SHUTDOWN, OP_HANDSHAKE = 10, 11, 12, 13
OP_IOCTL = 14
# IPPROTO_SMBDIRECT fds only (wirecheck's own calls, as the Python socket's register/deregister/rdma_read):
# REGISTER data = addr u64, len u64, access u32, d = the caller's pid, reply = one Buffer Descriptor V1;
# DEREGISTER data = token u32; RDMA_READ a = length, data = offset u64 + descriptors, reply = the bytes.
OP_SMBD_REGISTER, OP_SMBD_DEREGISTER, OP_SMBD_RDMA_READ = 32, 33, 34
OP_NAMES = {v: k[3:].lower() for k, v in globals().items() if k.startswith("OP_")}

TOKEN = b"\x01"
"""What the daemon writes into the app fd's queue while a recvmsg (or accept) would not block."""

APP_NAME_PREFIX = b"\0wirecheck-quic:"
"""Abstract name of the daemon's end of every app fd, followed by the daemon's own name and a number:
how the library recognises a QUIC fd it did not create (after exec, or received by SCM_RIGHTS) with
one getpeername() and no daemon call, and which daemon holds it (processes with other settings, so
another daemon of their own, still reach the socket's)."""


@dataclass
class Request:
    op: int
    a: int = 0
    b: int = 0
    c: int = 0
    d: int = 0
    data: bytes = b""
    anc: list[tuple[int, int, bytes]] | None = None

    def pack(self) -> bytes:
        anc = pack_anc(self.anc or [])
        return REQ.pack(MAGIC, self.op, 0, self.a, self.b, self.c, self.d, len(self.data), len(anc)) + self.data + anc

    @classmethod
    def unpack(cls, msg: bytes) -> Request:
        if len(msg) < REQ.size:
            raise ValueError(f"request of {len(msg)} bytes is shorter than its {REQ.size}-byte header")
        magic, op, _flags, a, b, c, d, n1, n2 = REQ.unpack_from(msg)
        if magic != MAGIC:
            raise ValueError(f"bad magic {magic:#x}")
        if REQ.size + n1 + n2 != len(msg):
            raise ValueError(f"request lengths {n1}+{n2} do not match its {len(msg) - REQ.size} bytes")
        data = msg[REQ.size:REQ.size + n1]
        return cls(op, a, b, c, d, data, unpack_anc(msg[REQ.size + n1:]))


@dataclass
class Reply:
    ret: int
    msg_flags: int = 0
    data: bytes = b""
    anc: list[tuple[int, int, bytes]] | None = None
    aux: int = 0
    aux2: int = 0

    def pack(self) -> bytes:
        anc = pack_anc(self.anc or [])
        return REP.pack(self.ret, self.msg_flags, len(self.data), len(anc), self.aux, self.aux2) + self.data + anc

    @classmethod
    def unpack(cls, msg: bytes) -> Reply:
        if len(msg) < REP.size:
            raise ValueError("short reply")
        ret, flags, n1, n2, aux, aux2 = REP.unpack_from(msg)
        if REP.size + n1 + n2 != len(msg):
            raise ValueError("reply lengths do not match")
        return cls(ret, flags, msg[REP.size:REP.size + n1], unpack_anc(msg[REP.size + n1:]), aux, aux2)

    @classmethod
    def error(cls, e: int, why: str = "") -> Reply:
        return cls(-e, data=why.encode("utf-8", "replace")[:512])


def pack_anc(items: list[tuple[int, int, bytes]]) -> bytes:
    return b"".join(ANC.pack(level, ctype, len(data)) + bytes(data) for level, ctype, data in items)


def unpack_anc(buf: bytes) -> list[tuple[int, int, bytes]]:
    out = []
    off = 0
    while off < len(buf):
        if len(buf) - off < ANC.size:
            raise ValueError("truncated ancillary item header")
        level, ctype, n = ANC.unpack_from(buf, off)
        off += ANC.size
        if n > len(buf) - off:
            raise ValueError("truncated ancillary item")
        out.append((level, ctype, bytes(buf[off:off + n])))
        off += n
    return out


def sockaddr_to_tuple(family: int, raw: bytes) -> tuple:
    """A C sockaddr for a socket of ``family`` as the Python address tuple QuicSocket takes; EINVAL when
    short or of another family (an AF_INET6 socket takes a v4 address as its v4-mapped form)."""
    if len(raw) < 2:
        raise OSError(errno.EINVAL, "address too short")
    fam = struct.unpack_from("<H", raw)[0]
    if fam == socket.AF_UNSPEC:
        return (None, 0)
    if fam == socket.AF_INET and len(raw) >= 16:
        host = socket.inet_ntoa(raw[4:8])
        port = struct.unpack(">H", raw[2:4])[0]
        if family == socket.AF_INET:
            return (host, port)
        return ("::ffff:" + host, port, 0, 0)
    if fam == socket.AF_INET6 and len(raw) >= 28 and family == socket.AF_INET6:
        return (socket.inet_ntop(socket.AF_INET6, raw[8:24]), struct.unpack(">H", raw[2:4])[0], 0, 0)
    raise OSError(errno.EINVAL, f"address family {fam} (length {len(raw)}) on a family {family} socket")


def tuple_to_sockaddr(addr: tuple) -> bytes:
    host, port = str(addr[0]), int(addr[1])
    if ":" in host:
        if host.startswith("::ffff:") and "." in host:  # quic.ko reports v4-mapped addresses as AF_INET
            return tuple_to_sockaddr((host[7:], port))
        return struct.pack("<H", socket.AF_INET6) + struct.pack(">HI", port, 0) + socket.inet_pton(
            socket.AF_INET6, host.split("%")[0]) + bytes(4)
    return struct.pack("<H", socket.AF_INET) + struct.pack(">H", port) + socket.inet_aton(host) + bytes(8)
