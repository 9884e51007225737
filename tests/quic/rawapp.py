"""libquic's handshake loop (libquic/handshake.c, quic_handshake) in Python, for the raw-mode tests.

The application's TLS library is aioquic's ``tls.Context``, used on its own, outside any QUIC
connection, the way libquic uses GnuTLS: the socket sees only the calls libquic makes, in its order:

1. getsockopt(TOKEN): success means client, EINVAL server;
2. the QUIC transport-parameters extension: getsockopt(TRANSPORT_PARAM_EXT) when building our
   ClientHello / EncryptedExtensions, setsockopt(TRANSPORT_PARAM_EXT) with the peer's;
3. a client produces its ClientHello first; then, in a loop: send every queued message with
   sendmsg + HANDSHAKE_INFO{level} and MSG_NOSIGNAL (MSG_MORE on all but the last), stop once the
   APP receive secret is installed, else recvmsg(MSG_DONTWAIT) with a CMSG_SPACE(1) control buffer
   (EAGAIN: poll for a second and retry), and hand the bytes to TLS at the level of the cmsg;
4. each secret TLS derives goes to setsockopt(CRYPTO_SECRET) with the cipher's TLS_CIPHER_* type.

``calls`` records every socket call with its level, so tests can check the order as well.
"""

from __future__ import annotations

import errno
import select
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from aioquic import tls
from aioquic.buffer import Buffer
from aioquic.tls import CipherSuite
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from wrappers.quic import (
    MSG_MORE,
    MSG_NOSIGNAL,
    MSG_TRUNC,
    QUIC_HANDSHAKE_INFO,
    QUIC_SOCKOPT_CRYPTO_SECRET,
    QUIC_SOCKOPT_SESSION_TICKET,
    QUIC_SOCKOPT_TOKEN,
    QUIC_SOCKOPT_TRANSPORT_PARAM_EXT,
    SOL_QUIC,
    CryptoSecret,
    tlsext,
)

TP_EXT = 0x39
EPOCH_LEVEL = {tls.Epoch.INITIAL: 1, tls.Epoch.HANDSHAKE: 2, tls.Epoch.ONE_RTT: 0, tls.Epoch.ZERO_RTT: 3}
LEVEL_EPOCH = {v: k for k, v in EPOCH_LEVEL.items()}
SUITE_TYPE = {CipherSuite.AES_128_GCM_SHA256: 51, CipherSuite.AES_256_GCM_SHA384: 52,
              CipherSuite.CHACHA20_POLY1305_SHA256: 54}
MSG_DONTWAIT = 0x40


@dataclass
class App:
    """One handshake's TLS side: the context and what it produced."""

    ctx: tls.Context
    psk: bool = False
    calls: list[tuple[str, int]] = field(default_factory=list)
    tickets: list[Any] = field(default_factory=list)
    before_send: Any = None  # called with the level before each handshake sendmsg (tests slow a step down)


def client_app(*, psk: tuple[bytes, bytes] | None = None, server_name: str | None = None,
               cafile: str | None = None, ticket: Any = None,
               cipher_suites: list[CipherSuite] | None = None) -> App:
    import ssl

    if psk is not None:
        cipher_suites = [tlsext.PSK_CIPHER]  # GnuTLS binds an external PSK to SHA-256
    ctx = tls.Context(is_client=True, server_name=server_name, cafile=cafile,
                      verify_mode=ssl.CERT_REQUIRED if cafile else ssl.CERT_NONE,
                      cipher_suites=cipher_suites)
    app = App(ctx, psk=psk is not None)
    if psk is not None:
        ctx.session_ticket = tlsext.psk_ticket(psk[0], psk[1], server_name or "")
    elif ticket is not None:
        ctx.session_ticket = ticket
    ctx.new_session_ticket_cb = app.tickets.append
    return app


