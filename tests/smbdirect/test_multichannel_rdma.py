"""Multichannel the way Windows introduced it for SMB Direct, on the emulated network: the client
starts on TCP, asks FSCTL_QUERY_NETWORK_INTERFACE_INFO, finds an RDMA_CAPABLE address, binds an SMB
Direct channel there by itself and moves large READ/WRITE data by RDMA on it; the capture shows
the TCP session, the interface query, the binding and the RDMA transfers.  The server is ours, in
this process, with a TCP and an SMB Direct listener (and an IPv6 TCP one) behind one state."""

from __future__ import annotations

import hashlib
import os
import re

import pytest
import tsharkutil
from click.testing import CliRunner

from harness.blocking.multichannel import MultiChannelClient
from harness.blocking.server import SMBServer
from harness.cli import main as cli_main
from harness.pcap import Capture
from harness.pcap.assertions import Count
from harness.pcap.catalogue import build
from harness.smb.constants import InterfaceCapability
from harness.smb.server import ServerConfig, ShareConfig
from harness.transport import listen

USER, PASSWORD = "mcr", "Rdma-mc1"
V6 = "fd00::5357:5f0b"  # the emulated network's IPv6 address of interface 11


@pytest.fixture
def servers(net, tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    config = ServerConfig(shares={"s": ShareConfig("s", str(share))}, users={USER: PASSWORD}, multichannel=True)
    tcp = SMBServer(config, "127.0.0.11", 445).start()
    direct = SMBServer(config, transport="smbdirect", share_with=tcp, link_speed=100_000_000_000,
                       listener=listen("smbdirect", "127.0.0.11", 5445)).start()
    tcp6 = SMBServer(config, transport="tcp", share_with=tcp, listener=listen("tcp", V6, 445)).start()
    tcp.share_dir = share
    yield tcp, direct, tcp6
    for server in (tcp6, direct, tcp):
        server.stop()
    assert not (tcp.errors or direct.errors or tcp6.errors)


def _client(**kwargs) -> MultiChannelClient:
    kwargs.setdefault("sign", False)  # a signed session never uses RDMA (MS-SMB2 3.2.4.6)
    return MultiChannelClient("127.0.0.11", 445, username=USER, password=PASSWORD, timeout=20.0, **kwargs)


def test_interfaces_on_the_emulated_network(servers):
    """IfIndex is the emulated interface (11 for 127.0.0.11 and its IPv6 twin); the SMB Direct
    listener's entry alone is RDMA_CAPABLE, with the speed it was given."""
    client = _client()
    found = [(e.address, e.port, e.if_index, e.capability, e.link_speed) for e in client.interfaces()]
    assert found == [("127.0.0.11", 445, 11, 0, 1_000_000_000),
                     ("127.0.0.11", 5445, 11, InterfaceCapability.RDMA_CAPABLE, 100_000_000_000),
                     (V6, 445, 11, 0, 1_000_000_000)]
    client.close()


def test_client_binds_smbdirect_and_moves_data_by_rdma(servers, net):
    tsharkutil.tshark_path()
    tcp, _direct, _tcp6 = servers
    client = _client()
    assert client.rdma_bytes == {"read": 0, "write": 0}
    added = client.bind_offered()
    assert [(c.how[0], c.how[1], c.how[2]) for c in added] == [("smbdirect", "127.0.0.11", 5445), ("tcp", V6, 445)]
    rdma = next(c for c in client.channels if c.how[0] == "smbdirect")
    data = os.urandom(3_000_001)
    with client.share("s") as share:
        share.put_bytes("r.bin", data)
        assert client.rdma_bytes["write"] == len(data)
        assert share.get_bytes("r.bin") == data
        assert client.rdma_bytes["read"] == len(data)
    assert rdma.sent >= 2 * (len(data) // client.io_size)  # every large READ/WRITE went on the SMB Direct channel
    assert hashlib.sha256((tcp.share_dir / "r.bin").read_bytes()).digest() == hashlib.sha256(data).digest()
    client.close()
    cap = Capture(net.pcap_file)
    # TCP session set up, interface query (IOCTL 0x001401FC) answered with success, binding on
    # another connection, RDMA WRITE (READ data) and RDMA READ (WRITE data).
    cap.check(Count("tcp && smb2.cmd == 1 && smb2.flags.response == 1 && smb2.nt_status == 0", min=1),
              Count("smb2.cmd == 11 && smb2.ioctl.function == 0x001401fc && smb2.flags.response == 1 "
                    "&& smb2.nt_status == 0", min=1),
              build("smb2.channel_binding"), build("smbdirect.negotiated"), build("smbdirect.rdma_used"))


def test_signed_session_binds_but_stays_inline(servers):
    """The SMB Direct channel is bound for a signing session too, but its data stays inline."""
    client = _client(sign=True)
    added = client.bind_offered()
    assert "smbdirect" in [c.how[0] for c in added]
    data = os.urandom(1 << 20)
    with client.share("s") as share:
        share.put_bytes("i.bin", data)
        assert share.get_bytes("i.bin") == data
    assert client.rdma_bytes == {"read": 0, "write": 0}
    client.close()


def test_wirecheck_smb_multichannel_shows_the_smbdirect_channel(servers, tmp_path):
    """`wirecheck smb --multichannel` binds what the server lists and says which channels it has;
    the upload above the RDMA threshold goes by RDMA on the SMB Direct one."""
    source = tmp_path / "up.bin"
    source.write_bytes(os.urandom(1 << 20))
    result = CliRunner().invoke(cli_main, ["smb", "//127.0.0.11:445/s", "--user", f"{USER}:{PASSWORD}", "--no-sign",
                                           "--multichannel", "put", str(source), "up.bin"])
    assert result.exit_code == 0, result.output
    assert re.findall(r"channel \d: (\S+) \(([\w, ]+)\)", result.output) == [
        ("tcp://127.0.0.11:445", "primary"), ("smbdirect://127.0.0.11:5445", "bound, RDMA"),
        (f"tcp://[{V6}]:445", "bound")], result.output
    assert f"{1 << 20} bytes by RDMA" in result.output
    assert (servers[0].share_dir / "up.bin").read_bytes() == source.read_bytes()
