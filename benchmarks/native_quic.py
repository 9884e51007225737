"""Native programs on the emulated IPPROTO_QUIC socket (libwirecheck_quic.so + the QUIC daemon), measured
in one run against the same transfer between two Python processes and against plain TCP loopback.

    python -m benchmarks.native_quic [--size 32MiB] [--repeat 3]

* **bulk**: one stream, ``--size`` bytes in 64 KiB sendmsg calls with the stream-info cmsg, FIN on
  the last, between two processes under `wirecheck exec` on the emulated SEQPACKET carrier; timed from
  the sender's first write ("sending") to the receiver's FIN ("received"), sha256 compared.
  native: tests/native/c/qtest.c (source/sink), compiled here; python: tests/native/pyquic_peer.py.
* **tcp**: the same bytes over a plain TCP loopback connection between two processes (no wrapper).
* **handshakes**: ``--handshakes`` PSK handshakes in a row (socket, connect, handshake; close not
  timed), a native client and a Python client, each against the native server (whose sockets live
  in the daemon, so the server side is the same Python engine for both).

Each measurement is repeated, kinds interleaved, and the median reported in MB/s with ratios against
the Python transfer. Timing is printed, never asserted. (quic.ko's published figure on a 100G NIC is
3.83 Gbit/s = 479 MB/s, for scale.)
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QTEST_SRC = REPO / "tests" / "native" / "c" / "qtest.c"
PYPEER = REPO / "tests" / "native" / "pyquic_peer.py"
VENDOR = Path(os.environ.get("WIRECHECK_LXIN_QUIC") or REPO.parent / "shared" / "vendor" / "lxin-quic")
WIRECHECK = str(Path(sys.executable).with_name("wirecheck"))


def _size(text: str) -> int:
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    for u, m in units.items():
        if text.endswith(u):
            return int(float(text[: -len(u)]) * m)
    return int(text)


def build(out: Path) -> Path:
    subprocess.run(["make", "-s", "-C", str(REPO / "native")], check=True)
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "gnutls"], capture_output=True, text=True,
                           check=True).stdout.split()
    exe = out / "qtest"
    subprocess.run(["gcc", "-O2", f"-I{VENDOR}/modules/include/uapi", "-o", str(exe), str(QTEST_SRC), *flags, "-ldl"],
                   check=True)
    return exe


def _line(p: subprocess.Popen, prefix: str, timeout: float = 600) -> tuple[str, float]:
    deadline = time.monotonic() + timeout
    assert p.stdout is not None
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            raise RuntimeError(f"{p.args} ended before {prefix!r}")
        if line.startswith(prefix):
            return line.strip(), time.monotonic()
    raise RuntimeError(f"timeout waiting for {prefix!r}")


def _network(tmp: Path, port: int) -> tuple[list[str], dict[str, str], Path]:
    """A fresh socket directory: the `wirecheck exec` argv prefix (the interface comes next), the
    environment and a PSK file."""
    sockdir = tmp / f"w{port}"
    sockdir.mkdir(mode=0o700)
    psk = tmp / "psk.txt"
    psk.write_text("bench:" + bytes(range(32)).hex() + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKET_WRAPPER_") and k != "LD_PRELOAD"}
    env["PYTHONPATH"] = str(REPO)
    return [WIRECHECK, "exec", "--dir", str(sockdir), "--iface"], env, psk


def quic_bulk(kind: str, qtest: Path, size: int, tmp: Path, port: int) -> float:
    ex, env, psk = _network(tmp, port)
    prog = [str(qtest)] if kind == "native" else [sys.executable, str(PYPEER)]
    sink = subprocess.Popen([*ex, "12", "--", *prog, "sink", "127.0.0.12", str(port), str(psk)], env=env,
                            stdout=subprocess.PIPE, text=True)
    src = None
    try:
        _line(sink, "ready")
        src = subprocess.Popen([*ex, "11", "--", *prog, "source", "127.0.0.12", str(port), str(psk), str(size)],
                               env=env, stdout=subprocess.PIPE, text=True)
        _, t0 = _line(src, "sending")
        got, t1 = _line(sink, "received")
        sent, _ = _line(src, "sent")
        if sent.split()[1:] != got.split()[1:]:
            raise RuntimeError(f"sha256 differs: {sent} / {got}")
        return size / (t1 - t0) / 1e6
    finally:
        for p in (src, sink):
            if p is not None:
                p.kill()
                p.wait()


def handshake_rate(kind: str, qtest: Path, count: int, tmp: Path, port: int) -> float:
    ex, env, psk = _network(tmp, port)
    prog = [str(qtest)] if kind == "native" else [sys.executable, str(PYPEER)]
    # one server for both kinds (the native one): the clients differ, the server's work does not
    srv = subprocess.Popen([*ex, "12", "--", str(qtest), "accept-loop", "127.0.0.12", str(port), str(psk), str(count)],
                           env=env, stdout=subprocess.PIPE, text=True)
    cli = None
    try:
        _line(srv, "ready")
        cli = subprocess.Popen([*ex, "11", "--", *prog, "handshakes", "127.0.0.12", str(port), str(psk), str(count)],
                               env=env, stdout=subprocess.PIPE, text=True)
        line, _ = _line(cli, "handshakes")
        return float(line.rsplit(" ", 1)[1].rstrip("/s"))
    finally:
        for p in (cli, srv):
            if p is not None:
                p.kill()
                p.wait()


def _tcp_sink(port_q, size: int) -> None:  # pragma: no cover - in a child process
    lst = socket.create_server(("127.0.0.1", 0))
    port_q.put(lst.getsockname()[1])
    c, _ = lst.accept()
    got = 0
    while got < size:
        b = c.recv(1 << 20)
        if not b:
            break
        got += len(b)
    c.sendall(b"k")


def tcp_bulk(size: int) -> float:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_tcp_sink, args=(q, size))
    p.start()
    s = socket.create_connection(("127.0.0.1", q.get(timeout=30)))
    chunk = os.urandom(65536)
    t0 = time.monotonic()
    sent = 0
    while sent < size:
        n = min(len(chunk), size - sent)
        s.sendall(chunk[:n])
        sent += n
    s.recv(1)
    dt = time.monotonic() - t0
    p.join(10)
    return size / dt / 1e6


def run(size: int, repeat: int, handshakes: int) -> dict:
    """Bulk (native, python, tcp) and handshake rates (native, python), kinds interleaved, medians
    and ratios against the Python transfer / the Python client."""
    with tempfile.TemporaryDirectory(prefix="wc-nbench-") as d:
        tmp = Path(d)
        qtest = build(tmp)
        runs: dict[str, list[float]] = {"native": [], "python": [], "tcp": []}
        hs: dict[str, list[float]] = {"native": [], "python": []}
        port = 5000
        for _ in range(repeat):
            for kind in ("native", "python"):
                port += 1
                runs[kind].append(quic_bulk(kind, qtest, size, tmp, port))
            runs["tcp"].append(tcp_bulk(size))
            for kind in ("native", "python"):
                port += 1
                hs[kind].append(handshake_rate(kind, qtest, handshakes, tmp, port))
    med = {k: statistics.median(v) for k, v in runs.items()}
    hmed = {k: statistics.median(v) for k, v in hs.items()}
    return {"size": size, "repeat": repeat, "handshakes": handshakes, "bulk": runs, "bulk_median": med,
            "handshake_runs": hs, "handshake_median": hmed,
            "native_vs_python": med["native"] / med["python"], "native_vs_tcp": med["native"] / med["tcp"],
            "handshakes_native_vs_python": hmed["native"] / hmed["python"]}


def format_results(r: dict) -> str:
    med, hmed = r["bulk_median"], r["handshake_median"]
    out = [f"bulk, one stream, {r['size'] >> 20} MiB in 64 KiB writes, median of {r['repeat']}:"]
    for k in ("native", "python", "tcp"):
        out.append(f"  {k:7s} {med[k]:8.1f} MB/s  {med[k] / med['python']:6.2f}x python  runs "
                   + " ".join(f"{x:.1f}" for x in r["bulk"][k]))
    out.append(f"handshakes (PSK), {r['handshakes']} in a row, median of {r['repeat']}:")
    for k in ("native", "python"):
        out.append(f"  {k:7s} {hmed[k]:8.1f} /s    {hmed[k] / hmed['python']:6.2f}x python")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="32MiB")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--handshakes", type=int, default=20)
    args = ap.parse_args(argv)
    print(format_results(run(_size(args.size), args.repeat, args.handshakes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
