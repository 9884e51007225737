"""Child programs of the tcp/udp exchange operations: plain sockets, no knowledge of the wrapper.

`python -m harness.peers.net_exchange MODE ...` runs on an emulated host because the cell starts it with
the wrapper's environment. Each prints one JSON object on its last stdout line (bytes, sha256,
errno), which the operation reads back; that is the data-integrity evidence of a scenario.

The UDP client is stop-and-wait with a sequence number and a digest per datagram, so it delivers every
byte intact through loss, duplication and corruption (a corrupted or stale echo is ignored and the
datagram sent again): the sha256 of what came back equals the sha256 of what was sent, and the
retransmission count says how hard the impairment hit.
"""
from __future__ import annotations

import argparse
import errno
import hashlib
import json
import random
import signal
import socket
import struct
import sys
import threading
import time


def _family(text: str) -> int:
    """ipv4 -> AF_INET; ipv6 and mapped (an AF_INET6 socket given ::ffff:a.b.c.d) -> AF_INET6."""
    return socket.AF_INET6 if text in ("ipv6", "mapped") else socket.AF_INET


def _v6only(s: socket.socket, a: argparse.Namespace) -> None:
    """--v6only 0/1 sets IPV6_V6ONLY before bind; without it the socket keeps the system default."""
    if a.v6only is not None:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, a.v6only)


