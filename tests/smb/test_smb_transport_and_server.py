"""Transports (Direct TCP, NetBIOS) and the threaded server runner over real loopback.

Rules: a frame longer than the receiver's limit is refused on its 4-byte header, before any of it is
read; NetBIOS needs SESSION REQUEST -> POSITIVE RESPONSE first and tolerates keepalives; a broken or
malicious client costs only its own connection.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
from threadutil import joined

from harness.blocking.client import SMBClient, inline_io_limit
from harness.blocking.server import SMBServer
from harness.smb import messages as m
from harness.smb.client import SMBError
from harness.smb.constants import Command, Dialect, NtStatus
from harness.smb.header import Header
from harness.smb.server import ServerConfig, ShareConfig
from harness.transport import FrameTooLarge, TransportClosed, TransportUnavailable, connect, listen
from harness.transport.fault import FaultPlan, FaultyTransport
from harness.transport.tcp import netbios_name

USER, PASSWORD = "bob", "Pw-123456"


@pytest.fixture
def server(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    config = ServerConfig(shares={"share": ShareConfig("share", str(share))}, users={USER: PASSWORD})
    srv = SMBServer(config, "127.0.0.1", 0, keys_out=str(tmp_path / "keys"))
    srv.share_dir = share
    srv.start()
    yield srv
    srv.stop()
    assert not srv.errors, srv.errors


def _pair(kind: str):
    listener = listen(kind, "127.0.0.1", 0)
    accepted = {}
    thread = threading.Thread(target=lambda: accepted.setdefault("t", listener.accept(timeout=5)))
    thread.start()
    client = connect(kind, "127.0.0.1", listener.address[1], timeout=5)
    joined(thread, 5)
    listener.close()
    return client, accepted["t"]


@pytest.mark.parametrize("kind", ["tcp", "nbt"])
def test_pdus_roundtrip(kind):
    client, server = _pair(kind)
    with client, server:
        for size in (0, 1, 65536, 0x1FFFF):
            payload = os.urandom(size)
            client.send_pdu(payload)
            assert server.recv_pdu(timeout=5) == payload
        assert (client.name, server.name) == (kind, kind)


def test_nbt_frame_limit_and_keepalive():
    client, server = _pair("nbt")
    with client, server:
        client.send_frame(bytes((0x85, 0, 0, 0)))  # keepalive: skipped by the receiver
        client.send_pdu(b"after keepalive")
        assert server.recv_pdu(timeout=5) == b"after keepalive"
        with pytest.raises(ValueError):
            client.send_pdu(bytes(0x20000))  # does not fit 17 bits


def test_netbios_name_encoding():
    encoded = netbios_name("*SMBSERVER")
    assert encoded[0] == 0x20 and encoded[-1] == 0 and len(encoded) == 34
    assert encoded[1:3] == b"CK"  # '*' = 0x2A -> 'C','K'


def test_oversized_frame_refused_before_buffering():
    client, server = _pair("tcp")
    with client, server:
        server.max_recv = 1000
        client.sock.sendall(b"\x00" + (0xFFFFFF).to_bytes(3, "big") + b"x" * 10)
        with pytest.raises(FrameTooLarge):
            server.recv_pdu(timeout=5)


@pytest.mark.parametrize("kind", ["tcp", "nbt"])
def test_send_with_invalidate_is_refused_without_rdma(kind):
    """SEND with Invalidate exists on SMB Direct only: a stream transport refuses the token and
    sends nothing (the peer still sees the next PDU as the first)."""
    client, server = _pair(kind)
    with client, server:
        with pytest.raises(TransportUnavailable):
            client.send_pdu(b"never sent", invalidate_token=7)
        client.send_pdu(b"first")
        assert server.recv_pdu(timeout=5) == b"first"


def test_fault_wrapper_keeps_the_inner_message_limit():
    """A fault plan never hides a transport limit: the wrapper has the inner transport's max_send
    (SMB Direct's MaxFragmentedSize), so inline READ/WRITE stay within it."""
    client, server = _pair("tcp")
    with client, server:
        assert inline_io_limit(FaultyTransport(client, FaultPlan())) is None
        client.max_send = 0x10200
        assert inline_io_limit(FaultyTransport(client, FaultPlan())) == 0x10000


def test_recv_timeout_and_close():
    client, server = _pair("tcp")
    with client, server:
        with pytest.raises(TimeoutError):
            server.recv_pdu(timeout=0.2)
        client.close()
        with pytest.raises(TransportClosed):
            server.recv_pdu(timeout=5)


def test_server_refuses_oversized_frame_and_keeps_serving(server):
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    raw.sendall(b"\x00" + (0xFFFFFF).to_bytes(3, "big"))  # 16 MiB announced before NEGOTIATE
    raw.settimeout(5)
    assert raw.recv(10) == b""  # dropped without reading the body
    raw.close()
    with SMBClient("127.0.0.1", server.port, username=USER, password=PASSWORD) as client:
        client.echo()


def test_server_survives_garbage_and_serves_others(server):
    with SMBClient("127.0.0.1", server.port, username=USER, password=PASSWORD) as good:
        bad = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        bad.sendall(b"\x00\x00\x00\x08GARBAGE!")
        bad.settimeout(5)
        assert bad.recv(10) == b""
        bad.close()
        with good.share("share") as share:
            share.put_bytes("still.txt", b"alive")
            assert share.get_bytes("still.txt") == b"alive"


def test_many_clients_at_once(server):
    errors = []

    def work(index: int) -> None:
        try:
            with SMBClient("127.0.0.1", server.port, username=USER, password=PASSWORD,
                           encrypt=index % 2 == 0) as client, client.share("share") as share:
                data = os.urandom(50_000 + index)
                share.put_bytes(f"c{index}.bin", data)
                assert share.get_bytes(f"c{index}.bin") == data
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        joined(thread, 60)
    assert errors == []
    assert len(list(server.share_dir.iterdir())) == 12


def test_nbt_server_end_to_end(tmp_path):
    share = tmp_path / "s"
    share.mkdir()
    config = ServerConfig(shares={"s": ShareConfig("s", str(share))}, users={USER: PASSWORD})
    with SMBServer(config, "127.0.0.1", 0, transport="nbt") as srv:
        with SMBClient("127.0.0.1", srv.port, transport="nbt", username=USER, password=PASSWORD) as client:
            assert client.conn.dialect == Dialect.SMB_3_0_2
            with client.share("s") as s:
                s.put_bytes("n.txt", b"netbios")
                assert [e.name for e in s.listdir("")][-1] == "n.txt"


def test_wrong_password_and_signature_mismatch_statuses(server):
    with pytest.raises(SMBError) as info:
        SMBClient("127.0.0.1", server.port, username=USER, password="nope")
    assert info.value.status == NtStatus.LOGON_FAILURE
    with SMBClient("127.0.0.1", server.port, username=USER, password=PASSWORD) as client:
        raw, _ = client.conn.build(Command.ECHO, m.EchoRequest(), client.session)
        sealed = bytearray(client.conn.seal([raw], client.session))
        sealed[60] ^= 0xFF  # corrupt the signature
        client.transport.send_pdu(bytes(sealed))
        reply = client.transport.recv_pdu(5)
        assert Header.unpack(reply).status == NtStatus.ACCESS_DENIED
        client.conn.credits += 1  # the error reply granted one; keep the model in step
        time.sleep(0.05)
