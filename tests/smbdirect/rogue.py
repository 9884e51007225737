"""A hand-driven peer on the raw carrier (AF_UNIX SOCK_SEQPACKET) for bad-input tests: it does the
RNIC HELLO/READY exchange properly, then sends whatever SMBD bytes the test wants."""

from __future__ import annotations

import array
import ctypes
import os
import select
import socket
import struct

from wrappers.smbdirect import link as L
from wrappers.smbdirect.memory import LocalRegions
from wrappers.smbdirect.messages import DataTransfer, NegotiateRequest, NegotiateResponse


class Rogue:
    def __init__(self, sock: socket.socket):
        self.s = sock
        self.s.settimeout(10)
        self.regions = LocalRegions()
        self._probe = ctypes.c_uint64(1)

    @classmethod
    def connect(cls, path: str, bind: str | None = None) -> Rogue:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        if bind:
            s.bind(bind)
        s.connect(path)
        return cls(s)

    def hello(self) -> None:
        hello = bytes([L.OP_HELLO]) + L._HELLO.pack(os.getpid(), 0x1234, ctypes.addressof(self._probe), 1)
        self.s.sendmsg([hello], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [self.regions.fd]))])
        got_hello = got_ready = False
        while not (got_hello and got_ready):
            data, anc, _f, _a = self.s.recvmsg(4096, socket.CMSG_SPACE(16))
            for _l, _k, d in anc:
                for fd in array.array("i", d[: len(d) - len(d) % 4]):
                    os.close(fd)
            if data[0] == L.OP_HELLO:
                got_hello = True
                self.s.send(bytes([L.OP_READY, 0]))
            elif data[0] == L.OP_READY:
                got_ready = True
            else:
                raise AssertionError(f"unexpected {data[:1].hex()}")

    def send(self, smbd: bytes) -> None:
        self.s.send(bytes([L.OP_SEND]) + smbd)

    def recv(self, timeout: float = 5.0) -> tuple[int, bytes] | None:
        """(opcode, body) of the next carrier message; None at EOF."""
        r, _, _ = select.select([self.s], [], [], timeout)
        if not r:
            raise TimeoutError("rogue: nothing received")
        try:
            data = self.s.recv(1 << 20)
        except ConnectionResetError:
            return None
        if not data:
            return None
        return data[0], data[1:]

    def recv_until_close(self, timeout: float = 5.0) -> list[tuple[int, bytes]]:
        out = []
        while True:
            m = self.recv(timeout)
            if m is None:
                return out
            out.append(m)

    def negotiate_as_client(self, **kw) -> NegotiateResponse:
        f = dict(credits_requested=10, preferred_send_size=1024, max_receive_size=1024, max_fragmented_size=131072)
        f.update(kw)
        self.send(NegotiateRequest(**f).encode())
        op, body = self.recv()  # type: ignore[misc]
        assert op == L.OP_SEND
        return NegotiateResponse.decode(body)

    def data(self, payload: bytes = b"", cr: int = 10, cg: int = 10, flags: int = 0, remaining: int = 0) -> None:
        self.send(DataTransfer(cr, cg, flags, remaining, payload).encode())

    def close(self) -> None:
        self.s.close()
        self.regions.close()


def data_header(body: bytes) -> tuple:
    return struct.unpack_from("<HHHHIII", body)
