"""RDMA channels of SMB2 READ/WRITE (harness/smb/rdma_channel.py), sans-IO: the client and server
models PDU by PDU, the RDMA done by an in-memory "NIC" that checks tokens and ranges like the real
one (the wire version is tests/smbdirect/test_smb_rdma.py).  Each test names its MS-SMB2 rule."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.smb import messages as m
from harness.smb import rdma_channel
from harness.smb.client import ClientConnection, SMBError
from harness.smb.constants import Channel, Command, Dialect, NegotiateContextType, NtStatus
from harness.smb.errors import SMBProtocolError
from harness.smb.header import HEADER_SIZE, Header
from harness.smb.server import Disconnect

from .test_smb_state_machines import Pair, _negotiate_pdu, make_state

PREAUTH = m.PreauthIntegrityCapabilities([1], b"s" * 32)


class FakeNic:
    """The client's registered memory as the server's RDMA port sees it: token -> (buffer, access).
    An access with an unknown token, the wrong right or outside the range raises, as an RNIC's
    remote access error does; nothing outside a registration is ever touched."""

    max_send = 1 << 20
    max_read_write = 8 << 20
    supports_rdma = True

    def __init__(self) -> None:
        self.regions: dict[int, tuple[bytearray, bool]] = {}
        self.next_token = 0x1000

    def register_buffer(self, buffer, writable: bool) -> list[m.BufferDescriptorV1]:
        self.next_token += 1
        self.regions[self.next_token] = (buffer, writable)
        return [m.BufferDescriptorV1(0x7F0000000000, self.next_token, len(buffer))]

    def _region(self, d: m.BufferDescriptorV1, count: int, write: bool):
        if d.token not in self.regions:
            raise OSError(121, f"remote access error: token {d.token:#x}")
        buffer, writable = self.regions[d.token]
        start = d.offset - 0x7F0000000000
        if writable != write or start < 0 or start + count > len(buffer) or count > d.length:
            raise OSError(121, "remote access error: range or right")
        return buffer, start

    def rdma_write(self, descriptors, data: bytes) -> None:
        pos = 0
        for d in descriptors:
            count = min(d.length, len(data) - pos)
            buffer, start = self._region(d, count, True)
            buffer[start:start + count] = data[pos:pos + count]
            pos += count
            if pos == len(data):
                return
        raise OSError(22, "data longer than the descriptors")

    def rdma_read(self, descriptors, length: int, into=None) -> bytes:
        out = bytearray()
        for d in descriptors:
            count = min(d.length, length - len(out))
            buffer, start = self._region(d, count, False)
            out += buffer[start:start + count]
            if len(out) == length:
                return bytes(out)
        raise OSError(22, "descriptors shorter than the length")


class RdmaPair(Pair):
    """Client and server over "smbdirect" with the fake NIC as the server's RDMA port."""

    def __init__(self, state, dialects=None, rdma=True, **client) -> None:
        super().__init__(state, "smbdirect", dialects=dialects, require_signing=False, **client)
        self.nic = FakeNic()
        if rdma:
            self.server.rdma = self.nic

    def open(self, name: str = "f.bin") -> bytes:
        self.negotiate()
        self.login()
        self.tree_id = self.tree()
        created = self.create(self.tree_id, name)
        assert created.header.status == NtStatus.SUCCESS
        return created.body.file_id

    def send(self, command, body, payload: int):
        raw, _ = self.client.build(command, body, self.session, self.tree_id, payload)
        return self.roundtrip(self.client.seal([raw], self.session, self.tree_id))[0]


@pytest.fixture
def state(tmp_path):
    return make_state(tmp_path)


def test_negotiate_over_smbdirect_is_3x_multicredit_and_capped_by_max_read_write(state):
    """§2.1: SMB Direct carries 3.x only; §3.3.5.4: multi-credit on RDMA; MaxRead/WriteSize are
    capped by MS-SMBD's MaxReadWriteSize."""
    pair = RdmaPair(state)
    pair.nic.max_read_write = 2 << 20
    response = pair.negotiate()
    assert pair.server.supports_multicredit and pair.client.multicredit
    assert response.max_read_size == response.max_write_size == 2 << 20
    assert all(d >= Dialect.SMB_3_0 for d in pair.client.dialects)
    old = RdmaPair(state, dialects=(Dialect.SMB_2_1,))
    with pytest.raises(SMBError, match="NOT_SUPPORTED"):
        old.negotiate()


