"""The "late" tolerance of PcapCheck.assert_tolerant (mixed captures that cwrap also writes to).

An ACK of bytes the capture has not shown yet is forgiven only when those very bytes (same
connection, other direction, the ACKed sequence range) appear after it. The captures are built
frame by frame, so each case is exact and independent of timing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import tsharkutil
from procutil import PcapCheck, acked_range_logged_later, need_tshark, tcp_segments
from scapy.layers.inet import IP, TCP
from scapy.utils import wrpcap

A, B, C, D = "127.0.0.11", "127.0.0.10", "127.0.0.12", "127.0.0.13"
TOLERATE = {"duplicate", "late"}


def _handshake(cli: str, srv: str, cport: int) -> list:
    return [IP(src=cli, dst=srv) / TCP(sport=cport, dport=80, flags="S", seq=0),
            IP(src=srv, dst=cli) / TCP(sport=80, dport=cport, flags="SA", seq=0, ack=1),
            IP(src=cli, dst=srv) / TCP(sport=cport, dport=80, flags="A", seq=1, ack=1)]


def _data(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, payload: bytes) -> object:
    return IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="PA", seq=seq, ack=ack) / payload


def _write(path: Path, packets: list) -> Path:
    for i, p in enumerate(packets):
        p.time = 1_700_000_000 + i / 1000
    wrpcap(str(path), packets, linktype=101)
    return path


def _capture(tmp_path: Path, *, late_reply: bool, other_flow_retransmits: bool, late_seq: int = 1) -> Path:
    """A->B request (10 bytes); B's 20-byte reply is ACKed by A (ack=21) before/without being logged."""
    reply = _data(B, A, 80, 40000, late_seq, 11, b"r" * 20)
    request2 = _data(C, D, 40001, 80, 1, 1, b"q" * 10)
    frames = _handshake(A, B, 40000) + _handshake(C, D, 40001) + [
        _data(A, B, 40000, 80, 1, 1, b"x" * 10),
        request2,
        IP(src=A, dst=B) / TCP(sport=40000, dport=80, flags="A", seq=11, ack=21),  # ACKs the reply
    ]
    if other_flow_retransmits:
        frames.append(request2.copy())  # an unrelated retransmission on the other connection
    if late_reply:
        frames.append(reply)             # the reply, logged by the other writer after the ACK
    return _write(tmp_path / "late.pcap", frames)


@pytest.fixture
def checker(tmp_path: Path) -> PcapCheck:
    need_tshark()
    return PcapCheck(tmp_path)


def test_reply_logged_after_its_ack_is_late(checker, tmp_path):
    pcap = _capture(tmp_path, late_reply=True, other_flow_retransmits=False)
    kinds = checker.assert_tolerant(pcap, tolerate=TOLERATE)
    assert kinds.get("late") and "missing" not in kinds, kinds


def test_unlogged_segment_with_unrelated_retransmission_fails(checker, tmp_path):
    pcap = _capture(tmp_path, late_reply=False, other_flow_retransmits=True)
    segments = tcp_segments(pcap)
    acker = next(s for s in segments if s.ack is not None and s.src.endswith(":40000") and s.ack % (1 << 32))
    assert any(s.src.startswith(C) and s.frame > acker.frame for s in segments)  # the retransmission is there
    with pytest.raises(AssertionError, match="ACKed unseen segment"):
        checker.assert_tolerant(pcap, tolerate=TOLERATE)


def test_later_segment_with_other_sequence_range_is_not_late(checker, tmp_path):
    # B sends later, on the same connection, but bytes 21.. (not the ACKed 1..20): still missing
    pcap = _capture(tmp_path, late_reply=True, other_flow_retransmits=True, late_seq=21)
    with pytest.raises(AssertionError, match="ACKed unseen segment"):
        checker.assert_tolerant(pcap, tolerate=TOLERATE)


