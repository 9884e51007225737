"""The bulk data path on the emulated carrier: pacing by packet size, ACK frequency, the stream send
buffer, 1-RTT packet protection and sendmsg's join (wrappers/quic/aio/connection.py points 11-13).

Each test fails on the code it guards against: aioquic's pacer (three 64 KiB datagrams per pass, a
small packet charged a whole datagram), aioquic's ACK timer only, a send buffer whose frames differ
from aioquic's, protected packets that differ from aioquic's bytes."""

from __future__ import annotations

import random
import ssl

import pytest
from aioquic.buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import pull_quic_header
from aioquic.quic.packet_builder import QuicDeliveryState
from aioquic.quic.stream import QuicStreamSender
from aioquic.tls import CipherSuite

from wrappers.quic import congestion, core
from wrappers.quic.aio.keyphase import KeptKeysPair
from wrappers.quic.aio.sendbuf import chunked, unacked_bytes
from wrappers.quic.items import ITEM, K_DATA, Options
from wrappers.quic.sockdata import _joined

from .certs import make_pki

PATH = 65507  # the emulated IPv4 carrier's datagram size after the handshake


# -- pacing ---------------------------------------------------------------------------------------
def _pacer(window: int = 32 << 20, srtt: float = 0.005) -> congestion.KoPacer:
    p = congestion.KoPacer(max_datagram_size=1452)
    p.set_datagram_size(PATH)
    p.update_rate(window, srtt)
    return p


def _one_pass(p: congestion.KoPacer, now: float, size: int, limit: int = 100) -> int:
    """Packets of ``size`` bytes aioquic's loop would build in one pass (it asks before each one)."""
    sent = 0
    while sent < limit and p.next_send_time(now) is None:
        p.update_after_send(now)
        sent += 1
    p.settle(sent * size)
    return sent


def test_a_pass_lets_out_a_bucket_of_path_sized_datagrams():
    """16 datagrams of 64 KiB (1 MiB) in one pass at a large window; aioquic's pacer let out 3."""
    p = _pacer()
    assert 16 <= _one_pass(p, 10.0, PATH) <= 17  # the last one may overdraw the bucket
    assert p.next_send_time(10.0) is not None  # then it waits


def test_the_rate_is_quic_kos_twice_the_window_per_rtt():
    p = _pacer(window=1 << 20, srtt=0.01)
    assert p.rate == pytest.approx(2 * (1 << 20) / 0.01)


def test_a_small_packet_is_charged_its_own_size():
    """An 80-byte response costs 80 bytes of time, not a path datagram's: the bucket stays nearly full."""
    p = _pacer(window=20_000, srtt=0.005)
    now = 10.0
    p.next_send_time(now)
    full = p.bucket_time
    assert _one_pass(p, now, 80, limit=1) == 1
    assert p.bucket_time == pytest.approx(full - 80 / p.rate)
    assert p.next_send_time(now) is None


def test_a_debt_is_paid_at_the_rate():
    p = _pacer()
    _one_pass(p, 10.0, PATH)
    due = p.next_send_time(10.0)
    assert due is not None and 10.0 < due < 10.0 + 2 * PATH / p.rate
    assert p.next_send_time(due + 1e-9) is None


