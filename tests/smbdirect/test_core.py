"""The MS-SMBD core (sans-IO) against the spec: negotiation rules, every violation's disconnect,
credits, fragmentation/reassembly (hypothesis), keepalive and timers on a fake clock."""

from __future__ import annotations

import errno
import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wrappers.smbdirect import constants as C
from wrappers.smbdirect.core import (
    ACTIVE,
    ESTABLISHED,
    PASSIVE,
    TERMINATED,
    Connection,
    Established,
    LocalError,
    MessageReceived,
    Params,
    Terminated,
)
from wrappers.smbdirect.messages import (
    BufferDescriptor,
    DataTransfer,
    NegotiateRequest,
    NegotiateResponse,
    split_descriptors,
)


def shuttle(a: Connection, b: Connection, now: float = 0.0, rounds: int = 10000) -> tuple[list, list]:
    """Deliver every SEND both ways until quiet; returns (events of a, events of b)."""
    ea, eb = a.events(), b.events()
    for _ in range(rounds):
        sa, sb = a.sends(), b.sends()
        if not sa and not sb:
            return ea, eb
        for s in sa:
            eb += b.receive(s.data, now, s.invalidate_token)
        for s in sb:
            ea += a.receive(s.data, now, s.invalidate_token)
    raise AssertionError("no quiescence")


def pair(pa: Params | None = None, pp: Params | None = None) -> tuple[Connection, Connection]:
    a = Connection(ACTIVE, pa)
    p = Connection(PASSIVE, pp)
    a.initiate(0.0)
    ea, ep = shuttle(a, p)
    assert a.role == ESTABLISHED and p.role == ESTABLISHED
    assert any(isinstance(e, Established) for e in ea) and any(isinstance(e, Established) for e in ep)
    return a, p


def terminated(events: list) -> Terminated:
    t = [e for e in events if isinstance(e, Terminated)]
    assert t, events
    return t[0]


def neg_req(**kw) -> bytes:
    f = dict(credits_requested=10, preferred_send_size=1024, max_receive_size=1024, max_fragmented_size=131072)
    f.update(kw)
    return NegotiateRequest(**f).encode()


# -- negotiation ------------------------------------------------------------------------------
def test_negotiate_defaults_windows_values():
    a, p = pair()
    assert a.max_send_size == p.max_send_size == 1364
    assert a.max_receive_size == p.max_receive_size == 1364  # min(8192, PreferredSendSize 1364)
    assert a.max_fragmented_send_size == p.max_fragmented_send_size == 1048576
    assert a.max_read_write_size == 8388608
    assert a.send_credits >= 254 and p.send_credits == 255


def test_negotiate_example_4_1():
    """SMBD 4.1: 10 credits, 1 KiB sizes, 128 KiB fragmented, MaxReadWriteSize 1 MiB."""
    pa = Params(send_credit_target=10, receive_credit_max=10, max_send_size=1024, max_receive_size=1024,
                max_fragmented_recv_size=131072)
    pp = Params(send_credit_target=10, receive_credit_max=10, max_send_size=1024, max_receive_size=1024,
                max_fragmented_recv_size=131072, max_read_write_size=1048576)
    a = Connection(ACTIVE, pa)
    p = Connection(PASSIVE, pp)
    a.initiate(0.0)
    req = a.sends()[0].data
    assert req == bytes.fromhex("0001 0001 0000 0a00 00040000 00040000 00000200".replace(" ", ""))
    p.receive(req, 0.0)
    resp = NegotiateResponse.decode(p.sends()[0].data)
    assert (resp.credits_requested, resp.credits_granted, resp.status, resp.max_read_write_size) == (10, 10, 0, 1048576)
    assert (resp.preferred_send_size, resp.max_receive_size, resp.max_fragmented_size) == (1024, 1024, 131072)
    a.receive(resp.encode(), 0.0)
    first = a.sends()[0].data  # ours: the credits of the active side are announced at once
    cr, cg, flags, _r, rem, off, dl = DataTransfer.decode_header(first)
    assert (cr, cg, flags, rem, off, dl) == (10, 10, 0, 0, 0, 0) and len(first) == 20


