"""Captures nobody here made: Samba's smbclient and smbprotocol against a real smbd on port 27445,
ngtcp2's examples on an odd UDP port.  The pcap library must find SMB2 by its magic on a port it was
not told about (else every SMB count is 0 and "no CREATE" passes on a capture full of CREATEs), show in
the ladder what Wireshark's Info column shows (file names, status names, info classes), and fail a
check about a protocol the capture never showed instead of passing it.

smbd runs on real loopback (it cannot run under cwrap); the clients reach it through tcp_relay.py
(its listener wrapped in-process), which records the client side of each connection on port 27445.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from procutil import PYTHON, clean_env, native_env, need_program, need_tshark, wirecheck_exec
from quic.certs import make_pki

from harness.pcap import Capture, Count
from harness.pcap.ladder import ladder
from harness.peers.smb_samba import PASSWORD, USER, Smbd
from wrappers.pcapfile import PcapWriter

pytestmark = pytest.mark.peer

RELAY = str(Path(__file__).with_name("tcp_relay.py"))
ROOT = Path(__file__).resolve().parents[2]
ODD_PORT = 27445
SERVER = "127.0.0.10"


def _missing(program: str, apt: str) -> None:
    from procutil import _missing as missing

    missing(program, apt)


@pytest.fixture
def smbd(tmp_path):
    server = Smbd(tmp_path / "smbd", signing="mandatory", missing=_missing)
    yield server
    server.stop()


@pytest.fixture
def relayed(tmp_path, sockdir, smbd):
    """(socket dir, pcap): a relay on SERVER:27445 (emulated, recorded) to smbd (real loopback)."""
    need_tshark()
    pcap = tmp_path / "odd-port.pcap"
    relay = subprocess.Popen([PYTHON, RELAY, str(sockdir), "10", str(pcap), SERVER, str(ODD_PORT), str(smbd.port)],
                             env=dict(clean_env(), PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        assert relay.stdout is not None and relay.stdout.readline().strip() == "ready", relay.stdout.read()
        yield sockdir, pcap
    finally:
        os.killpg(relay.pid, 9)
        relay.wait(10)


SMBPROTOCOL_CLIENT = textwrap.dedent("""
    import sys, smbclient
    host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    smbclient.register_session(host, username=user, password=password, port=port, encrypt=False)
    with smbclient.open_file(rf"\\\\{host}\\share\\hello.txt", mode="w", port=port) as f:
        f.write("hello from smbprotocol")
    print(smbclient.stat(rf"\\\\{host}\\share\\hello.txt", port=port).st_size)
    try:
        smbclient.stat(rf"\\\\{host}\\share\\no-such-file.txt", port=port)
    except OSError as e:
        print("missing:", e.errno)
    smbclient.reset_connection_cache()
