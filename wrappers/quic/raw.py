"""quic.ko's raw handshake interface on a QuicSocket: the application's TLS library does the handshake.

This is what libquic (``quic_handshake``, GnuTLS inside) drives on a quic.ko socket, and what a
native program under the preload library reaches through the engine. The socket never parses TLS;
it carries CRYPTO bytes per encryption level, installs the keys the application derived, and
exchanges the QUIC transport-parameters extension (RFC 9001 4, 8.2). The Python
``client_handshake``/``server_handshake`` stay: they run TLS inside the engine instead. One socket
uses one of the two ways; whichever starts first owns the connection.

Calls (the order libquic makes them, handshake.c):

* getsockopt(TOKEN): a client gets its token (maybe empty), a server EINVAL (libquic's role test).
* getsockopt(TRANSPORT_PARAM_EXT): our transport parameters, the body of TLS extension 0x39 for
  the ClientHello or EncryptedExtensions. setsockopt(TRANSPORT_PARAM_EXT, peer's body): parsed and
  checked; a bad one closes the connection with TRANSPORT_PARAMETER_ERROR and gives EINVAL
  (VERSION_NEGOTIATION_ERROR and EPROTONOSUPPORT for a bad version_information).
* sendmsg(data, [HANDSHAKE_INFO{level}], MSG_NOSIGNAL[|MSG_MORE]): CRYPTO frames at that level.
  MSG_MORE holds every packet of the connection back until a handshake send without it, so one
  flight goes out in as few datagrams as possible.
* recvmsg(..., CMSG_SPACE(1)): the peer's CRYPTO bytes of one level with a HANDSHAKE_INFO cmsg,
  ahead of everything else in the receive queue; MSG_EOR when read whole; MSG_CTRUNC and no cmsg
  without room for it. APP-level CRYPTO bytes are not queued: a client keeps the first complete
  NewSessionTicket as getsockopt(SESSION_TICKET) and the NEW_SESSION_TICKET event.
* setsockopt(CRYPTO_SECRET{send, level, type, secret}): one direction's traffic secret for
  HANDSHAKE, APP or EARLY, with the cipher of ``type`` (TLS_CIPHER_AES_GCM_128/_256,
  CHACHA20_POLY1305; the secret is the first 32 or 48 bytes, by the cipher's hash). Packets that
  arrived before their key are processed when it is installed.

From Python (and from a process hosting sockets for native programs) the calls take and give the C
bytes: ``sock.sendmsg([data], [(SOL_QUIC, QUIC_HANDSHAKE_INFO, bytes([level]))], flags)``;
``data, anc, msg_flags, _ = sock.recvmsg(n, socket.CMSG_SPACE(1), flags)`` with ``anc ==
[(SOL_QUIC, QUIC_HANDSHAKE_INFO, bytes([level]))]``; ``sock.setsockopt(SOL_QUIC,
QUIC_SOCKOPT_CRYPTO_SECRET, CryptoSecret(...).pack())``; ``sock.getsockopt(SOL_QUIC,
QUIC_SOCKOPT_TRANSPORT_PARAM_EXT, buflen)`` -> bytes; ``sock.set_raw_handshake()`` on a listener.

Raw mode starts with the first of these calls on a connected or accepted socket whose handshake has
not started, with the first recvmsg on an accepted socket, or at accept() on a listener where
``enable`` was called (so poll sees the ClientHello before any recvmsg). States and transitions
(errnos are quic.ko's; "engine TLS" means client_handshake/server_handshake started first):

| state | event | result / next state |
|---|---|---|
| CLOSED (not connected, listening) | CRYPTO_SECRET, TRANSPORT_PARAM_EXT get/set | EINVAL |
| CLOSED | sendmsg HANDSHAKE_INFO | EPIPE |
| ESTABLISHING, not started | any raw call above, or recvmsg on an accepted socket | RAW (Initial keys exist) |
| ESTABLISHING, engine TLS | any raw call | EINVAL |
| RAW | sendmsg HANDSHAKE_INFO level >= EARLY, or a level without a send key | EINVAL |
| RAW | sendmsg HANDSHAKE_INFO with 0 bytes | EMSGSIZE |
| RAW | CRYPTO_SECRET level INITIAL or > EARLY | EINVAL |
| RAW | CRYPTO_SECRET with an unknown cipher | EINVAL; AES_CCM_128: EOPNOTSUPP (not in the engine) |
| RAW | CRYPTO_SECRET EARLY send on a server / EARLY receive on a client | EINVAL |
| RAW | TRANSPORT_PARAM_EXT get with a buffer too small / set > 512 bytes | EINVAL |
| RAW | TRANSPORT_PARAM_EXT set that does not parse or validate | EINVAL (version: EPROTONOSUPPORT), CLOSED |
| RAW | CRYPTO_SECRET installs the second APP key | ESTABLISHED (server: HANDSHAKE_DONE, NEW_TOKEN) |
| ESTABLISHED | CRYPTO_SECRET, TRANSPORT_PARAM_EXT | EINVAL |
| ESTABLISHED | sendmsg HANDSHAKE_INFO at a level with a send key | sent (client Finished, server NewSessionTicket) |
| any | the connection closed while buffered packets were processed by CRYPTO_SECRET | EPIPE |

0-RTT: a client's stream data sent before its handshake (after TRANSPORT_PARAM remote=1) leaves in
0-RTT packets behind its ClientHello once the EARLY send key is in; a server's 0-RTT stream data
becomes readable when the socket is ESTABLISHED (quic.ko: when the APP receive key is installed,
which on a server is the last key). Not emulated: AES-128-CCM (aioquic has no CCM suite).

Version Negotiation: the client's engine starts over in a version both know and sends the
application's ClientHello again, unchanged. Its transport parameters still name the first version
(version_information, RFC 9368), so a peer that checks them (the engine does, in raw mode and not)
refuses the handshake with VERSION_NEGOTIATION_ERROR; its setsockopt(TRANSPORT_PARAM_EXT) gives
EPROTONOSUPPORT.
"""

