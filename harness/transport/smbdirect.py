"""SMB over SMB Direct (MS-SMB2 §2.1, MS-SMBD): a thin adapter over wrappers/smbdirect's
IPPROTO_SMBDIRECT socket.

SMB2 messages travel as whole SMBD upper-layer messages, with no 4-byte header (MS-SMBD
§2.2.3); the socket fragments and reassembles, runs credits and keepalives.  The RDMA hooks of
:class:`~.base.Transport` map onto the socket's register / rdma_read / rdma_write, and
``send_pdu(pdu, invalidate_token=...)`` is SEND with Invalidate (SMB2_CHANNEL_RDMA_V1_INVALIDATE).
``last_invalidated_token`` is the token the peer invalidated with the PDU just received.

Port 445 by default (RoCE/InfiniBand keep the SMB port; iWARP would map to 5445).  Needs the
socket wrapper (SOCKET_WRAPPER_DIR): there is no kernel IPPROTO_SMBDIRECT yet.
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any

from .base import Listener, Transport, TransportClosed, TransportError, TransportUnavailable

DEFAULT_PORT = 445
# When SMB2 READ/WRITE use an RDMA channel is the SMB layer's decision: harness/smb/rdma_channel.py.


def _sd() -> Any:
    try:
        from wrappers import smbdirect
    except ImportError as exc:  # pragma: no cover - ships with wirecheck
        raise TransportUnavailable("SMB Direct needs wrappers/smbdirect") from exc
    return smbdirect


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _new_socket(family: int) -> Any:
    sd = _sd()
    s = socket.socket(family, socket.SOCK_STREAM, sd.IPPROTO_SMBDIRECT)
    if not isinstance(s, sd.SmbDirectSocket) and s.proto != sd.IPPROTO_SMBDIRECT:  # pragma: no cover
        s.close()
        raise TransportUnavailable("no IPPROTO_SMBDIRECT socket here (is the socket wrapper active?)")
    return s


class SmbDirectTransport(Transport):
    name = "smbdirect"
    secure = False
    supports_rdma = True

    def __init__(self, sock: Any, io_timeout: float = 60.0) -> None:
        self.sock = sock
        self.io_timeout = io_timeout
        self.last_invalidated_token: int | None = None
        sd = _sd()
        try:
            self.peer = sock.getpeername()
            self.local = sock.getsockname()
            self.max_recv = sock.getsockopt(sd.SOL_SMBDIRECT, sd.SMBDIRECT_MAX_FRAGMENTED_RECV_SIZE)
            self.max_send = sock.getsockopt(sd.SOL_SMBDIRECT, sd.SMBDIRECT_MAX_FRAGMENTED_SEND_SIZE)
            self.max_read_write = sock.getsockopt(sd.SOL_SMBDIRECT, sd.SMBDIRECT_MAX_READ_WRITE_SIZE)
        except OSError as exc:
            raise TransportError(f"SMB Direct socket: {exc}") from exc

    # -- PDUs --------------------------------------------------------------------------------------
    def send_pdu(self, pdu: bytes, invalidate_token: int | None = None) -> None:
        sd = _sd()
        anc = []
        if invalidate_token is not None:
            anc.append((sd.SOL_SMBDIRECT, sd.SMBDIRECT_CMSG_REMOTE_INVALIDATE, struct.pack("<I", invalidate_token)))
        self.sock.settimeout(self.io_timeout)
        try:
            self.sock.sendmsg([pdu], anc)
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE:
                raise TransportError(f"PDU of {len(pdu)} bytes exceeds the peer's MaxFragmentedSize") from exc
            if exc.errno in (errno.EPIPE, errno.ECONNRESET):
                raise TransportClosed(str(exc)) from exc
            raise TransportError(f"SMB Direct send: {exc}") from exc

    def recv_pdu(self, timeout: float | None = None) -> bytes:
        try:
            data, token = self.sock.recv_message(timeout)
        except OSError as exc:
            if exc.errno == errno.ETIMEDOUT and exc.strerror == "timed out":
                raise TimeoutError(str(exc)) from exc  # no PDU yet; the connection is fine
            raise TransportError(f"SMB Direct: {exc}") from exc
        self.last_invalidated_token = token
        if not data:
            if token is not None:  # an invalidate without data: nothing for SMB
                return self.recv_pdu(timeout)
            raise TransportClosed("peer closed the SMB Direct connection")
        return data

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def fileno(self) -> int:
        return self.sock.fileno()

    # -- RDMA hooks --------------------------------------------------------------------------------
    def register_buffer(self, buffer, writable: bool):
        """Register ``buffer`` for the peer: writable=True -> the peer may RDMA WRITE into it (our
        SMB2 READ), else RDMA READ from it (our SMB2 WRITE).  Returns SMB2 BufferDescriptorV1s."""
        from harness.smb.messages.io import BufferDescriptorV1

        sd = _sd()
        access = sd.RDMA_REMOTE_WRITE if writable else sd.RDMA_REMOTE_READ
        try:
            descs = self.sock.register(buffer, access)
        except OSError as exc:
            raise TransportError(f"register: {exc}") from exc
        return [BufferDescriptorV1(d.offset, d.token, d.length) for d in descs]

    def deregister_buffer(self, descriptors) -> None:
        for d in descriptors:
            try:
                self.sock.deregister(d.token)
            except OSError as exc:
                if exc.errno != errno.ENOENT:  # already invalidated by the peer's SEND with Invalidate
                    raise TransportError(f"deregister: {exc}") from exc

    def _descs(self, descriptors) -> list:
        sd = _sd()
        return [sd.BufferDescriptor(d.offset, d.token, d.length) for d in descriptors]

    def rdma_read(self, descriptors, length: int, into=None):
        """RDMA READ ``length`` bytes: new bytes, or a view of ``into`` (a reusable buffer) when given."""
        try:
            if into is not None:
                view = memoryview(into)[:length]
                self.sock.rdma_read(view, self._descs(descriptors))
                return view
            return self.sock.rdma_read(length, self._descs(descriptors))
        except OSError as exc:
            raise TransportError(f"RDMA READ: {exc}") from exc

    def rdma_write(self, descriptors, data: bytes | memoryview) -> None:
        try:
            self.sock.rdma_write(data, self._descs(descriptors))
        except OSError as exc:
            raise TransportError(f"RDMA WRITE: {exc}") from exc


class SmbDirectListener(Listener):
    def __init__(self, host: str, port: int = DEFAULT_PORT, io_timeout: float = 60.0, backlog: int = 64) -> None:
        self.sock = _new_socket(_family(host))
        try:
            self.sock.bind((host, port))
            self.sock.listen(backlog)
        except OSError:
            self.sock.close()
            raise
        self.address = self.sock.getsockname()
        self.io_timeout = io_timeout

    def accept(self, timeout: float | None = None) -> SmbDirectTransport:
        self.sock.settimeout(timeout)
        conn, _addr = self.sock.accept()
        return SmbDirectTransport(conn, self.io_timeout)

    def close(self) -> None:
        self.sock.close()

    def fileno(self) -> int:
        return self.sock.fileno()


def connect_smbdirect(host: str, port: int | None = None, timeout: float = 30.0, **_options) -> SmbDirectTransport:
    s = _new_socket(_family(host))
    s.settimeout(timeout)
    try:
        s.connect((host, port or DEFAULT_PORT))
    except OSError as exc:
        s.close()
        raise TransportError(f"SMB Direct connect to {host}:{port or DEFAULT_PORT}: {exc}") from exc
    return SmbDirectTransport(s, io_timeout=timeout)


def listen_smbdirect(host: str, port: int | None = None, **options) -> SmbDirectListener:
    return SmbDirectListener(host, DEFAULT_PORT if port is None else port, **options)
