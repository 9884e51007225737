"""Start-up per cell, read from the capture: the first packet and the first packet with application bytes."""
import struct

from harness.runner.outcome import CellReport
from harness.runner.report import startup_line
from harness.scenario.startup import describe, first_times, startup
from wrappers.packets import build_tcp, build_udp
from wrappers.pcapfile import pcap_header

C, S = ("127.0.0.11", 40000), ("127.0.0.10", 445)
C6, S6 = ("::11", 40000), ("::10", 445)


def write(path, records):
    with open(path, "wb") as f:
        f.write(pcap_header())
        for ts, pkt in records:
            data = b"".join(bytes(p) for p in pkt)
            f.write(struct.pack("=IIII", int(ts), round((ts % 1) * 1e6), len(data), len(data)) + data)
    return path


def test_tcp_handshake_then_request(tmp_path):
    p = write(tmp_path / "c.pcap", [(1000.5, build_tcp(C, S, seq=0, ack=0, flags=0x02)),
                                    (1000.6, build_tcp(S, C, seq=0, ack=1, flags=0x12)),
                                    (1000.7, build_tcp(C, S, seq=1, ack=1, flags=0x10)),
                                    (1001.2, build_tcp(C, S, seq=1, ack=1, flags=0x18, payload=b"NEGOTIATE"))])
    assert first_times(p) == (1000.5, 1001.2)
    assert startup(p, 1000.0) == {"first_packet": 0.5, "first_request": 1.2}
    assert "first request 1.20s" in describe(startup(p, 1000.0))


def test_ipv6_and_udp(tmp_path):
    p = write(tmp_path / "c.pcap", [(7.0, build_tcp(C6, S6, seq=0, ack=0, flags=0x02)),
                                    (7.25, build_udp(C6, S6, b"\xc0initial"))])
    assert first_times(p) == (7.0, 7.25)


def test_no_request_no_figure(tmp_path):
    p = write(tmp_path / "c.pcap", [(5.0, build_tcp(C, S, seq=0, ack=0, flags=0x02))])
    assert startup(p, 4.0) == {"first_packet": 1.0}
    assert startup(tmp_path / "missing.pcap", 4.0) == {}
    (tmp_path / "other.pcap").write_bytes(b"\x0a\x0d\x0d\x0a" + bytes(40))
    assert first_times(tmp_path / "other.pcap") == (None, None)


def test_summary_line_median_and_slowest():
    def rep(cid, t):
        return CellReport(cid, cid, "tcp", cid, {}, "", "pass", startup={"first_request": t} if t else {})
    line = startup_line([rep("a", 1.0), rep("b", 3.0), rep("c", 2.0), rep("d", None)])
    assert line == "Start-up to the first request: median 2.00s, max 3.00s (b) over 3 cells"
    assert startup_line([rep("d", None)]) == ""
