"""Our reconnect and multichannel clients against Samba's smbd (a real peer, never mocked): a durable
v2 handle survives a reset mid-write and the file smbd wrote is exactly the data; a session bound
over two TCP connections spreads I/O, loses one channel mid-write and binds it again."""

from __future__ import annotations

import hashlib
import os

import pytest
import tsharkutil
from pdu_pcap import PduCapture
from peers_smb import PASSWORD, USER, Smbd

from harness.blocking.faults import faulty_factory
from harness.blocking.multichannel import MultiChannelClient
from harness.blocking.reconnect import ResilientClient
from harness.transport import connect
from harness.transport.fault import FaultPlan, FaultyTransport


@pytest.fixture(scope="module")
def smbd_mc(tmp_path_factory):
    """smbd with multichannel on (4.17's default is off unless the platform reports RSS interfaces)."""
    server = Smbd(tmp_path_factory.mktemp("smbd-mc"), extra_global="server multi channel support = yes")
    yield server
    server.stop()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("handles", ["durable2", "durable1"])
def test_durable_reconnect_against_smbd(smbd, handles):
    data = os.urandom(12 * 1024 * 1024)
    plan = FaultPlan("reset", 5 * 1024 * 1024, "send")
    client = ResilientClient("127.0.0.1", smbd.port, username=USER, password=PASSWORD, timeout=10, handles=handles,
                             transport_factory=faulty_factory("tcp", "127.0.0.1", smbd.port, plan, 10))
    name = f"rc-{handles}.bin"
    with client.share("share") as share:
        share.put_bytes(name, data)
        assert plan.fired and client.reconnects == 1
        kinds = {h.kind for h in client.open_handles.values()}
        assert not kinds  # closed at the end of put_bytes
        assert share.get_bytes(name) == data
    client.close()
    assert _sha((smbd.share_dir / name).read_bytes()) == _sha(data)


