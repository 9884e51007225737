"""`wirecheck smb` against an in-process server (click's runner), and the argument parsers."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from harness.blocking.server import SMBServer
from harness.cli.smb import _split_hostport, serve, smb
from harness.smb.keys import parse_keys_file
from harness.smb.server import ServerConfig, ShareConfig

USER = "cli:Cli-pw-1"


@pytest.fixture
def server(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    config = ServerConfig(shares={"data": ShareConfig("data", str(share))}, users={"cli": "Cli-pw-1"})
    with SMBServer(config, "127.0.0.1", 0) as srv:
        srv.share_dir = share
        yield srv


def run(*args):
    result = CliRunner().invoke(smb, [str(a) for a in args], catch_exceptions=False)
    return result


def test_commands(server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    unc = f"//127.0.0.1:{server.port}/data"
    (tmp_path / "local.txt").write_bytes(b"hello cli\n")
    keys = tmp_path / "keys.txt"
    assert run(unc, "--user", USER, "--encrypt", "--keys-out", keys, "put", "local.txt", "remote.txt").exit_code == 0
    assert (server.share_dir / "remote.txt").read_bytes() == b"hello cli\n"
    assert parse_keys_file(keys.read_text())
    listing = run(unc, "--user", USER, "ls")
    assert listing.exit_code == 0 and "remote.txt" in listing.output
    assert run(unc, "--user", USER, "cat", "remote.txt").output == "hello cli\n"
    assert run(unc, "--user", USER, "get", "remote.txt", "back.txt").exit_code == 0
    assert (tmp_path / "back.txt").read_bytes() == b"hello cli\n"
    assert run(unc, "--user", USER, "mkdir", "sub").exit_code == 0
    assert (server.share_dir / "sub").is_dir()
    assert run(unc, "--user", USER, "rmdir", "sub").exit_code == 0
    assert run(unc, "--user", USER, "rm", "remote.txt").exit_code == 0
    assert not (server.share_dir / "remote.txt").exists()


def test_errors_are_reported(server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    unc = f"//127.0.0.1:{server.port}/data"
    result = CliRunner().invoke(smb, [unc, "--user", "cli:wrong", "ls"])
    assert result.exit_code != 0 and "LOGON_FAILURE" in result.output
    result = CliRunner().invoke(smb, [f"//127.0.0.1:{server.port}/nope", "--user", USER, "ls"])
    assert "BAD_NETWORK_NAME" in result.output
    result = CliRunner().invoke(smb, [unc, "--user", USER, "get", "..\\..\\etc\\passwd", "x"])
    assert "OBJECT_PATH_SYNTAX_BAD" in result.output
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("x")], "a failed get leaves no local file"


def test_parsers():
    assert _split_hostport("10.0.0.1:4450", 445) == ("10.0.0.1", 4450)
    assert _split_hostport("host", 139) == ("host", 139)
    assert _split_hostport("[::1]:4450", 445) == ("::1", 4450)
    assert _split_hostport("[fd00::1]", 443) == ("fd00::1", 443)
    result = CliRunner().invoke(serve, ["--share", "x=/nonexistent", "--user", "a:b"])
    assert result.exit_code != 0


def test_hold_prints_the_lease_and_its_break(server, tmp_path):
    import threading
    import time

    from harness.blocking.client import SMBClient
    from harness.smb.constants import AccessMask, CreateDisposition

    (server.share_dir / "held.txt").write_bytes(b"x")
    unc = f"//127.0.0.1:{server.port}/data"
    out: list = []
    holder = threading.Thread(target=lambda: out.append(run(unc, "--user", USER, "--lease", "RWH", "hold",
                                                            "held.txt", "1.5")))
    holder.start()
    time.sleep(0.7)  # the holder has its lease
    with SMBClient("127.0.0.1", server.port, username="cli", password="Cli-pw-1") as other:
        share = other.share("data")
        share.open("held.txt", AccessMask.FILE_READ_DATA, CreateDisposition.OPEN)
    holder.join(10)
    result = out[0]
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("granted lease RWH epoch 1")
    assert "lease break RWH -> RH epoch 2 (ack required)" in lines
    assert "acknowledged: status 0x00000000" in lines


def test_lock_and_notify_commands(server):
    """`lock` holds a range another `lock` cannot take (and a waiting one gets once it is released);
    `notify` prints the change another client makes."""
    import subprocess
    import sys
    import threading
    import time

    unc = f"//127.0.0.1:{server.port}/data"
    (server.share_dir / "locked.bin").write_bytes(bytes(64))
    holder = threading.Thread(target=run, args=(unc, "--user", USER, "lock", "locked.bin", "0", "16", "hold=1.5"))
    holder.start()
    time.sleep(0.7)
    refused = CliRunner().invoke(smb, [unc, "--user", USER, "lock", "locked.bin", "8", "4"])
    assert refused.exit_code != 0 and "LOCK_NOT_GRANTED" in refused.output
    waited = CliRunner().invoke(smb, [unc, "--user", USER, "lock", "locked.bin", "8", "4", "wait"])
    holder.join()
    assert waited.exit_code == 0, waited.output
    # click's runner swaps sys.stdout for the whole process: the watcher runs as its own process
    watcher = subprocess.Popen([sys.executable, "-c", "from harness.cli import main; main()", "smb", unc, "--user",
                                USER, "--timeout", "10", "notify", "filter=names"], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30  # until its CHANGE_NOTIFY waits on the server
    while not any(w.requests for w in server.state.notify.watched()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run(unc, "--user", USER, "mkdir", "made-by-another").exit_code == 0
    output, _ = watcher.communicate(timeout=20)
    assert watcher.returncode == 0 and output.split() == ["ADDED", "made-by-another"]


def test_security_descriptor_and_stream_commands(server, tmp_path, monkeypatch):
    """`setsd` replaces a file's DACL (an open the new DACL denies then fails), `getsd` prints it,
    `put`/`cat` reach a named stream by FILE:STREAM and `streams` lists it."""
    monkeypatch.chdir(tmp_path)
    unc = f"//127.0.0.1:{server.port}/data"
    (tmp_path / "local.txt").write_bytes(b"main")
    (tmp_path / "side.txt").write_bytes(b"on the side")
    assert run(unc, "--user", USER, "put", "local.txt", "f.txt").exit_code == 0
    assert run(unc, "--user", USER, "put", "side.txt", "f.txt:notes").exit_code == 0
    assert run(unc, "--user", USER, "cat", "f.txt:notes").output == "on the side"
    listed = run(unc, "--user", USER, "streams", "f.txt").output.split()
    assert listed == ["::$DATA", "4", ":notes:$DATA", "11"]
    owner = run(unc, "--user", USER, "getsd", "f.txt").output.split()[1]
    assert owner.startswith("S-1-5-21-")
    # deny reading data to everyone, allow the rest to the owner
    done = run(unc, "--user", USER, "setsd", "f.txt", "deny:S-1-1-0:0x1", f"allow:{owner}:0x1f01fe")
    assert done.exit_code == 0, done.output
    shown = run(unc, "--user", USER, "getsd", "f.txt").output
    assert "deny:S-1-1-0:0x00000001:0x00" in shown and f"allow:{owner}:0x001f01fe:0x00" in shown
    refused = CliRunner().invoke(smb, [unc, "--user", USER, "cat", "f.txt"])
    assert refused.exit_code != 0 and "ACCESS_DENIED" in refused.output
    bad = CliRunner().invoke(smb, [unc, "--user", USER, "setsd", "f.txt", "maybe:S-1-1-0:1"])
    assert bad.exit_code != 0 and "allow|deny" in bad.output
