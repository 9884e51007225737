"""The newer catalogue checks from YAML: arguments validated with file:line before tshark runs."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.pcap import Capture, ChecksError, load_checks

CAPTURES = Path(__file__).resolve().parents[2] / "captures"

GOOD = """\
checks:
  - smb2.command_sequence: {commands: [NEGOTIATE, SESSION_SETUP, TREE_CONNECT, CREATE, WRITE, CLOSE]}
  - smb2.command_sequence: {commands: [0, 1], session: 0x28033ee}
  - smb2.replay_flag_seen: {min: 1}
  - smb2.channel_binding
  - smb2.transport_security_accepted
  - quic.1rtt_in_clear: {absent: true}
"""


def test_pcap_catalogue_yaml_new_checks_pass(tmp_path):
    (tmp_path / "features.yaml").write_text(GOOD)
    cs = load_checks(tmp_path / "features.yaml")
    results = Capture(CAPTURES / "smb2-features.pcap").results(cs.assertions)
    assert [r.ok for r in results] == [True] * 5 + [False], [r.actual for r in results]
    # a QUIC check on a capture without QUIC cannot pass: it fails and says why
    assert results[5].actual.startswith("no frame was dissected as quic at all"), results[5].actual
    assert results[0].name == f"{tmp_path / 'features.yaml'}:2:5: smb2.command_sequence"


@pytest.mark.parametrize("text,msg", [
    ("- smb2.command_sequence: {commands: [NEGOTIATE, WRTIE]}\n", r"c.yaml:1:\d+: .*'WRTIE' is not valid"),
    ("- smb2.command_sequence\n", r"c.yaml:1:3: smb2.command_sequence: 'commands' is a required property"),
    ("- smbdirect.rdma_used: {read: false, write: false}\n", r"c.yaml:1:\d+: .*at least one of read/write"),
    ('- quic.1rtt_in_clear: {marker: "xyz"}\n', r"c.yaml:1:\d+: .*does not match"),
])
def test_pcap_catalogue_yaml_bad_arguments(tmp_path, text, msg):
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ChecksError, match=msg):
        load_checks(tmp_path / "c.yaml")
