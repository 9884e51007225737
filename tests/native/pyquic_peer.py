"""The Python side of the native QUIC tests, run under `wirecheck exec` (plain socket(..., 261) calls).

    pyquic_peer.py server HOST PORT PSK        accept one client, echo one message upper-cased (FIN)
    pyquic_peer.py client HOST PORT PSK        connect; then one command per stdin line:
        send TEXT / fin TEXT   send on stream 0 (NEW the first time; FIN with fin)
        recv                   print the next stream data (events skipped)
        close                  close and exit
    pyquic_peer.py sink HOST PORT PSK          accept one client, read one stream; print "got N" every
                                               MiB and at the end "received N SHA256", or "closed N errno"
    pyquic_peer.py source HOST PORT PSK NBYTES connect, send NBYTES in 64 KiB messages with FIN; print
                                               "sent N SHA256" (qtest source's data: same bytes, same hash)
    pyquic_peer.py splice-sink HOST PORT PSK   as sink, but print "connected" and read nothing until a
                                               line on stdin (the sender's flow control fills up), and
                                               answer "spliced back to you" (qtest splice-client)
    pyquic_peer.py flood HOST PORT PSK         accept one client and send to it without blocking until
                                               the send would block: print "flood held N" (or "flood not-held N")
"""

from __future__ import annotations

import errno
import hashlib
import socket
import sys
import time

from wrappers.quic import (
    IPPROTO_QUIC,
    MSG_NOTIFICATION,
    MSG_STREAM_FIN,
    MSG_STREAM_NEW,
    STREAM_INFO_SPACE,
    StreamInfo,
    client_handshake,
    server_handshake,
    stream_info_cmsg,
)


def _listen(host: str, port: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, IPPROTO_QUIC)
    s.settimeout(60)
    s.bind((host, int(port)))
    s.setsockopt(288, 11, b"smb")
    s.listen(4)
    print("ready", flush=True)
    return s


def _recv(c: socket.socket, n: int) -> tuple[bytes, int]:
    while True:
        data, anc, flags, _ = c.recvmsg(n, STREAM_INFO_SPACE)
        if flags & MSG_NOTIFICATION:
            continue
        fin = StreamInfo.unpack(anc[0][2]).stream_flags & MSG_STREAM_FIN if anc else 0
        return data, fin


def server(host: str, port: str, psk: str) -> int:
    s = _listen(host, port)
    c, _ = s.accept()
    server_handshake(c, psk, None, "smb", timeout=30)
    data, anc, _flags, _ = c.recvmsg(4096, STREAM_INFO_SPACE)
    sid = StreamInfo.unpack(anc[0][2]).stream_id
    c.sendmsg([data.upper()], [stream_info_cmsg(sid, MSG_STREAM_FIN)])
    print(f"echoed {len(data)}", flush=True)
    try:
        while c.recv(16) is not None:
            pass
    except OSError:
        pass
    return 0


def client(host: str, port: str, psk: str) -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, IPPROTO_QUIC)
    s.settimeout(60)
    s.connect((host, int(port)))
    client_handshake(s, psk, alpns="smb", timeout=30)
    print("connected", flush=True)
    opened = False
    for line in sys.stdin:
        cmd, _, text = line.rstrip("\n").partition(" ")
        if cmd in ("send", "fin"):
            flags = (0 if opened else MSG_STREAM_NEW) | (MSG_STREAM_FIN if cmd == "fin" else 0)
            s.sendmsg([text.encode()], [stream_info_cmsg(0, flags)])
            opened = True
            print("sent", flush=True)
        elif cmd == "recv":
            print(_recv(s, 4096)[0].decode(), flush=True)
        elif cmd == "close":
            break
    s.close()
    return 0


def sink(host: str, port: str, psk: str, hold: bool = False, answer: bytes = b"k") -> int:
    s = _listen(host, port)
    c, _ = s.accept()
    server_handshake(c, psk, None, "smb", timeout=30)
    if hold:
        print("connected", flush=True)
        sys.stdin.readline()
    h = hashlib.sha256()
    total = mark = 0
    while True:
        try:
            data, fin = _recv(c, 1 << 20)
        except OSError as e:
            print(f"closed {total} {e.errno}", flush=True)
            return 0
        h.update(data)
        total += len(data)
        if total - mark >= 1 << 20:
            mark = total
            print(f"got {total}", flush=True)
        if fin:
            print(f"received {total} {h.hexdigest()}", flush=True)
            c.sendmsg([answer], [stream_info_cmsg(1, MSG_STREAM_NEW | MSG_STREAM_FIN)])  # "k": as qtest sink
            try:
                c.recv(16)  # until the source closes
            except OSError:
                pass
            return 0


