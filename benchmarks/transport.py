"""Emulated TCP/UDP against real loopback and raw AF_UNIX, measured in one run.

    python -m benchmarks.transport [--quick] [--repeat N] [--json FILE] [--only throughput,connect,udp]

Three measurements, each for every *kind* of transport, each kind in two fresh processes:

* **throughput** - a client sends ``--size`` bytes in ``--write-size`` writes (``sendall``), the
  server receives them with ``recv_into`` into a buffer of the same size; timed by the receiver from
  its "go" byte to the last byte.
* **connect** - ``--connections`` times: client ``connect()``, server ``accept()`` and ``close()``,
  client reads the EOF and ``close()``s (lock-step, so it is a rate of complete connection lives);
  timed by the client, after a short warm-up.
* **udp** - a sender ``sendto()``s ``--datagrams`` datagrams of ``--datagram-size`` bytes as fast as
  it can, a receiver ``recvfrom()``s them; the rate is what the receiver got per second (first to
  last datagram). Real UDP drops what the receiver cannot take; AF_UNIX datagrams block the sender
  instead. The loss is reported.

Kinds: real loopback (127.0.0.1), raw AF_UNIX with default buffers, raw AF_UNIX with 4 MiB
SO_SNDBUF/SO_RCVBUF (the size the wrapper sets on emulated TCP), emulated (``wrappers.activate``
in both processes) and emulated with a pcap (both processes log into one file).

Why two processes and not two threads: with threads the GIL serialises the application's and
the peer's Python work, which real TCP does not do to two programs, and the wrapper's extra
Python work would be counted twice. Each process activates the wrapper itself, as
``wirecheck exec`` does for a child. The data path uses blocking sockets (no timeout): with a
timeout CPython polls before every real recv, which would handicap the baselines.

Each measurement is repeated (``--repeat``, kinds interleaved so drift hits all of them alike) and
the median is reported with its spread ((max - min) / median). MB is 10**6 bytes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BENCHMARKS",
    "Settings",
    "main",
    "measure",
    "measure_connect_rate",
    "measure_throughput",
    "measure_udp_rate",
    "format_table",
    "run",
]

MB = 1_000_000
MiB = 1 << 20
KiB = 1 << 10
UNIX_BIG_BUF = 4 * MiB

SERVER_IFACE, CLIENT_IFACE = 10, 11  # emulated hosts 127.0.0.10 (server) and 127.0.0.11 (client)
SERVER_HOST = "127.0.0.10"

STREAM_KINDS: dict[str, str] = {
    "tcp": "real loopback TCP",
    "unix": "raw AF_UNIX stream, default buffers",
    "unix-4m": "raw AF_UNIX stream, 4 MiB buffers",
    "emu": "emulated TCP",
    "emu-pcap": "emulated TCP + pcap",
}
DGRAM_KINDS: dict[str, str] = {
    "udp": "real loopback UDP",
    "unix": "raw AF_UNIX datagram",
    "emu": "emulated UDP",
    "emu-pcap": "emulated UDP + pcap",
}

#: name -> (title, unit, kinds)
BENCHMARKS: dict[str, tuple[str, str, dict[str, str]]] = {
    "throughput": ("TCP bulk throughput", "MB/s", STREAM_KINDS),
    "connect": ("TCP connect+accept+close rate", "conn/s", STREAM_KINDS),
    "udp": ("UDP datagram rate (received)", "dgram/s", DGRAM_KINDS),
}

#: (benchmark, numerator kind, denominator kind, label)
RATIOS: list[tuple[str, str, str, str]] = [
    ("throughput", "emu", "tcp", "emulated / real TCP"),
    ("throughput", "emu", "unix", "emulated / AF_UNIX default bufs"),
    ("throughput", "emu", "unix-4m", "emulated / AF_UNIX 4 MiB bufs"),
    ("throughput", "emu-pcap", "tcp", "emulated+pcap / real TCP"),
    ("connect", "emu", "tcp", "emulated / real TCP"),
    ("connect", "emu", "unix-4m", "emulated / AF_UNIX 4 MiB bufs"),
    ("connect", "emu-pcap", "tcp", "emulated+pcap / real TCP"),
    ("udp", "emu", "udp", "emulated / real UDP"),
    ("udp", "emu", "unix", "emulated / AF_UNIX datagram"),
    ("udp", "emu-pcap", "udp", "emulated+pcap / real UDP"),
]

#: (label, benchmark, kind a, kind b, kind of check, threshold); see _evaluate_targets
TARGETS: list[tuple[str, str, str, str, str, float]] = [
    ("emulated TCP throughput >= 1.0x real loopback TCP", "throughput", "emu", "tcp", "ratio", 1.0),
    ("emulated connect rate >= 0.5x real loopback TCP", "connect", "emu", "tcp", "ratio", 0.5),
    ("pcap costs <= 30% (TCP throughput)", "throughput", "emu-pcap", "emu", "cost", 0.30),
    ("pcap costs <= 30% (connect rate)", "connect", "emu-pcap", "emu", "cost", 0.30),
    ("pcap costs <= 30% (UDP datagram rate)", "udp", "emu-pcap", "emu", "cost", 0.30),
]


@dataclass
class Settings:
    size: int = 256 * MiB
    write_size: int = 64 * KiB
    connections: int = 2000
    datagrams: int = 100_000
    datagram_size: int = 1200
    repeat: int = 3
    only: tuple[str, ...] = tuple(BENCHMARKS)
    timeout: float = 300.0  # per trial
    profile_dir: str | None = None
    tmpdir: str | None = None

    @classmethod
    def quick(cls) -> Settings:
        return cls(size=32 * MiB, connections=500, datagrams=20_000)


@dataclass
class Series:
    """The repeated samples of one benchmark for one kind."""

    samples: list[float] = field(default_factory=list)
    details: list[dict[str, Any]] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def spread(self) -> float:
        """(max - min) / median: 0.05 means the runs were within 5 % of each other."""
        if len(self.samples) < 2 or not self.median:
            return 0.0
        return (max(self.samples) - min(self.samples)) / self.median


# ---------------------------------------------------------------------------------------------
# Inside the child processes
# ---------------------------------------------------------------------------------------------

def _is_emulated(kind: str) -> bool:
    return kind.startswith("emu")


def _family(kind: str) -> int:
    return socket.AF_UNIX if kind.startswith("unix") else socket.AF_INET


def _new_socket(kind: str, sotype: int) -> socket.socket:
    # socket.socket is looked up at call time: in an emulated child it is wrappers.WrappedSocket.
    s = socket.socket(_family(kind), sotype)
    if kind == "unix-4m":
        _big_buffers(s)
    return s


def _big_buffers(s: socket.socket) -> None:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, UNIX_BIG_BUF)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UNIX_BIG_BUF)


def _bind_address(kind: str, workdir: str, sotype: int) -> Any:
    if kind.startswith("unix"):
        return os.path.join(workdir, "stream.sock" if sotype == socket.SOCK_STREAM else "dgram.sock")
    if _is_emulated(kind):
        return (SERVER_HOST, 0)
    return ("127.0.0.1", 0)


def _server_socket(kind: str, workdir: str, sotype: int) -> tuple[socket.socket, Any]:
    s = _new_socket(kind, sotype)
    s.bind(_bind_address(kind, workdir, sotype))
    if sotype == socket.SOCK_STREAM:
        s.listen(128)
    return s, s.getsockname()


def _child(role: Callable[..., dict[str, Any]], kind: str, workdir: str, iface: int,
           args: tuple[Any, ...], conn: Any, profile_path: str | None) -> None:
    """Process entry: set up the (emulated or real) network, run one side, report through conn."""
    try:
        import wrappers

        wrappers.deactivate()  # baselines must be real even under `wirecheck exec`
        if _is_emulated(kind):
            pcap = os.path.join(workdir, "run.pcap") if kind == "emu-pcap" else None
            wrappers.activate(socket_dir=os.path.join(workdir, "sock"), iface=iface, pcap=pcap)
        cpu0 = time.process_time()
        if profile_path:
            import cProfile

            prof = cProfile.Profile()
            result = prof.runcall(role, kind, workdir, conn, *args)
            prof.dump_stats(profile_path)
        else:
            result = role(kind, workdir, conn, *args)
        result["cpu_s"] = time.process_time() - cpu0  # user + system time of this process's side
        conn.send(("ok", result))
    except BaseException as e:  # noqa: BLE001 - everything goes back to the parent
        try:
            conn.send(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
        except OSError:
            pass
    finally:
        conn.close()


def _throughput_server(kind: str, workdir: str, conn: Any, total: int, write_size: int) -> dict[str, Any]:
    lsock, addr = _server_socket(kind, workdir, socket.SOCK_STREAM)
    conn.send(("addr", addr))
    s, _ = lsock.accept()
    if kind == "unix-4m":
        _big_buffers(s)
    view = memoryview(bytearray(write_size))
    got = calls = 0
    start = time.perf_counter()
    s.sendall(b"g")
    while got < total:
        n = s.recv_into(view)
        if not n:
            raise RuntimeError(f"EOF after {got} of {total} bytes")
        got += n
        calls += 1
    elapsed = time.perf_counter() - start
    rcvbuf = s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    s.close()
    lsock.close()
    return {"elapsed": elapsed, "bytes": got, "recv_calls": calls, "rcvbuf": rcvbuf}


def _throughput_client(kind: str, workdir: str, conn: Any, total: int, write_size: int) -> dict[str, Any]:
    addr = _await_address(conn)
    s = _new_socket(kind, socket.SOCK_STREAM)
    s.connect(addr)
    chunk = b"\x5a" * write_size
    if s.recv(1) != b"g":
        raise RuntimeError("no go byte from the receiver")
    sent = 0
    start = time.perf_counter()
    while sent + write_size <= total:
        s.sendall(chunk)
        sent += write_size
    if sent < total:
        s.sendall(chunk[: total - sent])
        sent = total
    elapsed = time.perf_counter() - start
    sndbuf = s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    s.recv(1)  # the receiver closes once it has everything
    s.close()
    return {"elapsed": elapsed, "bytes": sent, "sndbuf": sndbuf}


def _connect_server(kind: str, workdir: str, conn: Any, n: int, warmup: int) -> dict[str, Any]:
    lsock, addr = _server_socket(kind, workdir, socket.SOCK_STREAM)
    conn.send(("addr", addr))
    for _ in range(warmup + n):
        s, _peer = lsock.accept()
        s.close()
    lsock.close()
    return {}


def _connect_client(kind: str, workdir: str, conn: Any, n: int, warmup: int) -> dict[str, Any]:
    addr = _await_address(conn)
    start = time.perf_counter()
    for i in range(warmup + n):
        if i == warmup:
            start = time.perf_counter()
        s = _new_socket(kind, socket.SOCK_STREAM)
        s.connect(addr)
        if s.recv(1) != b"":
            raise RuntimeError("expected EOF from the server")
        s.close()
    return {"elapsed": time.perf_counter() - start, "connections": n}


def _udp_receiver(kind: str, workdir: str, conn: Any, n: int, size: int) -> dict[str, Any]:
    s, addr = _server_socket(kind, workdir, socket.SOCK_DGRAM)
    conn.send(("addr", addr))
    got = 0
    first = last = 0.0
    bufsize = max(2048, size)
    while True:
        data, _src = s.recvfrom(bufsize)
        if not data:  # the sender's end marker
            break
        last = time.perf_counter()
        if not got:
            first = last
        got += 1
    s.close()
    return {"elapsed": last - first, "received": got}


def _udp_sender(kind: str, workdir: str, conn: Any, n: int, size: int) -> dict[str, Any]:
    addr = _await_address(conn)
    s = _new_socket(kind, socket.SOCK_DGRAM)
    if kind == "unix":
        s.bind(os.path.join(workdir, "sender.sock"))
    payload = b"\xa5" * size
    start = time.perf_counter()
    for _ in range(n):
        s.sendto(payload, addr)
    elapsed = time.perf_counter() - start
    # End markers (empty datagrams) until the parent says the receiver saw one: a marker can be
    # dropped like any UDP datagram, and once the receiver has closed, sending fails.
    while True:
        try:
            s.sendto(b"", addr)
        except OSError:
            pass
        if conn.poll(0.005):
            break
    s.close()
    return {"send_elapsed": elapsed, "sent": n}


def _await_address(conn: Any) -> Any:
    addr = conn.recv()
    return tuple(addr) if isinstance(addr, list) else addr


# ---------------------------------------------------------------------------------------------
# In the parent: one trial = two fresh processes
# ---------------------------------------------------------------------------------------------

def _mp_context() -> Any:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _receive(conn: Any, deadline: float, who: str) -> Any:
    remaining = deadline - time.monotonic()
    if remaining <= 0 or not conn.poll(remaining):
        raise TimeoutError(f"{who}: no answer within the trial timeout")
    try:
        status, value = conn.recv()
    except EOFError:
        raise RuntimeError(f"{who}: process died without a result") from None
    if status == "error":
        raise RuntimeError(f"{who} failed:\n{value}")
    return value


def _run_pair(bench: str, kind: str, server: Callable[..., dict[str, Any]], client: Callable[..., dict[str, Any]],
              args: tuple[Any, ...], settings: Settings, trial: int = 0) -> tuple[dict[str, Any], dict[str, Any], int]:
    """Run server and client of one trial; returns both results and the pcap size (0 without pcap)."""
    ctx = _mp_context()
    workdir = tempfile.mkdtemp(prefix=f"wirecheck-bench-{bench}-", dir=settings.tmpdir)
    os.mkdir(os.path.join(workdir, "sock"))
    deadline = time.monotonic() + settings.timeout
    procs = []

    def profile_path(role: str) -> str | None:
        if not settings.profile_dir:
            return None
        os.makedirs(settings.profile_dir, exist_ok=True)
        return os.path.join(settings.profile_dir, f"{bench}-{kind}-{role}-{trial}.prof")

    try:
        s_parent, s_child = ctx.Pipe()
        c_parent, c_child = ctx.Pipe()
        srv = ctx.Process(target=_child, args=(server, kind, workdir, SERVER_IFACE, args, s_child,
                                               profile_path("server")), daemon=True)
        procs.append(srv)
        srv.start()
        s_child.close()
        addr = _receive(s_parent, deadline, f"{bench}/{kind} server")
        cli = ctx.Process(target=_child, args=(client, kind, workdir, CLIENT_IFACE, args, c_child,
                                               profile_path("client")), daemon=True)
        procs.append(cli)
        cli.start()
        c_child.close()
        c_parent.send(addr)
        srv_result = _receive(s_parent, deadline, f"{bench}/{kind} server")
        try:
            c_parent.send("done")  # lets a UDP sender stop sending end markers
        except BrokenPipeError:
            pass  # the client already finished (its result is still in the pipe)
        cli_result = _receive(c_parent, deadline, f"{bench}/{kind} client")
        for p in procs:
            p.join(max(0.1, deadline - time.monotonic()))
        pcap = os.path.join(workdir, "run.pcap")
        pcap_size = os.path.getsize(pcap) if os.path.exists(pcap) else 0
        return srv_result, cli_result, pcap_size
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        shutil.rmtree(workdir, ignore_errors=True)


def measure_throughput(kind: str, total: int, write_size: int = 64 * KiB,
                       settings: Settings | None = None, trial: int = 0) -> tuple[float, dict[str, Any]]:
    """MB/s of one bulk transfer of ``total`` bytes, as seen by the receiver."""
    settings = settings or Settings()
    srv, cli, pcap_size = _run_pair("throughput", kind, _throughput_server, _throughput_client,
                                    (total, write_size), settings, trial)
    rate = srv["bytes"] / srv["elapsed"] / MB
    detail = {"receiver_s": srv["elapsed"], "sender_s": cli["elapsed"], "recv_calls": srv["recv_calls"],
              "avg_recv_bytes": srv["bytes"] / max(1, srv["recv_calls"]), "sndbuf": cli["sndbuf"],
              "rcvbuf": srv["rcvbuf"], "pcap_bytes": pcap_size,
              "cpu_per_op_us": (srv["cpu_s"] + cli["cpu_s"]) / (total / MB) * 1e6}
    return rate, detail


def measure_connect_rate(kind: str, n: int, settings: Settings | None = None,
                         trial: int = 0) -> tuple[float, dict[str, Any]]:
    """Complete connections per second (connect, accept, server close, client EOF, client close)."""
    settings = settings or Settings()
    warmup = min(50, max(1, n // 10))
    srv, cli, pcap_size = _run_pair("connect", kind, _connect_server, _connect_client, (n, warmup),
                                    settings, trial)
    return n / cli["elapsed"], {"client_s": cli["elapsed"], "pcap_bytes": pcap_size,
                                "cpu_per_op_us": (srv["cpu_s"] + cli["cpu_s"]) / (n + warmup) * 1e6}


def measure_udp_rate(kind: str, n: int, size: int = 1200, settings: Settings | None = None,
                     trial: int = 0) -> tuple[float, dict[str, Any]]:
    """Datagrams per second received (first to last), with the sender's rate and the loss."""
    settings = settings or Settings()
    srv, cli, pcap_size = _run_pair("udp", kind, _udp_receiver, _udp_sender, (n, size), settings, trial)
    got = srv["received"]
    rate = (got - 1) / srv["elapsed"] if got > 1 and srv["elapsed"] > 0 else 0.0
    return rate, {"received": got, "sent": cli["sent"], "loss": 1 - got / cli["sent"],
                  "send_rate": cli["sent"] / cli["send_elapsed"] if cli["send_elapsed"] else 0.0,
                  "pcap_bytes": pcap_size, "cpu_per_op_us": (srv["cpu_s"] + cli["cpu_s"]) / max(1, got) * 1e6}


