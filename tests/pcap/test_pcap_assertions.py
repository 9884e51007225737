"""Every assertion kind passes on a suitable capture and fails with expected-vs-actual and frames;
a batch is one tshark pass and one AssertionError listing every failure."""
from __future__ import annotations

import re

import pytest

from harness.pcap import (
    Absent,
    AllOf,
    Before,
    Capture,
    Count,
    Custom,
    First,
    FollowedBy,
    InOrder,
    Last,
    Values,
)

NEG_REQ, NEG_RESP = {"smb2.cmd": 0, "smb2.flags.response": 0}, {"smb2.cmd": 0, "smb2.flags.response": 1}
SETUP_REQ = {"smb2.cmd": 1, "smb2.flags.response": 0}


@pytest.fixture(scope="module")
def cap(tcp_pcap):
    return Capture(tcp_pcap)


def failure(cap, assertion) -> str:
    with pytest.raises(AssertionError) as ei:
        cap.check(assertion)
    return str(ei.value)


CASES = [
    # (id, passing assertion, failing assertion, regexes the failure message must contain)
    ("count-eq", Count("smb2.cmd == 13", eq=7), Count("smb2.cmd == 13", eq=3),
     [r"expected: exactly 3", r"actual:   7 \(frames 21, 23, 25, 27, 29, 31, 33\)"]),
    ("count-min", Count("smb2.cmd == 9", min=2), Count("smb2.cmd == 9", min=3),
     [r"expected: at least 3", r"actual:   2 \(frames 16, 19\)"]),
    ("count-max", Count("smb2.cmd == 9", max=2), Count("smb2.cmd == 9", max=1),
     [r"expected: at most 1", r"frames 16, 19"]),
    ("count-per-tcp", Count("tcp.flags.syn == 1", eq=2, per="tcp"), Count("smb2.cmd == 9", eq=1, per="tcp"),
     [r"in each of 1 tcp group", r"tcp 0: 2 \(frames 16, 19\)"]),
    ("count-per-session", Count("smb2.cmd == 3", eq=2, per="smb_session"),
     Count("smb2.cmd == 9", eq=1, per="smb_session"), [r"smb_session 0x28033ee: 2 \(frames 16, 19\)"]),
    ("absent", Absent("smb2.cmd == 6"), Absent("tcp.analysis.retransmission"),
     [r"expected: none \(absent\)", r"actual:   1 \(frame 17\)", r"(?m)^    >\s+17 "]),
    ("first", First("smb2", NEG_REQ), First("smb2", SETUP_REQ),
     [r"the first frame matching 'smb2'", r"frame 4 does not match"]),
    ("last", Last("smb2.cmd != 13", {"smb2.cmd": 9}), Last("smb2", {"smb2.cmd": 9}),
     [r"frame 33 does not match"]),
    ("before", Before(NEG_REQ, NEG_RESP), Before(SETUP_REQ, NEG_REQ),
     [r"first .* at frame 8, nothing after", r"only at frame 4$"]),
    ("before-within-frames", Before(NEG_REQ, NEG_RESP, within_frames=2), Before(NEG_REQ, SETUP_REQ, within_frames=3),
     [r"within 3 frames", r"frame 4 then frame 8 \(4 frames"]),
    ("before-within-ms", Before(NEG_REQ, NEG_RESP, within_ms=2), Before(NEG_REQ, "smb2.cmd == 9", within_ms=5),
     [r"within 5 ms", r"frame 4 then frame 16 \(12 frames, 12\.000 ms\)"]),
    ("followed_by", FollowedBy("smb2.cmd == 9 && smb2.flags.response == 0", "smb2.cmd == 9 && smb2.flags.response == 1",
                               within_ms=5),
     FollowedBy("smb2.cmd == 13 && smb2.flags.response == 0", "smb2.cmd == 13 && smb2.flags.response == 1"),
     [r"1 of 4 not followed in time: frame 33"]),
    ("sequence", InOrder(["smb2.cmd == 0", "smb2.cmd == 1", "smb2.cmd == 3", "smb2.cmd == 9"]),
     InOrder(["smb2.cmd == 0", "smb2.cmd == 9", "smb2.cmd == 3"]),
     [r"step 3 \('smb2.cmd == 3'\) not found after 'smb2.cmd == 0' at frame 4, 'smb2.cmd == 9' at frame 16"]),
    ("sequence-per", InOrder([NEG_REQ, SETUP_REQ], per="tcp"), InOrder([SETUP_REQ, NEG_REQ], per="tcp"),
     [r"tcp 0: step 2"]),
    ("values-equals", Values("smb2.msg_id", {"smb2.flags.response": 0}, equals=[0, 1, 2, 3, 4, 5, 50, 51, 99]),
     Values("smb2.msg_id", {"smb2.flags.response": 0}, equals=[0, 1, 2]),
     [r"values \[0@4, 1@8, 2@12", r"expected \[0, 1, 2\]"]),
    ("values-all", Values("smb2.sesid", "smb2.cmd == 9", all={"eq": 0x28033EE}),
     Values("smb2.sesid", "smb2.cmd", all={"ne": 0}), [r"frames 4, 6, 8 do not satisfy \{'ne': 0\}"]),
    ("values-any", Values("smb2.dialect", NEG_RESP, any=0x311), Values("smb2.dialect", NEG_RESP, any=0x300),
     [r"no value satisfies 768; values \[0x311@6\]"]),
    ("values-distinct", Values("smb2.sesid", "smb2.cmd == 3", distinct=1),
     Values("smb2.sesid", "smb2.cmd", distinct={"max": 1}),
     [r"2 distinct value\(s\) \[0, 41956334\], expected at most 1"]),
    ("values-increasing", Values("frame.number", "smb2", increasing=True),
     Values("smb2.msg_id", "smb2", increasing=True), [r"not increasing: 0 \(frame 4\) then 0 \(frame 6\)"]),
    ("custom", Custom("always", lambda ctx: (True, "x", "y", [])),
     Custom("frames-2-3", lambda ctx: (False, "nothing", "frames 2 and 3", [2, 3])), [r"frames 2, 3"]),
    ("all_of", AllOf("both", Count("smb2.cmd == 9", eq=2), Absent("smb2.cmd == 6")),
     AllOf("both", Count("smb2.cmd == 9", eq=2), Absent("smb2.cmd == 9")), [r"^1\) both", r"frames 16, 19"]),
]


