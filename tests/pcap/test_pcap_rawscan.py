"""rawscan.no_smb_elsewhere: it may spare the SMB port search only where the search finds nothing.

Every case is checked against the search itself (tshark.smb_tcp_ports): a "proven" answer on a
capture where tshark finds a port would hide SMB on that port from every check."""
from __future__ import annotations

import struct
import subprocess

import pytest

from harness.pcap import Capture, Count, rawscan
from harness.pcap import tshark as ts

from . import captures as gen

CLIENT, SERVER = "10.0.0.1", "10.0.0.2"


def _smb_payload(mid: int = 0, response: bool = False) -> bytes:
    return gen.direct_tcp(gen.echo(mid, response=response))


def _segments(port: int = 445, handshake: bool = True, server_first: bool = False):
    """scapy packets of one SMB-over-TCP connection to `port`."""
    from scapy.layers.inet import IP, TCP

    c2s = IP(src=CLIENT, dst=SERVER) / TCP(sport=50000, dport=port, seq=1000, ack=5000)
    s2c = IP(src=SERVER, dst=CLIENT) / TCP(sport=port, dport=50000, seq=5000, ack=1000)
    out = []
    if handshake:
        out += [IP(src=CLIENT, dst=SERVER) / TCP(sport=50000, dport=port, flags="S", seq=999),
                IP(src=SERVER, dst=CLIENT) / TCP(sport=port, dport=50000, flags="SA", seq=4999, ack=1000),
                IP(src=CLIENT, dst=SERVER) / TCP(sport=50000, dport=port, flags="A", seq=1000, ack=5000)]
    req, resp = c2s.copy(), s2c.copy()
    req[TCP].flags, resp[TCP].flags = "PA", "PA"
    pair = [resp / _smb_payload(1, True), req / _smb_payload(2)] if server_first else \
        [req / _smb_payload(1), resp / _smb_payload(1, True)]
    return out + pair


def _write(path, packets, linktype: int = 101):
    from scapy.utils import PcapWriter

    w = PcapWriter(str(path), linktype=linktype, sync=True)
    for p in packets:
        w.write(p)
    w.close()
    return path


def _agrees(path) -> bool:
    """The scan's answer, after checking it never contradicts the search."""
    proven = rawscan.no_smb_elsewhere(path)
    if proven:
        assert ts.smb_tcp_ports(path) == [], f"{path}: proven, but the search finds a port"
    return proven


def test_pcap_rawscan_proves_smb_on_445(tcp_pcap, clean_pcap, tmp_path):
    assert _agrees(tcp_pcap) and _agrees(clean_pcap)
    assert _agrees(_write(tmp_path / "one.pcap", _segments()))


def test_pcap_rawscan_cannot_prove_smb_elsewhere(port8445_pcap, tmp_path):
    assert ts.smb_tcp_ports(port8445_pcap) == [8445]
    assert not _agrees(port8445_pcap)
    no_syn = _write(tmp_path / "nosyn8445.pcap", _segments(8445, handshake=False))
    assert ts.smb_tcp_ports(no_syn) == [8445] and not _agrees(no_syn)


def test_pcap_rawscan_server_speaking_first_without_a_syn(tmp_path):
    """On 445, but the capture starts mid-connection with the server's message: the search names
    the client's port (the first SMB segment of a stream without a SYN went there)."""
    path = _write(tmp_path / "midway.pcap", _segments(handshake=False, server_first=True))
    assert ts.smb_tcp_ports(path) == [50000]
    assert not rawscan.no_smb_elsewhere(path)


