"""The committed reference captures (captures/) still decode as captures/README.md says."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.pcap import Capture, catalogue

from .captures import REFERENCE

CAPTURES = Path(__file__).resolve().parents[2] / "captures"


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_pcap_reference_capture_is_small_and_documented(name):
    p = CAPTURES / name
    assert p.exists(), f"regenerate: python -m tests.pcap.captures captures/ ({name} missing)"
    assert p.stat().st_size < 200_000
    assert f"`{name}`" in (CAPTURES / "README.md").read_text()


def test_pcap_reference_contents():
    c = CAPTURES
    Capture(c / "smb2-tcp445.pcap").check(catalogue.smb2_dialect(0x311))
    assert [f.number for f in Capture(c / "smb2-tcp445.pcap").frames("tcp.analysis.retransmission")] == [17]
    assert Capture(c / "smb2-tcp8445.pcap", smb_ports=[8445]).count("smb2.cmd == 9") == 2
    Capture(c / "smb3-encrypted-gcm.pcap", smb_keys=c / "smb3-encrypted-gcm.smbkeys").check(
        catalogue.smb2_encrypted(), catalogue.decrypted())
    Capture(c / "quic-smb.pcap", keylog=c / "quic-smb.keys").check(
        catalogue.quic_handshake_completed(), catalogue.quic_alpn("smb"), catalogue.decrypted())
    Capture(c / "quic-smb.pcapng").check(catalogue.quic_handshake_completed(), catalogue.decrypted())
    Capture(c / "quic-features.pcap", keylog=c / "quic-features.keys").check(
        catalogue.quic_zero_rtt_used(), catalogue.quic_key_phase_changed(), catalogue.quic_path_validated(),
        catalogue.quic_no_certificate(connection=1), catalogue.quic_connections(eq=2))
    Capture(c / "smbdirect-rocev2.pcap").check(catalogue.smbdirect_negotiated())
