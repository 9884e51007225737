"""Fixtures for the pcap library tests: tshark presence policy and generated captures.

tshark is a peer program: missing under CI (env CI set) is a failure, locally a skip."""
from __future__ import annotations

import os
import shutil

import pytest

from . import captures as gen


@pytest.fixture(autouse=True, scope="session")
def _tshark_present():
    if shutil.which(os.environ.get("WIRECHECK_TSHARK", "tshark")) is None:
        if os.environ.get("CI"):
            pytest.fail("tshark is required under CI (apt-get install tshark)")
        pytest.skip("tshark not installed")


@pytest.fixture(scope="session")
def capdir(tmp_path_factory):
    return tmp_path_factory.mktemp("captures")


@pytest.fixture(scope="session")
def tcp_pcap(capdir):
    """SMB2 over TCP/445: a retransmitted WRITE segment, two pipelined ECHOs, a malformed SMB2 frame."""
    return gen.smb_tcp_capture(capdir / "tcp.pcap", retransmit=True, malformed=True, echoes=2, pipelined=True)


@pytest.fixture(scope="session")
def clean_pcap(capdir):
    """SMB2 over TCP/445, signed, two TCP streams, nothing wrong."""
    return gen.smb_tcp_capture(capdir / "clean.pcap", signed=True, streams=2)


@pytest.fixture(scope="session")
def port8445_pcap(capdir):
    return gen.smb_tcp_capture(capdir / "tcp8445.pcap", port=8445)


@pytest.fixture(scope="session")
def enc_capture(capdir):
    path, keys = gen.smb_encrypted_capture(capdir / "enc.pcap")
    keyfile = capdir / "enc.smbkeys"
    keyfile.write_text("# session s2c c2s\n" + keys.line())
    return path, keyfile, keys


@pytest.fixture(scope="session")
def quic_capture(capdir):
    """One QUIC connection, full handshake."""
    return gen.quic_smb_capture(capdir / "quic.pcap", capdir / "quic.keys"), capdir / "quic.keys"


@pytest.fixture(scope="session")
def quic_features(capdir):
    """Two QUIC connections: the first with key update and migration, the second resumed with 0-RTT."""
    keys = capdir / "quic2.keys"
    return gen.quic_smb_capture(capdir / "quic2.pcap", keys, zero_rtt=True, key_update=True, migrate=True), keys


@pytest.fixture(scope="session")
def rdma_pcap(capdir):
    return gen.smbdirect_capture(capdir / "rdma.pcap")


@pytest.fixture(scope="session")
def denied_pcap(capdir):
    """SMB2 over TCP/445 whose WRITE fails with STATUS_ACCESS_DENIED."""
    return gen.smb_tcp_capture(capdir / "denied.pcap", write_status=0xC0000022)


@pytest.fixture(scope="session")
def smbfeat_pcap(capdir):
    """SMB over TCP: transport security accepted, a replayed WRITE, a second channel bound."""
    from .captures_extra import smb_features_capture
    return smb_features_capture(capdir / "smbfeat.pcap")


@pytest.fixture(scope="session")
def smbplain_pcap(capdir):
    """The same two connections without any of those features (a new session on the second)."""
    from .captures_extra import smb_features_capture
    return smb_features_capture(capdir / "smbplain.pcap", transport_security=False, replay=False, binding=False)


@pytest.fixture(scope="session")
def tlsenc_pcap(capdir):
    """Transport security accepted, yet an ECHO follows in a transform header."""
    from .captures_extra import smb_features_capture
    return smb_features_capture(capdir / "tlsenc.pcap", encrypt_later=True)


@pytest.fixture(scope="session")
def rdmarw_pcap(capdir):
    from .captures_extra import smbdirect_rdma_capture
    return smbdirect_rdma_capture(capdir / "rdmarw.pcap")


@pytest.fixture(scope="session")
def quic_migrations(capdir):
    """(migration with a new DCID, migration keeping the DCID) with their key logs."""
    new = gen.quic_smb_capture(capdir / "mig.pcap", capdir / "mig.keys", migrate=True)
    old = gen.quic_smb_capture(capdir / "rebind.pcap", capdir / "rebind.keys", migrate=True, new_cid=False)
    return (new, capdir / "mig.keys"), (old, capdir / "rebind.keys")


@pytest.fixture(scope="session")
def quic_clear(capdir):
    """1-RTT packets in clear after the handshake (quic.ko disable_1rtt_encryption)."""
    return gen.quic_smb_capture(capdir / "clear.pcap", capdir / "clear.keys", cleartext=True), capdir / "clear.keys"
