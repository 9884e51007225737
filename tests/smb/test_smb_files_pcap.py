"""A security descriptor query and a stream listing from our server as tshark decodes them: our
client and server on the emulated network (socket wrapper writes the pcap).  The capture must show
the QUERY_INFO SECURITY response's descriptor (self-relative, DACL present, the owner's SID, an
ACE), the CREATE of a named stream, and FileStreamInformation naming it.  tshark is required
(fails, not skips, under CI)."""

from __future__ import annotations

import pytest
import tsharkutil
from wrapfix import swdir, wrapped_pcap  # noqa: F401

from harness.blocking.client import SMBClient
from harness.blocking.server import SMBServer
from harness.pcap import Capture, Count
from harness.smb import messages as m
from harness.smb.constants import AccessMask, Command, CreateDisposition, InfoType
from harness.smb.fscc_lists import unpack_streams
from harness.smb.security import SecurityDescriptor
from harness.smb.server import ServerConfig, ShareConfig
from harness.transport import listen

USER, PASSWORD = "sd", "Pw-files123"
HOST = "127.0.0.13"


@pytest.fixture
def net(wrapped_pcap):
    tsharkutil.tshark_path()  # no tshark: fail under CI, skip elsewhere (tests/tsharkutil.py)
    return wrapped_pcap[0]


def test_security_descriptor_and_stream_queries_on_the_wire(net, tmp_path):
    share_dir = tmp_path / "share"
    share_dir.mkdir()
    config = ServerConfig(shares={"s": ShareConfig("s", str(share_dir))}, users={USER: PASSWORD})
    server = SMBServer(config, listener=listen("tcp", HOST, 445)).start()
    try:
        with SMBClient(HOST, 445, username=USER, password=PASSWORD, timeout=10) as client:
            share = client.share("s")
            file_id = share.open("doc.txt", AccessMask.GENERIC_ALL, CreateDisposition.OPEN_IF).file_id
            sd = share._req(Command.QUERY_INFO, m.QueryInfoRequest(
                file_id=file_id, info_type=InfoType.SECURITY, additional_information=0x5, output_buffer_length=4096))
            owner = SecurityDescriptor.unpack(sd.body.output).owner
            stream_id = share.open("doc.txt:notes:$DATA", AccessMask.GENERIC_ALL, CreateDisposition.CREATE).file_id
            share._req(Command.WRITE, m.WriteRequest(file_id=stream_id, data=b"twelve bytes"))
            listing = share._req(Command.QUERY_INFO, m.QueryInfoRequest(
                file_id=file_id, info_type=InfoType.FILE, file_info_class=22, output_buffer_length=4096))
            assert [(e.name, e.size) for e in unpack_streams(listing.body.output)] == [
                ("::$DATA", 0), (":notes:$DATA", 12)]
            share.close_file(stream_id)
            share.close_file(file_id)
    finally:
        server.stop()
    assert not server.errors, server.errors
    query = "smb2.cmd == 16 && smb2.flags.response == 1 && smb2.nt_status == 0"
    capture = Capture(net.pcap_file)
    capture.check(
        Count(f"{query} && nt.sec_desc.type.self_relative == 1 && nt.sec_desc.type.dacl_present == 1"
              f" && nt.sid == \"{owner}\" && nt.ace.type == 0", eq=1),
        Count("smb2.cmd == 5 && smb2.flags.response == 0 && smb2.filename == \"doc.txt:notes:$DATA\"", eq=1),
        Count(f"{query} && smb2.file_stream_info && smb.stream_size == 12"
              " && smb.stream_name == \":notes:$DATA\"",
              eq=1),
    )