@pytest.mark.parametrize("channel, token_expected", [(Channel.RDMA_V1, False), (Channel.RDMA_V1_INVALIDATE, True)])
def test_rdma_read_response_fields_and_invalidate(state, tmp_path, channel, token_expected):
    """§3.3.5.12: the data goes by RDMA WRITE into the client's buffer, DataLength 0, DataOffset at
    the Buffer field (0x50), DataRemaining = bytes transferred; RDMA_V1_INVALIDATE answers with the
    first descriptor's token for SEND with Invalidate, RDMA_V1 does not."""
    pair = RdmaPair(state)
    file_id = pair.open()
    data = os.urandom(100_000)
    (tmp_path / "share" / "f.bin").write_bytes(data)
    dest = bytearray(131072)
    descs = pair.nic.register_buffer(dest, writable=True)
    body = rdma_channel.read_request(pair.client, file_id, 0, len(dest), descs)
    body.channel = channel
    raw, _ = pair.client.build(Command.READ, body, pair.session, pair.tree_id, len(dest))
    (reply,) = pair.server.receive_pdu(raw)
    data_offset, data_length, remaining = struct.unpack_from("<BxII", reply, HEADER_SIZE + 2)
    assert (data_offset, data_length, remaining) == (0x50, 0, len(data))
    assert bytes(dest[:len(data)]) == data and not any(dest[len(data):])
    token = rdma_channel.take_invalidate(pair.server)
    assert token == (descs[0].token if token_expected else None)
    assert rdma_channel.take_invalidate(pair.server) is None
    response = pair.client.receive(reply, pair.sessions)[0]
    assert rdma_channel.read_response_length(response.body, len(dest)) == len(data)


def test_rdma_write_pulls_the_data(state, tmp_path):
    """§3.3.5.13: Length and DataOffset 0, RemainingBytes = size; the server RDMA READs the data."""
    pair = RdmaPair(state)
    file_id = pair.open()
    data = os.urandom(300_000)
    descs = pair.nic.register_buffer(bytearray(data), writable=False)
    body = rdma_channel.write_request(pair.client, file_id, 4096, len(data), descs)
    raw = body.pack()
    length, data_offset = struct.unpack_from("<IH", raw, 4)[0], struct.unpack_from("<H", raw, 2)[0]
    assert (length, data_offset) == (0, 0) and body.remaining_bytes == len(data)
    response = pair.send(Command.WRITE, body, len(data))
    assert response.header.status == NtStatus.SUCCESS and response.body.count == len(data)
    assert (tmp_path / "share" / "f.bin").read_bytes() == bytes(4096) + data
    assert rdma_channel.take_invalidate(pair.server) == descs[0].token


def _desc(nic, size=65536, writable=True):
    return nic.register_buffer(bytearray(size), writable)


def _bad_reads(nic, file_id):
    d = _desc(nic)
    info = m.BufferDescriptorV1.pack_list(d)
    return {
        "transform channel": m.ReadRequest(file_id=file_id, length=4096, channel=Channel.RDMA_TRANSFORM,
                                           channel_info=info),
        "unknown channel": m.ReadRequest(file_id=file_id, length=4096, channel=7, channel_info=info),
        "length 0": m.ReadRequest(file_id=file_id, length=0, channel=Channel.RDMA_V1, channel_info=info),
        "no channel info": m.ReadRequest(file_id=file_id, length=4096, channel=Channel.RDMA_V1),
        "17-byte channel info": m.ReadRequest(file_id=file_id, length=4096, channel=Channel.RDMA_V1,
                                              channel_info=info + b"x"),
        "descriptors too short": m.ReadRequest(file_id=file_id, length=65537, channel=Channel.RDMA_V1,
                                               channel_info=info),
    }


def _bad_writes(nic, file_id):
    d = _desc(nic, writable=False)
    info = m.BufferDescriptorV1.pack_list(d)
    zero_first = m.BufferDescriptorV1.pack_list([m.BufferDescriptorV1(d[0].offset, d[0].token, 0), d[0]])
    return {
        "inline data with RDMA": m.WriteRequest(file_id=file_id, data=b"x" * 10, channel=Channel.RDMA_V1,
                                                remaining_bytes=10, channel_info=info),
        "RemainingBytes 0": m.WriteRequest(file_id=file_id, channel=Channel.RDMA_V1, channel_info=info),
        "no channel info": m.WriteRequest(file_id=file_id, channel=Channel.RDMA_V1, remaining_bytes=10),
        "first descriptor length 0": m.WriteRequest(file_id=file_id, channel=Channel.RDMA_V1, remaining_bytes=10,
                                                    channel_info=zero_first),
        "descriptors too short": m.WriteRequest(file_id=file_id, channel=Channel.RDMA_V1, remaining_bytes=65537,
                                                channel_info=info),
        "above MaxWriteSize": m.WriteRequest(file_id=file_id, channel=Channel.RDMA_V1, remaining_bytes=9 << 20,
                                             channel_info=m.BufferDescriptorV1.pack_list(
                                                 [m.BufferDescriptorV1(d[0].offset, d[0].token, 9 << 20)])),
        "transform channel (none negotiated)": m.WriteRequest(file_id=file_id, channel=Channel.RDMA_TRANSFORM,
                                                              remaining_bytes=10, channel_info=info),
    }


