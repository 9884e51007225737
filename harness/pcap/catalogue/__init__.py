"""Named checks for this domain: each a Python function returning an Assertion, and a YAML name.

Why a catalogue: scenario files should say `quic.path_validated`, not re-derive which tshark fields
prove it. Each entry documents the evidence it uses (the fields), so a reviewer can judge whether
the check proves what its name claims. Parameters are validated by a small JSON schema per entry.

    from harness.pcap import catalogue
    cap.expect(catalogue.quic_handshake_completed(), catalogue.smb2_dialect(0x311))
    # YAML: - quic.handshake_completed
    #       - smb2.dialect: {eq: 0x311}

Modules: registry (the CATALOGUE, `named`, `build`: a leaf every other module imports), one module
per protocol (quic, smb2, smbdirect, tcp) and general (whole-capture checks: nothing malformed,
everything decrypted). Importing this package imports them all, so `catalogue.CATALOGUE` is the
whole list and every check is reachable as `catalogue.<function>`.
"""
from __future__ import annotations

from .general import decrypted, no_malformed
from .quic import (
    quic_1rtt_in_clear,
    quic_alpn,
    quic_connections,
    quic_handshake_completed,
    quic_key_phase_changed,
    quic_new_cid_after_migration,
    quic_no_certificate,
    quic_no_new_connection,
    quic_path_validated,
    quic_version,
    quic_zero_rtt_used,
)
from .registry import CATALOGUE, Entry, build, named
from .smb2 import (
    smb2_all_requests_answered,
    smb2_channel_binding,
    smb2_command_sequence,
    smb2_dialect,
    smb2_encrypted,
    smb2_no_error,
    smb2_replay_flag_seen,
    smb2_signed,
    smb2_transport_security_accepted,
)
from .smbdirect import smbdirect_negotiated, smbdirect_rdma_used
from .tcp import tcp_no_retransmission

__all__ = ["CATALOGUE", "Entry", "build", "decrypted", "named", "no_malformed", "quic_1rtt_in_clear", "quic_alpn",
           "quic_connections", "quic_handshake_completed", "quic_key_phase_changed", "quic_new_cid_after_migration",
           "quic_no_certificate", "quic_no_new_connection", "quic_path_validated", "quic_version", "quic_zero_rtt_used",
           "smb2_all_requests_answered", "smb2_channel_binding", "smb2_command_sequence", "smb2_dialect",
           "smb2_encrypted", "smb2_no_error", "smb2_replay_flag_seen", "smb2_signed",
           "smb2_transport_security_accepted", "smbdirect_negotiated", "smbdirect_rdma_used", "tcp_no_retransmission"]
