"""The whole catalogue on each reference capture, with known answers: exactly these checks pass.

Why the full matrix and not one check per file: a check that passes where it should not (vacuous
truth on the wrong protocol, a field that moved in a tshark update) is caught by the files where it
must fail. One tshark pass per capture answers every check.

Own-tool captures (captures/make/smb_tcp.py, smb_quic.py, quic_migration.py, smbdirect.py) and generated ones
(captures/make/synthetic.py) alike; regenerate with `.venv/bin/python -m captures.make`.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.pcap import Capture, catalogue

CAPTURES = Path(__file__).resolve().parents[2] / "captures"
ARGS = {"smb2.command_sequence": {"commands": ["NEGOTIATE", "SESSION_SETUP", "TREE_CONNECT", "CREATE", "CLOSE"]}}
# vacuous on anything without TCP retransmission analysis, so it passes on every file but one
ALWAYS = {"tcp.no_retransmission", "smb2.no_error"}
SMB_TCP = {"decrypted", "no_malformed", "smb2.all_requests_answered", "smb2.command_sequence", "smb2.dialect"}
QUIC_BASE = {"decrypted", "quic.alpn", "quic.connections", "quic.handshake_completed", "quic.version"}

KNOWN = {
    # file: (keys, checks that pass; every other catalogue check must fail)
    "smb3-tcp-signed.pcap": ({"smb_keys": "smb3-tcp-signed.smbkeys"}, SMB_TCP | {"smb2.signed"}),
    "smb3-tcp-encrypted.pcap": ({"smb_keys": "smb3-tcp-encrypted.smbkeys"}, SMB_TCP | {"smb2.encrypted"}),
    # no_malformed fails: tshark's SPNEGO BER error on the NEGOTIATE response over QUIC (see catalogue)
    "smb3-quic.pcap": ({"keylog": "smb3-quic.keys"},
                       QUIC_BASE | {"quic.no_new_connection", "smb2.all_requests_answered", "smb2.command_sequence",
                                    "smb2.dialect", "smb2.signed", "smb2.transport_security_accepted"}),
    "quic-migration-keyupdate.pcap": ({"keylog": "quic-migration-keyupdate.keys"},
                                      QUIC_BASE | {"no_malformed", "quic.key_phase_changed", "quic.new_cid_after_migration",
                                                   "quic.no_new_connection", "quic.path_validated",
                                                   "smb2.all_requests_answered", "smb2.dialect"}),
    "quic-features.pcap": ({"keylog": "quic-features.keys"},
                           QUIC_BASE | {"no_malformed", "quic.key_phase_changed", "quic.new_cid_after_migration",
                                        "quic.path_validated", "quic.zero_rtt_used", "smb2.all_requests_answered",
                                        "smb2.dialect"}),
    "quic-1rtt-clear.pcap": ({}, {"quic.1rtt_in_clear", "quic.connections", "quic.no_new_connection", "quic.version",
                                  "smb2.all_requests_answered"}),
    "smb2-features.pcap": ({}, SMB_TCP | {"smb2.channel_binding", "smb2.replay_flag_seen",
                                          "smb2.transport_security_accepted"}),
    "smbdirect-rdma.pcap": ({}, {"decrypted", "no_malformed", "smb2.all_requests_answered", "smb2.dialect",
                                 "smbdirect.negotiated", "smbdirect.rdma_used"}),
    # Our real client and server over SMB Direct with RDMA I/O. no_malformed fails as on smb3-quic:
    # tshark reads the NEGOTIATE response's SPNEGO negTokenInit2 as negTokenInit off port 445
    # (frames 5 and 28, and only those: tests/smbdirect/test_smb_rdma.py checks `_ws.malformed && !spnego`).
    "smbdirect-own.pcap": ({}, {"decrypted", "smb2.all_requests_answered", "smb2.command_sequence", "smb2.dialect",
                                "smbdirect.negotiated", "smbdirect.rdma_used"}),
    "smb2-tcp445.pcap": ({}, {"decrypted", "smb2.dialect"} | (ALWAYS - {"tcp.no_retransmission"})),
}


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_pcap_reference_catalogue_known_answers(name):
    keys, passing = KNOWN[name]
    if name != "smb2-tcp445.pcap":
        passing = passing | ALWAYS
    if name == "quic-1rtt-clear.pcap":
        # tshark cannot read cleartext 1-RTT payloads, so no frame is SMB2: an SMB2-only check fails as vacuous
        passing = passing - {"smb2.no_error"}
    cap = Capture(CAPTURES / name, **{k: CAPTURES / v for k, v in keys.items()})
    names = sorted(catalogue.CATALOGUE)
    results = cap.results([catalogue.build(n, ARGS.get(n)) for n in names])
    assert cap.passes == 1
    got = {n for n, r in zip(names, results, strict=True) if r.ok}
    assert got == passing, f"unexpected pass: {sorted(got - passing)}; unexpected fail: {sorted(passing - got)}"


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_pcap_reference_capture_small_with_keys_documented(name):
    keys, _ = KNOWN[name]
    p = CAPTURES / name
    assert p.stat().st_size < 300_000
    readme = (CAPTURES / "README.md").read_text()
    assert f"`{name}`" in readme
    for k in keys.values():
        assert (CAPTURES / k).exists() and f"`{k}`" in readme
