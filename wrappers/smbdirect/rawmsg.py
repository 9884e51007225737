"""sendmsg/recvmsg with SCM_RIGHTS by raw system call, past an LD_PRELOADed libsocket_wrapper.so.

Under ``wirecheck exec`` a Python program may run with cwrap's libsocket_wrapper.so preloaded (for
its native children).  cwrap hooks sendmsg/recvmsg on every AF_UNIX socket and rewrites SCM_RIGHTS
into its own fd-passing format (an extra pipe), so a descriptor passed between a preloaded and a
plain process arrives as EINVAL.  The emulated RNIC passes memfds on its carrier, so when cwrap is
preloaded it calls the kernel directly (``syscall(SYS_sendmsg / SYS_recvmsg)``); otherwise Python's
socket methods are used.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import socket
import struct

_NR = {"x86_64": (46, 47), "aarch64": (211, 212), "arm64": (211, 212)}.get(platform.machine())


# Decided once: a preloaded library is loaded when the process starts and stays whatever
# os.environ says later (a process that edits LD_PRELOAD for its children does not load or unload
# it), and every carrier message asks.
_PRELOADED = "socket_wrapper" in os.environ.get("LD_PRELOAD", "") and _NR is not None


def cwrap_preloaded() -> bool:
    return _PRELOADED


class _IOVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32), ("msg_iov", ctypes.POINTER(_IOVec)),
                ("msg_iovlen", ctypes.c_size_t), ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_CMSG_HDR = struct.Struct("@NiI")  # cmsg_len (size_t), cmsg_level, cmsg_type


def _check(r: int) -> int:
    if r < 0:
        e = ctypes.get_errno()
        if e in (errno.EAGAIN, errno.EWOULDBLOCK):
            raise BlockingIOError(e, os.strerror(e))
        raise OSError(e, os.strerror(e))
    return r


def sendmsg(sock: socket.socket, data: bytes, fds: list[int]) -> int:
    if not cwrap_preloaded():
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))] if fds else []
        return sock.sendmsg([data], anc)
    assert _NR is not None
    buf = ctypes.create_string_buffer(data, len(data))
    iov = _IOVec(ctypes.cast(buf, ctypes.c_void_p), len(data))
    payload = struct.pack(f"{len(fds)}i", *fds)
    space = socket.CMSG_SPACE(len(payload)) if fds else 0
    ctl = ctypes.create_string_buffer(space) if fds else None
    if ctl is not None:
        _CMSG_HDR.pack_into(ctl, 0, socket.CMSG_LEN(len(payload)), socket.SOL_SOCKET, socket.SCM_RIGHTS)
        ctypes.memmove(ctypes.addressof(ctl) + _CMSG_HDR.size, payload, len(payload))
    hdr = _MsgHdr(None, 0, ctypes.pointer(iov), 1, ctypes.cast(ctl, ctypes.c_void_p) if ctl is not None else None,
                  space, 0)
    return _check(_syscall(ctypes.c_long(_NR[0]), ctypes.c_long(sock.fileno()), ctypes.byref(hdr),
                           ctypes.c_long(socket.MSG_NOSIGNAL)))


def recvmsg(sock: socket.socket, bufsize: int, max_fds: int = 4) -> tuple[bytes, list[int], int]:
    """(data, received fds, msg_flags)."""
    if not cwrap_preloaded():
        data, anc, flags, _a = sock.recvmsg(bufsize, socket.CMSG_SPACE(4 * max_fds), socket.MSG_CMSG_CLOEXEC)
        fds: list[int] = []
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                n = len(cdata) // 4
                fds.extend(struct.unpack(f"{n}i", cdata[: 4 * n]))
        return data, fds, flags
    assert _NR is not None
    buf = ctypes.create_string_buffer(max(1, bufsize))
    iov = _IOVec(ctypes.cast(buf, ctypes.c_void_p), bufsize)
    space = socket.CMSG_SPACE(4 * max_fds)
    ctl = ctypes.create_string_buffer(space)
    hdr = _MsgHdr(None, 0, ctypes.pointer(iov), 1, ctypes.cast(ctl, ctypes.c_void_p), space, 0)
    n = _check(_syscall(ctypes.c_long(_NR[1]), ctypes.c_long(sock.fileno()), ctypes.byref(hdr),
                        ctypes.c_long(socket.MSG_CMSG_CLOEXEC)))
    fds = []
    pos = 0
    raw = ctl.raw[: hdr.msg_controllen]
    while pos + _CMSG_HDR.size <= len(raw):
        clen, level, kind = _CMSG_HDR.unpack_from(raw, pos)
        if clen < _CMSG_HDR.size:
            break
        cdata = raw[pos + _CMSG_HDR.size: pos + clen]
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            k = len(cdata) // 4
            fds.extend(struct.unpack(f"{k}i", cdata[: 4 * k]))
        pos += socket.CMSG_SPACE(clen - _CMSG_HDR.size)
    return buf.raw[:min(n, bufsize)], fds, hdr.msg_flags
