"""Declarative YAML checks and the `wirecheck pcap` commands (exit 0 pass / 1 fail / 2 bad input)."""
from __future__ import annotations

import textwrap

import pytest
from click.testing import CliRunner

from harness.cli.pcap import pcap
from harness.pcap import ChecksError, load_checks, parse_checks
from harness.pcap import tshark as ts
from harness.pcap.checks_yaml import load_yaml

GOOD = """\
checks:
  - count: {filter: "smb2.cmd == 9", eq: 4}
  - count:
      match:
        smb2.cmd: 9
        smb2.write_length: {gt: 100}
      eq: 1
      per: tcp
  - absent: {filter: "smb2.cmd == 6"}
  - first: {filter: smb2, is: {match: {smb2.cmd: 0}}}
  - last: {match: {smb2.cmd: {exists: true}}, is: "smb2.cmd == 13"}
  - before: {a: "smb2.cmd == 0", b: {match: {smb2.cmd: 1}}, within_frames: 10, within_ms: 50}
  - followed_by: {a: "smb2.cmd == 9 && smb2.flags.response == 0", b: "smb2.cmd == 9 && smb2.flags.response == 1"}
  - sequence: {steps: ["smb2.cmd == 0", "smb2.cmd == 1", "smb2.cmd == 3"], per: tcp}
  - values: {field: smb2.dialect, match: {smb2.cmd: 0, smb2.flags.response: 1}, all: {eq: 0x311}, distinct: 1}
  - values: {field: smb2.msg_id, filter: "smb2.flags.response == 1 && tcp.stream == 1", increasing: true}
  - count: {filter: "tcp.flags.syn == 1", eq: 2, per: tcp, name: handshake per stream}
  - smb2.dialect: {eq: 0x311}
  - smb2.signed
  - tcp.no_retransmission
  - no_malformed
  - smb2.all_requests_answered
"""