""")


def test_smbprotocol_and_smbclient_against_smbd_on_port_27445(tmp_path, relayed, smbd):
    sockdir, pcap = relayed
    script = tmp_path / "client.py"
    script.write_text(SMBPROTOCOL_CLIENT)
    res = subprocess.run(wirecheck_exec(sockdir, PYTHON, str(script), SERVER, str(ODD_PORT), USER, PASSWORD,
                                        iface=11), env=clean_env(), capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.split() == ["22", "missing:", "2"], res.stdout
    assert (smbd.share_dir / "hello.txt").read_text() == "hello from smbprotocol"
    # smbclient (Samba's C client) under cwrap, without a pcap of its own: the relay records it
    smbclient = need_program("smbclient", "smbclient")
    (tmp_path / "up.txt").write_text("from smbclient\n")
    res = subprocess.run([smbclient, f"//{SERVER}/share", "-p", str(ODD_PORT), "-m", "SMB3", "-U",
                          f"{USER}%{PASSWORD}", "-s", "/dev/null", "--client-protection=sign",
                          "-c", "put up.txt from-smbclient.txt; ls"], cwd=tmp_path,
                         env=native_env(sockdir, iface=12), capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (smbd.share_dir / "from-smbclient.txt").read_text() == "from smbclient\n"
    time.sleep(0.5)  # the relay's last records (the closes) after the clients exit

    # tshark alone sees bare TCP data on 27445: a check about SMB2 fails as vacuous, not passes
    blind = Capture(pcap, detect_smb=False)
    assert blind.count("smb2") == 0 and blind.count(f"tcp.port == {ODD_PORT} && tcp.len > 0") > 10
    with pytest.raises(AssertionError, match="no frame was dissected as smb2 at all"):
        blind.check(Count("smb2.cmd == 5", eq=0))

    cap = Capture(pcap)
    creates = cap.count("smb2.cmd == 5 && smb2.flags.response == 0")
    assert cap.detected_smb_ports == [ODD_PORT]
    assert creates >= 4, creates
    assert cap.count('smb2.filename == "hello.txt"') >= 1 and cap.count('smb2.filename == "from-smbclient.txt"') >= 1
    assert cap.count("smb2.nt_status == 0xc0000034") >= 1  # STATUS_OBJECT_NAME_NOT_FOUND for no-such-file.txt
    with pytest.raises(AssertionError, match=r"CREATE|smb2\.cmd == 5"):
        cap.check(Count("smb2.cmd == 5", eq=0))  # the capture IS full of CREATEs
    # one SMB connection per client, both on the odd port
    assert len(cap.groups("tcp", f"smb2 && tcp.port == {ODD_PORT}")) >= 2

    text = "\n".join(ladder(cap))
    assert "CREATE req File: hello.txt" in text and "CREATE req File: from-smbclient.txt" in text, text
    assert "CREATE resp STATUS_OBJECT_NAME_NOT_FOUND" in text, text
    assert "QUERY_INFO req FILE_INFO/SMB2_FILE_BASIC_INFO" in text, text
    assert "SESSION_SETUP resp STATUS_MORE_PROCESSING_REQUIRED" in text, text


def test_ngtcp2_on_an_odd_udp_port_is_quic_and_not_smb(tmp_path, sockdir):
    need_tshark()
    server, client = need_program("gtlsserver", "ngtcp2-server"), need_program("gtlsclient", "ngtcp2-client")
    (tmp_path / "pki").mkdir()
    pki = make_pki(str(tmp_path / "pki"))
    www = tmp_path / "www"
    www.mkdir()
    (www / "f.txt").write_bytes(os.urandom(20_000))
    pcap, keys = tmp_path / "ngtcp2.pcap", tmp_path / "ngtcp2.keys"
    # The file exists with its header before either cwrap process starts, as `wirecheck exec` makes
    # it. Seen once without it: "not a pcap or pcapng file", the file starting with a record; the
    # likely cause is two cwrap processes creating the file at once, one appending a record before
    # the creator wrote the header.
    PcapWriter(pcap).close()
    port = 24443
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115
    srv = subprocess.Popen([server, "-d", str(www), "127.0.0.12", str(port), pki["server_key"], pki["server"],
                            "--max-gso-dgrams=1"], env=native_env(sockdir, iface=12, pcap=pcap), stdout=log,
                           stderr=subprocess.STDOUT, start_new_session=True)
    try:
        name = sockdir / f"U0C{port:04X}"
        deadline = time.monotonic() + 10
        while not name.exists():
            assert srv.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.05)
        (tmp_path / "dl").mkdir()
        env = dict(native_env(sockdir, iface=11, pcap=pcap), SSLKEYLOGFILE=str(keys))
        res = subprocess.run([client, "-q", "--exit-on-all-streams-close", f"--download={tmp_path / 'dl'}",
                              "127.0.0.12", str(port), f"https://localhost:{port}/f.txt"], env=env,
                             capture_output=True, timeout=60)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        assert (tmp_path / "dl/f.txt").read_bytes() == (www / "f.txt").read_bytes()
    finally:
        os.killpg(srv.pid, 9)
        srv.wait(10)
        log.close()
    cap = Capture(pcap, keylog=keys if keys.exists() else None)
    assert cap.count(f"quic && udp.port == {port}") > 5
    cap.check(Count("quic.long.packet_type == 0", min=1))
    with pytest.raises(AssertionError, match="no frame was dissected as smb2 at all"):
        cap.check(Count("smb2.cmd == 5", eq=0))