@pytest.mark.parametrize("mn,mx", [(0x0200, 0x0200), (0x0000, 0x00FF), (0x0101, 0x0100)])
def test_negotiate_request_version_mismatch_gets_not_supported(mn, mx):
    p = Connection(PASSIVE)
    ev = p.receive(neg_req(min_version=mn, max_version=mx), 0.0)
    out = p.sends()
    assert len(out) == 1
    resp = NegotiateResponse.decode(out[0].data)
    assert resp.status == C.STATUS_NOT_SUPPORTED
    assert out[0].data[4:] == struct.pack("<HHHHIIIII", 0, 0, 0, 0, C.STATUS_NOT_SUPPORTED, 0, 0, 0, 0)
    t = terminated(ev)
    assert t.graceful and p.role == TERMINATED


def test_negotiate_request_range_including_0100_is_accepted():
    p = Connection(PASSIVE)
    p.receive(neg_req(min_version=0x0001, max_version=0x0300), 0.0)
    assert NegotiateResponse.decode(p.sends()[0].data).status == 0 and p.role == ESTABLISHED


@pytest.mark.parametrize("msg,why", [
    (neg_req()[:19], "shorter than 20"),
    (neg_req(credits_requested=0), "0 credits"),
    (neg_req(max_receive_size=127), "MaxReceiveSize 127"),
    (neg_req(max_fragmented_size=131071), "MaxFragmentedSize 131071"),
    (neg_req() + b"\0" * 500, "512-byte receive"),
])
def test_negotiate_request_violations_terminate(msg, why):
    p = Connection(PASSIVE)
    t = terminated(p.receive(msg, 0.0))
    assert why in t.reason and not t.graceful and t.errno == errno.ECONNABORTED
    assert p.sends() == []


def test_negotiate_request_small_preferred_send_size_gives_128():
    p = Connection(PASSIVE)
    p.receive(neg_req(preferred_send_size=20), 0.0)
    assert p.max_receive_size == 128


def test_passive_zero_receive_credit_max_fails_with_error_status():
    p = Connection(PASSIVE, Params(receive_credit_max=0))
    t = terminated(p.receive(neg_req(), 0.0))
    resp = NegotiateResponse.decode(p.sends()[0].data)
    assert resp.status == C.STATUS_INSUFFICIENT_RESOURCES and resp.status >> 30 == 3 and t.graceful


def good_resp(**kw) -> bytes:
    f = dict(status=0, credits_requested=10, credits_granted=10, max_read_write_size=1 << 20, preferred_send_size=1024,
             max_receive_size=1024, max_fragmented_size=131072)
    f.update(kw)
    return NegotiateResponse(**f).encode()


@pytest.mark.parametrize("msg,why,err", [
    (good_resp()[:31], "shorter than 32", errno.ECONNABORTED),
    (good_resp(negotiated_version=0x0200), "NegotiatedVersion", errno.ECONNABORTED),
    (good_resp(max_receive_size=100), "MaxReceiveSize 100", errno.ECONNABORTED),
    (good_resp(max_fragmented_size=65536), "MaxFragmentedSize 65536", errno.ECONNABORTED),
    (good_resp(credits_granted=0), "CreditsGranted 0", errno.ECONNABORTED),
    (good_resp(credits_requested=0), "CreditsRequested 0", errno.ECONNABORTED),
    (good_resp(preferred_send_size=8193), "PreferredSendSize 8193", errno.ECONNABORTED),
    (NegotiateResponse.failure(C.STATUS_NOT_SUPPORTED).encode(), "status 0xc00000bb", errno.ECONNREFUSED),
    (good_resp() + b"\0" * 481, "512-byte receive", errno.ECONNABORTED),
])
def test_negotiate_response_violations_terminate(msg, why, err):
    a = Connection(ACTIVE)
    a.initiate(0.0)
    a.sends()
    t = terminated(a.receive(msg, 0.0))
    assert why in t.reason and t.errno == err and a.role == TERMINATED


