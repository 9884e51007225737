"""SMB 3.1.1 over the emulated transports, QUIC against TCP, and both against smbprotocol -> smbd.

    python -m benchmarks.smb_quic [--size-mib 64] [--repeat 3] [--quick] [--json FILE]

What a user runs: ``wirecheck serve`` under ``wirecheck exec`` (one server with a TCP listener on 445
and a QUIC one on 443 of the emulated 127.0.0.20, pcap and TLS key log on) and, in a second process
under ``wirecheck exec``, our blocking client (harness.blocking.client) writing one ``--size-mib``
file in 1 MiB pieces and reading it back, signed (SMB signing is what smbd insists on, so every
kind signs). The same client over each transport, runs interleaved, medians reported; the baseline
is smbprotocol (the Python SMB client people use) against Samba's smbd over real loopback TCP, in
the same run. Ratios: emulated QUIC against emulated TCP (target >= 0.5x), each against
smbprotocol -> smbd. Client start-up (interpreter, negotiate, session setup, tree connect) is not
timed: the client reports its own WRITE and READ phases. Timing is printed, never asserted. For the
emulated kinds it also prints the CPU time both ends spent per MB moved (the server process and the
client's write and read phases), which a loaded machine distorts less than MB/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.peers.smb_samba import PASSWORD, USER, Smbd

from .smb import SMBPROTOCOL

HOST = "127.0.0.20"
PORTS = {"tcp": 445, "quic": 443}

#: the client, run under ``wirecheck exec``: prints "WRITE_SECONDS READ_SECONDS CPU_SECONDS" (the CPU
#: time of its process, every thread, over the two phases)
CLIENT = r"""
import sys, time
from harness.blocking.client import SMBClient
transport, host, port, size, user, password, ca = sys.argv[1:8]
size = int(size)
opts = {"server_name": "server.test", "ca": ca} if transport == "quic" else {}
chunk = b"\xa5" * (1 << 20)
deadline = time.monotonic() + 30
while True:  # the server may still be starting: its listener answers "refused" until then
    try:
        client = SMBClient(host, int(port), transport=transport, username=user, password=password, **opts)
        break
    except Exception:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
with client:
    with client.share("share") as share:
        c = time.process_time()
        t = time.perf_counter()
        share.write_from(f"{transport}.bin", (chunk for _ in range(size >> 20)))
        w = time.perf_counter() - t
        t = time.perf_counter()
        total = sum(len(block) for block in share.iter_read(f"{transport}.bin"))
        r = time.perf_counter() - t
        c = time.process_time() - c
        assert total == size, total
        share.remove(f"{transport}.bin")
