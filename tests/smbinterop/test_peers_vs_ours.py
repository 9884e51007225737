"""Other clients against our server: smbclient 4.17 (signed, encrypted; real loopback and the emulated
network) and smbprotocol 1.17 (encrypted)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import tsharkutil
from peers_smb import PASSWORD, USER, free_port, need, wait_port
from procutil import WIRECHECK, clean_env, native_env, wirecheck_exec

from harness.pcap import Capture, catalogue
from harness.smb.keys import parse_keys_file


def _smbclient(port: int, protection: str, commands: str, cwd, host: str = "127.0.0.1", env=None, share="share"):
    program = need("smbclient", "smbclient")
    argv = [program, f"//{host}/{share}", "-p", str(port), "-m", "SMB3", "-U", f"{USER}%{PASSWORD}", "-s", "/dev/null",
            f"--client-protection={protection}", "-c", commands]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("protection", ["sign", "encrypt"])
def test_smbclient_put_get_ls(our_server, tmp_path, protection):
    data = os.urandom(2 * 1024 * 1024 + 3)
    (tmp_path / "up.bin").write_bytes(data)
    result = _smbclient(our_server.port, protection, "put up.bin r.bin; get r.bin down.bin; ls", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (our_server.share_dir / "r.bin").read_bytes() == data
    assert (tmp_path / "down.bin").read_bytes() == data
    assert "r.bin" in result.stdout
    our_server.stop()  # the capture is complete once every connection is closed
    cap = _server_capture(our_server)
    assert cap.count("smb2.cmd == 9 && smb2.flags.response == 0") >= 1, "no WRITE (decrypted) in the capture"
    assert cap.count("smb2.cmd == 8 && smb2.flags.response == 0") >= 1, "no READ (decrypted) in the capture"
    if protection == "encrypt":
        cap.expect(catalogue.build("smb2.encrypted")).verify()  # nothing after SESSION_SETUP in the clear
    else:
        assert cap.count("smb2.header.transform.msg_size") == 0, "sign only, yet TRANSFORM headers"
        cap.expect(catalogue.build("smb2.signed")).verify()


def test_smbclient_encrypted_share(our_server, tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 1000)
    result = _smbclient(our_server.port, "encrypt", "put a b; ls", tmp_path, share="enc")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (our_server.enc_dir / "b").read_bytes() == b"x" * 1000
    our_server.stop()
    cap = _server_capture(our_server)
    cap.expect(catalogue.build("smb2.encrypted")).verify()
    _assert_tree_encrypted(cap, "enc")


def test_smbclient_signed_cannot_use_encrypted_share_unencrypted(our_server, tmp_path):
    """A share that requires encryption: smbclient with sign-only still connects encrypted (the
    share flag ENCRYPT_DATA makes it encrypt), so the put succeeds and the server saw only
    encrypted traffic on that tree."""
    (tmp_path / "a").write_bytes(b"y" * 10)
    result = _smbclient(our_server.port, "sign", "put a c", tmp_path, share="enc")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (our_server.enc_dir / "c").read_bytes() == b"y" * 10
    our_server.stop()
    _assert_tree_encrypted(_server_capture(our_server), "enc")


def _server_capture(server) -> Capture:
    """The capture of every connection our server accepted (tests/pdu_pcap.py), with the session
    keys it wrote, so that tshark decrypts what was encrypted."""
    tsharkutil.tshark_path()  # no tshark: fail under CI, skip elsewhere
    assert server.pcap is not None and parse_keys_file(server.keys.read_text()), "no capture or no keys"
    return Capture(server.pcap, smb_keys=server.keys)


def _assert_tree_encrypted(cap: Capture, share: str) -> None:
    """The tree of ``share`` was used only encrypted: its TREE_CONNECT response carries
    SMB2_SHAREFLAG_ENCRYPT_DATA, at least one request used the tree, and every other message on that
    tree id travelled in a TRANSFORM header.  The TREE_CONNECT itself may be plain both ways on a
    session without EncryptData (MS-SMB2 3.3.4.1.4 exempts its response); after it, the server
    refuses a plain request on such a tree (3.3.5.2.9), so a plain one here is a server that let it in."""
    connects = cap.frames("smb2.cmd == 3 && smb2.flags.response == 0", fields=["smb2.tree", "smb2.msg_id", "tcp.stream"])
    ours = [f for f in connects if str(f["smb2.tree"]).lower().endswith("\\" + share)]
    assert ours, f"no TREE_CONNECT to {share}"
    responses = cap.frames("smb2.cmd == 3 && smb2.flags.response == 1 && smb2.nt_status == 0",
                           fields=["smb2.tid", "smb2.msg_id", "tcp.stream", "smb2.share_flags.encrypt_data"])
    tids = set()
    for request in ours:
        answer = [r for r in responses if (r["tcp.stream"], r["smb2.msg_id"]) == (request["tcp.stream"], request["smb2.msg_id"])]
        assert len(answer) == 1, f"TREE_CONNECT in frame {request.number}: no successful response"
        assert answer[0]["smb2.share_flags.encrypt_data"] in (1, True), "share without ENCRYPT_DATA"
        tids.add(answer[0]["smb2.tid"])
    on_tree = " || ".join(f"smb2.tid == {t}" for t in tids)
    assert cap.count(f"({on_tree}) && smb2.cmd != 3 && smb2.flags.response == 0") >= 1, "nothing used the tree"
    plain = cap.frames(f"({on_tree}) && smb2.cmd != 3 && !smb2.header.transform.msg_size")
    assert not plain, f"plain SMB2 on the encrypted tree: frames {[f.number for f in plain]}"


def test_smbclient_emulated_network(tmp_path, sockdir):
    """smbclient under Debian's libsocket_wrapper.so, our server under our wrapper, one socket dir."""
    need("smbclient", "smbclient")
    share = tmp_path / "share"
    share.mkdir()
    pcap = tmp_path / "run.pcap"
    keys = tmp_path / "keys.txt"
    server = subprocess.Popen(
        wirecheck_exec(sockdir, WIRECHECK, "serve", "--listen", "127.0.0.10:445", "--share", f"share={share}",
                       "--user", f"{USER}:{PASSWORD}", "--keys-out", str(keys), iface=10, pcap=pcap),
        env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline_ok = _wait_socket(sockdir, server)
        assert deadline_ok, server.stdout.read1().decode() if server.stdout else ""
        data = os.urandom(300_000)
        (tmp_path / "up.bin").write_bytes(data)
        # smbclient logs nothing itself: our server then records both directions of its
        # connections, once and consistently (cwrap logging into the same file would duplicate
        # every segment and make tshark's reassembly, and so the decryption, timing-dependent).
        env = native_env(sockdir, iface=11)
        for protection in ("sign", "encrypt"):
            result = _smbclient(445, protection, f"put up.bin {protection}.bin; get {protection}.bin d-{protection}; ls",
                                tmp_path, host="127.0.0.10", env=env)
            assert result.returncode == 0, result.stdout + result.stderr
            assert (share / f"{protection}.bin").read_bytes() == data
            assert (tmp_path / f"d-{protection}").read_bytes() == data
        # Our own client on the same emulated network, AES-256-GCM, writing its own keys file.
        client_keys = tmp_path / "client-keys.txt"
        ours = subprocess.run(
            wirecheck_exec(sockdir, WIRECHECK, "smb", "//127.0.0.10/share", "--user", f"{USER}:{PASSWORD}",
                           "--encrypt", "--cipher", "aes-256-gcm", "--keys-out", str(client_keys), "put",
                           str(tmp_path / "up.bin"), "ours.bin", iface=12, pcap=pcap),
            env=clean_env(), capture_output=True, text=True, timeout=60)
        assert ours.returncode == 0, ours.stdout + ours.stderr
        assert (share / "ours.bin").read_bytes() == data
    finally:
        os.killpg(server.pid, 15)
        server.wait(10)
    assert pcap.exists() and pcap.stat().st_size > 900_000
    records = parse_keys_file(keys.read_text())
    assert len(records) == 3  # smbclient sign (still gets cipher keys), smbclient encrypt, ours
    client_records = parse_keys_file(client_keys.read_text())
    assert client_records[0] in records  # both ends derived the same keys
    _check_capture(pcap, records)


def _check_capture(pcap, records) -> None:
    """tshark dissects everything without malformed packets and decrypts the encrypted sessions with
    our keys.  Only our wrapper writes the capture (smbclient runs under cwrap without a pcap), so
    every stream must be free of any TCP or checksum complaint."""
    ours = tsharkutil.fields(pcap, ["frame.number", "_ws.col.Info"], options=tsharkutil.CHECKSUM_OPTS,
                             display_filter=tsharkutil.PROBLEM_FILTER)
    assert ours == []  # every stream: only our wrapper writes this capture
    options = []
    for record in records:
        options += ["-o", f"uat:smb2_seskey_list:{record.line()}"]
    encrypted = tsharkutil.count_frames(pcap, display_filter="smb2.header.transform.flags.encrypted == 1")
    assert encrypted > 0
    rows = tsharkutil.fields(pcap, ["_ws.col.Info"], display_filter="smb2", options=options)
    infos = [row[0] for row in rows]
    assert not any("Encrypted SMB3" in info for info in infos), [i for i in infos if "Encrypted" in i][:5]
    assert any("Decrypted SMB3" in info and "Write Request" in info for info in infos)
    assert any("Decrypted SMB3" in info and "Read Request" in info for info in infos)
    assert any("Decrypted SMB3" in info and "Write Response" in info for info in infos)
    # Malformed frames: none anywhere.
    malformed = tsharkutil.count_frames(pcap, display_filter="_ws.malformed || _ws.expert.severity >= error")
    assert malformed == 0
    smb_malformed = tsharkutil.fields(pcap, ["frame.number", "_ws.col.Info"], options=options,
                                      display_filter="smb2 && _ws.malformed && !tcp.analysis.flags")
    assert len(smb_malformed) <= 0 or all("Retransmission" in row[1] or "Out-Of-Order" in row[1]
                                          for row in smb_malformed), smb_malformed[:5]


def _wait_socket(sockdir, proc, timeout: float = 20.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if any(name.upper().startswith("T0A") for name in os.listdir(sockdir)):
            return True
        time.sleep(0.1)
    return False


SMBPROTOCOL_SCRIPT = r"""
import os, sys, uuid
import smbclient
host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
smbclient.register_session(host, username=user, password=password, port=port, encrypt=True)
data = os.urandom(3 * 1024 * 1024 + 11)
path = rf"\\{host}\share\sp.bin"
with smbclient.open_file(path, mode="wb", port=port) as f:
    f.write(data)
with smbclient.open_file(path, mode="rb", port=port) as f:
    assert f.read() == data
names = smbclient.listdir(rf"\\{host}\share", port=port)
assert "sp.bin" in names, names
smbclient.mkdir(rf"\\{host}\share\dir1", port=port)
smbclient.rmdir(rf"\\{host}\share\dir1", port=port)
smbclient.remove(path, port=port)
print("OK", sorted(names))
"""


def test_smbprotocol_encrypted(our_server):
    result = subprocess.run([sys.executable, "-c", SMBPROTOCOL_SCRIPT, "127.0.0.1", str(our_server.port), USER,
                             PASSWORD], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK")
    assert not (our_server.share_dir / "sp.bin").exists()
    our_server.stop()
    cap = _server_capture(our_server)
    cap.expect(catalogue.build("smb2.encrypted")).verify()  # encrypt=True: nothing plain after setup
    assert cap.count("smb2.cmd == 9 && smb2.flags.response == 0") >= 1, "no decrypted WRITE"


def test_port_helpers():
    port = free_port()
    assert port > 20000
    with pytest.raises(TimeoutError):
        wait_port(port, timeout=0.3)