# -- a client and a server core in memory ------------------------------------------------------------
class Pair:
    def __init__(self, directory: str) -> None:
        pki = make_pki(directory)

        def cfg(client: bool) -> QuicConfiguration:
            c = QuicConfiguration(is_client=client, alpn_protocols=["smb"], max_datagram_size=1452)
            c.congestion_control_algorithm = congestion.NAME
            c.max_data, c.max_stream_data = 8 << 20, 4 << 20
            if client:
                c.verify_mode, c.server_name = ssl.CERT_NONE, "server.test"
            else:
                c.load_cert_chain(pki["server"], pki["server_key"])
            return c

        self.now = 100.0
        self.cl = core.Connection(True, Options())
        self.cl.addr, self.cl.path_datagram = ("127.0.0.20", 443), PATH
        self.sv = core.Connection(False, Options())
        self.sv.addr, self.sv.path_datagram = ("127.0.0.21", 5000), PATH
        self.cl.start(cfg(True), self.now, psk=False)
        first = self.cl.datagrams(self.now)
        odcid = pull_quic_header(Buffer(data=first[0][0]), host_cid_length=8).destination_cid
        for d, _ in first:
            self.sv.receive(d, self.sv.addr, self.now)
        self.sv.start(cfg(False), self.now, psk=False, odcid=odcid)
        for _ in range(50):
            self.exchange()
            self.now += 0.001
            self.timers()
            if self.cl.handshake_done and self.sv.handshake_done:
                break
        assert self.cl.handshake_done and self.sv.handshake_done
        self.received = bytearray()

    def timers(self) -> None:
        for c in (self.cl, self.sv):
            t = c.next_timer()
            if t is not None and t <= self.now:
                c.timer(self.now)

    def deliver(self, src: core.Connection, dst: core.Connection) -> list[bytes]:
        out = [d for d, _ in src.datagrams(self.now)]
        for d in out:
            dst.receive(d, dst.addr, self.now)
        for it in dst.items:
            if it[0] == K_DATA:
                dst.consumed(ITEM.unpack_from(it)[2], len(it) - ITEM.size)
                if dst is self.sv:
                    self.received += it[ITEM.size:]
        dst.items = []
        return out

    def exchange(self) -> None:
        while self.deliver(self.cl, self.sv) + self.deliver(self.sv, self.cl):
            pass


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Pair:
    return Pair(str(tmp_path_factory.mktemp("pki")))


def _open_stream0(pair: Pair) -> None:
    """The pair is shared by the module's tests, which run in any order: whichever comes first opens
    the client's stream 0."""
    if 0 not in pair.cl.streams:
        pair.cl.open_local(0, 0)


def _packets(pair: Pair, count: int) -> list[bytes]:
    """``count`` datagrams of the client, one small stream message each (stream 0 opened by the
    first caller)."""
    _open_stream0(pair)
    pair.exchange()
    pair.now += 0.05
    pair.timers()
    pair.exchange()
    out = []
    for i in range(count):
        pair.cl.send_stream(0, 0, b"m%d" % i, False, False)
        out += [d for d, _ in pair.cl.datagrams(pair.now)]
    assert len(out) == count
    return out


def test_two_data_packets_are_acknowledged_in_the_next_pass(pair):
    """RFC 9000 13.2.2: an ACK after at least two ack-eliciting packets, without waiting for the
    ACK delay; aioquic's receiver held it for its timer."""
    for d in _packets(pair, 2):
        pair.sv.receive(d, pair.sv.addr, pair.now)
    acks = [d for d, _ in pair.sv.datagrams(pair.now)]  # the same instant: no timer has run
    assert len(acks) == 1 and len(acks[0]) < 100
    pair.cl.receive(acks[0], pair.cl.addr, pair.now)
    assert pair.cl.quic.send_buffered_bytes() == 0  # both packets acknowledged


def test_one_data_packet_waits_for_the_ack_delay(pair):
    [d] = _packets(pair, 1)
    pair.sv.receive(d, pair.sv.addr, pair.now)
    assert pair.sv.datagrams(pair.now) == []
    pair.now += 0.03
    pair.timers()
    assert len(pair.sv.datagrams(pair.now)) == 1


def test_bulk_data_arrives_whole_and_in_order(pair):
    """Through the chunked send buffer, the pacer and the packet protection of this module."""
    _open_stream0(pair)
    pair.exchange()
    pair.received.clear()
    rnd = random.Random(7)
    sent = bytearray()
    for _ in range(12):
        msg = rnd.randbytes(rnd.choice([1, 1000, 65_000, 300_000, 1 << 20]))
        while True:
            try:
                pair.cl.send_stream(0, 0, msg, False, False)
                break
            except core.Blocked:
                pair.exchange()
                pair.now += 0.002
                pair.timers()
        sent += msg
        pair.exchange()
    for _ in range(40):
        pair.now += 0.002
        pair.timers()
        pair.exchange()
    assert bytes(pair.received[-len(sent):]) == bytes(sent)
    assert pair.cl.quic.send_buffered_bytes() == 0