def test_negotiate_response_takes_minimum_read_write_size():
    a = Connection(ACTIVE, Params(max_read_write_size=1 << 20))
    a.initiate(0.0)
    a.receive(good_resp(max_read_write_size=8 << 20), 0.0)
    assert a.max_read_write_size == 1 << 20 and a.max_send_size == 1024 and a.send_credits == 9


@pytest.mark.parametrize("role,limit", [(PASSIVE, 5.0), (ACTIVE, 120.0)])
def test_negotiation_timer(role, limit):
    c = Connection(role, now=100.0)
    assert c.timer() == 100.0 + limit
    assert c.handle_timer(100.0 + limit - 0.001) == []
    t = terminated(c.handle_timer(100.0 + limit))
    assert t.errno == errno.ETIMEDOUT and "negotiation" in t.reason


# -- data transfer violations ------------------------------------------------------------------
def dt(cr=10, cg=0, flags=0, remaining=0, offset=24, length=None, data=b"x" * 8, total=None) -> bytes:
    length = len(data) if length is None else length
    hdr = struct.pack("<HHHHIII", cr, cg, flags, 0, remaining, offset, length)
    body = hdr + b"\0" * max(0, offset - 20) + data if offset else hdr + data
    return body if total is None else body[:total]


@pytest.mark.parametrize("msg,why", [
    (dt()[:19], "shorter than 20"),
    (dt(cr=0), "CreditsRequested 0"),
    (dt(offset=28), "not 8-byte aligned"),
    (dt(length=100), "> message length"),
    (dt(remaining=1048576), "> MaxFragmentedSize"),
    (dt(offset=8, data=b"x" * 12), "overlaps the header"),
    (b"\x0a\x00" + b"\0" * 18 + b"\0" * 2000, "exceeds the posted receive size"),
])
def test_data_transfer_violations_terminate(msg, why):
    a, p = pair()
    t = terminated(p.receive(msg, 1.0))
    assert why in t.reason and t.errno == errno.ECONNABORTED
    assert p.sends() == [] and p.role == TERMINATED
    with pytest.raises(LocalError):
        p.send(b"late", 1.0)


def test_last_fragment_while_reassembly_expects_more_terminates():
    a, p = pair()
    assert p.receive(dt(remaining=100, data=b"a" * 8), 1.0) == []
    t = terminated(p.receive(dt(remaining=0, data=b"b" * 8), 1.0))
    assert "expects 92 more" in t.reason


def test_fragment_longer_than_announced_terminates():
    a, p = pair()
    p.receive(dt(remaining=8, data=b"a" * 8), 1.0)
    t = terminated(p.receive(dt(remaining=0, data=b"b" * 16), 1.0))
    assert "longer than the bytes announced" in t.reason


def test_send_without_credit_terminates():
    """A peer that sends beyond the credits we granted breaks 3.1.5.1: the connection is dropped."""
    p = Connection(PASSIVE, Params(receive_credit_max=2))
    p.receive(neg_req(credits_requested=10), 0.0)
    assert NegotiateResponse.decode(p.sends()[0].data).credits_granted == 2
    events = []
    for _ in range(3):  # p has no send credits, so it cannot announce new receives
        events += p.receive(dt(cg=0), 1.0)
        assert p.sends() == []
    assert "beyond the credits granted" in terminated(events).reason


def test_terminated_ignores_input():
    a, p = pair()
    p.receive(dt(cr=0), 1.0)
    assert p.receive(dt(), 1.0) == [] and p.sends() == []


# -- messages, credits, fragmentation ----------------------------------------------------------
def test_empty_message_refused_and_too_big_is_emsgsize():
    a, p = pair()
    with pytest.raises(LocalError) as e:
        a.send(b"", 1.0)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(LocalError) as e:
        a.send(b"x" * (1048576 + 1), 1.0)
    assert e.value.errno == errno.EMSGSIZE