def data_of(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _err(e: OSError) -> str:
    if isinstance(e, TimeoutError) and not e.errno:
        return "ETIMEDOUT"  # socket.timeout carries no errno; the kernel would say ETIMEDOUT
    return errno.errorcode.get(e.errno or 0, str(e)) if e.errno else type(e).__name__


READY = "listening"


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _ready() -> None:
    """``listening`` (plain text: the last JSON line stays the report) once bound: the launcher waits
    for this line on the pipe instead of polling for the socket file."""
    sys.stdout.write(f"{READY}\n")
    sys.stdout.flush()


# ------------------------------------------------------------------------------------------ TCP

def tcp_echo_server(a: argparse.Namespace) -> int:
    srv = socket.socket(_family(a.family), socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    _v6only(srv, a)
    srv.bind((a.addr, a.port))
    srv.listen(16)
    _ready()
    srv.settimeout(a.timeout)
    total, digest, errors = 0, hashlib.sha256(), []
    peers: list[str] = []
    for _ in range(a.conns):
        try:
            conn, peer = srv.accept()
        except OSError as e:
            errors.append(_err(e))
            break
        peers.append(peer[0])
        conn.settimeout(a.timeout)
        try:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                total += len(chunk)
                digest.update(chunk)
                if a.mode == "echo":
                    conn.sendall(chunk)
            conn.shutdown(socket.SHUT_WR)
        except OSError as e:
            errors.append(_err(e))
        finally:
            conn.close()
    srv.close()
    _emit({"received": total, "received_sha256": digest.hexdigest(), "errno": errors[0] if errors else None,
           "peer": peers[0] if peers else None})
    return 0


def tcp_client(a: argparse.Namespace) -> int:
    data = data_of(a.size, a.seed)
    out = {"sent": 0, "sent_sha256": hashlib.sha256(data).hexdigest(), "received": 0,
           "received_sha256": None, "errno": None}
    digest = hashlib.sha256()
    read_error: list[str] = []
    s = socket.socket(_family(a.family), socket.SOCK_STREAM)
    try:
        s.settimeout(a.timeout)
        s.connect((a.addr, a.port))
    except OSError as e:
        s.close()
        out["errno"] = _err(e)
        _emit(out)
        return 3

    def reader() -> None:
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return
                out["received"] += len(chunk)
                digest.update(chunk)
        except OSError as e:
            read_error.append(_err(e))

    t = threading.Thread(target=reader, daemon=True)
    if a.mode == "echo":
        t.start()
    try:
        for i in range(0, len(data), a.chunk):
            s.sendall(data[i:i + a.chunk])
            out["sent"] += len(data[i:i + a.chunk])
        s.shutdown(socket.SHUT_WR)
    except OSError as e:
        out["errno"] = _err(e)
    if a.mode == "echo":
        t.join(a.timeout)
        if t.is_alive():
            read_error.append("ETIMEDOUT")
    else:
        reader()
    s.close()
    out["received_sha256"] = digest.hexdigest()
    # After a reset the writer often sees EPIPE while the reader saw the ECONNRESET: report the cause.
    if read_error and out["errno"] in (None, "EPIPE"):
        out["errno"] = read_error[0]
    _emit(out)
    return 3 if out["errno"] else 0


# ------------------------------------------------------------------------------------------ UDP

HDR = struct.Struct(">I8s")  # sequence number, first 8 bytes of sha256(payload)


def udp_echo_server(a: argparse.Namespace) -> int:
    s = socket.socket(_family(a.family), socket.SOCK_DGRAM)
    _v6only(s, a)
    s.bind((a.addr, a.port))
    _ready()
    s.settimeout(a.timeout)
    stats = {"datagrams": 0, "bytes": 0, "errno": None}

    def stop(_sig: int, _frame: object) -> None:
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            try:
                data, peer = s.recvfrom(65535)
            except TimeoutError:
                break
            stats["datagrams"] += 1
            stats["bytes"] += len(data)
            s.sendto(data, peer)
    except OSError as e:
        stats["errno"] = _err(e)
    finally:
        _emit(stats)
    return 0


def udp_client(a: argparse.Namespace) -> int:
    data = data_of(a.size, a.seed)
    s = socket.socket(_family(a.family), socket.SOCK_DGRAM)
    s.connect((a.addr, a.port))
    got = bytearray()
    sent = retrans = stale = 0
    out = {"sent_sha256": hashlib.sha256(data).hexdigest(), "errno": None}
    deadline = time.monotonic() + a.timeout
    try:
        for seq, off in enumerate(range(0, len(data), a.chunk)):
            payload = data[off:off + a.chunk]
            packet = HDR.pack(seq, hashlib.sha256(payload).digest()[:8]) + payload
            tries = 0
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError("exchange deadline passed")
                s.send(packet)
                sent += 1
                retrans += tries > 0
                tries += 1
                s.settimeout(a.rto)
                echoed = None
                try:
                    while echoed is None:
                        reply = s.recv(65535)
                        if len(reply) < HDR.size:
                            stale += 1
                            continue
                        rseq, rdig = HDR.unpack_from(reply)
                        body = reply[HDR.size:]
                        if rseq == seq and hashlib.sha256(body).digest()[:8] == rdig:
                            echoed = body
                        else:
                            stale += 1  # an older echo, a duplicate or a corrupted one
                except TimeoutError:
                    continue
                got += echoed
                break
    except (OSError, TimeoutError) as e:
        out["errno"] = "ETIMEDOUT" if isinstance(e, TimeoutError) else _err(e)
    s.close()
    out.update({"sent": len(data), "received": len(got), "received_sha256": hashlib.sha256(got).hexdigest(),
                "datagrams": sent, "retransmissions": retrans, "ignored": stale})
    _emit(out)
    return 3 if out["errno"] else 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.peers.net_exchange")
    p.add_argument("mode", choices=["tcp-echo-server", "tcp-client", "udp-echo-server", "udp-client"])
    p.add_argument("--family", default="ipv4", choices=["ipv4", "ipv6", "mapped"])
    p.add_argument("--v6only", type=int, choices=[0, 1], default=None)
    p.add_argument("--addr", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--conns", type=int, default=1)
    p.add_argument("--mode", dest="xmode", default="echo", choices=["echo", "sink"])
    p.add_argument("--size", type=int, default=65536)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--chunk", type=int, default=16384)
    p.add_argument("--rto", type=float, default=0.05)
    p.add_argument("--timeout", type=float, default=20.0)
    a = p.parse_args(argv)
    a.mode_ = a.mode
    mode, a.mode = a.mode, a.xmode
    return {"tcp-echo-server": tcp_echo_server, "tcp-client": tcp_client, "udp-echo-server": udp_echo_server,
            "udp-client": udp_client}[mode](a)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
