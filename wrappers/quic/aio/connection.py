"""aioquic's QuicConnection, adjusted at the few points where quic.ko's stream rules differ.

Theory. aioquic does the transport (packet protection, loss recovery, flow control); ``core.py`` keeps
quic.ko's view of streams (which IDs are open, released, active) and decides every errno *before*
aioquic sees a call. Three aioquic behaviours would contradict that view, so this subclass changes
exactly them, through overriding, never by editing aioquic:

1. MAX_STREAMS batching. aioquic raises the peer's stream limit by one per released stream (as
   quic.ko does) but holds the frame back until the peer is nearly blocked. quic.ko announces every
   increase at once, and func_test's numbers (424, 436, 488, ...) depend on it:
   ``_write_connection_limits`` sends the stream limits as soon as they change.
2. Sender-side implicit opening. quic.ko opens every lower local stream of the same type when a
   stream is opened; aioquic creates a local stream only when data is first written, and afterwards
   treats every lower ID it has not created as finished. ``create_local_stream`` makes the stream
   object the way aioquic would, so a later send on an implicitly opened stream works.
5. Receive credit. aioquic doubles MAX_DATA / MAX_STREAM_DATA as data *arrives*, so an application
   that never reads would make the engine buffer without bound. quic.ko returns credit as the
   application *consumes* data, with a window of the initial value. Here "consumed" is what the
   engine has handed to the application's socket pair (``note_consumed``; the pair's buffer is the
   socket receive buffer), and the limits slide to consumed + initial window.
4. NEW_TOKEN. aioquic's server never sends one; quic.ko's sends one when the handshake completes
   and another on setsockopt(TOKEN). ``queue_new_token`` adds the frame to the next 1-RTT packet
   (written next to MAX_STREAMS, retransmitted when lost, ``token_unacked`` until acknowledged).
3. The initial stream limits are quic.ko's (100, configurable), not aioquic's fixed 128:
   ``set_local_stream_limits``.
6. disable_1rtt_encryption (TEST-ONLY, never for real traffic): quic.ko's private transport parameter
   0xbaad (empty value). When both ends send it, short-header (1-RTT) packets go out as quic.ko sends
   them with taglen 0: no AEAD, no tag, no header protection, the packet number read straight from the
   header. ``disable_1rtt`` says we send it, ``peer_disable_1rtt`` that the peer did; the 1-RTT
   ``CryptoPair`` is switched to cleartext when its keys are installed (``_update_traffic_key``).
   Handshake packets stay protected. It exists so a test matrix can run "SMB encryption only" over
   QUIC and read the SMB layer in the capture without a key log.

7. Datagrams above 16383 bytes (the emulated loopback carriers, after the handshake): aioquic writes
   STREAM and CRYPTO frame lengths as two-byte varints; ``_write_stream_frame`` and
   ``_write_crypto_frame`` write the four-byte form when a datagram may be larger.

8. PATH_CHALLENGE retransmission (RFC 9000 8.2.1, 8.2.2, 8.2.4, 13.3). A PATH_RESPONSE goes out once and
   is never retransmitted: the validating end is to send more PATH_CHALLENGE frames. aioquic sends one
   when the active path changes (a peer's NAT rebinding or migration, a server move seen by our
   client) and another only when that challenge's *packet* is declared lost; a lost PATH_RESPONSE
   (the challenge acknowledged) leaves the path unvalidated until aioquic abandons it at its deadline,
   three times max(PTO, PTO of a new path). quic.ko's path timer sends a new challenge each time it
   fires and gives up after three. Here the deadline window is cut in three (``PATH_CHALLENGES``):
   at one and at two thirds, if the active path is still not validated, aioquic is made to write a new
   challenge with new data (``local_challenge_sent`` down, ``datagrams_to_send``/``get_timer``/
   ``handle_timer`` below); the deadline and what happens then stay aioquic's. Every challenge sent
   stays acceptable: aioquic keeps the last few in ``local_challenges`` and validates on a response to
   any of them (8.2.3), and a new one is never sent if that would push an earlier one out. A response
   that matches none is ignored (19.18 allows, not requires, PROTOCOL_VIOLATION; quic.ko ignores it),
   so a late answer never closes the connection.

9. The previous 1-RTT receive keys stay after a key update (keyphase.py, RFC 9001 6.5), as quic.ko
   keeps them: packets the peer sent before it saw our update are read, not dropped as undecryptable.

10. Small stream data goes out whole. quic.ko makes its frames when the application sends (a message
    up to a packet's worth is one frame) and transmits each frame whole: one the congestion window
    does not let through waits, in one piece, for ACKs (its outqueue requeues it). aioquic cuts the
    pending data to whatever the window leaves, so after a loss a 17-byte echo went out as 16 bytes
    and then 1 byte with the FIN, and lxin's func_test, which reads each echo with one recvmsg,
    failed. Here pending data that one base-size datagram (the configuration's, 1452 bytes) carries
    whole is not cut by the congestion window (``_whole_frame_allowed``). Larger data is cut as
    aioquic cuts it: on the emulated carriers a datagram is up to 64 KiB while aioquic's smallest
    congestion window is two base-size datagrams, so holding back a 64 KiB frame until the window
    takes it whole would wait for ever (tried: lossy transfers stalled). Flow control still cuts
    frames as aioquic does.

11. Pacing by packet size (congestion.py ``KoPacer``: quic.ko's rate, twice the window per smoothed
    RTT). aioquic's pacer charges every packet as one datagram of the starting size (1452 bytes),
    so on the emulated carrier, where datagrams grow to 64 KiB after the handshake
    (``raise_datagram_size``), its bucket let three datagrams out per pass and a 1 MiB write took
    five timer wake-ups of the engine. The pacer is told the path's datagram size; a packet is
    charged one such datagram while a pass builds packets (aioquic asks before it knows the size)
    and settled to its real size when the pass sends them (``_flush_builder``), so a small response
    is not charged 64 KiB of time. ``datagrams_to_send`` then recomputes aioquic's pacing timer from
    the settled bucket.

12. ACK frequency (RFC 9000 13.2.2: a receiver SHOULD send an ACK after at least two ack-eliciting
    packets). aioquic holds every ACK for its ACK delay unless data goes the other way, so a bulk
    sender (an SMB client writing, its peer answering only every MiB) waited for the receiver's
    timer, one engine wake-up, before its send buffer and window were freed. Here a pass that finds
    two or more ack-eliciting 1-RTT packets unacknowledged sends the ACK (``unacked_eliciting``):
    the engine reads every datagram waiting on a path before it sends, so that is one ACK per
    batch of arrivals, never more than one per two packets; one packet alone still waits for the delay.

13. Stream send buffers (sendbuf.py): the messages the application wrote, kept whole, instead of one
    bytearray that each write, frame and acknowledgment copied (``send_stream_data``).

External PSK binders need ``tlsext.external_psk`` around every call that runs TLS code.

With rawtls.py and keyphase.py this module is the aioquic boundary (the package wrappers/quic/aio):
only these touch aioquic's private attributes and override its private methods; everything else goes
through the public methods below (``stream``, ``remote_stream_limits``, ``one_rtt_crypto``, ...). The package's
``AIOQUIC_PRIVATE`` lists every private name they use.
"""

