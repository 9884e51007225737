"""Every kind of bad input to `wirecheck pcap`, through the CLI: a clear message, exit status 2, never a traceback.

Why through the CLI: the library raises typed errors (test_pcap_badinput.py), but users meet the
command, and a forgotten `except` there turns a bad file into a Python traceback and exit 1 —
which CI would read as "the product is wrong"."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli.pcap import pcap

from . import captures as gen

ROOT = Path(__file__).resolve().parents[2]


def run(*args) -> tuple[int, str]:
    r = CliRunner().invoke(pcap, [str(a) for a in args])
    assert r.exception is None or isinstance(r.exception, SystemExit), f"uncaught {r.exception!r}\n{r.output}"
    assert "Traceback" not in r.output
    return r.exit_code, r.output


@pytest.fixture
def checks(tmp_path):
    p = tmp_path / "checks.yaml"
    p.write_text("- no_malformed\n")
    return p


def _both(capture, checks, *extra):
    """The same input to `check` and to `show`: both must refuse it the same way."""
    return [run("check", capture, "--checks", checks, *extra), run("show", capture, *extra)]


def test_pcap_cli_missing_file(tmp_path, checks):
    for code, out in _both(tmp_path / "nope.pcap", checks):
        assert code == 2 and "nope.pcap: no such capture file" in out, out


def test_pcap_cli_truncated_capture(tcp_pcap, tmp_path, checks):
    cut = gen.truncate_file(tcp_pcap, tmp_path / "cut.pcap")
    for code, out in _both(cut, checks):
        assert code == 2 and "the capture is truncated" in out, out


@pytest.mark.parametrize("content", [b"", b"GET / HTTP/1.1\r\n\r\n", bytes(range(256))])
def test_pcap_cli_not_a_capture(tmp_path, checks, content):
    p = tmp_path / "x.pcap"
    p.write_bytes(content)
    for code, out in _both(p, checks):
        assert code == 2 and ("not a pcap or pcapng file" in out or "empty file" in out), out


def test_pcap_cli_missing_or_bad_keys(enc_capture, quic_capture, tmp_path, checks):
    path, _, _ = enc_capture
    for code, out in _both(path, checks, "--smb-keys", tmp_path / "none.smbkeys"):
        assert code == 2 and "none.smbkeys" in out and "not found" in out, out
    bad = tmp_path / "bad.keys"
    bad.write_text("CLIENT_RANDOM tooshort\n")
    for code, out in _both(quic_capture[0], checks, "--keylog", bad):
        assert code == 2 and "bad.keys:1: not an NSS key log line" in out, out


def test_pcap_cli_keys_that_do_not_decrypt_are_a_notice_not_a_crash(enc_capture, tmp_path):
    """Encrypted traffic without its keys is not bad input: `show` says which keys are missing."""
    code, out = run("show", enc_capture[0])
    assert code == 0 and "notice: SMB3 traffic stayed encrypted" in out and "needed: the S2C and C2S keys" in out


def test_pcap_cli_unknown_field(tcp_pcap, tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("- count: {match: {smb2.cmd: 9}}\n- count: {match: {smb2.write_lenght: {gt: 1}}}\n")
    code, out = run("check", tcp_pcap, "--checks", p)
    assert code == 2 and "c.yaml:2" in out and "smb2.write_lenght" in out, out


def test_pcap_cli_schema_error_names_file_line(tcp_pcap, tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("- no_malformed\n- count: {filter: smb2, eq: many}\n")
    code, out = run("check", tcp_pcap, "--checks", p)
    assert code == 2 and "c.yaml:2" in out, out


def test_pcap_cli_bad_display_filter(tcp_pcap, tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text('- count: {filter: "smb2.cmd == == 9"}\n')
    code, out = run("check", tcp_pcap, "--checks", p)
    assert code == 2 and "invalid display filter" in out, out


def test_pcap_cli_unwritable_svg(tcp_pcap, tmp_path):
    code, out = run("show", tcp_pcap, "--svg", tmp_path / "no" / "dir" / "x.svg")
    assert code == 2 and "cannot write" in out, out


def test_pcap_cli_tshark_not_installed(tcp_pcap, tmp_path, checks):
    """A real process with no tshark anywhere: the message says how to install it."""
    env = dict(os.environ, WIRECHECK_TSHARK=str(tmp_path / "no-tshark"), PATH=str(tmp_path),
               XDG_CACHE_HOME=str(tmp_path / "cache"))
    for args in (["check", str(tcp_pcap), "--checks", str(checks)], ["show", str(tcp_pcap)]):
        r = subprocess.run([sys.executable, "-c", "from harness.cli.pcap import pcap; pcap()", *args],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, r.stderr
        assert "apt-get install tshark" in r.stderr and "Traceback" not in r.stderr, r.stderr