def measure(bench: str, kind: str, settings: Settings, trial: int = 0) -> tuple[float, dict[str, Any]]:
    if bench == "throughput":
        return measure_throughput(kind, settings.size, settings.write_size, settings, trial)
    if bench == "connect":
        return measure_connect_rate(kind, settings.connections, settings, trial)
    if bench == "udp":
        return measure_udp_rate(kind, settings.datagrams, settings.datagram_size, settings, trial)
    raise ValueError(f"unknown benchmark {bench!r}")


# ---------------------------------------------------------------------------------------------
# Results, ratios, table
# ---------------------------------------------------------------------------------------------

def run(settings: Settings, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every selected benchmark for every kind, ``settings.repeat`` times (kinds interleaved)."""
    series: dict[str, dict[str, Series]] = {}
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    for bench in settings.only:
        kinds = BENCHMARKS[bench][2]
        series[bench] = {kind: Series() for kind in kinds}
        for trial in range(settings.repeat):
            for kind in kinds:
                value, detail = measure(bench, kind, settings, trial)
                series[bench][kind].samples.append(value)
                series[bench][kind].details.append(detail)
                if progress:
                    progress(f"{bench:10} {kind:9} run {trial + 1}/{settings.repeat}: {value:,.1f} {BENCHMARKS[bench][1]}")
    results: dict[str, Any] = {
        "settings": {
            "size": settings.size, "write_size": settings.write_size, "connections": settings.connections,
            "datagrams": settings.datagrams, "datagram_size": settings.datagram_size, "repeat": settings.repeat,
            "profiled": bool(settings.profile_dir),
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "start_method": _mp_context().get_start_method(),
                    "loadavg": [load_before, os.getloadavg()[0]],
                    "tmpdir": settings.tmpdir or tempfile.gettempdir(),
                    "tmpdir_fs": _fs_type(settings.tmpdir or tempfile.gettempdir())},
        "duration_s": time.monotonic() - started,
        "benchmarks": {
            bench: {
                "title": BENCHMARKS[bench][0], "unit": BENCHMARKS[bench][1],
                "kinds": {
                    kind: {"label": BENCHMARKS[bench][2][kind], "median": s.median, "spread": s.spread,
                           "samples": s.samples, "details": s.details}
                    for kind, s in by_kind.items()
                },
            }
            for bench, by_kind in series.items()
        },
    }
    results["ratios"] = _ratios(results)
    results["targets"] = _evaluate_targets(results)
    return results


def _fs_type(path: str) -> str:
    """The file system type of path (from /proc/mounts), e.g. ext4 or tmpfs: binds and unlinks of
    socket files cost several times more on a journalling disk file system than on tmpfs."""
    try:
        with open("/proc/mounts") as f:
            mounts = [line.split() for line in f]
    except OSError:
        return "?"
    path = os.path.realpath(path)
    best, fstype = "", "?"
    for fields in mounts:
        if len(fields) >= 3:
            mnt = fields[1]
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
                best, fstype = mnt, fields[2]
    return fstype


def _median(results: dict[str, Any], bench: str, kind: str) -> float | None:
    try:
        return results["benchmarks"][bench]["kinds"][kind]["median"]
    except KeyError:
        return None


def _ratios(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for bench, num, den, label in RATIOS:
        a, b = _median(results, bench, num), _median(results, bench, den)
        if a is None or b is None:
            continue
        out.append({"benchmark": bench, "label": label, "num": num, "den": den, "value": a / b if b else None})
    for bench in BENCHMARKS:
        a, b = _median(results, bench, "emu-pcap"), _median(results, bench, "emu")
        if a is not None and b:
            out.append({"benchmark": bench, "label": "pcap cost (1 - with / without pcap)", "num": "emu-pcap",
                        "den": "emu", "value": 1 - a / b, "percent": True})
        ca, cb = _cpu_median(results, bench, "emu-pcap"), _cpu_median(results, bench, "emu")
        if ca and cb:
            # What a CPU-bound run loses: the rate scales with 1 / (CPU per operation). On a loaded
            # machine the wall-clock rates above mostly measure the scheduler; this does not.
            out.append({"benchmark": bench, "label": "pcap cost in CPU (1 - CPU without / with)",
                        "num": "emu-pcap", "den": "emu", "value": 1 - cb / ca, "percent": True})
    return out


def _cpu_median(results: dict[str, Any], bench: str, kind: str) -> float | None:
    """Median CPU time (both processes, user + system) per operation, in microseconds."""
    try:
        details = results["benchmarks"][bench]["kinds"][kind]["details"]
    except KeyError:
        return None
    values = [d["cpu_per_op_us"] for d in details if d.get("cpu_per_op_us")]
    return statistics.median(values) if values else None


def _evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for label, bench, a_kind, b_kind, check, threshold in TARGETS:
        a, b = _median(results, bench, a_kind), _median(results, bench, b_kind)
        if a is None or not b:
            continue
        if check == "ratio":
            value = a / b
            ok = value >= threshold
        else:  # cost: the fraction of the rate that the pcap takes away
            value = 1 - a / b
            ok = value <= threshold
        out.append({"label": label, "benchmark": bench, "check": check, "value": value,
                    "threshold": threshold, "pass": ok})
    return out


def _human_size(n: int) -> str:
    for unit, div in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", KiB)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return f"{n} B"


def format_table(results: dict[str, Any]) -> str:
    st, mach = results["settings"], results["machine"]
    load = mach.get("loadavg")
    lines = [
        "wirecheck bench transport",
        f"  {_human_size(st['size'])} in {_human_size(st['write_size'])} writes; {st['connections']} connections; "
        f"{st['datagrams']} x {st['datagram_size']}-byte datagrams; median of {st['repeat']}, "
        "spread = (max-min)/median",
        f"  {mach['cpus']} CPUs, Python {mach['python']}, two processes per trial ({mach['start_method']}), "
        f"socket dirs on {mach.get('tmpdir_fs', '?')} ({mach.get('tmpdir', '?')}); MB = 10^6 bytes",
    ]
    if load:
        lines.append(f"  load average before/after: {load[0]:.2f} / {load[1]:.2f} "
                     "(above ~0.5 on an otherwise idle machine, expect noise)")
    if st.get("profiled"):
        lines.append("  PROFILED RUN (cProfile in every process): the numbers are NOT representative")
    ratios_by_bench: dict[str, list[dict[str, Any]]] = {}
    for r in results["ratios"]:
        ratios_by_bench.setdefault(r["benchmark"], []).append(r)
    for bench, data in results["benchmarks"].items():
        lines.append("")
        lines.append(f"{data['title']:<40}{data['unit'] + ' median':>16}{'best':>12}{'spread':>8}   notes")
        for kind, k in data["kinds"].items():
            best = max(k["samples"]) if k["samples"] else float("nan")
            lines.append(f"  {k['label']:<38}{k['median']:>16,.1f}{best:>12,.1f}{k['spread']:>8.0%}   "
                         f"{_notes(bench, kind, k)}".rstrip())
        for r in ratios_by_bench.get(bench, []):
            if r["value"] is None:
                text = "n/a"
            elif r.get("percent"):
                text = f"{r['value']:.0%}"
            else:
                text = f"{r['value']:.2f}x"
            lines.append(f"    {r['label']:<36}{text:>16}")
    lines.append("")
    lines.append("Targets (medians)")
    for t in results["targets"]:
        value = f"{t['value']:.2f}x" if t["check"] == "ratio" else f"{t['value']:.0%}"
        lines.append(f"  {t['label']:<54}{value:>8}   {'PASS' if t['pass'] else 'MISS'}")
    return "\n".join(lines)


def _notes(bench: str, kind: str, k: dict[str, Any]) -> str:
    details = k["details"]
    if not details:
        return ""
    d = details[-1]
    notes = []
    if bench == "throughput":
        notes.append(f"avg recv {statistics.median(x['avg_recv_bytes'] for x in details) / KiB:.0f} KiB")
        if kind != "tcp":
            notes.append(f"SO_SNDBUF {d['sndbuf'] // KiB} KiB")
    if bench == "udp":
        loss = statistics.median(x["loss"] for x in details)
        send_rate = statistics.median(x["send_rate"] for x in details)
        notes.append(f"loss {loss:.1%}, sender {send_rate:,.0f}/s")
    cpu = [x["cpu_per_op_us"] for x in details if x.get("cpu_per_op_us")]
    if cpu:
        per = {"throughput": "MB", "connect": "conn", "udp": "dgram"}[bench]
        notes.append(f"CPU {statistics.median(cpu):,.0f} us/{per}")
    if d.get("pcap_bytes"):
        notes.append(f"pcap {d['pcap_bytes'] / MB:,.1f} MB" if d["pcap_bytes"] >= MB else f"pcap {d['pcap_bytes'] / 1000:,.0f} kB")
    return ", ".join(notes)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def _size(text: str) -> int:
    t = text.strip().lower().replace(" ", "")
    for suffix, mult in (("gib", 1 << 30), ("mib", MiB), ("kib", KiB), ("g", 1 << 30), ("m", MiB), ("k", KiB)):
        if t.endswith(suffix):
            return int(float(t[: -len(suffix)]) * mult)
    return int(t)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.transport", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CI smoke sizes: 32 MiB, 500 connections, 20000 datagrams")
    p.add_argument("--size", type=_size, help="bytes per throughput run (default 256MiB; 32MiB with --quick)")
    p.add_argument("--write-size", type=_size, help="bytes per send (default 64KiB)")
    p.add_argument("--connections", type=int, help="connections per connect-rate run (default 2000)")
    p.add_argument("--datagrams", type=int, help="datagrams per UDP run (default 100000)")
    p.add_argument("--datagram-size", type=int, help="UDP payload bytes (default 1200)")
    p.add_argument("--repeat", type=int, help="runs per measurement; the median is reported (default 3)")
    p.add_argument("--only", help="comma-separated subset of: " + ",".join(BENCHMARKS))
    p.add_argument("--json", metavar="FILE", help="also write all samples, ratios and targets as JSON")
    p.add_argument("--timeout", type=float, help="seconds per trial before giving up (default 300)")
    p.add_argument("--tmpdir", metavar="DIR", help="where the socket directories and pcaps go "
                   "(default: /dev/shm where it exists, as wirecheck's own runs use; try /tmp to see "
                   "the file-system cost)")
    p.add_argument("--profile", metavar="DIR", help="cProfile every process into DIR/*.prof (distorts timings)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    return p


def settings_from_args(args: argparse.Namespace) -> Settings:
    s = Settings.quick() if args.quick else Settings()
    for name in ("size", "write_size", "connections", "datagrams", "datagram_size", "repeat", "timeout"):
        value = getattr(args, name)
        if value is not None:
            setattr(s, name, value)
    if args.only:
        chosen = tuple(x.strip() for x in args.only.split(",") if x.strip())
        unknown = [x for x in chosen if x not in BENCHMARKS]
        if unknown:
            raise SystemExit(f"--only: unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
        s.only = chosen
    if s.repeat < 1 or s.size < 1 or s.write_size < 1 or s.connections < 1 or s.datagrams < 2:
        raise SystemExit("sizes and counts must be positive (and --datagrams at least 2)")
    s.profile_dir = args.profile
    s.tmpdir = args.tmpdir or _default_tmpdir()
    return s


def _default_tmpdir() -> str | None:
    """Where wirecheck puts socket directories itself (wrappers.sockdir.make_socket_dir): RAM."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = settings_from_args(args)

    def progress(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    results = run(settings, progress)
    print(format_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
