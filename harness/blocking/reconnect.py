"""An SMB client that survives transport failures (the I/O adapter of harness/smb/reconnect.py).

    client = ResilientClient("127.0.0.1", port, transport="tcp", username="u", password="p",
                             handles="durable2", timeout=2.0)
    with client.share("data") as share:
        share.put_bytes("a.bin", data)     # a reset, a blackhole or a server restart in the middle
                                           # costs time, not an error

Why a subclass of :class:`~harness.blocking.client.SMBClient`: the blocking API (``send``/``wait`` with
MessageIds, pipelined READ/WRITE) is unchanged, so every helper of :class:`Share` gets reconnect for
free.  The application keeps the MessageIds, TreeIds and FileIds it was given; after a reconnect they
are translated to the new connection's.

What counts as a transport failure: TransportError (reset, clean close), OSError, and a request that
got no answer within ``timeout`` (blackhole).  Recovery is bounded by ``reconnect_timeout``; past it
the failure reaches the application as :class:`ReconnectFailed`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from harness.blocking.client import SMBClient
from harness.smb import messages as m
from harness.smb import reconnect as rc
from harness.smb.client import ClientConnection, Response, SMBError
from harness.smb.constants import UNSOLICITED_MESSAGE_ID, Command, NtStatus
from harness.smb.errors import ReconnectError, SMBProtocolError
from harness.transport import Transport, TransportError, connect

FAILURES = (TransportError, OSError, TimeoutError, EOFError)


class ReconnectFailed(ReconnectError):
    """The client could not get back to the server within ``reconnect_timeout``."""


class ResilientClient(SMBClient):
    def __init__(self, host: str, port: int | None = None, *, transport: str = "tcp", handles: str = "durable2",
                 reconnect_timeout: float = 30.0, durable_timeout_ms: int = 0,
                 transport_factory: Callable[[], Transport] | None = None, **kwargs) -> None:
        if handles not in rc.HANDLE_TYPES:
            raise ValueError(f"handles must be one of {rc.HANDLE_TYPES}, not {handles!r}")
        timeout = kwargs.get("timeout", 30.0)
        options = {k: kwargs.pop(k) for k in list(kwargs) if k in ("ca", "server_name_quic", "cert", "key")}
        if transport == "quic":
            options.setdefault("server_name", kwargs.get("server_name") or host)
        self.transport_factory = transport_factory or (
            lambda: connect(transport, host, port, timeout=timeout, **options))
        self.handles = handles
        self.reconnect_timeout = reconnect_timeout
        self.durable_timeout_ms = durable_timeout_ms
        self.outstanding: dict[int, rc.Outstanding] = {}  # application MessageId -> request
        self._done: dict[int, Response] = {}  # answers that arrived before a failure, by application id
        self._next_app_mid = 1 << 48  # application MessageIds never collide with a connection's
        self.file_ids: dict[bytes, bytes] = {}  # application FileId -> current FileId
        self.open_handles: dict[bytes, rc.Handle] = {}
        self.tree_ids: dict[int, int] = {}  # application TreeId -> current TreeId
        self.tree_names: dict[int, str] = {}
        self.channel_sequence = 0
        self.reconnects = 0
        self.replayed = 0
        self.events: list[tuple[str, float]] = []  # ("failure"|"reconnected"|"first-io", monotonic)
        self._first_io_pending = False
        self._gen = 0
        super().__init__(host, port, transport=transport, transport_obj=self.transport_factory(), **kwargs)

    # ------------------------------------------------------------------ sending

    def _ensure_credits(self, payload: int) -> None:
        """A replayed burst can need more credits than a new connection has: read replies (they grant
        credits) while requests are in flight, else ask for credits with an ECHO."""
        need = self.conn.charge_for(payload)
        while self.conn.credits < need:
            inflight = [o for o in self.outstanding.values() if o.extra.get("gen") == self._gen
                        and o.mid >= 0 and o.mid not in self._responses and o.app_mid not in self._done]
            if inflight:
                for response in self.conn.receive(self.transport.recv_pdu(self.timeout), self.sessions):
                    mid = response.header.message_id
                    if mid == UNSOLICITED_MESSAGE_ID:
                        self.notifications.append(response)
                    elif not (response.header.status == NtStatus.PENDING and response.header.is_async):
                        self._responses[mid] = response
                continue
            raw, mid = self.conn.build(Command.ECHO, m.EchoRequest(), self.session, credits_wanted=need)
            self.transport.send_pdu(self.conn.seal([raw], self.session))
            SMBClient.wait(self, mid)

    def _send_now(self, out: rc.Outstanding, replay: bool) -> None:
        self._ensure_credits(out.payload)
        out.extra["gen"] = self._gen
        body = rc.translate(out.body, self.file_ids)
        tree = self.tree_ids.get(out.app_tree, out.app_tree)
        parts, mid = self.conn.build_parts(out.command, body, self.session, tree, out.payload)
        parts[0] = rc.mark(parts[0], self.channel_sequence, replay)
        out.mid = mid
        self.transport.send_pdu(self.conn.seal_parts(parts, self.session, tree))

    def send(self, command: int, body: m.Message, tree_id: int = 0, payload: int = 0) -> int:
        self._next_app_mid += 1
        out = rc.Outstanding(self._next_app_mid, command, body, tree_id, payload, -1)
        if command == Command.CREATE:
            out.body, out.create_guid, out.lease_key = rc.durable_create(body, self.handles, self.durable_timeout_ms)
            out.kind = self.handles if out.body is not body else "none"
        self.outstanding[out.app_mid] = out
        try:
            self._send_now(out, replay=False)
        except FAILURES:
            self._recover()
        return out.app_mid

    def wait(self, message_id: int) -> Response:
        while True:
            out = self.outstanding.get(message_id)
            if out is None:
                return super().wait(message_id)
            if message_id in self._done:
                response = self._done.pop(message_id)
            else:
                try:
                    response = super().wait(out.mid)
                except (*FAILURES, SMBProtocolError):  # SMBProtocolError: a reply cut short
                    self._recover()
                    continue
            status = response.header.status
            if status == NtStatus.FILE_NOT_AVAILABLE and out.command in rc.REPLAYABLE_ON_FILE_NOT_AVAILABLE \
                    and out.replays < 3:
                out.replays += 1
                self.replayed += 1
                try:
                    self._send_now(out, replay=True)
                except FAILURES:
                    self._recover()
                continue
            if status == NtStatus.FILE_CLOSED and out.command == Command.CLOSE and out.extra.get("replayed"):
                # The CLOSE ran before the connection died and only its answer was lost: the handle
                # could not come back because it is closed.  That is the CLOSE's success.
                response = Response(dataclasses.replace(response.header, status=NtStatus.SUCCESS),
                                    m.CloseResponse(), response.raw)
            del self.outstanding[message_id]
            self._after(out, response)
            if self._first_io_pending and response.header.status == NtStatus.SUCCESS:
                self._first_io_pending = False
                self.events.append(("first-io", time.monotonic()))
            return response

    def _after(self, out: rc.Outstanding, response: Response) -> None:
        """Keep the handle registry up to date from the replies the application gets."""
        if response.header.status != NtStatus.SUCCESS:
            return
        if out.command == Command.CREATE:
            kind = rc.granted_kind(out.kind, response.body) if out.kind != "none" else "none"
            file_id = response.body.file_id
            self.file_ids[file_id] = file_id
            self.open_handles[file_id] = rc.Handle(kind, file_id, file_id, out.app_tree, out.body,
                                                   out.create_guid, out.lease_key)
        elif out.command == Command.CLOSE:
            self.file_ids.pop(out.body.file_id, None)
            self.open_handles.pop(out.body.file_id, None)

    # ------------------------------------------------------------------ trees

    def share(self, name: str):
        share = super().share(name)
        self.tree_ids[share.tree_id] = share.tree_id
        self.tree_names[share.tree_id] = name
        return share

    # ------------------------------------------------------------------ recovery

    def _recover(self) -> None:
        """Rules 2 and 3 of harness/smb/reconnect.py: new connection, session, trees, handles, replay."""
        self.events.append(("failure", time.monotonic()))
        deadline = time.monotonic() + self.reconnect_timeout
        old_session = self.session.session_id if self.session else 0
        try:
            self.transport.close()
        except FAILURES:
            pass
        last: BaseException | None = None
        while True:
            if time.monotonic() > deadline:
                raise ReconnectFailed(f"no reconnect within {self.reconnect_timeout}s: {last}") from last
            try:
                self._connect_again(old_session)
                break
            except (*FAILURES, SMBProtocolError, SMBError) as exc:
                last = exc
                try:
                    self.transport.close()
                except FAILURES:
                    pass
                time.sleep(0.05)
        self.reconnects += 1
        self.events.append(("reconnected", time.monotonic()))
        self._first_io_pending = True

    def _connect_again(self, old_session: int) -> None:
        guid = self.conn.client_guid
        self._gen += 1  # requests sent from now on belong to the new connection
        self.transport = self.transport_factory()
        old = self.conn
        self.conn = ClientConnection(old.transport, old.server_name, ciphers=old.ciphers,
                                     signing_algorithms=old.signing_algorithms, require_signing=old.require_signing,
                                     encrypt=old.want_encrypt, accept_transport_security=old.want_transport_security,
                                     dialects=old.dialects)
        self.conn.client_guid = guid
        self.sessions.clear()
        for out in self.outstanding.values():
            if out.mid in self._responses:
                self._done[out.app_mid] = self._responses.pop(out.mid)
        self._responses = {}
        self._negotiate()
        self._login(previous_session_id=old_session)
        self.channel_sequence = (self.channel_sequence + 1) & 0xFFFF
        self.conn.channel_sequence = self.channel_sequence
        for app_tree, name in self.tree_names.items():
            path = f"\\\\{self.conn.server_name}\\{name}"
            response = SMBClient.wait(self, SMBClient.send(self, Command.TREE_CONNECT, m.TreeConnectRequest(path)))
            if response.header.status != NtStatus.SUCCESS:
                raise SMBError(response.header.status, Command.TREE_CONNECT)
            self.tree_ids[app_tree] = response.header.tree_id
            self.session.trees[response.header.tree_id] = self.conn.tree_encrypts(response.body)
        for handle in list(self.open_handles.values()):
            self._reopen(handle)
        for out in sorted(self.outstanding.values(), key=lambda o: o.app_mid):
            if out.app_mid in self._done:
                continue
            self.replayed += 1
            out.extra["replayed"] = True
            self._send_now(out, replay=True)

    def _reopen(self, handle: rc.Handle) -> None:
        tree = self.tree_ids.get(handle.app_tree, handle.app_tree)
        handle.file_id = self.file_ids.get(handle.app_file_id, handle.file_id)
        response = SMBClient.wait(self, SMBClient.send(self, Command.CREATE, rc.reopen_request(handle), tree))
        if response.header.status != NtStatus.SUCCESS:
            handle.lost = response.header.status
            self.open_handles.pop(handle.app_file_id, None)
            self.file_ids[handle.app_file_id] = b"\x00" * 16  # later requests fail with FILE_CLOSED
            return
        self.file_ids[handle.app_file_id] = response.body.file_id
        handle.file_id = response.body.file_id

    def close(self) -> None:
        self.reconnect_timeout = min(self.reconnect_timeout, 2.0)
        super().close()


__all__ = ["ReconnectFailed", "ResilientClient"]
