"""SMB throughput benchmark: all numbers in one run, ratios against baselines measured in
the same run on the same machine.

    python -m benchmarks.smb [--size-mib 256] [--json FILE]

- client side: our client vs smbprotocol 1.17, both against Samba's smbd (real loopback);
- server side: smbclient 4.17 against our server vs smbclient against smbd;
- each: WRITE then READ of one file, plain, signed and encrypted (AES-128-GCM);
- peak memory (VmHWM) of our server process with 50 connected clients.
Targets: our client >= 1.5x smbprotocol; our server >= 0.5x smbd.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from harness.peers.smb_samba import PASSWORD, USER, Smbd, free_port, need, wait_port

MODES = ("plain", "signed", "encrypted")

SMBPROTOCOL = r"""
import sys, time, smbclient
host, port, mode, path, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
smbclient.register_session(host, username=sys.argv[6], password=sys.argv[7], port=port,
                           encrypt=mode == "encrypted", require_signing=mode != "plain")
chunk = b"\xa5" * (1 << 20)
unc = rf"\\{host}\share\{path}"
t = time.perf_counter()
with smbclient.open_file(unc, mode="wb", port=port) as f:
    for _ in range(size >> 20):
        f.write(chunk)
w = time.perf_counter() - t
t = time.perf_counter()
with smbclient.open_file(unc, mode="rb", port=port, buffering=0) as f:
    total = 0
    while True:
        block = f.read(1 << 20)
        if not block:
            break
        total += len(block)
