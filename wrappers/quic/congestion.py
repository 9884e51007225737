"""quic.ko's New Reno for aioquic's loss recovery (sans-IO: counters in, a window out).

quic.ko's default congestion control (``QUIC_CONG_ALG_RENO``, net/quic/cong.c) is RFC 9002's New
Reno as written, and aioquic's "reno" differs from it in two ways that matter on the emulated
carrier:

* Slow start. quic.ko leaves slow start on loss only (ssthresh starts at U32_MAX). aioquic adds a
  HyStart-style exit: five RTT samples 25% above the lowest end slow start. On a loaded machine a
  loopback RTT of 1 ms moves by more than that all the time, so a sender that is application-limited
  for a while (an SMB server answering WRITEs with 80-byte responses) leaves slow start with a window
  of a few KiB and then grows by a datagram per round trip: 64 MiB of READ responses then crawl.
* The segment size. quic.ko grows the window in congestion avoidance by ``mss * acked / window``
  with the path's MSS; aioquic uses the datagram size the connection started with (1452) even after
  the emulated carrier moved to 64 KiB datagrams (configuration.path_datagram_size), so its additive
  increase is 45 times too small. Here the MSS is the largest datagram sent so far.

Pacing (``KoPacer``, for either algorithm, as quic.ko paces both): quic.ko's rate, twice the window
per smoothed RTT, and each packet charged by its size. aioquic's pacer charges every packet as one
datagram of the size the connection started with (1452 bytes): on the emulated carrier a 64 KiB
datagram then cost a 45th of its time, and the bucket (a quarter of the window, at most 16
datagrams) let out three datagrams per pass, so a 1 MiB write went out over five passes of the
engine's loop, each a timer wake-up; with the path's datagram size instead, an 80-byte SMB
response would cost 64 KiB of time. aioquic calls the pacer before it knows a packet's size, so a
packet is charged one path datagram while the packets of a pass are built and settled to its
real size when they are sent (``settle``). The bucket keeps aioquic's bounds, in path datagrams.

Everything else is aioquic's Reno (and quic.ko's): the window halves once per loss episode (a
recovery period ends with the first acknowledgment of a packet sent after it began), never below two
segments, and persistent congestion resets it to that minimum. Selected by configuration.py for
quic.ko's algorithm 0; algorithm 1 (CUBIC) stays aioquic's.
"""

from __future__ import annotations

from collections.abc import Iterable

from aioquic.quic.congestion.base import (
    K_INITIAL_WINDOW,
    K_MINIMUM_WINDOW,
    QuicCongestionControl,
    register_congestion_control,
)
from aioquic.quic.packet_builder import QuicSentPacket
from aioquic.quic.recovery import K_MICRO_SECOND, K_SECOND, QuicPacketPacer

NAME = "quic.ko-reno"

#: quic.ko's cap on the window (``cong->max_window = S32_MAX / 2``)
MAX_WINDOW = (2**31 - 1) // 2


class KoRenoCongestionControl(QuicCongestionControl):
    def __init__(self, *, max_datagram_size: int) -> None:
        super().__init__(max_datagram_size=max_datagram_size)
        self.congestion_window = K_INITIAL_WINDOW * max_datagram_size
        self.mss = max_datagram_size
        self.ssthresh: int | None = None  # None: U32_MAX, slow start until the first loss
        self._recovery_start = 0.0

    @property
    def min_window(self) -> int:
        return K_MINIMUM_WINDOW * self.mss

    def on_packet_sent(self, *, packet: QuicSentPacket) -> None:
        self.bytes_in_flight += packet.sent_bytes
        if packet.sent_bytes > self.mss:
            self.mss = packet.sent_bytes

    def on_packet_acked(self, *, now: float, packet: QuicSentPacket) -> None:
        self.bytes_in_flight -= packet.sent_bytes
        if (packet.sent_time or 0.0) <= self._recovery_start:
            return  # still in the recovery period: no growth
        if self.ssthresh is None or self.congestion_window < self.ssthresh:
            self.congestion_window = min(self.congestion_window + packet.sent_bytes, MAX_WINDOW)
        else:
            self.congestion_window += self.mss * packet.sent_bytes // self.congestion_window

    def on_packets_expired(self, *, packets: Iterable[QuicSentPacket]) -> None:
        for packet in packets:
            self.bytes_in_flight -= packet.sent_bytes

    def on_packets_lost(self, *, now: float, packets: Iterable[QuicSentPacket]) -> None:
        last_sent = 0.0
        for packet in packets:
            self.bytes_in_flight -= packet.sent_bytes
            last_sent = packet.sent_time or 0.0
        if last_sent > self._recovery_start:  # a new loss episode
            self._recovery_start = now
            self.congestion_window = max(self.congestion_window // 2, self.min_window)
            self.ssthresh = self.congestion_window

    def on_persistent_congestion(self) -> None:
        self.congestion_window = self.min_window
        self._recovery_start = 0.0

    def on_rtt_measurement(self, *, now: float, rtt: float) -> None:
        """quic.ko's Reno does not look at RTT samples (no delay-based slow-start exit)."""


class KoPacer(QuicPacketPacer):
    """aioquic's token bucket (in seconds) at quic.ko's rate, charging packets by their size."""

    #: quic.ko's rate is N x window / smoothed RTT with N = 2 (cong.c, quic_cong_pace_update)
    N = 2

    def __init__(self, *, max_datagram_size: int) -> None:
        super().__init__(max_datagram_size=max_datagram_size)
        self.datagram_size = max_datagram_size  # the path's: raised after the handshake
        self.rate = 0.0  # bytes per second, 0 until the first RTT sample
        self.window = 0
        self.provisional = 0.0  # seconds charged for the packets built this pass, until settle()

    def set_datagram_size(self, size: int) -> None:
        """The path's datagram size grew (aio/connection.py raise_datagram_size)."""
        self.datagram_size = size
        if self.rate:
            self._set_bounds()

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        self.rate = self.N * congestion_window / max(smoothed_rtt, K_MICRO_SECOND)
        self.window = congestion_window
        self._set_bounds()

    def _set_bounds(self) -> None:
        """aioquic's bounds in path datagrams: one packet's charge, and a bucket of a quarter of the
        window, between 2 and 16 datagrams."""
        size = self.datagram_size
        self.packet_time = max(K_MICRO_SECOND, min(size / self.rate, K_SECOND))
        self.bucket_max = max(2 * size, min(self.window // 4, 16 * size)) / self.rate
        if self.bucket_time > self.bucket_max:
            self.bucket_time = self.bucket_max

    def next_send_time(self, now: float) -> float | None:  # type: ignore[override]  # aioquic's returns None too
        """None while nothing is owed (quic.ko sends when its pacing time is not in the future),
        else when the debt is paid."""
        if self.packet_time is None:
            return None
        self.update_bucket(now=now)
        if self.bucket_time < 0:
            return now - self.bucket_time
        return None

    def update_after_send(self, now: float) -> None:
        if self.packet_time is None:
            return
        self.update_bucket(now=now)
        self.bucket_time -= self.packet_time
        self.provisional += self.packet_time

    def settle(self, sent_bytes: int) -> None:
        """The packets of this pass went out as ``sent_bytes`` bytes of datagrams: replace their
        provisional charge by what those bytes take at the pacing rate."""
        if self.packet_time is None or not self.rate:
            self.provisional = 0.0
            return
        self.bucket_time = min(self.bucket_time + self.provisional - sent_bytes / self.rate, self.bucket_max)
        self.provisional = 0.0


register_congestion_control(NAME, KoRenoCongestionControl)
