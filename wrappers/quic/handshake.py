"""client_handshake / server_handshake: libquic's quic_client_handshake / quic_server_handshake.

With quic.ko the TLS library runs in the application and feeds handshake bytes and secrets to the
socket. Here TLS 1.3 runs inside the engine (aioquic), so these calls hand the TLS settings to the
engine and block until the handshake completes (or the timeout passes: ETIMEDOUT; a TLS or transport
failure: ECONNREFUSED with the reason). Two modes, as in libquic:

* certificate: the server presents ``cert_file``/``pkey_file``; the client verifies it only when given
  a CA (``cafile``/``cadata``, libquic asks GnuTLS for no verification), sends ``hostname`` as SNI and
  may present its own certificate when the server asks (``require_client_cert``);
* external PSK: ``psk_file`` (GnuTLS ``identity:hexkey`` lines; the client uses the first) or
  ``psk=(identity, key)``. See tlsext.py for how aioquic is taught external PSK.

The socket's options become the QUIC configuration: TRANSPORT_PARAM (idle timeout, stream and data
limits, datagrams), ALPN (when ``alpns`` is not given), TOKEN, CONFIG (keepalive, run by the engine).

Resumption and 0-RTT, with libquic's session calls (as lxin/quic's ticket_test.c runs them):

* a server issues one ticket per connection, under its SESSION_TICKET master key (the option's value
  on the accepted socket: set, or derived from the listener and the client's IP); it resumes only
  tickets issued under that key (tlsext.TicketStore). ``early_data=False`` declines 0-RTT;
* a client reads the NewSessionTicket (event, getsockopt SESSION_TICKET) and ``session_get_data``
  gives the session data (the ticket with its resumption secret); ``client_handshake(...,
  session_data=...)`` resumes: no Certificate, and stream data sent before the handshake (allowed
  once the saved remote TRANSPORT_PARAM is set) goes out in 0-RTT when the server accepts it, else
  again in 1-RTT. A ticket the server does not know gives a full handshake with a certificate; in PSK
  mode the server then refuses the handshake (ECONNREFUSED), since a PSK server has no certificate.
"""

from __future__ import annotations

import errno
import os
import ssl
from typing import Any, cast

from aioquic.quic.configuration import QuicConfiguration
from aioquic.tls import CipherSuite

from . import tlsext
from .configuration import quic_configuration
from .core import err
from .sock import QuicSocket

DEFAULT_TIMEOUT = 30.0
def _psk_from(psk_file: str | os.PathLike[str] | None, psk: tuple[bytes, bytes] | None) -> list[tuple[bytes, bytes]]:
    if psk is not None:
        ident, key = psk
        return [(ident.encode() if isinstance(ident, str) else bytes(ident), bytes(key))]
    if psk_file is not None:
        return tlsext.read_psk_file(psk_file)
    return []


PSK_SUITES = [tlsext.PSK_CIPHER, CipherSuite.AES_256_GCM_SHA384, CipherSuite.CHACHA20_POLY1305_SHA256]


def _verify(cfg: QuicConfiguration, cafile: str | None, cadata: bytes | None) -> None:
    """Verify the server against a CA when given one (libquic asks GnuTLS for no verification)."""
    if not (cafile or cadata):
        cfg.verify_mode = ssl.CERT_NONE
        return
    cfg.verify_mode = ssl.CERT_REQUIRED
    if cafile:
        cfg.load_verify_locations(cafile=cafile)
    if cadata:
        cfg.load_verify_locations(cadata=cadata)


def session_get_data(sock: QuicSocket) -> bytes:
    """libquic's quic_session_get_data: a client's session data for a later resumption (EAGAIN when
    no NewSessionTicket has arrived yet, EINVAL on a server)."""
    if not isinstance(sock, QuicSocket):
        raise err(errno.ENOTSOCK, "not a QUIC socket")
    if sock._is_client is False:
        raise err(errno.EINVAL, "session data is a client's")
    c = sock._conn
    if c is None or c.session is None:
        raise err(errno.EAGAIN, "no session ticket received yet")
    return tlsext.encode_session(c.session)


