"""wirecheck's IPPROTO_QUIC against plain aioquic, measured in one run.

    python -m benchmarks.quic [--quick] [--size 128MiB] [--handshakes 50] [--idle 200] [--repeat 3] [--only loss --loss 2%,10%] [--json FILE]

* **bulk** - one stream, ``--size`` bytes in 64 KiB messages (sendmsg with the stream-info cmsg; for
  aioquic: ``writer.write`` + ``drain`` on one stream), FIN on the last; timed by the receiver from the
  first byte to the FIN.
* **handshakes** - ``--handshakes`` complete handshakes (certificate, P-256; and PSK for us), each on
  a fresh socket, lock-step; the client sums the time from socket creation to handshake completion
  (closing is not timed: aioquic's ``connect`` waits out the closing period on exit).
* **idle memory** - the engine's memory per idle connection: ``--idle`` connections (client and server
  end in one process), traced Python allocations and RSS growth divided by the count.
* **paths** - ``--paths`` migrations (to the echo on the new path, against a plain echo) and resumed /
  0-RTT connections (to the first echo, against full handshakes), emulated carrier, in-process.
* **loss** - bulk on the emulated carrier (``--loss-size``, default 8 MiB) with ``--loss`` (default 2%
  and 10%) of the datagrams lost each way (``out: loss=X%`` in both processes), as ratios against the
  same transfer without loss, interleaved.

Kinds: ``aioquic`` (its asyncio API over real loopback UDP, the baseline), ``real`` (our QuicSocket
over real loopback UDP: a user-space quic.ko), ``emu`` (under ``wrappers.activate``: SEQPACKET
carrier), ``emu-pcap`` (the same plus the pcap and key log); for bulk also ``ngtcp2`` (ngtcp2's
gtlsclient downloading the same size from gtlsserver over real loopback UDP: a native QUIC stack, the
reference the emulated carrier is measured against, with quic.ko's published 3.83 Gbit/s). Client and server run in two fresh
processes (spawned), as in benchmarks/transport.py, so the GIL does not serialise them. Each
measurement is repeated, kinds interleaved, and the median reported with ratios against aioquic.
Timing is printed, never asserted.

Where bulk time goes: ``py-spy record --subprocesses -r 200 -f raw -o prof.txt -- python -m
benchmarks.quic --only bulk --kinds emu-pcap`` samples client, server and their engine threads
(py-spy is a PyPI tool, not a dependency); measure a change that way before making it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

KINDS = ("aioquic", "real", "emu", "emu-pcap")
#: bulk only: ngtcp2's gtlsclient/gtlsserver (the native reference), when installed
BULK_ONLY = ("ngtcp2",)
CHUNK = 64 * 1024


def paths(count: int, pki: dict[str, str]) -> dict:
    """Migration and resumption latencies on the emulated carrier, both ends in this process, as
    ratios against a baseline measured in the same run: a migration (setsockopt CONNECTION_MIGRATION,
    whose first packet leaves on the new path at once, to the echo of data sent on it: path
    validation included) against a plain echo round trip on an established path; resumed and 0-RTT
    connections (socket creation to the echo of the first request) against full ones."""
    import threading

    import wrappers
    from wrappers.quic import (
        MSG_STREAM_FIN,
        MSG_STREAM_NEW,
        QUIC_SOCKOPT_CONNECTION_MIGRATION,
        QUIC_SOCKOPT_TRANSPORT_PARAM,
        SOL_QUIC,
        TransportParam,
        client_handshake,
        quic_recvmsg,
        quic_sendmsg,
        server_handshake,
        session_get_data,
        sockaddr_in,
    )

    sockdir = tempfile.mkdtemp(prefix="wqp-", dir="/tmp")
    wrappers.activate(sockdir, iface=11)
    ls: Any = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 261)
    ls.bind(("127.0.0.11", 0))
    ls.listen(64)
    keep: list[Any] = []

    def echo_server(s: Any) -> None:
        try:
            s.settimeout(30)
            while True:
                data, sid, flags = quic_recvmsg(s, 65536)
                if data or flags & MSG_STREAM_FIN:
                    quic_sendmsg(s, data, sid, MSG_STREAM_FIN)
        except OSError:
            pass

    def accept_one() -> None:
        s, _ = ls.accept()
        server_handshake(s, pki["server_key"], pki["server"], timeout=10)
        keep.append(s)
        threading.Thread(target=echo_server, args=(s,), daemon=True).start()

    def echo(c: Any) -> None:
        quic_sendmsg(c, b"x" * 100, -1, MSG_STREAM_NEW | MSG_STREAM_FIN)
        while True:
            data, _, flags = quic_recvmsg(c, 65536)
            if flags & MSG_STREAM_FIN:
                return

    def connection(session: bytes | None = None, saved: bytes | None = None) -> tuple[float, Any]:
        t = threading.Thread(target=accept_one)
        t.start()
        t0 = time.perf_counter()
        c: Any = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 261)
        c.settimeout(10)
        c.connect(ls.getsockname())
        if saved is not None:  # 0-RTT: the request goes before the handshake
            c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_TRANSPORT_PARAM, saved)
            quic_sendmsg(c, b"x" * 100, -1, MSG_STREAM_NEW | MSG_STREAM_FIN)
        client_handshake(c, None, "server.test", cafile=pki["ca"], timeout=10, session_data=session)
        if saved is not None:
            while not quic_recvmsg(c, 65536)[2] & MSG_STREAM_FIN:
                pass
        else:
            echo(c)
        dt = time.perf_counter() - t0
        t.join()
        keep.append(c)
        return dt, c

    out: dict[str, Any] = {"count": count}
    try:
        connection()  # warm-up
        _, first = connection()
        while True:
            try:
                session = session_get_data(first)
                break
            except BlockingIOError:
                time.sleep(0.01)
        saved = first.getsockopt(SOL_QUIC, QUIC_SOCKOPT_TRANSPORT_PARAM, TransportParam(remote=1).pack())
        full, resumed, zero = [], [], []
        for _ in range(count):
            full.append(connection()[0])
            resumed.append(connection(session)[0])
            zero.append(connection(session, saved)[0])
        out["full_ms"] = statistics.median(full) * 1e3
        out["resumed_ms"] = statistics.median(resumed) * 1e3
        out["zero_rtt_ms"] = statistics.median(zero) * 1e3
        out["resumed_ratio"] = out["resumed_ms"] / out["full_ms"]
        out["zero_rtt_ratio"] = out["zero_rtt_ms"] / out["full_ms"]
        _, c = connection()
        rtt, mig = [], []
        for _ in range(count):
            t0 = time.perf_counter()
            echo(c)
            rtt.append(time.perf_counter() - t0)
            host, port = c.getsockname()[:2]
            t0 = time.perf_counter()
            c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_CONNECTION_MIGRATION, sockaddr_in(host, port + 1))
            echo(c)
            mig.append(time.perf_counter() - t0)
            time.sleep(0.02)  # the migration completes (the old path closes) before the next one
        out["echo_ms"] = statistics.median(rtt) * 1e3
        out["migration_ms"] = statistics.median(mig) * 1e3
        out["migration_ratio"] = out["migration_ms"] / out["echo_ms"]
    finally:
        for x in keep:
            x.close()
        ls.close()
        wrappers.deactivate()
        shutil.rmtree(sockdir, ignore_errors=True)
    return out


def lossy(a: argparse.Namespace, pki: dict[str, str], tmp: str) -> dict:
    """Bulk throughput on the emulated carrier with ``out: loss=X%`` in both processes (X% of each
    direction's datagrams lost: data and ACKs), against the same transfer without loss, runs
    interleaved so a load change on the machine hits every rate alike. Loss recovery and congestion
    control are aioquic's (NewReno): this measures them through our engine's timers."""
    rates = ["0%", *[x.strip() for x in a.loss.split(",") if x.strip()]]
    samples: dict[str, list[float]] = {r: [] for r in rates}
    for _ in range(a.repeat):
        for r in rates:
            spec = None if r == "0%" else f"seed=5; out: loss={r}; match: udp"
            got = _trial("emu", "bulk", a, pki, tmp, spec=spec, size=a.loss_size)
            samples[r].append(got["rate"])
            print(f"  loss {r:4s} {got['rate']:10.2f} MB/s", file=sys.stderr)
    med = {r: statistics.median(v) for r, v in samples.items()}
    return {"size": a.loss_size, "rates": {r: {"median": v, "samples": samples[r], "ratio": v / med["0%"]}
                                           for r, v in med.items()}}


def _size(text: str) -> int:
    units = {"KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "K": 1000, "M": 1000**2}
    t = text.upper()
    for u, m in units.items():
        if t.endswith(u):
            return int(float(t[: -len(u)]) * m)
    return int(t)


def _pki(directory: str) -> dict[str, str]:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
    from quic.certs import make_pki  # tests/quic/certs.py

    return make_pki(directory)


# -- wirecheck side (runs in a child process) ---------------------------------------------------

def _activate(kind: str, sockdir: str, pcap: str | None, spec: str | None = None) -> None:
    if kind.startswith("emu"):
        import wrappers

        wrappers.activate(sockdir, iface=11, pcap=pcap if kind == "emu-pcap" else None)
    if spec:  # this process's sends (out:): each end loses its share, so the loss is each way
        from wrappers import impair

        impair.configure(spec)


def _qsocket(kind: str) -> Any:
    from wrappers.quic import QuicSocket

    if kind.startswith("emu"):
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 261)
    return QuicSocket(socket.AF_INET, socket.SOCK_DGRAM)


def _wc_server(kind: str, task: str, n: int, pki: dict[str, str], sockdir: str, pcap: str | None,
               port_q: Any, out_q: Any, psk: bool, spec: str | None = None) -> None:
    from wrappers.quic import MSG_STREAM_FIN, quic_recvmsg, server_handshake

    _activate(kind, sockdir, pcap, spec)
    ls = _qsocket(kind)
    ls.bind(("127.0.0.11" if kind.startswith("emu") else "127.0.0.1", 0))
    ls.listen(64)
    port_q.put(ls.getsockname()[1])
    for _ in range(n if task == "handshakes" else 1):
        s, _ = ls.accept()
        if psk:
            server_handshake(s, pki["psk"], None, timeout=30)
        else:
            server_handshake(s, pki["server_key"], pki["server"], timeout=30)
        if task == "bulk":
            total, t0 = 0, None
            while True:
                data, _, flags = quic_recvmsg(s, CHUNK * 4)
                if t0 is None:
                    t0 = time.perf_counter()
                total += len(data)
                if flags & MSG_STREAM_FIN:
                    break
            out_q.put((total, time.perf_counter() - t0))
            s.send(b"done", MSG_STREAM_FIN)
            time.sleep(0.2)
        s.close()
    ls.close()


def _wc_client(kind: str, task: str, n: int, size: int, pki: dict[str, str], sockdir: str, port: int,
               out_q: Any, psk: bool, spec: str | None = None, pcap: str | None = None) -> None:
    from wrappers.quic import MSG_STREAM_FIN, MSG_STREAM_NEW, client_handshake, quic_sendmsg

    _activate(kind, sockdir, pcap, spec)  # both ends record into the one capture, as under wirecheck exec
    host = "127.0.0.11" if kind.startswith("emu") else "127.0.0.1"

    def handshake() -> Any:
        c = _qsocket(kind)
        c.connect((host, port))
        if psk:
            client_handshake(c, pki["psk"], timeout=30)
        else:
            client_handshake(c, None, "server.test", cafile=pki["ca"], timeout=30)
        return c

    if task == "handshakes":
        spent = 0.0
        for _ in range(n):
            t0 = time.perf_counter()
            c = handshake()
            spent += time.perf_counter() - t0
            c.close()
        out_q.put(spent)
        return
    c = handshake()
    block = os.urandom(CHUNK)
    sent = 0
    while sent < size:
        last = sent + CHUNK >= size
        quic_sendmsg(c, block, 0 if sent else -1, (0 if sent else MSG_STREAM_NEW) | (MSG_STREAM_FIN if last else 0))
        sent += CHUNK
    c.settimeout(60)
    c.recv(100)
    c.close()


# -- aioquic baseline -------------------------------------------------------------------------------

def _aio_config(is_client: bool, pki: dict[str, str]) -> Any:
    import ssl

    from aioquic.quic.configuration import QuicConfiguration

    cfg = QuicConfiguration(is_client=is_client, alpn_protocols=["bench"], max_datagram_size=1452)
    if is_client:
        cfg.load_verify_locations(cafile=pki["ca"])
        cfg.server_name = "server.test"
        cfg.verify_mode = ssl.CERT_REQUIRED
    else:
        cfg.load_cert_chain(pki["server"], pki["server_key"])
    return cfg


def _aio_server(task: str, n: int, pki: dict[str, str], port_q: Any, out_q: Any) -> None:
    from aioquic.asyncio import serve

    async def main() -> None:
        done = asyncio.Event()
        count = {"n": 0}

        def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            async def run() -> None:
                total, t0 = 0, None
                while True:
                    data = await reader.read(CHUNK * 4)
                    if not data:
                        break
                    if t0 is None:
                        t0 = time.perf_counter()
                    total += len(data)
                out_q.put((total, time.perf_counter() - (t0 or time.perf_counter())))
                writer.write(b"done")
                writer.write_eof()
                await asyncio.sleep(0.2)
                done.set()
            asyncio.ensure_future(run())

        server = await serve("127.0.0.1", 0, configuration=_aio_config(False, pki), stream_handler=handler)
        assert server._transport is not None
        port_q.put(server._transport.get_extra_info("sockname")[1])
        if task == "bulk":
            await done.wait()
        else:
            while count["n"] < n:
                await asyncio.sleep(0.05)
                if not multiprocessing.parent_process().is_alive():  # type: ignore[union-attr]
                    break
        server.close()

    try:
        asyncio.run(asyncio.wait_for(main(), 600 if task == "bulk" else 2.0 + n))
    except TimeoutError:
        pass


def _aio_client(task: str, n: int, size: int, pki: dict[str, str], port: int, out_q: Any) -> None:
    from aioquic.asyncio import connect

    async def main() -> None:
        cfg = _aio_config(True, pki)
        if task == "handshakes":
            # time the handshake only: leaving ``connect`` waits out aioquic's closing period
            spent = 0.0
            for _ in range(n):
                t0 = time.perf_counter()
                async with connect("127.0.0.1", port, configuration=cfg, wait_connected=True) as client:
                    spent += time.perf_counter() - t0
                    client.close()
            out_q.put(spent)
            return
        async with connect("127.0.0.1", port, configuration=cfg) as client:
            reader, writer = await client.create_stream()
            block = os.urandom(CHUNK)
            sent = 0
            while sent < size:
                writer.write(block)
                sent += CHUNK
                await writer.drain()
            writer.write_eof()
            await reader.read()

    asyncio.run(main())


# -- trials -----------------------------------------------------------------------------------------

#: quic.ko's published bulk figure (3.83 Gbit/s), in MB/s
QUIC_KO_MBPS = 3.83e9 / 8 / 1e6


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _udp_bound(port: int) -> bool:
    """Whether some process has bound UDP 127.0.0.1:port (the server is up): the kernel's table."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/udp") as f:
        return any(line.split()[1] == want for line in list(f)[1:])


def ngtcp2_bulk(size: int, pki: dict[str, str], tmp: str, timeout: float = 600.0) -> dict:
    """ngtcp2's own example programs, the reference a QUIC user compares with: gtlsclient downloads a
    ``size``-byte file from gtlsserver over real loopback UDP (HTTP/3, GnuTLS, one stream); timed from
    the client's start to its exit (handshake included), the file checked byte for byte after."""
    import filecmp

    work = tempfile.mkdtemp(prefix="ngtcp2-", dir=tmp)
    www, dl = os.path.join(work, "www"), os.path.join(work, "dl")
    os.mkdir(www)
    os.mkdir(dl)
    src = os.path.join(www, "bulk.bin")
    with open(src, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(os.urandom(n))
            left -= n
    port = _free_udp_port()
    server = shutil.which("gtlsserver") or "/usr/sbin/gtlsserver"
    srv = subprocess.Popen([server, "-q", "-d", www, "127.0.0.1", str(port), pki["server_key"], pki["server"]],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not _udp_bound(port):  # readiness outside the timed part: it prints nothing with -q
            if srv.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gtlsserver did not bind UDP port {port} (status {srv.poll()})")
            time.sleep(0.01)
        t = time.perf_counter()
        subprocess.run(["gtlsclient", "-q", "--exit-on-all-streams-close", f"--download={dl}", "127.0.0.1",
                        str(port), f"https://localhost:{port}/bulk.bin"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True, timeout=timeout)
        secs = time.perf_counter() - t
        got = os.path.join(dl, "bulk.bin")
        if not os.path.exists(got) or not filecmp.cmp(src, got, shallow=False):
            raise RuntimeError("gtlsclient's download differs from the served file")
        return {"rate": size / secs / 1e6, "bytes": size, "seconds": secs}
    finally:
        srv.terminate()
        try:
            srv.wait(5)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()
        shutil.rmtree(work, ignore_errors=True)


def _trial(kind: str, task: str, s: argparse.Namespace, pki: dict[str, str], tmp: str, psk: bool = False,
           spec: str | None = None, size: int | None = None) -> dict:
    ctx = multiprocessing.get_context("spawn")
    port_q, out_q = ctx.Queue(), ctx.Queue()
    sockdir = tempfile.mkdtemp(prefix="wqb-", dir="/tmp")
    pcap = os.path.join(tmp, f"{kind}-{task}.pcap")
    n = s.handshakes
    if kind == "ngtcp2":
        return ngtcp2_bulk(size or s.size, pki, tmp, s.timeout)
    try:
        if kind == "aioquic":
            srv = ctx.Process(target=_aio_server, args=(task, n, pki, port_q, out_q))
        else:
            srv = ctx.Process(target=_wc_server, args=(kind, task, n, pki, sockdir, pcap, port_q, out_q, psk, spec))
        srv.start()
        port = port_q.get(timeout=60)
        if kind == "aioquic":
            cli = ctx.Process(target=_aio_client, args=(task, n, s.size, pki, port, out_q))
        else:
            cli = ctx.Process(target=_wc_client, args=(kind, task, n, size or s.size, pki, sockdir, port, out_q, psk,
                                                       spec, pcap))
        cli.start()
        result = out_q.get(timeout=s.timeout)
        cli.join(30)
        srv.join(10)
        for p in (cli, srv):
            if p.is_alive():
                p.kill()
        if task == "bulk":
            total, secs = result
            return {"rate": total / secs / 1e6, "bytes": total, "seconds": secs}
        return {"rate": n / result, "seconds": result}
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


def idle_memory(count: int, pki: dict[str, str]) -> dict:
    """Per idle connection (client end + server end in this process), after a settled handshake."""
    import gc
    import threading
    import tracemalloc

    import wrappers
    from wrappers.quic import client_handshake, server_handshake

    sockdir = tempfile.mkdtemp(prefix="wqm-", dir="/tmp")
    wrappers.activate(sockdir, iface=11)
    ls: Any = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 261)
    ls.bind(("127.0.0.11", 0))
    ls.listen(count + 8)
    keep: list[Any] = []

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def one() -> None:
        box: dict[str, Any] = {}

        def serve() -> None:
            s, _ = ls.accept()
            server_handshake(s, pki["psk"], None, timeout=10)
            box["s"] = s

        t = threading.Thread(target=serve)
        t.start()
        c: Any = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 261)
        c.connect(ls.getsockname())
        client_handshake(c, pki["psk"], timeout=10)
        t.join()
        keep.extend([c, box["s"]])

    one()  # warm-up: imports, engine thread, certificate
    gc.collect()
    time.sleep(0.3)
    tracemalloc.start()
    r0, m0 = rss(), tracemalloc.get_traced_memory()[0]
    for _ in range(count):
        one()
    time.sleep(0.5)
    gc.collect()
    r1, m1 = rss(), tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    for s in keep:
        s.close()
    ls.close()
    wrappers.deactivate()
    shutil.rmtree(sockdir, ignore_errors=True)
    return {"connections": count, "python_kib": (m1 - m0) / count / 1024, "rss_kib": (r1 - r0) / count / 1024}


def options(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line with its defaults filled in (also what benchmarks/report.py passes)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.quic", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="16 MiB, 20 handshakes, 50 idle connections, 1 repeat")
    p.add_argument("--size", type=_size, help="bulk bytes (default 128MiB)")
    p.add_argument("--handshakes", type=int, help="handshakes per run (default 50)")
    p.add_argument("--idle", type=int, help="idle connections for the memory figure (default 200)")
    p.add_argument("--repeat", type=int, help="runs per measurement, median reported (default 3)")
    p.add_argument("--only", help="comma-separated subset of: bulk,handshakes,memory,paths,loss")
    p.add_argument("--loss-size", type=_size, help="bytes per lossy transfer (default 8MiB)")
    p.add_argument("--loss", default="2%,10%", help="loss rates against none (default 2%%,10%%)")
    p.add_argument("--paths", type=int, help="migrations and resumptions measured (default 30)")
    p.add_argument("--kinds", help="comma-separated subset of: " + ",".join(KINDS + BULK_ONLY))
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--json", metavar="FILE")
    a = p.parse_args(argv)
    a.size = a.size or (16 * 1024**2 if a.quick else 128 * 1024**2)
    a.handshakes = a.handshakes or (20 if a.quick else 50)
    a.idle = a.idle or (50 if a.quick else 200)
    a.repeat = a.repeat or (1 if a.quick else 3)
    a.paths = a.paths or (10 if a.quick else 30)
    a.loss_size = a.loss_size or (2 * 1024**2 if a.quick else 8 * 1024**2)
    return a


def run(a: argparse.Namespace) -> dict[str, Any]:
    """Every measurement ``a.only`` asks for; medians and ratios (against aioquic, and for bulk
    against ngtcp2 and quic.ko's published figure) in the returned dict."""
    only = set((a.only or "bulk,handshakes,memory,paths,loss").split(","))
    kinds = [k for k in (a.kinds or ",".join(KINDS)).split(",") if k]
    tmp = tempfile.mkdtemp(prefix="wqbench-")
    pki = _pki(tmp)
    results: dict[str, Any] = {"settings": {"size": a.size, "handshakes": a.handshakes, "repeat": a.repeat}}
    try:
        tasks = [t for t in ("bulk", "handshakes") if t in only]
        for task in tasks:
            samples: dict[str, list[float]] = {k: [] for k in kinds if k not in BULK_ONLY}
            if task == "handshakes" and "real" in kinds:
                samples["real-psk"] = []
            if task == "bulk" and (a.kinds is None or "ngtcp2" in kinds) and shutil.which("gtlsclient"):
                samples["ngtcp2"] = []
            for _ in range(a.repeat):
                for k in list(samples):
                    kind, psk = (k[:-4], True) if k.endswith("-psk") else (k, False)
                    r = _trial(kind, task, a, pki, tmp, psk=psk)
                    samples[k].append(r["rate"])
                    print(f"  {task:10s} {k:9s} {r['rate']:10.2f} {'MB/s' if task == 'bulk' else 'handshakes/s'}",
                          file=sys.stderr)
            med = {k: statistics.median(v) for k, v in samples.items() if v}
            base = med.get("aioquic")
            results[task] = {k: {"median": v, "samples": samples[k], "ratio": (v / base) if base else None}
                             for k, v in med.items()}
        if "memory" in only:
            results["memory"] = idle_memory(a.idle, pki)
        if "paths" in only:
            results["paths"] = paths(a.paths, pki)
        if "loss" in only:
            results["loss"] = lossy(a, pki, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ng = results.get("bulk", {}).get("ngtcp2")
    if ng:
        for k, v in results["bulk"].items():
            if k != "ngtcp2":
                v["vs_ngtcp2"] = v["median"] / ng["median"]
                v["vs_quic_ko"] = v["median"] / QUIC_KO_MBPS
    return results


def format_results(results: dict[str, Any], repeat: int) -> str:
    """The tables, as ``python -m benchmarks.quic`` prints them."""
    out: list[str] = []
    unit = {"bulk": "MB/s", "handshakes": "handshakes/s"}
    for task in ("bulk", "handshakes"):
        if task in results:
            out.append(f"{task} ({unit[task]}; ratio vs aioquic asyncio over loopback UDP, target >= 1.0x):")
            for k, v in results[task].items():
                ratio = f"{v['ratio']:.2f}x" if v["ratio"] is not None else "-"
                out.append(f"  {k:9s} {v['median']:10.2f}  {ratio}")
    ng = results.get("bulk", {}).get("ngtcp2")
    if ng:
        out.append(f"bulk against ngtcp2 gtlsclient/gtlsserver over real loopback UDP ({ng['median']:.2f} MB/s, "
                   f"this run; target for emu-pcap >= 0.5x) and quic.ko's published {QUIC_KO_MBPS:.0f} MB/s "
                   f"(3.83 Gbit/s):")
        for k, v in results["bulk"].items():
            if k != "ngtcp2":
                ratio = v["vs_ngtcp2"]
                verdict = f"  target >= 0.5x {'PASS' if ratio >= 0.5 else 'MISS'}" if k == "emu-pcap" else ""
                out.append(f"  {k:9s} {ratio:.3f}x ngtcp2  {v['vs_quic_ko']:.4f}x quic.ko{verdict}")
    if "memory" in results:
        m = results["memory"]
        out.append(f"idle memory ({m['connections']} connections; target <= 200 KiB per connection): "
                   f"per end (one process's socket + engine state) python {m['python_kib'] / 2:.1f} KiB, "
                   f"rss {m['rss_kib'] / 2:.1f} KiB; both ends in one process: python {m['python_kib']:.1f} KiB, "
                   f"rss {m['rss_kib']:.1f} KiB")
    if "paths" in results:
        r = results["paths"]
        out.append(f"paths (emulated carrier, median of {r['count']}; ratios vs a baseline of this run):")
        out.append(f"  migration to echo on the new path {r['migration_ms']:.2f} ms = {r['migration_ratio']:.2f}x "
                   f"a plain echo round trip ({r['echo_ms']:.2f} ms)")
        out.append(f"  connection to first echo: full {r['full_ms']:.2f} ms, resumed {r['resumed_ms']:.2f} ms "
                   f"({r['resumed_ratio']:.2f}x), 0-RTT {r['zero_rtt_ms']:.2f} ms ({r['zero_rtt_ratio']:.2f}x)")
    if "loss" in results:
        r = results["loss"]
        out.append(f"loss (emulated carrier, {r['size'] / 1024**2:.0f} MiB one stream, loss each way, median of "
                   f"{repeat}; ratio vs the same transfer without loss in this run):")
        for k, v in r["rates"].items():
            out.append(f"  loss {k:4s} {v['median']:8.2f} MB/s  {v['ratio']:.2f}x")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    a = options(argv)
    results = run(a)
    print(format_results(results, a.repeat))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
