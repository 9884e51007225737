"""SMB2 READ and WRITE through an RDMA channel (MS-SMB2 §3.2.4.6, §3.2.4.7, §3.2.5.12, §3.3.5.12,
§3.3.5.13; MS-SMBD §3.1.4.2-§3.1.4.6), for both ends, kept out of client.py and the server's READ/WRITE handlers.

Why a module of its own: the RDMA rules touch READ and WRITE on both sides, and nothing else; the
command handlers call in here at two points each and stay readable (and mergeable).

Theory of operation.  Data of a large READ or WRITE does not travel in the SMB2 message.  The
client registers its buffer with the SMB Direct connection (the peer may then RDMA WRITE into it
for a READ, RDMA READ from it for a WRITE) and puts the buffer descriptors (SMB_DIRECT_BUFFER_
DESCRIPTOR_V1: offset, token, length) in the request's channel info.  The server moves the data
with one-sided RDMA, then answers; for Channel RDMA_V1_INVALIDATE its answer is a SEND with
Invalidate naming the first descriptor's token, which revokes the client's registration as the
answer arrives.  The client deregisters (or finds the token already invalidated) before the data
goes to the application.

The code stays sans-IO: RDMA happens through an *RDMA port* the I/O adapter hands in, an object
with ``rdma_read(descriptors, length) -> bytes`` and ``rdma_write(descriptors, data)`` on the
server, ``register_buffer(buffer, writable)`` / ``deregister_buffer(descriptors)`` on the client
(harness/transport's SMB Direct transport is one).  No socket is ever seen here.

Rules (server, §3.3.5.12/§3.3.5.13; all failures STATUS_INVALID_PARAMETER unless noted):

1. Channel is defined on 3.x only (2.x ignores the field).  3.0 allows NONE and RDMA_V1; 3.0.2 and
   3.1.1 add RDMA_V1_INVALIDATE; RDMA_TRANSFORM (WRITE, 3.1.1) needs negotiated RDMA transforms,
   which this server declines (Connection.RDMATransformIds is always empty), so it fails too.
2. An RDMA channel on a connection that is not RDMA fails.
3. READ: Length, ReadChannelInfoOffset and ReadChannelInfoLength must not be 0; the descriptors
   must cover Length.  The response has DataLength 0, DataOffset at the Buffer field, and
   DataRemaining = the bytes RDMA-written; no data in the message.
4. WRITE: Length and DataOffset must be 0; RemainingBytes, WriteChannelInfoOffset/Length not 0;
   RemainingBytes <= MaxWriteSize; the first descriptor's Length not 0; the descriptors' Lengths
   must add up to at least RemainingBytes.  The data is RDMA READ from the client first.
5. A descriptor list that is not a whole number of 16-byte descriptors is malformed.
6. The NIC, not this code, checks token, access right and range: a descriptor outside what the
   peer registered terminates the connection (the RDMA-NIC behaviour), which here is
   :class:`~.server.Disconnect`; no memory outside a registered range is ever touched.

Rules (client, §3.2.4.6/§3.2.4.7/§3.2.5.12):

7. RDMA only when the transport offers it, the dialect is 3.x, the session neither signs nor
   encrypts (the payload would bypass both), no RDMA transform was negotiated (RDMA_TRANSFORM
   channels are not built), and the I/O is larger than the threshold.
8. Channel RDMA_V1_INVALIDATE on 3.0.2/3.1.1 (we process received invalidations), RDMA_V1 on 3.0.
9. READ response: DataRemaining must not exceed what was asked; the data is the first
   DataRemaining bytes of the registered buffer, taken only after deregistration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from . import messages as m
from .constants import Channel, Dialect, NtStatus
from .errors import Disconnect, Fail, SMBProtocolError

if TYPE_CHECKING:  # the client does not need the file system behind the server's pread
    from .vfs import Share

#: Client: READ/WRITE larger than this use an RDMA channel (ours, like Windows' 4 KiB..64 KiB
#: range: below it the register + RDMA + invalidate round costs more than inline data).
RDMA_THRESHOLD = 16 * 1024


class ServerRdmaPort(Protocol):
    """What the server's I/O adapter hands a connection for one-sided RDMA (the SMB Direct
    transport is one): the data of READ and WRITE with an RDMA channel moves through it."""

    def rdma_read(self, descriptors: list[m.BufferDescriptorV1], length: int,
                  into: bytearray | None = None) -> bytes | memoryview: ...

    def rdma_write(self, descriptors: list[m.BufferDescriptorV1], data: bytes | memoryview) -> None: ...


def _fail(message: str, status: int = NtStatus.INVALID_PARAMETER) -> Fail:
    return Fail(status, message)


def _allowed_channels(dialect: int) -> tuple[int, ...]:
    if dialect == Dialect.SMB_3_0:
        return (Channel.NONE, Channel.RDMA_V1)
    return (Channel.NONE, Channel.RDMA_V1, Channel.RDMA_V1_INVALIDATE)


def _descriptors(info: bytes, what: str) -> list[m.BufferDescriptorV1]:
    try:
        return m.BufferDescriptorV1.unpack_list(bytes(info))
    except SMBProtocolError as exc:
        raise _fail(f"{what}: {exc.message}") from exc


def _check_channel(conn, channel: int, what: str) -> bool:
    """Rules 1 and 2; True when the request uses an RDMA channel."""
    if conn.dialect < Dialect.SMB_3_0:
        return False  # Channel is reserved before 3.0
    if channel not in _allowed_channels(conn.dialect):
        raise _fail(f"{what} Channel 0x{channel:x} not valid on dialect 0x{conn.dialect:04x}")
    if channel == Channel.NONE:
        return False
    if getattr(conn, "rdma", None) is None:
        raise _fail(f"{what} with an RDMA channel on a connection that is not RDMA")
    return True


# ---------------------------------------------------------------------------------------------- server


def read_channel(conn, request: m.ReadRequest) -> list[m.BufferDescriptorV1] | None:
    """Validate a READ's channel (rules 1-3, 5): its descriptors, or None for inline data."""
    if not _check_channel(conn, request.channel, "READ"):
        max_inline = getattr(getattr(conn, "rdma", None), "max_send", 0)
        if max_inline and request.length + 0x50 > max_inline:
            # Over SMB Direct an inline response must fit the peer's MaxFragmentedSize (MS-SMBD
            # §3.1.4.2 would fail the send); refuse the request rather than drop the connection.
            raise _fail(f"inline READ of {request.length} bytes exceeds the SMB Direct message size {max_inline}")
        return None
    if not request.length or not request.channel_info:
        raise _fail("RDMA READ with Length or ReadChannelInfo 0")
    descriptors = _descriptors(request.channel_info, "READ channel info")
    if sum(d.length for d in descriptors) < request.length:
        raise _fail("READ buffer descriptors cover less than Length")
    return descriptors


