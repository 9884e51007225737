"""Reconnect, replay and binding as the wire shows them: our client and server in this process on
the emulated network (socket wrapper, pcap), checked with harness.pcap named checks.  Also the SMB
Direct leg: reconnect over smbdirect and an smbdirect channel bound next to a TCP one, through the
same transport interface as every other channel.  tshark is required (fails, not skips, under CI)."""

from __future__ import annotations

import hashlib
import os

import pytest
import tsharkutil
from wrapfix import emulated_network

from harness.blocking.faults import faulty_factory
from harness.blocking.multichannel import MultiChannelClient
from harness.blocking.reconnect import ResilientClient
from harness.blocking.server import SMBServer
from harness.pcap import Capture, Count, catalogue
from harness.smb.server import ServerConfig, ShareConfig
from harness.transport import listen
from harness.transport.fault import FaultPlan, FaultyTransport

USER, PASSWORD = "pc", "Pw-pcap123"
HOST = "127.0.0.11"
SIZE = 800_000


@pytest.fixture
def net(tmp_path):
    tsharkutil.tshark_path()  # no tshark: fail under CI, skip elsewhere (tests/tsharkutil.py)
    with emulated_network(iface=11, pcap=str(tmp_path / "run.pcap")) as cfg:
        yield cfg


def _config(tmp_path, **kw) -> ServerConfig:
    share = tmp_path / "share"
    share.mkdir(exist_ok=True)
    return ServerConfig(shares={"s": ShareConfig("s", str(share))}, users={USER: PASSWORD}, max_size=65536,
                        state_dir=str(tmp_path / "state"), **kw)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("kind", ["tcp", "smbdirect"])
def test_reconnect_on_the_wire(net, tmp_path, kind):
    port = 445
    server = SMBServer(_config(tmp_path), transport=kind, listener=listen(kind, HOST, port)).start()
    plan = FaultPlan("reset", 300_000, "send")  # mid-WRITEs: some were in flight
    data = os.urandom(SIZE)
    try:
        client = ResilientClient(HOST, port, transport=kind, username=USER, password=PASSWORD, timeout=10,
                                 handles="durable2", transport_factory=faulty_factory(kind, HOST, port, plan, 10))
        with client.share("s") as share:
            share.put_bytes("w.bin", data)
        assert plan.fired and client.reconnects == 1
        client.close()
    finally:
        server.stop()
    assert not server.errors, server.errors
    assert _sha((tmp_path / "share" / "w.bin").read_bytes()) == _sha(data)
    cap = Capture(net.pcap_file)
    cap.expect(
        catalogue.build("smb2.replay_flag_seen"),
        # The new session names the lost one, and the open comes back with DH2C.
        Count("smb2.cmd == 1 && smb2.flags.response == 0 && smb2.previous_sesid != 0", min=1),
        Count('smb2.cmd == 5 && smb2.flags.response == 0 && smb2 contains "DH2C"', min=1),
        Count('smb2.cmd == 5 && smb2.flags.response == 1 && smb2.nt_status == 0 && smb2 contains "RqLs"', min=2),
        Count("smb2.cmd == 0 && smb2.flags.response == 0", min=2),  # two NEGOTIATEs: two connections
        Count("smb2.cmd == 9 && smb2.flags.response == 0 && smb2.channel_sequence == 1", min=1),
    ).verify()


@pytest.mark.parametrize("second", ["tcp", "smbdirect"])
def test_binding_and_channel_loss_on_the_wire(net, tmp_path, second):
    config = _config(tmp_path, multichannel=True)
    tcp = SMBServer(config, transport="tcp", listener=listen("tcp", HOST, 445)).start()
    other = tcp
    port = 445
    if second == "smbdirect":
        port = 5445
        other = SMBServer(config, transport="smbdirect", share_with=tcp,
                          listener=listen("smbdirect", HOST, port)).start()
    plan = FaultPlan("reset", 200_000, "send")
    data = os.urandom(SIZE)
    try:
        client = MultiChannelClient(HOST, 445, username=USER, password=PASSWORD, timeout=10)
        channel = client.add_channel(second, HOST, port, wrap=lambda t: FaultyTransport(t, plan))
        assert channel.transport.name == second
        with client.share("s") as share:
            share.put_bytes("m.bin", data)
            assert plan.fired and client.losses == 1
            assert share.get_bytes("m.bin") == data
            assert len(client.channels) == 2  # bound again
        client.close()
    finally:
        if other is not tcp:
            other.stop()
        tcp.stop()
    assert not tcp.errors and not other.errors
    assert _sha((tmp_path / "share" / "m.bin").read_bytes()) == _sha(data)
    checks = [catalogue.build("smb2.replay_flag_seen"),
              Count("smb2.cmd == 1 && smb2.flags.response == 0 && smb2.ses_req_flags.session_binding == 1",
                    min=2)]
    if second == "tcp":
        checks.append(catalogue.build("smb2.channel_binding"))
    else:
        # smb2.channel_binding keys SMB Direct frames by their RoCEv2 UDP ports, which differ per
        # direction in our captures, so it never pairs a binding with its answer: count instead.
        checks.append(Count("infiniband && smb2.cmd == 1 && smb2.flags.response == 1 && smb2.nt_status == 0",
                            min=2))
    Capture(net.pcap_file).expect(*checks).verify()
