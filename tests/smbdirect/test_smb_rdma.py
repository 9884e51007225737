"""SMB2 READ/WRITE through RDMA channels over the emulated SMB Direct, end to end: our client and
server (in this process, or `wirecheck serve --transport smbdirect` as a peer process), the data
moved by RDMA READ/WRITE between processes, checked by sha256, in the capture, and when things go
wrong (a dying peer, descriptors that point outside the registration)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import tsharkutil
from click.testing import CliRunner
from threadutil import joined

from harness.blocking.client import SMBClient
from harness.blocking.server import SMBServer
from harness.pcap import Capture
from harness.pcap.assertions import Count
from harness.pcap.catalogue import build
from harness.smb import messages as m
from harness.smb import rdma_channel
from harness.smb.client import SMBError
from harness.smb.constants import AccessMask, Command, CreateDisposition, NtStatus
from harness.smb.server import ServerConfig, ShareConfig
from harness.transport import TransportClosed, TransportError
from harness.transport.smbdirect import SmbDirectListener

USER, PASSWORD = "rd", "Rdma-pw1"
THRESHOLD = rdma_channel.RDMA_THRESHOLD
WIRECHECK = str(Path(sys.executable).with_name("wirecheck"))


@pytest.fixture
def server(net, tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    config = ServerConfig(shares={"s": ShareConfig("s", str(share))}, users={USER: PASSWORD})
    srv = SMBServer(config, transport="smbdirect", listener=SmbDirectListener("127.0.0.11", 445)).start()
    srv.share_dir = share
    yield srv
    srv.stop()


def client(host: str = "127.0.0.11", **kw) -> SMBClient:
    kw.setdefault("sign", False)
    return SMBClient(host, 445, transport="smbdirect", username=USER, password=PASSWORD, timeout=20, **kw)


@pytest.mark.parametrize("size, by_rdma", [(THRESHOLD, False), (THRESHOLD + 1, True), (3_000_001, True)])
def test_read_write_around_the_threshold(server, size, by_rdma):
    """At the threshold data goes inline, one byte above through RDMA (READ and WRITE alike); a
    multi-request transfer mixes neither up."""
    data = os.urandom(size)
    with client() as c, c.share("s") as sh:
        sh.put_bytes("t.bin", data)
        assert c.rdma_bytes["write"] == (size if by_rdma else 0)
        assert sh.get_bytes("t.bin") == data
        assert c.rdma_bytes["read"] == (size if by_rdma else 0)
    assert (server.share_dir / "t.bin").read_bytes() == data
    assert not server.errors


def test_signed_session_stays_inline(server):
    """§3.2.4.6/7: a session that requires signing never uses an RDMA channel (the data would
    bypass the signature); inline I/O is cut to what one SMB Direct message carries."""
    data = os.urandom(3 << 20)
    with client(sign=True) as c, c.share("s") as sh:
        sh.put_bytes("s.bin", data)
        assert sh.get_bytes("s.bin") == data
        assert c.rdma_bytes == {"read": 0, "write": 0}


def test_capture_shows_rdma_channels(server, net):
    """tshark sees smb_direct, RDMA WRITE (READ data) and RDMA READ request/response (WRITE data) with
    RETH, SMB2 READ and WRITE requests with Channel RDMA_V1_INVALIDATE, responses sent with
    Invalidate, and nothing malformed except the NEGOTIATE's SPNEGO blob (tshark's gss-api quirk)."""
    tsharkutil.tshark_path()
    data = os.urandom(1 << 20)
    with client() as c, c.share("s") as sh:
        sh.put_bytes("c.bin", data)
        assert sh.get_bytes("c.bin") == data
    cap = Capture(net.pcap_file)
    cap.check(build("smbdirect.negotiated"), build("smbdirect.rdma_used"),
              Count("smb2.cmd == 8 && smb2.flags.response == 0 && smb2.channel == 2", min=1),
              Count("smb2.cmd == 9 && smb2.flags.response == 0 && smb2.channel == 2", min=1),
              Count("smb2.cmd == 8 && smb2.flags.response == 1 && smb2.read_remaining == 1048576", min=1),
              Count("infiniband.reth", min=2),
              Count("infiniband.bth.opcode == 0x17 && smb2", min=2),  # SEND Only with Invalidate
              Count("_ws.malformed && !spnego", eq=0))


def _serve_process(net, share: Path, iface: int = 10) -> subprocess.Popen:
    env = dict(os.environ, SOCKET_WRAPPER_DIR=net.socket_dir, SOCKET_WRAPPER_DEFAULT_IFACE=str(iface))
    p = subprocess.Popen([WIRECHECK, "serve", "--transport", "smbdirect", "--listen", f"127.0.0.{iface}",
                          "--share", f"data={share}", "--user", f"{USER}:{PASSWORD}"], env=env,
                         stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 30
    line = b""
    while b"serving" not in line:
        if time.monotonic() > deadline or p.poll() is not None:
            p.kill()
            raise AssertionError(f"wirecheck serve did not start: {line!r} {p.stderr.read()!r}")
        line = p.stderr.readline()
    return p


@pytest.fixture
def peer_server(net, tmp_path):
    share = tmp_path / "peer-share"
    share.mkdir()
    p = _serve_process(net, share)
    p.share_dir = share
    yield p
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def test_64mib_read_and_write_through_rdma_to_another_process(peer_server):
    """64 MiB each way between two processes (RDMA by process_vm_readv/writev or memfd), sha256 equal."""
    data = os.urandom(64 << 20)
    digest = hashlib.sha256(data).hexdigest()
    with client("127.0.0.10", window=8) as c, c.share("data") as sh:
        sh.put_bytes("big.bin", data)
        assert hashlib.sha256((peer_server.share_dir / "big.bin").read_bytes()).hexdigest() == digest
        got = hashlib.sha256()
        for block in sh.iter_read("big.bin"):
            got.update(block)
        assert got.hexdigest() == digest
        assert c.rdma_bytes == {"read": 64 << 20, "write": 64 << 20}


@pytest.mark.parametrize("direction", ["write", "read"])
def test_peer_dies_mid_transfer(peer_server, direction):
    """The server process is killed in the middle of a 64 MiB transfer: the client fails with a
    message within its timeout, it does not hang."""
    data = os.urandom(64 << 20)
    with client("127.0.0.10", window=2, rdma_threshold=THRESHOLD) as c, c.share("data") as sh:
        if direction == "read":
            sh.put_bytes("d.bin", data)
        started = time.monotonic()
        with pytest.raises((TransportError, SMBError, OSError)) as info:
            if direction == "write":
                def blocks():
                    for i in range(0, len(data), 4 << 20):
                        if i == 8 << 20:
                            os.killpg(peer_server.pid, signal.SIGKILL)
                        yield data[i:i + (4 << 20)]

                sh.write_from("d.bin", blocks())
            else:
                for n, _block in enumerate(sh.iter_read("d.bin")):
                    if n == 1:
                        os.killpg(peer_server.pid, signal.SIGKILL)
        assert time.monotonic() - started < 20
        # the end is seen as a reset, a close, or (the client sending as the peer died) a failed
        # carrier send: every one a TransportClosed; a timeout or a protocol error would not be
        assert (isinstance(info.value, TransportClosed)
                or "reset" in str(info.value) or "closed" in str(info.value)), info.value
    peer_server.wait(10)


@pytest.mark.parametrize("what", ["wrong token", "outside the registration"])
def test_bad_descriptor_terminates_the_connection(server, what):
    """A WRITE whose descriptor names a token we never registered, or reaches past the registered
    range, makes the server's RDMA READ fail as an RNIC's would: the connection is terminated
    (the client sees it), and memory next to the registered buffer is never read."""
    with client() as c, c.share("s") as sh:
        created = sh.open("x.bin", AccessMask.FILE_WRITE_DATA | AccessMask.SYNCHRONIZE,
                          CreateDisposition.OVERWRITE_IF)
        memory = bytearray(b"S" * (3 * 65536))
        window = memoryview(memory)[65536:131072]
        (d,) = c.transport.register_buffer(window, writable=False)
        if what == "wrong token":
            d = m.BufferDescriptorV1(d.offset, d.token ^ 0x5A, d.length)
        else:
            d = m.BufferDescriptorV1(d.offset, d.token, d.length + 65536)
        body = rdma_channel.write_request(c.conn, created.file_id, 0, d.length, [d])
        with pytest.raises(TransportError) as info:
            c.wait(c.send(Command.WRITE, body, sh.tree_id, d.length))
        assert "remote access error" in str(info.value)
    time.sleep(0.2)
    assert (server.share_dir / "x.bin").read_bytes() == b""  # nothing was written


def test_wirecheck_smb_cli_over_smbdirect(peer_server, tmp_path, monkeypatch):
    """`wirecheck smb --transport smbdirect` puts and gets through RDMA and says how much went that way."""
    from harness.cli.smb import smb

    monkeypatch.chdir(tmp_path)
    data = os.urandom(2 << 20)
    (tmp_path / "up.bin").write_bytes(data)
    unc = "//127.0.0.10/data"
    runner = CliRunner()
    result = runner.invoke(smb, [unc, "--transport", "smbdirect", "--no-sign", "--user", f"{USER}:{PASSWORD}",
                                 "put", "up.bin"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"{2 << 20} bytes by RDMA" in result.output
    result = runner.invoke(smb, [unc, "--transport", "smbdirect", "--user", f"{USER}:{PASSWORD}",
                                 "get", "up.bin", "down.bin"], catch_exceptions=False)
    assert result.exit_code == 0 and "0 bytes by RDMA" in result.output  # signed: inline
    assert (tmp_path / "down.bin").read_bytes() == data


def test_cli_smbdirect_needs_the_emulated_network(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKET_WRAPPER")}
    p = subprocess.run([WIRECHECK, "smb", "//127.0.0.10/data", "--transport", "smbdirect", "--user", "a:b", "ls"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "needs the emulated network" in p.stderr


def test_server_answers_inline_read_too_big_for_one_message(server):
    """An inline READ whose response cannot fit one SMB Direct message is refused with
    INVALID_PARAMETER instead of killing the connection."""
    with client(sign=True) as c, c.share("s") as sh:
        sh.put_bytes("i.bin", os.urandom(3 << 20))
        created = sh.open("i.bin", AccessMask.FILE_READ_DATA | AccessMask.SYNCHRONIZE, CreateDisposition.OPEN)
        body = m.ReadRequest(file_id=created.file_id, length=2 << 20, offset=0)
        response = c.wait(c.send(Command.READ, body, sh.tree_id, 2 << 20))
        assert response.header.status == NtStatus.INVALID_PARAMETER
        c.echo()  # the connection is fine


def test_concurrent_clients(server):
    """Two clients in threads, each with its own registrations: no token crosses connections."""
    errors: list[BaseException] = []

    def run(name: str) -> None:
        try:
            data = os.urandom(5 << 20)
            with client() as c, c.share("s") as sh:
                sh.put_bytes(name, data)
                assert sh.get_bytes(name) == data
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f"c{i}.bin",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        joined(t, 60)
    assert not errors, errors


CLIENT_SCRIPT = """
import os, sys, wrappers
wrappers.activate()
from harness.blocking.client import SMBClient
with SMBClient("127.0.0.11", 445, transport="smbdirect", username=sys.argv[1], password=sys.argv[2], sign=False,
               timeout=20) as c, c.share("s") as sh:
    def blocks():
        for i in range(64):
            if i == 2:
                print("writing", flush=True)
            yield os.urandom(4 << 20)
    sh.write_from("dying.bin", blocks())
