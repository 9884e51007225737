"""The engine's sans-IO core: one quic.ko socket's connection state around an aioquic QuicConnection.

No file descriptors, threads or clocks here (aioquic style): the I/O adapter (``loop.py``) feeds
datagrams and timer ticks in, takes datagrams and receive-queue items out, and calls the socket
operations below while holding the engine lock. Every operation either succeeds, raises ``OSError``
with quic.ko's errno, or raises ``Blocked`` so the caller can wait (blocking socket) or give EAGAIN.

Rules (quic.ko's data path, events and streams, lxin/quic main at 03a9c7c):

* Streams. ``streams`` holds quic.ko's stream objects: every stream opened by us or the peer and not
  yet *released*. Opening a local stream also opens every lower unopened local stream of its type
  (state READY). A local ID below ``next_id[type]`` that is no longer in ``streams`` was released,
  and using it gives ENOSTR; an ID at or above it needs MSG_QUIC_STREAM_NEW (EINVAL otherwise).
  Release: bidi when both directions are final (send RECVD/RESET_RECVD and receive RECVD/RESET_RECVD),
  uni when its one direction is final.
* Active stream: the stream most recently created by a local open, or the bidi stream the peer most
  recently opened; sid -1 and plain send() use it; it is cleared by FIN or reset.
* Stream limits: a local open of ID n needs n//4 < the peer's current MAX_STREAMS and (streams this
  open creates + local streams open) <= the peer's *initial* limit; otherwise Blocked("streams")
  (EAGAIN with MSG_QUIC_STREAM_DONTWAIT). The peer's limit grows one for one as its streams are
  released (aio/connection.py).
* Receive queue items are produced in quic.ko's order within one input: events first, then data.
  The app side (sock.py) keeps the final queue and moves later events ahead of earlier data.
"""

from __future__ import annotations

import errno
import os
import struct
from typing import Any

from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration

from . import constants as C
from . import uapi
from .aio import KoQuicConnection, key_update_requested
from .aio.connection import TWO_BYTE_VARINT_MAX
from .items import (  # noqa: F401 - re-exported: the socket classes import them from here
    ITEM,
    K_ACCEPT,
    K_DATA,
    K_DGRAM,
    K_EVENT,
    K_HS,
    K_PURGE,
    K_WAKE,
    MAX_ITEM,
    RECV_FINAL,
    SEND_FINAL,
    SNDBUF,
    Blocked,
    Options,
    Stream,
    _final,
    err,
    item,
)
from .resumption import ResumptionMixin


def _ignore(_: object) -> None:
    """A session-ticket handler: with one, aioquic servers issue tickets and clients accept them."""


