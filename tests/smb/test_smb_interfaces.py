"""FSCTL_QUERY_NETWORK_INTERFACE_INFO answered from the server's real listeners (IPv4 and IPv6,
TCP and QUIC, IfIndex of the owning interface, RSS and link speed as configured), the client
binding what is offered by itself (a QUIC channel where no TCP listener answers), multichannel off
binding nothing, the FSCTL's bad input, and `wirecheck serve` with several --listen driven by
`wirecheck smb --multichannel` (harness/smb/server/ioctl.py, harness/blocking/netif.py,
harness/blocking/multichannel.py, harness/cli/smb.py)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.blocking.multichannel import MultiChannelClient
from harness.blocking.server import SMBServer
from harness.cli import main as cli_main
from harness.smb import messages as m
from harness.smb.client import SMBError
from harness.smb.constants import (
    AccessMask,
    Command,
    CreateDisposition,
    CreateOptions,
    Fsctl,
    InterfaceCapability,
    LeaseState,
    NtStatus,
    OplockLevel,
)
from harness.smb.messages.create_contexts import DH2Q, DurableHandleRequestV2, LeaseV2, find_context
from harness.smb.messages.ioctl import IFACE_SIZE
from harness.smb.server import ServerConfig, ShareConfig
from harness.transport import listen

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from quic.certs import make_pki  # noqa: E402

USER, PASSWORD = "mc", "Pw-multi1"
LO = socket.if_nametoindex("lo")
WIRECHECK = str(Path(sys.executable).with_name("wirecheck"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(str(tmp_path_factory.mktemp("pki")))


def _config(tmp_path, multichannel=True) -> ServerConfig:
    share = tmp_path / "share"
    share.mkdir(exist_ok=True)
    return ServerConfig(shares={"s": ShareConfig("s", str(share))}, users={USER: PASSWORD},
                        multichannel=multichannel, max_size=65536)


@pytest.fixture
def servers(tmp_path, pki):
    """One server state behind three listeners: TCP on 127.0.0.1 and ::1, QUIC on 127.0.0.1."""
    config = _config(tmp_path)
    tcp = SMBServer(config, "127.0.0.1", 0).start()
    tcp6 = SMBServer(config, transport="tcp", share_with=tcp, listener=listen("tcp", "::1", 0)).start()
    quic = SMBServer(config, transport="quic", share_with=tcp, link_speed=25_000_000_000, rss=True,
                     listener=listen("quic", "127.0.0.1", 0, cert=pki["server"], key=pki["server_key"])).start()
    yield tcp, tcp6, quic
    for server in (quic, tcp6, tcp):
        server.stop()
    assert not (tcp.errors or tcp6.errors or quic.errors)


def _client(port, **kwargs) -> MultiChannelClient:
    kwargs.setdefault("server_name", "server.test")
    return MultiChannelClient("127.0.0.1", port, username=USER, password=PASSWORD, timeout=10.0, **kwargs)


def _ioctl_status(client, **fields) -> tuple[int, bytes]:
    ipc = client.share("IPC$")
    body = m.IoctlRequest(ctl_code=Fsctl.QUERY_NETWORK_INTERFACE_INFO, **fields)
    response = client.request(Command.IOCTL, body, ipc.tree_id, ok=tuple(NtStatus))
    return response.header.status, getattr(response.body, "output", b"")


def test_interface_list_is_the_listeners_ipv4_and_ipv6(servers):
    tcp, tcp6, quic = servers
    client = _client(tcp.port)
    found = [(e.address, e.port, e.if_index, e.capability, e.link_speed) for e in client.interfaces()]
    assert found == [("127.0.0.1", tcp.port, LO, 0, 1_000_000_000),
                     ("::1", tcp6.port, LO, 0, 1_000_000_000),
                     ("127.0.0.1", quic.port, LO, InterfaceCapability.RSS_CAPABLE, 25_000_000_000)]
    client.close()


def test_stopped_listener_leaves_the_list(servers):
    tcp, tcp6, quic = servers
    tcp6.stop()
    client = _client(tcp.port)
    assert [(e.address, e.port) for e in client.interfaces()] == [("127.0.0.1", tcp.port), ("127.0.0.1", quic.port)]
    client.close()


def test_client_binds_ipv6_tcp_and_quic_by_itself(servers, pki):
    """Starting on TCP, the client binds ::1 over TCP and the QUIC listener over QUIC (no TCP
    answers on its port), then spreads a WRITE/READ over the three channels."""
    tcp, tcp6, quic = servers
    client = _client(tcp.port)
    added = client.bind_offered(ca=pki["ca"])
    assert [(c.how[0], c.how[1], c.how[2]) for c in added] == [("tcp", "::1", tcp6.port),
                                                              ("quic", "127.0.0.1", quic.port)]
    assert [c.transport.name for c in client.channels] == ["tcp", "tcp", "quic"]
    data = os.urandom(1_500_000)
    with client.share("s") as share:
        share.put_bytes("m.bin", data)
        assert share.get_bytes("m.bin") == data
    assert all(c.sent > 3 for c in client.channels), [c.sent for c in client.channels]
    assert client.bind_offered(ca=pki["ca"]) == []  # everything offered is bound already
    client.close()


def test_without_quic_options_no_quic_channel(servers):
    tcp, tcp6, _quic = servers
    client = _client(tcp.port)
    assert [c.how[0] for c in client.bind_offered()] == ["tcp"]
    client.close()


def test_multichannel_off_binds_nothing(tmp_path):
    config = _config(tmp_path, multichannel=False)
    with SMBServer(config, "127.0.0.1", 0) as tcp, \
            SMBServer(config, transport="tcp", share_with=tcp, listener=listen("tcp", "::1", 0)):
        client = _client(tcp.port)
        assert not client.multichannel
        assert client.bind_offered() == [] and len(client.channels) == 1
        # Asked anyway: §3.3.5.15.11 NOT_SUPPORTED, and a binding attempt is refused.
        with pytest.raises(SMBError) as raised:
            client.interfaces()
        assert raised.value.status == NtStatus.NOT_SUPPORTED
        with pytest.raises(SMBError):
            client.add_channel("tcp", "::1", config.listeners[1].port)
        assert len(client.channels) == 1
        client.close()


def test_bad_input_file_id_and_small_output(servers):
    """§3.3.5.15: a FileId other than {-1, -1} is INVALID_PARAMETER; an output that does not fit
    MaxOutputResponse is BUFFER_TOO_SMALL (never a truncated list); the session goes on."""
    tcp, _tcp6, _quic = servers
    client = _client(tcp.port)
    status, _ = _ioctl_status(client, file_id=b"\x01" * 16, max_output_response=65536)
    assert status == NtStatus.INVALID_PARAMETER
    whole = 3 * IFACE_SIZE
    status, _ = _ioctl_status(client, file_id=b"\xff" * 16, max_output_response=whole - 1)
    assert status == NtStatus.BUFFER_TOO_SMALL
    status, _ = _ioctl_status(client, file_id=b"\xff" * 16, max_output_response=0)
    assert status == NtStatus.BUFFER_TOO_SMALL
    status, output = _ioctl_status(client, file_id=b"\xff" * 16, max_output_response=whole)
    assert status == NtStatus.SUCCESS and len(m.NetworkInterfaceInfo.unpack_list(output)) == 3
    client.close()


@contextlib.contextmanager
def _serving(args: list[str]):
    """`wirecheck serve ARGS` as a process; yields the TRANSPORT://ADDR:PORT it says it serves on."""
    p = subprocess.Popen([WIRECHECK, "serve", *args], stderr=subprocess.PIPE, start_new_session=True)
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while len(lines) < args.count("--listen"):
            if time.monotonic() > deadline or p.poll() is not None:
                raise AssertionError(f"wirecheck serve did not start: {lines} {p.stderr.read()!r}")
            line = p.stderr.readline().decode()
            if line.startswith("serving"):
                lines.append(line.split(" on ", 1)[1].strip())
        yield lines
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def test_cli_serve_several_listeners_and_smb_multichannel(tmp_path, pki):
    share = tmp_path / "cli"
    share.mkdir()
    with _serving(["--multichannel", "--listen", "tcp:127.0.0.1:0", "--listen", "tcp:[::1]:0,speed=10G,rss",
                   "--listen", "quic:127.0.0.1:0", "--cert", pki["server"], "--key", pki["server_key"],
                   "--durable-timeout", "5", "--share", f"s={share}:ca", "--user", f"{USER}:{PASSWORD}"]) as bound:
        assert bound[0].startswith("tcp://127.0.0.1:") and bound[1].startswith("tcp://[::1]:")
        assert bound[2].startswith("quic://127.0.0.1:")
        port = int(bound[0].rsplit(":", 1)[1])
        source = tmp_path / "up.bin"
        source.write_bytes(os.urandom(300_000))
        result = CliRunner().invoke(cli_main, ["smb", f"//127.0.0.1:{port}/s", "--user", f"{USER}:{PASSWORD}",
                                               "--server-name", "server.test", "--ca", pki["ca"], "--multichannel",
                                               "put", str(source), "up.bin"])
        assert result.exit_code == 0, result.output
        channels = re.findall(r"channel \d: (\S+) \((\w+)", result.output)
        assert channels == [(bound[0], "primary"), (bound[1], "bound"), (bound[2], "bound")], result.output
        assert hashlib.sha256((share / "up.bin").read_bytes()).digest() == hashlib.sha256(source.read_bytes()).digest()
        # The interface list reports the options given on the command line.
        client = _client(port)
        entries = {e.port: e for e in client.interfaces()}
        ipv6 = entries[int(bound[1].rsplit(":", 1)[1])]
        assert (ipv6.address, ipv6.link_speed, ipv6.capability) == ("::1", 10_000_000_000,
                                                                    InterfaceCapability.RSS_CAPABLE)
        client.close()


