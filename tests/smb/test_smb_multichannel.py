"""Multichannel: interface discovery, session binding over TCP and QUIC, I/O spread over channels,
survival of a channel loss (replay on the survivor) and re-binding; the binding rules' bad input
(harness/smb/server/channels.py, harness/blocking/multichannel.py)."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest

from harness.blocking.multichannel import MultiChannelClient
from harness.blocking.server import SMBServer
from harness.smb import messages as m
from harness.smb.client import SMBError
from harness.smb.constants import NtStatus
from harness.smb.server import ServerConfig, ShareConfig
from harness.transport import connect, listen
from harness.transport.fault import FaultPlan, FaultyTransport

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from quic.certs import make_pki  # noqa: E402

USERS = {"mc": "Pw-multi1", "other": "Pw-other1"}
SIZE = 1_500_000


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(str(tmp_path_factory.mktemp("pki")))


def _config(tmp_path, multichannel=True, interfaces=None):
    share = tmp_path / "share"
    share.mkdir(exist_ok=True)
    return ServerConfig(shares={"s": ShareConfig("s", str(share))}, users=USERS, multichannel=multichannel,
                        max_size=65536, interfaces=interfaces or [])


@pytest.fixture
def server(tmp_path):
    srv = SMBServer(_config(tmp_path), "127.0.0.1", 0).start()
    srv.share_dir = tmp_path / "share"
    yield srv
    srv.stop()
    assert not srv.errors, srv.errors


def _client(port, **kwargs) -> MultiChannelClient:
    return MultiChannelClient("127.0.0.1", port, username="mc", password=USERS["mc"], timeout=5.0, window=8, **kwargs)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_interfaces_list_configured_capabilities(tmp_path):
    entries = [m.NetworkInterfaceInfo(1, 0x1, 10_000_000_000, "127.0.0.1"),
               m.NetworkInterfaceInfo(2, 0x2, 40_000_000_000, "127.0.0.2")]
    with SMBServer(_config(tmp_path, interfaces=entries), "127.0.0.1", 0) as srv:
        client = _client(srv.port)
        assert client.multichannel
        found = client.interfaces()
        assert [(e.if_index, e.capability, e.link_speed, e.address) for e in found] == \
            [(1, 0x1, 10_000_000_000, "127.0.0.1"), (2, 0x2, 40_000_000_000, "127.0.0.2")]
        client.close()


def test_two_tcp_channels_spread_io(server):
    client = _client(server.port)
    client.add_channel("tcp", "127.0.0.1", server.port)
    data = os.urandom(SIZE)
    with client.share("s") as share:
        share.put_bytes("a.bin", data)
        assert share.get_bytes("a.bin") == data
    assert all(channel.sent > 5 for channel in client.channels), [c.sent for c in client.channels]
    assert _sha((server.share_dir / "a.bin").read_bytes()) == _sha(data)
    client.close()


@pytest.mark.parametrize("which", ["second", "primary"])
def test_channel_loss_replays_on_survivor_and_rebinds(server, which):
    plan = FaultPlan("reset", 300_000, "send")
    if which == "second":
        client = _client(server.port)
        client.add_channel("tcp", "127.0.0.1", server.port, wrap=lambda t: FaultyTransport(t, plan))
    else:
        transport = FaultyTransport(connect("tcp", "127.0.0.1", server.port, timeout=5.0), plan)
        client = _client(server.port, transport_obj=transport)
        client.add_channel("tcp", "127.0.0.1", server.port)
    data = os.urandom(SIZE)
    with client.share("s") as share:
        share.put_bytes("b.bin", data)
        assert plan.fired and client.losses == 1 and client.replayed >= 1
        assert _sha((server.share_dir / "b.bin").read_bytes()) == _sha(data)
        # The next request binds the lost channel again.
        assert share.get_bytes("b.bin") == data
        assert len(client.channels) == 2 and not client.lost
    client.close()


def test_mixed_tcp_and_quic_channels(tmp_path, pki):
    config = _config(tmp_path)
    tcp = SMBServer(config, "127.0.0.1", 0).start()
    quic = SMBServer(config, transport="quic", share_with=tcp,
                     listener=listen("quic", "127.0.0.1", 0, cert=pki["server"], key=pki["server_key"])).start()
    try:
        client = _client(tcp.port, server_name="server.test")
        channel = client.add_channel("quic", "127.0.0.1", quic.port, ca=pki["ca"])
        assert channel.transport.name == "quic"
        data = os.urandom(SIZE)
        with client.share("s") as share:
            share.put_bytes("q.bin", data)
            assert share.get_bytes("q.bin") == data
        assert [c.transport.name for c in client.channels] == ["tcp", "quic"]
        assert all(c.sent > 5 for c in client.channels)
        client.close()
    finally:
        quic.stop()
        tcp.stop()
    assert not tcp.errors and not quic.errors


def _bind_status(client, port, **knobs) -> int:
    transport = connect("tcp", "127.0.0.1", port, timeout=5.0)
    try:
        client._bind(transport, ("tcp", "127.0.0.1", port, {}), **knobs)
    except SMBError as exc:
        return exc.status
    finally:
        transport.close()
    return NtStatus.SUCCESS


def test_binding_bad_input_statuses_and_session_untouched(server):
    client = _client(server.port)
    share = client.share("s")
    share.put_bytes("keep.bin", b"before")
    assert _bind_status(client, server.port, signing_key=os.urandom(16)) == NtStatus.ACCESS_DENIED
    assert _bind_status(client, server.port, sign=False) == NtStatus.INVALID_PARAMETER
    assert _bind_status(client, server.port, username="other", password=USERS["other"]) == NtStatus.NOT_SUPPORTED
    # Nothing above changed the session: it still works, still on one channel, and binds properly.
    assert share.get_bytes("keep.bin") == b"before"
    assert len(server.state.sessions[client.session.session_id].channels) == 0
    assert _bind_status(client, server.port) == NtStatus.SUCCESS
    # Another ClientGuid binds too (§3.3.5.5 lets a server refuse it; Samba does not).
    assert _bind_status(client, server.port, client_guid=os.urandom(16)) == NtStatus.SUCCESS
    client.close()


def test_binding_refused_without_multichannel(tmp_path):
    with SMBServer(_config(tmp_path, multichannel=False), "127.0.0.1", 0) as srv:
        client = _client(srv.port)
        assert not client.multichannel
        assert _bind_status(client, srv.port) == NtStatus.REQUEST_NOT_ACCEPTED
        client.close()


def test_at_most_32_channels_per_session(server):
    client = _client(server.port)
    for _ in range(31):
        client.add_channel("tcp", "127.0.0.1", server.port)
    assert _bind_status(client, server.port) == NtStatus.INSUFFICIENT_RESOURCES
    assert len(server.state.sessions[client.session.session_id].channels) == 32
    client.close()