from __future__ import annotations

import errno
import time
from typing import TYPE_CHECKING, Any

from aioquic import tls
from aioquic.tls import CipherSuite

from . import constants as C
from . import tlsext, uapi
from .aio import RawQuicConnection
from .configuration import path_datagram_size, quic_configuration
from .core import K_HS, MAX_ITEM, Connection, err, item

if TYPE_CHECKING:
    from .sockparts import QuicSocketParts as QuicSocket

LEVEL_EPOCH = {C.QUIC_CRYPTO_APP: tls.Epoch.ONE_RTT, C.QUIC_CRYPTO_INITIAL: tls.Epoch.INITIAL,
               C.QUIC_CRYPTO_HANDSHAKE: tls.Epoch.HANDSHAKE, C.QUIC_CRYPTO_EARLY: tls.Epoch.ZERO_RTT}
EPOCH_LEVEL = {e: lv for lv, e in LEVEL_EPOCH.items()}
CIPHERS = {C.TLS_CIPHER_AES_GCM_128: (CipherSuite.AES_128_GCM_SHA256, 32),
           C.TLS_CIPHER_AES_GCM_256: (CipherSuite.AES_256_GCM_SHA384, 48),
           C.TLS_CIPHER_CHACHA20_POLY1305: (CipherSuite.CHACHA20_POLY1305_SHA256, 32)}
TP_EXT_MAX = 512
NEW_SESSION_TICKET = 4  # TLS HandshakeType (RFC 8446 4)
MAX_APP_MESSAGE = 65536


class CryptoSink:
    """Where a raw connection's received CRYPTO bytes go: the socket's receive queue (Initial and
    Handshake), or, at APP level on a client, whole NewSessionTicket messages kept as the ticket."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.app = b""

    def __call__(self, epoch: tls.Epoch, data: bytes) -> None:
        level = EPOCH_LEVEL[epoch]
        c = self.conn
        if level != C.QUIC_CRYPTO_APP:
            for off in range(0, len(data), MAX_ITEM):
                c.items.append(item(K_HS, 0, level, data[off:off + MAX_ITEM]))
            return
        if not c.is_client:
            return
        self.app += data
        while len(self.app) >= 4:
            n = 4 + int.from_bytes(self.app[1:4], "big")
            if n > MAX_APP_MESSAGE:  # no ticket is that long (quic.ko keeps at most 4096 bytes)
                self.app = b""
                break
            if len(self.app) < n:
                break
            msg, self.app = self.app[:n], self.app[n:]
            if msg[0] == NEW_SESSION_TICKET:
                c._on_ticket(msg)


def enable(sock: QuicSocket) -> None:
    """Opt a socket into raw mode: a listener's accepted sockets start raw at accept(); an accepted
    socket starts now (its ClientHello becomes readable); a client starts at its first raw call."""
    sock._opts.raw = True
    c = sock._conn
    if c is not None and not c.is_client and c.quic is None and not c.closed:
        with sock._engine.lock:
            start(sock)


def is_raw(sock: QuicSocket) -> bool:
    c = sock._conn
    return c is not None and isinstance(c.quic, RawQuicConnection)


def start(sock: QuicSocket) -> RawQuicConnection:
    """The connection's raw engine, started on first use (caller holds the engine lock)."""
    link = sock._link
    c = sock._conn
    if link is None or c is None or c.closed:
        raise err(errno.EINVAL, "not connected")
    if c.quic is not None:
        if isinstance(c.quic, RawQuicConnection):
            return c.quic
        raise err(errno.EINVAL, "the engine runs TLS for this socket (client_handshake/server_handshake)")
    cfg = quic_configuration(sock, c.is_client, None)
    if not c.is_client:  # aioquic's server refuses to start without one; the application's TLS has its own
        cfg.certificate, cfg.private_key = tlsext.throwaway_certificate()
    sink = CryptoSink(c)
    saved = sock._remote_tp if c.is_client else None

    def make(**kwargs: Any) -> RawQuicConnection:
        q = RawQuicConnection(on_crypto=sink, **kwargs)
        if saved is not None:
            q.raw_remote_limits(saved)
        return q

    c.quic_class = make
    c.path_datagram = path_datagram_size(sock._carrier, sock._qfamily)
    c.start(cfg, time.monotonic(), psk=False, odcid=None if c.is_client else link.odcid)
    sock._engine.flush(link)
    sock._engine.kick()
    assert isinstance(c.quic, RawQuicConnection)
    return c.quic