r = time.perf_counter() - t
assert total == size, total
print(w, r)
"""


def _mbps(size: int, seconds: float) -> float:
    return round(size / seconds / 1e6, 1)


def bench_ours_client(port: int, mode: str, size: int) -> tuple[float, float]:
    from harness.blocking.client import SMBClient

    chunk = b"\xa5" * (1 << 20)
    with SMBClient("127.0.0.1", port, username=USER, password=PASSWORD, encrypt=mode == "encrypted",
                   cipher="aes-128-gcm" if mode == "encrypted" else None, sign=mode != "plain") as client:
        with client.share("share") as share:
            start = time.perf_counter()
            share.write_from(f"ours-{mode}.bin", (chunk for _ in range(size >> 20)))
            write = time.perf_counter() - start
            start = time.perf_counter()
            total = sum(len(block) for block in share.iter_read(f"ours-{mode}.bin"))
            read = time.perf_counter() - start
            assert total == size
            share.remove(f"ours-{mode}.bin")
    return write, read


def bench_smbprotocol(port: int, mode: str, size: int) -> tuple[float, float]:
    result = subprocess.run([sys.executable, "-c", SMBPROTOCOL, "127.0.0.1", str(port), mode, f"sp-{mode}.bin",
                             str(size), USER, PASSWORD], capture_output=True, text=True, timeout=1800)
    if result.returncode:
        raise RuntimeError(result.stderr[-2000:])
    write, read = map(float, result.stdout.split())
    return write, read


def bench_smbclient(port: int, mode: str, size: int, workdir: Path) -> tuple[float, float]:
    program = need("smbclient", "smbclient")
    source = workdir / "source.bin"
    if not source.exists() or source.stat().st_size != size:
        with open(source, "wb") as handle:
            block = os.urandom(1 << 20)
            for _ in range(size >> 20):
                handle.write(block)
    protection = {"plain": "off", "signed": "sign", "encrypted": "encrypt"}[mode]
    base = [program, "//127.0.0.1/share", "-p", str(port), "-m", "SMB3", "-U", f"{USER}%{PASSWORD}", "-s",
            "/dev/null", f"--client-protection={protection}"]
    if mode == "encrypted":
        base += ["--option=client smb3 encryption algorithms=AES-128-GCM"]
    times = []
    for command in (f"put source.bin sc-{mode}.bin", f"get sc-{mode}.bin back.bin"):
        start = time.perf_counter()
        result = subprocess.run(base + ["-c", command], cwd=workdir, capture_output=True, text=True, timeout=1800)
        times.append(time.perf_counter() - start)
        if result.returncode:
            raise RuntimeError(result.stdout[-2000:] + result.stderr[-2000:])
    (workdir / "back.bin").unlink()
    return times[0], times[1]


class OurServerProcess:
    def __init__(self, share: Path) -> None:
        self.port = free_port()
        wirecheck = str(Path(sys.executable).with_name("wirecheck"))
        self.proc = subprocess.Popen([wirecheck, "serve", "--listen", f"127.0.0.1:{self.port}", "--share",
                                      f"share={share}", "--user", f"{USER}:{PASSWORD}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, 30, self.proc)

    def peak_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def memory_with_clients(share: Path, count: int = 50) -> dict:
    from harness.blocking.client import SMBClient

    server = OurServerProcess(share)
    try:
        idle = server.rss_kib()
        clients = []
        lock = threading.Lock()

        def connect() -> None:
            client = SMBClient("127.0.0.1", server.port, username=USER, password=PASSWORD, encrypt=True)
            tree = client.share("share")
            tree.listdir("")
            with lock:
                clients.append((client, tree))

        threads = [threading.Thread(target=connect) for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        connected = len(clients)
        rss = server.rss_kib()
        peak = server.peak_kib()
        for client, _tree in clients:
            client.close()
        return {"clients": connected, "idle_rss_mib": round(idle / 1024, 1), "rss_mib": round(rss / 1024, 1),
                "peak_mib": round(peak / 1024, 1)}
    finally:
        server.stop()


def run(size_mib: int) -> dict:
    size = size_mib << 20
    results: dict = {"size_mib": size_mib, "client": {}, "server": {}}
    with tempfile.TemporaryDirectory(prefix="smbbench-") as tmp:
        tmp_path = Path(tmp)
        smbd = Smbd(tmp_path / "smbd", signing="auto")
        ours_share = tmp_path / "ours"
        ours_share.mkdir()
        work = tmp_path / "work"
        work.mkdir()
        try:
            for mode in MODES:
                ours = bench_ours_client(smbd.port, mode, size)
                try:
                    theirs = bench_smbprotocol(smbd.port, mode, size)
                except RuntimeError as exc:  # smbprotocol 1.17 unsigned against smbd: CREATE is refused
                    results["client"][mode] = {"ours_write_MBps": _mbps(size, ours[0]),
                                               "ours_read_MBps": _mbps(size, ours[1]),
                                               "smbprotocol": f"failed: {str(exc).strip().splitlines()[-1][:160]}"}
                    print(mode, "client", results["client"][mode], flush=True)
                    continue
                results["client"][mode] = {
                    "ours_write_MBps": _mbps(size, ours[0]), "ours_read_MBps": _mbps(size, ours[1]),
                    "smbprotocol_write_MBps": _mbps(size, theirs[0]), "smbprotocol_read_MBps": _mbps(size, theirs[1]),
                    "ratio_write": round(theirs[0] / ours[0], 2), "ratio_read": round(theirs[1] / ours[1], 2)}
                print(mode, "client", results["client"][mode], flush=True)
            server = OurServerProcess(ours_share)
            try:
                for mode in MODES:
                    ours = bench_smbclient(server.port, mode, size, work)
                    theirs = bench_smbclient(smbd.port, mode, size, work)
                    results["server"][mode] = {
                        "ours_write_MBps": _mbps(size, ours[0]), "ours_read_MBps": _mbps(size, ours[1]),
                        "smbd_write_MBps": _mbps(size, theirs[0]), "smbd_read_MBps": _mbps(size, theirs[1]),
                        "ratio_write": round(theirs[0] / ours[0], 2), "ratio_read": round(theirs[1] / ours[1], 2)}
                    print(mode, "server", results["server"][mode], flush=True)
            finally:
                server.stop()
            results["memory_50_clients"] = memory_with_clients(ours_share)
            print("memory", results["memory_50_clients"], flush=True)
        finally:
            smbd.stop()
    results["targets"] = {
        "client_ge_1.5x_smbprotocol": all(min(v["ratio_write"], v["ratio_read"]) >= 1.5
                                          for v in results["client"].values() if "ratio_write" in v),
        "server_ge_0.5x_smbd": all(min(v["ratio_write"], v["ratio_read"]) >= 0.5 for v in results["server"].values()),
    }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    results = run(args.size_mib)
    text = json.dumps(results, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
