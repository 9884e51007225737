"""A blocking LOCK as tshark decodes it: our client and server on the emulated network (socket
wrapper writes the pcap), checked with harness.pcap counts.  The capture must show the blocking
request (no FAIL_IMMEDIATELY), the interim STATUS_PENDING response with the async flag, the final
async response once the range was unlocked, and a second blocking lock's CANCEL ending in
STATUS_CANCELLED.  tshark is required (fails, not skips, under CI)."""

from __future__ import annotations

import pytest
import tsharkutil
from wrapfix import swdir, wrapped_pcap  # noqa: F401

from harness.blocking.client import SMBClient
from harness.blocking.server import SMBServer
from harness.pcap import Capture, Count
from harness.smb.constants import AccessMask, CreateDisposition, NtStatus
from harness.smb.server import ServerConfig, ShareConfig
from harness.transport import listen

USER, PASSWORD = "lk", "Pw-lock123"
HOST = "127.0.0.12"


@pytest.fixture
def net(wrapped_pcap):
    tsharkutil.tshark_path()  # no tshark: fail under CI, skip elsewhere (tests/tsharkutil.py)
    return wrapped_pcap[0]


def test_blocking_lock_interim_and_final_on_the_wire(net, tmp_path):
    share_dir = tmp_path / "share"
    share_dir.mkdir()
    config = ServerConfig(shares={"s": ShareConfig("s", str(share_dir))}, users={USER: PASSWORD})
    server = SMBServer(config, listener=listen("tcp", HOST, 445)).start()
    rw = AccessMask.GENERIC_READ | AccessMask.GENERIC_WRITE
    try:
        with SMBClient(HOST, 445, username=USER, password=PASSWORD, timeout=10) as a, \
                SMBClient(HOST, 445, username=USER, password=PASSWORD, timeout=10) as b:
            sa, sb = a.share("s"), b.share("s")
            fa = sa.open("l.bin", rw, CreateDisposition.OPEN_IF).file_id
            fb = sb.open("l.bin", rw, CreateDisposition.OPEN_IF).file_id
            sa.lock(fa, 0, 100)
            granted = sb.lock_request(fb, 10, 10, fail_immediately=False)
            assert sb.client.wait_interim(granted)
            sa.unlock(fa, 0, 100)
            assert sb.client.wait(granted).header.status == NtStatus.SUCCESS
            cancelled = sa.lock_request(fa, 10, 10, fail_immediately=False)
            assert sa.client.wait_interim(cancelled)
            sa.client.cancel(cancelled)
            assert sa.client.wait(cancelled).header.status == NtStatus.CANCELLED
    finally:
        server.stop()
    assert not server.errors, server.errors
    lock = "smb2.cmd == 10"
    Capture(net.pcap_file).check(
        Count(f"{lock} && smb2.flags.response == 0 && smb2.lock_flags.exclusive == 1"
              " && smb2.lock_flags.fail_immediately == 0", eq=2),
        Count(f"{lock} && smb2.flags.response == 1 && smb2.flags.async == 1 && smb2.nt_status == 0x00000103",
              eq=2),
        Count(f"{lock} && smb2.flags.response == 1 && smb2.flags.async == 1 && smb2.nt_status == 0", eq=1),
        Count("smb2.cmd == 12 && smb2.flags.async == 1", eq=1),
        Count(f"{lock} && smb2.flags.response == 1 && smb2.flags.async == 1 && smb2.nt_status == 0xc0000120",
              eq=1),
    )