def test_cli_without_multichannel_says_one_channel(tmp_path):
    share = tmp_path / "cli"
    share.mkdir()
    with _serving(["--listen", "tcp:127.0.0.1:0", "--listen", "tcp:[::1]:0", "--share", f"s={share}",
                   "--user", f"{USER}:{PASSWORD}"]) as bound:
        port = int(bound[0].rsplit(":", 1)[1])
        result = CliRunner().invoke(cli_main, ["smb", f"//127.0.0.1:{port}/s", "--user", f"{USER}:{PASSWORD}",
                                               "--multichannel", "ls"])
        assert result.exit_code == 0, result.output
        assert "does not offer multichannel" in result.output
        assert re.findall(r"channel \d: (\S+) \((\w+)", result.output) == [(bound[0], "primary")]


def _durable_v2(share, timeout: int) -> tuple[int, int]:
    """A DH2Q open asking for ``timeout`` ms and a persistent handle: (granted timeout, flags)."""
    contexts = [LeaseV2(lease_key=os.urandom(16), lease_state=LeaseState.READ_CACHING | LeaseState.HANDLE_CACHING)
                .to_context(),
                DurableHandleRequestV2(timeout=timeout, flags=2, create_guid=os.urandom(16)).to_context()]
    body = m.CreateRequest(name=f"d{timeout}.bin", desired_access=AccessMask.FILE_READ_DATA | AccessMask.SYNCHRONIZE,
                           share_access=7, create_disposition=CreateDisposition.OPEN_IF,
                           create_options=CreateOptions.NON_DIRECTORY_FILE,
                           requested_oplock_level=OplockLevel.LEASE, contexts=contexts)
    created = share.client.request(Command.CREATE, body, share.tree_id).body
    share.close_file(created.file_id)
    return struct.unpack_from("<II", find_context(created.contexts, DH2Q).data)


