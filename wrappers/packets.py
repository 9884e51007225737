"""Sans-IO builders for the IP packets that the emulated sockets log to the pcap.

Nothing here touches a file, a socket or a clock: every function takes addresses and bytes and
returns the bytes of one raw IP packet (LINKTYPE_RAW), so the pcap writer can put them on disk and
tests can parse them back.  The only state is the IPv4 identification counter, which exists
because real stacks increment it and Wireshark's IP analysis is happier that way.

Why we build headers by hand instead of using scapy: the socket wrapper logs every send, and
scapy needs about a millisecond per packet; ``struct`` needs about a microsecond.

Differences from cwrap's socket_wrapper (1.3.5 to 1.5.x), on purpose:
every checksum is computed, the IPv4 TTL and the IPv6 hop limit are 64, the IPv6 payload length
does not count the 40-byte IPv6 header, the UDP checksum is never 0, and an ICMPv6 error quotes the
original packet unchanged (cwrap rewrites the inner next-header to 58).

Builders that carry a payload return ``[headers, payload]``: the payload object is passed through
untouched (no copy of a 64 KiB send; a bytearray is wrapped in a memoryview), ready for
``os.writev``.  The list always has two elements; the payload may be empty.
"""

from __future__ import annotations

import functools
import itertools
import socket
import struct
from collections.abc import Iterable, Sequence

__all__ = [
    "ACK",
    "FIN",
    "IPPROTO_ICMP",
    "IPPROTO_ICMPV6",
    "IPPROTO_TCP",
    "IPPROTO_UDP",
    "MAX_DATAGRAM_PAYLOAD",
    "MAX_SEGMENT_PAYLOAD",
    "PSH",
    "RST",
    "SYN",
    "URG",
    "Address",
    "Buffer",
    "Packet",
    "address_family",
    "build_icmp_unreachable",
    "build_tcp",
    "build_udp",
    "internet_checksum",
    "packet_bytes",
    "tcp_endpoints",
    "tcp_segment",
]

# TCP header flag bits (RFC 9293 §3.1).
FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58

TTL = 64  # IPv4 TTL and IPv6 hop limit: a plausible host default (cwrap writes 255 and 0).

IPV4_HEADER_LEN = 20
IPV6_HEADER_LEN = 40
TCP_HEADER_LEN = 20
UDP_HEADER_LEN = 8
ICMP_HEADER_LEN = 8

# IPv4 limits the *total length* to 65535; IPv6 limits the *payload length* (everything after the
# fixed 40-byte header) to 65535.  Jumbograms are not emulated.
_MAX_IP_PAYLOAD: dict[int, int] = {
    socket.AF_INET: 0xFFFF - IPV4_HEADER_LEN,
    socket.AF_INET6: 0xFFFF,
}
#: Largest TCP payload that fits in one IP packet, per address family: callers split larger sends.
MAX_SEGMENT_PAYLOAD: dict[int, int] = {f: n - TCP_HEADER_LEN for f, n in _MAX_IP_PAYLOAD.items()}
#: Largest UDP payload that fits in one IP packet, per address family.
MAX_DATAGRAM_PAYLOAD: dict[int, int] = {f: n - UDP_HEADER_LEN for f, n in _MAX_IP_PAYLOAD.items()}

# RFC 4443 §2.4(c): an ICMPv6 error carries as much of the offending packet as fits without the
# error exceeding the IPv6 minimum MTU (1280).  ICMPv4 quotes at most 64 bytes, as cwrap does.
_ICMP4_QUOTE_MAX = 64
_ICMP6_QUOTE_MAX = 1280 - IPV6_HEADER_LEN - ICMP_HEADER_LEN

#: What the builders accept as packet data (``collections.abc.Buffer`` needs Python 3.12).
Buffer = bytes | bytearray | memoryview
#: What they return: a packet as a list of buffers for ``os.writev``/``PcapWriter.write_packet``.
Packet = list[bytes | memoryview]

#: An address as the socket module gives it: ``(host, port)`` or IPv6 ``(host, port, flow, scope)``.
Address = tuple[str, int] | tuple[str, int, int, int]


# ---------------------------------------------------------------------------------------------
# Checksum


def _mod_ffff(value: int) -> int:
    """``value % 0xFFFF``, about 1.6x faster for 64 KiB numbers.

    CPython divides a long by a small number one 30-bit digit at a time, with a hardware division
    per digit.  Folding the number onto itself (high half + low half) at a multiple of 240 bits
    (a multiple of 16, so congruent modulo 0xFFFF, and of CPython's 30-bit digit, so the shift
    just moves digits) needs only shifts and additions until it is small.
    """
    while (bits := value.bit_length()) > 4800:
        half = bits // 480 * 240
        value = (value >> half) + (value & ((1 << half) - 1))
    return value % 0xFFFF


try:  # the optional C accelerator (setup.py builds it when a compiler is there)
    from ._csum import fold as _c_fold
    from ._csum import tcp_headers as _c_tcp_headers
    from ._csum import udp_headers as _c_udp_headers
except ImportError:  # pragma: no cover - depends on the build
    _c_fold = _c_tcp_headers = _c_udp_headers = None


def internet_checksum(*chunks: Buffer) -> int:
    """RFC 1071 checksum of the concatenation of ``chunks`` (odd lengths padded at the very end).

    Speed matters: this runs on every emulated TCP send.  Instead of adding 16-bit words in a
    Python loop, each chunk is read as one big-endian integer; because 2**16 ≡ 1 (mod 0xFFFF),
    that integer is congruent to the sum of its 16-bit words, which is what the one's-complement
    sum computes.  Chunks are combined as if concatenated: shifting by an even number of bytes is
    ×1 modulo 0xFFFF, by an odd number ×256 — so chunk boundaries may fall anywhere.

    The one subtlety: one's-complement arithmetic has two zeros.  The folded sum is 0 only if all
    data is zero; otherwise a multiple of 0xFFFF folds to 0xFFFF.  The checksum is the complement.
    """
    acc = 0
    odd = False  # total length so far is odd
    nonzero = False
    for chunk in chunks:
        n = memoryview(chunk).nbytes
        if not n:
            continue
        if _c_fold is not None and n > 64:
            folded, any_set = _c_fold(chunk)
        else:
            value = int.from_bytes(chunk, "big")
            folded, any_set = _mod_ffff(value), value != 0
        nonzero = nonzero or any_set
        acc = (acc * (256 if n & 1 else 1) + folded) % 0xFFFF
        odd ^= bool(n & 1)
    if odd:
        acc = acc * 256 % 0xFFFF  # pad the last byte with a zero byte to a full word
    if not nonzero:
        return 0xFFFF  # the sum is +0, its complement -0
    return 0xFFFF - acc if acc else 0


# ---------------------------------------------------------------------------------------------
# Addresses


