"""quic.ko's New Reno (wrappers/quic/congestion.py) in aioquic's loss recovery, driven by hand: no
delay-based slow-start exit, growth by the largest datagram sent, one halving per loss episode."""

from __future__ import annotations

from aioquic.quic.congestion.base import create_congestion_control
from aioquic.quic.packet import QuicPacketType
from aioquic.quic.packet_builder import QuicSentPacket

from wrappers.quic import congestion
from wrappers.quic.configuration import quic_configuration

BIG = 65507


def _packet(n: int, size: int, sent_time: float) -> QuicSentPacket:
    return QuicSentPacket(epoch=3, in_flight=True, is_ack_eliciting=True, is_crypto_packet=False,
                          packet_number=n, packet_type=QuicPacketType.ONE_RTT, sent_time=sent_time,
                          sent_bytes=size)


def _cc():
    return create_congestion_control(congestion.NAME, max_datagram_size=1452)


def test_slow_start_ignores_rtt_growth():
    """aioquic's Reno leaves slow start after five RTT samples 25% above the lowest (a loaded machine's
    loopback does that all the time); quic.ko's only on loss."""
    cc = _cc()
    start = cc.congestion_window
    t = 0.001
    for i in range(40):
        p = _packet(i, 1452, t)
        cc.on_packet_sent(packet=p)
        t += 0.002
        cc.on_rtt_measurement(now=t, rtt=0.001 * (1 + i))  # ever growing
        cc.on_packet_acked(now=t, packet=p)
    assert cc.ssthresh is None
    assert cc.congestion_window == start + 40 * 1452
    assert cc.bytes_in_flight == 0


def test_avoidance_grows_by_the_largest_datagram():
    cc = _cc()
    cc.on_packet_sent(packet=_packet(0, BIG, 0.001))
    assert cc.mss == BIG
    cc.on_packets_lost(now=0.01, packets=[_packet(0, BIG, 0.001)])  # the episode: halve, end slow start
    window = cc.congestion_window
    assert cc.ssthresh == window == max(2 * BIG, (10 * 1452 + 0) // 2)
    acked = 0
    for i in range(1, 200):
        p = _packet(i, BIG, 0.02 + i * 1e-4)
        cc.on_packet_sent(packet=p)
        cc.on_packet_acked(now=0.03 + i * 1e-4, packet=p)
        acked += BIG
        if acked >= window:
            break
    # one window acknowledged: about one datagram more (quic.ko: mss * acked / window per ACK)
    assert BIG // 2 <= cc.congestion_window - window <= BIG


def test_one_halving_per_loss_episode_and_recovery():
    cc = _cc()
    t = 0.001
    packets = []
    for i in range(100):  # grow in slow start
        p = _packet(i, 1452, t)
        cc.on_packet_sent(packet=p)
        packets.append(p)
        t += 0.001
    for p in packets[:80]:
        cc.on_packet_acked(now=t, packet=p)
    grown = cc.congestion_window
    cc.on_packets_lost(now=t + 0.001, packets=packets[80:82])
    assert cc.congestion_window == grown // 2 == cc.ssthresh
    cc.on_packets_lost(now=t + 0.002, packets=packets[82:84])  # sent before the episode: same episode
    assert cc.congestion_window == grown // 2
    cc.on_packet_acked(now=t + 0.003, packet=packets[84])  # sent before recovery began: no growth
    assert cc.congestion_window == grown // 2
    cc.on_persistent_congestion()
    assert cc.congestion_window == 2 * cc.mss


def test_quic_ko_algorithms_map_to_the_right_controller():
    """quic.ko's CONFIG congestion_control_algo: 0 (its New Reno) and 1 (CUBIC)."""
    from types import SimpleNamespace

    from wrappers.quic.items import Options

    for algo, name in ((0, congestion.NAME), (1, "cubic")):
        opts = Options()
        opts.cfg.congestion_control_algo = algo
        sock = SimpleNamespace(_opts=opts, _cfg=None)
        assert quic_configuration(sock, True, "x").congestion_control_algorithm == name