def test_durable_v2_handle_is_granted_and_reopened_by_smbd(smbd, tmp_path):
    """The reopen really was DH2C (not a reopen by name), as the capture of our client's two
    connections shows (smbd runs on real loopback: the capture is what our end sent and received,
    tests/pdu_pcap.py).  First connection: the CREATE carries DH2Q and smbd's SUCCESS response
    grants it (a DH2Q response context).  Second connection: the only CREATE carries DH2C naming the
    original FileId, and smbd answered it with SUCCESS, FILE_OPENED and the same persistent FileId
    (MS-SMB2 3.3.5.9.12: the open is found by FileId.Persistent; only the volatile part is new; the
    response carries the lease context, no durable context).  A CREATE by name would get a new
    persistent FileId from smbd and show up here as a CREATE without DH2C."""
    from harness.pcap import Capture
    from harness.smb.constants import AccessMask, CreateDisposition

    tsharkutil.tshark_path()  # no tshark: fail under CI, skip elsewhere
    pcap = PduCapture(tmp_path / "dh2c.pcap")
    plan = FaultPlan("reset", None, "send")
    made: list = []

    def factory():
        transport = pcap.wrap(connect("tcp", "127.0.0.1", smbd.port, timeout=10))
        made.append(transport)
        return FaultyTransport(transport, plan) if len(made) == 1 else transport

    client = ResilientClient("127.0.0.1", smbd.port, username=USER, password=PASSWORD, timeout=10, handles="durable2",
                             transport_factory=factory)
    share = client.share("share")
    created = share.open("dh2.bin", AccessMask.FILE_READ_DATA | AccessMask.FILE_WRITE_DATA,
                         CreateDisposition.OVERWRITE_IF)
    handle = client.open_handles[created.file_id]
    assert handle.kind == "durable2"
    client.transport.close()
    client.echo()  # fails, reconnects, reopens with DH2C
    assert client.reconnects == 1 and not handle.lost and len(made) == 2
    assert handle.file_id[:8] == created.file_id[:8], "persistent FileId changed"
    assert handle.file_id[8:] != created.file_id[8:], "volatile FileId must be new on the new connection"
    share.close_file(created.file_id)
    client.close()
    pcap.close()

    cap = Capture(tmp_path / "dh2c.pcap", smb_ports=[smbd.port])
    fields = ["tcp.stream", "smb2.tag", "smb2.fid", "smb2.nt_status", "smb2.create.action", "smb2.msg_id",
              "smb2.filename", "smb2.lease.lease_key"]
    requests = cap.frames("smb2.cmd == 5 && smb2.flags.response == 0", fields=fields)
    responses = cap.frames("smb2.cmd == 5 && smb2.flags.response == 1", fields=fields)

    def answer(request):
        found = [r for r in responses if r["tcp.stream"] == request["tcp.stream"] and r["smb2.msg_id"] == request["smb2.msg_id"]]
        assert len(found) == 1, f"frame {request.number}: {len(found)} responses"
        return found[0]

    def tags(frame) -> set:
        return set(frame.all("smb2.tag"))

    first = [r for r in requests if r["tcp.stream"] == 0]
    second = [r for r in requests if r["tcp.stream"] == 1]
    assert len(first) == 1 and "DH2Q" in tags(first[0]) and first[0]["smb2.filename"] == "dh2.bin", first
    granted = answer(first[0])
    assert granted["smb2.nt_status"] == 0 and "DH2Q" in tags(granted), "smbd did not grant DH2Q"
    original = granted["smb2.fid"]
    assert original.replace("-", "") == _guid_hex(created.file_id)
    # Second connection: one CREATE, and it is the DH2C reconnect of that open (no CREATE by name).
    assert len(second) == 1, [f.number for f in second]
    reopen = second[0]
    assert "DH2C" in tags(reopen) and not tags(reopen) & {"DH2Q", "DHnQ", "DHnC"}, tags(reopen)
    assert reopen["smb2.fid"] == original, "DH2C must name the original FileId"
    answered = answer(reopen)
    assert answered["smb2.nt_status"] == 0 and answered["smb2.create.action"] == 1  # FILE_OPENED
    persistent = original.replace("-", "")[:16]
    assert answered["smb2.fid"].replace("-", "")[:16] == persistent, (answered["smb2.fid"], original)
    assert answered["smb2.fid"].replace("-", "").lower() == _guid_hex(handle.file_id)
    assert cap.count('tcp.stream == 1 && smb2.cmd == 5 && smb2.flags.response == 0 && !(smb2.tag == "DH2C")') == 0
    # The reconnect's response carries the lease of the original open (its key), the only context
    # 3.3.5.9.12 has the server return for a leased durable v2 open.
    assert granted["smb2.lease.lease_key"] is not None, "the original open got no lease"
    assert "RqLs" in tags(answered) and answered["smb2.lease.lease_key"] == granted["smb2.lease.lease_key"]


def _guid_hex(file_id: bytes) -> str:
    """A FileId as tshark prints it (a GUID: the first three fields little-endian), without dashes."""
    import uuid

    return uuid.UUID(bytes_le=file_id).hex


def test_session_binding_two_tcp_channels_against_smbd(smbd_mc):
    smbd = smbd_mc
    client = MultiChannelClient("127.0.0.1", smbd.port, username=USER, password=PASSWORD, timeout=10)
    assert client.multichannel, "smbd 4.17 on Linux advertises SMB2_GLOBAL_CAP_MULTI_CHANNEL"
    interfaces = client.interfaces()
    assert interfaces and interfaces[0].address == "127.0.0.1"
    plan = FaultPlan("reset", 3 * 1024 * 1024, "send")
    client.add_channel("tcp", "127.0.0.1", smbd.port, wrap=lambda t: FaultyTransport(t, plan))
    data = os.urandom(16 * 1024 * 1024)
    with client.share("share") as share:
        share.put_bytes("mc.bin", data)
        assert plan.fired and client.losses == 1
        assert share.get_bytes("mc.bin") == data
        assert len(client.channels) == 2  # bound again
        assert all(c.sent for c in client.channels)
    client.close()
    assert _sha((smbd.share_dir / "mc.bin").read_bytes()) == _sha(data)