def write(tmp_path, text, name="checks.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def run(*args):
    return CliRunner().invoke(pcap, [str(a) for a in args])


def test_pcap_yaml_all_kinds_pass(clean_pcap, tmp_path):
    r = run("check", clean_pcap, "--checks", write(tmp_path, GOOD))
    assert r.exit_code == 0, r.output
    assert "===> " in r.output and "PASSED:  16" in r.output and "FAILED:  0" in r.output


def test_pcap_yaml_failure_exit_1_names_check_line_and_frames(tcp_pcap, tmp_path):
    p = write(tmp_path, "- count: {filter: 'smb2.cmd == 9', eq: 1}\n- tcp.no_retransmission\n- no_malformed\n")
    r = run("check", tcp_pcap, "--checks", p)
    assert r.exit_code == 1, r.output
    assert f"===> {p}:1:3: count 'smb2.cmd == 9': FAILED" in r.output
    assert "actual:   2 (frames 16, 19)" in r.output
    assert f"{p}:2:3: tcp.no_retransmission" in r.output and "frame 17" in r.output
    assert f"{p}:3:3: no_malformed" in r.output and "frame 33" in r.output
    assert "FAILED:  3" in r.output


def test_pcap_yaml_unknown_field_reported_with_line_before_tshark(tcp_pcap, tmp_path, monkeypatch):
    def no_pass(*a, **kw):
        raise AssertionError("tshark pass must not run")
    monkeypatch.setattr(ts, "fields_pass", no_pass)
    p = write(tmp_path, """\
        checks:
          - count:
              match:
                smb2.write_lenght: {gt: 100}
          - absent: {filter: "smb2.cmd == 1 && smb2.foo"}
          - values: {field: smb2.dialekt, all: 1}
          - count: {filter: smb2, per: smb2.sesidd}
        """)
    r = run("check", tcp_pcap, "--checks", p)
    assert r.exit_code == 2, r.output
    assert f"{p}:4:9: unknown field 'smb2.write_lenght'" in r.output
    assert f"{p}:5:22: unknown field 'smb2.foo' in display filter" in r.output
    assert f"{p}:6:21: unknown field 'smb2.dialekt'" in r.output
    assert f"{p}:7:32: unknown field 'smb2.sesidd'" in r.output


@pytest.mark.parametrize("text,msg", [
    ("- count: {filter: smb2, mn: 2}\n", ":1:10: count: unknown key(s) 'mn'"),
    ("- values: {field: smb2.cmd, all: {eqq: 1}}\n", ":1:34: values: all: unknown operator(s) 'eqq'"),
    ("- count: {match: {smb2.cmd: {between: 1}}}\n", ":1:29: count: match.smb2.cmd: unknown operator(s) 'between'"),
    ("- quic.bogus\n", ":1:3: unknown check 'quic.bogus'"),
    ("- smb2.dialect: {eq: 0x311, x: 1}\n", ":1:17: smb2.dialect: unknown key(s) 'x'"),
    ("- tcp.no_retransmission: {x: 1}\n", "takes no arguments"),
    ("- count: {filter: smb2, eq: -1}\n", ":1:29: count: eq: -1 is less than the minimum of 0"),
    ("- before: {a: smb2}\n", ":1:11: before: 'b' is a required property"),
    ("- count: {filter: smb2}\n  - x\n", ":2:3: YAML error"),
    ("checks: 3\n", ":1:9: checks file: checks: 3 is not of type 'array'"),
    ("- {count: {filter: smb2}, absent: {filter: smb2}}\n", ":1:3: a check is a catalogue name or a mapping with exactly one key"),
])
def test_pcap_yaml_schema_errors_have_file_line_col(tmp_path, text, msg):
    p = write(tmp_path, text)
    with pytest.raises(ChecksError) as ei:
        load_checks(p)
    assert f"{p}{msg}" in str(ei.value) if msg.startswith(":") else msg in str(ei.value), str(ei.value)


def test_pcap_yaml_inside_a_scenario(tcp_pcap):
    from harness.pcap import Capture

    data = load_yaml("expect:\n  - pcap: [tcp.no_retransmission, {count: {filter: 'smb2.cmd == 9', min: 1}}]\n",
                     "quic/031.yaml")
    checks = parse_checks(data["expect"][0]["pcap"], "quic/031.yaml")
    results = Capture(tcp_pcap).results(checks)
    assert [r.ok for r in results] == [False, True]
    assert results[0].name == "quic/031.yaml:2:12: tcp.no_retransmission"


def test_pcap_cli_bad_input_exit_2(tmp_path, tcp_pcap):
    checks = write(tmp_path, "- no_malformed\n")
    bad = tmp_path / "bad.pcap"
    bad.write_text("nope")
    r = run("check", bad, "--checks", checks)
    assert r.exit_code == 2 and "not a pcap or pcapng file" in r.output
    r = run("check", tcp_pcap, "--checks", tmp_path / "missing.yaml")
    assert r.exit_code == 2 and "no such checks file" in r.output
    r = run("check", tcp_pcap)
    assert r.exit_code == 2 and "Missing option '--checks'" in r.output


def test_pcap_cli_keys_options(enc_capture, quic_capture, tmp_path):
    path, keyfile, _ = enc_capture
    checks = write(tmp_path, "- smb2.encrypted\n- decrypted\n- count: {filter: 'smb2.cmd == 9', eq: 2}\n")
    assert run("check", path, "--checks", checks, "--smb-keys", keyfile).exit_code == 0
    r = run("check", path, "--checks", checks)
    assert r.exit_code == 1 and "notice: SMB3 traffic stayed encrypted" in r.output
    qpath, qkeys = quic_capture
    qchecks = write(tmp_path, "- quic.handshake_completed\n- quic.alpn: {eq: smb}\n", "q.yaml")
    assert run("check", qpath, "--checks", qchecks, "--keylog", qkeys).exit_code == 0
    # keys named in the checks file, relative to it
    (tmp_path / "k.log").write_text(qkeys.read_text())
    withkeys = write(tmp_path, "keylog: k.log\nchecks:\n  - quic.handshake_completed\n", "qk.yaml")
    assert run("check", qpath, "--checks", withkeys).exit_code == 0


def test_pcap_cli_show_ladder(tcp_pcap, quic_capture):
    r = run("show", tcp_pcap)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert "10.53.57.1:50000" in lines[0] and "10.53.57.2:445" in lines[0]
    assert any(ln.startswith("     4 ") and "|---" in ln and ln.endswith("SMB2 NEGOTIATE req") for ln in lines)
    assert any("<---" in ln and ln.endswith("SMB2 NEGOTIATE resp") for ln in lines)
    assert any(ln.endswith("TCP data len=1116 [retransmission]") for ln in lines)
    assert any("[MALFORMED]" in ln for ln in lines)
    qpath, qkeys = quic_capture
    r = run("show", qpath, "--keylog", qkeys)
    assert "QUIC Initial CRYPTO ClientHello" in r.output and "STREAM | SMB2 NEGOTIATE req" in r.output
    r = run("show", qpath)
    assert "(encrypted)" in r.output and "notice: QUIC traffic stayed encrypted" in r.output