def test_one_mib_message_fragments_and_reassembles():
    a, p = pair()
    msg = bytes(range(256)) * 4096
    a.send(msg, 1.0)
    sizes = []
    got = []
    for _ in range(1000):
        sa = a.sends()
        if not sa:
            break
        for s in sa:
            sizes.append(len(s.data))
            got += [e for e in p.receive(s.data, 1.0) if isinstance(e, MessageReceived)]
        for s in p.sends():
            a.receive(s.data, 1.0)
    assert [g.data for g in got] == [msg]
    frags = [s for s in sizes if s > 20]
    assert len(frags) == -(-len(msg) // (1364 - 24)) and max(sizes) <= 1364


def test_credit_starvation_and_grant():
    """With one credit left the sender may only send what grants credits; it stalls until the peer grants."""
    a, p = pair(pp=Params(receive_credit_max=3))
    assert a.send_credits == 2  # 3 granted, 1 spent announcing our own receives
    a.send(b"m" * 5000, 1.0)  # 4 fragments
    first = a.sends()
    assert len(first) == 1 and a.send_credits == 1  # the 2nd fragment would need to grant: none to give
    assert a.stats.credit_stalls >= 1
    got = []
    for s in first:
        got += p.receive(s.data, 1.0)
    grants = p.sends()  # the peer sees we are out of credits and grants promptly
    assert grants and DataTransfer.decode_header(grants[-1].data)[1] >= 1
    for s in grants:
        a.receive(s.data, 1.0)
    ea, ep = shuttle(a, p, 1.0)
    msgs = [e.data for e in ep + got if isinstance(e, MessageReceived)]
    assert msgs == [b"m" * 5000]


def test_idle_peers_do_not_trade_empty_grants_forever():
    a, p = pair()
    a.send(b"hello", 1.0)
    shuttle(a, p, 1.0, rounds=20)


def test_invalidate_token_rides_on_last_fragment():
    a, p = pair()
    a.send(b"z" * 3000, 1.0, invalidate_token=0xABCD)
    sends = a.sends()
    assert [s.invalidate_token for s in sends] == [None, None, 0xABCD]
    ev = []
    for s in sends:
        ev += p.receive(s.data, 1.0, s.invalidate_token)
    m = [e for e in ev if isinstance(e, MessageReceived)][0]
    assert m.invalidated_token == 0xABCD and len(m.data) == 3000


@settings(max_examples=int(os.environ.get("SMBD_HYPOTHESIS_EXAMPLES", "100")), deadline=None)
@given(sizes=st.lists(st.integers(1, 140000), min_size=1, max_size=6),
       send_size=st.integers(128, 4096), credits=st.integers(3, 40), target=st.integers(1, 40))
def test_fragmentation_property(sizes, send_size, credits, target):
    pa = Params(max_send_size=send_size, max_receive_size=send_size, send_credit_target=target,
                receive_credit_max=credits, max_fragmented_recv_size=262144)
    pp = Params(max_send_size=send_size, max_receive_size=send_size, send_credit_target=target,
                receive_credit_max=credits, max_fragmented_recv_size=262144)
    a, p = pair(pa, pp)
    msgs = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
    for m in msgs:
        a.send(m, 1.0)
    got = []
    for _ in range(100000):
        sa, sp = a.sends(), p.sends()
        if not sa and not sp:
            break
        for s in sa:
            assert len(s.data) <= p.max_receive_size
            got += [e.data for e in p.receive(s.data, 1.0) if isinstance(e, MessageReceived)]
            assert p.role == ESTABLISHED
        for s in sp:
            a.receive(s.data, 1.0)
            assert a.role == ESTABLISHED
        assert a.send_credits >= 0 and p.receive_credits >= 0
    assert got == msgs


# -- keepalive ------------------------------------------------------------------------------------
def test_keepalive_sent_on_idle_and_answered():
    a, p = pair(Params(keepalive_interval=10.0), Params(keepalive_interval=50.0))
    shuttle(a, p, 0.0)
    assert a.timer() == 10.0
    a.handle_timer(10.0)
    ka = a.sends()
    assert len(ka) == 1 and DataTransfer.decode_header(ka[0].data)[2] == C.SMB_DIRECT_RESPONSE_REQUESTED
    assert len(ka[0].data) == 20
    assert a.timer() == 15.0  # <4>: 5 s for the answer
    p.receive(ka[0].data, 10.5)
    ans = p.sends()
    assert len(ans) == 1 and DataTransfer.decode_header(ans[0].data)[2] == 0  # answer without the flag
    a.receive(ans[0].data, 11.0)
    assert a.timer() == 21.0 and a.keepalive_requested == "NONE"
    assert a.sends() == []


def test_keepalive_unanswered_terminates():
    a, p = pair(Params(keepalive_interval=10.0))
    shuttle(a, p, 0.0)
    a.handle_timer(10.0)
    a.sends()
    assert a.handle_timer(14.9) == []
    t = terminated(a.handle_timer(15.0))
    assert t.errno == errno.ETIMEDOUT and "keepalive" in t.reason


def test_keepalive_flag_rides_on_queued_message():
    """MS-SMBD 3.1.6.2: when the idle timer fires while an upper-layer message waits to be sent, the
    SMB_DIRECT_RESPONSE_REQUESTED flag goes on that message; an empty keepalive is built only when
    nothing is pending.  The message waits here on the last-credit rule (3.1.5.1: the last send
    credit must carry a grant) while the application has stopped reading, so nothing arrives from
    the peer in between (a received message would prove liveness and clear the keepalive)."""
    a, p = pair(Params(keepalive_interval=10.0), Params(receive_credit_max=1))
    shuttle(a, p, 0.0)
    a.pause_receive(True, 0.0)
    a.send(b"q" * 10, 0.0)  # spends a's only grant and its only send credit
    for s in a.sends():
        p.receive(s.data, 0.5)
    for s in p.sends():  # p gives the credit back; a, paused, posts nothing new to grant
        a.receive(s.data, 0.5)
    assert a.send_credits == 1 and a.timer() == 10.5
    a.send(b"r" * 10, 1.0)
    assert a.sends() == [] and a.queued() == 1  # held: its last credit would carry no grant
    a.handle_timer(10.5)
    assert a.keepalive_requested == "PENDING"
    assert a.sends() == [] and a.queued() == 1  # no empty keepalive queued behind it
    a.pause_receive(False, 11.0)  # receives posted again: the queued message can carry a grant
    out = a.sends()
    assert len(out) == 1
    credits_requested, granted, flags, _, remaining, offset, length = DataTransfer.decode_header(out[0].data)
    assert flags == C.SMB_DIRECT_RESPONSE_REQUESTED and granted >= 1 and remaining == 0
    assert bytes(out[0].data[offset:offset + length]) == b"r" * 10
    assert a.keepalive_requested == "SENT" and a.stats.keepalives_sent == 1
    assert a.timer() == 11.0 + a.params.keepalive_response_timeout
    assert a.queued() == 0 and a.sends() == []


def test_any_message_rearms_idle_timer():
    a, p = pair(Params(keepalive_interval=10.0))
    shuttle(a, p, 0.0)
    p.send(b"ping", 8.0)
    for s in p.sends():
        a.receive(s.data, 8.0)
    assert a.timer() == 18.0


# -- descriptors -----------------------------------------------------------------------------------
def test_split_descriptors_spec_3_1_4_5():
    d = [BufferDescriptor(1000, 1, 100), BufferDescriptor(5000, 2, 50), BufferDescriptor(9000, 3, 10)]
    assert split_descriptors(d, 90, 70) == [(d[0], 90, 10), (d[1], 0, 50), (d[2], 0, 10)]
    assert split_descriptors(d, 0, 0) == []
    with pytest.raises(ValueError):
        split_descriptors(d, 100, 61)