def client_handshake(sock: QuicSocket, psk_file: str | os.PathLike[str] | None = None, hostname: str | None = None,
                     alpns: str | list[str] | None = None, *, psk: tuple[bytes, bytes] | None = None,
                     cafile: str | None = None, cadata: bytes | None = None, certfile: str | None = None,
                     keyfile: str | None = None, timeout: float | None = DEFAULT_TIMEOUT,
                     session_data: bytes | None = None) -> None:
    if not isinstance(sock, QuicSocket):
        raise err(errno.ENOTSOCK, "not a QUIC socket")
    cfg = quic_configuration(sock, True, alpns)
    cfg.server_name = hostname
    psks = _psk_from(psk_file, psk)
    ticket = None
    if session_data is not None:
        try:
            ticket = tlsext.decode_session(session_data)
        except ValueError as e:
            raise err(errno.EINVAL, str(e)) from e
        # aioquic offers a ticket only for the server name it was issued for
        cfg.server_name = hostname if hostname is not None else ticket.server_name
    if ticket is not None:
        cfg.session_ticket = ticket
        if psks:
            cfg.cipher_suites = PSK_SUITES
        sock._require_resumption = bool(psks)  # a PSK client never accepts a certificate handshake
        _verify(cfg, cafile, cadata)
        psks = []
    elif psks:
        ident, key = psks[0]
        # aioquic offers a ticket only when its server_name equals the configuration's
        cfg.session_ticket = tlsext.psk_ticket(ident, key, cast(str, hostname))
        cfg.cipher_suites = PSK_SUITES
        cfg.verify_mode = ssl.CERT_NONE
    else:
        _verify(cfg, cafile, cadata)
    if certfile:
        cfg.load_cert_chain(certfile, keyfile)
    sock._handshake(cfg, bool(psks), timeout)


def server_handshake(sock: QuicSocket, pkey_file: str | os.PathLike[str] | None = None,
                     cert_file: str | os.PathLike[str] | None = None, alpns: str | list[str] | None = None, *,
                     psk: tuple[bytes, bytes] | None = None, cafile: str | None = None,
                     require_client_cert: bool = False, timeout: float | None = DEFAULT_TIMEOUT,
                     early_data: bool = True) -> None:
    """``cert_file`` None means PSK mode with ``pkey_file`` a PSK file (libquic's convention).
    ``early_data=False`` declines a resuming client's 0-RTT data (it comes again in 1-RTT)."""
    if not isinstance(sock, QuicSocket):
        raise err(errno.ENOTSOCK, "not a QUIC socket")
    if sock.quic_state == 10:
        raise err(errno.EINVAL, "handshake on a listening socket")
    cfg = quic_configuration(sock, False, alpns)
    fetcher: Any = None
    psks = _psk_from(pkey_file if cert_file is None else None, psk)
    ticket_key = sock._ticket_key()
    tickets = {ident: tlsext.psk_ticket(ident, key) for ident, key in psks}
    fetcher = tlsext.psk_aware_fetcher(tickets, ticket_key)
    if psks:
        cfg.cipher_suites = PSK_SUITES
        cert, key = tlsext.throwaway_certificate()
        cfg.certificate, cfg.private_key = cert, key
    elif cert_file is not None:
        cfg.load_cert_chain(cert_file, pkey_file)
    else:
        raise err(errno.EINVAL, "need a certificate or a PSK")
    if cafile:
        cfg.load_verify_locations(cafile=cafile)
        cfg.verify_mode = ssl.CERT_REQUIRED
    sock._request_client_cert = require_client_cert or sock._opts.cfg.certificate_request > 0
    sock._handshake(cfg, bool(psks), timeout, fetcher, ticket_key=ticket_key, early_data=early_data)