def server_app(*, psk: tuple[bytes, bytes] | None = None, cert_file: str | None = None,
               key_file: str | None = None, tickets: dict[bytes, Any] | None = None,
               cipher_suites: list[CipherSuite] | None = None, max_early_data: int | None = None) -> App:
    ctx = tls.Context(is_client=False, max_early_data=max_early_data, cipher_suites=cipher_suites or (
        [tlsext.PSK_CIPHER] if psk is not None else None))
    app = App(ctx, psk=psk is not None)
    if psk is not None:
        cert, key = tlsext.throwaway_certificate()  # aioquic wants one even when a PSK is used
        ctx.certificate, ctx.certificate_private_key = cert, key
        known = {psk[0]: tlsext.psk_ticket(psk[0], psk[1])}
        ctx.get_session_ticket_cb = known.get
    else:
        assert cert_file and key_file
        with open(cert_file, "rb") as f:
            ctx.certificate = x509.load_pem_x509_certificate(f.read())
        with open(key_file, "rb") as f:
            ctx.certificate_private_key = serialization.load_pem_private_key(f.read(), None)  # type: ignore[assignment]
        if tickets is not None:
            ctx.get_session_ticket_cb = tickets.get
            ctx.new_session_ticket_cb = lambda t: tickets.__setitem__(t.ticket, t)
    return app


def raw_client(mode: str, pki: dict[str, str]) -> App:
    """A client's TLS side for the test PKI: "psk" (the PSK file's first line) or "cert"."""
    if mode == "psk":
        return client_app(psk=_psk_line(pki["psk"]))
    return client_app(server_name="server.test", cafile=pki["ca"])


def raw_server(mode: str, pki: dict[str, str]) -> App:
    if mode == "psk":
        return server_app(psk=_psk_line(pki["psk"]))
    return server_app(cert_file=pki["server"], key_file=pki["server_key"])


def hs_cmsg(level: int) -> list[tuple[int, int, bytes]]:
    return [(SOL_QUIC, QUIC_HANDSHAKE_INFO, bytes([level]))]


def quic_handshake(sock: Any, app: App, timeout: float = 10.0) -> None:
    """libquic's quic_handshake(): returns when the APP receive secret is installed and nothing is
    left to send; raises OSError with the socket's errno, or the TLS alert."""
    ctx = app.ctx
    try:
        sock.getsockopt(SOL_QUIC, QUIC_SOCKOPT_TOKEN, 128)
        is_serv = False
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        is_serv = True
    app.calls.append(("role", int(is_serv)))
    sends: list[tuple[int, bytes]] = []
    done = [False]

    def secret(direction: tls.Direction, epoch: tls.Epoch, suite: CipherSuite, key: bytes) -> None:
        send = int(direction == tls.Direction.ENCRYPT)
        cs = CryptoSecret(send, EPOCH_LEVEL[epoch], SUITE_TYPE[suite], bytes(key).ljust(48, b"\0"))
        sock.setsockopt(SOL_QUIC, QUIC_SOCKOPT_CRYPTO_SECRET, cs.pack())
        app.calls.append(("secret_tx" if send else "secret_rx", EPOCH_LEVEL[epoch]))
        if not send and epoch == tls.Epoch.ONE_RTT:
            done[0] = True

    def tp_recv(_alpn: str | None) -> None:
        for typ, data in ctx.received_extensions:
            if typ == TP_EXT:
                sock.setsockopt(SOL_QUIC, QUIC_SOCKOPT_TRANSPORT_PARAM_EXT, data)
                app.calls.append(("tp_set", len(data)))
        if is_serv:
            tp_send()

    def tp_send() -> None:
        data = sock.getsockopt(SOL_QUIC, QUIC_SOCKOPT_TRANSPORT_PARAM_EXT, 256)  # libquic's buffer
        app.calls.append(("tp_get", len(data)))
        ctx.handshake_extensions = [(TP_EXT, data)]

    ctx.update_traffic_key_cb = secret
    ctx.alpn_cb = tp_recv

    def process(data: bytes) -> None:
        bufs = {e: Buffer(capacity=16384) for e in (tls.Epoch.INITIAL, tls.Epoch.HANDSHAKE, tls.Epoch.ONE_RTT)}
        with tlsext.external_psk(app.psk):
            ctx.handle_message(data, bufs)
        for epoch in (tls.Epoch.INITIAL, tls.Epoch.HANDSHAKE, tls.Epoch.ONE_RTT):
            if bufs[epoch].data:
                sends.append((EPOCH_LEVEL[epoch], bufs[epoch].data))

    if not is_serv:
        tp_send()
        process(b"")
    deadline = time.monotonic() + timeout
    while True:
        while sends:
            level, data = sends.pop(0)
            flags = MSG_NOSIGNAL | (MSG_MORE if sends else 0)
            if app.before_send is not None:
                app.before_send(level)
            n = sock.sendmsg([data], hs_cmsg(level), flags)
            if n != len(data):
                raise OSError(errno.EMSGSIZE, "short handshake send")
            app.calls.append(("send", level))
        if done[0]:
            return
        try:
            data, anc, mflags, _ = sock.recvmsg(65536, socket.CMSG_SPACE(1), MSG_DONTWAIT)
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise OSError(errno.ETIMEDOUT, "raw handshake timed out") from None
            select.select([sock], [], [], 1.0)
            continue
        if not data:
            raise OSError(errno.ECONNRESET, "recvmsg returned 0 during the handshake")
        if mflags & MSG_TRUNC:
            raise OSError(errno.EMSGSIZE, "truncated handshake message")
        levels = [c[2][0] for c in anc if c[0] == SOL_QUIC and c[1] == QUIC_HANDSHAKE_INFO]
        if not levels:
            raise OSError(errno.EBADMSG, "an item without HANDSHAKE_INFO during the handshake")
        app.calls.append(("recv", levels[0]))
        process(data)


