"""pcap analysis speed and memory: Capture's one tshark pass vs `tshark -Y` per check and a pyshark loop.

The benchmark: a capture of 20,000 packets and 10 assertions, the library against two baselines
evaluating the same assertions in the same run: what a user writes with tshark alone (`tshark -r FILE
-Y FILTER` once per check, lines counted or fields read) and a plain pyshark FileCapture loop (target
>= 50x); and the peak memory for a 1,000,000-packet capture with 10 fields (target <= 500 MB).

Prints ratios measured in the same run and memory peaks, never pass/fail on wall-clock time
(machines differ; ratios travel), and beside each time the CPU seconds it took (Python and
tshark), which a shared machine distorts less. Both sides must reach the same 10 answers, or the
run fails.

    .venv/bin/python -m benchmarks.pcap_speed                 # 20k packets, then 1M for memory
    .venv/bin/python -m benchmarks.pcap_speed --big 0         # speed only
    .venv/bin/python -m benchmarks.pcap_speed --packets 5000 --json   # quicker, plus pyshark use_json

The captures come from benchmarks/pcap_fast_capture.py (struct-packed, ~300k packets/s).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.pcap_fast_capture import fast_smb_tcp_capture  # noqa: E402
from harness.pcap import Absent, Before, Capture, Count, First, Values  # noqa: E402
from harness.pcap.capture import pyshark_event_loop, quiet_child_signals  # noqa: E402

STREAMS = 8


def assertions(streams: int = STREAMS) -> list:
    """The 10 assertions (each also written out by hand in `pyshark_loop`)."""
    return [
        Count("smb2.cmd == 9 && smb2.flags.response == 0", min=1),  # 1 a WRITE request
        Count("smb2.cmd == 13", min=1),  # 2 an ECHO
        Absent("tcp.analysis.retransmission"),  # 3 no retransmission
        Values("smb2.dialect", {"smb2.cmd": 0, "smb2.flags.response": 1}, all=0x311),  # 4 dialect 3.1.1
        First("smb2", {"smb2.cmd": 0}),  # 5 the first SMB2 frame is a NEGOTIATE
        Count("smb2.cmd == 0", eq=2, per="tcp"),  # 6 one NEGOTIATE exchange per connection
        Before("smb2.cmd == 0", "smb2.cmd == 1"),  # 7 NEGOTIATE before SESSION_SETUP
        Count({"smb2.write_length": {"gt": 500}}, min=1),  # 8 a WRITE of more than 500 bytes
        Absent("smb2.flags.response == 1 && smb2.nt_status != 0"),  # 9 no error status
        Count("tcp.flags.syn == 1 && tcp.flags.ack == 0", eq=streams),  # 10 one SYN per connection
    ]


def library(path: Path) -> tuple[float, list[bool], int]:
    t = time.perf_counter()
    cap = Capture(path)
    ok = [r.ok for r in cap.results(assertions())]
    return time.perf_counter() - t, ok, cap.passes


def _b(v) -> bool:
    return str(v) in ("1", "True", "true")


def pyshark_loop(path: Path, **kw) -> tuple[float, list[bool]]:
    """The same 10 answers from a plain FileCapture iteration (what a test writer does by hand)."""
    import pyshark

    t = time.perf_counter()
    writes = echoes = retrans = big_write = errors = syns = 0
    dialect_ok, first_smb2_is_neg, neg_then_setup = True, None, False
    seen_neg = False
    neg_per_stream: dict[str, int] = {}
    streams: set[str] = set()
    pyshark_event_loop()
    with pyshark.FileCapture(str(path), keep_packets=False, **kw) as pc:
        quiet_child_signals()
        for pkt in pc:
            if "TCP" in pkt:
                tcp = pkt.tcp
                streams.add(tcp.stream)
                retrans += hasattr(tcp, "analysis_retransmission")
                syns += _b(tcp.flags_syn) and not _b(tcp.flags_ack)
            if "SMB2" not in pkt:
                continue
            s = pkt.smb2
            cmd, resp = int(s.cmd), _b(s.flags_response)
            if first_smb2_is_neg is None:
                first_smb2_is_neg = cmd == 0
            writes += cmd == 9 and not resp
            echoes += cmd == 13
            if cmd == 0:
                seen_neg = True
                neg_per_stream[pkt.tcp.stream] = neg_per_stream.get(pkt.tcp.stream, 0) + 1
                if resp:
                    dialect_ok &= int(s.dialect, 16) == 0x311
            if cmd == 1 and seen_neg:
                neg_then_setup = True
            wl = getattr(s, "write_length", None)
            big_write += wl is not None and int(wl) > 500
            errors += resp and int(s.nt_status, 16) != 0
    ok = [writes >= 1, echoes >= 1, retrans == 0, dialect_ok, bool(first_smb2_is_neg),
          bool(streams) and all(neg_per_stream.get(st, 0) == 2 for st in streams), neg_then_setup,
          big_write >= 1, errors == 0, syns == STREAMS]
    return time.perf_counter() - t, ok


def _tshark(path: Path, display_filter: str, *fields: str) -> list[list[str]]:
    """One `tshark -r FILE -Y FILTER [-T fields -e ...]` run: its lines, split into fields."""
    argv = ["tshark", "-n", "-r", str(path), "-Y", display_filter]
    for f in fields:
        argv += ["-T", "fields", "-e", f] if f == fields[0] else ["-e", f]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=600).stdout
    return [line.split("\t") for line in out.splitlines()]


def tshark_per_check(path: Path, streams: int = STREAMS) -> tuple[float, list[bool]]:
    """The same 10 answers the way a user writes them without the library: `tshark -r FILE -Y FILTER`
    once per check (10 runs, each dissecting the whole capture), the lines counted or their fields read."""
    t = time.perf_counter()
    dialects = [int(row[0], 16) for row in _tshark(path, "smb2.cmd == 0 && smb2.flags.response == 1",
                                                   "smb2.dialect") if row[0]]
    first = _tshark(path, "smb2", "smb2.cmd")
    neg_per_stream: dict[str, int] = {}
    all_streams: set[str] = set()
    for stream, cmds in _tshark(path, "tcp", "tcp.stream", "smb2.cmd"):
        all_streams.add(stream)
        neg_per_stream[stream] = neg_per_stream.get(stream, 0) + (cmds.split(",")[0] == "0")
    order = [row[1].split(",")[0] for row in _tshark(path, "smb2.cmd == 0 || smb2.cmd == 1", "frame.number",
                                                    "smb2.cmd")]
    ok = [len(_tshark(path, "smb2.cmd == 9 && smb2.flags.response == 0")) >= 1,
          len(_tshark(path, "smb2.cmd == 13")) >= 1,
          len(_tshark(path, "tcp.analysis.retransmission")) == 0,
          all(d == 0x311 for d in dialects),
          bool(first) and first[0][0].split(",")[0] == "0",
          bool(all_streams) and all(neg_per_stream.get(st, 0) == 2 for st in all_streams),
          "0" in order and "1" in order[order.index("0"):],
          len(_tshark(path, "smb2.write_length > 500")) >= 1,
          len(_tshark(path, "smb2.flags.response == 1 && smb2.nt_status != 0")) == 0,
          len(_tshark(path, "tcp.flags.syn == 1 && tcp.flags.ack == 0")) == streams]
    return time.perf_counter() - t, ok


class _Cpu:
    """CPU seconds of this process and of its finished children since the last lap: on a shared
    machine the wall-clock times above mostly measure the scheduler, CPU time much less."""

    def __init__(self) -> None:
        self._last = self._now()

    @staticmethod
    def _now() -> tuple[float, float]:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime

    def lap(self) -> str:
        now = self._now()
        me, kids = now[0] - self._last[0], now[1] - self._last[1]
        self._last = now
        return f"{me + kids:.2f} s (Python {me:.2f} s, tshark {kids:.2f} s)"


def memory_child(path: str) -> None:
    """Run in a fresh process: read the big capture with the 10 assertions, report peaks as JSON."""
    t = time.perf_counter()
    cap = Capture(path)
    ok = [r.ok for r in cap.results(assertions())]
    secs = time.perf_counter() - t
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tshark = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"frames": len(cap.table), "columns": len(cap.table.columns), "ok": ok, "seconds": secs,
                      "python_peak_mb": own, "tshark_peak_mb": tshark}))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packets", type=int, default=20_000)
    ap.add_argument("--big", type=int, default=1_000_000, help="packets for the memory run (0: skip)")
    ap.add_argument("--json", action="store_true", help="also time pyshark FileCapture(use_json=True)")
    ap.add_argument("--no-pyshark", dest="pyshark", action="store_false",
                    help="skip the pyshark loop (minutes on a big capture); tshark -Y per check still runs")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.memory_child:
        memory_child(a.memory_child)
        return
    with tempfile.TemporaryDirectory() as d:
        path = fast_smb_tcp_capture(Path(d) / "bench.pcap", a.packets, STREAMS)
        cpu = _Cpu()
        ours, ok, passes = library(path)
        ours_cpu = cpu.lap()
        frames = len(Capture(path).table)
        print(f"capture: {frames} packets, {STREAMS} TCP connections, 10 assertions")
        print(f"library (Capture, {passes} tshark pass): {ours:.2f} s, answers {ok}; CPU {ours_cpu}")
        cpu.lap()
        per_check, ok_t = tshark_per_check(path)
        print(f"tshark -r FILE -Y FILTER once per check (10 runs): {per_check:.2f} s, answers {ok_t}; CPU {cpu.lap()}")
        base, ok2 = 0.0, ok
        if a.pyshark:
            base, ok2 = pyshark_loop(path)
            print(f"pyshark FileCapture loop (default PDML): {base:.1f} s, answers {ok2}; CPU {cpu.lap()}")
        if ok_t != ok or (a.pyshark and ok2 != ok):
            sys.exit("the sides disagree: the benchmark is measuring different questions")
        print(f"ratio: library is {per_check / ours:.1f}x faster than tshark -Y once per check")
        if a.pyshark:
            print(f"ratio: library is {base / ours:.1f}x faster than the pyshark loop (target >= 50x)")
        if a.json:
            js, ok3 = _json_loop(path)
            print(f"pyshark FileCapture(use_json=True) loop: {js:.1f} s = {js / ours:.1f}x the library")
        if a.big:
            big = fast_smb_tcp_capture(Path(d) / "big.pcap", a.big, STREAMS)
            out = subprocess.run([sys.executable, "-m", "benchmarks.pcap_speed", "--memory-child", str(big)],
                                 cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True,
                                 check=True).stdout
            m = json.loads(out.strip().splitlines()[-1])
            print(f"memory: {m['frames']} packets, {m['columns']} columns (10 asked + frame/diagnostic fields), "
                  f"{m['seconds']:.0f} s; peak RSS: Python {m['python_peak_mb']:.0f} MB (target <= 500 MB), "
                  f"tshark {m['tshark_peak_mb']:.0f} MB (a separate process)")


def _json_loop(path: Path) -> tuple[float, list]:
    import pyshark

    t = time.perf_counter()
    n = 0
    pyshark_event_loop()
    with pyshark.FileCapture(str(path), keep_packets=False, use_json=True, include_raw=False) as pc:
        quiet_child_signals()
        for pkt in pc:
            n += "SMB2" in pkt
    return time.perf_counter() - t, [n]


if __name__ == "__main__":
    main()