def _raw_conn(sock: QuicSocket) -> tuple[Connection, RawQuicConnection]:
    q = start(sock)
    c = sock._conn
    assert c is not None
    return c, q


def send_handshake(sock: QuicSocket, level: int, data: bytes, flags: int) -> int:
    """sendmsg with a HANDSHAKE_INFO cmsg: CRYPTO frames at ``level`` (quic.ko's handshake path: the bytes go out as they are, framed at that level)."""
    if level >= C.QUIC_CRYPTO_EARLY:
        raise err(errno.EINVAL, f"no CRYPTO frames at crypto level {level}")
    eng = sock._engine
    with eng.lock:
        c, q = _raw_conn(sock)
        epoch = LEVEL_EPOCH[level]
        if not q.raw_can_send(epoch):
            raise err(errno.EINVAL, f"no send key at crypto level {level}")
        if not data:
            raise err(errno.EMSGSIZE, "zero-length handshake message")
        q.raw_send_crypto(epoch, data)
        q.raw_corked = bool(flags & C.MSG_MORE)
        if not q.raw_corked:
            assert sock._link is not None
            eng.flush(sock._link)
    return len(data)


def set_crypto_secret(sock: QuicSocket, v: bytes) -> None:
    cs = uapi.CryptoSecret.unpack(v)
    if sock.quic_state != C.ESTABLISHING or cs.level == C.QUIC_CRYPTO_INITIAL or cs.level > C.QUIC_CRYPTO_EARLY:
        raise err(errno.EINVAL, "CRYPTO_SECRET outside ESTABLISHING or at a bad level")
    if cs.type == C.TLS_CIPHER_AES_CCM_128:
        raise err(errno.EOPNOTSUPP, "TLS_CIPHER_AES_CCM_128 is not supported by the engine (aioquic)")
    if cs.type not in CIPHERS:
        raise err(errno.EINVAL, f"unknown cipher type {cs.type}")
    suite, n = CIPHERS[cs.type]
    direction = tls.Direction.ENCRYPT if cs.send else tls.Direction.DECRYPT
    eng = sock._engine
    with eng.lock:
        c, q = _raw_conn(sock)
        if cs.level == C.QUIC_CRYPTO_EARLY and bool(cs.send) != c.is_client:
            raise err(errno.EINVAL, "only a client sends 0-RTT and only a server receives it")
        now = time.monotonic()
        q.raw_install(direction, LEVEL_EPOCH[cs.level], suite, bytes(cs.secret[:n]), now)
        c._pump(now)
        assert sock._link is not None
        eng.flush(sock._link)
        if c.closed:
            raise err(errno.EPIPE, f"the connection closed: {c.handshake_error or 'peer close'}")
    if c.handshake_done:
        sock._established(c)


def get_transport_param_ext(sock: QuicSocket, optlen: int) -> bytes:
    if sock.quic_state != C.ESTABLISHING:
        raise err(errno.EINVAL, "TRANSPORT_PARAM_EXT outside ESTABLISHING")
    with sock._engine.lock:
        _, q = _raw_conn(sock)
        data = q.raw_local_tp()
    if optlen < len(data):
        raise err(errno.EINVAL, f"buffer too small for {len(data)} bytes of transport parameters")
    return data


def set_transport_param_ext(sock: QuicSocket, v: bytes) -> None:
    if sock.quic_state != C.ESTABLISHING or len(v) > TP_EXT_MAX:
        raise err(errno.EINVAL, "TRANSPORT_PARAM_EXT outside ESTABLISHING or too long")
    eng = sock._engine
    with eng.lock:
        c, q = _raw_conn(sock)
        e = q.raw_peer_tp(bytes(v))
        if e is not None:
            c._pump(time.monotonic())
            assert sock._link is not None
            eng.flush(sock._link)
            code = errno.EPROTONOSUPPORT if q.is_version_error(e) else errno.EINVAL
            raise err(code, f"peer transport parameters: {e.reason_phrase}")
