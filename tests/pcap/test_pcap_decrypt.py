"""Decryption with no user setup: QUIC from a key log or an injected pcapng, SMB3 from session keys,
SMB on a non-445 port, SMB Direct over RoCEv2; and, without keys, a notice naming the keys needed."""
from __future__ import annotations

import pytest

from harness.pcap import Capture, Count, KeyFileError, catalogue, inject_secrets
from harness.pcap.keys import SmbKey, embedded_secrets, load_smb_keys


def test_pcap_quic_decrypts_with_keylog(quic_capture):
    path, keys = quic_capture
    cap = Capture(path, keylog=keys)
    assert cap.count("smb2.cmd == 0") == 2
    assert cap.count("smb2.cmd == 13") == 4
    assert cap.notices() == []


def test_pcap_quic_decrypts_from_injected_pcapng(quic_capture, tmp_path):
    path, keys = quic_capture
    out = inject_secrets(path, keys, tmp_path / "quic.pcapng")
    assert embedded_secrets(out) == 1
    cap = Capture(out)  # no keylog: the secrets travel in the file
    assert cap.count("smb2.cmd == 0") == 2
    assert cap.notices() == []


def test_pcap_quic_without_keys_says_which_keys(quic_capture):
    path, keys = quic_capture
    cap = Capture(path)
    assert cap.count("smb2") == 0
    (note,) = cap.notices()
    client_random = keys.read_text().split()[1]
    assert "QUIC traffic stayed encrypted" in note and "no key log was given" in note
    assert "CLIENT_TRAFFIC_SECRET_0" in note and client_random in note
    with pytest.raises(AssertionError) as ei:
        cap.check(Count("smb2.cmd == 0", min=1))
    assert "notice: QUIC traffic stayed encrypted" in str(ei.value)


def test_pcap_quic_with_wrong_keylog_names_missing_random(quic_capture, quic_features):
    path, _ = quic_capture
    _, other_keys = quic_features
    (note,) = Capture(path, keylog=other_keys).notices()
    assert f"the key log {other_keys} has no secrets for them" in note


def test_pcap_smb3_decrypts_with_session_keys(enc_capture):
    path, keyfile, keys = enc_capture
    cap = Capture(path, smb_keys=keyfile)
    assert cap.count("smb2.cmd == 3") == 2
    assert cap.count("smb2.cmd == 9 && smb2.header.transform.msg_size") == 2
    assert cap.notices() == []
    # the same keys as objects
    assert Capture(path, smb_keys=[SmbKey(keys.session_id, keys.s2c, keys.c2s)]).count(
        "smb2.cmd == 3") == 2


def test_pcap_smb3_key_file_formats(tmp_path, enc_capture):
    _, _, keys = enc_capture
    uat = tmp_path / "uat"
    uat.write_text(f'"ee33800200000000","","{keys.s2c.hex()}","{keys.c2s.hex()}"\n')
    js = tmp_path / "keys.json"
    js.write_text(f'[{{"session_id": "0x28033ee", "s2c": "{keys.s2c.hex()}", "c2s": "{keys.c2s.hex()}"}}]')
    assert load_smb_keys(uat) == load_smb_keys(js) == [SmbKey(0x28033EE, keys.s2c, keys.c2s)]
    bad = tmp_path / "bad"
    bad.write_text("# comment\n0x1 abcd\n")
    with pytest.raises(KeyFileError, match=r"bad:2: expected 3 or 4 columns"):
        load_smb_keys(bad)
    bad.write_text(f"0x1 {keys.s2c.hex()} abcd\n")
    with pytest.raises(KeyFileError, match=r"bad:1: C2S key must be 16 or 32 bytes"):
        load_smb_keys(bad)


def test_pcap_smb3_without_keys_says_which_session(enc_capture):
    path, _, _ = enc_capture
    cap = Capture(path)
    assert cap.count("smb2.cmd == 3") == 0
    (note,) = cap.notices()
    assert "SMB3 traffic stayed encrypted: 6 message(s)" in note
    assert "session(s) 0x00000000028033ee" in note and "no SMB keys were given" in note
    wrong = Capture(path, smb_keys=[SmbKey(0x28033EE, bytes(16), bytes(16))])
    assert "do not decrypt it" in wrong.notices()[0]


def test_pcap_smb_on_other_port_is_found_by_its_magic(port8445_pcap):
    # without detection (or on tshark alone) port 8445 is bare TCP data: every SMB count would be 0
    blind = Capture(port8445_pcap, detect_smb=False)
    assert blind.count("smb2") == 0
    with pytest.raises(AssertionError, match="no frame was dissected as smb2 at all"):
        blind.check(Count("smb2.cmd == 5", eq=0))  # "no CREATE" must not pass on SMB tshark did not see
    cap = Capture(port8445_pcap)
    assert cap.count("smb2.cmd == 9") == 2 and cap.detected_smb_ports == [8445]
    cap.check(catalogue.smb2_dialect(0x311))
    told = Capture(port8445_pcap, smb_ports=[8445])
    assert told.count("smb2.cmd == 9") == 2 and told.detected_smb_ports == []


def test_pcap_smb_direct_over_rocev2(rdma_pcap):
    cap = Capture(rdma_pcap)
    cap.check(catalogue.smbdirect_negotiated(), Count("smb_direct.data_message && smb2.cmd == 13", eq=2))


def test_pcap_big_pdu_on_other_port_gets_a_notice(tmp_path):
    from . import captures as gen

    path = gen.smb_tcp_capture(tmp_path / "big8445.pcap", port=8445, write_size=140_000)
    cap = Capture(path, smb_ports=[8445])
    assert cap.count("smb2.cmd == 13") < 2  # the ECHOs after the big WRITE are lost
    (note,) = cap.notices()
    assert "SMB2 on TCP port(s) 8445 was mis-framed" in note and "128 KiB" in note
    assert Capture(gen.smb_tcp_capture(tmp_path / "big445.pcap", write_size=140_000)).count("smb2.cmd == 13") == 2
