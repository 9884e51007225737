"""The two ends of a stream-matrix cell: `python -m harness.peers.quic_streams server|client ...`.

Both run on emulated hosts (the cell starts them with the wrapper's environment) and use only the
IPPROTO_QUIC socket API of wrappers.quic (quic_sendmsg / quic_recvmsg, STREAM_OPEN, STREAM_RESET,
STREAM_STOP_SENDING, events), as an application on quic.ko would. One side is the *opener*: it opens
`streams` streams (bidi or uni) and sends `size` seeded bytes on each; the other is the *peer*: it
reads every stream and accounts for what arrived. How a stream ends (`end`):

* fin: the last bytes carry FIN; the peer checks the sha256 of each stream, and on a bidi stream
  answers with the 32-byte digest of what it received, with FIN (so both directions are used);
* reset: the opener sends half, then STREAM_RESET (error code 7); the peer must see the stream's
  RESET_RECVD event with code 7 and no FIN; a later send on the stream must fail (EINVAL/ENOSTR);
* stop_sending: after half has arrived, the peer sends STOP_SENDING (code 9); the opener must see its
  send side go to RESET_RECVD with code 9, and a later send must fail.

`mode`: blocking calls, or DONTWAIT everywhere (MSG_DONTWAIT sends and receives retried after
select(), MSG_QUIC_STREAM_DONTWAIT opens retried after a STREAM_MAX_STREAM event), counting the
EAGAINs. `limit` sets the peer's max_streams for the opener's stream type: with more streams than
that, opens wait (or get EAGAIN) until the peer releases streams and raises MAX_STREAMS. `interleave`
opens every stream first and then sends round-robin (many concurrent streams); otherwise each stream
is opened, filled and ended before the next.

Each side prints one JSON line (its last stdout line): what it sent, received, saw and the errno of
anything unexpected. Every wait has a deadline (`--timeout`): a stuck peer exits non-zero with
ETIMEDOUT instead of hanging the cell.
"""
from __future__ import annotations

import argparse
import errno
import hashlib
import json
import random
import select
import socket
import sys
import time
from typing import Any

RESET_CODE = 7
STOP_CODE = 9


def data_of(size: int, index: int) -> bytes:
    return random.Random(1000 + index).randbytes(size)


def _err(e: OSError) -> str:
    return errno.errorcode.get(e.errno or 0, type(e).__name__) if e.errno else "ETIMEDOUT"


class Deadline(Exception):
    pass


class End:
    """One side's connected socket and its bookkeeping."""

    def __init__(self, sock: Any, a: argparse.Namespace):
        from wrappers import quic

        self.q = quic
        self.s = sock
        self.a = a
        self.dontwait = a.mode == "dontwait"
        self.deadline = time.monotonic() + a.timeout
        self.eagain = {"open": 0, "send": 0, "recv": 0}
        self.events: list[Any] = []          # StreamUpdate / max-stream values seen, in order
        self.rx: dict[int, dict] = {}        # sid -> {bytes, sha, fin, reset}
        self.keep = a.role == a.opener       # the opener keeps the peer's 32-byte replies

    def left(self) -> float:
        t = self.deadline - time.monotonic()
        if t <= 0:
            raise Deadline("timed out")
        return t

    def wait(self, readable: bool) -> None:
        r, w, _ = select.select([self.s] if readable else [], [] if readable else [self.s], [], min(self.left(), 0.5))
        del r, w

    # -- receiving: data and events share one queue

    def recv_one(self) -> bool:
        """Take one item off the queue (False: nothing ready in DONTWAIT mode)."""
        q = self.q
        flags = socket.MSG_DONTWAIT if self.dontwait else 0
        if not self.dontwait:
            self.s.settimeout(min(self.left(), 1.0))
        try:
            data, sid, mflags = q.quic_recvmsg(self.s, 65536, flags)
        except BlockingIOError:
            self.eagain["recv"] += 1
            self.wait(True)
            return False
        except TimeoutError:
            return False
        except OSError as e:
            if e.errno == errno.EAGAIN:
                if self.dontwait:
                    self.eagain["recv"] += 1
                    self.wait(True)
                return False
            raise
        if mflags & q.MSG_NOTIFICATION:
            ev = q.Event.unpack(data)
            value = ev.value()
            self.events.append(value)
            if ev.type == q.QUIC_EVENT_STREAM_UPDATE and value.state == q.QUIC_STREAM_RECV_STATE_RESET_RECVD:
                self.stream(value.id)["reset"] = value.errcode
            return True
        st = self.stream(sid)
        st["bytes"] += len(data)
        st["sha"].update(data)
        st["data"] += data if st["keep"] else b""
        if mflags & q.MSG_STREAM_FIN:
            st["fin"] = True
        return True

    def stream(self, sid: int) -> dict:
        return self.rx.setdefault(sid, {"bytes": 0, "sha": hashlib.sha256(), "fin": False, "reset": None,
                                        "data": b"", "keep": self.keep, "stopped": False})

    def until(self, cond) -> None:
        while not cond():
            self.left()
            self.recv_one()

    # -- sending

    def send(self, data: bytes, sid: int, sflags: int) -> None:
        q = self.q
        off = 0
        while True:
            chunk = data[off:off + self.a.chunk]
            last = off + len(chunk) >= len(data)
            flags = sflags if last else sflags & ~q.MSG_STREAM_FIN
            if self.dontwait:
                flags |= socket.MSG_DONTWAIT
            else:
                self.s.settimeout(self.left())
            try:
                n = q.quic_sendmsg(self.s, chunk, sid, flags)
            except BlockingIOError:
                self.eagain["send"] += 1
                self.drain_then_wait()
                continue
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.ENOSPC) and self.dontwait:
                    self.eagain["send"] += 1
                    self.drain_then_wait()
                    continue
                raise
            off += n
            if last and n == len(chunk):
                return

    def drain_then_wait(self) -> None:
        """While a send waits for credit, keep reading (events, replies), then wait for POLLOUT."""
        self.left()
        r, w, _ = select.select([self.s], [self.s], [], min(self.left(), 0.2))
        if r:
            self.recv_one()

    def open(self, uni: bool) -> int:
        q = self.q
        flags = (q.MSG_STREAM_UNI if uni else 0) | (q.MSG_STREAM_DONTWAIT if self.dontwait else 0)
        while True:
            if not self.dontwait:
                self.s.settimeout(self.left())
            try:
                info = q.StreamInfo.unpack(self.s.getsockopt(q.SOL_QUIC, q.QUIC_SOCKOPT_STREAM_OPEN,
                                                             q.StreamInfo(-1, flags).pack()))
                return info.stream_id
            except OSError as e:
                if e.errno == errno.EAGAIN and self.dontwait:
                    self.eagain["open"] += 1
                    n = len(self.events)
                    # the peer raises the limit with MAX_STREAMS: a STREAM_MAX_STREAM event
                    while len(self.events) == n:
                        self.left()
                        self.recv_one()
                    continue
                raise


