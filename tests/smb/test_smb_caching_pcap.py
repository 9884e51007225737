"""A lease break and its acknowledgment as tshark decodes them: our two clients and our server in this
process on the emulated network (socket wrapper, pcap). The second client's CREATE meets an RWH lease:
it gets an interim STATUS_PENDING, the holder a LEASE_BREAK (RWH -> RH, ACK_REQUIRED, MessageId -1,
SessionId 0), its acknowledgment is answered, and then the CREATE completes. tshark is required
(fails, not skips, under CI)."""

from __future__ import annotations

import pytest
import tsharkutil
from wrapfix import emulated_network

from harness.blocking.client import Lease, SMBClient, granted_lease
from harness.blocking.server import SMBServer
from harness.pcap import Capture, Count
from harness.smb import messages as m
from harness.smb.constants import AccessMask, Command, CreateDisposition, LeaseState, OplockLevel
from harness.smb.server import ServerConfig, ShareConfig
from harness.transport import listen

USER, PASSWORD = "pc", "Pw-pcap123"
HOST = "127.0.0.12"
RW = AccessMask.FILE_READ_DATA | AccessMask.FILE_WRITE_DATA | AccessMask.FILE_READ_ATTRIBUTES | AccessMask.SYNCHRONIZE
RWH = LeaseState.READ_CACHING | LeaseState.WRITE_CACHING | LeaseState.HANDLE_CACHING
RH = LeaseState.READ_CACHING | LeaseState.HANDLE_CACHING


@pytest.fixture
def net(tmp_path):
    tsharkutil.tshark_path()  # no tshark: fail under CI, skip elsewhere (tests/tsharkutil.py)
    with emulated_network(iface=12, pcap=str(tmp_path / "run.pcap")) as cfg:
        yield cfg


def test_lease_break_and_acknowledgment_on_the_wire(net, tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    (share / "f.txt").write_bytes(b"data")
    config = ServerConfig(shares={"s": ShareConfig("s", str(share))}, users={USER: PASSWORD}, break_timeout=10)
    server = SMBServer(config, listener=listen("tcp", HOST, 445)).start()
    try:
        with SMBClient(HOST, 445, username=USER, password=PASSWORD, sign=False, timeout=10) as a, \
                SMBClient(HOST, 445, username=USER, password=PASSWORD, sign=False, timeout=10) as b:
            sa, sb = a.share("s"), b.share("s")
            held = sa.open("f.txt", RW, CreateDisposition.OPEN, lease=Lease(b"\xaa" * 16, RWH))
            assert granted_lease(held).lease_state == RWH
            request = m.CreateRequest(name="f.txt", desired_access=RW, share_access=7,
                                      create_disposition=CreateDisposition.OPEN,
                                      requested_oplock_level=OplockLevel.LEASE,
                                      contexts=[Lease(b"\xbb" * 16, RWH).context()])
            mid = b.send(Command.CREATE, request, sb.tree_id)
            assert len(a.poll(2.0)) == 1
            assert granted_lease(b.wait(mid).body).lease_state == RH
            a.poll(0.2)
            assert len(a.break_acks) == 1
    finally:
        server.stop()
    assert not server.errors, server.errors
    notification = ("smb2.cmd == 18 && smb2.flags.response == 1 && smb2.msg_id == 0xffffffffffffffff"
                    " && smb2.sesid == 0 && smb2.lease.lease_key == aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa")
    Capture(net.pcap_file).expect(
        Count("smb2.cmd == 5 && smb2.flags.response == 1 && smb2.nt_status == 0x00000103", min=1, max=1),
        Count(notification + " && smb2.lease.lease_state.break_ack_required == 1", min=1, max=1),
        Count("smb2.cmd == 18 && smb2.flags.response == 0 && smb2.lease.lease_state == 3", min=1, max=1),
        Count("smb2.cmd == 18 && smb2.flags.response == 1 && smb2.msg_id != 0xffffffffffffffff"
              " && smb2.nt_status == 0 && smb2.lease.lease_state == 3", min=1, max=1),
        Count("smb2.cmd == 5 && smb2.flags.response == 1 && smb2.flags.async == 1 && smb2.nt_status == 0",
              min=1, max=1),
    ).verify()
