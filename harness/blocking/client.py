"""Blocking SMB client API over any transport (the I/O adapter of harness/smb/client.py).

    with SMBClient("127.0.0.1", port=445, username="u", password="p", encrypt=True) as client:
        with client.share("data") as share:
            share.put_bytes("a.bin", b"...")
            data = share.get_bytes("a.bin")
            names = [e.name for e in share.listdir("")]

Why it pipelines: one request per round trip caps throughput at (chunk / RTT); READ and WRITE keep
up to ``window`` requests in flight, bounded by the credits the server granted (§3.2.4.1.5).
Unsolicited messages (oplock/lease breaks) and interim STATUS_PENDING responses are consumed while
waiting, never mistaken for a reply.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.smb import messages as m
from harness.smb import rdma_channel
from harness.smb.client import (
    CIPHER_NAMES,
    DEFAULT_CIPHERS,
    ClientConnection,
    ClientSession,
    Response,
    SMBError,
)
from harness.smb.constants import (
    UNSOLICITED_MESSAGE_ID,
    AccessMask,
    Command,
    CreateDisposition,
    CreateOptions,
    FileAttributes,
    FileInfoClass,
    InfoType,
    LockFlags,
    NtStatus,
    OplockLevel,
    ShareAccess,
)
from harness.smb.keys import keys_file_text
from harness.smb.messages.create_contexts import RQLS, LeaseV1, LeaseV2, find_context, parse_lease
from harness.transport import Transport, connect

if TYPE_CHECKING:  # the directory, stat and notify codecs load when first used (most clients never do)
    from harness.smb import fscc

ALL_FF = b"\xff" * 16
CHUNK = 4 * 1024 * 1024  # per READ/WRITE (capped by MaxReadSize/MaxWriteSize)


@dataclass
class DirEntry:
    name: str
    size: int
    is_dir: bool
    last_write_time: int
    attributes: int


class SMBClient:
    def __init__(self, host: str, port: int | None = None, *, transport: str = "tcp", username: str = "",
                 password: str = "", encrypt: bool = False, cipher: str | None = None, sign: bool = True,
                 server_name: str | None = None, timeout: float = 30.0, keys_out: str | None = None,
                 window: int = 8, transport_obj: Transport | None = None, accept_transport_security: bool = False,
                 rdma: bool = True, rdma_threshold: int = rdma_channel.RDMA_THRESHOLD, io_size: int = CHUNK,
                 **transport_options) -> None:
        ciphers = (CIPHER_NAMES[cipher.lower()],) if cipher else DEFAULT_CIPHERS
        self.host = host
        self.timeout = timeout
        self.keys_out = keys_out
        self.window = window
        # RDMA channel for READ/WRITE above rdma_threshold when the transport has RDMA and the
        # session neither signs nor encrypts (harness/smb/rdma_channel.py); bytes moved that way:
        self.rdma = rdma
        self.rdma_threshold = rdma_threshold
        self.rdma_bytes = {"read": 0, "write": 0}
        self.io_size = io_size  # bytes per READ/WRITE request (capped by MaxReadSize/MaxWriteSize)
        self.username = username
        self.password = password
        if transport == "quic":
            transport_options.setdefault("server_name", server_name or host)
        self.transport = transport_obj or connect(transport, host, port, timeout=timeout, **transport_options)
        self.conn = ClientConnection(self.transport.name, server_name or host, ciphers=ciphers, require_signing=sign,
                                     encrypt=encrypt, accept_transport_security=accept_transport_security)
        self.sessions: dict[int, ClientSession] = {}
        self.session: ClientSession | None = None
        self._responses: dict[int, Response] = {}
        self.async_ids: dict[int, int] = {}  # MessageId -> AsyncId of an interim STATUS_PENDING response
        self.notifications: list[Response] = []
        # Oplock and lease breaks (§3.2.5.19): kept in ``notifications``; ``on_break`` (a test's
        # hook) sees each one first, and unless it returns True the break is acknowledged with what
        # the server asked for (``auto_ack``). Acknowledgments are sent without waiting; their
        # responses land in ``break_acks``.
        self.on_break: Callable[[Response], bool | None] | None = None
        self.auto_ack = True
        self.break_acks: list[Response] = []
        self._ack_mids: set[int] = set()
        self._break_trees: dict[bytes, int] = {}  # FileId or LeaseKey -> the tree an acknowledgment goes to
        self._oplocks: dict[bytes, int] = {}  # FileId -> the oplock level held
        try:
            self._negotiate()
            self._login()
        except BaseException:
            self.transport.close()
            raise

    # ------------------------------------------------------------------ plumbing

    def _negotiate(self) -> None:
        self.transport.send_pdu(self.conn.negotiate_request())
        self.conn.receive_negotiate(self.transport.recv_pdu(self.timeout))

    def _login(self, previous_session_id: int = 0) -> None:
        from harness.smb.auth import Initiator  # pyspnego: not needed before SESSION_SETUP

        initiator = Initiator(self.username, self.password, hostname=self.host)
        session = ClientSession(initiator=initiator, previous_session_id=previous_session_id)
        token = initiator.step(None)
        while True:
            raw = self.conn.session_setup_request(session, token)
            self.transport.send_pdu(raw)
            response = self._wait_session_setup()
            if session.session_id == 0 and response.header.session_id:
                session.session_id = response.header.session_id
            self.sessions[response.header.session_id] = session
            token = self.conn.session_setup_response(session, response)
            if token is None:
                break
        self.session = session
        if self.keys_out and self.conn.key_records:
            with open(self.keys_out, "a") as handle:
                handle.write(keys_file_text(self.conn.key_records))

    def _wait_session_setup(self) -> Response:
        """The SESSION_SETUP response; whatever else arrives first is kept or handled as usual."""
        while True:
            for response in self.conn.receive(self.transport.recv_pdu(self.timeout), self.sessions):
                if response.header.message_id == UNSOLICITED_MESSAGE_ID:
                    self._on_unsolicited(response)
                    continue
                if response.header.status == NtStatus.PENDING and response.header.is_async:
                    continue
                if response.header.command != Command.SESSION_SETUP:  # e.g. an async completion
                    self._responses[response.header.message_id] = response
                    continue
                return response

    def send(self, command: int, body: m.Message, tree_id: int = 0, payload: int = 0) -> int:
        parts, message_id = self.conn.build_parts(command, body, self.session, tree_id, payload)
        self.transport.send_pdu(self.conn.seal_parts(parts, self.session, tree_id))
        return message_id

    def _receive_one(self, timeout: float) -> None:
        for response in self.conn.receive(self.transport.recv_pdu(timeout), self.sessions):
            mid = response.header.message_id
            if mid == UNSOLICITED_MESSAGE_ID:
                self._on_unsolicited(response)
            elif response.header.status == NtStatus.PENDING and response.header.is_async:
                self.async_ids[mid] = response.header.async_id
            elif mid in self._ack_mids:
                self._ack_mids.discard(mid)
                self.break_acks.append(response)
            else:
                self._responses[mid] = response

    def wait(self, message_id: int, timeout: float | None = None) -> Response:
        """The final response to ``message_id`` (interim STATUS_PENDING responses are noted in
        ``async_ids``); raises TimeoutError after ``timeout`` (default: the client's) without one."""
        while message_id not in self._responses:
            self._receive_one(self.timeout if timeout is None else timeout)
        self.async_ids.pop(message_id, None)
        return self._responses.pop(message_id)

    def wait_interim(self, message_id: int, timeout: float | None = None) -> int | None:
        """The AsyncId of the interim response to ``message_id``; None when the final response
        came first (it stays for :meth:`wait`)."""
        while message_id not in self.async_ids and message_id not in self._responses:
            self._receive_one(self.timeout if timeout is None else timeout)
        return self.async_ids.get(message_id)

    def cancel(self, message_id: int) -> None:
        """CANCEL a request still waiting (by its AsyncId when the interim response came)."""
        self.transport.send_pdu(self.conn.cancel_request(message_id, self.async_ids.get(message_id, 0),
                                                         self.session))

    def _on_unsolicited(self, response: Response) -> None:
        self.notifications.append(response)
        if self.on_break is not None and self.on_break(response):
            return
        body = response.body
        if isinstance(body, m.OplockBreakNotification):
            # Only a break of EXCLUSIVE or BATCH wants an acknowledgment; II -> NONE is news only.
            held = self._oplocks.get(bytes(body.file_id), OplockLevel.NONE)
            self._oplocks[bytes(body.file_id)] = body.oplock_level
            if held not in (OplockLevel.EXCLUSIVE, OplockLevel.BATCH):
                return
        if self.auto_ack and response.header.command == Command.OPLOCK_BREAK:
            self.acknowledge(response)

    def acknowledge(self, notification: Response, level_or_state: int | None = None) -> int | None:
        """Acknowledge a break (§3.2.4.24, 2.2.24): an oplock with the level it was broken to, a
        lease with the new state (or what is given). Returns the MessageId; None when a lease break
        needs no acknowledgment. The response is collected into ``break_acks``."""
        body = notification.body
        if isinstance(body, m.LeaseBreakNotification):
            if not body.flags & 1:  # SMB2_NOTIFY_BREAK_LEASE_FLAG_ACK_REQUIRED
                return None
            state = body.new_lease_state if level_or_state is None else level_or_state
            ack: m.Message = m.LeaseBreakAcknowledgment(lease_key=body.lease_key, lease_state=state)
            tree = self._break_trees.get(bytes(body.lease_key), 0)
        else:
            oplock = notification.body_as(m.OplockBreakNotification)
            level = oplock.oplock_level if level_or_state is None else level_or_state
            ack = m.OplockBreakAcknowledgment(file_id=oplock.file_id, oplock_level=level)
            tree = self._break_trees.get(bytes(oplock.file_id), 0)
        mid = self.send(Command.OPLOCK_BREAK, ack, tree)
        self._ack_mids.add(mid)
        return mid

    def poll(self, seconds: float) -> list[Response]:
        """Read what the server sends unasked for ``seconds`` (breaks, late acknowledgment
        responses); the breaks that arrived in that time."""
        before = len(self.notifications)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                self._receive_one(left)
            except TimeoutError:
                break
        return self.notifications[before:]

    def request(self, command: int, body: m.Message, tree_id: int = 0, payload: int = 0,
                ok: tuple[int, ...] = (NtStatus.SUCCESS,)) -> Response:
        response = self.wait(self.send(command, body, tree_id, payload))
        if response.header.status not in ok:
            raise SMBError(response.header.status, command)
        return response

    def compound(self, requests: list[tuple[int, m.Message]], tree_id: int = 0, related: bool = True) -> list[Response]:
        """Send requests as one compound chain; related chains pass the FileId along (ALL_FF)."""
        raws, mids = [], []
        for command, body in requests:
            raw, mid = self.conn.build(command, body, self.session, tree_id)
            raws.append(raw)
            mids.append(mid)
        self.transport.send_pdu(self.conn.seal(raws, self.session, tree_id, related=related))
        return [self.wait(mid) for mid in mids]

    def echo(self) -> None:
        self.request(Command.ECHO, m.EchoRequest())

    def share(self, name: str) -> Share:
        path = f"\\\\{self.conn.server_name}\\{name}"
        response = self.request(Command.TREE_CONNECT, m.TreeConnectRequest(path))
        tree_id = response.header.tree_id
        self.logged_on().trees[tree_id] = self.conn.tree_encrypts(response.body_as(m.TreeConnectResponse))
        return Share(self, tree_id, name)

    def logged_on(self) -> ClientSession:
        """The session requests go out on: the constructor logs on (or raises), so only a call
        from inside it before that finds none."""
        if self.session is None:
            raise RuntimeError("SMB client: not logged on yet")
        return self.session

    def rdma_for(self, tree_id: int, length: int) -> bool:
        """Whether a READ/WRITE of ``length`` bytes on ``tree_id`` uses an RDMA channel."""
        return self.rdma and rdma_channel.client_uses_rdma(self.conn, self.session, tree_id, self.transport, length,
                                                           self.rdma_threshold)

    def rdma_port(self):
        """The transport whose RDMA registrations READ/WRITE descriptors name (a multichannel
        client's SMB Direct channel; here the one connection)."""
        return self.transport

    def inline_limit(self) -> int:
        """The largest READ/WRITE payload that fits one message of the transport (SMB Direct:
        the peer's MaxFragmentedSize less the SMB2 headers; unlimited elsewhere)."""
        limit = inline_io_limit(self.transport)
        return 1 << 62 if limit is None else limit

    def close(self) -> None:
        try:
            if self.session is not None and self.session.keys is not None:
                self.request(Command.LOGOFF, m.LogoffRequest())
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass
        finally:
            self.transport.close()

    def __enter__(self) -> SMBClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def inline_io_limit(transport: Transport) -> int | None:
    """The largest READ/WRITE payload one message of ``transport`` carries, in whole 4 KiB pages
    (at least one): the peer's limit (SMB Direct's MaxFragmentedSize) less room for the SMB2
    headers; None where only SMB2's own MaxReadSize/MaxWriteSize apply."""
    if transport.max_send is None:
        return None
    return max(4096, (transport.max_send - 0x200) // 4096 * 4096)


@dataclass
class Lease:
    """A lease to ask for in CREATE (§2.2.13.2.8, v2 §2.2.13.2.10): ``state`` of R, H, W bits."""

    key: bytes
    state: int
    version: int = 2
    epoch: int = 0
    parent_key: bytes = bytes(16)

    def context(self):
        if self.version == 1:
            return LeaseV1(lease_key=self.key, lease_state=self.state).to_context()
        return LeaseV2(lease_key=self.key, lease_state=self.state, parent_lease_key=self.parent_key,
                       epoch=self.epoch).to_context()


def granted_lease(response: m.CreateResponse) -> LeaseV1 | LeaseV2 | None:
    """The lease a CREATE response granted (its RqLs context), None without one."""
    context = find_context(response.contexts, RQLS)
    return parse_lease(context) if context is not None else None


def _smb_path(path: str) -> str:
    return path.replace("/", "\\").strip("\\")


class Share:
    """A connected tree."""

    def __init__(self, client: SMBClient, tree_id: int, name: str) -> None:
        self.client = client
        self.tree_id = tree_id
        self.name = name

    def _req(self, command: int, body: m.Message, payload: int = 0, ok=(NtStatus.SUCCESS,)) -> Response:
        return self.client.request(command, body, self.tree_id, payload, ok)

    def open(self, path: str, access: int, disposition: int, options: int = 0,
             share_access: int = ShareAccess.READ | ShareAccess.WRITE | ShareAccess.DELETE,
             attributes: int = 0, contexts: list | None = None, oplock: int = OplockLevel.NONE,
             lease: Lease | None = None) -> m.CreateResponse:
        """``oplock``: the OplockLevel to ask for; ``lease``: a lease to ask for instead (its
        context is added and the level is SMB2_OPLOCK_LEVEL_LEASE). Breaks of what is granted are
        acknowledged on this tree."""
        contexts = list(contexts or [])
        if lease is not None:
            contexts.append(lease.context())
            oplock = OplockLevel.LEASE
        body = m.CreateRequest(name=_smb_path(path), desired_access=access, file_attributes=attributes,
                               share_access=share_access, create_disposition=disposition, create_options=options,
                               requested_oplock_level=oplock, contexts=contexts)
        response = self._req(Command.CREATE, body).body_as(m.CreateResponse)
        if response.oplock_level == OplockLevel.LEASE and lease is not None:
            self.client._break_trees[bytes(lease.key)] = self.tree_id
        elif response.oplock_level != OplockLevel.NONE:
            self.client._break_trees[bytes(response.file_id)] = self.tree_id
            self.client._oplocks[bytes(response.file_id)] = response.oplock_level
        return response

    def close_file(self, file_id: bytes) -> None:
        self._req(Command.CLOSE, m.CloseRequest(file_id=file_id))

    # ------------------------------------------------------------------ whole-file helpers

    def get_bytes(self, path: str) -> bytearray:
        """The whole file.  Over RDMA the server writes straight into the result (the registered
        buffers are slices of it): no copy on this side."""
        sink: list = []
        for block in self.iter_read(path, _sink=sink):
            del block  # drop the view, so the buffer can be resized below
        whole, end = sink
        if end < len(whole):
            del whole[end:]  # the file shrank under us: what was read, no zero tail
        return whole

    def iter_read(self, path: str, _sink: list | None = None) -> Iterator[bytes | memoryview]:
        """The file's blocks in order.  With ``_sink`` (get_bytes) one buffer of the file's size is
        appended to it and filled in place; the blocks are views of it.  Without, an RDMA block
        is bytes of its own, an inline one the READ response's data."""
        created = self.open(path, AccessMask.FILE_READ_DATA | AccessMask.FILE_READ_ATTRIBUTES | AccessMask.SYNCHRONIZE,
                            CreateDisposition.OPEN, CreateOptions.NON_DIRECTORY_FILE)
        client = self.client
        buffers: dict[int, tuple[bytearray | memoryview, list]] = {}  # MessageId -> registered buffer, descriptors
        offsets: dict[int, int] = {}
        spare: list[bytearray] = []  # RDMA destinations whose pages are already mapped (reused)
        try:
            size = created.end_of_file
            whole = None
            if _sink is not None:
                whole = bytearray(size)
                _sink.append(whole)
            chunk = min(client.io_size, client.conn.max_read)
            if not client.rdma_for(self.tree_id, chunk):
                chunk = min(chunk, client.inline_limit())
            inflight: list[int] = []
            offset = 0
            end = 0
            while offset < size or inflight:
                while offset < size and len(inflight) < client.window:
                    length = self._fit(min(chunk, size - offset), bool(inflight))
                    if not length:
                        break
                    if client.rdma_for(self.tree_id, length):
                        buffer: bytearray | memoryview  # a slice of ``whole``, or a buffer of our own
                        if whole is not None:
                            buffer = memoryview(whole)[offset:offset + length]
                        else:
                            buffer = spare.pop() if spare and len(spare[-1]) == length else bytearray(length)
                        mid, descriptors = self._send_registered(Command.READ, buffer, created.file_id, offset, length)
                        buffers[mid] = (buffer, descriptors)
                    else:
                        body = m.ReadRequest(file_id=created.file_id, length=length, offset=offset)
                        mid = client.send(Command.READ, body, self.tree_id, length)
                    inflight.append(mid)
                    offsets[mid] = offset
                    offset += length
                mid = inflight.pop(0)
                response = client.wait(mid)
                at = offsets.pop(mid)
                registered = buffers.pop(mid, None)
                if registered is not None:
                    # §3.2.5.12: deregister before the data goes to the application (a no-op when the
                    # server's SEND with Invalidate already revoked the token).
                    client.rdma_port().deregister_buffer(registered[1])
                if response.header.status != NtStatus.SUCCESS:
                    raise SMBError(response.header.status, Command.READ)
                if registered is None:
                    data = response.body_as(m.ReadResponse).data
                    if whole is not None:
                        whole[at:at + len(data)] = data
                        end = max(end, at + len(data))
                    yield data
                    continue
                buffer = registered[0]
                count = rdma_channel.read_response_length(response.body_as(m.ReadResponse), len(buffer))
                client.rdma_bytes["read"] += count
                if isinstance(buffer, memoryview):  # a slice of ``whole`` at ``at``: the data is in place
                    end = max(end, at + count)
                    yield buffer[:count]
                    continue
                # One copy out, and the buffer is reused: cheaper than faulting in fresh pages for
                # every request (the RDMA WRITE would, in the server's process_vm_writev).
                block = bytes(memoryview(buffer)[:count])
                spare.append(buffer)
                yield block
            if _sink is not None:
                _sink.append(end)
        finally:
            for _buffer, descriptors in buffers.values():
                client.rdma_port().deregister_buffer(descriptors)
            self.close_file(created.file_id)

    def _send_registered(self, command: int, buffer, file_id: bytes, offset: int, length: int) -> tuple[int, list]:
        """Register ``buffer`` (READ: the peer may write it; WRITE: read it) and send the request with
        its descriptors in the channel info; (MessageId, descriptors).  Deregistered if sending fails."""
        client = self.client
        reading = command == Command.READ
        descriptors = client.rdma_port().register_buffer(buffer, writable=reading)
        build = rdma_channel.read_request if reading else rdma_channel.write_request
        try:
            body = build(client.conn, file_id, offset, length, descriptors)
            return client.send(command, body, self.tree_id, length), descriptors
        except BaseException:
            client.rdma_port().deregister_buffer(descriptors)
            raise

    def _fit(self, length: int, busy: bool) -> int:
        """How much of ``length`` the credits granted so far allow in one request (§3.2.4.1.5: a
        request of N bytes costs ceil(N / 64 KiB) credits).  0 means: wait for a reply first; with
        nothing in flight at least one credit's worth is always possible."""
        conn = self.client.conn
        if not conn.multicredit:
            return length if conn.credits >= 1 or not busy else 0
        affordable = conn.credits * 65536
        if affordable >= length:
            return length
        if busy:
            return 0
        return max(65536 if conn.credits >= 1 else 0, affordable)

    def put_bytes(self, path: str, data: bytes) -> None:
        self.write_from(path, [data])

    def write_from(self, path: str, chunks) -> int:
        created = self.open(path, AccessMask.FILE_WRITE_DATA | AccessMask.FILE_READ_ATTRIBUTES
                            | AccessMask.FILE_WRITE_ATTRIBUTES | AccessMask.SYNCHRONIZE,
                            CreateDisposition.OVERWRITE_IF, CreateOptions.NON_DIRECTORY_FILE)
        client = self.client
        chunk_size = min(client.io_size, client.conn.max_write)
        if not client.rdma_for(self.tree_id, chunk_size):
            chunk_size = min(chunk_size, client.inline_limit())
        offset = 0
        inflight: list[int] = []
        self._registered: dict[int, list] = {}  # MessageId -> descriptors of the source buffer
        try:
            for block in chunks:
                view = memoryview(block)
                start = 0
                while start < len(view):
                    if len(inflight) >= self.client.window:
                        self._finish_write(inflight.pop(0))
                        continue
                    length = self._fit(min(chunk_size, len(view) - start), bool(inflight))
                    if not length:
                        self._finish_write(inflight.pop(0))
                        continue
                    if client.rdma_for(self.tree_id, length):
                        # The server RDMA-READs straight from the caller's buffer: no copy here.
                        mid, descriptors = self._send_registered(Command.WRITE, view[start:start + length],
                                                                 created.file_id, offset, length)
                        self._registered[mid] = descriptors
                    else:
                        body = m.WriteRequest(file_id=created.file_id, offset=offset,
                                              data=bytes(view[start:start + length]))
                        mid = client.send(Command.WRITE, body, self.tree_id, length)
                    inflight.append(mid)
                    offset += length
                    start += length
            while inflight:
                self._finish_write(inflight.pop(0))
        finally:
            for descriptors in self._registered.values():
                client.rdma_port().deregister_buffer(descriptors)
            self._registered = {}
            self.close_file(created.file_id)
        return offset

    _registered: dict[int, list] = {}

    def _finish_write(self, mid: int) -> None:
        response = self.client.wait(mid)
        descriptors = self._registered.pop(mid, None)
        if descriptors is not None:
            self.client.rdma_port().deregister_buffer(descriptors)  # §3.2.5.13, as for READ
            if response.header.status == NtStatus.SUCCESS:
                self.client.rdma_bytes["write"] += response.body_as(m.WriteResponse).count
        if response.header.status != NtStatus.SUCCESS:
            raise SMBError(response.header.status, Command.WRITE)

    def get(self, remote: str, local: str) -> int:
        """Copy ``remote`` to ``local``; a failed read (ACCESS_DENIED, a lost connection) leaves no
        local file behind, and never a truncated one under the final name."""
        total = 0
        part = f"{local}.part"
        try:
            with open(part, "wb") as handle:
                for block in self.iter_read(remote):
                    handle.write(block)
                    total += len(block)
            os.replace(part, local)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(part)
            raise
        return total

    def put(self, local: str, remote: str) -> int:
        def blocks():
            with open(local, "rb") as handle:
                while block := handle.read(CHUNK * 4):
                    yield block

        return self.write_from(remote, blocks())

    def listdir(self, path: str = "", pattern: str = "*") -> list[DirEntry]:
        created = self.open(path, AccessMask.FILE_LIST_DIRECTORY if hasattr(AccessMask, "FILE_LIST_DIRECTORY")
                            else AccessMask.FILE_READ_DATA | AccessMask.FILE_READ_ATTRIBUTES | AccessMask.SYNCHRONIZE,
                            CreateDisposition.OPEN, CreateOptions.DIRECTORY_FILE)
        from harness.smb import fscc

        entries: list[DirEntry] = []
        entry_class = fscc.FileIdBothDirectoryInformation
        try:
            while True:
                body = m.QueryDirectoryRequest(file_id=created.file_id, file_information_class=entry_class.INFO_CLASS,
                                               file_name=pattern, output_buffer_length=65536)
                response = self._req(Command.QUERY_DIRECTORY, body,
                                     ok=(NtStatus.SUCCESS, NtStatus.NO_MORE_FILES, NtStatus.NO_SUCH_FILE))
                if response.header.status != NtStatus.SUCCESS:
                    break
                output = response.body_as(m.QueryDirectoryResponse).output
                for entry in fscc.unpack_entries(entry_class, output):
                    entries.append(DirEntry(entry.file_name, entry.end_of_file,
                                            bool(entry.file_attributes & FileAttributes.DIRECTORY),
                                            entry.last_write_time, entry.file_attributes))
        finally:
            self.close_file(created.file_id)
        return entries

    def mkdir(self, path: str) -> None:
        created = self.open(path, AccessMask.FILE_READ_ATTRIBUTES | AccessMask.SYNCHRONIZE, CreateDisposition.CREATE,
                            CreateOptions.DIRECTORY_FILE)
        self.close_file(created.file_id)

    def remove(self, path: str, directory: bool = False) -> None:
        options = (CreateOptions.DIRECTORY_FILE if directory else CreateOptions.NON_DIRECTORY_FILE)
        created = self.open(path, AccessMask.DELETE | AccessMask.FILE_READ_ATTRIBUTES, CreateDisposition.OPEN,
                            options | CreateOptions.DELETE_ON_CLOSE)
        self.close_file(created.file_id)

    def stat(self, path: str) -> fscc.FileAllInformation:
        from harness.smb import fscc

        created = self.open(path, AccessMask.FILE_READ_ATTRIBUTES | AccessMask.SYNCHRONIZE, CreateDisposition.OPEN)
        try:
            body = m.QueryInfoRequest(file_id=created.file_id, info_type=InfoType.FILE,
                                      file_info_class=FileInfoClass.ALL, output_buffer_length=4096)
            return fscc.FileAllInformation.unpack(self._req(Command.QUERY_INFO, body).body_as(m.QueryInfoResponse).output)
        finally:
            self.close_file(created.file_id)

    # ------------------------------------------------------------------ locks and change notify

    def lock_request(self, file_id: bytes, offset: int, length: int, *, exclusive: bool = True,
                     fail_immediately: bool = True, sequence: int = 0) -> int:
        """Send a LOCK of one range (MS-SMB2 2.2.26) and return its MessageId; a blocking lock
        (``fail_immediately=False``) answers STATUS_PENDING first and its final response when
        the range frees or on :meth:`SMBClient.cancel`."""
        flags = (LockFlags.EXCLUSIVE_LOCK if exclusive else LockFlags.SHARED_LOCK) | (
            LockFlags.FAIL_IMMEDIATELY if fail_immediately else 0)
        body = m.LockRequest(file_id=file_id, locks=[m.LockElement(offset, length, flags)], lock_sequence=sequence)
        return self.client.send(Command.LOCK, body, self.tree_id)

    def lock(self, file_id: bytes, offset: int, length: int, *, exclusive: bool = True, wait: bool = False,
             timeout: float | None = None, sequence: int = 0) -> None:
        """Lock a range; with ``wait`` block until it is granted (or ``timeout``: then cancel it and
        raise TimeoutError).  A refusal raises SMBError (LOCK_NOT_GRANTED, CANCELLED, ...)."""
        mid = self.lock_request(file_id, offset, length, exclusive=exclusive, fail_immediately=not wait,
                                sequence=sequence)
        try:
            response = self.client.wait(mid, timeout)
        except TimeoutError:
            self.client.cancel(mid)
            self.client.wait(mid)
            raise
        if response.header.status != NtStatus.SUCCESS:
            raise SMBError(response.header.status, Command.LOCK)

    def unlock(self, file_id: bytes, offset: int, length: int, sequence: int = 0) -> None:
        body = m.LockRequest(file_id=file_id, locks=[m.LockElement(offset, length, LockFlags.UNLOCK)],
                             lock_sequence=sequence)
        self._req(Command.LOCK, body)

    def notify_request(self, dir_id: bytes, completion_filter: int, *, watch_tree: bool = False,
                       buffer_length: int = 65536) -> int:
        """Send a CHANGE_NOTIFY on an open directory (MS-SMB2 2.2.35); its MessageId."""
        from harness.smb import change_notify

        body = m.ChangeNotifyRequest(file_id=dir_id, flags=change_notify.WATCH_TREE if watch_tree else 0,
                                     output_buffer_length=buffer_length, completion_filter=completion_filter)
        return self.client.send(Command.CHANGE_NOTIFY, body, self.tree_id)

    def notify_result(self, message_id: int, timeout: float | None = None) -> tuple[int, list[tuple[int, str]]]:
        """The status of a CHANGE_NOTIFY and the (action, name) changes it reported."""
        response = self.client.wait(message_id, timeout)
        status = response.header.status
        if status != NtStatus.SUCCESS:
            return status, []
        from harness.smb import change_notify

        return status, change_notify.decode(response.body_as(m.ChangeNotifyResponse).output)

    def disconnect(self) -> None:
        self._req(Command.TREE_DISCONNECT, m.TreeDisconnectRequest())
        self.client.logged_on().trees.pop(self.tree_id, None)

    def __enter__(self) -> Share:
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.disconnect()
        except Exception:  # noqa: BLE001
            pass


__all__ = ["DirEntry", "SMBClient", "SMBError", "Share", "os"]
