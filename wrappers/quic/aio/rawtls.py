"""Raw handshake mode on aioquic: the application's TLS library runs the handshake, not aioquic.

With quic.ko a program linked with libquic runs TLS 1.3 itself (GnuTLS) and uses the socket only as a
carrier: CRYPTO bytes per encryption level go through sendmsg/recvmsg with a HANDSHAKE_INFO cmsg,
traffic secrets come in through setsockopt(CRYPTO_SECRET), and the QUIC transport-parameters TLS
extension through TRANSPORT_PARAM_EXT. aioquic, our engine, always runs TLS inside its connection
(``QuicConnection.tls``, an ``aioquic.tls.Context``). It talks to that context through a narrow
surface, which is what makes the raw mode possible without touching aioquic:

* ``tls.handle_message(data, buffers)``: in-order CRYPTO bytes of the epoch being processed (and
  ``b""`` once at connect). ``RawTls`` hands them to the socket's receive queue instead
  (``on_crypto``); the epoch comes from the CRYPTO frame's packet (``_handle_crypto_frame``).
* ``tls.update_traffic_key_cb`` -> ``QuicConnection._update_traffic_key``: we call it ourselves with
  the secret from CRYPTO_SECRET (``raw_install``), so key derivation, version handling and the key log
  stay aioquic's.
* ``tls.alpn_cb`` -> ``QuicConnection._alpn_handler``: the place where aioquic parses the peer's
  transport parameters and a server picks a compatible version (RFC 9368). ``raw_peer_tp`` calls it
  with the blob from setsockopt(TRANSPORT_PARAM_EXT).
* the handshake-complete block of ``_handle_crypto_frame``: replayed by ``_raw_complete`` when both
  1-RTT keys are installed (quic.ko's ESTABLISHED).
* the attributes aioquic reads (``state``, ``received_extensions``, ``legacy_session_id``,
  ``alpn_negotiated``, ``early_data_accepted``, ``session_resumed``, ``client_random``).

Two quic.ko behaviours aioquic lacks are added here:

* quic.ko buffers packets that arrive before their receive key and processes them when the key is
  installed; aioquic drops them (the peer's loss recovery would resend them a PTO later).
  ``_buffer_undecryptable`` keeps them (at most ``MAX_PENDING`` packets) and ``raw_install`` replays
  them.
* The key log needs the ClientHello random, which aioquic takes from its own TLS context; here it
  is read from the first Initial CRYPTO bytes (sent by a client, received by a server). Secrets
  installed before that are logged once it is known.

Every access to aioquic's private attributes made for the raw mode is in this module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aioquic import tls
from aioquic.quic import events
from aioquic.quic.connection import SECRETS_LABELS, QuicConnectionError
from aioquic.quic.crypto import KeyUnavailableError
from aioquic.quic.packet import QuicErrorCode, QuicFrameType

from .connection import KoQuicConnection

MAX_PENDING = 64  # undecryptable packets kept per connection until their key arrives
HELD_EVENTS = (events.StreamDataReceived, events.StreamReset, events.DatagramFrameReceived)


def client_random_of(hello: bytes) -> bytes | None:
    """The 32-byte random of a ClientHello (RFC 8446 4.1.2: type 1, length 3, version 2, random)."""
    if len(hello) >= 38 and hello[0] == 1:
        return bytes(hello[6:38])
    return None


class RawTls:
    """Stands in for ``aioquic.tls.Context`` when the application runs TLS (see the module docstring)."""

    def __init__(self, is_client: bool, on_crypto: Callable[[tls.Epoch, bytes], None]):
        self.is_client = is_client
        self.on_crypto = on_crypto
        self.epoch = tls.Epoch.INITIAL  # of the CRYPTO frame being handled
        self.state = None  # never one of aioquic's client/server states: aioquic's own checks stay off
        self.legacy_session_id = b""
        self.received_extensions: list[tuple[int, bytes]] = []
        self.handshake_extensions: list[tuple[int, bytes]] = []
        self.alpn_negotiated: str | None = None
        self.early_data_accepted = False
        self.session_resumed = False
        self.client_random: bytes | None = None

    def handle_message(self, input_data: bytes, output_buf: dict[Any, Any]) -> None:
        if not input_data:
            return  # aioquic's client "start": the application sends its own ClientHello
        data = bytes(input_data)
        if self.epoch == tls.Epoch.INITIAL and not self.is_client and self.client_random is None:
            self.client_random = client_random_of(data)
        self.on_crypto(self.epoch, data)


class RawQuicConnection(KoQuicConnection):
    """A ``KoQuicConnection`` whose TLS is the application's (quic.ko's raw handshake interface)."""

    def __init__(self, *args: Any, on_crypto: Callable[[tls.Epoch, bytes], None], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._raw_on_crypto = on_crypto
        self._raw_pending: list[tuple[tls.Epoch, bytes, Any]] = []
        self._raw_unlogged: list[tuple[tls.Direction, tls.Epoch, bytes]] = []
        self._raw_addr: Any = None

    # -- aioquic hooks -------------------------------------------------------------------------------
    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        self.tls = RawTls(self._is_client, self._raw_on_crypto)  # type: ignore[assignment]
        for epoch in (tls.Epoch.ZERO_RTT, tls.Epoch.HANDSHAKE, tls.Epoch.ONE_RTT):
            self._buffer_undecryptable(epoch)

    def _buffer_undecryptable(self, epoch: tls.Epoch) -> None:
        pair = self._cryptos[epoch]
        decrypt = pair.decrypt_packet

        def keep(packet: bytes, encrypted_offset: int, expected_packet_number: int) -> Any:
            try:
                return decrypt(packet, encrypted_offset, expected_packet_number)
            except KeyUnavailableError:
                space = self._spaces[tls.Epoch.ONE_RTT if epoch == tls.Epoch.ZERO_RTT else epoch]
                if len(self._raw_pending) < MAX_PENDING and not space.discarded:
                    self._raw_pending.append((epoch, bytes(packet), self._raw_addr))
                raise

        pair.decrypt_packet = keep  # type: ignore[method-assign]

    _raw_initial_sent = b""  # client: the Initial-level CRYPTO bytes handed over so far

    def _connect(self, now: float) -> None:
        """aioquic starts over after a Version Negotiation (and a Retry): new Initial keys and empty
        CRYPTO streams. Its own TLS would write a new ClientHello; here the application's ClientHello
        is sent again, as quic.ko does (the application is not told)."""
        old = self.tls if isinstance(getattr(self, "tls", None), RawTls) else None
        super()._connect(now)
        if old is not None:
            self.tls.client_random = old.client_random
            if self._raw_initial_sent:
                self._crypto_streams[tls.Epoch.INITIAL].sender.write(self._raw_initial_sent)

    def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
        self._raw_addr = addr
        super().receive_datagram(data, addr, now)

    def _handle_crypto_frame(self, context: Any, frame_type: int, buf: Any) -> None:
        self.tls.epoch = context.epoch  # type: ignore[attr-defined]
        super()._handle_crypto_frame(context, frame_type, buf)

    def _update_traffic_key(self, direction: Any, epoch: Any, cipher_suite: Any, secret: bytes) -> None:
        if self.tls.client_random is not None:
            super()._update_traffic_key(direction, epoch, cipher_suite, secret)
            return
        log = self._configuration.secrets_log_file
        self._configuration.secrets_log_file = None
        try:
            super()._update_traffic_key(direction, epoch, cipher_suite, secret)
        finally:
            self._configuration.secrets_log_file = log
        if log is not None:
            self._raw_unlogged.append((direction, epoch, bytes(secret)))

    def _log_pending_secrets(self) -> None:
        log = self._configuration.secrets_log_file
        rnd = self.tls.client_random
        if log is None or rnd is None:
            return
        for direction, epoch, secret in self._raw_unlogged:
            label = SECRETS_LABELS[self._is_client == (direction == tls.Direction.DECRYPT)][epoch.value]
            if label:
                log.write(f"{label} {rnd.hex()} {secret.hex()}\n")
        log.flush()
        self._raw_unlogged.clear()

    # -- the socket's raw operations (engine lock held) -------------------------------------------------
    def raw_can_send(self, epoch: tls.Epoch) -> bool:
        return epoch in self._crypto_streams and self._cryptos[epoch].send.is_valid() \
            and not self._spaces[epoch].discarded

    _raw_hello_sent = False
    raw_replayed = 0  # packets processed after their receive key arrived
    raw_corked = False  # a handshake sendmsg with MSG_MORE: the flight waits for the rest (raw.py)

    def get_timer(self) -> float | None:
        # quic.ko's connect() sends nothing; aioquic's client arms its probe timer from time 0 and
        # would send a PING-only Initial before the application's ClientHello. Until the client's
        # first CRYPTO bytes are handed over only the idle timer runs.
        if self._is_client and not self._raw_hello_sent or self.raw_corked:
            return self._close_at
        return super().get_timer()

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        # a client's 0-RTT key can be installed before its ClientHello is handed over: nothing may
        # leave before the Initial that carries it. While corked (MSG_MORE) nothing leaves either.
        if self._is_client and not self._raw_hello_sent or self.raw_corked:
            return []
        return super().datagrams_to_send(now)

    def close(self, *args: Any, **kwargs: Any) -> None:
        self.raw_corked = False  # the CONNECTION_CLOSE must not wait for the rest of a flight
        super().close(*args, **kwargs)

    _raw_held: list[Any] | None = None
    _raw_released = False

    def next_event(self) -> Any:
        """quic.ko keeps stream data that arrives before the handshake completes (0-RTT) out of the
        receive queue until the socket is ESTABLISHED (libquic would read it as a handshake message
        without HANDSHAKE_INFO); the engine's events for it wait until HandshakeCompleted is out."""
        held = self._raw_held
        if self._raw_released and held:
            return held.pop(0)
        while True:
            ev = super().next_event()
            if isinstance(ev, events.HandshakeCompleted):
                self._raw_released = True
                return ev
            if ev is None or self._raw_released or not isinstance(ev, HELD_EVENTS):
                return ev
            if held is None:
                held = self._raw_held = []
            held.append(ev)

    def raw_send_crypto(self, epoch: tls.Epoch, data: bytes) -> None:
        self._raw_hello_sent = True
        if epoch == tls.Epoch.INITIAL and self._is_client:
            self._raw_initial_sent += bytes(data)
        if epoch == tls.Epoch.INITIAL and self._is_client and self.tls.client_random is None:
            self.tls.client_random = client_random_of(data)
            self._log_pending_secrets()
        self._crypto_streams[epoch].sender.write(bytes(data))

    def raw_has_key(self, direction: tls.Direction, epoch: tls.Epoch) -> bool:
        pair = self._cryptos[epoch]
        return (pair.send if direction == tls.Direction.ENCRYPT else pair.recv).is_valid()

    def raw_install(self, direction: tls.Direction, epoch: tls.Epoch, suite: tls.CipherSuite, secret: bytes,
                    now: float) -> None:
        """One direction's traffic secret for one epoch (setsockopt CRYPTO_SECRET)."""
        self._update_traffic_key(direction, epoch, suite, secret)
        if self.tls.client_random is not None:
            self._log_pending_secrets()
        if direction == tls.Direction.ENCRYPT and epoch == tls.Epoch.ZERO_RTT:
            self.tls.early_data_accepted = True
        pair = self._cryptos[tls.Epoch.ONE_RTT]
        if not self._handshake_complete and pair.send.is_valid() and pair.recv.is_valid():
            self._raw_complete()
        if direction == tls.Direction.DECRYPT:
            keep = []
            for ep, packet, addr in self._raw_pending:
                if ep == epoch:
                    if addr is not None:
                        self.raw_replayed += 1
                        self.receive_datagram(packet, addr, now)
                else:
                    keep.append((ep, packet, addr))
            self._raw_pending = keep

    def _raw_complete(self) -> None:
        """quic.ko's ESTABLISHED: what aioquic does when its TLS context reaches POST_HANDSHAKE."""
        self._handshake_complete = True
        if not self._is_client:
            self._confirm_handshake()
            self._handshake_done_pending = True
        self._replenish_connection_ids()
        self._events.append(events.HandshakeCompleted(
            alpn_protocol=None, early_data_accepted=self.tls.early_data_accepted, session_resumed=False))
        self._unblock_streams(is_unidirectional=False)
        self._unblock_streams(is_unidirectional=True)

    def raw_local_tp(self) -> bytes:
        """Our transport parameters as the TLS extension's body (getsockopt TRANSPORT_PARAM_EXT)."""
        return bytes(self._serialize_transport_parameters())

    def raw_peer_tp(self, data: bytes) -> QuicConnectionError | None:
        """The peer's transport parameters (setsockopt TRANSPORT_PARAM_EXT). On a parse or validation
        failure the connection is closed with the transport error and the error is returned."""
        self.tls.received_extensions = [(tls.ExtensionType.QUIC_TRANSPORT_PARAMETERS, bytes(data))]
        try:
            self._alpn_handler(None)  # type: ignore[arg-type]
        except QuicConnectionError as e:
            self.close(error_code=e.error_code, frame_type=e.frame_type or QuicFrameType.CRYPTO,
                       reason_phrase=e.reason_phrase)
            return e
        return None

    @staticmethod
    def is_version_error(e: QuicConnectionError) -> bool:
        return bool(e.error_code == QuicErrorCode.VERSION_NEGOTIATION_ERROR)

    def raw_remote_limits(self, tp: Any) -> None:
        """A client's saved peer parameters (TRANSPORT_PARAM remote=1) for data sent before the
        handshake (0-RTT), as aioquic takes them from a session ticket."""
        self._remote_max_data = tp.max_data
        self._remote_max_stream_data_bidi_local = tp.max_stream_data_bidi_local
        self._remote_max_stream_data_bidi_remote = tp.max_stream_data_bidi_remote
        self._remote_max_stream_data_uni = tp.max_stream_data_uni
        self._remote_max_streams_bidi = tp.max_streams_bidi
        self._remote_max_streams_uni = tp.max_streams_uni