def send_read_data(conn, request: m.ReadRequest, descriptors: list[m.BufferDescriptorV1],
                   data: bytes | memoryview) -> m.ReadResponse:
    """RDMA WRITE the data into the client's buffer; the READ response that goes with it (rule 3)."""
    if data:
        try:
            conn.rdma.rdma_write(descriptors, data)
        except Exception as exc:  # the NIC refused: the connection is gone (rule 6)
            raise Disconnect(f"RDMA WRITE for READ: {exc}") from exc
    _invalidate_with_reply(conn, request.channel, descriptors)
    return m.ReadResponse(data=b"", data_remaining=len(data))


def write_channel(conn, request: m.WriteRequest) -> tuple[list[m.BufferDescriptorV1] | None, int]:
    """Validate a WRITE's channel (rules 1, 2, 4, 5): (descriptors, RemainingBytes) or (None, 0)."""
    if request.channel == Channel.RDMA_TRANSFORM and conn.dialect == Dialect.SMB_3_1_1:
        raise _fail("WRITE Channel RDMA_TRANSFORM: no RDMA transform was negotiated")
    if not _check_channel(conn, request.channel, "WRITE"):
        return None, 0
    if not request.remaining_bytes or not request.channel_info:
        raise _fail("RDMA WRITE with RemainingBytes or WriteChannelInfo 0")
    if request.data or request.received_data_offset:
        raise _fail("RDMA WRITE with Length or DataOffset not 0")
    if request.remaining_bytes > conn.max_size:
        raise _fail("RDMA WRITE RemainingBytes above MaxWriteSize")
    descriptors = _descriptors(request.channel_info, "WRITE channel info")
    if descriptors[0].length == 0:
        raise _fail("RDMA WRITE: first buffer descriptor has Length 0")
    if sum(d.length for d in descriptors) < request.remaining_bytes:
        raise _fail("WRITE buffer descriptors cover less than RemainingBytes")
    return descriptors, request.remaining_bytes


def pull_write_data(conn, request: m.WriteRequest, descriptors: list[m.BufferDescriptorV1], length: int) -> bytes:
    """RDMA READ the WRITE's data from the client's buffer (rule 4)."""
    try:
        data = conn.rdma.rdma_read(descriptors, length, into=scratch(conn, length))
    except Exception as exc:  # the NIC refused: the connection is gone (rule 6)
        raise Disconnect(f"RDMA READ for WRITE: {exc}") from exc
    _invalidate_with_reply(conn, request.channel, descriptors)
    return data