from __future__ import annotations

import os
from typing import Any

from aioquic import tls
from aioquic.buffer import Buffer, size_uint_var
from aioquic.quic.connection import Limit, QuicConnection
from aioquic.quic.packet import QuicFrameType, decode_packet_number
from aioquic.quic.packet_builder import QuicDeliveryState
from aioquic.quic.stream import QuicStream

from ..congestion import KoPacer
from ..tlsext import external_psk
from .keyphase import keep_previous_keys
from .sendbuf import chunked, unacked_bytes

TP_DISABLE_1RTT_ENCRYPTION = 0xBAAD
#: the largest two-byte varint: aioquic's own frame writers hold lengths up to this
TWO_BYTE_VARINT_MAX = 16383



def has_transport_param(data: bytes, param_id: int) -> bool:
    """Whether a transport-parameters blob carries ``param_id`` (aioquic skips ids it does not know)."""
    buf = Buffer(data=data)
    try:
        while not buf.eof():
            pid = buf.pull_uint_var()
            n = buf.pull_uint_var()
            if pid == param_id:
                return True
            buf.pull_bytes(n)
    except Exception:
        return False
    return False


def make_cleartext(pair: Any) -> None:
    """Switch one 1-RTT ``CryptoPair`` to quic.ko's taglen-0 mode (see point 6 above)."""
    pair.aead_tag_size = 0

    def encrypt(plain_header: bytes, plain_payload: bytes, packet_number: int) -> bytes:
        return bytes(plain_header) + bytes(plain_payload)

    def decrypt(packet: bytes, encrypted_offset: int, expected_packet_number: int) -> tuple[bytes, bytes, int, bool]:
        pn_length = (packet[0] & 0x03) + 1
        end = encrypted_offset + pn_length
        if len(packet) < end:
            raise ValueError("short packet")
        truncated = int.from_bytes(packet[encrypted_offset:end], "big")
        pn = decode_packet_number(truncated, pn_length * 8, expected_packet_number)
        return bytes(packet[:end]), bytes(packet[end:]), pn, False

    pair.send.encrypt_packet = encrypt
    pair.recv.decrypt_packet = decrypt
    pair.cleartext = True