@pytest.mark.parametrize("cid,good,bad,patterns", CASES, ids=[c[0] for c in CASES])
def test_pcap_assertion_kind(cap, cid, good, bad, patterns):
    cap.check(good)
    msg = failure(cap, bad)
    for p in patterns:
        assert re.search(p, msg, re.M), f"{p!r} not in:\n{msg}"


def test_pcap_batch_is_one_pass_and_lists_every_failure(tcp_pcap):
    cap = Capture(tcp_pcap)
    cap.expect(Count("smb2.cmd == 9", eq=2), Absent("tcp.analysis.retransmission"),
               Values("smb2.dialect", NEG_RESP, all=0x300), Before(NEG_REQ, NEG_RESP),
               Count({"smb2.write_length": {"gt": 100}}, eq=1))
    with pytest.raises(AssertionError) as ei:
        cap.verify()
    assert cap.passes == 1
    msg = str(ei.value)
    assert msg.startswith("2 of 5 pcap assertion(s) failed")
    assert "1) absent 'tcp.analysis.retransmission'" in msg and "2) values of smb2.dialect" in msg
    cap.verify()  # the batch was consumed: nothing pending passes


def test_pcap_immediate_api(tcp_pcap):
    cap = Capture(tcp_pcap)
    assert cap.count("smb2.cmd == 9") == 2
    assert cap.passes == 1
    assert cap.count({"smb2.cmd": 13}) == 7  # same fields: answered from the cached table
    assert cap.passes == 1
    first = cap.first("smb2", fields=["smb2.dialect"])
    assert first.number == 4 and first["smb2.cmd"] == 0 and 0x311 in first.all("smb2.dialect")
    assert cap.last("smb2.cmd == 13").number == 33  # the malformed ECHO
    assert cap.values("smb2.msg_id", "smb2.cmd == 13 && smb2.flags.response == 1") == [4, 5, 50, 51]
    sessions = cap.groups("smb_session", "smb2")
    assert list(sessions) == [0x28033EE] and sessions[0x28033EE][0].number == 10
    assert list(cap.groups("tcp")) == [0]
    assert cap.first("smb2.cmd == 6") is None


def test_pcap_pyshark_door(enc_capture):
    path, keyfile, _ = enc_capture
    cap = Capture(path, smb_keys=keyfile)
    with cap.pyshark(display_filter="smb2.cmd == 3") as pc:
        pkts = list(pc)
    assert len(pkts) == 2 and int(pkts[0].smb2.cmd) == 3



AFTER_ASYNCIO_RUN = """
import asyncio, sys
from harness.pcap import Capture

async def nothing():
    return None

asyncio.run(nothing())  # leaves the main thread without a current loop
with Capture(sys.argv[1], smb_keys=sys.argv[2]).pyshark(display_filter="smb2.cmd == 3") as pc:
    first = len(list(pc))
loop = asyncio.new_event_loop()
asyncio.set_event_loop(loop)
loop.close()  # a closed current loop
with Capture(sys.argv[1], smb_keys=sys.argv[2]).pyshark(display_filter="smb2.cmd == 3") as pc:
    print(first, len(list(pc)))
"""


def test_pcap_pyshark_door_after_asyncio_run(enc_capture):
    """pyshark asks asyncio for the thread's current loop; after an asyncio.run() in the same process the
    main thread has none, and the door failed with "There is no current event loop" (a random order put
    such a test first). Run in a fresh interpreter, so that nothing else in this process decides it."""
    import subprocess
    import sys

    path, keyfile, _ = enc_capture
    res = subprocess.run([sys.executable, "-c", AFTER_ASYNCIO_RUN, str(path), str(keyfile)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.split() == ["2", "2"], res.stderr[-2000:]


MANY_CHILDREN_AFTER_PYSHARK = """
import subprocess, sys
from harness.pcap import Capture

with Capture(sys.argv[1], smb_keys=sys.argv[2]).pyshark(display_filter="smb2.cmd == 3") as pc:
    print(len(list(pc)))
for _ in range(400):  # more child exits than the loop's wakeup socket holds
    subprocess.run(["true"], check=True)
"""


def test_pcap_pyshark_door_leaves_child_exits_quiet(enc_capture):
    """pyshark leaves a SIGCHLD handler on the loop, whose wakeup socket nobody reads between captures:
    every child exit past the first ~280 printed a BlockingIOError warning (130 in one CI run). In a
    fresh interpreter, so that no earlier test has set the loop up."""
    import subprocess
    import sys

    path, keyfile, _ = enc_capture
    res = subprocess.run([sys.executable, "-c", MANY_CHILDREN_AFTER_PYSHARK, str(path), str(keyfile)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.split() == ["2"], res.stderr[-2000:]
    assert "wakeup fd" not in res.stderr and "BlockingIOError" not in res.stderr, res.stderr[-2000:]
