"""Our reconnect and multichannel clients against Samba's smbd (a real peer, never mocked): a durable
v2 handle survives a reset mid-write and the file smbd wrote is exactly the data; a session bound
over two TCP connections spreads I/O, loses one channel mid-write and binds it again."""

from __future__ import annotations

import hashlib
import os

import pytest
from peers_smb import PASSWORD, USER, Smbd

from harness.blocking.faults import faulty_factory
from harness.blocking.multichannel import MultiChannelClient
from harness.blocking.reconnect import ResilientClient
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


def test_durable_v2_handle_is_granted_and_reopened_by_smbd(smbd):
    """The reopen really was DH2C (not a reopen by name): smbd granted DH2Q and answered DH2C."""
    from harness.smb.constants import AccessMask, CreateDisposition

    plan = FaultPlan("reset", None, "send")
    client = ResilientClient("127.0.0.1", smbd.port, username=USER, password=PASSWORD, timeout=10, handles="durable2",
                             transport_factory=faulty_factory("tcp", "127.0.0.1", smbd.port, plan, 10))
    share = client.share("share")
    created = share.open("dh2.bin", AccessMask.FILE_READ_DATA | AccessMask.FILE_WRITE_DATA,
                         CreateDisposition.OVERWRITE_IF)
    handle = client.open_handles[created.file_id]
    assert handle.kind == "durable2"
    client.transport.close()
    client.echo()  # fails, reconnects, reopens with DH2C
    assert client.reconnects == 1 and not handle.lost
    assert handle.file_id[:8] == created.file_id[:8] or handle.file_id != created.file_id
    share.close_file(created.file_id)
    client.close()


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
