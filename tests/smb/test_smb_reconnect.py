"""Client reconnect: transport {tcp, nbt, quic} x fault {reset before the server saw the request,
reset after it answered, blackhole, server restart} x handle {none, durable v1, durable v2}.

What the application relies on: ``put_bytes`` returns without an error although the connection died
in the middle, the file on the server has exactly the bytes written (sha256), and nothing was
applied twice (a replayed CREATE did not truncate what earlier WRITEs had written)."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest

from harness.blocking.faults import RestartableServer, faulty_factory
from harness.blocking.reconnect import ResilientClient
from harness.smb.server import ServerConfig, ShareConfig
from harness.transport.fault import FaultPlan

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from quic.certs import make_pki  # noqa: E402

USER, PASSWORD = "rc", "Pw-reconnect1"
SIZE = 1_200_000
FAULTS = {
    # name: (kind, direction, bytes)
    "reset-send": ("reset", "send", 300_000),
    "reset-recv": ("reset", "recv", 2_000),
    "blackhole": ("blackhole", "send", 300_000),
    "restart": ("reset", "send", 300_000),
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(str(tmp_path_factory.mktemp("pki")))


def _server(tmp_path, kind, pki) -> RestartableServer:
    share = tmp_path / "share"
    share.mkdir(exist_ok=True)

    def config():
        # 64 KiB I/O: a 1.2 MB put is ~19 pipelined WRITEs, so a cut lands with requests in flight.
        return ServerConfig(shares={"s": ShareConfig("s", str(share))}, users={USER: PASSWORD},
                            state_dir=str(tmp_path / "state"), max_size=65536)

    options = {"cert": pki["server"], "key": pki["server_key"]} if kind == "quic" else {}
    server = RestartableServer(config, kind, listen_options=options)
    server.share_dir = share
    return server


def _client(server, kind, pki, plan, handles, timeout=5.0) -> ResilientClient:
    options = {"server_name": "server.test", "ca": pki["ca"]} if kind == "quic" else {}
    factory = faulty_factory(kind, "127.0.0.1", server.port, plan, timeout=timeout, **options)
    return ResilientClient("127.0.0.1", server.port, transport=kind, username=USER, password=PASSWORD,
                           handles=handles, timeout=timeout, reconnect_timeout=20.0, transport_factory=factory,
                           server_name="server.test" if kind == "quic" else None, window=4)


@pytest.mark.parametrize("handles", ["none", "durable1", "durable2"])
@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("kind", ["tcp", "nbt", "quic"])
def test_write_survives_fault(tmp_path, pki, kind, fault, handles):
    server = _server(tmp_path, kind, pki)
    fault_kind, direction, after = FAULTS[fault]
    plan = FaultPlan(fault_kind, after, direction, on_fire=server.restart if fault == "restart" else None)
    timeout = 1.0 if fault == "blackhole" else 5.0
    data = os.urandom(SIZE)
    try:
        client = _client(server, kind, pki, plan, handles, timeout)
        with client.share("s") as share:
            share.put_bytes("f.bin", data)
            assert plan.fired, "the fault never fired: the test would prove nothing"
            assert client.reconnects == 1
            assert hashlib.sha256((server.share_dir / "f.bin").read_bytes()).hexdigest() == \
                hashlib.sha256(data).hexdigest()
            assert share.get_bytes("f.bin") == data
        client.close()
        if fault == "restart":
            assert server.restarts == 1
    finally:
        server.stop()
    assert not server.errors, server.errors


def test_cut_during_pipelined_reads(tmp_path, pki):
    server = _server(tmp_path, "tcp", pki)
    data = os.urandom(SIZE)
    (server.share_dir / "r.bin").write_bytes(data)
    plan = FaultPlan("reset", 400_000, "recv")
    try:
        client = _client(server, "tcp", pki, plan, "durable2")
        with client.share("s") as share:
            assert share.get_bytes("r.bin") == data
        assert plan.fired and client.reconnects == 1 and client.replayed >= 1
        client.close()
    finally:
        server.stop()


def test_durable_reopen_refused_after_timeout_reaches_the_application(tmp_path, pki):
    """A handle that cannot come back (its durable timeout passed) is an error, not silent data loss."""
    from harness.smb.client import SMBError
    from harness.smb.constants import AccessMask, CreateDisposition, NtStatus

    server = _server(tmp_path, "tcp", pki)
    plan = FaultPlan("reset", None, "send")
    try:
        client = _client(server, "tcp", pki, plan, "durable2")
        client.durable_timeout_ms = 1
        share = client.share("s")
        created = share.open("t.bin", AccessMask.FILE_WRITE_DATA | AccessMask.FILE_READ_DATA,
                             CreateDisposition.OVERWRITE_IF)
        client.transport.close()
        import time
        time.sleep(0.05)
        with pytest.raises(SMBError) as error:
            from harness.smb import messages as m
            from harness.smb.constants import Command
            share._req(Command.WRITE, m.WriteRequest(file_id=created.file_id, offset=0, data=b"x"))
        assert error.value.status == NtStatus.FILE_CLOSED
        assert client.reconnects == 1
        client.close()
    finally:
        server.stop()


@pytest.mark.parametrize("fault", ["reset-send", "restart"])
def test_persistent_handle_on_continuously_available_share(tmp_path, pki, fault):
    share_dir = tmp_path / "ca"
    share_dir.mkdir()

    def config():
        return ServerConfig(shares={"ca": ShareConfig("ca", str(share_dir), continuously_available=True)},
                            users={USER: PASSWORD}, state_dir=str(tmp_path / "state"), max_size=65536)

    server = RestartableServer(config, "tcp")
    kind, direction, after = FAULTS[fault]
    plan = FaultPlan(kind, after, direction, on_fire=server.restart if fault == "restart" else None)
    data = os.urandom(SIZE)
    try:
        client = _client(server, "tcp", pki, plan, "persistent")
        with client.share("ca") as share:
            share.put_bytes("p.bin", data)
            assert plan.fired and client.reconnects == 1
        client.close()
    finally:
        server.stop()
    assert hashlib.sha256((share_dir / "p.bin").read_bytes()).digest() == hashlib.sha256(data).digest()
    assert not server.errors, server.errors


def test_persistent_grant_is_visible_to_the_client(tmp_path, pki):
    from harness.smb.constants import AccessMask, CreateDisposition

    share_dir = tmp_path / "ca"
    share_dir.mkdir()
    server = RestartableServer(lambda: ServerConfig(
        shares={"ca": ShareConfig("ca", str(share_dir), continuously_available=True),
                "plain": ShareConfig("plain", str(share_dir))}, users={USER: PASSWORD}), "tcp")
    try:
        client = _client(server, "tcp", pki, FaultPlan("reset", None), "persistent")
        for name, expected in (("ca", "persistent"), ("plain", "durable2")):
            share = client.share(name)
            created = share.open(f"g-{name}.bin", AccessMask.FILE_WRITE_DATA, CreateDisposition.OVERWRITE_IF)
            assert client.open_handles[created.file_id].kind == expected
            share.close_file(created.file_id)
        client.close()
    finally:
        server.stop()
