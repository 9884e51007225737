"""Multichannel SMB client: one session over several connections (MS-SMB2 §3.2.4.2.3, §3.2.5.3.3).

    client = MultiChannelClient("127.0.0.1", port, username="u", password="p")
    client.add_channel("quic", "127.0.0.1", quic_port, server_name="srv", ca=ca)   # bind a 2nd channel
    client.bind_offered()          # or: bind to what FSCTL_QUERY_NETWORK_INTERFACE_INFO offers
    with client.share("data") as share:
        share.put_bytes("big.bin", data)   # WRITEs spread over both channels; one may die

Why it is built this way:

- Transport-agnostic: a channel is a :class:`~harness.transport.Transport` (tcp, nbt, quic, smbdirect)
  plus its own :class:`~harness.smb.client.ClientConnection` (MessageIds and credits are per
  connection) and a view of the session whose signing key is the channel's own.  Encryption keys and
  the nonce counter are the session's, shared by every channel.
- Binding (§3.2.4.1.1, §3.3.5.5.3): the new connection negotiates the primary's dialect,
  cipher and signing algorithm with the same ClientGuid, then sends SESSION_SETUP with
  SMB2_SESSION_FLAG_BINDING and the session's id, signed with Session.SigningKey.  The final response
  is verified with the new Channel.SigningKey (3.1.1: derived over this connection's preauth hash).
- Discovery (:meth:`bind_offered`): the server's interface list says where else it listens; an
  RDMA_CAPABLE address gets an SMB Direct channel, and READ/WRITE larger than the RDMA threshold
  then go on that channel with their data moved by RDMA (harness/smb/rdma_channel.py), since only
  the connection that registered a buffer can name it.
- Spreading: requests go round-robin over live channels that have the credits for them.
- Channel loss: the channel is dropped, the channel sequence goes up, and every request that was
  outstanding on it is sent again on a survivor with SMB2_FLAGS_REPLAY_OPERATION; the application
  sees no error.  A lost channel is bound again (:meth:`restore_channels`) before the next request.
- Files opened through this client ask for a durable v2 handle (CreateGuid, lease RH) so replayed
  CREATEs are recognised by the server.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

from harness.blocking.client import SMBClient, inline_io_limit
from harness.smb import messages as m
from harness.smb import rdma_channel
from harness.smb import reconnect as rc
from harness.smb.client import ClientConnection, ClientSession, Response, SMBError
from harness.smb.constants import (
    UNSOLICITED_MESSAGE_ID,
    Capabilities,
    Command,
    Dialect,
    Fsctl,
    InterfaceCapability,
    NtStatus,
    SecurityMode,
    SessionSetupFlags,
)
from harness.smb.crypto import NonceGenerator, derive_session_keys, sign_message, verify_signature
from harness.smb.errors import SMBProtocolError
from harness.transport import DEFAULT_PORTS, Transport, TransportError, connect

SEND_FAILURES = (TransportError, OSError, TimeoutError, EOFError)
FAILURES = (*SEND_FAILURES, SMBProtocolError)  # a reply cut short by a dying transport
ALL_FF = b"\xff" * 16


@dataclass
class Channel:
    transport: Transport
    conn: ClientConnection
    session: ClientSession
    how: tuple  # (kind, host, port, options) to bind it again
    alive: bool = True
    responses: dict[int, Response] = field(default_factory=dict)
    sent: int = 0  # requests sent on it (for the spreading test and the benchmark)


class MultiChannelClient(SMBClient):
    def __init__(self, host: str, port: int | None = None, *, transport: str = "tcp", handles: str = "durable2",
                 **kwargs) -> None:
        self.handles = handles
        self.primary_how = (transport, host, port, {k: v for k, v in kwargs.items() if k in ("ca",)})
        super().__init__(host, port, transport=transport, **kwargs)
        assert self.session is not None  # the constructor logged in (or raised)
        self.channels: list[Channel] = [Channel(self.transport, self.conn, self.session, self.primary_how)]
        self.outstanding: dict[int, tuple[Channel, int, rc.Outstanding]] = {}
        self.done: dict[int, Response] = {}
        self.channel_sequence = 0
        self.lost: list[tuple] = []
        self.replayed = 0
        self.losses = 0
        self._rr = 0
        self._app_mid = 1 << 48
        self.events: list[tuple[str, float]] = []  # ("lost"|"restored"|"first-io", monotonic)
        self._first_io_pending = False

    # ------------------------------------------------------------------ discovery and binding

    def interfaces(self) -> list[m.NetworkInterfaceInfo]:
        """FSCTL_QUERY_NETWORK_INTERFACE_INFO on IPC$ (§3.2.4.20.10)."""
        ipc = SMBClient.share(self, "IPC$")
        body = m.IoctlRequest(ctl_code=Fsctl.QUERY_NETWORK_INTERFACE_INFO, file_id=ALL_FF, max_output_response=65536)
        response = self.request(Command.IOCTL, body, ipc.tree_id)
        ipc.disconnect()
        return m.NetworkInterfaceInfo.unpack_list(response.body_as(m.IoctlResponse).output)

    def bind_offered(self, max_channels: int = 32, offered: list[m.NetworkInterfaceInfo] | None = None,
                     **quic_options) -> list[Channel]:
        """Bind a channel to every address the server offers (§3.2.4.20.10 then §3.2.4.2.3), the way
        Windows does once a session is up: RDMA_CAPABLE addresses over SMB Direct (large READ/WRITE
        then move by RDMA on that channel), the others over TCP, and over QUIC where no TCP listener
        answers and ``quic_options`` (``ca`` or ``insecure``) say QUIC is wanted.  Nothing is bound
        without SMB2_GLOBAL_CAP_MULTI_CHANNEL.  Addresses already bound are skipped; one that fails
        to bind is skipped too (the session goes on with the channels it has).  ``offered``: an
        interface list already asked for (else it is asked here)."""
        if not self.multichannel or self.conn.dialect < Dialect.SMB_3_0:
            return []
        bound = {(c.how[1], c.how[2] or DEFAULT_PORTS[c.how[0]]) for c in self.channels}
        added: list[Channel] = []
        for entry in self.interfaces() if offered is None else offered:
            if len(self.channels) >= max_channels:
                break
            rdma = bool(entry.capability & InterfaceCapability.RDMA_CAPABLE)
            kinds = ["smbdirect"] if rdma else ["tcp"] + (["quic"] if quic_options else [])
            for kind in kinds:
                port = entry.port or DEFAULT_PORTS[kind]
                if (entry.address, port) in bound:
                    break
                try:
                    channel = self.add_channel(kind, entry.address, port, **(quic_options if kind == "quic" else {}))
                except (*FAILURES, SMBError):
                    continue
                bound.add((entry.address, port))
                added.append(channel)
                break
        return added

    # ------------------------------------------------------------------ RDMA on an SMB Direct channel

    def _rdma_channel(self) -> Channel | None:
        return next((c for c in self.channels if c.alive and getattr(c.transport, "supports_rdma", False)), None)

    def rdma_port(self):
        """READ/WRITE buffers are registered with the SMB Direct channel that will carry the request."""
        channel = self._rdma_channel()
        return channel.transport if channel is not None else self.transport

    def rdma_for(self, tree_id: int, length: int) -> bool:
        channel = self._rdma_channel()
        return self.rdma and channel is not None and rdma_channel.client_uses_rdma(
            channel.conn, channel.session, tree_id, channel.transport, length, self.rdma_threshold)

    def inline_limit(self) -> int:
        """Inline READ/WRITE go round-robin, so they must fit the smallest SMB Direct channel's messages."""
        limits = [limit for c in self._alive() if (limit := inline_io_limit(c.transport)) is not None]
        return min(limits, default=1 << 62)

    @staticmethod
    def _needs_rdma(out: rc.Outstanding) -> bool:
        return out.command in (Command.READ, Command.WRITE) and bool(getattr(out.body, "channel", 0))

    @property
    def multichannel(self) -> bool:
        return bool(self.conn.server_capabilities & Capabilities.MULTI_CHANNEL)

    def add_channel(self, kind: str, host: str, port: int, wrap=None, **options) -> Channel:
        """Connect, negotiate like the primary and bind the session (§3.2.4.2.3).  ``wrap`` may wrap
        the new transport (fault injection)."""
        primary = self.channels[0].conn
        timeout = self.timeout
        if kind == "quic":
            options.setdefault("server_name", primary.server_name)
        transport = connect(kind, host, port, timeout=timeout, **options)
        if wrap is not None:
            transport = wrap(transport)
        try:
            channel = self._bind(transport, (kind, host, port, dict(options)))
        except BaseException:
            transport.close()
            raise
        self.channels.append(channel)
        return channel

    def _bind(self, transport: Transport, how: tuple, *, signing_key: bytes | None = None, sign: bool = True,
              username: str | None = None, password: str | None = None,
              client_guid: bytes | None = None) -> Channel:
        """The binding exchange.  The keyword knobs exist for bad-input tests: another key, no
        signature, another user, another ClientGuid."""
        primary = self.channels[0].conn
        base = self.session
        assert base is not None and base.keys is not None  # channels bind to a session already set up
        request_key = signing_key or base.keys.signing
        conn = ClientConnection(transport.name, primary.server_name,
                                ciphers=(primary.cipher,) if primary.cipher else primary.ciphers,
                                signing_algorithms=(primary.signing_algorithm,),
                                require_signing=primary.require_signing, encrypt=primary.want_encrypt,
                                accept_transport_security=primary.want_transport_security,
                                dialects=(primary.dialect,))
        conn.client_guid = client_guid or primary.client_guid
        conn.channel_sequence = self.channel_sequence
        transport.send_pdu(conn.negotiate_request())
        conn.receive_negotiate(transport.recv_pdu(self.timeout))
        if conn.dialect != primary.dialect:
            raise SMBError(NtStatus.INVALID_PARAMETER, Command.NEGOTIATE, "channel negotiated another dialect")
        from harness.smb.auth import Initiator  # pyspnego: not needed before SESSION_SETUP

        initiator = Initiator(username or self.username, password or self.password, hostname=self.host)
        preauth = conn.preauth.for_session() if conn.dialect == Dialect.SMB_3_1_1 else None
        token = initiator.step(None)
        mode = SecurityMode.SIGNING_ENABLED | (SecurityMode.SIGNING_REQUIRED if conn.require_signing else 0)
        view = ClientSession(session_id=base.session_id)
        while True:
            body = m.SessionSetupRequest(SessionSetupFlags.BINDING, mode, 0, 0, 0, token or b"")
            raw, _mid = conn.build(Command.SESSION_SETUP, body, view)
            if sign:
                raw = sign_message(raw, request_key, conn.signing_algorithm)
            if preauth is not None:
                preauth.add(raw)
            transport.send_pdu(raw)
            (response,) = conn.receive(transport.recv_pdu(self.timeout))
            status = response.header.status
            if status == NtStatus.MORE_PROCESSING_REQUIRED:
                verify_signature(response.raw, base.keys.signing, conn.signing_algorithm)
                if preauth is not None:
                    preauth.add(response.raw)
                token = initiator.step(response.body_as(m.SessionSetupResponse).security_buffer) or b""
                continue
            if status != NtStatus.SUCCESS:
                raise SMBError(status, Command.SESSION_SETUP, "binding")
            final = response.body_as(m.SessionSetupResponse)
            if final.security_buffer:
                initiator.step(final.security_buffer)
            break
        key = derive_session_keys(conn.dialect, initiator.session_key,
                                  preauth.value if preauth is not None else None, conn.cipher).signing
        verify_signature(response.raw, key, conn.signing_algorithm)
        if base.keys.c2s and base.nonces is None:
            base.nonces = NonceGenerator(primary.cipher)
        session = dataclasses.replace(base, keys=dataclasses.replace(base.keys, signing=key), initiator=None)
        session.nonces = base.nonces  # one nonce counter per session, whatever the channel
        session.trees = base.trees
        # A fresh connection holds a handful of credits: ask for a window worth of large I/O at once,
        # or the channel would sit idle while the primary carries every 4 MiB WRITE.
        raw, mid = conn.build(Command.ECHO, m.EchoRequest(), session, credits_wanted=512)
        transport.send_pdu(conn.seal([raw], session))
        (echo,) = conn.receive(transport.recv_pdu(self.timeout), {session.session_id: session})
        if echo.header.status != NtStatus.SUCCESS:
            raise SMBError(echo.header.status, Command.ECHO, "on the new channel")
        return Channel(transport, conn, session, how)

    def restore_channels(self) -> None:
        """Bind again the channels that were lost (best effort: a failure leaves them lost)."""
        for how in list(self.lost):
            kind, host, port, options = how
            try:
                if how == self.primary_how:
                    options = dict(options)
                    if kind == "quic":
                        options.setdefault("server_name", self.channels[0].conn.server_name)
                transport = connect(kind, host, port, timeout=self.timeout, **options)
                try:
                    channel = self._bind(transport, how)
                except BaseException:
                    transport.close()
                    raise
            except (*FAILURES, SMBError):
                continue
            self.lost.remove(how)
            self.channels.append(channel)
            self.events.append(("restored", time.monotonic()))

    # ------------------------------------------------------------------ I/O

    def _alive(self) -> list[Channel]:
        return [c for c in self.channels if c.alive]

    def _pick(self, charge_payload: int, rdma: bool = False) -> Channel:
        """The next live channel with the credits for the request; without one, read replies
        (which grant credits) on a channel that has requests in flight.  ``rdma``: the request
        names registered buffers, only the SMB Direct channel that registered them can carry it."""
        while True:
            alive = self._alive()
            if rdma:
                alive = [c for c in alive if c is self._rdma_channel()]
            if not alive:
                raise TransportError("every channel is lost" if not rdma else "the SMB Direct channel is lost")
            for _ in range(len(alive)):
                self._rr = (self._rr + 1) % len(alive)
                channel = alive[self._rr]
                if channel.conn.credits >= channel.conn.charge_for(charge_payload):
                    return channel
            busy = [ch for ch, mid, _out in self.outstanding.values() if ch.alive and mid >= 0
                    and mid not in ch.responses and ch in alive]
            if not busy:
                return alive[self._rr % len(alive)]  # build_parts reports the shortage
            try:
                self._receive(busy[0])
            except FAILURES:
                self._lose(busy[0])

    def _send_on(self, channel: Channel, out: rc.Outstanding, replay: bool) -> None:
        tree = out.app_tree
        parts, mid = channel.conn.build_parts(out.command, out.body, channel.session, tree, out.payload)
        parts[0] = rc.mark(parts[0], self.channel_sequence, replay)
        out.mid = mid
        self.outstanding[out.app_mid] = (channel, mid, out)
        channel.transport.send_pdu(channel.conn.seal_parts(parts, channel.session, tree))
        channel.sent += 1

    def send(self, command: int, body: m.Message, tree_id: int = 0, payload: int = 0) -> int:
        if self.lost:
            self.restore_channels()
        self._app_mid += 1
        out = rc.Outstanding(self._app_mid, command, body, tree_id, payload, -1)
        if command == Command.CREATE:
            assert isinstance(body, m.CreateRequest), f"CREATE sent with a {type(body).__name__} body"
            out.body, out.create_guid, out.lease_key = rc.durable_create(body, self.handles)
        channel = self._pick(payload, self._needs_rdma(out))
        try:
            self._send_on(channel, out, replay=False)
        except SEND_FAILURES:
            self.outstanding[out.app_mid] = (channel, -1, out)
            self._lose(channel)
        return out.app_mid

    def wait(self, message_id: int, timeout: float | None = None) -> Response:
        while True:
            if message_id in self.done:
                self.outstanding.pop(message_id, None)
                return self.done.pop(message_id)
            entry = self.outstanding.get(message_id)
            if entry is None:
                raise KeyError(f"no request {message_id} outstanding")
            channel, mid, out = entry
            if mid in channel.responses:
                response = channel.responses.pop(mid)
                if response.header.status == NtStatus.FILE_NOT_AVAILABLE and out.replays < 3 \
                        and out.command in rc.REPLAYABLE_ON_FILE_NOT_AVAILABLE:
                    out.replays += 1
                    self._replay(out)
                    continue
                del self.outstanding[message_id]
                if self._first_io_pending and response.header.status == NtStatus.SUCCESS:
                    self._first_io_pending = False
                    self.events.append(("first-io", time.monotonic()))
                return response
            try:
                self._receive(channel, timeout)
            except FAILURES:
                self._lose(channel)

    def _receive(self, channel: Channel, timeout: float | None = None) -> None:
        pdu = channel.transport.recv_pdu(self.timeout if timeout is None else timeout)
        for response in channel.conn.receive(pdu, {channel.session.session_id: channel.session}):
            mid = response.header.message_id
            if mid == UNSOLICITED_MESSAGE_ID:
                self.notifications.append(response)
            elif response.header.status == NtStatus.PENDING and response.header.is_async:
                continue
            else:
                channel.responses[mid] = response

    def _replay(self, out: rc.Outstanding) -> None:
        while True:
            channel = self._pick(out.payload, self._needs_rdma(out))
            try:
                self._send_on(channel, out, replay=True)
                self.replayed += 1
                return
            except SEND_FAILURES:
                self._lose(channel)

    def _lose(self, channel: Channel) -> None:
        """The channel died: drop it, bump the channel sequence, replay what it carried elsewhere."""
        if not channel.alive:
            return
        channel.alive = False
        self.losses += 1
        self.events.append(("lost", time.monotonic()))
        self._first_io_pending = True
        try:
            channel.transport.close()
        except FAILURES:
            pass
        self.channels.remove(channel)
        self.lost.append(channel.how)
        self.channel_sequence = (self.channel_sequence + 1) & 0xFFFF
        for c in self.channels:
            c.conn.channel_sequence = self.channel_sequence
        if not self._alive():
            raise TransportError("the last channel was lost")
        self.transport, self.conn = self.channels[0].transport, self.channels[0].conn
        pending = sorted((out for ch, mid, out in self.outstanding.values() if ch is channel), key=lambda o: o.app_mid)
        for out in pending:
            if out.mid in channel.responses:  # answered before the channel died
                self.done[out.app_mid] = channel.responses.pop(out.mid)
                continue
            self._replay(out)

    def request(self, command: int, body: m.Message, tree_id: int = 0, payload: int = 0,
                ok: tuple[int, ...] = (NtStatus.SUCCESS,)) -> Response:
        response = self.wait(self.send(command, body, tree_id, payload))
        if response.header.status not in ok:
            raise SMBError(response.header.status, command)
        return response

    def close(self) -> None:
        try:
            if self._alive():
                self.request(Command.LOGOFF, m.LogoffRequest())
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass
        finally:
            for channel in self.channels:
                channel.transport.close()


__all__ = ["Channel", "MultiChannelClient"]
