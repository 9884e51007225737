"""The transport interface the SMB layer is written against.

Why so small: MS-SMB2 §2.1 says SMB2 messages are the same on every transport; only the framing
differs (Direct TCP and QUIC: 4-byte header with a 24-bit length; NetBIOS: 17-bit length plus the
session request; SMB Direct: no header, credits and fragments of its own).  So a transport is a
bidirectional channel of whole PDUs with limits and timeouts, and nothing else.
"""

from __future__ import annotations


class TransportError(Exception):
    """The channel failed (reset, protocol violation at the framing layer)."""


class TransportClosed(TransportError):
    """The peer closed the channel cleanly."""


class FrameTooLarge(TransportError):
    """A frame announced more bytes than the receiver accepts; nothing of it was buffered."""


class TransportUnavailable(TransportError):
    """The transport cannot be used here (e.g. no IPPROTO_QUIC socket implementation)."""


class Transport:
    """One connection.  ``name`` is "tcp", "nbt", "quic" or "smbdirect"; ``secure`` is True when the
    transport itself encrypts and authenticates (QUIC), which is what lets SMB skip its encryption
    with SMB2_ACCEPT_TRANSPORT_LEVEL_SECURITY.  ``max_recv`` is the largest PDU accepted; a larger
    one raises :class:`FrameTooLarge` before any of it is read.  ``max_send`` is the largest PDU the
    peer takes in one message where that is below what the framing allows (SMB Direct: the peer's
    MaxFragmentedSize, MS-SMBD §3.1.1.1); None where only the framing limits it."""

    name = "?"
    secure = False
    max_recv = 0xFFFFFF
    max_send: int | None = None
    peer: tuple = ()
    local: tuple = ()

    def send_pdu(self, pdu: bytes, *, invalidate_token: int | None = None) -> None:  # pragma: no cover - interface
        """Send one whole PDU.  ``invalidate_token``: send it as SEND with Invalidate of the peer's
        registration (MS-SMBD §3.1.4.1, SMB2_CHANNEL_RDMA_V1_INVALIDATE); only an RDMA transport
        can, every other one raises :class:`TransportUnavailable` and sends nothing."""
        raise NotImplementedError

    def recv_pdu(self, timeout: float | None = None) -> bytes:  # pragma: no cover - interface
        """The next whole PDU; raises TimeoutError, TransportClosed, FrameTooLarge, TransportError."""
        raise NotImplementedError

    def peer_gone(self) -> bool:
        """True when the peer has certainly ended the connection and nothing it sent is left to
        read: the next ``recv_pdu`` can only report the end.  Never blocks, never consumes input.
        False when unknown (a transport that cannot tell says so)."""
        return False

    def whole_pdu_waiting(self) -> bool:
        """True when the next PDU has arrived whole and is still unread, so that ``recv_pdu`` would
        return it without waiting for the peer.  Asked by another thread than the reader (the
        server's cross-connection order, harness/blocking/server.py): it only looks, never reads,
        never blocks.  False when unknown (a transport that cannot tell says so)."""
        return False

    def close(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    # RDMA hooks: only SMB Direct implements them (SMB2 READ/WRITE with channel RDMA_V1).
    supports_rdma = False

    def register_buffer(self, buffer, writable: bool):  # pragma: no cover - interface
        raise TransportUnavailable(f"{self.name} has no RDMA")

    def rdma_read(self, descriptors, length: int, into=None):  # pragma: no cover - interface
        raise TransportUnavailable(f"{self.name} has no RDMA")

    def rdma_write(self, descriptors, data: bytes | memoryview) -> None:  # pragma: no cover - interface
        raise TransportUnavailable(f"{self.name} has no RDMA")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Listener:
    """A bound, listening endpoint that yields :class:`Transport` objects."""

    address: tuple = ()

    def accept(self, timeout: float | None = None) -> Transport:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def fileno(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError
