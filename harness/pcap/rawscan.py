"""A look at the raw capture file before tshark: can SMB run on a TCP port other than 139/445 at all?

Why: the SMB port search (tshark.smb_tcp_ports) is a tshark run of its own that costs as much CPU
as the main pass (it slices every TCP payload: ~0.7 s on 20,000 frames), and on most captures it
finds nothing. Reading the pcap/pcapng records here (link layer, IPv4/IPv6, TCP headers, with
struct and byte compares, no dissection) takes a few tens of milliseconds and can often PROVE that
the search would find nothing, so it need not run.

It only ever answers "the search cannot find a port" (True) or "cannot tell" (False): on False the
search runs exactly as before, so nothing it finds is ever decided here. It says "cannot tell" for
anything it does not parse completely and exactly as tshark would see it: a truncated or damaged
file, an unknown link type or block, VLAN/MPLS/PPPoE or any other EtherType than IPv4/IPv6/ARP, IP
fragments, tunnels (IP-in-IP, GRE, UDP ports of VXLAN and the like), ICMP errors (they quote TCP
headers that tshark dissects), IPv6 headers other than hop-by-hop/routing/destination options.

What the search answers, restated: for each TCP conversation (tshark's tcp.stream) holding an SMB
segment (a payload of more than 8 bytes starting 00 and with an SMB magic 4 bytes in), the port
its first SYN (without ACK) went to, else the port its first such segment went to; 139 and 445
left out. tcp.stream numbers a conversation per address/port pair; for a pair seen before, tshark
4.0 starts a new one at a SYN (port reuse), and a SYN-ACK is taken as a possible start too, to be
safe. So the answer is empty when, for every address/port pair
holding an SMB segment: every SYN of the pair went to 139/445, and the first SMB segment after the
pair's first segment, and after each SYN-ACK, went to 139/445 (a stream without a SYN starts there).
"""
from __future__ import annotations

import os
import struct

DEFAULT_PORTS = frozenset({139, 445})
MAGICS = frozenset({b"\xfeSMB", b"\xfdSMB", b"\xfcSMB", b"\xffSMB"})

#: IP protocols that cannot carry a TCP segment tshark would dissect: ICMP (errors excluded
#: below), IGMP, TCP itself, UDP (tunnel ports excluded below), ICMPv6, OSPF, PIM, VRRP, SCTP.
_PLAIN_PROTOCOLS = frozenset({1, 2, 6, 17, 58, 89, 103, 112, 132})
#: UDP ports of IP/Ethernet tunnels tshark dissects by port: L2TP, GTP-U, AMT, Teredo, LISP,
#: GRE-in-UDP, VXLAN, CAPWAP, Geneve, MPLS-in-UDP, Linux VXLAN's old port.
_TUNNEL_UDP_PORTS = frozenset({1701, 2152, 2268, 3544, 4341, 4754, 4789, 5246, 5247, 6081, 6635, 8472})
_ICMP4_ERRORS = frozenset({3, 4, 5, 11, 12})
_IPV6_OPTION_HEADERS = frozenset({0, 43, 60})  # hop-by-hop, routing, destination options
_MAX_PACKET = 262_144  # tshark 4.0 refuses bigger records as damaged

_ETH_IPV4, _ETH_IPV6, _ETH_ARP = 0x0800, 0x86DD, 0x0806
#: Linux cooked captures: device types whose protocol field is an EtherType (Ethernet, loopback,
#: none: tun devices); netlink, GRE and others give it other meanings
_SLL_ETHERTYPE_HATYPES = frozenset({1, 772, 65534})
_U16 = struct.Struct("!H")
_TCP_PORTS = struct.Struct("!HH")


class CannotTell(Exception):
    """Something the scan does not parse exactly as tshark would: the search must run."""


class _Pairs:
    """Per address/port pair: the facts the proof needs, gathered frame by frame in file order."""

    __slots__ = ("seen", "armed", "smb", "syn_elsewhere")

    def __init__(self) -> None:
        self.seen: set[tuple] = set()
        self.armed: set[tuple] = set()  # pairs whose next SMB segment may start a stream without a SYN
        self.smb: set[tuple] = set()  # pairs holding an SMB segment
        self.syn_elsewhere: set[tuple] = set()  # pairs with a SYN to a port other than 139/445

    def segment(self, src: bytes, sport: int, dst: bytes, dport: int, flags: int, smb: bool) -> None:
        """One TCP segment; raises CannotTell as soon as the search could find a port."""
        key = (src, sport, dst, dport) if (src, sport) <= (dst, dport) else (dst, dport, src, sport)
        if key not in self.seen:
            self.seen.add(key)
            self.armed.add(key)  # the pair's first segment may start a stream without a SYN
        if flags & 0x12 == 0x02:  # SYN without ACK: the search reads it as a SYN, never as SMB
            if dport not in DEFAULT_PORTS:
                if key in self.smb:
                    raise CannotTell(f"a SYN to port {dport} on a pair carrying SMB")
                self.syn_elsewhere.add(key)
            return
        if flags & 0x02:
            self.armed.add(key)  # a SYN-ACK may start a stream of its own
        if smb:
            if key in self.syn_elsewhere:
                raise CannotTell("SMB on a pair with a SYN to a port other than 139/445")
            self.smb.add(key)
            if key in self.armed:
                if dport not in DEFAULT_PORTS:
                    raise CannotTell(f"an SMB segment to port {dport} may name its stream's port")
                self.armed.discard(key)


def _ip_segment(buf, s: int, end: int, snapped: bool, version: int, pairs: _Pairs) -> None:
    """One IPv4/IPv6 packet at buf[s:end] (end: the captured end; `snapped`: the record was cut by
    the snap length, so the IP length may claim more than was captured)."""
    if end - s < 1 or buf[s] >> 4 != version:
        raise CannotTell("not the IP version the link layer announced")
    if version == 4:
        if end - s < 20:
            raise CannotTell("short IPv4 header")
        ihl = (buf[s] & 15) * 4
        total = (buf[s + 2] << 8) | buf[s + 3]
        if ihl < 20 or total < ihl or s + ihl > end or (buf[s + 6] & 0x3F) or buf[s + 7]:
            raise CannotTell("IPv4 header, options or fragment")  # MF set or a fragment offset
        proto, p = buf[s + 9], s + ihl
        src, dst = buf[s + 12:s + 16], buf[s + 16:s + 20]
        claimed = s + total
    else:
        if end - s < 40:
            raise CannotTell("short IPv6 header")
        plen = (buf[s + 4] << 8) | buf[s + 5]
        if plen == 0:
            raise CannotTell("IPv6 jumbogram")
        proto, p = buf[s + 6], s + 40
        src, dst = buf[s + 8:s + 24], buf[s + 24:s + 40]
        claimed = s + 40 + plen
        while proto in _IPV6_OPTION_HEADERS:
            if p + 2 > end:
                raise CannotTell("short IPv6 extension header")
            proto, p = buf[p], p + (buf[p + 1] + 1) * 8
        if p > claimed:
            raise CannotTell("IPv6 extension headers beyond the payload")
    cap_end = min(claimed, end)
    if proto == 6:
        if claimed > end and not snapped:  # tshark's tcp.len would not be the IP header's
            raise CannotTell("IP length beyond the captured packet")
        _tcp(buf, p, cap_end, claimed, src, dst, pairs)
    elif proto not in _PLAIN_PROTOCOLS:
        raise CannotTell(f"IP protocol {proto}")
    elif proto == 17:
        if p + 4 > cap_end:
            raise CannotTell("short UDP header")
        sport, dport = _TCP_PORTS.unpack_from(buf, p)
        if sport in _TUNNEL_UDP_PORTS or dport in _TUNNEL_UDP_PORTS:
            raise CannotTell(f"a tunnel over UDP port {sport}/{dport}")
    elif proto in (1, 58):
        if p >= cap_end:
            raise CannotTell("short ICMP header")
        if (buf[p] in _ICMP4_ERRORS) if proto == 1 else buf[p] < 128:
            raise CannotTell("an ICMP error (it quotes a TCP header)")


def _tcp(buf, p: int, cap_end: int, claimed: int, src: bytes, dst: bytes, pairs: _Pairs) -> None:
    if p + 20 > cap_end:
        raise CannotTell("short TCP header")
    sport, dport = _TCP_PORTS.unpack_from(buf, p)
    doff = (buf[p + 12] >> 4) * 4
    if doff < 20 or p + doff > cap_end:
        raise CannotTell("TCP header length")
    ps = p + doff
    smb = (claimed - ps > 8 and ps + 8 <= cap_end and buf[ps] == 0 and buf[ps + 4:ps + 8] in MAGICS)
    pairs.segment(src, sport, dst, dport, buf[p + 13], smb)


#: IPv4 without options, then TCP up to its flags: version/IHL, total length, flags/fragment
#: offset, protocol, addresses; ports, data offset, flags
_IPV4_TCP = struct.Struct("!BxHxxHxBxx4s4sHH8xBB")
#: the shortcut below (tests turn it off to check that it answers as the general path)
FAST_PATH = True


def _plain_ipv4_tcp(buf, s: int, end: int, snapped: bool, pairs: _Pairs) -> bool:
    """The common record of a raw-IP capture, a plain IPv4 TCP segment, in one step; False for
    anything else (and for anything the general path would refuse), which `_link` then reads.
    Why: most records are these, and the general path's layers cost twice as much per frame."""
    if end - s < 40:
        return False
    vihl, total, frag, proto, src, dst, sport, dport, offb, flags = _IPV4_TCP.unpack_from(buf, s)
    if vihl != 0x45 or proto != 6 or frag & 0x3FFF or total < 40 or (s + total > end and not snapped):
        return False
    claimed = s + total
    cap_end = claimed if claimed < end else end
    ps = s + 20 + (offb >> 4) * 4
    if offb < 0x50 or ps > cap_end:
        return False
    smb = claimed - ps > 8 and ps + 8 <= cap_end and buf[ps] == 0 and buf[ps + 4:ps + 8] in MAGICS
    pairs.segment(src, sport, dst, dport, flags, smb)
    return True


def _link(linktype: int, buf, start: int, end: int, snapped: bool, pairs: _Pairs) -> None:
    """Strip the link layer of one record and hand the IP packet on (ARP is skipped)."""
    if linktype in (101, 228, 229):  # raw IP, IPv4, IPv6
        if end <= start:
            raise CannotTell("empty raw IP record")
        version = buf[start] >> 4
        if (linktype == 228 and version != 4) or (linktype == 229 and version != 6) or version not in (4, 6):
            raise CannotTell("raw IP record of another version")
        _ip_segment(buf, start, end, snapped, version, pairs)
        return
    if linktype == 1:  # Ethernet
        off, etype_at = start + 14, start + 12
    elif linktype in (113, 276):  # Linux cooked v1 / v2
        off, etype_at, hatype_at = (start + 16, start + 14, start + 2) if linktype == 113 else (start + 20, start, start + 8)
        if off > end or _U16.unpack_from(buf, hatype_at)[0] not in _SLL_ETHERTYPE_HATYPES:
            raise CannotTell("a Linux cooked header whose protocol is not an EtherType")
    elif linktype in (0, 108):  # BSD loopback: address family, host order (0) or network order (108)
        if end - start < 4:
            raise CannotTell("short loopback header")
        fam = {int.from_bytes(buf[start:start + 4], "big")}
        if linktype == 0:
            fam.add(int.from_bytes(buf[start:start + 4], "little"))
        if 2 in fam:
            _ip_segment(buf, start + 4, end, snapped, 4, pairs)
        elif fam & {24, 28, 30}:
            _ip_segment(buf, start + 4, end, snapped, 6, pairs)
        else:
            raise CannotTell("loopback address family")
        return
    else:
        raise CannotTell(f"link type {linktype}")
    if off > end:
        raise CannotTell("short link-layer header")
    etype = _U16.unpack_from(buf, etype_at)[0]
    if etype == _ETH_IPV4:
        _ip_segment(buf, off, end, snapped, 4, pairs)
    elif etype == _ETH_IPV6:
        _ip_segment(buf, off, end, snapped, 6, pairs)
    elif etype != _ETH_ARP:
        raise CannotTell(f"EtherType 0x{etype:04x}")


#: bytes read from the file at a time: the file is read, not mapped, because mapped pages that
#: were read count in the process's peak RSS (a million-frame capture is hundreds of MB)
_CHUNK = 1 << 20
_MAX_BLOCK = 1 << 26  # a pcapng block longer than this (64 MiB) is not expected: cannot tell
_MIN_BLOCK = {1: 20, 2: 32, 3: 16, 6: 32}  # interface, obsolete/simple/enhanced packet: fixed fields


def _windows(f, first: bytes):
    """The file's bytes as a sliding window: yields (buf, final) with `buf` holding the unread
    rest of the previous window plus the next chunk; the caller sends back how many bytes of
    `buf` it consumed (whole records only)."""
    buf, final = first, False
    while not final:
        chunk = f.read(_CHUNK)
        final = not chunk
        window = buf + chunk if buf else chunk
        used = yield window, final
        buf = window[used:]
        del window, chunk
    if buf:
        raise CannotTell("the file ends inside a record")


