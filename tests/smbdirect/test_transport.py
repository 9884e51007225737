"""harness/transport/smbdirect.py: the reference SMB stack (our client and server) over SMB Direct,
and the transport's RDMA hooks as the SMB layer would use them for RDMA_V1(_INVALIDATE)."""

from __future__ import annotations

import hashlib
import os
import threading

import tsharkutil
from threadutil import joined

from harness.blocking.client import SMBClient
from harness.blocking.server import SMBServer
from harness.smb.server import ServerConfig, ShareConfig
from harness.transport.smbdirect import SmbDirectListener, connect_smbdirect

USER, PASSWORD = "rd", "Rdma-pw1"


def test_smb_client_and_server_over_smbdirect(net, tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    config = ServerConfig(shares={"s": ShareConfig("s", str(share))}, users={USER: PASSWORD})
    server = SMBServer(config, transport="smbdirect", listener=SmbDirectListener("127.0.0.11", 445)).start()
    try:
        t = connect_smbdirect("127.0.0.11", 445, timeout=20)
        with SMBClient("127.0.0.11", 445, transport="smbdirect", transport_obj=t, username=USER,
                       password=PASSWORD) as client:
            assert client.transport.name == "smbdirect" and client.transport.supports_rdma
            with client.share("s") as sh:
                data = os.urandom(1_500_000)
                sh.put_bytes("d.bin", data)
                assert sh.get_bytes("d.bin") == data
                assert [e.name for e in sh.listdir()].count("d.bin") == 1
        assert (share / "d.bin").read_bytes() == data
    finally:
        server.stop()
    assert not server.errors
    rows = tsharkutil.fields(net.pcap_file, ["smb2.cmd", "frame.protocols", "_ws.malformed"],
                             display_filter="smb2")
    cmds = {r[0].split(",")[0] for r in rows}
    assert {"0", "1", "3", "5", "8", "9"} <= cmds  # NEGOTIATE, SESSION_SETUP, TREE_CONNECT, CREATE, READ, WRITE
    # The server's NEGOTIATE SPNEGO blob is flagged malformed by tshark's gss-api dissector (the SMB
    # stack's, over any transport); everything at or below smb2 must be clean.
    bad = [r for r in rows if "infiniband:smb_direct:smb2" not in r[1] or (r[2] and "spnego" not in r[1])]
    assert not bad, bad[:5]


def test_transport_rdma_hooks(net):
    lst = SmbDirectListener("127.0.0.11", 445)
    got: dict = {}

    def server():
        t = lst.accept(10)
        req = t.recv_pdu(10)  # "WRITE": descriptors of the client's source buffer
        from harness.smb.messages.io import BufferDescriptorV1

        d = BufferDescriptorV1.unpack_list(req)
        got["pulled"] = hashlib.sha256(t.rdma_read(d, d[0].length)).hexdigest()
        req = t.recv_pdu(10)  # "READ": descriptors of the client's destination
        d = BufferDescriptorV1.unpack_list(req)
        t.rdma_write(d, b"\x5a" * d[0].length)
        t.send_pdu(b"read done", invalidate_token=d[0].token)
        got["eof"] = t.recv_pdu  # keep the connection until the client closes
        t.close()

    th = threading.Thread(target=server)
    th.start()
    c = connect_smbdirect("127.0.0.11", 445, timeout=10)
    src = bytearray(os.urandom(8 << 20))
    d = c.register_buffer(src, writable=False)
    from harness.smb.messages.io import BufferDescriptorV1

    c.send_pdu(BufferDescriptorV1.pack_list(d))
    dest = bytearray(1 << 20)
    d2 = c.register_buffer(dest, writable=True)
    c.send_pdu(BufferDescriptorV1.pack_list(d2))
    assert c.recv_pdu(10) == b"read done" and c.last_invalidated_token == d2[0].token
    c.deregister_buffer(d2)  # already invalidated: no error
    c.deregister_buffer(d)
    joined(th, 10)
    assert got["pulled"] == hashlib.sha256(src).hexdigest() and bytes(dest) == b"\x5a" * (1 << 20)
    c.close()
    lst.close()


def test_benchmark_smoke(capsys):
    from benchmarks.smbdirect import main

    res = main(["--count", "4", "--rounds", "1"])
    assert set(res) == {"tcp", "smbd-inline", "smbd-rdma", "smb2-tcp-write", "smb2-tcp-read", "smb2-smbd-rdma-write",
                        "smb2-smbd-rdma-read"} and all(v > 0 for v in res.values())
    out = capsys.readouterr().out
    assert "ratio smbd-rdma/tcp" in out and "ratio smb2-smbd-rdma/smb2-tcp (1 MiB I/O)" in out


def test_plain_program_under_wirecheck_exec(net):
    """An unmodified program gets IPPROTO_SMBDIRECT sockets from `wirecheck exec` (sitecustomize)."""
    import socket
    import subprocess
    import sys
    from pathlib import Path

    from wrappers import smbdirect as sd

    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM, sd.IPPROTO_SMBDIRECT)
    srv.bind(("127.0.0.11", 445))
    srv.listen()
    prog = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 257); "
            "s.settimeout(10); s.connect(('127.0.0.11', 445)); s.send(b'from exec'); "
            "print(type(s).__name__, s.recv().decode())")
    wc = str(Path(sys.executable).with_name("wirecheck"))
    env = dict(os.environ)
    env.pop("SOCKET_WRAPPER_DEFAULT_IFACE", None)
    p = subprocess.Popen([wc, "exec", "--dir", net.socket_dir, "--iface", "7", "--", sys.executable, "-c", prog],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    srv.settimeout(20)
    a, peer = srv.accept()
    assert peer[0] == "127.0.0.7"
    assert a.recv() == b"from exec"
    a.send(b"hello back")
    out, err = p.communicate(timeout=20)
    assert p.returncode == 0, err.decode()
    assert out.decode().strip() == "SmbDirectSocket hello back"
    a.close()
    srv.close()
