"""A TCP relay: it listens on the emulated network and forwards each connection to a real loopback port.

Why: smbd cannot run under cwrap (Samba sets SO_REUSEPORT, which libsocket_wrapper 1.3.5 refuses), so
it serves on real loopback, where nothing records its traffic.  Clients on the emulated network talk
to this relay instead; the wrapper records the client side of every connection (the bytes smbd sent
and received, unchanged) into the relay's pcap, on whatever port the relay listens on.  It is started
as a plain process (no `wirecheck exec`, no LD_PRELOAD) and wraps only its listener, in-process, so its
upstream sockets stay real.

    python tcp_relay.py SOCKET_DIR IFACE PCAP LISTEN_HOST LISTEN_PORT TARGET_PORT   (prints "ready")
"""

from __future__ import annotations

import _socket  # the C socket type: the wrapper replaces socket.socket, not this
import socket
import sys
import threading

import wrappers


def _pump(src, dst) -> None:
    try:
        while data := src.recv(1 << 16):
            dst.sendall(data)
    except OSError:
        pass  # the other direction closed both ends: nothing left to forward
    finally:
        for s in (dst, src):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already shut down by the other pump


def main() -> None:
    sockdir, iface, pcap, host = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    port, target = int(sys.argv[5]), int(sys.argv[6])
    wrappers.activate(sockdir, iface=iface, pcap=pcap)
    listener = socket.create_server((host, port))  # emulated and recorded
    print("ready", flush=True)
    while True:
        client, _ = listener.accept()
        upstream = _socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # real loopback, not emulated
        upstream.settimeout(30)
        try:
            upstream.connect(("127.0.0.1", target))
        except OSError as e:
            print(f"relay: cannot reach 127.0.0.1:{target}: {e}", file=sys.stderr, flush=True)
            client.close()
            upstream.close()
            continue
        upstream.settimeout(None)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pump, args=(a, b), daemon=True).start()


if __name__ == "__main__":
    main()