def _pcap_records(f, head: bytes) -> None:
    """Walk a classic pcap (either byte order, micro- or nanoseconds); `head`: its first 24 bytes."""
    order = "<" if head[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    major, minor, _zone, _sig, _snap, ltfield = struct.unpack_from(order + "HHiIII", head, 4)
    if (major, minor) != (2, 4) or ltfield >> 16:
        raise CannotTell("pcap version or link type field")
    rec = struct.Struct(order + "IIII")
    pairs = _Pairs()
    raw = FAST_PATH and ltfield in (101, 228)
    windows = _windows(f, b"")
    buf, final = next(windows)
    while True:
        n, off = len(buf), 0
        while off + 16 <= n:
            _s, _u, incl, orig = rec.unpack_from(buf, off)
            if incl > _MAX_PACKET or incl > orig:
                raise CannotTell("oversized record")
            end = off + 16 + incl
            if end > n:
                break
            if not (raw and _plain_ipv4_tcp(buf, off + 16, end, incl < orig, pairs)):
                _link(ltfield, buf, off + 16, end, incl < orig, pairs)
            off = end
        try:
            buf, final = windows.send(off)
        except StopIteration:
            return


def _pcapng_blocks(f, head: bytes) -> None:
    """Walk a pcapng file: section headers, interface descriptions, enhanced/simple/obsolete packet
    blocks; other blocks (names, statistics, secrets, custom) carry no packets and are skipped."""
    state = {"order": "<", "links": [], "snaps": []}
    pairs = _Pairs()
    windows = _windows(f, head)
    buf, final = next(windows)
    while True:
        n, off = len(buf), 0
        while off + 12 <= n:
            blen = _block_length(buf, off, state)
            if off + blen > n:
                break
            _block(buf, off, blen, state, pairs)
            off += blen
        try:
            buf, final = windows.send(off)
        except StopIteration:
            return


def _block_length(buf, off: int, state: dict) -> int:
    if buf[off:off + 4] == b"\x0a\x0d\x0d\x0a":
        order = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}.get(buf[off + 8:off + 12], "")
        if not order:
            raise CannotTell("section byte order")
        state.update(order=order, links=[], snaps=[])
    (blen,) = struct.unpack_from(state["order"] + "I", buf, off + 4)
    if blen < 12 or blen % 4 or blen > _MAX_BLOCK:
        raise CannotTell("block length")
    return blen


def _block(buf, off: int, blen: int, state: dict, pairs: _Pairs) -> None:
    order, links, snaps = state["order"], state["links"], state["snaps"]
    (btype,) = struct.unpack_from(order + "I", buf, off)
    body = off + 8
    if blen < _MIN_BLOCK.get(btype, 12):
        raise CannotTell("a block too short for its type")
    if btype == 1:  # interface description
        lt, _r, snap = struct.unpack_from(order + "HHI", buf, body)
        links.append(lt)
        snaps.append(snap)
    elif btype in (2, 6):  # obsolete / enhanced packet block
        if btype == 6:
            ifid, _th, _tl, caplen, origlen = struct.unpack_from(order + "IIIII", buf, body)
        else:
            ifid, _drops, _th, _tl, caplen, origlen = struct.unpack_from(order + "HHIIII", buf, body)
        _packet(links, ifid, buf, body + 20, caplen, origlen, off + blen - 4, pairs)
    elif btype == 3:  # simple packet block: interface 0, the snap length limits it
        (origlen,) = struct.unpack_from(order + "I", buf, body)
        if not links:
            raise CannotTell("packet before any interface")
        room = blen - 16
        caplen = min(origlen, room, snaps[0]) if snaps[0] else min(origlen, room)
        _packet(links, 0, buf, body + 4, caplen, origlen, off + blen - 4, pairs)


def _packet(links: list, ifid: int, buf, start: int, caplen: int, origlen: int, limit: int, pairs: _Pairs) -> None:
    if ifid >= len(links):
        raise CannotTell("packet of an undeclared interface")
    if start + caplen > limit or caplen > _MAX_PACKET or caplen > origlen:
        raise CannotTell("packet longer than its block")
    _link(links[ifid], buf, start, start + caplen, caplen < origlen, pairs)


def no_smb_elsewhere(path: str | os.PathLike) -> bool:
    """True when the SMB port search (tshark.smb_tcp_ports) provably finds no port on this file;
    False when that cannot be told from the bytes alone (then the search must run)."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
            if len(head) < 24:
                return False
            if head[:4] == b"\x0a\x0d\x0d\x0a":
                _pcapng_blocks(f, head)
            else:
                _pcap_records(f, head)
    except (CannotTell, OSError, ValueError, struct.error, IndexError):
        return False
    return True