print("finished", flush=True)
"""


def test_client_process_dies_mid_write(server, net):
    """A client process killed while the server RDMA-READs its buffers: the server drops that
    connection (its RDMA fails like a NIC's when the peer is gone), stays up and serves the next
    client; nothing is reported as a server error."""
    env = dict(os.environ, SOCKET_WRAPPER_DIR=net.socket_dir, SOCKET_WRAPPER_DEFAULT_IFACE="12",
               PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    p = subprocess.Popen([sys.executable, "-c", CLIENT_SCRIPT, USER, PASSWORD], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert p.stdout.readline().strip() == b"writing", p.stderr.read()[-2000:]
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    deadline = time.monotonic() + 20
    while server._transports and time.monotonic() < deadline:  # the dead client's connection goes away
        time.sleep(0.05)
    assert not server._transports
    data = os.urandom(1 << 20)
    with client() as c, c.share("s") as sh:
        sh.put_bytes("after.bin", data)
        assert sh.get_bytes("after.bin") == data and c.rdma_bytes["read"] == len(data)
    assert not server.errors, server.errors


SIGNED_RDMA = """id: smbdirect/901
description: rdma true on a signed session must fail, not pass off inline I/O as RDMA
groups: [auto, quick, smbdirect]
requires:
  transports: [smbdirect]
steps:
  - serve: {transport: smbdirect, host: 10, share: data, as: srv}
  - smb.connect: {transport: smbdirect, host: 11, to: 10, as: c, sign: true}
  - smb.write: {"on": c, path: f.bin, size: 64KiB, rdma: true}
"""


def test_scenario_rdma_true_fails_when_the_data_went_inline(tmp_path):
    """`smb.write rdma: true` checks that the bytes really went by RDMA: on a signed session (where
    the client rightly stays inline) the step fails and says why."""
    root = Path(__file__).resolve().parents[2]
    (tmp_path / "sc" / "smbdirect").mkdir(parents=True)
    (tmp_path / "sc" / "smbdirect" / "901.yaml").write_text(SIGNED_RDMA)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKET_WRAPPER")}
    env["PYTHONPATH"] = str(root)
    env.pop("CI", None)
    res = subprocess.run([WIRECHECK, "check", "--plain", "--scenarios", str(tmp_path / "sc"), "--results",
                          str(tmp_path / "results"), "--config", str(root / "scenarios" / "sections.conf"),
                          "--knownfail", str(tmp_path / "none"), "-s", "smbdirect", "smbdirect/901"],
                         capture_output=True, text=True, timeout=120, env=env, cwd=str(root))
    assert res.returncode == 1, res.stdout + res.stderr
    text = "".join(p.read_text(errors="replace") for p in (tmp_path / "results").rglob("901*") if p.is_file())
    assert "only 0 of 65536 bytes went by RDMA" in text + res.stdout, res.stdout + text[-2000:]
