"""Every named check passes on a capture that has the property and fails on one that lacks it."""
from __future__ import annotations

import re

import pytest

from harness.pcap import Capture, catalogue

# (catalogue name, args, passing capture, failing capture, regex in the failure message)
# captures: fixture name, optionally "+keys" for the matching keylog / SMB keys
CASES = [
    ("quic.handshake_completed", {}, "quic+keys", "quic", r"quic 0: 0 \(no frames\)"),
    ("quic.version", {}, "quic", "quic", None),
    ("quic.alpn", {"eq": "smb"}, "quic+keys", "quic+keys", None),
    ("quic.no_certificate", {"connection": 1}, "features+keys", "features+keys", r"actual:   .*1 \(frame 2\)"),
    ("quic.zero_rtt_used", {}, "features+keys", "quic+keys", r"actual:   0 \(no frames\)"),
    ("quic.key_phase_changed", {}, "features+keys", "quic+keys", r"1 distinct value\(s\) \[0\], expected at least 2"),
    ("quic.path_validated", {}, "features+keys", "quic+keys", r"no PATH_CHALLENGE frame"),
    ("quic.connections", {"eq": 1}, "quic+keys", "features+keys", r"2 distinct value\(s\) \[0, 1\]"),
    ("quic.no_new_connection", {}, "quic+keys", "features+keys", r"expected exactly 1"),
    ("smb2.dialect", {"eq": 0x311}, "clean", "clean", None),
    ("smb2.signed", {}, "clean", "tcp", r"frames 12, 14, 16, 19, .* do not satisfy \{'eq': 1\}"),
    ("smb2.encrypted", {}, "enc+keys", "clean", r"actual:   0 \(no frames\)"),
    ("smb2.no_error", {}, "clean", "denied", r"actual:   1 \(frame 18\)"),
    ("smb2.all_requests_answered", {}, "clean", "tcp", r"1 unanswered: frame 33"),
    # a capture without any SMB Direct: the check fails for that reason, not for "0 frames"
    ("smbdirect.negotiated", {}, "rdma", "clean", r"actual:   no frame was dissected as smb_direct at all"),
    ("tcp.no_retransmission", {}, "clean", "tcp", r"actual:   1 \(frame 17\)"),
    ("no_malformed", {"ignore_empty_fin": True}, "clean", "tcp", r"actual:   1 \(frame 33\)"),
    ("decrypted", {}, "enc+keys", "enc", r"notice: SMB3 traffic stayed encrypted"),
    ("quic.new_cid_after_migration", {}, "mig+keys", "rebind+keys",
     r"connection 0 moved to 10\.53\.57\.1:51001 but kept DCID [0-9a-f]{16} \(frame 11\)"),
    ("quic.1rtt_in_clear", {}, "clear", "quic", r"no short-header packet with its payload in clear"),
    ("smb2.transport_security_accepted", {}, "smbfeat", "tlsenc",
     r"accepted \(tcp stream 0 at frame 6\) but 1 transform header\(s\) follow: frame 32"),
    ("smb2.command_sequence", {"commands": ["NEGOTIATE", "SESSION_SETUP", "TREE_CONNECT", "CREATE", "WRITE", "CLOSE"]},
     "smbfeat", "smbplain", r"session 0x28034ee: step 3 \(TREE_CONNECT\) missing; requests \[NEGOTIATE@31, SESSION_SETUP@35\]"),
    ("smb2.replay_flag_seen", {}, "smbfeat", "smbplain", r"actual:   0 \(no frames\)"),
    ("smb2.channel_binding", {}, "smbfeat", "smbplain", r"no SESSION_SETUP request with SMB2_SESSION_FLAG_BINDING"),
    ("smbdirect.rdma_used", {}, "rdmarw", "rdma", r"actual:   0 \(no frames\)"),
]
# where the failing capture is the passing one, the failing case uses these arguments
FAIL_ARGS = {"quic.version": {"eq": 0x6B3343CF}, "quic.alpn": {"eq": "h3"}, "quic.no_certificate": {"connection": 0},
             "smb2.dialect": {"eq": 0x0302}}
FAIL_MSG = {"quic.version": r"do not satisfy \{'eq': 1798521807\}", "quic.alpn": r"no value satisfies \{'eq': 'h3'\}",
            "smb2.dialect": r"frames 6, 32 do not satisfy \{'eq': 770\}: \[0x311@6, 0x311@32\]"}


@pytest.fixture
def open_capture(request, quic_capture, quic_features, enc_capture):
    def make(spec: str) -> Capture:
        name, _, keys = spec.partition("+")
        if name in ("mig", "rebind"):
            path, keylog = request.getfixturevalue("quic_migrations")[name == "rebind"]
            return Capture(path, keylog=keylog if keys else None)
        if name == "clear":
            return Capture(request.getfixturevalue("quic_clear")[0])
        if name == "quic":
            return Capture(quic_capture[0], keylog=quic_capture[1] if keys else None)
        if name == "features":
            return Capture(quic_features[0], keylog=quic_features[1] if keys else None)
        if name == "enc":
            return Capture(enc_capture[0], smb_keys=enc_capture[1] if keys else None)
        return Capture(request.getfixturevalue(f"{name}_pcap"))
    return make


def test_pcap_catalogue_is_fully_tested_and_documented():
    assert {c[0] for c in CASES} == set(catalogue.CATALOGUE)
    for entry in catalogue.CATALOGUE.values():
        assert len(entry.doc) > 40, entry.name


@pytest.mark.parametrize("name,args,good,bad,pattern", CASES, ids=[c[0] for c in CASES])
def test_pcap_catalogue_check(open_capture, name, args, good, bad, pattern):
    open_capture(good).check(catalogue.build(name, args))
    with pytest.raises(AssertionError) as ei:
        open_capture(bad).check(catalogue.build(name, FAIL_ARGS.get(name, args)))
    msg = str(ei.value)
    assert f"1) {name}" in msg
    pattern = pattern or FAIL_MSG[name]
    assert re.search(pattern, msg), msg