def scratch(conn, length: int) -> bytearray:
    """The connection's staging buffer for RDMA data (file -> RDMA WRITE, RDMA READ -> file),
    reused: a fresh 1 MiB buffer per request costs more in page faults than the copy itself.
    Requests of one connection are handled one at a time, so one buffer per connection is enough."""
    buffer = conn.__dict__.get("_rdma_scratch")
    if buffer is None or len(buffer) < length:
        buffer = conn.__dict__["_rdma_scratch"] = bytearray(length)
    return buffer


def pread(conn, fs: Share, handle: object, length: int, offset: int) -> memoryview:
    """Read file data for an RDMA READ response into the staging buffer (a view of what was read)."""
    buffer = scratch(conn, length)
    count = fs.readinto(handle, memoryview(buffer)[:length], offset)
    return memoryview(buffer)[:count]


def _invalidate_with_reply(conn, channel: int, descriptors: list[m.BufferDescriptorV1]) -> None:
    """RDMA_V1_INVALIDATE: the reply goes out as SEND with Invalidate of the first token
    (§3.3.5.12 last paragraph, MS-SMBD §3.1.4.2).  One token per SEND: the adapter takes it."""
    if channel == Channel.RDMA_V1_INVALIDATE and descriptors:
        conn.invalidate_tokens.append(descriptors[0].token)


def take_invalidate(conn) -> int | None:
    """For the adapter: the token to invalidate with the next reply PDU (the first one asked for;
    a compound with several is answered by one SEND, the client deregisters the rest itself)."""
    tokens = getattr(conn, "invalidate_tokens", None)
    if not tokens:
        return None
    token = tokens[0]
    tokens.clear()
    return token


# ---------------------------------------------------------------------------------------------- client


def client_channel(dialect: int) -> int:
    """Rule 8."""
    return Channel.RDMA_V1 if dialect == Dialect.SMB_3_0 else Channel.RDMA_V1_INVALIDATE


def client_uses_rdma(conn, session, tree_id: int, transport, length: int, threshold: int = RDMA_THRESHOLD) -> bool:
    """Rule 7: whether a READ/WRITE of ``length`` bytes goes through RDMA."""
    if not getattr(transport, "supports_rdma", False) or conn.dialect < Dialect.SMB_3_0:
        return False
    if length <= threshold:
        return False
    if session is None or session.signing_required or session.encrypt or session.trees.get(tree_id, False):
        return False
    # Negotiated RDMA transforms would demand Channel RDMA_TRANSFORM, which this client does not
    # build: it keeps such I/O inline rather than send an RDMA_V1 the server must refuse.
    return not getattr(conn, "rdma_transform_ids", ())


def read_request(conn, file_id: bytes, offset: int, length: int,
                 descriptors: list[m.BufferDescriptorV1]) -> m.ReadRequest:
    """§3.2.4.6: Channel, descriptors in the Buffer, RemainingBytes = Length (§2.2.19)."""
    return m.ReadRequest(file_id=file_id, length=length, offset=offset, channel=client_channel(conn.dialect),
                         remaining_bytes=length, channel_info=m.BufferDescriptorV1.pack_list(descriptors))


def write_request(conn, file_id: bytes, offset: int, length: int,
                  descriptors: list[m.BufferDescriptorV1]) -> m.WriteRequest:
    """§3.2.4.7: Length and DataOffset 0, RemainingBytes = bytes to write, descriptors in the Buffer."""
    return m.WriteRequest(file_id=file_id, offset=offset, data=b"", channel=client_channel(conn.dialect),
                          remaining_bytes=length, channel_info=m.BufferDescriptorV1.pack_list(descriptors))


def read_response_length(response: m.ReadResponse, asked: int) -> int:
    """Rule 9: how many bytes of the registered buffer hold data."""
    if response.flags:
        raise SMBProtocolError(NtStatus.INVALID_NETWORK_RESPONSE, "READ response with an RDMA transform, none negotiated")
    if response.data:
        raise SMBProtocolError(NtStatus.INVALID_NETWORK_RESPONSE, "RDMA READ response carries inline data")
    if response.data_remaining > asked:
        raise SMBProtocolError(NtStatus.INVALID_NETWORK_RESPONSE,
                               f"DataRemaining {response.data_remaining} exceeds the {asked} bytes asked for")
    return response.data_remaining


__all__ = ["RDMA_THRESHOLD", "read_channel", "send_read_data", "write_channel", "pull_write_data", "take_invalidate",
           "client_channel", "client_uses_rdma", "read_request", "write_request", "read_response_length"]