def _events(sock: Any) -> None:
    from wrappers import quic as q

    for etype in (q.QUIC_EVENT_STREAM_UPDATE, q.QUIC_EVENT_STREAM_MAX_STREAM):
        sock.setsockopt(q.SOL_QUIC, q.QUIC_SOCKOPT_EVENT, q.EventOption(etype, 1).pack())


def _limit(sock: Any, a: argparse.Namespace) -> None:
    from wrappers import quic as q

    if not a.limit:
        return
    tp = q.TransportParam.unpack(sock.getsockopt(q.SOL_QUIC, q.QUIC_SOCKOPT_TRANSPORT_PARAM, q.TransportParam.FMT.size))
    if a.kind == "uni":
        tp.max_streams_uni = a.limit
    else:
        tp.max_streams_bidi = a.limit
    sock.setsockopt(q.SOL_QUIC, q.QUIC_SOCKOPT_TRANSPORT_PARAM, tp.pack())


def opener(end: End) -> dict:
    q, a = end.q, end.a
    uni = a.kind == "uni"
    out: dict[str, Any] = {"sids": [], "sent_sha256": [], "after_end_errno": [], "send_reset": []}
    datas = [data_of(a.size, i) for i in range(a.streams)]
    fin = q.MSG_STREAM_FIN if a.end == "fin" else 0
    half = a.size // 2

    def body(i: int, sid: int) -> bytes:
        return datas[i] if a.end == "fin" else datas[i][:half]

    if a.interleave:
        sids = [end.open(uni) for _ in range(a.streams)]
        for off in range(0, max(len(body(i, s)) for i, s in enumerate(sids)) or 1, a.chunk):
            for i, sid in enumerate(sids):
                piece = body(i, sid)[off:off + a.chunk]
                if piece:
                    end.send(piece, sid, fin if off + a.chunk >= len(body(i, sid)) else 0)
    else:
        sids = []
        for i in range(a.streams):
            sid = end.open(uni)
            sids.append(sid)
            end.send(body(i, sid), sid, fin)
    out["sids"] = sids
    out["sent_sha256"] = [hashlib.sha256(body(i, s)).hexdigest() for i, s in enumerate(sids)]
    if a.end == "reset":
        for sid in sids:
            end.s.setsockopt(q.SOL_QUIC, q.QUIC_SOCKOPT_STREAM_RESET, q.ErrInfo(sid, RESET_CODE).pack())
    if a.end == "stop_sending":
        def all_reset() -> bool:
            got = {u.id: u.errcode for u in end.events if hasattr(u, "state")
                   and u.state == q.QUIC_STREAM_SEND_STATE_RESET_RECVD}
            out["send_reset"] = [got.get(s) for s in sids]
            return all(s in got for s in sids)
        end.until(all_reset)
    if a.end in ("reset", "stop_sending"):
        for sid in sids:   # the stream is over: a send must fail
            try:
                q.quic_sendmsg(end.s, b"late", sid, socket.MSG_DONTWAIT)
                out["after_end_errno"].append(None)
            except OSError as e:
                out["after_end_errno"].append(_err(e))
    if a.end == "fin" and not uni:
        end.until(lambda: all(end.stream(s)["fin"] for s in sids))
        out["replies_ok"] = all(bytes.fromhex(out["sent_sha256"][i]) == _reply(end, s) for i, s in enumerate(sids))
    return out


