"""QUIC versions between our own ends, with the capture as proof: v2 (RFC 9369) chosen by the client's
CONFIG.version, compatible version negotiation (RFC 9368) when the listener's CONFIG.version is v2,
disable_compatible_version, a Version Negotiation packet for an unknown version and the retry in v1;
and key updates both ways (KEY_UPDATE option, the passive side's key-update event, the key phase bit
flipping in the capture)."""

from __future__ import annotations

import pytest
from tsharkutil import fields

from wrappers.quic import (
    MSG_NOTIFICATION,
    MSG_STREAM_FIN,
    MSG_STREAM_NEW,
    QUIC_EVENT_KEY_UPDATE,
    QUIC_SOCKOPT_CONFIG,
    QUIC_SOCKOPT_EVENT,
    QUIC_SOCKOPT_KEY_UPDATE,
    QUIC_SOCKOPT_TRANSPORT_PARAM,
    QUIC_VERSION_V1,
    QUIC_VERSION_V2,
    SOL_QUIC,
    Config,
    EventOption,
    TransportParam,
    quic_recvmsg,
    quic_sendmsg,
)

from .conftest import close_all, emulated, open_pair

UNKNOWN = 0x1A2A3A4A


def _version(v: int):
    def setup(s) -> None:
        s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_CONFIG, Config(version=v).pack())
    return setup


def _both(*fns):
    def setup(s) -> None:
        for f in fns:
            f(s)
    return setup


SEEN: dict[int, list[bytes]] = {}


def _data(sock) -> bytes:
    """The next stream data; notifications met on the way are kept in SEEN."""
    while True:
        data, _, flags = quic_recvmsg(sock, 100)
        if not flags & MSG_NOTIFICATION:
            return data
        SEEN.setdefault(id(sock), []).append(data)


def _exchange(c, s, tag: bytes = b"x") -> None:
    quic_sendmsg(c, b"ping-" + tag, -1, MSG_STREAM_NEW | MSG_STREAM_FIN)
    assert _data(s) == b"ping-" + tag
    quic_sendmsg(s, b"pong-" + tag, -1, MSG_STREAM_NEW | MSG_STREAM_FIN)
    assert _data(c) == b"pong-" + tag


def _versions(pcap: str) -> list[tuple[str, int]]:
    """(udp source port, version) of every long-header packet, in capture order."""
    rows = fields(pcap, ["udp.srcport", "quic.version"], display_filter="quic.header_form == 1")
    out = []
    for r in rows:
        for v in r[1].split(","):
            if v:
                out.append((r[0], int(v, 16) if v.startswith("0x") else int(v)))
    return out


def _negotiated(sock) -> int:
    return int(sock._conn.quic.version)


def _run(mode, pki, client=None, listener=None):
    with emulated() as n:
        c, s, ls = open_pair(mode, pki, setup_client=client, setup_listener=listener)
        try:
            _exchange(c, s)
            got = (_negotiated(c), _negotiated(s))
        finally:
            close_all(c, s, ls)
        vn = fields(n.pcap, ["quic.supported_version"], display_filter="quic.version == 0")
        return got, _versions(n.pcap), vn


def test_v2_chosen_by_the_client(mode, pki):
    got, versions, _ = _run(mode, pki, client=_version(QUIC_VERSION_V2))
    assert got == (QUIC_VERSION_V2, QUIC_VERSION_V2)
    assert versions and {v for _, v in versions} == {QUIC_VERSION_V2}  # the version field is v2 throughout


def test_default_is_v1_only(pki):
    got, versions, _ = _run("cert", pki)
    assert got == (QUIC_VERSION_V1, QUIC_VERSION_V1)
    assert {v for _, v in versions} == {QUIC_VERSION_V1}


def test_compatible_upgrade_when_the_listener_prefers_v2(mode, pki):
    got, versions, _ = _run(mode, pki, listener=_version(QUIC_VERSION_V2))
    assert got == (QUIC_VERSION_V2, QUIC_VERSION_V2)
    assert versions[0][1] == QUIC_VERSION_V1  # the client's first Initial is v1 ...
    assert versions[-1][1] == QUIC_VERSION_V2  # ... and the connection continues in v2
    assert {v for _, v in versions} == {QUIC_VERSION_V1, QUIC_VERSION_V2}


def test_disable_compatible_version_keeps_v1(pki):
    def no_compat(s) -> None:
        s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_TRANSPORT_PARAM, TransportParam(disable_compatible_version=1).pack())

    got, versions, _ = _run("cert", pki, listener=_both(_version(QUIC_VERSION_V2), no_compat))
    assert got == (QUIC_VERSION_V1, QUIC_VERSION_V1)
    assert {v for _, v in versions} == {QUIC_VERSION_V1}


def test_unknown_version_gets_version_negotiation(pki):
    got, versions, vn = _run("cert", pki, client=_version(UNKNOWN))
    assert got == (QUIC_VERSION_V1, QUIC_VERSION_V1)
    assert versions[0][1] == UNKNOWN
    assert vn, "no Version Negotiation packet in the capture"
    offered = {int(x, 16) for x in vn[0][0].split(",")}
    assert offered == {QUIC_VERSION_V1, QUIC_VERSION_V2}
    assert QUIC_VERSION_V1 in {v for _, v in versions[1:]}


def _events(sock) -> list[bytes]:
    """Notifications met so far or already queued on ``sock`` (non-blocking)."""
    out = SEEN.pop(id(sock), [])
    sock.setblocking(False)
    try:
        while True:
            try:
                data, _, flags = quic_recvmsg(sock, 100)
            except BlockingIOError:
                break
            if flags & MSG_NOTIFICATION:
                out.append(data)
    finally:
        sock.setblocking(True)
    return out


@pytest.mark.parametrize("version", [QUIC_VERSION_V1, QUIC_VERSION_V2])
def test_key_update_both_ways(mode, pki, version):
    ev = EventOption(QUIC_EVENT_KEY_UPDATE, 1).pack()
    with emulated() as n:
        c, s, ls = open_pair(mode, pki, setup_client=_version(version))
        try:
            for x in (c, s):
                x.setsockopt(SOL_QUIC, QUIC_SOCKOPT_EVENT, ev)
            _exchange(c, s, b"0")
            c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_KEY_UPDATE, None, 0)  # the client starts one
            _exchange(c, s, b"1")
            _exchange(c, s, b"1b")
            assert _events(s) == [bytes([QUIC_EVENT_KEY_UPDATE, 1])]  # passive side only
            assert _events(c) == []
            s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_KEY_UPDATE, None, 0)  # then the server
            _exchange(c, s, b"2")
            _exchange(c, s, b"2b")
            assert _events(c) == [bytes([QUIC_EVENT_KEY_UPDATE, 0])]
            assert _events(s) == []
        finally:
            close_all(c, s, ls)
        rows = fields(n.pcap, ["udp.srcport", "quic.key_phase"], display_filter="quic.header_form == 0",
                      options=["-o", f"tls.keylog_file:{n.keys}"])
        assert len({r[0] for r in rows if r[1]}) == 2  # both sides' 1-RTT packets were decrypted
        for side in {r[0] for r in rows}:
            phases = [r[1] for r in rows if r[0] == side and r[1]]
            # each side sends in phase 0, then 1, then 0 again (tshark prints True/False or 1/0)
            norm = [p.split(",")[0] in ("1", "True") for p in phases]
            flips = [a for a, b in zip(norm, norm[1:], strict=False) if a != b]
            assert norm[0] is False and len(flips) == 2, (side, phases)