print(w, r, c)
"""


def _wirecheck() -> str:
    return str(Path(sys.executable).with_name("wirecheck"))


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith("SOCKET_WRAPPER_") and k not in ("LD_PRELOAD", "PYTHONPATH", "PYTHONSTARTUP")}


class EmulatedServer:
    """``wirecheck serve`` with a TCP and a QUIC listener, under ``wirecheck exec``."""

    def __init__(self, work: Path, pki: dict[str, str], pcap: Path | None) -> None:
        self.sockdir = work / "sock"
        self.sockdir.mkdir()
        self.share = work / "share"
        self.share.mkdir()
        self.pcap = pcap
        self.env = _clean_env()
        if pcap is not None:
            self.env["SSLKEYLOGFILE"] = str(pcap) + ".tls.keys"
        argv = self.exec_argv(20) + [
            _wirecheck(), "serve", "--listen", f"tcp:{HOST}:{PORTS['tcp']}", "--listen", f"quic:{HOST}:{PORTS['quic']}",
            "--share", f"share={self.share}", "--user", f"{USER}:{PASSWORD}", "--cert", pki["server"], "--key",
            pki["server_key"]]
        self.proc = subprocess.Popen(argv, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        self._wait_listening(60.0)

    def _wait_listening(self, timeout: float) -> None:
        """Both listeners are bound: their socket files (cwrap names: T/U, interface 0x14, port) are in
        the socket directory. A QUIC Initial sent before that is lost, and the client would wait out
        its handshake timeout; the server's start-up is not what the benchmark measures."""
        want = {f"T14{PORTS['tcp']:04X}", f"U14{PORTS['quic']:04X}"}
        deadline = time.monotonic() + timeout
        while not want <= {n.upper() for n in os.listdir(self.sockdir)}:
            if self.proc.poll() is not None:
                raise RuntimeError(f"wirecheck serve exited: {self.proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"wirecheck serve did not listen within {timeout:.0f} s: {os.listdir(self.sockdir)}")
            time.sleep(0.05)

    def exec_argv(self, iface: int) -> list[str]:
        argv = [_wirecheck(), "exec", "--dir", str(self.sockdir), "--iface", str(iface)]
        if self.pcap is not None:
            argv += ["--pcap", str(self.pcap)]
        return [*argv, "--"]

    def client(self, transport: str, size: int, ca: str, timeout: float) -> tuple[float, float, float]:
        """(write seconds, read seconds, CPU seconds of both ends): the server's over the client's
        run (its handshake and tree connect are a few milliseconds), the client's over the write and
        read phases only, as its start-up (the interpreter, imports) would otherwise dominate."""
        argv = self.exec_argv(21) + [sys.executable, "-c", CLIENT, transport, HOST, str(PORTS[transport]), str(size),
                                     USER, PASSWORD, ca]
        cpu = self.server_cpu()
        result = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout)
        cpu = self.server_cpu() - cpu
        if result.returncode:
            raise RuntimeError(f"{transport} client: {result.stderr[-2000:]}")
        write, read, client_cpu = map(float, result.stdout.split()[-3:])
        return write, read, cpu + client_cpu

    def server_cpu(self) -> float:
        """CPU seconds (user + system, every thread) used so far by the server's processes: its
        session, as ``wirecheck exec`` runs ``wirecheck serve`` as a child."""
        return _session_cpu(self.proc.pid)

    def stop(self) -> None:
        import signal

        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _session_cpu(sid: int) -> float:
    """CPU seconds of the live processes of session ``sid`` (from /proc; 0 where it is missing).
    CPU time is what a loaded machine distorts least: wall-clock rates on two shared cores mostly
    measure the scheduler."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # field 6 of stat, the session id (fields here start at 3, state)
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def smbprotocol(port: int, size: int, timeout: float) -> tuple[float, float]:
    result = subprocess.run([sys.executable, "-c", SMBPROTOCOL, "127.0.0.1", str(port), "signed", "sp.bin", str(size),
                             USER, PASSWORD], capture_output=True, text=True, timeout=timeout)
    if result.returncode:
        raise RuntimeError(f"smbprotocol: {result.stderr[-2000:]}")
    write, read = map(float, result.stdout.split())
    return write, read


KINDS = ("emu-tcp", "emu-quic", "smbprotocol-smbd")


def run(size_mib: int, repeat: int, pcap: bool = True, timeout: float = 900.0,
        kinds: tuple[str, ...] = KINDS) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from quic.certs import make_pki  # tests/quic/certs.py

    size = size_mib << 20
    samples: dict[str, dict[str, list[float]]] = {k: {"write": [], "read": [], "cpu_us_per_mb": []} for k in kinds}
    with tempfile.TemporaryDirectory(prefix="smbquic-") as tmp:
        work = Path(tmp)
        pki = make_pki(str(work))
        smbd = Smbd(work / "smbd", signing="auto") if "smbprotocol-smbd" in kinds else None
        server = EmulatedServer(work, pki, work / "smb.pcap" if pcap else None)
        try:
            for _ in range(repeat):
                for kind in kinds:
                    cpu_note = ""
                    if smbd is not None and kind == "smbprotocol-smbd":
                        w, r = smbprotocol(smbd.port, size, timeout)
                    else:
                        w, r, cpu = server.client(kind[4:], size, pki["ca"], timeout)
                        # both ends, per MB written and read
                        samples[kind]["cpu_us_per_mb"].append(cpu / (2 * size / 1e6) * 1e6)
                        cpu_note = f"  CPU {samples[kind]['cpu_us_per_mb'][-1]:7.0f} us/MB"
                    samples[kind]["write"].append(size / w / 1e6)
                    samples[kind]["read"].append(size / r / 1e6)
                    print(f"  {kind:17s} write {size / w / 1e6:8.2f} MB/s  read {size / r / 1e6:8.2f} MB/s{cpu_note}",
                          file=sys.stderr, flush=True)
            if server.proc.poll() is not None:
                raise RuntimeError(f"wirecheck serve exited: {server.proc.stderr.read().decode()[-2000:]}")
        finally:
            server.stop()
            if smbd is not None:
                smbd.stop()
    med = {k: {d: statistics.median(v[d]) for d in ("write", "read")} for k, v in samples.items()}
    for k, v in samples.items():
        if v["cpu_us_per_mb"]:
            med[k]["cpu_us_per_mb"] = statistics.median(v["cpu_us_per_mb"])
    for v in med.values():
        v["both"] = 2 / (1 / v["write"] + 1 / v["read"])  # the write+read of the file, as one rate

    def ratio(a: str, b: str) -> float | None:
        return med[a]["both"] / med[b]["both"] if a in med and b in med else None

    return {"size_mib": size_mib, "repeat": repeat, "pcap": pcap, "samples": samples, "median": med,
            "quic_vs_tcp": ratio("emu-quic", "emu-tcp"), "quic_vs_smbprotocol": ratio("emu-quic", "smbprotocol-smbd"),
            "tcp_vs_smbprotocol": ratio("emu-tcp", "smbprotocol-smbd")}


def report(r: dict[str, Any]) -> str:
    m = r["median"]
    lines = [f"SMB 3.1.1 {r['size_mib']} MiB write + read, signed, two processes (median of {r['repeat']}; "
             f"pcap {'on' if r['pcap'] else 'off'} for the emulated kinds):"]
    for k, v in m.items():
        cpu = f"  CPU {v['cpu_us_per_mb']:6.0f} us/MB" if "cpu_us_per_mb" in v else ""
        lines.append(f"  {k:17s} write {v['write']:8.2f} MB/s  read {v['read']:8.2f} MB/s  both {v['both']:8.2f} MB/s"
                     f"{cpu}")
    def x(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}x"

    q = r["quic_vs_tcp"]
    verdict = "" if q is None else (" PASS" if q >= 0.5 else " MISS")
    lines.append(f"  emulated QUIC vs emulated TCP: {x(q)} (target >= 0.5x){verdict}")
    lines.append(f"  emulated QUIC vs smbprotocol->smbd: {x(r['quic_vs_smbprotocol'])}; "
                 f"emulated TCP vs smbprotocol->smbd: {x(r['tcp_vs_smbprotocol'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.smb_quic", description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, help="file size (default 64; 8 with --quick)")
    p.add_argument("--repeat", type=int, help="runs per kind, interleaved (default 3; 1 with --quick)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--no-pcap", action="store_true", help="emulated kinds without the capture")
    p.add_argument("--kinds", default=",".join(KINDS), help="comma-separated subset of: " + ",".join(KINDS))
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--json", metavar="FILE")
    a = p.parse_args(argv)
    size = a.size_mib or (8 if a.quick else 64)
    repeat = a.repeat or (1 if a.quick else 3)
    t = time.perf_counter()
    kinds = tuple(k for k in a.kinds.split(",") if k)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        p.error(f"unknown kinds: {', '.join(sorted(unknown))}")
    r = run(size, repeat, pcap=not a.no_pcap, timeout=a.timeout, kinds=kinds)
    r["seconds"] = time.perf_counter() - t
    print(report(r))
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