@functools.lru_cache(maxsize=1024)
def _parse_host(host: str) -> tuple[int, bytes]:
    """Return (family, packed address); cached because the same few hosts are logged again and again."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return family, socket.inet_pton(family, host)
        except OSError:
            continue
    raise ValueError(f"not an IPv4 or IPv6 address: {host!r}")


def address_family(addr: Address) -> int:
    """``socket.AF_INET`` or ``socket.AF_INET6`` for an ``(ip, port, ...)`` tuple."""
    return _parse_host(addr[0])[0]


#: (src host, src port, dst host, dst port) -> _endpoints' answer: every record of a flow asks the
#: same question, and a dict lookup costs a fraction of two lru_cache calls and the checks.
_ENDPOINTS: dict[tuple, tuple[int, bytes, bytes, int, int]] = {}
_ENDPOINTS_MAX = 4096


def _endpoints(src: Address, dst: Address) -> tuple[int, bytes, bytes, int, int]:
    key = (src[0], src[1], dst[0], dst[1])
    hit = _ENDPOINTS.get(key)
    if hit is None:
        hit = _check_endpoints(src, dst)
        if len(_ENDPOINTS) >= _ENDPOINTS_MAX:
            _ENDPOINTS.clear()
        _ENDPOINTS[key] = hit
    return hit


def _check_endpoints(src: Address, dst: Address) -> tuple[int, bytes, bytes, int, int]:
    family, src_ip = _parse_host(src[0])
    dst_family, dst_ip = _parse_host(dst[0])
    if family != dst_family:
        raise ValueError(f"mixed address families in one packet: {src[0]!r} -> {dst[0]!r}")
    for port in (src[1], dst[1]):
        if not 0 <= port <= 0xFFFF:
            raise ValueError(f"port out of range: {port}")
    return family, src_ip, dst_ip, src[1], dst[1]


# ---------------------------------------------------------------------------------------------
# IP headers

_FAMILY_NAMES: dict[int, str] = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6"}
_ipv4_ids = itertools.count(1)  # next() on itertools.count is atomic under the GIL


def _next_ipv4_id() -> int:
    return next(_ipv4_ids) & 0xFFFF


_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")


def _ipv4_header(src_ip: bytes, dst_ip: bytes, proto: int, payload_len: int) -> bytes:
    """20-byte IPv4 header: DF set (we never fragment), TTL 64, checksum computed."""
    fields = [0x45, 0, IPV4_HEADER_LEN + payload_len, _next_ipv4_id(), 0x4000, TTL, proto, 0, src_ip, dst_ip]
    fields[7] = internet_checksum(_IPV4.pack(*fields))
    return _IPV4.pack(*fields)


def _ipv6_header(src_ip: bytes, dst_ip: bytes, next_header: int, payload_len: int) -> bytes:
    """40-byte IPv6 header.  The payload length excludes this header (RFC 8200 §3; cwrap adds 40)."""
    return _IPV6.pack(6 << 28, payload_len, next_header, TTL, src_ip, dst_ip)


def _ip_header(family: int, src_ip: bytes, dst_ip: bytes, proto: int, payload_len: int) -> bytes:
    if payload_len > _MAX_IP_PAYLOAD[family]:
        raise ValueError(
            f"IP payload of {payload_len} bytes does not fit in one packet "
            f"(max {_MAX_IP_PAYLOAD[family]} for {_FAMILY_NAMES[family]}); split it"
        )
    if family == socket.AF_INET:
        return _ipv4_header(src_ip, dst_ip, proto, payload_len)
    return _ipv6_header(src_ip, dst_ip, proto, payload_len)


def _pseudo_header(family: int, src_ip: bytes, dst_ip: bytes, proto: int, length: int) -> bytes:
    """The pseudo-header that TCP, UDP and ICMPv6 checksums cover (RFC 9293 §3.1, RFC 8200 §8.1)."""
    if family == socket.AF_INET:
        return src_ip + dst_ip + struct.pack("!BBH", 0, proto, length)
    return src_ip + dst_ip + struct.pack("!I3xB", length, proto)


# ---------------------------------------------------------------------------------------------
# Transport packets

_TCP = struct.Struct("!HHIIBBHHH")


def _no_copy(payload: Buffer) -> bytes | memoryview:
    """bytes and memoryview pass through as they are; a bytearray is wrapped, not copied."""
    return memoryview(payload) if isinstance(payload, bytearray) else payload
_UDP = struct.Struct("!HHHH")


def build_tcp(
    src: Address,
    dst: Address,
    *,
    seq: int,
    ack: int,
    flags: int,
    payload: Buffer = b"",
    window: int = 65535,
) -> Packet:
    """One TCP segment in an IPv4 or IPv6 packet (family taken from the addresses).

    Returns ``[ip_and_tcp_headers, payload]``; ``payload`` is the caller's object (a bytearray
    comes back as a memoryview of it), not a copy.
    ``seq`` and ``ack`` are taken modulo 2**32 (sequence space wraps).  No TCP options: data
    offset 5.  The ack number is written as given, also without the ACK flag, so that the caller
    stays in control of what the capture shows.
    """
    return tcp_segment(_endpoints(src, dst), seq, ack, flags, payload, window)


def tcp_endpoints(src: Address, dst: Address) -> tuple[int, bytes, bytes, int, int]:
    """``src`` and ``dst`` checked and packed once, for any number of tcp_segment() calls
    (a TcpFlow keeps one per direction)."""
    return _endpoints(src, dst)


def tcp_segment(ends: tuple[int, bytes, bytes, int, int], seq: int, ack: int, flags: int,
                payload: Buffer = b"", window: int = 65535) -> Packet:
    """build_tcp() between endpoints from tcp_endpoints(): the same packet, minus the address
    look-ups (every logged segment of an emulated connection comes through here)."""
    family, src_ip, dst_ip, sport, dport = ends
    if not 0 <= flags <= 0xFF:
        raise ValueError(f"TCP flags out of range: {flags:#x}")
    if not 0 <= window <= 0xFFFF:
        raise ValueError(f"TCP window out of range: {window}")
    kind = type(payload)
    length = TCP_HEADER_LEN + (len(payload) if kind is bytes else memoryview(payload).nbytes)
    seq &= 0xFFFFFFFF
    ack &= 0xFFFFFFFF
    if _c_tcp_headers is not None and length <= _MAX_IP_PAYLOAD[family]:
        # The same bytes as below (tests/test_packets.py compares them), ~20x faster.
        if family == socket.AF_INET6:
            head = _c_tcp_headers(True, src_ip, dst_ip, sport, dport, seq, ack, flags, window, 0, payload)
        else:
            head = _c_tcp_headers(False, src_ip, dst_ip, sport, dport, seq, ack, flags, window,
                                  next(_ipv4_ids) & 0xFFFF, payload)
        return [head, memoryview(payload) if kind is bytearray else payload]
    ip = _ip_header(family, src_ip, dst_ip, IPPROTO_TCP, length)
    tcp = _TCP.pack(sport, dport, seq, ack, 5 << 4, flags, window, 0, 0)
    csum = internet_checksum(_pseudo_header(family, src_ip, dst_ip, IPPROTO_TCP, length), tcp, payload)
    tcp = _TCP.pack(sport, dport, seq, ack, 5 << 4, flags, window, csum, 0)
    return [ip + tcp, _no_copy(payload)]


def build_udp(src: Address, dst: Address, payload: Buffer = b"") -> Packet:
    """One UDP datagram in an IPv4 or IPv6 packet; returns ``[ip_and_udp_headers, payload]``.

    The checksum is always computed.  A computed 0 is sent as 0xFFFF (RFC 768): 0 means "no
    checksum", legal only for IPv4, and Wireshark flags it as illegal for IPv6.
    """
    family, src_ip, dst_ip, sport, dport = _endpoints(src, dst)
    length = UDP_HEADER_LEN + memoryview(payload).nbytes
    if _c_udp_headers is not None and length <= _MAX_IP_PAYLOAD[family]:
        # The same bytes as below (tests/test_packets.py compares them), ~20x faster.
        v6 = family == socket.AF_INET6
        return [_c_udp_headers(v6, src_ip, dst_ip, sport, dport, 0 if v6 else _next_ipv4_id(), payload),
                _no_copy(payload)]
    ip = _ip_header(family, src_ip, dst_ip, IPPROTO_UDP, length)
    udp = _UDP.pack(sport, dport, length, 0)
    csum = internet_checksum(_pseudo_header(family, src_ip, dst_ip, IPPROTO_UDP, length), udp, payload)
    udp = _UDP.pack(sport, dport, length, csum or 0xFFFF)
    return [ip + udp, _no_copy(payload)]


def udp_endpoints(src: Address, dst: Address) -> tuple[int, bytes, bytes, int, int]:
    """``src`` and ``dst`` checked and packed once, for any number of udp_datagram() calls (an
    emulated UDP socket keeps the last destination's)."""
    return _endpoints(src, dst)


def udp_datagram(ends: tuple[int, bytes, bytes, int, int], payload: bytes) -> Packet:
    """build_udp() between endpoints from udp_endpoints(), for a ``bytes`` payload: the same
    packet, minus the address look-ups (every logged datagram of an emulated socket comes here)."""
    family, src_ip, dst_ip, sport, dport = ends
    if _c_udp_headers is not None and UDP_HEADER_LEN + len(payload) <= _MAX_IP_PAYLOAD[family]:
        if family == socket.AF_INET6:
            return [_c_udp_headers(True, src_ip, dst_ip, sport, dport, 0, payload), payload]
        return [_c_udp_headers(False, src_ip, dst_ip, sport, dport, next(_ipv4_ids) & 0xFFFF, payload), payload]
    return build_udp((socket.inet_ntop(family, src_ip), sport), (socket.inet_ntop(family, dst_ip), dport), payload)


def build_icmp_unreachable(original_packet: Buffer | Iterable[Buffer], family: int) -> bytes:
    """The ICMP error a host would return for ``original_packet`` (as built by build_tcp/build_udp).

    IPv4: type 3 code 1 (host unreachable); IPv6: type 1 code 3 (address unreachable) — the codes
    cwrap uses, so captures of C and Python programs read alike.  The error goes from the original
    destination back to the original source and quotes the original packet *unchanged* (its real
    next-header included): at most 64 bytes of it for IPv4, as cwrap does, and for IPv6 as much as
    RFC 4443 allows within 1280 bytes.  ``original_packet`` may also be the buffer list itself.
    """
    if isinstance(original_packet, (bytes, bytearray, memoryview)):
        original = bytes(original_packet)
    else:
        original = b"".join(original_packet)
    version = original[0] >> 4 if original else 0
    if family == socket.AF_INET:
        if version != 4 or len(original) < IPV4_HEADER_LEN:
            raise ValueError("original packet is not an IPv4 packet")
        orig_src, orig_dst = original[12:16], original[16:20]
        body = struct.pack("!BBHI", 3, 1, 0, 0) + original[:_ICMP4_QUOTE_MAX]
        body = body[:2] + internet_checksum(body).to_bytes(2, "big") + body[4:]
        return _ipv4_header(orig_dst, orig_src, IPPROTO_ICMP, len(body)) + body
    if family == socket.AF_INET6:
        if version != 6 or len(original) < IPV6_HEADER_LEN:
            raise ValueError("original packet is not an IPv6 packet")
        orig_src, orig_dst = original[8:24], original[24:40]
        body = struct.pack("!BBHI", 1, 3, 0, 0) + original[:_ICMP6_QUOTE_MAX]
        pseudo = _pseudo_header(family, orig_dst, orig_src, IPPROTO_ICMPV6, len(body))
        body = body[:2] + internet_checksum(pseudo, body).to_bytes(2, "big") + body[4:]
        return _ipv6_header(orig_dst, orig_src, IPPROTO_ICMPV6, len(body)) + body
    raise ValueError(f"unsupported address family: {family!r}")


def packet_bytes(buffers: Sequence[Buffer]) -> bytes:
    """Join a buffer list from build_tcp/build_udp into one packet (for tests and ICMP quoting)."""
    return b"".join(buffers)
