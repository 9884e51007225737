"""One SMB Direct connection inside the engine: carrier, MS-SMBD core, emulated RNIC, capture.

The carrier is an AF_UNIX SOCK_SEQPACKET connection.  Each message on it starts with an opcode
byte; the SEND opcodes carry exactly the bytes an RNIC would put on the wire, the others are the
emulated RNIC talking to its peer (what real hardware does below the verbs):

    0x04 SEND               SMBD message
    0x17 SEND_INV           token(u32 LE) + SMBD message   (SEND with Invalidate)
    0x01 HELLO              pid, QPN, probe address, probe cookie (+ SCM_RIGHTS: our region table)
    0x02 READY              u8: 1 = I can reach your memory with process_vm_*, 0 = give me memfds
    0x20 MR_FD              token (+ SCM_RIGHTS: the memfd of a region, memfd mode only)
    0x30 DISCONNECT         u8 reason (0 close, 1 protocol violation, 2 remote access error) + text

Only SENDs reach the MS-SMBD core; a SEND before the HELLO/READY exchange, an unknown opcode or a
message longer than our posted receive is a fatal error, as on a real RNIC.
"""

from __future__ import annotations

import _socket
import array
import ctypes
import errno
import os
import random
import socket
import struct
import time
from collections import deque
from typing import Any

from .. import packets
from . import constants as C
from . import rawmsg, roce
from .core import ACTIVE, Connection, Established, MessageReceived, Params, Send, Terminated
from .memory import AccessError, LocalRegions, Pinned, RemoteRegions, allow_peer_access, vm_copy
from .messages import BufferDescriptor, split_descriptors

OP_HELLO, OP_READY, OP_SEND, OP_SEND_INV, OP_MR_FD, OP_DISCONNECT = 0x01, 0x02, 0x04, 0x17, 0x20, 0x30
_HELLO = struct.Struct("<IIQQ")
RX_PAUSE_BYTES = 8 * 1024 * 1024
CARRIER_BUF = 4 * 1024 * 1024
DISC_CLOSE, DISC_VIOLATION, DISC_ACCESS = 0, 1, 2
_MSG_TRUNC = int(socket.MSG_TRUNC)
_SEND, _SEND_INV, _TOKEN = bytes([OP_SEND]), bytes([OP_SEND_INV]), struct.Struct("<I")
_NO_FDS: list[int] = []  # shared, never modified: a carrier message without descriptors


def rdma_mode_forced() -> str:
    m = os.environ.get("WIRECHECK_SMBDIRECT_RDMA", "auto") or "auto"
    return m if m in ("auto", "vm", "memfd") else "auto"


def tune(sock: Any) -> None:
    for opt in (_socket.SO_SNDBUF, _socket.SO_RCVBUF):
        try:
            sock.setsockopt(_socket.SOL_SOCKET, opt, CARRIER_BUF)
        except OSError:
            pass


