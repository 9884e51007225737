"""Resumption state of a connection: session tickets, NEW_TOKEN, and stream data sent as 0-RTT.

Part of Connection (core.py), split off so each file holds one concern. quic.ko's rules kept here: a
client's stream data written before its handshake leaves as 0-RTT when it resumes a session (within
the stream limits the peer granted in that session), otherwise after the handshake; a ticket is the
raw NewSessionTicket message the application can read back and hand to a later socket; a server
sends NEW_TOKEN when the handshake completes and on setsockopt(TOKEN).
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Any

from . import constants as C
from .items import Options, Stream, err

if TYPE_CHECKING:
    from .aio import KoQuicConnection


class ResumptionMixin:
    """The 0-RTT, ticket and token part of Connection; self is the connection."""

    opts: Options
    quic: KoQuicConnection | None
    streams: dict[int, Stream]
    next_id: dict[int, int]
    active: int | None
    closed: bool
    handshake_done: bool
    watch: set[int]
    ticket: bytes | None
    session: Any
    early: list[tuple[int, bytes, bool]]
    early_limits: tuple[int, int] | None
    early_sent: int

    if TYPE_CHECKING:
        def _event(self, etype: int, payload: bytes, into: list[bytes] | None = None) -> None: ...
        def is_local(self, sid: int) -> bool: ...
        def resolve(self, sid: int, sflags: int) -> int: ...

    def send_early(self, sid: int, sflags: int, data: bytes) -> int:
        """Client, before the handshake (quic.ko: after setting the saved remote transport parameters):
        the data is queued and goes out in 0-RTT packets when the handshake resumes a session whose
        ticket allows early data, otherwise in 1-RTT after the handshake. Stream IDs beyond the saved
        limits are EINVAL, not a wait, as quic.ko has it for 0-RTT sends."""
        if self.early_limits is None:
            raise err(errno.EINVAL, "the handshake has not finished (0-RTT needs the saved remote transport parameters)")
        if self.quic is not None:
            raise err(errno.EINVAL, "the handshake is in progress")
        fin = bool(sflags & C.MSG_QUIC_STREAM_FIN)
        sid = self.resolve(sid, sflags)
        if not self.is_local(sid):
            raise err(errno.EINVAL, f"stream {sid} is not ours")
        limit = self.early_limits[1] if sid & 2 else self.early_limits[0]
        if sid // 4 >= limit:
            raise err(errno.EINVAL, f"stream {sid} is beyond the saved stream limit {limit}")
        st = self.streams.get(sid)
        if st is None:
            if sid < self.next_id[sid & 3]:
                raise err(errno.ENOSTR, f"stream {sid} was released")
            if not sflags & C.MSG_QUIC_STREAM_NEW:
                raise err(errno.EINVAL, f"stream {sid} is not open (MSG_QUIC_STREAM_NEW missing)")
            for n in range(self.next_id[sid & 3], sid + 4, 4):
                self.streams[n] = Stream(n, C.QUIC_STREAM_SEND_STATE_READY, None)
            self.next_id[sid & 3] = sid + 4
            self.active = sid
            st = self.streams[sid]
        if st.send is not None and st.send >= C.QUIC_STREAM_SEND_STATE_SENT:
            raise err(errno.EINVAL, f"stream {sid} is finished")
        if not data and not fin:
            raise err(errno.EMSGSIZE, "zero-length send without FIN")
        self.early.append((sid, bytes(data), fin))
        st.sent += len(data)
        st.send = C.QUIC_STREAM_SEND_STATE_SENT if fin else C.QUIC_STREAM_SEND_STATE_SEND
        if fin:
            self.watch.add(sid)
            if self.active == sid:
                self.active = None
        return len(data)

    def _release_early(self) -> None:
        """Hand the queued early data to aioquic right after connect(): with 0-RTT keys (a resumed
        session that allows early data) it leaves in 0-RTT packets, otherwise it waits for 1-RTT."""
        q = self.quic
        assert q is not None
        for sid, data, fin in self.early:
            q.create_local_stream(sid)
            self.streams[sid].in_quic = True
            q.send_stream_data(sid, data, end_stream=fin)
            self.early_sent += len(data) + fin
        self.early.clear()

    early_sent = 0  # client: bytes queued before the handshake (0-RTT candidates)

    @property
    def early_data_accepted(self) -> bool:
        """Client: data was sent before the handshake and the server accepted it as 0-RTT (aioquic
        says "accepted" whenever the server would take early data, sent or not)."""
        q = self.quic
        return bool(self.early_sent and q is not None and q.tls is not None and q.tls.early_data_accepted)

    @property
    def session_resumed(self) -> bool:
        q = self.quic
        return bool(q is not None and q.tls is not None and q.tls.session_resumed)

    def _on_session(self, ticket: Any) -> None:
        """Client: aioquic's parsed ticket with its resumption secret (libquic's session data)."""
        if self.session is None:
            self.session = ticket

    def _on_ticket(self, raw: bytes) -> None:
        """Client: the first NewSessionTicket is kept (getsockopt SESSION_TICKET) and reported."""
        if self.ticket is None:
            self.ticket = raw
            self._event(C.QUIC_EVENT_NEW_SESSION_TICKET, raw)

    def _on_new_token(self, token: bytes) -> None:
        self.opts.token = bytes(token)
        self._event(C.QUIC_EVENT_NEW_TOKEN, bytes(token))

    def new_token(self) -> None:
        """Server setsockopt(TOKEN): send a fresh NEW_TOKEN (EAGAIN while the last one is unacked)."""
        q = self.quic
        if q is None or not self.handshake_done or self.closed:
            raise err(errno.EINVAL, "not established")
        if q.token_unacked or q.token_pending is not None:
            raise err(errno.EAGAIN, "the last NEW_TOKEN is not acknowledged yet")
        q.queue_new_token(os.urandom(32))
