"""quic.ko's disable_1rtt_encryption (TEST-ONLY): private transport parameter 0xbaad. When both ends set
it, 1-RTT packets travel without AEAD, tag or header protection, so a capture shows the application
bytes with no key log; when only one end sets it, 1-RTT stays encrypted."""

from __future__ import annotations

import pytest
from tsharkutil import fields

from wrappers.quic import (
    MSG_STREAM_FIN,
    MSG_STREAM_NEW,
    QUIC_SOCKOPT_TRANSPORT_PARAM,
    SOL_QUIC,
    TransportParam,
    quic_recvmsg,
    quic_sendmsg,
)

from .conftest import close_all, emulated, open_pair

C2S = b"SMB2-ENCRYPTED-BLOB-from-client-" * 8
S2C = b"SMB2-ENCRYPTED-BLOB-from-server-" * 8


def _disable(s) -> None:
    s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_TRANSPORT_PARAM, TransportParam(disable_1rtt_encryption=1).pack())


def _short_header_payloads(pcap: str) -> list[bytes]:
    # no key log is given to tshark: it sees the 1-RTT packets as they are on the wire
    rows = fields(pcap, ["udp.payload"], display_filter="udp")
    out = []
    for r in rows:
        b = bytes.fromhex(r[0].replace(":", ""))
        # a datagram may coalesce long-header packets ahead of a short one; take datagrams that *are* 1-RTT
        if b and not b[0] & 0x80:
            out.append(b)
    return out


def _run(mode, pki, client: bool, server: bool):
    with emulated() as n:
        c, s, ls = open_pair(mode, pki, setup_listener=_disable if server else None,
                             setup_client=_disable if client else None)
        try:
            quic_sendmsg(c, C2S, 0, MSG_STREAM_NEW | MSG_STREAM_FIN)
            data = b""
            while len(data) < len(C2S):
                d, sid, _ = quic_recvmsg(s, 4096)
                data += d
            assert data == C2S
            quic_sendmsg(s, S2C, 1, MSG_STREAM_NEW | MSG_STREAM_FIN)
            data = b""
            while len(data) < len(S2C):
                d, sid, _ = quic_recvmsg(c, 4096)
                data += d
            assert data == S2C
            peer_c = TransportParam.unpack(c.getsockopt(SOL_QUIC, QUIC_SOCKOPT_TRANSPORT_PARAM,
                                                        TransportParam(remote=1).pack()))
            peer_s = TransportParam.unpack(s.getsockopt(SOL_QUIC, QUIC_SOCKOPT_TRANSPORT_PARAM,
                                                        TransportParam(remote=1).pack()))
            cleartext = (c._conn.quic.cleartext_1rtt, s._conn.quic.cleartext_1rtt)
        finally:
            close_all(c, s, ls)
        return _short_header_payloads(n.pcap), (peer_c.disable_1rtt_encryption, peer_s.disable_1rtt_encryption), cleartext


def test_both_ends_disable_1rtt_payload_is_cleartext(mode, pki):
    shorts, peers, cleartext = _run(mode, pki, True, True)
    assert peers == (1, 1)  # each end sees the peer's 0xbaad parameter
    assert cleartext == (True, True)
    assert shorts, "no 1-RTT packets captured"
    blob = b"".join(shorts)
    assert C2S[:64] in blob and S2C[:64] in blob
    # quic.ko's short header, unprotected: fixed bit set, our 8-byte DCID, 2-byte packet number, frames
    for p in shorts:
        assert p[0] & 0x40


@pytest.mark.parametrize("side", ["client", "server"])
def test_one_end_only_keeps_1rtt_encrypted(mode, pki, side):
    shorts, peers, cleartext = _run(mode, pki, side == "client", side == "server")
    assert cleartext == (False, False)
    assert peers == ((1, 0) if side == "server" else (0, 1))
    blob = b"".join(shorts)
    assert shorts and C2S[:32] not in blob and S2C[:32] not in blob


def test_default_is_encrypted(mode, pki):
    shorts, peers, cleartext = _run(mode, pki, False, False)
    assert peers == (0, 0) and cleartext == (False, False)
    assert C2S[:32] not in b"".join(shorts)