def session_get_data(sock: Any, app: App) -> Any:
    """libquic's quic_session_get_data: the NewSessionTicket the socket kept, fed to TLS at APP
    level, gives the session to resume (aioquic's SessionTicket); None when none arrived."""
    nst = sock.getsockopt(SOL_QUIC, QUIC_SOCKOPT_SESSION_TICKET, 4096)
    if not nst:
        return None
    bufs = {e: Buffer(capacity=4096) for e in (tls.Epoch.INITIAL, tls.Epoch.HANDSHAKE, tls.Epoch.ONE_RTT)}
    app.ctx.handle_message(nst, bufs)
    return app.tickets[-1] if app.tickets else None


def _psk_line(path: str) -> tuple[bytes, bytes]:
    ident, _, key = open(path, encoding="ascii").read().split("\n")[0].partition(":")
    return ident.encode(), bytes.fromhex(key)


def main(argv: list[str]) -> int:
    """A raw-handshake peer for cross-process tests, run under `wirecheck exec` (the command line of
    harness/peers/quic_echo.py, which runs the engine's TLS instead):

        rawapp.py server HOST PORT PSKFILE     -> prints "ready", echoes one stream upper-cased
        rawapp.py client HOST PORT PSKFILE MSG -> prints the reply
    """
    from wrappers.quic import IPPROTO_QUIC, MSG_STREAM_FIN, MSG_STREAM_NEW, quic_recvmsg, quic_sendmsg

    role, host, port, psk = argv[:4]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, IPPROTO_QUIC)
    s.settimeout(20)
    if role == "server":
        s.bind((host, int(port)))
        s.listen(1)
        print("ready", flush=True)
        c, _ = s.accept()
        quic_handshake(c, server_app(psk=_psk_line(psk)), timeout=20)
        data, sid, _ = quic_recvmsg(c, 1000)
        quic_sendmsg(c, data.upper(), sid, MSG_STREAM_FIN)
        c.settimeout(5)
        try:
            c.recv(10)  # until the client closes
        except OSError:
            pass
        c.close()
    else:
        s.connect((host, int(port)))
        quic_handshake(s, client_app(psk=_psk_line(psk)), timeout=20)
        quic_sendmsg(s, argv[4].encode(), -1, MSG_STREAM_NEW | MSG_STREAM_FIN)
        print(quic_recvmsg(s, 1000)[0].decode(), flush=True)
    s.close()
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