def _xorshift_bytes(n: int, state: list[int]) -> bytes:
    """qtest.c's filler: xorshift64, 8 little-endian bytes per step."""
    out = bytearray()
    x = state[0]
    m = (1 << 64) - 1
    for _ in range((n + 7) // 8):
        x ^= (x << 13) & m
        x ^= x >> 7
        x ^= (x << 17) & m
        out += x.to_bytes(8, "little")
    state[0] = x
    return bytes(out[:n])


def source(host: str, port: str, psk: str) -> int:
    want = int(sys.argv[5])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, IPPROTO_QUIC)
    s.settimeout(120)
    s.connect((host, int(port)))
    client_handshake(s, psk, alpns="smb", timeout=30)
    chunk = _xorshift_bytes(65536, [0x9E3779B97F4A7C15])  # one chunk, repeated: the CPU goes to the engine
    h = hashlib.sha256()
    print("sending", flush=True)
    sent = 0
    while sent < want:
        n = min(len(chunk), want - sent)
        flags = (MSG_STREAM_NEW if sent == 0 else 0) | (MSG_STREAM_FIN if sent + n == want else 0)
        s.sendmsg([chunk[:n]], [stream_info_cmsg(0, flags)])
        h.update(chunk[:n])
        sent += n
    print(f"sent {sent} {h.hexdigest()}", flush=True)
    try:
        _recv(s, 16)
    except OSError:
        pass
    s.close()
    return 0


def accept_loop(host: str, port: str, psk: str) -> int:
    n = int(sys.argv[5])
    s = _listen(host, port)
    for _ in range(n):
        c, _ = s.accept()
        server_handshake(c, psk, None, "smb", timeout=30)
        c.settimeout(30)
        try:  # until the client's close
            while c.recv(16) is not None:
                pass
        except OSError as e:
            if e.errno != errno.ENOTCONN:
                raise
        c.close()
    print(f"accepted {n}", flush=True)
    return 0


def handshakes(host: str, port: str, psk: str) -> int:
    import time

    n = int(sys.argv[5])
    spent = 0.0
    for i in range(n):
        t0 = time.monotonic()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, IPPROTO_QUIC)
        s.connect((host, int(port)))
        client_handshake(s, psk, alpns="smb", timeout=30)
        if i > 0:  # the first one warms up (imports, the engine thread): not timed, as for qtest
            spent += time.monotonic() - t0
        s.close()  # at once: the server waits for this close
    print(f"handshakes {n - 1} in {spent:.3f} s: {(n - 1) / spent:.1f}/s", flush=True)
    return 0


def splice_sink(host: str, port: str, psk: str) -> int:
    return sink(host, port, psk, hold=True, answer=b"spliced back to you")


def flood(host: str, port: str, psk: str) -> int:
    """Send 64 KiB messages on stream 1 without blocking to a client that reads nothing, until the
    send would block (twice, 0.5 s apart) or 64 MiB went: print "held N" or "not held N"."""
    s = _listen(host, port)
    print("ready", flush=True)
    c, _ = s.accept()
    server_handshake(c, psk, None, "smb", timeout=30)
    c.setblocking(False)
    chunk, sent, limit, tries = b"f" * 65536, 0, 64 << 20, 0
    while sent < limit:
        try:
            c.sendmsg([chunk], [stream_info_cmsg(1, MSG_STREAM_NEW if sent == 0 else 0)])
            sent += len(chunk)
            tries = 0
        except OSError as e:  # EAGAIN, or ENOSPC: the stream's own flow control (quic.ko, with a cmsg)
            if e.errno not in (errno.EAGAIN, errno.ENOSPC):
                raise
            tries += 1
            if tries == 2:
                print(f"flood held {sent}", flush=True)
                return 0
            time.sleep(0.5)
    print(f"flood not-held {sent}", flush=True)
    return 0


def main() -> int:
    role, host, port, psk = sys.argv[1:5]
    return {"server": server, "client": client, "sink": sink, "source": source, "accept-loop": accept_loop,
            "handshakes": handshakes, "splice-sink": splice_sink, "flood": flood}[role](host, port, psk)


if __name__ == "__main__":
    sys.exit(main())