WHY = {"transform channel": "Channel 0x3", "unknown channel": "Channel 0x7", "length 0": "Length or ReadChannelInfo 0",
       "no channel info": "ChannelInfo 0", "17-byte channel info": "multiple of 16",
       "descriptors too short": "cover less", "inline data with RDMA": "Length or DataOffset not 0",
       "RemainingBytes 0": "RemainingBytes or WriteChannelInfo 0", "first descriptor length 0": "Length 0",
       "above MaxWriteSize": "above MaxWriteSize", "transform channel (none negotiated)": "RDMA_TRANSFORM"}


@pytest.fixture
def traced(tmp_path):
    trace: list[str] = []
    return make_state(tmp_path, trace=trace.append), trace


@pytest.mark.parametrize("case", list(_bad_reads(FakeNic(), bytes(16))))
def test_bad_rdma_read_is_invalid_parameter(traced, case):
    """§3.3.5.12: channel not valid for the dialect, Length/ReadChannelInfo 0 -> INVALID_PARAMETER;
    ours: a descriptor list that is not whole descriptors or covers less than Length, too."""
    state, trace = traced
    pair = RdmaPair(state)
    file_id = pair.open()
    body = _bad_reads(pair.nic, file_id)[case]
    response = pair.send(Command.READ, body, body.length)
    assert response.header.status == NtStatus.INVALID_PARAMETER
    assert WHY[case] in trace[-1]


@pytest.mark.parametrize("case", list(_bad_writes(FakeNic(), bytes(16))))
def test_bad_rdma_write_is_invalid_parameter(traced, tmp_path, case):
    """§3.3.5.13: Length/DataOffset not 0, RemainingBytes/WriteChannelInfo 0, RemainingBytes above
    MaxWriteSize, first descriptor Length 0, descriptors short of RemainingBytes, RDMA_TRANSFORM
    without negotiated transforms -> INVALID_PARAMETER; nothing is written."""
    state, trace = traced
    pair = RdmaPair(state)
    file_id = pair.open()
    body = _bad_writes(pair.nic, file_id)[case]
    response = pair.send(Command.WRITE, body, min(max(body.remaining_bytes, len(body.data)), 65536))
    assert response.header.status == NtStatus.INVALID_PARAMETER
    assert WHY[case] in trace[-1]
    assert (tmp_path / "share" / "f.bin").read_bytes() == b""


def test_rdma_write_with_data_offset_is_invalid_parameter(state, tmp_path):
    """§3.3.5.13: an RDMA WRITE whose DataOffset is not 0 fails even with Length 0."""
    pair = RdmaPair(state)
    file_id = pair.open()
    d = _desc(pair.nic, writable=False)
    body = rdma_channel.write_request(pair.client, file_id, 0, 100, d)
    raw, _ = pair.client.build(Command.WRITE, body, pair.session, pair.tree_id, 100)
    raw = raw[:HEADER_SIZE + 2] + struct.pack("<H", 0x70) + raw[HEADER_SIZE + 4:]
    (reply,) = pair.server.receive_pdu(raw)
    assert Header.unpack(reply).status == NtStatus.INVALID_PARAMETER


def test_invalidate_channel_not_valid_on_30(state, tmp_path):
    """§3.3.5.12: on 3.0 only RDMA_V1; RDMA_V1_INVALIDATE is INVALID_PARAMETER (and the client
    picks RDMA_V1 there)."""
    pair = RdmaPair(state, dialects=(Dialect.SMB_3_0,))
    file_id = pair.open()
    (tmp_path / "share" / "f.bin").write_bytes(b"z" * 4096)
    assert rdma_channel.client_channel(pair.client.dialect) == Channel.RDMA_V1
    d = _desc(pair.nic)
    body = m.ReadRequest(file_id=file_id, length=4096, channel=Channel.RDMA_V1_INVALIDATE,
                         channel_info=m.BufferDescriptorV1.pack_list(d))
    assert pair.send(Command.READ, body, 4096).header.status == NtStatus.INVALID_PARAMETER
    body.channel = Channel.RDMA_V1
    assert pair.send(Command.READ, body, 4096).header.status == NtStatus.SUCCESS
    assert rdma_channel.take_invalidate(pair.server) is None