class Connection(ResumptionMixin):
    """quic.ko's per-connection state (see the module docstring)."""

    def __init__(self, is_client: bool, opts: Options):
        self.is_client = is_client
        self.opts = opts
        self.state = C.ESTABLISHING
        self.quic: KoQuicConnection | None = None
        self.addr: Any = None
        self.streams: dict[int, Stream] = {}
        mine = 0 if is_client else 1
        self.next_id = {t: t for t in range(4)}
        self.local_types = (mine, mine | 2)
        self.active: int | None = None
        self.items: list[bytes] = []
        self.peer_close: uapi.ConnectionClose | None = None
        self.closed = False
        self.handshake_done = False
        self.handshake_error: str | None = None
        self.peer_init = {0: 0, 2: 0}
        self.watch: set[int] = set()
        self.dropped = 0
        self.received = 0
        self.alpn: str | None = None
        self.ku_pending = False
        self.ku_sent = False
        self.buffered: list[tuple[bytes, Any]] = []  # server: datagrams before server_handshake
        self.last_send = 0.0
        self.cids: Any = None  # connection_ids.ConnectionIds, set when the handshake completes
        self.migrating: tuple | None = None  # our new local address while a local migration is pending
        self.local_addr: tuple | None = None
        self.request_client_cert = False
        self.ticket: bytes | None = None  # client: the raw NewSessionTicket message
        self.session: Any = None  # client: aioquic's SessionTicket for that message (session data)
        self.early: list[tuple[int, bytes, bool]] = []  # client: stream data queued before the handshake
        self.early_limits: tuple[int, int] | None = None  # the saved remote (bidi, uni) stream limits
        self.refuse_early = False  # server: decline 0-RTT (the client then resends in 1-RTT)
        self.require_resumption = False  # client: PSK mode resuming a ticket: no certificate fallback
        self.preferred_address: tuple | None = None  # server: announced preferred_address (host, port)
        self.ticket_handler: Any = None  # server: stores issued tickets (handshake.py)
        self.quic_class: Any = KoQuicConnection  # raw mode: aio.RawQuicConnection (raw.py)
        self.path_datagram = 0  # datagram size once the handshake is complete (configuration.path_datagram_size)

    # -- life cycle ---------------------------------------------------------------------------
    def start(self, configuration: QuicConfiguration, now: float, *, psk: bool, odcid: bytes | None = None,
              ticket_fetcher: Any = None) -> None:
        if self.is_client:
            q = self.quic_class(configuration=configuration, token_handler=self._on_new_token,
                                session_ticket_handler=self._on_session)
            q.raw_ticket_cb = self._on_ticket
            self.opts.token = b""  # the Initial carries it; NEW_TOKEN fills it again
        else:
            q = self.quic_class(configuration=configuration, original_destination_connection_id=odcid,
                                session_ticket_fetcher=ticket_fetcher,
                                session_ticket_handler=self.ticket_handler or _ignore)
            q.refuse_early = self.refuse_early
        q.external_psk = psk
        q.request_client_cert = self.request_client_cert
        tp = self.opts.tp
        q.disable_1rtt = bool(tp.disable_1rtt_encryption)
        q.disable_compatible_version = bool(tp.disable_compatible_version)
        q.preferred_version = self.opts.cfg.version
        q.preferred_address = None if self.is_client else self.preferred_address
        q.set_local_stream_limits(tp.max_streams_bidi, tp.max_streams_uni)
        q.set_local_active_connection_id_limit(tp.active_connection_id_limit or 7)
        q.set_windows(configuration.max_data, configuration.max_stream_data)
        q.max_stream_data_cb = self._on_max_stream_data
        self.quic = q
        if self.is_client:
            q.connect(self.addr, now)
            self._release_early()
        else:
            for data, addr in self.buffered:
                self.receive(data, addr, now)
            self.buffered.clear()
        self._pump(now)

    def receive(self, data: bytes, addr: Any, now: float) -> None:
        q = self.quic
        if q is None:
            self.buffered.append((data, addr))
            return
        before = self._fingerprint()
        remote = q.remote_stream_limits
        phase = self._recv_phase()
        try:
            q.receive_datagram(data, addr, now)
        except Exception:  # aioquic should not raise on bad input; if it does, drop the datagram
            self.dropped += 1
            return
        if self._fingerprint() == before:
            self.dropped += 1
        else:
            self.received += 1
            self._key_phase_changes(phase)
            self._check_peer_migration()
        self._pump(now, remote)

    def _one_rtt(self) -> Any:
        q = self.quic
        pair = q.one_rtt_crypto() if q is not None else None
        return pair if pair is not None and pair.recv.is_valid() else None

    def _recv_phase(self) -> int | None:
        pair = self._one_rtt()
        return None if pair is None else pair.recv.key_phase

    def _key_phase_changes(self, before: int | None) -> None:
        """aioquic flips both directions at once: a flip during receive is the peer's key update
        (quic.ko reports it, on the passive side only); our own update is confirmed by the first
        packet received after it went out."""
        pair = self._one_rtt()
        if pair is None:
            return
        if before is not None and pair.recv.key_phase != before:
            self.ku_pending = False
            self._event(C.QUIC_EVENT_KEY_UPDATE, bytes([pair.recv.key_phase]))
        elif self.ku_pending and not key_update_requested(pair) and self.ku_sent:
            self.ku_pending = False

    def _fingerprint(self) -> tuple:
        q = self.quic
        assert q is not None
        return q.receive_fingerprint()

    def timer(self, now: float) -> None:
        q = self.quic
        if q is None:
            return
        t = q.get_timer()
        if t is not None and now >= t:
            q.handle_timer(now)
        ka = self.opts.cfg.keepalive_probe_interval
        if ka and self.handshake_done and not self.closed and now - self.last_send >= ka / 1e6:
            q.send_ping(0)
        self._pump(now)

    def next_timer(self) -> float | None:
        q = self.quic
        if q is None or self.closed and q.terminated:
            return None
        t = q.get_timer()
        ka = self.opts.cfg.keepalive_probe_interval
        if ka and self.handshake_done and not self.closed:
            k = self.last_send + ka / 1e6
            t = k if t is None else min(t, k)
        return t

    def datagrams(self, now: float) -> list[tuple[bytes, Any]]:
        """(datagram, peer address) pairs: after a peer migration the server answers on the new path."""
        q = self.quic
        if q is None:
            return []
        out = q.datagrams_to_send(now)
        if q.stream_limits_pending():
            out += q.datagrams_to_send(now)
        if out:
            self.last_send = now
            self.ku_sent = True
        self._poll_streams()
        return out

    # -- aioquic events -> quic.ko state, events and data ---------------------------------------
    def _pump(self, now: float, remote: tuple[int, int] | None = None) -> None:
        q = self.quic
        assert q is not None
        evs: list[bytes] = []
        data: list[bytes] = []
        self._poll_streams(evs)
        while True:
            ev = q.next_event()
            if ev is None:
                break
            if isinstance(ev, qe.StreamDataReceived):
                self._on_data(ev, evs, data)
            elif isinstance(ev, qe.DatagramFrameReceived):
                data.append(item(K_DGRAM, 0, C.MSG_QUIC_DATAGRAM, ev.data))
            elif isinstance(ev, qe.StreamReset):
                self._on_reset(ev, evs, data)
            elif isinstance(ev, qe.StopSendingReceived):
                st = self.streams.get(ev.stream_id)
                if st is not None and st.send not in SEND_FINAL and st.send != C.QUIC_STREAM_SEND_STATE_RESET_SENT:
                    st.send = C.QUIC_STREAM_SEND_STATE_RESET_SENT
                    st.reset_code = ev.error_code
                    self.watch.add(st.sid)
                    if self.active == st.sid:
                        self.active = None
                    self._event(C.QUIC_EVENT_STREAM_UPDATE, uapi.StreamUpdate(
                        st.sid, C.QUIC_STREAM_SEND_STATE_RESET_SENT, ev.error_code, st.sent).pack(), evs)
            elif isinstance(ev, qe.HandshakeCompleted):
                if (q.external_psk or self.require_resumption) and not q.tls.session_resumed:
                    # never fall back to the certificate path when both sides were told to use a PSK
                    q.close(error_code=0x100 + 40, frame_type=0x06, reason_phrase="external PSK not accepted")
                    self.handshake_error = "external PSK not accepted"
                    self.closed = True
                    self.state = C.CLOSED
                    self._local_close = True
                    continue
                if not self.is_client:
                    q.queue_new_token(os.urandom(32))
                self.handshake_done = True
                self.state = C.ESTABLISHED
                if self.path_datagram:
                    q.raise_datagram_size(self.path_datagram)
                self.alpn = ev.alpn_protocol
                bidi, uni = q.remote_stream_limits
                self.peer_init = {0: bidi, 2: uni}
            elif isinstance(ev, qe.ConnectionTerminated):
                self._on_terminated(ev, evs)
        if not self.closed:
            # The peer's CONNECTION_CLOSE (or a close aioquic began on a protocol error): quic.ko's
            # socket is CLOSED at once; aioquic would say so only after its draining period, three
            # probe timeouts, which grow with the RTT estimate (seconds on a loaded machine).
            held = q.close_begun()
            if held is not None:
                self._on_terminated(held, evs)
        if remote is not None:
            now_limits = q.remote_stream_limits
            for t, old, new in ((0, remote[0], now_limits[0]), (2, remote[1], now_limits[1])):
                if new > old and self.handshake_done and self.peer_init[t]:
                    typ = self.local_types[0] | t
                    self._event(C.QUIC_EVENT_STREAM_MAX_STREAM, struct.pack("<Q", (new - 1) * 4 + typ), evs)
        self.items += evs
        self.items += data

    # -- migration: paths and connection IDs (the carriers move the bytes, see loop.py) -------------
    def start_local_migration(self, new_local: tuple) -> None:
        """Client: the next packets go out on a new path with a fresh destination CID."""
        q = self.quic
        if q is None or not self.handshake_done or self.closed:
            raise err(errno.EPIPE)
        if self.migrating is not None:
            raise err(errno.EAGAIN, "a migration is in progress")
        q.change_connection_id()
        self.migrating = new_local

    def local_migration_done(self) -> None:
        """The first packet arrived on the new path: the switch is complete."""
        if self.migrating is None:
            return
        self.local_addr, self.migrating = self.migrating, None
        self._bump_dest_cid()
        self._event(C.QUIC_EVENT_CONNECTION_MIGRATION, b"\x01")

    def _check_peer_migration(self) -> None:
        """The peer's address changed: event local_migration 0 and a new destination CID number.

        A server (client migrating, NAT rebinding) reports it once the new path is validated. A
        client reports a quic.ko server's move when it switches to the new path: quic.ko's migrating
        end validates the path before it sends data there, so its peer sees the event ahead of that
        data; our migrating server sends at once and the client's challenge follows (aio/connection.py)."""
        q = self.quic
        paths = q.network_paths if q is not None else []
        if q is None or not paths or not self.handshake_done:
            return
        path = paths[0]
        if path.addr != self.addr and (path.is_validated or self.is_client):
            self.addr = path.addr
            self._bump_dest_cid()
            # a client moving to the server's preferred address counts as its own migration (quic.ko)
            local = self.is_client and q.preferred_probe is not None and path.addr == q.preferred_probe
            self._event(C.QUIC_EVENT_CONNECTION_MIGRATION, b"\x01" if local else b"\x00")

    def _bump_dest_cid(self) -> None:
        if self.cids is not None:
            active, prior = self.cids.sets[1]
            self.cids.sets[1] = [active + 1, active + 1]

    def _on_max_stream_data(self, sid: int, maximum: int) -> None:
        self._event(C.QUIC_EVENT_STREAM_MAX_DATA, uapi.StreamMaxData(sid, maximum).pack())

    # -- 0-RTT: data sent before the handshake ------------------------------------------------------
    def _peer_stream(self, sid: int) -> Stream | None:
        st = self.streams.get(sid)
        if st is not None or (sid & 3) in self.local_types:
            return st
        t = sid & 3
        if sid < self.next_id[t]:
            return None  # released
        uni = bool(sid & 2)
        for s in range(self.next_id[t], sid + 4, 4):
            self.streams[s] = Stream(s, None if uni else C.QUIC_STREAM_SEND_STATE_READY, None, in_quic=True)
        self.next_id[t] = sid + 4
        if not uni:
            self.active = sid
        return self.streams[sid]

    def _on_data(self, ev: qe.StreamDataReceived, evs: list[bytes], data: list[bytes]) -> None:
        st = self._peer_stream(ev.stream_id)
        if st is None:
            return
        if not st.recv_seen:
            st.recv_seen = True
            st.recv = C.QUIC_STREAM_RECV_STATE_RECV
            self._event(C.QUIC_EVENT_STREAM_UPDATE, uapi.StreamUpdate(st.sid, C.QUIC_STREAM_RECV_STATE_RECV).pack(), evs)
        if ev.end_stream:
            st.recv = C.QUIC_STREAM_RECV_STATE_RECVD
            q = self.quic
            assert q is not None
            final = q.stream_final_size(st.sid)
            self._event(C.QUIC_EVENT_STREAM_UPDATE, uapi.StreamUpdate(
                st.sid, C.QUIC_STREAM_RECV_STATE_RECVD, 0, final or 0).pack(), evs)
            self.watch.add(st.sid)
        if st.stop_sent:
            self.consumed(st.sid, len(ev.data))
            return
        payload = ev.data
        for off in range(0, max(len(payload), 1), MAX_ITEM):
            chunk = payload[off:off + MAX_ITEM]
            last = off + MAX_ITEM >= len(payload)
            fin = C.MSG_QUIC_STREAM_FIN if (ev.end_stream and last) else 0
            if chunk or fin:
                data.append(item(K_DATA, st.sid, fin, chunk))

    def _on_reset(self, ev: qe.StreamReset, evs: list[bytes], data: list[bytes]) -> None:
        st = self._peer_stream(ev.stream_id)
        if st is None:
            return
        st.recv = C.QUIC_STREAM_RECV_STATE_RESET_RECVD
        q = self.quic
        assert q is not None
        final = q.stream_final_size(st.sid)
        self._event(C.QUIC_EVENT_STREAM_UPDATE, uapi.StreamUpdate(
            st.sid, C.QUIC_STREAM_RECV_STATE_RESET_RECVD, ev.error_code, final).pack(), evs)
        # unread data of a reset stream is dropped, in our list and in the app's queue
        data[:] = self._drop_data(data, st.sid)
        self.items = self._drop_data(self.items, st.sid)
        data.append(item(K_PURGE, st.sid))
        self.watch.add(st.sid)

    def consumed(self, sid: int, n: int) -> None:
        """Stream bytes left the engine (handed to the application or dropped): credit returns."""
        if self.quic is not None and n:
            self.quic.note_consumed(sid, n)

    def _drop_data(self, items: list[bytes], sid: int) -> list[bytes]:
        keep = []
        for d in items:
            if d[0] == K_DATA and ITEM.unpack_from(d)[2] == sid:
                self.consumed(sid, len(d) - ITEM.size)
            else:
                keep.append(d)
        return keep

    def _on_terminated(self, ev: qe.ConnectionTerminated, evs: list[bytes]) -> None:
        if self.closed:
            return
        self.closed = True
        self.state = C.CLOSED
        if not self.handshake_done:
            self.handshake_error = ev.reason_phrase or f"error {ev.error_code:#x}"
        idle = ev.reason_phrase == "Idle timeout"
        if not getattr(self, "_local_close", False):
            cc = uapi.ConnectionClose(0, 0, b"") if idle else uapi.ConnectionClose(
                ev.error_code, ev.frame_type or 0, ev.reason_phrase.encode()[:63])
            self.peer_close = cc
            self._event(C.QUIC_EVENT_CONNECTION_CLOSE, cc.pack(), evs)

    def _event(self, etype: int, payload: bytes, into: list[bytes] | None = None) -> None:
        if etype not in self.opts.events:
            return
        it = item(K_EVENT, 0, C.MSG_QUIC_NOTIFICATION, bytes([etype]) + payload)
        (self.items if into is None else into).append(it)

    def _poll_streams(self, into: list[bytes] | None = None) -> None:
        """Notice acked FINs and resets (SEND_RECVD / RESET_RECVD) and release finished streams."""
        q = self.quic
        if q is None or not self.watch:
            return
        for sid in list(self.watch):
            st = self.streams.get(sid)
            if st is None:
                self.watch.discard(sid)
                continue
            if st.send in (C.QUIC_STREAM_SEND_STATE_SENT, C.QUIC_STREAM_SEND_STATE_RESET_SENT):
                stream = q.stream(sid)
                if stream is None or stream.sender.is_finished:
                    reset = st.send == C.QUIC_STREAM_SEND_STATE_RESET_SENT
                    st.send = C.QUIC_STREAM_SEND_STATE_RESET_RECVD if reset else C.QUIC_STREAM_SEND_STATE_RECVD
                    self._event(C.QUIC_EVENT_STREAM_UPDATE, uapi.StreamUpdate(
                        sid, st.send, st.reset_code if reset else 0, st.sent if reset else 0).pack(), into)
            send_ok = st.send is None or st.send in SEND_FINAL
            recv_ok = (self.is_local(sid) and bool(sid & 2)) or st.recv in RECV_FINAL
            if send_ok and recv_ok:
                del self.streams[sid]
                self.watch.discard(sid)
                if self.active == sid:
                    self.active = None

    # -- streams: opening and sending ------------------------------------------------------------
    def is_local(self, sid: int) -> bool:
        return (sid & 3) in self.local_types

    def _open_count(self, t: int) -> int:
        return sum(1 for s in self.streams if s & 3 == t)

    def open_local(self, sid: int, sflags: int) -> Stream:
        """Open local stream ``sid`` and the lower unopened ones (Blocked/EAGAIN over the limit)."""
        q = self.quic
        assert q is not None
        t = sid & 3
        nxt = self.next_id[t]
        uni = bool(sid & 2)
        limit = q.remote_stream_limits[1 if uni else 0]
        create = (sid - nxt) // 4 + 1
        if sid // 4 >= limit or create + self._open_count(t) > self.peer_init[t & 2]:
            if sflags & C.MSG_QUIC_STREAM_DONTWAIT:
                raise err(errno.EAGAIN, f"stream {sid} is over the peer's stream limit")
            raise Blocked("streams")
        for s in range(nxt, sid + 4, 4):
            self.streams[s] = Stream(s, C.QUIC_STREAM_SEND_STATE_READY, None)
        self.next_id[t] = sid + 4
        self.active = sid
        return self.streams[sid]

    def resolve(self, sid: int, sflags: int) -> int:
        if sid >= 0:
            return sid
        if self.active is not None:
            return self.active
        t = self.local_types[1] if sflags & C.MSG_QUIC_STREAM_UNI else self.local_types[0]
        return self.next_id[t]

    def stream_for_send(self, sid: int, sflags: int) -> Stream:
        st = self.streams.get(sid)
        if st is None:
            if self.is_local(sid):
                if sid < self.next_id[sid & 3]:
                    raise err(errno.ENOSTR, f"stream {sid} was released")
                if not sflags & C.MSG_QUIC_STREAM_NEW:
                    raise err(errno.EINVAL, f"stream {sid} is not open (MSG_QUIC_STREAM_NEW missing)")
                return self.open_local(sid, sflags)
            raise err(errno.EINVAL, f"peer stream {sid} is not open")
        if st.send is None:
            raise err(errno.EINVAL, f"stream {sid} is receive-only")
        if sflags & C.MSG_QUIC_STREAM_NEW and st.send != C.QUIC_STREAM_SEND_STATE_READY:
            raise err(errno.EINVAL, f"stream {sid} is already open")
        if st.send >= C.QUIC_STREAM_SEND_STATE_SENT:
            raise err(errno.EINVAL, f"stream {sid} is finished or reset")
        return st

    def buffered_bytes(self) -> int:
        q = self.quic
        assert q is not None
        return q.send_buffered_bytes()

    def send_stream(self, sid: int, sflags: int, data: bytes, has_cmsg: bool, nonblock: bool) -> int:
        if self.state in (C.CLOSED, C.LISTENING) or self.closed:
            raise err(errno.EPIPE)
        if not self.handshake_done:
            raise err(errno.EINVAL, "the handshake has not finished (0-RTT is not emulated)")
        fin = bool(sflags & C.MSG_QUIC_STREAM_FIN)
        sid = self.resolve(sid, sflags)
        st = self.stream_for_send(sid, sflags)
        if not data and not fin:
            raise err(errno.EMSGSIZE, "zero-length send without FIN")
        q = self.quic
        assert q is not None
        if data and self.buffered_bytes() + len(data) > SNDBUF and self.buffered_bytes() > 0:
            by_stream = q.stream_flow_blocked(sid)
            # quic.ko: ENOSPC when the stream's flow control is the cause and a STREAM_INFO cmsg was given
            raise Blocked("space", enospc=has_cmsg and by_stream)
        if self.is_local(sid):
            q.create_local_stream(sid)  # an implicitly opened stream aioquic has not created yet
        st.in_quic = True
        q.send_stream_data(sid, bytes(data), end_stream=fin)
        self._piggyback_ack(q)
        st.sent += len(data)
        st.send = C.QUIC_STREAM_SEND_STATE_SENT if fin else C.QUIC_STREAM_SEND_STATE_SEND
        if fin:
            self.watch.add(sid)
            if self.active == sid:
                self.active = None
        return len(data)

    @staticmethod
    def _piggyback_ack(q: KoQuicConnection) -> None:
        """Data we send carries the pending ACK at once, as quic.ko's packets do; aioquic would hold
        it back for the ACK delay and send it separately (events would then come out of order)."""
        q.ack_now()

    def send_datagram(self, data: bytes) -> int:
        if self.state in (C.CLOSED, C.LISTENING) or self.closed:
            raise err(errno.EPIPE)
        q = self.quic
        if q is None or not self.handshake_done:
            raise err(errno.EINVAL, "no datagram support negotiated yet")
        peer_max = q.remote_max_datagram_frame_size
        if not peer_max:
            raise err(errno.EINVAL, "the peer's max_datagram_frame_size is 0")
        # aioquic writes a DATAGRAM frame's length as a two-byte varint: larger ones do not fit that
        if not data or len(data) > min(peer_max, q.max_datagram_size, TWO_BYTE_VARINT_MAX) - 64:
            raise err(errno.EMSGSIZE, "datagram does not fit one packet")
        q.send_datagram_frame(bytes(data))
        return len(data)

    # -- stream options ----------------------------------------------------------------------------
    def stream_open(self, info: uapi.StreamInfo) -> int:
        if self.state in (C.CLOSED, C.LISTENING) or self.closed:
            raise err(errno.EPIPE)
        allowed = C.STREAM_FLAGS
        if info.stream_flags & ~allowed:
            raise err(errno.EINVAL, "bad stream flags")
        sid = info.stream_id
        if sid < 0:
            t = self.local_types[1] if info.stream_flags & C.MSG_QUIC_STREAM_UNI else self.local_types[0]
            sid = self.next_id[t]
        if not self.is_local(sid):
            raise err(errno.EINVAL, "STREAM_OPEN of a peer stream")
        st = self.streams.get(sid)
        if st is not None:
            if st.send != C.QUIC_STREAM_SEND_STATE_READY:
                raise err(errno.EINVAL, f"stream {sid} has already sent data")
            return sid
        if sid < self.next_id[sid & 3]:
            raise err(errno.ENOSTR, f"stream {sid} was released")
        if not self.handshake_done:
            raise err(errno.EINVAL, "the handshake has not finished")
        self.open_local(sid, info.stream_flags)
        return sid

    def stream_reset(self, ei: uapi.ErrInfo) -> None:
        if not self.handshake_done or self.closed:
            raise err(errno.EINVAL, "not established")
        sid = ei.stream_id
        st = self.streams.get(sid)
        if st is None:
            if self.is_local(sid) and sid < self.next_id[sid & 3] or not self.is_local(sid) and sid < self.next_id[sid & 3]:
                raise err(errno.ENOSTR, f"stream {sid} was released")
            raise err(errno.EINVAL, f"stream {sid} is not open")
        if st.send is None:
            raise err(errno.EINVAL, f"stream {sid} is receive-only")
        if st.send in SEND_FINAL or st.send == C.QUIC_STREAM_SEND_STATE_RESET_SENT:
            raise err(errno.EINVAL, f"stream {sid} is finished or already reset")
        q = self.quic
        assert q is not None
        if self.is_local(sid):
            q.create_local_stream(sid)
        st.in_quic = True
        q.reset_stream(sid, ei.errcode)
        st.send = C.QUIC_STREAM_SEND_STATE_RESET_SENT
        st.reset_code = ei.errcode
        self.watch.add(sid)
        if self.active == sid:
            self.active = None

    def stop_sending(self, ei: uapi.ErrInfo) -> None:
        if not self.handshake_done or self.closed:
            raise err(errno.EINVAL, "not established")
        sid = ei.stream_id
        if self.is_local(sid) and sid & 2:
            raise err(errno.EINVAL, f"stream {sid} is send-only")
        st = self.streams.get(sid)
        if st is None:
            if sid < self.next_id[sid & 3]:
                raise err(errno.ENOSTR, f"stream {sid} was released")
            raise err(errno.EINVAL, f"stream {sid} is not open")
        if st.recv in RECV_FINAL:
            raise err(errno.EINVAL, f"stream {sid} has received everything")
        if st.stop_sent:
            raise err(errno.EAGAIN, "STOP_SENDING already sent")
        q = self.quic
        assert q is not None
        if q.stream(sid) is None:
            raise err(errno.EINVAL, f"stream {sid} is not open")
        q.stop_stream(sid, ei.errcode)
        st.stop_sent = True
        self.items = self._drop_data(self.items, sid)

    # -- connection -------------------------------------------------------------------------------
    def key_update(self) -> None:
        if not self.handshake_done or self.closed:
            raise err(errno.EPIPE)
        if self.ku_pending:
            raise err(errno.EINVAL, "a key update is still pending")
        q = self.quic
        assert q is not None
        self.ku_pending = True
        self.ku_sent = False
        q.request_key_update()

    def finish(self) -> None:
        """The engine forgets this connection: write out its qlog trace (aioquic ends a trace only
        after the closing period, which a dropped connection no longer waits for)."""
        q = self.quic
        if q is not None:
            q.end_qlog_trace()

    def close(self, now: float) -> None:
        """close()/shutdown(SHUT_WR): application close with the CONNECTION_CLOSE option's values."""
        if self.closed or self.quic is None:
            self.closed = True
            self.state = C.CLOSED
            return
        self._local_close = True
        if self.handshake_done:
            self.quic.close(error_code=self.opts.close_errcode, frame_type=None,
                            reason_phrase=self.opts.close_phrase.decode(errors="replace"))
        else:
            self.quic.close(error_code=C.QUIC_TRANSPORT_ERROR_APPLICATION, frame_type=0,
                            reason_phrase="")
        self.closed = True
        self.state = C.CLOSED