def _reply(end: End, sid: int) -> bytes:
    return end.rx[sid]["data"]


def peer(end: End) -> dict:
    q, a = end.q, end.a
    out: dict[str, Any] = {}
    answered: set[int] = set()
    stopped: set[int] = set()
    mine = 0 if a.opener == "client" else 1   # the opener's stream type bits
    mine |= 2 if a.kind == "uni" else 0

    def done() -> bool:
        theirs = {s: st for s, st in end.rx.items() if s & 3 == mine}
        for sid, st in theirs.items():
            if a.end == "stop_sending" and sid not in stopped and st["bytes"] >= a.size // 2 and not st["fin"]:
                end.s.setsockopt(q.SOL_QUIC, q.QUIC_SOCKOPT_STREAM_STOP_SENDING, q.ErrInfo(sid, STOP_CODE).pack())
                stopped.add(sid)
            if a.end == "fin" and a.kind == "bidi" and st["fin"] and sid not in answered:
                end.send(st["sha"].digest(), sid, q.MSG_STREAM_FIN)
                answered.add(sid)
        over = [s for s, st in theirs.items() if st["fin"] or st["reset"] is not None]
        return len(over) >= a.streams
    end.until(done)
    theirs = sorted(s for s in end.rx if s & 3 == mine)
    out["sids"] = theirs
    out["received"] = [end.rx[s]["bytes"] for s in theirs]
    out["sha256"] = [end.rx[s]["sha"].hexdigest() for s in theirs]
    out["fin"] = [end.rx[s]["fin"] for s in theirs]
    out["reset"] = [end.rx[s]["reset"] for s in theirs]
    out["stop_sent"] = len(stopped)
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.peers.quic_streams")
    p.add_argument("role", choices=["server", "client"])
    p.add_argument("--addr", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--psk", required=True)
    p.add_argument("--kind", choices=["bidi", "uni"], default="bidi")
    p.add_argument("--opener", choices=["client", "server"], default="client")
    p.add_argument("--end", choices=["fin", "reset", "stop_sending"], default="fin")
    p.add_argument("--mode", choices=["blocking", "dontwait"], default="blocking")
    p.add_argument("--size", type=int, default=65536)
    p.add_argument("--streams", type=int, default=1)
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--interleave", action="store_true")
    p.add_argument("--chunk", type=int, default=16384)
    p.add_argument("--timeout", type=float, default=30.0)
    a = p.parse_args(argv)
    from wrappers import quic as q

    family = socket.AF_INET6 if ":" in a.addr else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM, q.IPPROTO_QUIC)
    s.settimeout(a.timeout)
    result: dict[str, Any] = {"role": a.role, "errno": None}
    is_opener = a.role == a.opener
    conn = s
    try:
        if a.role == "server":
            s.bind((a.addr, a.port))
            s.listen(1)
            print(json.dumps({"state": "listening"}), flush=True)
            conn, _ = s.accept()
            conn.settimeout(a.timeout)
            if not is_opener:
                _limit(conn, a)
            _events(conn)
            q.server_handshake(conn, a.psk, None, timeout=a.timeout)
        else:
            if not is_opener:
                _limit(s, a)
            _events(s)
            s.connect((a.addr, a.port))
            q.client_handshake(s, a.psk, timeout=a.timeout)
        end = End(conn, a)
        result.update(opener(end) if is_opener else peer(end))
        result["eagain"] = end.eagain
        # the opener lingers until the peer closes (it has everything then); the peer lets its last
        # frames (replies, acks) go out, then closes
        end.deadline = time.monotonic() + (5.0 if is_opener else 1.0)
        try:
            end.until(lambda: False)
        except (Deadline, OSError):
            pass
    except Deadline:
        result["errno"] = "ETIMEDOUT"
    except OSError as e:
        result["errno"] = _err(e)
    finally:
        if conn is not s:
            conn.close()
        s.close()
    print(json.dumps(result), flush=True)
    return 0 if result["errno"] is None else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