def test_rdma_channel_on_a_connection_without_rdma(state):
    """§3.3.5.12/13: an RDMA channel on a connection that is not RDMA -> INVALID_PARAMETER."""
    pair = RdmaPair(state, rdma=False)
    file_id = pair.open()
    d = _desc(pair.nic)
    body = m.ReadRequest(file_id=file_id, length=4096, channel=Channel.RDMA_V1,
                         channel_info=m.BufferDescriptorV1.pack_list(d))
    assert pair.send(Command.READ, body, 4096).header.status == NtStatus.INVALID_PARAMETER


@pytest.mark.parametrize("what", ["wrong token", "outside the range", "read-only buffer"])
def test_rdma_access_error_drops_the_connection(state, tmp_path, what):
    """A descriptor the NIC refuses terminates the connection (Disconnect), as an RDMA NIC's remote
    access error does; the client's memory outside the registration is untouched."""
    (tmp_path / "share" / "f.bin").write_bytes(os.urandom(8192))
    pair = RdmaPair(state)
    file_id = pair.open()
    memory = bytearray(3 * 4096)
    window = memoryview(memory)[4096:8192]
    (d,) = pair.nic.register_buffer(window, writable=what != "read-only buffer")
    if what == "wrong token":
        d = m.BufferDescriptorV1(d.offset, d.token ^ 0x55, d.length)
    elif what == "outside the range":
        d = m.BufferDescriptorV1(d.offset + 4096, d.token, d.length)
    body = rdma_channel.read_request(pair.client, file_id, 0, 4096, [d])
    raw, _ = pair.client.build(Command.READ, body, pair.session, pair.tree_id, 4096)
    with pytest.raises(Disconnect, match="RDMA WRITE"):
        pair.server.receive_pdu(raw)
    assert not any(memory)


def test_client_rdma_decision():
    """§3.2.4.6/7: RDMA only over an RDMA transport, on 3.x, above the threshold, with a session
    that neither signs nor encrypts, and without negotiated RDMA transforms."""
    from harness.smb.client import ClientSession

    class T:
        supports_rdma = True

    conn = ClientConnection("smbdirect")
    conn.dialect = Dialect.SMB_3_1_1
    plain = ClientSession()
    limit = rdma_channel.RDMA_THRESHOLD
    assert not rdma_channel.client_uses_rdma(conn, plain, 1, T(), limit)
    assert rdma_channel.client_uses_rdma(conn, plain, 1, T(), limit + 1)
    assert not rdma_channel.client_uses_rdma(conn, ClientSession(signing_required=True), 1, T(), 1 << 20)
    assert not rdma_channel.client_uses_rdma(conn, ClientSession(encrypt=True), 1, T(), 1 << 20)
    assert not rdma_channel.client_uses_rdma(conn, ClientSession(trees={1: True}), 1, T(), 1 << 20)
    assert not rdma_channel.client_uses_rdma(conn, plain, 1, object(), 1 << 20)
    conn.rdma_transform_ids = (1,)
    assert not rdma_channel.client_uses_rdma(conn, plain, 1, T(), 1 << 20)


def test_client_checks_rdma_read_response():
    """§3.2.5.12: DataRemaining above what was asked, inline data or a transform flag nobody
    negotiated are INVALID_NETWORK_RESPONSE."""
    assert rdma_channel.read_response_length(m.ReadResponse(data=b"", data_remaining=10), 10) == 10
    for bad in (m.ReadResponse(data=b"", data_remaining=11), m.ReadResponse(data=b"x", data_remaining=1),
                m.ReadResponse(data=b"", data_remaining=1, flags=1)):
        with pytest.raises(SMBProtocolError) as info:
            rdma_channel.read_response_length(bad, 10)
        assert info.value.status == NtStatus.INVALID_NETWORK_RESPONSE


# ---------------------------------------------------------------------------------------------- RDMA_TRANSFORM