# -- the stream send buffer --------------------------------------------------------------------------
def test_the_chunked_sender_makes_aioquics_frames():
    """Random writes, frames of random sizes and flow limits, acknowledgments and losses: the same
    frames (offset, data, FIN) as aioquic's bytearray sender, and the same end state."""
    rnd = random.Random(1)
    ours, theirs = QuicStreamSender(0, True), QuicStreamSender(0, True)
    chunked(ours)
    assert type(ours) is not QuicStreamSender
    in_flight: list[tuple[int, int, bool]] = []
    limit = 0
    finished = False
    for step in range(3000):
        op = rnd.random()
        if op < 0.15 and not finished:
            data = rnd.randbytes(rnd.choice([0, 1, 10, 5000, 70_000]))
            fin = finished = step > 2500 and rnd.random() < 0.3
            ours.write(data, end_stream=fin)
            theirs.write(data, end_stream=fin)
        elif op < 0.65:
            limit += rnd.choice([0, 100, 20_000])
            size = rnd.choice([-1, 0, 1, 1200, 65_000])
            a, b = ours.get_frame(size, limit), theirs.get_frame(size, limit)
            assert (a is None) == (b is None)
            if a is not None:
                assert (a.offset, bytes(a.data), a.fin) == (b.offset, bytes(b.data), b.fin)
                in_flight.append((a.offset, a.offset + len(a.data), a.fin))
        elif in_flight:
            start, stop, fin = in_flight.pop(rnd.randrange(len(in_flight)))
            state = QuicDeliveryState.ACKED if rnd.random() < 0.8 else QuicDeliveryState.LOST
            ours.on_data_delivery(state, start, stop, fin)
            theirs.on_data_delivery(state, start, stop, fin)
        assert ours.buffer_is_empty == theirs.buffer_is_empty and ours.is_finished == theirs.is_finished
        assert unacked_bytes(ours) == unacked_bytes(theirs)
        assert sum(len(d) for _, d in ours._chunks) >= unacked_bytes(ours)
    assert finished


# -- packet protection ------------------------------------------------------------------------------
def _pair(cls: type) -> CryptoPair:
    p = cls()
    for ctx in (p.send, p.recv):
        ctx.setup(cipher_suite=CipherSuite.AES_128_GCM_SHA256, secret=b"s" * 32, version=1)
    return p


@pytest.mark.parametrize("size", [3, 20, 1200, 65_400])
@pytest.mark.parametrize("pn_len", [1, 2, 4])
def test_protected_packets_are_aioquics_bytes(size, pn_len):
    header = bytes([0x40 | (pn_len - 1)]) + b"12345678" + (5).to_bytes(pn_len, "big")
    payload = random.Random(size).randbytes(size)
    ours, theirs = _pair(KeptKeysPair), _pair(CryptoPair)
    packet = ours.encrypt_packet(header, payload, 5)
    assert packet == theirs.encrypt_packet(header, payload, 5)
    assert ours.decrypt_packet(packet, 9, 5) == theirs.decrypt_packet(packet, 9, 5) == (header, payload, 5)


# -- sendmsg's join ------------------------------------------------------------------------------------
def test_sendmsg_joins_any_buffers_once():
    assert _joined([b"ab", memoryview(b"cd"), bytearray(b"e")]) == b"abcde"
    assert _joined(iter([b"a", b"b"])) == b"ab"
    assert _joined(bytearray(b"xy")) == b"xy"
    one = b"z" * 100
    assert _joined([one]) is one  # one bytes buffer: no copy
