"""Operators: field predicates (YAML/`match`) and the display-filter evaluator, each passing and failing.

The display-filter evaluator is checked differentially: for every filter, the frames it selects
must be the frames `tshark -Y` selects, so our semantics cannot drift from tshark 4.0's."""
from __future__ import annotations

import re

import pytest

from harness.pcap import Capture, Count
from harness.pcap import tshark as ts
from harness.pcap.query import Query, QueryError

# (match, frames) on the tcp_pcap fixture (see conftest/captures: smb_tcp_capture)
MATCH_CASES = [
    ("eq", {"smb2.cmd": 9}, [16, 19]),
    ("eq-str-hex", {"smb2.sesid": "0x28033ee", "smb2.cmd": 3}, [12, 14]),
    ("ne", {"smb2.cmd": {"ne": 13, "exists": True}, "smb2.flags.response": 1}, [6, 10, 14, 19]),
    ("in", {"smb2.cmd": {"in": [0, 1]}}, [4, 6, 8, 10]),
    ("contains", {"smb2.tree": {"contains": "share"}}, [12, 16, 19]),
    ("regex", {"_ws.col.Info": {"regex": "^Tree Connect"}}, [12, 14]),
    ("gt", {"tcp.len": {"gt": 1000}}, [16, 17]),
    ("lt", {"smb2.msg_id": {"lt": 1}}, [4, 6]),
    ("ge-le", {"smb2.msg_id": {"ge": 5, "le": 5}}, [25, 27]),
    ("len", {"smb2.cmd": {"len": 2}}, [29, 31]),
    ("len-op", {"smb2.cmd": {"len": {"gt": 1}}}, [29, 31]),
    ("exists", {"tcp.analysis.retransmission": {"exists": True}}, [17]),
    ("list-exact", {"smb2.cmd": [13, 13]}, [29, 31]),
]


@pytest.fixture(scope="module")
def cap(tcp_pcap):
    return Capture(tcp_pcap)


@pytest.mark.parametrize("name,match,frames", MATCH_CASES, ids=[c[0] for c in MATCH_CASES])
def test_pcap_match_operator_passes(cap, name, match, frames):
    assert [f.number for f in cap.frames(match)] == frames
    cap.check(Count({"match": match}, eq=len(frames)))


@pytest.mark.parametrize("name,match,frames", MATCH_CASES, ids=[c[0] for c in MATCH_CASES])
def test_pcap_match_operator_fails_naming_frames(cap, name, match, frames):
    with pytest.raises(AssertionError) as ei:
        cap.check(Count({"match": match}, eq=len(frames) + 1))
    msg = str(ei.value)
    assert f"expected: exactly {len(frames) + 1} frame(s)" in msg
    assert f"actual:   {len(frames)} (frame{'s' if len(frames) > 1 else ''} {', '.join(map(str, frames))})" in msg
    assert "excerpt:" in msg
    assert re.search(rf"^    >\s+{frames[0]}\s", msg, re.M), msg


def test_pcap_unknown_operator_is_rejected():
    with pytest.raises(QueryError, match="unknown operator 'eqq'"):
        Query(match={"smb2.cmd": {"eqq": 1}})


FILTERS = [
    "smb2.cmd == 9", "smb2.cmd eq 0x9", "smb2.cmd != 13", "smb2.cmd ne 13", "smb2.cmd === 13", "smb2.cmd !== 13",
    "smb2.cmd ~= 13", "smb2.msg_id > 3", "smb2.msg_id gt 3", "smb2.msg_id < 2", "smb2.msg_id >= 5",
    "smb2.msg_id <= 1", "smb2.msg_id ge 50 && smb2.msg_id le 51", "smb2.cmd in {0, 1}", "smb2.cmd in {0..3}",
    'smb2.tree contains "share"', 'smb2.tree matches "SERVER"', 'frame.protocols matches "(?-i)SMB2"',
    "smb2.flags & 0x1", "smb2", "!smb2", "not tcp.analysis.retransmission and tcp.len > 0",
    "(smb2.cmd == 0 || smb2.cmd == 1) and smb2.flags.response == 1", "tcp.flags.syn == True",
    "tcp.flags.syn == 1 or tcp.flags.fin == 1", "ip.src == 10.53.57.2 && smb2", "_ws.malformed",
    "smb2.sesid == 0x28033ee", "tcp.payload contains 0d:00", "tcp.len >= 1116",
]


def _tshark_frames(path, flt):
    return [int(r[0]) for r in ts.fields_pass(path, ["frame.number"], ts.Options(), display_filter=flt)]


@pytest.mark.parametrize("flt", FILTERS)
def test_pcap_display_filter_matches_tshark(cap, tcp_pcap, flt):
    q = Query(filter=flt)
    assert not q.needs_tshark, q.compiled.why_unsupported
    assert [f.number for f in cap.frames(flt)] == _tshark_frames(tcp_pcap, flt)


@pytest.mark.parametrize("flt", ["ip.addr == 10.53.57.0/24", "smb2.tree[0:2] == 5c:5c", 'smb2.cmd == "Write"',
                                 "len(smb2.tree) > 3"])
def test_pcap_unsupported_filter_falls_back_to_tshark(tcp_pcap, flt):
    cap = Capture(tcp_pcap)
    assert Query(filter=flt).needs_tshark
    assert [f.number for f in cap.frames(flt)] == _tshark_frames(tcp_pcap, flt)


def test_pcap_display_filter_count_fails_with_frames(cap):
    with pytest.raises(AssertionError, match=r"actual:   2 \(frames 16, 19\)"):
        cap.check(Count("smb2.cmd == 9", max=1))