def test_server_declines_rdma_transforms(state):
    """§3.3.5.4: the server supports the context but no transform: Connection.RDMATransformIds is
    empty, answered as TransformCount 1 with SMB2_RDMA_TRANSFORM_NONE."""
    from harness.smb.server import ServerConnection

    server = ServerConnection(state, "smbdirect")
    (reply,) = server.receive_pdu(_negotiate_pdu([PREAUTH, m.RdmaTransformCapabilities([1, 2])]))
    assert Header.unpack(reply).status == 0
    body = m.decode_body(Command.NEGOTIATE, True, reply[64:])
    (ctx,) = [c for c in body.contexts if c.context_type == NegotiateContextType.RDMA_TRANSFORM_CAPABILITIES]
    assert ctx.transform_ids == [0] and server.rdma_transform_ids == []
    server = ServerConnection(state, "smbdirect")
    (reply,) = server.receive_pdu(_negotiate_pdu([PREAUTH, m.RdmaTransformCapabilities([])]))
    assert Header.unpack(reply).status == NtStatus.INVALID_PARAMETER  # TransformCount 0


def test_client_offers_rdma_transforms_and_accepts_the_decline(state):
    """§3.2.4.2.2.2/§3.2.5.2: the offered context goes out, NONE back means no transforms, and the
    client keeps using RDMA_V1(_INVALIDATE)."""
    pair = RdmaPair(state)
    pair.client.rdma_transforms_offered = (1, 2)
    pair.negotiate()
    assert NegotiateContextType.RDMA_TRANSFORM_CAPABILITIES in pair.client._offered
    assert pair.client.rdma_transform_ids == ()


def test_client_rejects_rdma_transforms_not_offered(state):
    """§3.2.5.2: a transform id the client did not offer (or an unrequested context) is an error."""
    from harness.smb.server import ServerConnection

    client = ClientConnection("smbdirect", "srv")
    client.rdma_transforms_offered = (2,)
    request = client.negotiate_request()
    server = ServerConnection(state, "smbdirect")
    (reply,) = server.receive_pdu(request)
    # Rewrite the server's NONE answer into ENCRYPTION (1): not offered.
    body = m.decode_body(Command.NEGOTIATE, True, reply[64:])
    for c in body.contexts:
        if c.context_type == NegotiateContextType.RDMA_TRANSFORM_CAPABILITIES:
            c.transform_ids = [1]
    forged = reply[:64] + body.pack()
    with pytest.raises(SMBProtocolError, match="RDMA transforms"):
        client.receive_negotiate(forged)


# ---------------------------------------------------------------------------------------------- codec properties

DESCRIPTORS = st.lists(st.builds(m.BufferDescriptorV1, st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1),
                                 st.integers(0, 2**32 - 1)), min_size=1, max_size=8)


class _Conn:
    dialect = Dialect.SMB_3_1_1


@given(DESCRIPTORS, st.integers(1, 2**32 - 1), st.integers(0, 2**63 - 1))
def test_rdma_requests_round_trip(descriptors, length, offset):
    """The RDMA READ/WRITE requests the client builds decode to the same channel, descriptors and
    lengths, with the WRITE's Length and DataOffset 0 on the wire (§2.2.19, §2.2.21)."""
    read = rdma_channel.read_request(_Conn(), bytes(16), offset, length, descriptors)
    back = m.ReadRequest.unpack(read.pack())
    assert (back.channel, back.length, back.offset, back.remaining_bytes) == (
        Channel.RDMA_V1_INVALIDATE, length, offset, length)
    assert back.descriptors == descriptors
    write = rdma_channel.write_request(_Conn(), bytes(16), offset, length, descriptors)
    raw = write.pack()
    back = m.WriteRequest.unpack(raw)
    assert struct.unpack_from("<HI", raw, 2) == (0, 0)  # DataOffset, Length
    assert back.received_data_offset == 0 and back.data == b""
    assert (back.channel, back.remaining_bytes, back.descriptors) == (Channel.RDMA_V1_INVALIDATE, length, descriptors)


@given(DESCRIPTORS, st.integers(1, 8 << 20))
def test_server_write_channel_accepts_exactly_covering_descriptors(descriptors, remaining):
    """Rule 4: accepted iff the first descriptor is not empty and all of them cover RemainingBytes."""
    from harness.smb.server import Fail

    class Conn:
        dialect = Dialect.SMB_3_1_1
        rdma = object()
        max_size = 8 << 20

    request = m.WriteRequest.unpack(rdma_channel.write_request(Conn, bytes(16), 0, remaining, descriptors).pack())
    ok = descriptors[0].length > 0 and sum(d.length for d in descriptors) >= remaining
    try:
        got, length = rdma_channel.write_channel(Conn, request)
    except Fail as exc:
        assert not ok and exc.status == NtStatus.INVALID_PARAMETER
    else:
        assert ok and got == descriptors and length == remaining