def test_acked_range_must_be_covered_completely(tmp_path):
    need_tshark()
    half = _data(B, A, 80, 40000, 1, 11, b"r" * 10)  # only bytes 1..10 of the 20 ACKed
    frames = _handshake(A, B, 40000) + [_data(A, B, 40000, 80, 1, 1, b"x" * 10),
                                        IP(src=A, dst=B) / TCP(sport=40000, dport=80, flags="A", seq=11, ack=21),
                                        half]
    segments = tcp_segments(_write(tmp_path / "half.pcap", frames))
    assert not acked_range_logged_later(segments, 5)
    frames.append(_data(B, A, 80, 40000, 11, 11, b"r" * 10))  # the rest, cut differently (cwrap's recv sizes)
    segments = tcp_segments(_write(tmp_path / "whole.pcap", frames))
    assert acked_range_logged_later(segments, 5)


def _gap_capture(tmp_path: Path, *, request_logged_later: bool) -> Path:
    """B answers A's 10-byte request and closes; our writer logs A's ACK of B's FIN (seq 11) before the
    other writer logs A's request (bytes 1..10): "previous segment not captured" on that ACK."""
    frames = _handshake(A, B, 40000) + [
        _data(B, A, 80, 40000, 1, 11, b"r" * 20),
        IP(src=B, dst=A) / TCP(sport=80, dport=40000, flags="FA", seq=21, ack=11),
        IP(src=A, dst=B) / TCP(sport=40000, dport=80, flags="A", seq=11, ack=22),
    ]
    if request_logged_later:
        frames.append(_data(A, B, 40000, 80, 1, 1, b"x" * 10))
    return _write(tmp_path / "gap.pcap", frames)


def test_gap_filled_later_in_its_own_direction_is_late(checker, tmp_path):
    kinds = checker.assert_tolerant(_gap_capture(tmp_path, request_logged_later=True), tolerate=TOLERATE)
    assert kinds.get("late") and "missing" not in kinds, kinds


def test_gap_never_filled_stays_missing(checker, tmp_path):
    with pytest.raises(AssertionError, match="Previous segment"):
        checker.assert_tolerant(_gap_capture(tmp_path, request_logged_later=False), tolerate=TOLERATE)


GET = b"GET /f.txt HTTP/1.1\r\nHost: b\r\n\r\n"
OK = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"


def _http_capture(tmp_path: Path, *, request_first: bool) -> Path:
    """A fetches /f.txt from B; the request is logged before its reply, or (as curl's cwrap can log
    it: after the send, without our lock) after the reply that ACKs it."""
    request = _data(A, B, 40000, 80, 1, 1, GET)
    reply = _data(B, A, 80, 40000, 1, 1 + len(GET), OK)
    return _write(tmp_path / "http.pcap", _handshake(A, B, 40000) + ([request, reply] if request_first
                                                                     else [reply, request]))


@pytest.mark.parametrize("request_first", [True, False])
def test_a_request_logged_after_its_reply_is_counted_order_free(checker, tmp_path, request_first):
    """The curl-under-cwrap tests once counted 0 requests: the capture had the server's reply
    before cwrap's record of the GET, and tshark's sequence analysis calls such a request a spurious
    retransmission and dissects no HTTP in it.  The capture is still tolerated ("late" and
    "duplicate" kinds), and counted with ORDER_FREE the request is there once, in either order."""
    pcap = _http_capture(tmp_path, request_first=request_first)
    checker.assert_tolerant(pcap, tolerate=TOLERATE)
    uri = 'http.request.uri == "/f.txt"'
    assert tsharkutil.count_frames(pcap, display_filter=uri) == (1 if request_first else 0)
    assert tsharkutil.count_frames(pcap, display_filter=uri, options=tsharkutil.ORDER_FREE) == 1
    assert tsharkutil.count_frames(pcap, display_filter="http.response.code == 200",
                                   options=tsharkutil.ORDER_FREE) == 1