def test_pcap_rawscan_link_layers_and_pcapng(tmp_path):
    from scapy.layers.l2 import Ether

    eth = [Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / p for p in _segments()]
    path = _write(tmp_path / "eth.pcap", eth, linktype=1)
    assert _agrees(path)
    ng = tmp_path / "eth.pcapng"
    subprocess.run([ts.find_tool("editcap"), "-F", "pcapng", str(path), str(ng)], check=True, capture_output=True)
    assert _agrees(ng)
    from scapy.layers.l2 import CookedLinux

    sll = [CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, proto=0x0800) / p for p in _segments()]
    assert _agrees(_write(tmp_path / "sll.pcap", sll, linktype=113))
    sll_netlink = [CookedLinux(pkttype=0, lladdrtype=824, proto=0x0800) / p for p in _segments()]
    assert not rawscan.no_smb_elsewhere(_write(tmp_path / "netlink.pcap", sll_netlink, linktype=113))
    ng8445 = tmp_path / "8445.pcapng"
    subprocess.run([ts.find_tool("editcap"), "-F", "pcapng", str(_write(tmp_path / "8445.pcap", _segments(8445))),
                    str(ng8445)], check=True, capture_output=True)
    assert not _agrees(ng8445)


@pytest.mark.parametrize("case", ["vlan", "fragment", "gre", "vxlan", "icmp_error"])
def test_pcap_rawscan_says_cannot_tell_where_tshark_sees_more(tmp_path, case):
    """SMB on 8445 behind a layer the scan does not parse: tshark's search finds it, so the scan
    must not prove anything (a plain SMB-on-445 connection sits beside it)."""
    from scapy.layers.inet import GRE, ICMP, IP, TCP, UDP, fragment
    from scapy.layers.l2 import Dot1Q, Ether
    from scapy.layers.vxlan import VXLAN

    plain, hidden = _segments(), _segments(8445)
    linktype, finds = 101, [8445]
    if case == "vlan":
        pkts, linktype = [Ether() / p for p in plain] + [Ether() / Dot1Q(vlan=5) / p for p in hidden], 1
    elif case == "fragment":
        pkts = plain + hidden[:-1] + fragment(hidden[-1], 16)
    elif case == "gre":
        pkts = plain + [IP(src="192.0.2.1", dst="192.0.2.2") / GRE() / p for p in hidden]
    elif case == "vxlan":
        pkts = plain + [IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=40000, dport=4789) / VXLAN(vni=7)
                        / Ether() / p for p in hidden]
    else:  # an ICMP error quoting a SYN: the search reads the quoted TCP header
        quoted = bytes(IP(src=CLIENT, dst=SERVER) / TCP(sport=50001, dport=445, flags="S"))[:40]
        pkts, finds = plain + [IP(src=SERVER, dst=CLIENT) / ICMP(type=3, code=3) / quoted], []
    path = _write(tmp_path / f"{case}.pcap", pkts, linktype)
    assert ts.smb_tcp_ports(path) == finds
    assert not rawscan.no_smb_elsewhere(path)


def test_pcap_rawscan_damaged_files(tcp_pcap, tmp_path):
    cut = gen.truncate_file(tcp_pcap, tmp_path / "cut.pcap")
    assert not rawscan.no_smb_elsewhere(cut)
    (tmp_path / "short.pcap").write_bytes(bytes.fromhex("d4c3b2a1020004"))
    assert not rawscan.no_smb_elsewhere(tmp_path / "short.pcap")
    assert not rawscan.no_smb_elsewhere(tmp_path / "missing.pcap")
    big = bytearray(bytes.fromhex("d4c3b2a1020004000000000000000000ffff000065000000"))
    big += struct.pack("<IIII", 0, 0, 300_000, 300_000) + bytes(300_000)  # beyond tshark's 262144
    (tmp_path / "big.pcap").write_bytes(big)
    assert not rawscan.no_smb_elsewhere(tmp_path / "big.pcap")


