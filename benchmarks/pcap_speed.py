"""pcap analysis speed: Capture's one tshark pass vs naive pyshark per-packet iteration.

Prints ratios against baselines measured in the same process, never absolute pass/fail times
(machines differ; ratios travel). Run: .venv/bin/python -m benchmarks.pcap_speed [--streams N]

Workload: the same 6 questions (count WRITEs, count ECHOs, retransmissions, dialect values, first
SMB2 frame, per-stream NEGOTIATE counts) on a generated SMB2-over-TCP/445 capture.
  baseline A: pyshark FileCapture (default PDML mode), one iteration answering all questions
  baseline B: pyshark FileCapture(use_json=True, include_raw=False), same
  Capture:    cap.expect(...6 assertions...).verify()  -> one `tshark -T fields` pass
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.pcap import Absent, Capture, Count, First, Values  # noqa: E402
from tests.pcap import captures as gen  # noqa: E402


def one_pass(path: Path) -> float:
    t = time.perf_counter()
    cap = Capture(path)
    cap.expect(Count("smb2.cmd == 9", min=1), Count("smb2.cmd == 13", min=1), Absent("tcp.analysis.retransmission"),
               Values("smb2.dialect", {"smb2.cmd": 0, "smb2.flags.response": 1}, all=0x311),
               First("smb2", {"smb2.cmd": 0}), Count("smb2.cmd == 0", eq=2, per="tcp")).verify()
    assert cap.passes == 1
    return time.perf_counter() - t


def naive_pyshark(path: Path, **kw) -> float:
    import pyshark

    t = time.perf_counter()
    writes = echoes = retrans = 0
    dialects, first, neg_per_stream = [], None, {}
    with pyshark.FileCapture(str(path), keep_packets=False, **kw) as pc:
        for pkt in pc:
            num = int(pkt.number)
            if "TCP" in pkt and hasattr(pkt.tcp, "analysis_retransmission"):
                retrans += 1
            if "SMB2" not in pkt:
                continue
            layer = pkt.smb2
            try:
                cmd = int(layer.cmd)
            except AttributeError:  # json mode nests the header (pcap-facts 5)
                cmd = int(layer.get_field("SMB2 Header").get_field("cmd"))
            first = first or num
            writes += cmd == 9
            echoes += cmd == 13
            if cmd == 0:
                neg_per_stream[pkt.tcp.stream] = neg_per_stream.get(pkt.tcp.stream, 0) + 1
                d = getattr(layer, "dialect", None)
                if d:
                    dialects.append(d)
    assert writes and echoes and first
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=4, help="TCP connections (each ~30 frames + echoes)")
    ap.add_argument("--echoes", type=int, default=100, help="ECHO exchanges per connection")
    ap.add_argument("--skip-pdml", action="store_true", help="skip the slow default-mode pyshark baseline")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = gen.smb_tcp_capture(Path(d) / "bench.pcap", streams=a.streams, echoes=a.echoes)
        frames = len(Capture(path).table)
        ours = min(one_pass(path) for _ in range(3))
        print(f"capture: {frames} frames, {a.streams} TCP streams")
        print(f"Capture one pass (6 assertions): 1.00x (baseline for the ratios below, {ours:.3f} s)")
        if not a.skip_pdml:
            pdml = naive_pyshark(path)
            print(f"naive pyshark (PDML, per packet): {pdml / ours:.1f}x slower than one pass")
        js = naive_pyshark(path, use_json=True, include_raw=False)
        print(f"naive pyshark (use_json, per packet): {js / ours:.1f}x slower than one pass")


if __name__ == "__main__":
    main()