def one_rtt_crypto(q: QuicConnection) -> Any:
    """The 1-RTT ``CryptoPair`` of any aioquic connection, or None before its keys exist."""
    return q._cryptos.get(tls.Epoch.ONE_RTT)


def key_update_requested(pair: Any) -> bool:
    """Whether a ``CryptoPair`` still waits to send its first packet under the updated keys."""
    return bool(pair._update_key_requested)


class KoQuicConnection(QuicConnection):
    """aioquic's connection with quic.ko's adjustments, and the public view of aioquic's private
    state that core.py, sock.py and loop.py need (they touch nothing private of aioquic)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ko_pacer = KoPacer(max_datagram_size=self._max_datagram_size)
        self._loss._pacer = self._ko_pacer

    # -- pacing (11. above) ----------------------------------------------------------------------------
    def _flush_builder(self, builder: Any, network_path: Any, peer_cid: bytes, now: float) -> list[tuple[bytes, Any]]:
        out = super()._flush_builder(builder, network_path, peer_cid, now)
        self._ko_pacer.settle(sum(len(d) for d, _ in out))
        return out

    external_psk = False
    request_client_cert = False

    raw_ticket_cb: Any = None
    max_stream_data_cb: Any = None
    disable_1rtt = False
    peer_disable_1rtt = False

    # -- disable_1rtt_encryption (test-only) ---------------------------------------------------------
    def _serialize_transport_parameters(self) -> bytes:
        data = super()._serialize_transport_parameters()
        if self.preferred_address is not None and not self._is_client:
            data += self._preferred_tp()
        if self.disable_1rtt:
            buf = Buffer(capacity=16)
            buf.push_uint_var(TP_DISABLE_1RTT_ENCRYPTION)
            buf.push_uint_var(0)
            data += buf.data
        return data

    # -- server preferred address (quic.ko: CONNECTION_MIGRATION on a server before the handshake) ------
    preferred_address: Any = None  # server: (host, port) announced in the transport parameters
    preferred_probe: Any = None  # client: the preferred address aioquic went to validate

    def _preferred_tp(self) -> bytes:
        """The preferred_address parameter, with a connection ID of sequence 1 (RFC 9000 18.2) that
        joins our host CIDs; aioquic's client probes it after the handshake and moves there."""
        from aioquic.quic.connection import QuicConnectionId
        from aioquic.quic.packet import (
            QuicPreferredAddress,
            QuicTransportParameters,
            push_quic_transport_parameters,
        )

        cid = getattr(self, "_preferred_cid", None)
        if cid is None:
            cid = QuicConnectionId(cid=os.urandom(self._configuration.connection_id_length),
                                   sequence_number=self._host_cid_seq, stateless_reset_token=os.urandom(16),
                                   was_sent=True)
            self._host_cids.append(cid)
            self._host_cid_seq += 1
            self._preferred_cid = cid
        host, port = self.preferred_address[0], self.preferred_address[1]
        v6 = ":" in host
        pa = QuicPreferredAddress(ipv4_address=None if v6 else (host, port), ipv6_address=(host, port) if v6 else None,
                                  connection_id=cid.cid, stateless_reset_token=cid.stateless_reset_token)
        buf = Buffer(capacity=256)
        push_quic_transport_parameters(buf, QuicTransportParameters(preferred_address=pa))
        return bytes(buf.data)

    def _probe_preferred_address(self) -> None:
        self.preferred_probe = self._find_preferred_address()
        super()._probe_preferred_address()

    peer_max_udp_payload = 65527  # the peer's max_udp_payload_size (RFC 9000 18.2; 65527 when absent)

    def _parse_transport_parameters(self, data: bytes, from_session_ticket: bool = False) -> None:
        super()._parse_transport_parameters(data, from_session_ticket)
        if not from_session_ticket:
            from aioquic.quic.packet import pull_quic_transport_parameters

            # aioquic checks the value's floor and then forgets it; raise_datagram_size needs it
            tp = pull_quic_transport_parameters(Buffer(data=data))
            self.peer_max_udp_payload = tp.max_udp_payload_size or 65527
            self.peer_disable_1rtt = has_transport_param(data, TP_DISABLE_1RTT_ENCRYPTION)
            vi = getattr(self, "_remote_version_information", None)
            if not self._is_client and vi is not None:
                self._server_version_choice(vi)

    # -- compatible version negotiation (RFC 9368), quic.ko's listener rules ----------------------------------
    preferred_version = 0  # server: CONFIG.version of the listener (V2: upgrade a compatible client)
    disable_compatible_version = False

    def _server_version_choice(self, vi: Any) -> None:
        """aioquic's server takes the first of the client's available versions it supports; quic.ko's
        listener upgrades to V2 only when it was configured with V2, and never with
        disable_compatible_version. Reorder (or empty) the client's list as seen by aioquic."""
        if self.disable_compatible_version:
            vi.available_versions = [self._version]
        elif self.preferred_version and self.preferred_version in vi.available_versions:
            vi.available_versions = [self.preferred_version] + [
                v for v in vi.available_versions if v != self.preferred_version]
        else:
            vi.available_versions = [self._version]

    @property
    def cleartext_1rtt(self) -> bool:
        return bool(getattr(self._cryptos[tls.Epoch.ONE_RTT], "cleartext", False))

    refuse_early = False  # server: decline 0-RTT although the ticket is good (server_handshake early_data=False)

    def _update_traffic_key(self, direction: Any, epoch: Any, cipher_suite: Any, secret: bytes) -> None:
        if (epoch == tls.Epoch.ZERO_RTT and self.refuse_early and not self._is_client
                and direction == tls.Direction.DECRYPT):
            # aioquic's server accepts early data whenever the ticket resumes; declining means not
            # installing the 0-RTT keys and saying so in EncryptedExtensions (built after this call).
            # The client's 0-RTT packets are then undecryptable, never acknowledged, and their data
            # is sent again in 1-RTT by loss recovery: nothing is lost.
            self.tls.early_data_accepted = False
            return
        super()._update_traffic_key(direction, epoch, cipher_suite, secret)
        if epoch == tls.Epoch.ONE_RTT and self.disable_1rtt and self.peer_disable_1rtt:
            make_cleartext(self._cryptos[epoch])

    def _handle_max_stream_data_frame(self, context: Any, frame_type: int, buf: Any) -> None:
        # quic.ko reports a raised stream send limit (QUIC_EVENT_STREAM_MAX_DATA); aioquic does not
        start = buf.tell()
        stream_id = buf.pull_uint_var()
        buf.seek(start)
        stream = self._streams.get(stream_id)
        before = stream.max_stream_data_remote if stream is not None else None
        super()._handle_max_stream_data_frame(context, frame_type, buf)
        stream = self._streams.get(stream_id)
        if self.max_stream_data_cb is not None and stream is not None and stream.max_stream_data_remote != before:
            self.max_stream_data_cb(stream_id, stream.max_stream_data_remote)

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        keep_previous_keys(self._cryptos[tls.Epoch.ONE_RTT])  # 9. above
        if self.request_client_cert:
            # aioquic's server can ask for a client certificate only through this private switch
            self.tls._request_client_certificate = True
            fetch = self.tls.get_session_ticket_cb
            if fetch is not None:
                ctx = self.tls

                def fetch_no_cr(label: bytes) -> Any:
                    # a resumed handshake authenticates by the ticket: no CertificateRequest then
                    # (RFC 8446 4.3.2: only in certificate-based handshakes)
                    t = fetch(label)
                    if t is not None:
                        ctx._request_client_certificate = False
                    return t

                self.tls.get_session_ticket_cb = fetch_no_cr
        if self._is_client and self.raw_ticket_cb is not None:
            # quic.ko hands the raw NewSessionTicket message to the application; aioquic keeps only
            # its parsed form, so look at the message on its way in
            handle = self.tls._client_handle_new_session_ticket
            cb = self.raw_ticket_cb

            def capture(input_buf: Any) -> None:
                cb(bytes(input_buf.data_slice(0, input_buf.capacity)))
                handle(input_buf)

            self.tls._client_handle_new_session_ticket = capture  # type: ignore[method-assign]

    # -- TLS-running entry points --------------------------------------------------------------
    def connect(self, addr: Any, now: float) -> None:
        with external_psk(self.external_psk):
            super().connect(addr, now)

    def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
        """quic.ko lets a server migrate too (setsockopt CONNECTION_MIGRATION on either end); aioquic's
        client drops packets from an unknown server address (RFC 9000 9). A client here takes a
        packet from a new server address that decrypts (the carrier saw our connection on it) and
        moves to that path when its packet is the newest 1-RTT packet so far: the path is unvalidated, so
        aioquic sends a PATH_CHALLENGE there, and the core reports the peer migration when it is
        answered (validation failure falls back to the old path, aioquic's own rule)."""
        new_path = None
        if self._is_client and self._network_paths and all(p.addr != addr for p in self._network_paths):
            from aioquic.quic.connection import QuicNetworkPath

            new_path = QuicNetworkPath(addr)
            self._network_paths.append(new_path)
        before = self._spaces[tls.Epoch.ONE_RTT].largest_received_packet if tls.Epoch.ONE_RTT in self._spaces else None
        with external_psk(self.external_psk):
            super().receive_datagram(data, addr, now)
        if new_path is None:
            return
        space = self._spaces.get(tls.Epoch.ONE_RTT)
        if space is not None and before is not None and space.largest_received_packet > before \
                and new_path in self._network_paths:
            self._network_paths.remove(new_path)
            self._network_paths.insert(0, new_path)
        elif new_path in self._network_paths:
            self._network_paths.remove(new_path)  # not ours, or older than what we have: no move

    # -- PATH_CHALLENGE retransmission (8. above) ------------------------------------------------------
    #: quic.ko's path timer sends a PATH_CHALLENGE three times, then gives the path up
    PATH_CHALLENGES = 3
    _pc_path: Any = None  # the active path whose validation is being retransmitted for
    _pc_deadline: float | None = None  # ... and aioquic's abandon deadline for it (a new one: a new validation)
    _pc_period = 0.0
    _pc_next: float | None = None  # when the next PATH_CHALLENGE is due (None: no more)
    _pc_left = 0

    def _path_in_validation(self) -> Any:
        """The active path while it waits for a PATH_RESPONSE (a challenge went out and aioquic's
        abandon deadline is set), else None."""
        if self._state.name in ("CLOSING", "DRAINING", "TERMINATED") or not self._network_paths:
            return None
        path = self._network_paths[0]
        if path.is_validated or path.validation_deadline is None:
            return None
        return path

    def _challenge_due(self) -> float | None:
        """When the next PATH_CHALLENGE goes out, None when none is due (validated, abandoned, closed)."""
        if self._pc_next is None:
            return None
        path = self._path_in_validation()
        if path is None or path is not self._pc_path or path.validation_deadline != self._pc_deadline:
            return None
        return self._pc_next

    # -- ACK frequency (12. above), and packets taken (receive_fingerprint) -------------------------------
    unacked_eliciting = 0  # ack-eliciting 1-RTT packets received since our last ACK frame
    packets_taken = 0  # packets whose payload aioquic processed (decrypted, not duplicates)

    def _payload_received(self, context: Any, plain: bytes, crypto_frame_required: bool = False) -> tuple[bool, bool]:
        self.packets_taken += 1
        eliciting, probing = super()._payload_received(context, plain, crypto_frame_required)
        if eliciting and context.epoch == tls.Epoch.ONE_RTT:
            self.unacked_eliciting += 1
        return eliciting, probing

    def _write_ack_frame(self, builder: Any, space: Any, now: float) -> None:
        super()._write_ack_frame(builder, space, now)
        if space is self._spaces.get(tls.Epoch.ONE_RTT):
            self.unacked_eliciting = 0

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        if self.unacked_eliciting >= 2:
            self.ack_now()
        out = super().datagrams_to_send(now)
        if self._pacing_at is not None:
            # aioquic set the pacing timer while the packets held a full datagram's charge each;
            # settled to their real sizes, the wait may be shorter (or over)
            self._pacing_at = self._loss._pacer.next_send_time(now) or now
        path = self._path_in_validation()
        if path is None:
            self._pc_path = self._pc_next = None
        elif path is not self._pc_path or path.validation_deadline != self._pc_deadline:
            # aioquic has just written the first challenge and set its deadline: now + 3 x max(PTO,
            # PTO of a new path). Challenge again at one and two thirds of that, before it expires.
            assert path.validation_deadline is not None
            self._pc_path, self._pc_deadline = path, path.validation_deadline
            self._pc_period = (path.validation_deadline - now) / self.PATH_CHALLENGES
            self._pc_next = now + self._pc_period
            self._pc_left = self.PATH_CHALLENGES - 1
        return out

    def get_timer(self) -> float | None:
        t = super().get_timer()
        due = self._challenge_due()
        if due is not None and (t is None or due < t):
            return due
        return t

    def handle_timer(self, now: float) -> None:
        super().handle_timer(now)  # may abandon the validation at its deadline: then nothing is due
        due = self._challenge_due()
        if due is None or now < due:
            return
        path = self._pc_path
        # aioquic writes a PATH_CHALLENGE with new data into the next packet on the path once this
        # flag is down; never so many that aioquic's list of sent challenges would drop one
        if path.local_challenges.maxlen is None or len(path.local_challenges) < path.local_challenges.maxlen:
            path.local_challenge_sent = False
        self._pc_left -= 1
        self._pc_next = due + self._pc_period if self._pc_left > 0 else None

    # -- stream limits -------------------------------------------------------------------------
    def set_local_stream_limits(self, bidi: int, uni: int) -> None:
        self._local_max_streams_bidi = Limit(QuicFrameType.MAX_STREAMS_BIDI, "max_streams_bidi", bidi)
        self._local_max_streams_uni = Limit(QuicFrameType.MAX_STREAMS_UNI, "max_streams_uni", uni)

    token_pending: bytes | None = None
    token_unacked = False
    consumed_total = 0
    data_window = 0  # 0: aioquic's own policy (until core.start sets the windows)
    stream_window = 0

    def set_windows(self, data_window: int, stream_window: int) -> None:
        self.consumed: dict[int, int] = {}
        self.data_window, self.stream_window = data_window, stream_window

    def note_consumed(self, stream_id: int, n: int) -> None:
        if self.data_window:
            self.consumed[stream_id] = self.consumed.get(stream_id, 0) + n
            self.consumed_total += n

    def _write_stream_limits(self, builder: Any, space: Any, stream: Any) -> None:
        if not self.data_window:
            return super()._write_stream_limits(builder, space, stream)
        if stream.max_stream_data_local:
            target = self.consumed.get(stream.stream_id, 0) + self.stream_window
            if target - stream.max_stream_data_local >= self.stream_window // 2:
                stream.max_stream_data_local = target
        highest = stream.receiver.highest_offset
        stream.receiver.highest_offset = 0  # switch aioquic's doubling off for this call
        try:
            super()._write_stream_limits(builder, space, stream)
        finally:
            stream.receiver.highest_offset = highest

    def queue_new_token(self, token: bytes) -> None:
        self.token_pending = token

    def _on_new_token_delivery(self, delivery: QuicDeliveryState, token: bytes) -> None:
        if delivery == QuicDeliveryState.ACKED:
            self.token_unacked = False
        elif self.token_pending is None:
            self.token_pending = token

    def _write_connection_limits(self, builder: Any, space: Any) -> None:
        token = self.token_pending
        if token is not None and not self._is_client:
            buf = builder.start_frame(QuicFrameType.NEW_TOKEN, capacity=9 + len(token),
                                      handler=self._on_new_token_delivery, handler_args=(token,))
            buf.push_uint_var(len(token))
            buf.push_bytes(token)
            self.token_pending = None
            self.token_unacked = True
        # aioquic's batching test (sent - used >= value - sent) is false once used has reached
        # sent; pretend so for the duration of the call whenever a stream limit changed.
        saved = [(lim, lim.used) for lim in (self._local_max_streams_bidi, self._local_max_streams_uni)]
        for lim, _ in saved:
            if lim.value != lim.sent:
                lim.used = max(lim.used, lim.sent)
        if self.data_window:
            md = self._local_max_data
            target = self.consumed_total + self.data_window
            if target - md.value >= self.data_window // 2:
                md.value = target
            saved.append((md, md.used))
            md.used = 0  # switch aioquic's doubling off for this call
        try:
            super()._write_connection_limits(builder, space)
        finally:
            for lim, used in saved:
                lim.used = used

    def stream_limits_pending(self) -> bool:
        return any(lim.value != lim.sent for lim in (self._local_max_streams_bidi, self._local_max_streams_uni))

    # -- sender-side implicit opening ------------------------------------------------------------
    def create_local_stream(self, stream_id: int) -> QuicStream:
        stream = self._streams.get(stream_id)
        if stream is not None:
            return stream
        uni = bool(stream_id & 2)
        if uni:
            stream = QuicStream(stream_id=stream_id, max_stream_data_local=0,
                                max_stream_data_remote=self._remote_max_stream_data_uni, readable=False)
            self._local_next_stream_id_uni = max(self._local_next_stream_id_uni, stream_id + 4)
        else:
            stream = QuicStream(stream_id=stream_id, max_stream_data_local=self._local_max_stream_data_bidi_local,
                                max_stream_data_remote=self._remote_max_stream_data_bidi_remote)
            self._local_next_stream_id_bidi = max(self._local_next_stream_id_bidi, stream_id + 4)
        self._streams[stream_id] = stream
        self._streams_queue.append(stream)
        return stream

    # -- the public view of aioquic's private state -----------------------------------------------
    @property
    def configuration(self) -> Any:
        return self._configuration

    @property
    def version(self) -> int | None:
        """The QUIC version in use (after a compatible upgrade, the new one)."""
        return self._version

    @property
    def remote_stream_limits(self) -> tuple[int, int]:
        """The peer's MAX_STREAMS for (bidirectional, unidirectional) streams."""
        return self._remote_max_streams_bidi, self._remote_max_streams_uni

    @property
    def remote_active_connection_id_limit(self) -> int:
        return int(self._remote_active_connection_id_limit)

    def set_local_active_connection_id_limit(self, limit: int) -> None:
        self._local_active_connection_id_limit = limit

    @property
    def remote_max_datagram_frame_size(self) -> int:
        return self._remote_max_datagram_frame_size or 0

    @property
    def max_datagram_size(self) -> int:
        return int(self._max_datagram_size)

    def raise_datagram_size(self, size: int) -> None:
        """Send datagrams of up to ``size`` bytes from now on (never more than the peer's
        max_udp_payload_size; never smaller than now). Packets already in flight keep their size; the
        congestion controller and pacer count bytes, so a larger datagram only needs more window.
        Called once the handshake is complete: only 1-RTT packets (no length field) are that large."""
        size = min(size, self.peer_max_udp_payload)
        if size > self._max_datagram_size:
            self._max_datagram_size = size
            self._ko_pacer.set_datagram_size(size)

    # -- frames longer than 16383 bytes (7. below) --------------------------------------------------
    # aioquic writes the Length of STREAM and CRYPTO frames as a two-byte varint, so a frame in a
    # datagram larger than 16383 bytes would be corrupt. In such datagrams these two write the
    # four-byte form (RFC 9000 16 allows any varint length); the code is aioquic's otherwise.
    def _write_stream_frame(self, builder: Any, space: Any, stream: QuicStream, max_offset: int) -> int:
        if not self._whole_frame_allowed(builder, stream):
            return 0
        if self._max_datagram_size <= TWO_BYTE_VARINT_MAX:
            return int(super()._write_stream_frame(builder, space, stream, max_offset))
        sender = stream.sender
        sid = stream.stream_id
        assert sid is not None  # a stream that has data to send has its id
        overhead = 5 + size_uint_var(sid) + (size_uint_var(sender.next_offset) if sender.next_offset else 0)
        previous_send_highest = sender.highest_offset
        frame = sender.get_frame(builder.remaining_flight_space - overhead, max_offset)
        if frame is None:
            return 0
        frame_type = QuicFrameType.STREAM_BASE | 2 | (4 if frame.offset else 0) | (1 if frame.fin else 0)
        buf = builder.start_frame(frame_type, capacity=overhead, handler=sender.on_data_delivery,
                                  handler_args=(frame.offset, frame.offset + len(frame.data), frame.fin))
        buf.push_uint_var(sid)
        if frame.offset:
            buf.push_uint_var(frame.offset)
        buf.push_uint32(len(frame.data) | 0x80000000)
        buf.push_bytes(frame.data)
        if self._quic_logger is not None:
            builder.quic_logger_frames.append(self._quic_logger.encode_stream_frame(frame, stream_id=sid))
        return int(sender.highest_offset - previous_send_highest)

    def write_stream_frame(self, builder: Any, stream: QuicStream, max_offset: int) -> int:
        """The frame writer aioquic's packet loop calls (the stream data bytes it wrote), for tests."""
        return self._write_stream_frame(builder, None, stream, max_offset)

    def _whole_frame_allowed(self, builder: Any, stream: QuicStream) -> bool:
        """False while the congestion window would cut the pending stream data that one base-size
        datagram carries whole (10. above): it waits for ACKs, in one piece, as quic.ko's frames do."""
        pending = stream.sender._pending
        if len(pending) == 0:
            return True  # a FIN alone, or nothing: aioquic decides
        start, want = pending[0].start, pending[0].stop - pending[0].start
        if want > self._configuration.max_datagram_size:
            return True  # bulk data: cut to the window as aioquic cuts it (see 10. above)
        sid = stream.stream_id
        assert sid is not None
        overhead = ((3 if self._max_datagram_size <= TWO_BYTE_VARINT_MAX else 5) + size_uint_var(sid)
                    + (size_uint_var(start) if start else 0))
        if want > builder.remaining_buffer_space - overhead:
            return True  # this packet is nearly full: aioquic writes what fits, or starts the next one
        return builder.remaining_flight_space - overhead >= want

    def _write_crypto_frame(self, builder: Any, space: Any, stream: QuicStream) -> bool:
        if self._max_datagram_size <= TWO_BYTE_VARINT_MAX:
            return bool(super()._write_crypto_frame(builder, space, stream))
        overhead = 5 + size_uint_var(stream.sender.next_offset)
        frame = stream.sender.get_frame(builder.remaining_flight_space - overhead)
        if frame is None:
            return False
        buf = builder.start_frame(QuicFrameType.CRYPTO, capacity=overhead, handler=stream.sender.on_data_delivery,
                                  handler_args=(frame.offset, frame.offset + len(frame.data), False))
        buf.push_uint_var(frame.offset)
        buf.push_uint32(len(frame.data) | 0x80000000)
        buf.push_bytes(frame.data)
        if self._quic_logger is not None:
            builder.quic_logger_frames.append(self._quic_logger.encode_crypto_frame(frame))
        return True

    @property
    def network_paths(self) -> list[Any]:
        """aioquic's paths, the one in use first (read only: moving paths is receive_datagram's job)."""
        return list(self._network_paths)

    @property
    def terminated(self) -> bool:
        return bool(self._state.name == "TERMINATED")

    def one_rtt_crypto(self) -> Any:
        return one_rtt_crypto(self)

    def close_begun(self) -> Any:
        """The ConnectionTerminated aioquic holds back while it is closing or draining (the peer's
        CONNECTION_CLOSE, or a close aioquic started itself on a protocol error), else None.

        aioquic hands that event out only when the closing or draining period (three probe timeouts,
        RFC 9000 10.2) is over; quic.ko's socket is CLOSED, and tells the application, at once."""
        if self._close_event is None or self._state.name not in ("CLOSING", "DRAINING"):
            return None
        return self._close_event

    def probe_timeout(self) -> float:
        """The current probe timeout (RFC 9002 6.2.1), which sets the length of the closing period."""
        return float(self._loss.get_probe_timeout())

    def receive_fingerprint(self) -> tuple:
        """Changes whenever a received datagram had an effect (a packet taken: decrypted and not a
        duplicate, a close, a state change): a datagram that leaves it unchanged was dropped as
        undecodable. Three attributes, not a walk over the packet spaces: it is read twice per
        datagram."""
        return self.packets_taken, self._close_event is not None, self._state

    def ack_now(self) -> None:
        """Send every pending ACK with the next packet instead of after the ACK delay."""
        for space in self._spaces.values():
            if space.ack_at is not None:
                space.ack_at = 0.0

    def stream(self, stream_id: int) -> QuicStream | None:
        return self._streams.get(stream_id)

    def stream_final_size(self, stream_id: int) -> int:
        """The final size the peer announced for a stream (FIN or RESET_STREAM), 0 when unknown."""
        stream = self._streams.get(stream_id)
        return (stream.receiver._final_size or 0) if stream is not None else 0

    def send_buffered_bytes(self) -> int:
        """Bytes written to streams and not yet acknowledged, over all streams."""
        return sum(unacked_bytes(s.sender) for s in self._streams.values())

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """aioquic's, with the stream's send buffer a list of messages (13. above, sendbuf.py)."""
        stream = self._get_or_create_stream_for_send(stream_id)
        chunked(stream.sender)
        stream.sender.write(data, end_stream=end_stream)

    def stream_flow_blocked(self, stream_id: int) -> bool:
        """Whether the stream's send buffer already reaches the peer's MAX_STREAM_DATA."""
        stream = self._streams.get(stream_id)
        return stream is not None and stream.sender._buffer_stop >= stream.max_stream_data_remote

    def owns_host_cid(self, cid: bytes) -> bool:
        return any(h.cid == cid for h in self._host_cids)

    def peer_transport_parameters(self) -> dict[str, int]:
        """The peer's transport parameters as aioquic stored them (times in microseconds)."""
        return {
            "active_connection_id_limit": self._remote_active_connection_id_limit or 0,
            "max_datagram_frame_size": self._remote_max_datagram_frame_size or 0,
            "max_idle_timeout": int((self._remote_max_idle_timeout or 0) * 1e6),
            "max_ack_delay": round(self._loss.max_ack_delay * 1e6),
            "max_data": self._remote_max_data,
            "max_stream_data_bidi_local": self._remote_max_stream_data_bidi_local,
            "max_stream_data_bidi_remote": self._remote_max_stream_data_bidi_remote,
            "max_stream_data_uni": self._remote_max_stream_data_uni,
        }

    def end_qlog_trace(self) -> None:
        """Write out this connection's qlog trace now (aioquic ends it only after the closing period)."""
        if self._quic_logger is not None and self._configuration.quic_logger is not None:
            self._configuration.quic_logger.end_trace(self._quic_logger)
            self._quic_logger = None