class Link:
    def __init__(self, engine: Any, carrier: Any, role: str, params: Params, local: tuple, peer: tuple,
                 recorder: Any = None):
        self.engine = engine
        self.carrier = carrier
        carrier.setblocking(False)
        self.core = Connection(role, params, time.monotonic())
        self.role = role
        self.local = local
        self.peer = peer
        self.rec = recorder
        self.outq: deque[tuple[bytes, list[int]]] = deque()
        self.rxq: deque[tuple[bytes, int | None]] = deque()
        self.rx_bytes = 0
        self.app_wake: Any = None  # engine end of the app pair (set when a socket owns the link)
        self.token_out = False
        self.state = "hello"
        self.error = 0  # errno for the app once closed; 0 = clean EOF
        self.reason = ""
        self.closed = False
        self.listener: Any = None
        self.qpn = random.randint(0x100, 0xFFFFFF)
        self.peer_qpn = 0
        self._flow = (-1, 0)  # (peer QPN, UDP source port) of the capture's records
        self._ends: tuple[int, Any] = (-1, None)  # (peer QPN, endpoints of our SEND records)
        self.psn = random.randint(0, 0xFFFFF)
        self.peer_pid = 0
        self._hello_in = False
        self._ready_in = False
        self._probe = ctypes.c_uint64(random.getrandbits(64))
        forced = rdma_mode_forced()
        self.can_vm = False  # can we reach the peer's memory with process_vm_*
        self.regions = LocalRegions(mode_memfd=forced == "memfd")
        self.remote: RemoteRegions | None = None
        self.max_rx = C.MIN_NEGOTIATE_RECEIVE
        if forced != "memfd":
            allow_peer_access()
        self._send_ctl(bytes([OP_HELLO]) + _HELLO.pack(os.getpid(), self.qpn, ctypes.addressof(self._probe),
                                                       self._probe.value), [self.regions.fd])

    # -- carrier output ---------------------------------------------------------------------------
    def _send_ctl(self, data: bytes, fds: list[int] | None = None) -> None:
        self.outq.append((data, fds or []))
        self.flush()

    def flush(self) -> None:
        while self.outq and not self.closed:
            data, fds = self.outq[0]
            try:
                if fds:
                    rawmsg.sendmsg(self.carrier, data, fds)
                else:
                    self.carrier.send(data)
            except (BlockingIOError, InterruptedError):
                self.engine.want_write(self)
                return
            except OSError as e:
                self._lost(f"carrier send failed: {e.strerror}", errno.ECONNRESET)
                return
            self.outq.popleft()

    def _post(self, sends: list[Send]) -> None:
        if sends:
            if self.rec is not None:
                self._log_sends(sends)
            out = self.outq
            for s in sends:
                if s.invalidate_token is not None:
                    out.append((_SEND_INV + _TOKEN.pack(s.invalidate_token) + s.data, _NO_FDS))
                else:
                    out.append((_SEND + s.data, _NO_FDS))
        self.flush()

    def _log_sends(self, sends: list[Send]) -> None:
        """One SEND_ONLY record per SEND, in order, all of one batch under one hold of the capture
        lock and in one append, before any of them goes out: the peer cannot answer what it has
        not received, so no reply is logged before its request. Built before the lock is taken."""
        psn = self._next_psn(len(sends))  # reserved at once: an RDMA in an app thread takes PSNs too
        qp, ends, send_only = self.peer_qpn, self._send_ends(), roce.send_only
        pkts = [packets.udp_datagram(ends, send_only(qp, psn + i, s.data, s.invalidate_token)) for i, s in enumerate(sends)]
        rec = self.rec
        try:
            with rec.locked():
                rec.write(pkts)
        except (OSError, ValueError):
            pass

    def _send_ends(self) -> Any:
        """The IP/UDP endpoints of our SENDs' records, resolved once per peer QPN."""
        if self._ends[0] != self.peer_qpn:
            self._ends = (self.peer_qpn, packets.udp_endpoints(self._udp(self.local), (self.peer[0], roce.ROCE_PORT)))
        return self._ends[1]

    def _next_psn(self, n: int = 1) -> int:
        p = self.psn
        self.psn = (self.psn + n) & 0xFFFFFF
        return p

    def _record(self, items: list[tuple[tuple, tuple, list]]) -> None:
        rec = self.rec
        if rec is None:
            return
        try:
            with rec.locked():
                for src, dst, parts in items:
                    rec.writer.write_packet(roce.udp_record(self._udp(src), (dst[0], roce.ROCE_PORT), parts))
        except (OSError, ValueError):
            pass

    def _udp(self, addr: tuple) -> tuple:
        """RoCEv2's UDP source port is flow entropy (IBTA Annex A17); a RoCE NIC derives it from
        its QPs. We derive it from both QP numbers alike, so the two directions of one connection
        share a port and a capture reader can group a connection's frames by UDP port (tshark has
        no connection number for InfiniBand). Computed once per peer QPN (every record asks)."""
        if self._flow[0] != self.peer_qpn:
            self._flow = (self.peer_qpn, roce.flow_port(self.qpn, self.peer_qpn))
        return (addr[0], self._flow[1])

    # -- carrier input (engine thread) ---------------------------------------------------------
    def on_readable(self) -> None:
        for _ in range(64):
            if self.closed:
                return
            try:
                data, fds, flags = rawmsg.recvmsg(self.carrier, self.max_rx + 8)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._lost(f"carrier: {e.strerror}", errno.ECONNRESET)
                return
            if not data and not fds:
                self._lost("peer vanished (carrier closed without DISCONNECT)", errno.ECONNRESET)
                return
            if flags & _MSG_TRUNC:
                _close_all(fds)
                self.violation(f"SEND longer than the posted receive ({self.max_rx} bytes)")
                return
            try:
                self._dispatch(data, fds)
            except Exception as e:  # a bug or garbage: the connection dies, the process does not
                _close_all(fds)
                self.violation(f"malformed carrier message: {e}")
                return

    def _dispatch(self, data: bytes, fds: list[int]) -> None:
        op = data[0]
        if op == OP_HELLO:
            if self._hello_in or len(data) < 1 + _HELLO.size or len(fds) != 1:
                _close_all(fds)
                return self.violation("bad HELLO")
            pid, qpn, paddr, cookie = _HELLO.unpack_from(data, 1)
            self._hello_in = True
            self.peer_pid, self.peer_qpn = pid, qpn
            forced = rdma_mode_forced()
            can = False
            if forced != "memfd":
                probe = ctypes.c_uint64(0)
                try:
                    vm_copy(pid, ctypes.addressof(probe), paddr, 8, write=False)
                    can = probe.value == cookie
                except OSError:
                    can = False
            if forced == "vm" and not can:
                _close_all(fds)
                return self.violation("process_vm_readv cannot reach the peer (WIRECHECK_SMBDIRECT_RDMA=vm)")
            self.can_vm = can
            try:
                self.remote = RemoteRegions(fds[0], pid, can)
            except OSError as e:
                return self.violation(f"peer region table: {e.strerror}")
            self._send_ctl(bytes([OP_READY, 1 if can else 0]))
            self._maybe_start()
            return
        _close_all(fds) if op != OP_MR_FD else None
        if op == OP_READY:
            if not self._hello_in or self._ready_in or len(data) != 2:
                return self.violation("bad READY")
            self._ready_in = True
            if not data[1]:
                self.regions.memfd_mode = True
            self._maybe_start()
        elif op == OP_MR_FD:
            if len(data) != 5 or len(fds) != 1 or self.remote is None:
                _close_all(fds)
                return self.violation("bad MR_FD")
            self.remote.add_shadow(struct.unpack_from("<I", data, 1)[0], fds[0])
        elif op in (OP_SEND, OP_SEND_INV):
            if self.state == "hello":
                return self.violation("SEND before the RNIC handshake")
            token = None
            body = memoryview(data)[1:]
            if op == OP_SEND_INV:
                if len(body) < 4:
                    return self.violation("short SEND with Invalidate")
                token = struct.unpack_from("<I", body)[0]
                body = body[4:]
                if not self.regions.invalidate(token):
                    # IB: invalidating an rkey that is not valid is a remote access error.
                    return self.violation(f"SEND with Invalidate of unknown token {token:#010x}")
            self._events(self.core.receive(body, time.monotonic(), token))
        elif op == OP_DISCONNECT:
            reason = data[1] if len(data) > 1 else DISC_VIOLATION
            text = data[2:].decode(errors="replace")
            if reason == DISC_CLOSE:
                self._lost("peer closed the connection", 0)
            else:
                self._lost(f"peer terminated the connection: {text}", errno.ECONNRESET)
        else:
            self.violation(f"unknown carrier opcode {op:#04x}")

    def _maybe_start(self) -> None:
        if self.state == "hello" and self._hello_in and self._ready_in:
            self.state = "negotiating"
            if self.role == ACTIVE:
                self.core.initiate(time.monotonic())
                self._post(self.core.sends())

    def _events(self, events: list[object]) -> None:
        self._post(self.core.sends())
        for ev in events:
            if isinstance(ev, Established):
                self.state = "established"
                self.max_rx = self.core.max_receive_size + 5
                self.engine.on_established(self)
            elif isinstance(ev, MessageReceived):
                self.rxq.append((ev.data, ev.invalidated_token))
                self.rx_bytes += len(ev.data)
                if self.rx_bytes > RX_PAUSE_BYTES and not self.core.paused:
                    self.core.pause_receive(True, time.monotonic())
                self.signal()
            elif isinstance(ev, Terminated):
                self._post(self.core.sends())
                self._drop(DISC_CLOSE if ev.graceful else DISC_VIOLATION, ev.reason,
                           ev.errno if not ev.graceful else ev.errno)
        self.engine.notify()

    # -- timers -----------------------------------------------------------------------------
    def timer(self) -> float | None:
        return None if self.closed else self.core.timer()

    def on_timer(self, now: float) -> None:
        if not self.closed:
            self._events(self.core.handle_timer(now))

    # -- app side (caller holds the engine lock) -------------------------------------------------
    def send_message(self, data: Any, invalidate: int | None) -> None:
        if self.closed:
            raise OSError(self.error or errno.EPIPE, self.reason or "connection closed")
        self.core.send(data, time.monotonic(), invalidate)
        self._events([])

    def pop(self) -> tuple[bytes, int | None] | None:
        if not self.rxq:
            return None
        item = self.rxq.popleft()
        self.rx_bytes -= len(item[0])
        if self.core.paused and self.rx_bytes < RX_PAUSE_BYTES // 2:
            self.core.pause_receive(False, time.monotonic())
            self._events([])
        return item

    def signal(self) -> None:
        w = self.app_wake
        if w is None:
            return
        if self.rxq and not self.token_out:
            try:
                w.send(b"\1")
                self.token_out = True
            except OSError:
                pass
        if self.closed and not self.rxq:
            try:
                w.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    # -- termination ---------------------------------------------------------------------------------
    def violation(self, reason: str) -> None:
        self._drop(DISC_VIOLATION, reason, errno.ECONNABORTED)

    def _drop(self, code: int, reason: str, err: int) -> None:
        """We end the connection: tell the peer's RNIC why, then close the carrier."""
        if self.closed:
            return
        text = reason.encode()[:200]
        try:
            self.flush()
            self.carrier.send(bytes([OP_DISCONNECT, code]) + text)
        except OSError:
            pass
        self._lost(reason, err)

    def _lost(self, reason: str, err: int) -> None:
        if self.closed:
            return
        self.core.connection_lost(reason, err or errno.ECONNRESET)
        self.core.events()
        self.closed = True
        self.error = err
        self.reason = reason
        self.outq.clear()
        self.engine.forget(self)
        try:
            # Read what is still queued, so that closing does not turn our DISCONNECT into a reset
            # on the peer's side (AF_UNIX resets a peer when unread data is dropped).
            for _ in range(1024):
                data, fds, _f = rawmsg.recvmsg(self.carrier, self.max_rx + 8)
                _close_all(fds)
                if not data:
                    break
        except OSError:
            pass
        try:
            self.carrier.close()
        except OSError:
            pass
        self.regions.close()
        if self.remote is not None:
            self.remote.close()
        self.signal()
        if self.listener is not None:
            self.listener.discard(self)
        self.engine.notify()

    def close(self) -> None:
        self._drop(DISC_CLOSE, "closed", errno.EBADF)

    # -- RDMA (app thread, engine lock NOT held) -----------------------------------------------------
    def register(self, buffer: Any, access: int) -> list[BufferDescriptor]:
        if self.closed:
            raise OSError(self.error or errno.ENOTCONN, self.reason or "not connected")
        if self.state != "established":
            raise OSError(errno.ENOTCONN, "not connected")
        reg = self.regions.register(buffer, access)
        if reg.shadow_fd is not None:
            with self.engine.lock:
                self._send_ctl(bytes([OP_MR_FD]) + struct.pack("<I", reg.token), [reg.shadow_fd])
        return [BufferDescriptor(reg.addr, reg.token, reg.length)]

    def register_foreign(self, pid: int, addr: int, length: int, access: int) -> BufferDescriptor:
        """A native program's buffer (its pid and address), registered by the daemon that runs the
        program's connection: the peer's NIC copies into that process directly. Probed first with one
        process_vm_readv, so an address the program does not own is EFAULT here and never a remote
        access error later."""
        if self.closed:
            raise OSError(self.error or errno.ENOTCONN, self.reason or "not connected")
        if self.state != "established":
            raise OSError(errno.ENOTCONN, "not connected")
        if length > 0:
            probe = ctypes.c_uint8(0)
            for where in {addr, addr + length - 1}:
                try:
                    vm_copy(pid, ctypes.addressof(probe), where, 1, write=False)
                except OSError as e:
                    raise OSError(errno.EFAULT if e.errno in (errno.EFAULT, errno.ENOMEM) else e.errno or errno.EFAULT,
                                  f"buffer at {where:#x} of pid {pid} not reachable: {e.strerror}") from None
        reg = self.regions.register_foreign(pid, addr, length, access)
        return BufferDescriptor(reg.addr, reg.token, reg.length)

    def deregister(self, token: int) -> bool:
        if self.closed:
            return True  # the connection is gone: every region was invalidated with it
        return self.regions.invalidate(token)

    def rdma(self, local: Any, descs: list[BufferDescriptor], offset: int, write: bool) -> None:
        if self.closed:
            raise OSError(self.error or errno.ENOTCONN, self.reason or "not connected")
        if self.state != "established" or self.remote is None:
            raise OSError(errno.ENOTCONN, "not connected")
        pinned = Pinned(local, writable=not write)
        try:
            length = pinned.length  # MaxReadWriteSize limits an upper-layer request, not the RNIC
            try:
                pieces = split_descriptors(descs, offset, length)
            except ValueError as e:
                raise OSError(errno.EINVAL, str(e)) from None
            pos = 0
            for d, start, count in pieces:
                va = d.offset + start
                psn = self._next_psn(1)
                try:
                    self.remote.access(d.token, va, pinned.address + pos, count, write)
                except AccessError as e:
                    self._log_rdma(write, d.token, va, count, psn, None, error=True)
                    with self.engine.lock:
                        self._drop(DISC_ACCESS, f"remote access error: {e.strerror}", errno.ECONNABORTED)
                    raise
                except OSError as e:
                    with self.engine.lock:
                        self._lost(f"RDMA {'WRITE' if write else 'READ'} failed: {e.strerror}", errno.ECONNRESET)
                    raise OSError(errno.ECONNRESET, f"peer unreachable: {e.strerror}") from None
                except (ValueError, BufferError):  # the connection was torn down under us
                    raise OSError(self.error or errno.ECONNRESET, self.reason or "connection lost") from None
                if self.rec is not None:
                    data = ctypes.string_at(pinned.address + pos, min(count, roce.IB_MTU)) if roce.rdma_pcap_mode() != "none" else b""
                    full = ctypes.string_at(pinned.address + pos, count) if roce.rdma_pcap_mode() == "full" else None
                    self._log_rdma(write, d.token, va, count, psn, full if full is not None else data)
                pos += count
        finally:
            pinned.release()

    def _log_rdma(self, write: bool, token: int, va: int, count: int, psn: int, data: bytes | None,
                  error: bool = False) -> None:
        if self.rec is None:
            return
        me, peer = self.local, self.peer
        ext = roce.reth(va, token, count)
        items: list[tuple[tuple, tuple, list]] = []
        if write:
            if data is not None and len(data) > roce.IB_MTU:
                chunks = [data[i:i + roce.IB_MTU] for i in range(0, len(data), roce.IB_MTU)]
                for i, ch in enumerate(chunks):
                    op = roce.RDMA_WRITE_FIRST if i == 0 else roce.RDMA_WRITE_LAST if i == len(chunks) - 1 else roce.RDMA_WRITE_MIDDLE
                    items.append((me, peer, roce.ib_packet(op, self.peer_qpn, psn + i, ext if i == 0 else b"", ch,
                                                           ack_req=i == len(chunks) - 1)))
                self.psn = (psn + len(chunks)) & 0xFFFFFF
            else:
                items.append((me, peer, roce.ib_packet(roce.RDMA_WRITE_ONLY, self.peer_qpn, psn, ext, data or b"",
                                                       ack_req=True)))
            if error:
                items.append((peer, me, roce.ib_packet(roce.ACKNOWLEDGE, self.qpn, psn,
                                                       roce.aeth(roce.AETH_NAK_REMOTE_ACCESS, 0), b"")))
        else:
            n = 1 if data is None or len(data) <= roce.IB_MTU else (len(data) + roce.IB_MTU - 1) // roce.IB_MTU
            items.append((me, peer, roce.ib_packet(roce.RDMA_READ_REQUEST, self.peer_qpn, psn, ext, b"", ack_req=True)))
            if error:
                items.append((peer, me, roce.ib_packet(roce.ACKNOWLEDGE, self.qpn, psn,
                                                       roce.aeth(roce.AETH_NAK_REMOTE_ACCESS, 0), b"")))
            elif n == 1:
                items.append((peer, me, roce.ib_packet(roce.READ_RESPONSE_ONLY, self.qpn, psn, roce.aeth(0, 0), data or b"")))
            else:
                assert data is not None
                for i in range(n):
                    ch = data[i * roce.IB_MTU:(i + 1) * roce.IB_MTU]
                    op = roce.READ_RESPONSE_FIRST if i == 0 else roce.READ_RESPONSE_LAST if i == n - 1 else roce.READ_RESPONSE_MIDDLE
                    items.append((peer, me, roce.ib_packet(op, self.qpn, psn + i, roce.aeth(0, 0) if i in (0, n - 1) else b"", ch)))
                self.psn = (psn + n) & 0xFFFFFF
        self._record(items)


def _fds(anc: list) -> list[int]:
    fds: list[int] = []
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            a = array.array("i")
            a.frombytes(data[: len(data) - len(data) % a.itemsize])
            fds.extend(a)
    return fds


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