def test_pcap_capture_skips_the_search_it_can_prove_useless(tcp_pcap, port8445_pcap, monkeypatch):
    started = []
    real = ts.SmbPortSearch

    def spy(path, **kw):
        started.append(path)
        return real(path, **kw)

    monkeypatch.setattr(ts, "SmbPortSearch", spy)
    cap = Capture(tcp_pcap)
    assert cap.count("smb2.cmd == 9") == 2 and cap.detected_smb_ports == [] and cap.passes == 1
    assert started == []
    cap = Capture(port8445_pcap)  # the search still runs, and still finds the port
    assert cap.count("smb2.cmd == 9") == 2 and cap.detected_smb_ports == [8445]
    assert started == [port8445_pcap]
    cap.check(Count("smb2.cmd == 9", eq=2))


def test_pcap_truncated_capture_fails_alike_with_the_proof(tcp_pcap, tmp_path):
    """A damaged file is never proven: the search runs and its error comes first, as before."""
    cut = gen.truncate_file(tcp_pcap, tmp_path / "cut.pcap")
    with pytest.raises(ts.BadCapture, match=r"cut\.pcap: the capture is truncated"):
        Capture(cut).count("smb2.cmd == 9")


@pytest.mark.parametrize("chunk", [7, 100, 4096])
def test_pcap_rawscan_reads_records_across_chunks(tcp_pcap, port8445_pcap, tmp_path, monkeypatch, chunk):
    """The file is read a chunk at a time: records and blocks that straddle chunks read alike."""
    ng = tmp_path / "tcp.pcapng"
    subprocess.run([ts.find_tool("editcap"), "-F", "pcapng", str(tcp_pcap), str(ng)], check=True, capture_output=True)
    monkeypatch.setattr(rawscan, "_CHUNK", chunk)
    assert rawscan.no_smb_elsewhere(tcp_pcap) and rawscan.no_smb_elsewhere(ng)
    assert not rawscan.no_smb_elsewhere(port8445_pcap)
    assert not rawscan.no_smb_elsewhere(gen.truncate_file(ng, tmp_path / "cut.pcapng"))


def _mutations():
    """Plain IPv4 TCP SMB segments to port 445 (and 8445), bent at the edges of the shortcut: where
    the general path cannot tell, a shortcut that took the record would wrongly prove it."""
    from scapy.layers.inet import IP, TCP

    def smb(port=445, **ip):
        return bytes(IP(src=CLIENT, dst=SERVER, **ip) / TCP(sport=50000, dport=port, flags="PA") / _smb_payload())

    good = smb()
    yield "plain", good
    yield "8445", smb(8445)
    yield "ip options", smb(options=[b"\x01\x01\x01\x00"])
    yield "fragment", smb(flags="MF")
    yield "fragment offset", smb(frag=3)
    yield "total below headers", good[:2] + struct.pack("!H", 39) + good[4:]
    yield "total beyond record", good[:2] + struct.pack("!H", len(good) + 10) + good[4:]
    yield "data offset 4", good[:32] + bytes([0x40]) + good[33:]
    yield "data offset beyond", good[:32] + bytes([0xF0]) + good[33:]
    yield "tcp.len 8", good[:2] + struct.pack("!H", 48) + good[4:48]
    yield "short", good[:39]
    yield "not tcp", good[:9] + b"\x11" + good[10:]


@pytest.mark.parametrize("name,pkt", list(_mutations()), ids=[m[0] for m in _mutations()])
def test_pcap_rawscan_shortcut_answers_as_the_general_path(tmp_path, monkeypatch, name, pkt):
    """The plain-IPv4-TCP shortcut answers what the layer-by-layer path answers, record by record
    (also for a record cut by the snap length, where the IP length may exceed what was captured)."""
    path = tmp_path / "one.pcap"
    for snapped in (False, True):
        head = bytes.fromhex("d4c3b2a1020004000000000000000000ffff000065000000")
        path.write_bytes(head + struct.pack("<IIII", 0, 0, len(pkt), len(pkt) + 20 * snapped) + pkt)
        answers = []
        for fast in (True, False):
            monkeypatch.setattr(rawscan, "FAST_PATH", fast)
            answers.append(rawscan.no_smb_elsewhere(path))
        assert answers[0] == answers[1], (name, snapped)
