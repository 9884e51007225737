"""wrappers.packets: checksums and headers, checked against a naive RFC 1071 sum and against scapy.

scapy is the independent reference: we parse our bytes with it, compare every field, then delete
the checksums and let scapy recompute them.
"""

from __future__ import annotations

import random
import socket
import struct

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror, UDPerror
from scapy.layers.inet6 import ICMPv6DestUnreach, IPerror6, IPv6

import wrappers.packets as packets_module
from wrappers import packets
from wrappers.packets import (
    ACK,
    FIN,
    MAX_DATAGRAM_PAYLOAD,
    MAX_SEGMENT_PAYLOAD,
    PSH,
    RST,
    SYN,
    build_icmp_unreachable,
    build_tcp,
    build_udp,
    internet_checksum,
    packet_bytes,
)

AF4, AF6 = socket.AF_INET, socket.AF_INET6


def naive_checksum(data: bytes) -> int:
    """RFC 1071 word by word, the obviously-correct (and slow) way."""
    if len(data) % 2:
        data += b"\0"
    total = sum((data[i] << 8) | data[i + 1] for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


# ---------------------------------------------------------------------------------------------
# internet_checksum


@given(st.lists(st.binary(max_size=300), max_size=8))
@example([])
@example([b"\0" * 7])  # all zero: +0 sum, checksum 0xFFFF
@example([b"\xff\xff"])  # sum -0 (0xFFFF): checksum 0, not 0xFFFF
@example([b"\xff", b"\xff", b"\x00\x01", b"\xff\xfe"])
@example([b"\x01", b"", b"\x02\x03", b"\x04"])  # odd boundaries
def test_checksum_matches_naive(chunks: list[bytes]) -> None:
    assert internet_checksum(*chunks) == naive_checksum(b"".join(chunks))


@settings(deadline=None)
@given(st.integers(600, 70000), st.integers(0, 2**32), st.sampled_from([0, 0xFE, 0xFF]),
       st.lists(st.integers(0, 70000), max_size=5))  # fmt: skip
def test_checksum_large_buffers_split_anywhere(size: int, seed: int, floor: int, cuts: list[int]) -> None:
    """Large buffers take the folding path; splitting them anywhere must not change the sum.

    ``floor`` biases bytes towards 0xFF, where carries and the 0/0xFFFF edge live.
    """
    rng = random.Random(seed)
    data = bytes(rng.randint(floor, 0xFF) for _ in range(size))
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    chunks = [memoryview(data)[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    assert internet_checksum(*chunks) == naive_checksum(data) == internet_checksum(data)


@given(st.integers(0, 9), st.integers(1, 3000))
def test_checksum_of_multiples_of_ffff(zeros: int, words: int) -> None:
    """Nonzero data whose word sum is a multiple of 0xFFFF folds to -0: checksum 0."""
    data = b"\0" * zeros * 2 + b"\xff\xff" * words
    assert internet_checksum(data) == naive_checksum(data) == 0


@given(st.binary(min_size=2, max_size=2000).filter(lambda b: len(b) % 2 == 0))
def test_checksum_verifies_to_zero(data: bytes) -> None:
    """The receiver's check: data plus its checksum sums to -0."""
    csum = internet_checksum(data)
    assert internet_checksum(data, csum.to_bytes(2, "big")) == 0


def test_checksum_of_large_chunks_uses_the_compiled_fold(monkeypatch: pytest.MonkeyPatch) -> None:
    """It runs on every emulated TCP send, so chunks above 64 bytes go through the C fold that setup
    builds (wrappers/_csum.c), not Python's integer arithmetic. How much faster that is is measured by
    `make bench` (the transport section's pcap cost), never timed in a test: this test asserted a
    5x ratio of two wall-clock times and failed on a loaded machine."""
    assert packets._c_fold is not None, "wrappers/_csum was not built: run make setup"
    calls: list[int] = []
    fold = packets._c_fold

    def counted(chunk):  # type: ignore[no-untyped-def]
        calls.append(memoryview(chunk).nbytes)
        return fold(chunk)

    monkeypatch.setattr(packets, "_c_fold", counted)
    data = random.Random(1).randbytes(65536)
    assert internet_checksum(data) == naive_checksum(data)
    assert calls == [65536]


# ---------------------------------------------------------------------------------------------
# strategies

ports = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


@st.composite
def endpoints(draw: st.DrawFn) -> tuple[int, tuple[str, int], tuple[str, int]]:
    family = draw(st.sampled_from([AF4, AF6]))
    version = 4 if family == AF4 else 6
    src = (str(draw(st.ip_addresses(v=version))), draw(ports))
    dst = (str(draw(st.ip_addresses(v=version))), draw(ports))
    return family, src, dst


class Payload(bytes):
    """Random payload bytes with a short repr, so that failing examples stay readable."""

    def __repr__(self) -> str:
        return f"<payload of {len(self)} bytes>"


_EDGE_SIZES = sorted(
    {n + d for n in (*MAX_SEGMENT_PAYLOAD.values(), *MAX_DATAGRAM_PAYLOAD.values()) for d in (0, 1)}
)


@st.composite
def payloads(draw: st.DrawFn, max_size: int = 70000) -> bytes:
    """Random bytes of any length up to ``max_size``, the size limits and one past them included
    (hypothesis.binary is far too slow at these sizes)."""
    edges = [n for n in _EDGE_SIZES if n <= max_size]
    size = draw(st.one_of(st.integers(0, 64), st.integers(0, max_size), st.sampled_from(edges or [0])))
    return Payload(random.Random(draw(st.integers(0, 2**32))).randbytes(size))


big = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parse(raw: bytes, family: int) -> IP | IPv6:
    return IP(raw) if family == AF4 else IPv6(raw)


def check_ip(pkt: IP | IPv6, family: int, src: str, dst: str, proto: int, raw: bytes) -> None:
    """The IP header rules, for both families."""
    if family == AF4:
        assert pkt.version == 4 and pkt.ihl == 5 and pkt.tos == 0
        assert pkt.len == len(raw)
        assert pkt.flags == "DF" and pkt.frag == 0
        assert pkt.ttl == 64
        assert pkt.proto == proto
        assert pkt.src == src and pkt.dst == dst
        assert naive_checksum(raw[:20]) == 0, "bad IPv4 header checksum"
        rebuilt = IP(raw[:20])
        del rebuilt.chksum
        assert bytes(rebuilt)[10:12] == raw[10:12]
    else:
        assert pkt.version == 6 and pkt.tc == 0 and pkt.fl == 0
        # RFC 8200: the payload length excludes the 40-byte fixed header (cwrap includes it).
        assert pkt.plen == len(raw) - 40
        assert pkt.hlim == 64
        assert pkt.nh == proto
        assert socket.inet_pton(AF6, pkt.src) == socket.inet_pton(AF6, src)
        assert socket.inet_pton(AF6, pkt.dst) == socket.inet_pton(AF6, dst)


def recomputed(pkt: IP | IPv6, layer: type) -> bytes:
    """The packet as scapy rebuilds it with ``layer``'s (and IPv4's) checksum recomputed."""
    copy = pkt.copy()
    del copy[layer].chksum
    if isinstance(copy, IP):
        del copy.chksum
    return bytes(copy)


# ---------------------------------------------------------------------------------------------
# TCP


@big
@given(endpoints(), u32, u32, st.integers(0, 0xFF), st.integers(0, 0xFFFF), payloads())
def test_tcp_roundtrip(ends, seq, ack, flags, window, payload) -> None:
    family, src, dst = ends
    if len(payload) > MAX_SEGMENT_PAYLOAD[family]:
        with pytest.raises(ValueError, match="split"):
            build_tcp(src, dst, seq=seq, ack=ack, flags=flags, payload=payload, window=window)
        return
    bufs = build_tcp(src, dst, seq=seq, ack=ack, flags=flags, payload=payload, window=window)
    assert len(bufs) == 2 and bufs[1] is payload, "payload must be passed through, not copied"
    raw = packet_bytes(bufs)
    pkt = parse(raw, family)
    check_ip(pkt, family, src[0], dst[0], 6, raw)
    tcp = pkt[TCP]
    assert (tcp.sport, tcp.dport, tcp.seq, tcp.ack) == (src[1], dst[1], seq, ack)
    assert tcp.dataofs == 5 and tcp.reserved == 0 and int(tcp.flags) == flags
    assert tcp.window == window and tcp.urgptr == 0 and tcp.options == []
    assert bytes(tcp.payload) == payload
    assert recomputed(pkt, TCP) == raw, "TCP checksum differs from scapy's"


@pytest.mark.parametrize("family,src,dst", [
    (AF4, ("127.0.0.21", 40000), ("127.0.0.10", 445)),
    (AF6, ("fd00::5357:5f15", 40000), ("fd00::5357:5f0a", 445)),
], ids=["ipv4", "ipv6"])  # fmt: skip
def test_tcp_largest_segment_fits_exactly(family, src, dst) -> None:
    """MAX_SEGMENT_PAYLOAD is the exact limit: 65535 total length (v4), 65535 payload length (v6)."""
    n = MAX_SEGMENT_PAYLOAD[family]
    raw = packet_bytes(build_tcp(src, dst, seq=0, ack=0, flags=ACK, payload=bytes(n)))
    if family == AF4:
        assert n == 65535 - 40 and struct.unpack("!H", raw[2:4])[0] == 65535
    else:
        assert n == 65535 - 20 and struct.unpack("!H", raw[4:6])[0] == 65535
    with pytest.raises(ValueError):
        build_tcp(src, dst, seq=0, ack=0, flags=ACK, payload=bytes(n + 1))


def test_tcp_accepts_memoryview_and_wraps_sequence_numbers() -> None:
    data = memoryview(b"hello world")[6:]
    bufs = build_tcp(("10.53.57.1", 1), ("10.53.57.2", 2), seq=2**32 + 5, ack=2**33 + 7, flags=PSH | ACK,
                     payload=data)  # fmt: skip
    assert bufs[1] is data
    tcp = IP(packet_bytes(bufs))[TCP]
    assert (tcp.seq, tcp.ack, bytes(tcp.payload)) == (5, 7, b"world")


def test_bytearray_payload_is_wrapped_not_copied() -> None:
    data = bytearray(b"mutable")
    bufs = build_udp(("127.0.0.1", 1), ("127.0.0.2", 2), data)
    assert isinstance(bufs[1], memoryview) and bufs[1].obj is data


def test_ipv4_identification_increments() -> None:
    def ident() -> int:
        return IP(packet_bytes(build_tcp(("127.0.0.1", 1), ("127.0.0.2", 2), seq=0, ack=0, flags=SYN))).id

    first = ident()
    assert ident() == (first + 1) & 0xFFFF


def test_flag_constants() -> None:
    assert (FIN, SYN, RST, PSH, ACK) == (1, 2, 4, 8, 16)


@pytest.mark.parametrize("src,dst", [
    (("127.0.0.1", 1), ("::1", 2)),
    (("127.0.0.1", 70000), ("127.0.0.2", 2)),
    (("not-an-address", 1), ("127.0.0.2", 2)),
])  # fmt: skip
def test_bad_addresses_rejected(src, dst) -> None:
    with pytest.raises(ValueError):
        build_tcp(src, dst, seq=0, ack=0, flags=SYN)
    with pytest.raises(ValueError):
        build_udp(src, dst, b"")


def test_ipv6_socket_address_tuples_accepted() -> None:
    """Python's IPv6 socket addresses are 4-tuples; take host and port from them."""
    raw = packet_bytes(build_udp(("fd00::1", 5, 0, 0), ("fd00::2", 6, 0, 0), b"x"))
    assert IPv6(raw)[UDP].sport == 5


# ---------------------------------------------------------------------------------------------
# UDP


@big
@given(endpoints(), payloads())
def test_udp_roundtrip(ends, payload) -> None:
    family, src, dst = ends
    if len(payload) > MAX_DATAGRAM_PAYLOAD[family]:
        with pytest.raises(ValueError):
            build_udp(src, dst, payload)
        return
    bufs = build_udp(src, dst, payload)
    assert len(bufs) == 2 and bufs[1] is payload
    raw = packet_bytes(bufs)
    pkt = parse(raw, family)
    check_ip(pkt, family, src[0], dst[0], 17, raw)
    udp = pkt[UDP]
    assert (udp.sport, udp.dport, udp.len) == (src[1], dst[1], 8 + len(payload))
    assert bytes(udp.payload) == payload
    assert udp.chksum != 0, "UDP checksum must always be present (mandatory for IPv6)"
    assert recomputed(pkt, UDP) == raw, "UDP checksum differs from scapy's"


@pytest.mark.parametrize("family,src,dst", [
    (AF4, ("127.0.0.21", 1234), ("127.0.0.10", 53)),
    (AF6, ("fd00::5357:5f15", 1234), ("fd00::5357:5f0a", 53)),
], ids=["ipv4", "ipv6"])  # fmt: skip
def test_udp_zero_checksum_sent_as_ffff(family, src, dst) -> None:
    """A computed checksum of 0 goes on the wire as 0xFFFF (RFC 768; 0 would mean 'none')."""
    # Choose the 2-byte payload that makes the one's-complement sum -0, i.e. the checksum 0.
    base = packet_bytes(build_udp(src, dst, b"\0\0"))
    word = base[-4:-2]  # the checksum computed with a zero payload word
    assert word != b"\0\0"
    raw = packet_bytes(build_udp(src, dst, word))
    assert raw[-4:-2] == b"\xff\xff"
    assert recomputed(parse(raw, family), UDP) == raw  # scapy agrees


# ---------------------------------------------------------------------------------------------
# ICMP


@big
@given(endpoints(), st.booleans(), payloads(max_size=3000))
def test_icmp_unreachable(ends, tcp, payload) -> None:
    family, src, dst = ends
    if tcp:
        original = packet_bytes(build_tcp(src, dst, seq=0, ack=0, flags=SYN, payload=payload))
    else:
        original = packet_bytes(build_udp(src, dst, payload))
    raw = build_icmp_unreachable(original, family)
    pkt = parse(raw, family)
    # The error goes from the original destination back to the original source ...
    check_ip(pkt, family, dst[0], src[0], 1 if family == AF4 else 58, raw)
    if family == AF4:
        icmp = pkt[ICMP]
        assert (icmp.type, icmp.code) == (3, 1)
        quoted = raw[20 + 8 :]
        assert quoted == original[:64]  # ... quoting at most 64 bytes of the original, unchanged
        assert naive_checksum(raw[20:]) == 0
        rebuilt = pkt.copy()
        del rebuilt[ICMP].chksum, rebuilt.chksum
        assert bytes(rebuilt)[20:24] == raw[20:24], "ICMP checksum differs from scapy's"
        assert IPerror in pkt and (TCPerror if tcp else UDPerror) in pkt
    else:
        icmp = pkt[ICMPv6DestUnreach]
        assert (icmp.type, icmp.code) == (1, 3)
        quoted = raw[40 + 8 :]
        assert quoted == original[: 1280 - 48]  # as much as fits in the IPv6 minimum MTU
        assert len(raw) <= 1280
        inner = IPerror6(quoted)
        assert inner.nh == (6 if tcp else 17), "quoted IPv6 header must keep its next-header"
        rebuilt = pkt.copy()
        del rebuilt[ICMPv6DestUnreach].cksum
        assert bytes(rebuilt)[40:44] == raw[40:44], "ICMPv6 checksum (with pseudo-header) differs"
        pseudo = raw[8:40] + struct.pack("!I3xB", len(raw) - 40, 58)
        assert naive_checksum(pseudo + raw[40:]) == 0


def test_icmp_accepts_buffer_list_and_checks_family() -> None:
    bufs = build_udp(("127.0.0.1", 5), ("127.0.0.2", 6), b"abc")
    from_list, from_bytes = build_icmp_unreachable(bufs, AF4), build_icmp_unreachable(packet_bytes(bufs), AF4)
    assert from_list[12:] == from_bytes[12:]  # equal but for the IPv4 id and header checksum
    with pytest.raises(ValueError):
        build_icmp_unreachable(bufs, AF6)
    with pytest.raises(ValueError):
        build_icmp_unreachable(b"", AF4)


def test_pcap_layer_knows_nothing_about_smb() -> None:
    """wrappers/ must know nothing about SMB: it is the layer below the SMB stack."""
    import inspect

    from wrappers import pcapfile, tcplog

    for module in (packets, pcapfile, tcplog):
        assert "smb" not in inspect.getsource(module).lower(), module.__name__


@pytest.mark.skipif(packets_module._c_fold is None, reason="the optional C accelerator is not built")
@given(st.binary(max_size=5000))
@example(b"\xff" * 4097)
@example(b"\x00" * 65)
def test_c_accelerator_agrees_with_python(data: bytes) -> None:
    """wrappers/_csum.c must compute exactly what the pure-Python path computes."""
    value = int.from_bytes(data, "big")
    assert packets_module._c_fold(data) == (value % 0xFFFF, value != 0)


@pytest.mark.skipif(packets_module._c_tcp_headers is None, reason="the optional C accelerator is not built")
@big
@given(endpoints(), u32, u32, st.integers(0, 0xFF), st.integers(0, 0xFFFF), payloads(), st.booleans())
@example((AF4, ("10.0.0.1", 1), ("10.0.0.2", 2)), 0, 0, 0, 0, Payload(b""), True)  # IPv4 checksum -0
@example((AF6, ("::", 0), ("::", 0)), 0, 0, 0, 0, Payload(b"\xff" * 9), False)  # odd payload, all ones
def test_c_headers_agree_with_python(ends, seq, ack, flags, window, payload, udp) -> None:
    """wrappers/_csum.c's tcp_headers/udp_headers build byte for byte what the Python builders do
    (the IPv4 identification is taken from the same counter, so both runs start from one value)."""
    import itertools

    family, src, dst = ends
    limit = MAX_DATAGRAM_PAYLOAD[family] if udp else MAX_SEGMENT_PAYLOAD[family]
    payload = payload[:limit]

    def build() -> bytes:
        packets_module._ipv4_ids = itertools.count(4242)
        if udp:
            return packet_bytes(build_udp(src, dst, payload))
        return packet_bytes(build_tcp(src, dst, seq=seq, ack=ack, flags=flags, payload=payload, window=window))

    saved = packets_module._c_tcp_headers, packets_module._c_udp_headers, packets_module._ipv4_ids
    try:
        fast = build()
        packets_module._c_tcp_headers = packets_module._c_udp_headers = None
        slow = build()
    finally:
        packets_module._c_tcp_headers, packets_module._c_udp_headers, packets_module._ipv4_ids = saved
    assert fast == slow
