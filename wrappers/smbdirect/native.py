"""The SMB Direct socket behind a native program's IPPROTO_SMBDIRECT fd, as the engine daemon hosts it.

A native (C) program gets IPPROTO_SMBDIRECT from the same preload library and the same per-host
daemon as IPPROTO_QUIC: the daemon holds an ordinary :class:`SmbDirectSocket` (MS-SMBD core, credits,
keepalive and negotiation timers run by the SMB Direct engine thread of the daemon, the same capture
records), and the library turns the program's calls into requests on it. Why the daemon and not an
engine inside the program: keepalives and credit grants must go on while the program blocks, sleeps or
is stopped, and the connection must survive fork, dup and fd passing (the daemon finds the socket by
the fd's inode, whichever process sends it).

This subclass adds only what the daemon needs beyond the Python socket API:

* readiness (a message or a connection waiting, or the end of the connection) for the token the
  daemon keeps on the program's fd;
* SO_RCVTIMEO/SO_SNDTIMEO and the SOL_SOCKET reads a C program makes (SO_TYPE, SO_PROTOCOL, ...);
* registration of the *program's* memory. RDMA into a native program works by process_vm_readv/
  writev from the peer's NIC straight into the program (the region table names the program's pid,
  which the daemon probes once at registration). Why not a memfd: the program's buffer is ordinary
  memory (malloc, stack, a mapped file), which the library cannot turn into shared memory without
  remapping the program's pages under it; process_vm_* needs no privilege for a process of the same
  user (the library sets PR_SET_PTRACER for Yama's ptrace_scope 1). Where ptrace rules forbid it the
  peer runs in memfd mode and a native registration is EOPNOTSUPP with that reason.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
from typing import Any

from . import constants as C
from .messages import decode_descriptors, encode_descriptors
from .sock import SmbDirectSocket

_TIMEVAL = struct.Struct("<qq")
_REGISTER = struct.Struct("<QQI")  # address, length, access


class NativeSmbDirectSocket(SmbDirectSocket):
    """An :class:`SmbDirectSocket` living in the engine daemon on behalf of a native program."""

    _sndtimeo: float | None = None

    # -- readiness --------------------------------------------------------------------------------
    def native_readiness(self) -> tuple[bool, bool]:
        """(a recvmsg or accept would not block, the connection is over and its queue empty)."""
        ready = bool(select.select([self.fileno()], [], [], 0)[0])
        link = self._link
        eof = link is not None and link.closed and not link.rxq
        return ready or eof, eof

    @property
    def native_listening(self) -> bool:
        return self._listener is not None

    # -- SOL_SOCKET ---------------------------------------------------------------------------------
    def setsockopt(self, level: int, optname: int, value: Any, optlen: int | None = None) -> None:  # type: ignore[override]
        if level == socket.SOL_SOCKET and optname in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
            if not isinstance(value, (bytes, bytearray)) or len(value) < _TIMEVAL.size:
                raise OSError(errno.EINVAL, "a struct timeval is needed")
            sec, usec = _TIMEVAL.unpack_from(value)
            if sec < 0 or not 0 <= usec < 1_000_000:
                raise OSError(errno.EDOM, "timeval out of range")
            t = None if sec == 0 and usec == 0 else sec + usec / 1e6
            if optname == socket.SO_RCVTIMEO:
                self._timeout = t
            else:
                self._sndtimeo = t
            return
        super().setsockopt(level, optname, value, optlen)

    def native_getsockopt(self, level: int, optname: int, optlen: int) -> bytes:
        if level == socket.SOL_SOCKET:
            if optname in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
                t = (self._timeout if optname == socket.SO_RCVTIMEO else self._sndtimeo) or 0.0
                return _TIMEVAL.pack(int(t), int((t - int(t)) * 1e6))[:optlen]
            ints = {socket.SO_TYPE: socket.SOCK_STREAM, socket.SO_PROTOCOL: C.IPPROTO_SMBDIRECT,
                    socket.SO_DOMAIN: self._sfamily, socket.SO_ERROR: 0,
                    socket.SO_ACCEPTCONN: int(self._listener is not None)}
            if optname not in ints:
                raise OSError(errno.ENOPROTOOPT, "option not emulated")
            return struct.pack("<i", ints[optname])[:optlen]
        value = self.getsockopt(level, optname, optlen)
        return value if isinstance(value, bytes) else struct.pack("<I", value)[:optlen]

    # -- RDMA on the program's memory ------------------------------------------------------------
    def native_register(self, pid: int, data: bytes) -> bytes:
        """``data``: address u64, length u64, access u32 in the program ``pid``. Returns one Buffer
        Descriptor V1 (MS-SMBD 2.2.3.1) for the program to put in its SMB2 READ or WRITE."""
        if len(data) != _REGISTER.size:
            raise OSError(errno.EINVAL, "register: address, length and access expected")
        addr, length, access = _REGISTER.unpack(data)
        if length == 0:
            raise OSError(errno.EINVAL, "cannot register an empty buffer")
        return encode_descriptors([self._conn().register_foreign(pid, addr, length, access)])

    def native_deregister(self, data: bytes) -> None:
        if len(data) != 4:
            raise OSError(errno.EINVAL, "deregister: a u32 token expected")
        self.deregister(struct.unpack("<I", data)[0])

    def native_rdma_read(self, length: int, data: bytes) -> bytes:
        """RDMA READ of ``length`` bytes from the peer: ``data`` is offset u64 + descriptors."""
        if len(data) < 8 or length < 0:
            raise OSError(errno.EINVAL, "rdma read: offset and descriptors expected")
        try:
            descs = decode_descriptors(data[8:])
        except ValueError as e:
            raise OSError(errno.EINVAL, str(e)) from None
        if not descs:
            raise OSError(errno.EINVAL, "rdma read: no descriptor")
        return bytes(self.rdma_read(length, descs, struct.unpack_from("<Q", data)[0]))