def test_cli_durable_timeouts_and_continuously_available_share(tmp_path):
    """--durable-timeout answers a DH2Q asking for 0, --durable-max-timeout caps a larger request,
    and a share marked :ca grants persistent handles (a plain one does not)."""
    (tmp_path / "ca").mkdir()
    (tmp_path / "plain").mkdir()
    with _serving(["--listen", "tcp:127.0.0.1:0", "--durable-timeout", "7.5", "--durable-max-timeout", "42",
                   "--share", f"ca={tmp_path / 'ca'}:ca", "--share", f"plain={tmp_path / 'plain'}",
                   "--user", f"{USER}:{PASSWORD}"]) as bound:
        client = _client(int(bound[0].rsplit(":", 1)[1]))
        ca, plain = client.share("ca"), client.share("plain")
        assert _durable_v2(ca, 0) == (7_500, 2)
        assert _durable_v2(ca, 900_000) == (42_000, 2)
        assert _durable_v2(plain, 1_000) == (1_000, 0)
        client.close()


@pytest.mark.parametrize("listen, message", [("tcp:127.0.0.1:445,bogus", "unknown option 'bogus'"),
                                             ("tcp:127.0.0.1:445,speed=fast", "unknown option 'speed=fast'"),
                                             ("tcp:[::1:445", "not HOST[:PORT]")])
def test_cli_listen_bad_input(tmp_path, listen, message):
    result = CliRunner().invoke(cli_main, ["serve", "--listen", listen, "--share", f"s={tmp_path}",
                                           "--user", "u:p"])
    assert result.exit_code == 2 and message in result.output, result.output


def test_cli_quic_listener_needs_certificate(tmp_path):
    result = CliRunner().invoke(cli_main, ["serve", "--listen", "quic:127.0.0.1:0", "--share", f"s={tmp_path}",
                                           "--user", "u:p"])
    assert result.exit_code == 2 and "needs --cert and --key" in result.output, result.output


def test_wildcard_listener_lists_every_host_address(tmp_path):
    """0.0.0.0 stands for every IPv4 address of the host: the list matches what `ip -j addr` says
    (address and interface index), an independent view of the same interfaces."""
    if not shutil.which("ip"):
        pytest.skip("no ip(8) to compare with") if not os.environ.get("CI") else pytest.fail("ip(8) missing")
    shown = json.loads(subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, check=True, text=True).stdout)
    expected = sorted((a["local"], link["ifindex"]) for link in shown for a in link.get("addr_info", [])
                      if a.get("family") == "inet")
    with SMBServer(_config(tmp_path), "0.0.0.0", 0) as srv:
        client = _client(srv.port)
        found = client.interfaces()
        client.close()
    assert sorted((e.address, e.if_index) for e in found) == expected
    assert {e.port for e in found} == {srv.port}
