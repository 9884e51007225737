"""Sans-IO SMB2/3 server connection: PDUs in, PDUs out.

Rules this state machine enforces, in the order a request meets them (MS-SMB2 §3.3.5):

1. The first PDU must be NEGOTIATE; anything else, or a second NEGOTIATE, drops the connection
   without a reply (§3.3.5.2.2, §3.3.5.4).
2. 0xFD TRANSFORM messages are opened with the session's C2S key; a missing session or a failed
   check drops the connection (§3.3.5.2.1.1).  0xFC compressed messages are never negotiated, so
   they drop it too.
3. Every element of a compound is handled in order; related elements inherit SessionId, TreeId and
   FileId from the previous one, and fail with its status if it failed (§3.3.5.2.7.2).
4. Credits (§3.3.5.2.3): MessageId..MessageId+CreditCharge-1 must lie in the granted window and be
   unused, else the connection is dropped; CANCEL consumes nothing.  Each response grants
   max(1, CreditRequest) while the outstanding window stays <= MAX_CREDITS.
5. Signatures (§3.3.5.2.4): a signed request is verified with the session's signing key; a bad one
   is STATUS_ACCESS_DENIED.  An unsigned, unencrypted request on a signing-required session is
   STATUS_ACCESS_DENIED too.  Responses are signed when the request was, when signing is required,
   and always for the final 3.1.1 SESSION_SETUP; never when encrypted.
6. Encryption: responses to encrypted requests are encrypted with the S2C key; a session or share
   that requires encryption answers unencrypted requests with STATUS_ACCESS_DENIED (§3.3.5.2.9,
   §3.3.5.2.11).  With AcceptTransportSecurity (QUIC only) encryption is skipped.
7. Only contexts the client sent get a response context (§3.3.5.4).
8. On 3.1.1 a TREE_CONNECT that is neither signed nor encrypted drops the connection (§3.3.5.7): it
   is what protects the negotiation once VALIDATE_NEGOTIATE_INFO is gone.

Output: :meth:`ServerConnection.receive_pdu` returns the PDUs to send now; asynchronous completions
and break notifications (possibly for *other* connections) are queued on each connection's
``outbox`` and announced through ``ServerState.on_output``.  No sockets, threads or clocks here: the
clock is ``ServerConfig.clock`` and file access lives in :mod:`.vfs` and :mod:`.server_files`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from . import channels, durable
from . import messages as m
from .auth import Acceptor, AuthError, server_hint
from .compound import build_compound, split_compound
from .constants import (
    PROTOCOL_ID_SMB2,
    PROTOCOL_ID_TRANSFORM,
    Capabilities,
    Cipher,
    Command,
    Dialect,
    HeaderFlags,
    NegotiateContextType,
    NtStatus,
    SecurityMode,
    SessionFlags,
    SessionSetupFlags,
    ShareCapabilities,
    ShareFlags,
    ShareType,
    SigningAlgorithm,
    TransportCapabilityFlags,
)
from .crypto import (
    NonceGenerator,
    PreauthIntegrity,
    SessionKeys,
    decrypt_message,
    derive_session_keys,
    encrypt_message,
    encrypt_parts,
    sign_header,
    sign_message,
    signing_algorithm_for,
    verify_signature,
)
from .errors import SMBProtocolError
from .fscc import filetime_from_unix_ns
from .header import HEADER_SIZE, Header
from .keys import SessionKeyRecord
from .vfs import LocalShare

MAX_CREDITS = 8192
LARGE_MTU_SIZE = 8 * 1024 * 1024
SMALL_MTU_SIZE = 65536
ALL_DIALECTS = (Dialect.SMB_3_1_1, Dialect.SMB_3_0_2, Dialect.SMB_3_0, Dialect.SMB_2_1, Dialect.SMB_2_0_2)
FULL_ACCESS = 0x001F01FF


class Disconnect(Exception):
    """The connection must be dropped without a reply (the spec's "disconnect")."""


class Fail(Exception):
    """A request fails with ``status`` (an ERROR response)."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message or f"0x{status:08X}")
        self.status = status


@dataclass
class ShareConfig:
    name: str
    path: str
    encrypt: bool = False
    continuously_available: bool = False  # persistent handles (DH2Q PERSISTENT) are granted here


@dataclass
class ServerConfig:
    """What a server offers.  ``transport`` is "tcp", "nbt" or "quic" (which dialects and
    multi-credit are allowed depends on it, §2.1, §3.3.5.4)."""

    shares: dict[str, ShareConfig] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)
    encrypt: bool = False
    sign: bool = False
    accept_transport_security: bool = False
    server_guid: bytes = field(default_factory=lambda: os.urandom(16))
    dialects: tuple[int, ...] = ALL_DIALECTS
    ciphers: tuple[int, ...] = (Cipher.AES_128_GCM, Cipher.AES_128_CCM, Cipher.AES_256_GCM, Cipher.AES_256_CCM)
    signing_algorithms: tuple[int, ...] = (SigningAlgorithm.AES_GMAC, SigningAlgorithm.AES_CMAC,
                                           SigningAlgorithm.HMAC_SHA256)
    max_size: int = LARGE_MTU_SIZE
    clock: Callable[[], int] = lambda: 0  # unix nanoseconds; injected by the I/O adapter
    interfaces: list = field(default_factory=list)  # NetworkInterfaceInfo for QUERY_NETWORK_INTERFACE_INFO
    key_sink: Callable[[SessionKeyRecord], None] | None = None
    multichannel: bool = False  # SMB2_GLOBAL_CAP_MULTI_CHANNEL and session binding (harness/smb/channels.py)
    state_dir: str | None = None  # durable opens survive a server restart here (harness/smb/durable.py)
    trace: Callable[[str], None] | None = None  # told why each request failed (debugging aid)


@dataclass
class Tree:
    tree_id: int
    share: ShareConfig | None  # None = IPC$
    fs: LocalShare | None
    encrypt: bool


@dataclass
class Session:
    session_id: int
    connection: ServerConnection
    acceptor: Acceptor | None = None
    preauth: PreauthIntegrity | None = None
    keys: SessionKeys | None = None
    valid: bool = False
    username: str = ""
    signing_required: bool = False
    encrypt_data: bool = False
    trees: dict[int, Tree] = field(default_factory=dict)
    opens: dict[int, object] = field(default_factory=dict)  # volatile id -> server_files.Open
    next_tree_id: int = 1
    nonces: NonceGenerator | None = None
    channels: list = field(default_factory=list)  # connections bound to it, once there are two


@dataclass
class Reply:
    """A handler's result for one element."""

    status: int
    body: m.Message | bytes
    session_id: int | None = None
    tree_id: int | None = None
    force_sign: bool = False
    sign_session: Session | None = None
    after_pack: Callable[[bytes], None] | None = None
    async_id: int = 0
    file_id: bytes | None = None


@dataclass
class Pending:
    """An async request (CHANGE_NOTIFY) waiting for completion or CANCEL."""

    async_id: int
    message_id: int
    session: Session
    tree_id: int
    command: int
    encrypted: bool
    open: object = None
    signed: bool = False
    connection: object = None


class ServerState:
    """What all connections of one server share: sessions and open files (for breaks)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.sessions: dict[int, Session] = {}
        self.next_session = int.from_bytes(os.urandom(4), "little") << 16 | 1
        self.next_file_id = 1
        self.next_async = 1
        self.opens_by_path: dict[str, list] = {}
        self.watchers: list[Pending] = []
        self.meta_overrides: dict[tuple[int, int], dict] = {}
        self.on_output: Callable[[ServerConnection], None] = lambda connection: None
        self.shares = {name.lower(): (share, LocalShare(share.path)) for name, share in config.shares.items()}
        from . import server_files

        self.durable = durable.DurableTable(config.state_dir, lambda: config.clock())
        top = self.durable.load(lambda record, info: server_files.restore_open(self, record, info))
        self.next_file_id = max(self.next_file_id, top + 1)

    def new_session_id(self) -> int:
        self.next_session += 1
        return self.next_session


@dataclass
class _Related:
    session_id: int = 0
    tree_id: int = 0
    file_id: bytes = b"\xff" * 16
    status: int = 0


class ServerConnection:
    """One client connection.  ``transport`` names the transport (tcp, nbt, quic, smbdirect)."""

    def __init__(self, state: ServerState, transport: str = "tcp") -> None:
        self.state = state
        self.config = state.config
        self.transport = transport
        self.dialect = 0
        self.negotiated = False
        self.cipher = Cipher.NONE
        self.signing_algorithm = SigningAlgorithm.AES_CMAC
        self.preauth = PreauthIntegrity()
        self.client_guid = b""
        self.client_capabilities = 0
        self.client_security_mode = 0
        self.client_dialects: list[int] = []
        self.server_capabilities = 0
        self.server_security_mode = 0
        self.supports_multicredit = False
        self.accept_transport_security = False
        self.max_size = SMALL_MTU_SIZE
        self.seq_low = 0
        self.seq_high = 1
        self.seq_used: set[int] = set()
        self.sessions: dict[int, Session] = {}
        self.pending: dict[int, Pending] = {}
        self.outbox: list[bytes] = []
        self.closed = False
        # RDMA (SMB Direct only): the adapter's RDMA port, and tokens the next reply must invalidate
        # (rdma_channel.py).  RDMATransformIds stays empty: RDMA transforms are declined.
        self.rdma = None
        self.invalidate_tokens: list[int] = []
        self.rdma_transform_ids: list[int] = []
        self.channel_keys: dict[int, bytes] = {}  # session id -> Channel.SigningKey of a bound channel
        self.bindings: dict[int, channels.Binding] = {}

    # ------------------------------------------------------------------ entry point

    def receive_pdu(self, pdu: bytes) -> list[bytes]:
        """Handle one transport PDU; return the PDUs to send back.  Raises :class:`Disconnect`."""
        if self.closed:
            raise Disconnect("connection closed")
        protocol = bytes(pdu[:4])
        encrypted_session: Session | None = None
        if protocol == PROTOCOL_ID_TRANSFORM:
            if not self.negotiated or self.dialect < Dialect.SMB_3_0 or self.cipher == Cipher.NONE:
                raise Disconnect("TRANSFORM_HEADER before encryption was negotiated")
            if len(pdu) < 52:
                raise Disconnect("short TRANSFORM_HEADER")
            session_id = int.from_bytes(pdu[44:52], "little")
            encrypted_session = self.state.sessions.get(session_id)
            if encrypted_session is None or encrypted_session.keys is None or encrypted_session.keys.c2s is None:
                raise Disconnect("TRANSFORM_HEADER for an unknown session")
            try:
                _, pdu = decrypt_message(pdu, encrypted_session.keys.c2s, self.cipher)
            except SMBProtocolError as exc:
                raise Disconnect(str(exc)) from exc
            if bytes(pdu[:4]) != PROTOCOL_ID_SMB2:
                raise Disconnect("compressed message, compression was not negotiated")
        elif protocol != PROTOCOL_ID_SMB2:
            raise Disconnect(f"unexpected ProtocolId {protocol.hex()}")
        try:
            elements = split_compound(pdu)
        except SMBProtocolError as exc:
            raise Disconnect(str(exc)) from exc
        if not self.negotiated and (len(elements) != 1 or elements[0].header.command != Command.NEGOTIATE):
            raise Disconnect("first request is not a lone NEGOTIATE")
        related = _Related()
        replies: list[tuple[Header, Reply]] = []
        for index, element in enumerate(elements):
            header = element.header
            if header.is_response:
                raise Disconnect("response received by the server")
            self._consume_credits(header)
            reply = self._handle(element, index, related, encrypted_session is not None)
            if reply is None:  # CANCEL: no response
                continue
            replies.append((header, reply))
        if not replies:
            return []
        return [self._pack_replies(replies, encrypted_session)]

    def close(self) -> None:
        """The transport went away: forget sessions bound here and their opens (§3.3.7.1)."""
        from . import server_files

        self.closed = True
        self.state.watchers = [w for w in self.state.watchers if (w.connection or w.session.connection) is not self]
        for session in list(self.sessions.values()):
            if channels.drop_channel(self, session):
                continue  # still bound to another channel (multichannel)
            server_files.close_session_opens(self, session, keep_durable=True)
            if self.state.sessions.get(session.session_id) is session:
                del self.state.sessions[session.session_id]
        self.sessions.clear()

    # ------------------------------------------------------------------ credits

    def _consume_credits(self, header: Header) -> None:
        if header.command == Command.CANCEL:
            return
        charge = max(1, header.credit_charge) if self.supports_multicredit else 1
        first = header.message_id
        if first < self.seq_low or first + charge > self.seq_high:
            raise Disconnect(f"MessageId {first} (charge {charge}) outside the window "
                             f"[{self.seq_low}, {self.seq_high})")
        ids = range(first, first + charge)
        if any(mid in self.seq_used for mid in ids):
            raise Disconnect(f"MessageId {first} reused")
        self.seq_used.update(ids)
        while self.seq_low in self.seq_used:
            self.seq_used.discard(self.seq_low)
            self.seq_low += 1

    def _grant(self, requested: int) -> int:
        outstanding = self.seq_high - self.seq_low - len(self.seq_used)
        grant = min(max(requested, 1), MAX_CREDITS - outstanding)
        if grant <= 0:
            grant = 1 if outstanding == 0 else 0
        self.seq_high += grant
        return grant

    # ------------------------------------------------------------------ dispatch

    def _handle(self, element, index: int, related: _Related, encrypted: bool) -> Reply | None:
        from . import server_files

        header = element.header
        if header.command == Command.CANCEL:
            self._cancel(header)
            return None
        if header.is_related:
            if index == 0:
                return self._error(NtStatus.INVALID_PARAMETER)
            if related.status:
                return Reply(related.status, m.ErrorResponse(), session_id=related.session_id,
                             tree_id=related.tree_id)
            header.session_id = related.session_id
            header.tree_id = related.tree_id
        try:
            if header.command == Command.NEGOTIATE:
                reply = self._negotiate(header, element.raw)
            else:
                end = header.next_command or len(element.raw)
                try:
                    request = m.decode_body(header.command, False, memoryview(element.raw)[HEADER_SIZE:end])
                except SMBProtocolError as exc:
                    raise Fail(exc.status, exc.message) from exc
                if header.command == Command.SESSION_SETUP:
                    reply = self._session_setup(header, request, element.raw, encrypted)
                elif header.command == Command.ECHO:
                    session = self.state.sessions.get(header.session_id)
                    if session is not None and session.valid and header.is_signed and not encrypted:
                        try:
                            verify_signature(element.raw, channels.signing_key(self, session),
                                             self.signing_algorithm)
                        except SMBProtocolError as exc:
                            raise Fail(NtStatus.ACCESS_DENIED, str(exc)) from exc
                    reply = Reply(NtStatus.SUCCESS, m.EchoResponse())
                    reply.sign_session = session if session and session.valid else None
                else:
                    session = self._session_for(header, element.raw, encrypted)
                    if header.command == Command.LOGOFF:
                        reply = self._logoff(session)
                    elif header.command == Command.TREE_CONNECT:
                        if self.dialect == Dialect.SMB_3_1_1 and not (header.is_signed or encrypted):
                            raise Disconnect("unsigned, unencrypted TREE_CONNECT on 3.1.1 (§3.3.5.7)")
                        reply = self._tree_connect(session, request, encrypted)
                    else:
                        tree = session.trees.get(header.tree_id)
                        if tree is None:
                            raise Fail(NtStatus.NETWORK_NAME_DELETED, f"no tree {header.tree_id}")
                        if tree.encrypt and not encrypted and not self.accept_transport_security:
                            raise Fail(NtStatus.ACCESS_DENIED, "share requires encryption")
                        if header.command == Command.TREE_DISCONNECT:
                            server_files.close_tree_opens(self, session, tree)
                            del session.trees[tree.tree_id]
                            reply = Reply(NtStatus.SUCCESS, m.TreeDisconnectResponse())
                        else:
                            reply = server_files.dispatch(self, session, tree, header, request, related, encrypted)
                    if reply.sign_session is None:
                        reply.sign_session = session
        except Fail as exc:
            if self.config.trace:
                self.config.trace(f"{Command(header.command).name} mid={header.message_id}: 0x{exc.status:08X} {exc}")
            reply = self._error(exc.status)
            session = self.state.sessions.get(header.session_id)
            if session is not None and session.valid and exc.status != NtStatus.USER_SESSION_DELETED:
                reply.sign_session = session
        if reply.session_id is None:
            reply.session_id = header.session_id
        if reply.tree_id is None:
            reply.tree_id = header.tree_id
        related.session_id = reply.session_id
        related.tree_id = reply.tree_id
        if reply.file_id is not None:
            related.file_id = reply.file_id
        if reply.status not in (NtStatus.SUCCESS, NtStatus.PENDING, NtStatus.MORE_PROCESSING_REQUIRED,
                                NtStatus.BUFFER_OVERFLOW) and header.command == Command.CREATE:
            related.status = reply.status
        return reply

    @staticmethod
    def _error(status: int) -> Reply:
        return Reply(status, m.ErrorResponse())

    def _session_for(self, header: Header, raw: bytes, encrypted: bool) -> Session:
        session = self.state.sessions.get(header.session_id)
        if session is None or not session.valid or self.sessions.get(header.session_id) is not session:
            raise Fail(NtStatus.USER_SESSION_DELETED, f"no session 0x{header.session_id:x}")
        if header.is_signed and not encrypted:
            try:
                verify_signature(raw, channels.signing_key(self, session), self.signing_algorithm)
            except SMBProtocolError as exc:
                raise Fail(NtStatus.ACCESS_DENIED, str(exc)) from exc
        elif session.signing_required and not encrypted:
            raise Fail(NtStatus.ACCESS_DENIED, "unsigned request on a signing-required session")
        if session.encrypt_data and not encrypted and not self.accept_transport_security:
            raise Fail(NtStatus.ACCESS_DENIED, "session requires encryption")
        return session

    # ------------------------------------------------------------------ response assembly

    def _pack_replies(self, replies: list[tuple[Header, Reply]], encrypted_session: Session | None) -> bytes:
        if len(replies) == 1 and replies[0][1].after_pack is None:
            return self._pack_single(*replies[0], encrypted_session)
        raws = []
        related_flags = []
        for header, reply in replies:
            raws.append(self._pack_one(header, reply))
            related_flags.append(header.is_related)
        chain = build_compound(raws, related_flags) if len(raws) > 1 else raws[0]
        out = []
        for (_header, reply), element in zip(replies, split_compound(chain), strict=True):
            signed = self._maybe_sign(element.raw, _header, reply, encrypted_session is not None)
            if reply.after_pack:  # preauth hashes what goes on the wire: a binding's interim replies are signed
                reply.after_pack(signed)
            out.append(signed)
        message = b"".join(out)
        if encrypted_session is not None:
            return self._encrypt(message, encrypted_session)
        return message

    def _pack_single(self, request: Header, reply: Reply, encrypted_session: Session | None) -> bytes:
        """One uncompounded reply, built from buffers so a 1 MiB READ is copied once (when joined)."""
        head = self._reply_header(request, reply).pack()
        body = reply.body
        parts = ([bytes(body)] if isinstance(body, bytes | bytearray)
                 else (body.pack_parts() if hasattr(body, "pack_parts") else [body.pack()]))
        if encrypted_session is not None:
            if encrypted_session.nonces is None:
                encrypted_session.nonces = NonceGenerator(self.cipher)
            return encrypt_parts([head, *parts], encrypted_session.keys.s2c, self.cipher,
                                 encrypted_session.session_id, encrypted_session.nonces.next())
        session = reply.sign_session
        if (session is not None and session.keys is not None and reply.status != NtStatus.PENDING
                and (reply.force_sign or request.is_signed or session.signing_required)):
            head = sign_header(head, parts, channels.signing_key(self, session), self.signing_algorithm)
        return b"".join([head, *parts])

    def _reply_header(self, request: Header, reply: Reply) -> Header:
        flags = HeaderFlags.SERVER_TO_REDIR | (request.flags & HeaderFlags.PRIORITY_MASK)
        if reply.async_id:
            flags |= HeaderFlags.ASYNC_COMMAND
        return Header(command=request.command, status=reply.status, credit_charge=request.credit_charge,
                      credits=self._grant(request.credits), flags=flags, message_id=request.message_id,
                      process_id=request.process_id, tree_id=reply.tree_id or 0, async_id=reply.async_id,
                      session_id=reply.session_id or 0)

    def _pack_one(self, request: Header, reply: Reply) -> bytes:
        flags = HeaderFlags.SERVER_TO_REDIR | (request.flags & HeaderFlags.PRIORITY_MASK)
        if reply.async_id:
            flags |= HeaderFlags.ASYNC_COMMAND
        header = Header(command=request.command, status=reply.status, credit_charge=request.credit_charge,
                        credits=self._grant(request.credits), flags=flags, message_id=request.message_id,
                        process_id=request.process_id, tree_id=reply.tree_id or 0, async_id=reply.async_id,
                        session_id=reply.session_id or 0)
        body = reply.body if isinstance(reply.body, bytes | bytearray) else reply.body.pack()
        return header.pack() + bytes(body)

    def _maybe_sign(self, raw: bytes, request: Header, reply: Reply, encrypted: bool) -> bytes:
        session = reply.sign_session
        if encrypted or session is None or session.keys is None:
            return raw
        if reply.status == NtStatus.PENDING:
            return raw
        if reply.force_sign or request.is_signed or session.signing_required:
            return sign_message(raw, channels.signing_key(self, session), self.signing_algorithm)
        return raw

    def _encrypt(self, message: bytes, session: Session) -> bytes:
        if session.nonces is None:
            session.nonces = NonceGenerator(self.cipher)
        return encrypt_message(message, session.keys.s2c, self.cipher, session.session_id, session.nonces.next())

    def send_unsolicited(self, header: Header, body: m.Message, session: Session | None, encrypt: bool,
                         sign: bool = False) -> None:
        """Queue a server-initiated message (async completion, break notification) on ``outbox``."""
        if header.message_id != 0xFFFFFFFFFFFFFFFF:
            header.credits = self._grant(0) if header.credits else 0
        raw = header.pack() + body.pack()
        if session is not None and session.keys is not None:
            if encrypt and session.keys.s2c:
                raw = self._encrypt(raw, session)
            elif sign or session.signing_required:
                raw = sign_message(raw, channels.signing_key(self, session), self.signing_algorithm)
        self.outbox.append(raw)
        self.state.on_output(self)

    def take_output(self) -> list[bytes]:
        out, self.outbox = self.outbox, []
        return out

    # ------------------------------------------------------------------ NEGOTIATE (§3.3.5.4)

    def _negotiate(self, header: Header, raw: bytes) -> Reply:
        if self.negotiated:
            raise Disconnect("second NEGOTIATE")
        if header.is_signed:
            return self._error(NtStatus.INVALID_PARAMETER)
        try:
            request = m.decode_body(Command.NEGOTIATE, False, raw[HEADER_SIZE:])
        except SMBProtocolError:
            return self._error(NtStatus.INVALID_PARAMETER)
        if not request.dialects:
            return self._error(NtStatus.INVALID_PARAMETER)
        allowed = [d for d in self.config.dialects if d in request.dialects]
        if self.transport == "nbt":
            allowed = [d for d in allowed if d <= Dialect.SMB_3_0_2]  # §2.1: no 3.1.1 over NetBIOS
        if self.transport == "quic":
            allowed = [d for d in allowed if d == Dialect.SMB_3_1_1]
        if self.transport == "smbdirect":
            allowed = [d for d in allowed if d >= Dialect.SMB_3_0]  # §2.1: 3.x only over RDMA
        if not allowed:
            return self._error(NtStatus.NOT_SUPPORTED)
        dialect = max(allowed)
        response_contexts: list = []
        if dialect == Dialect.SMB_3_1_1:
            status = self._negotiate_contexts(request.contexts, response_contexts)
            if status:
                return self._error(status)
        self.dialect = dialect
        self.client_guid = request.client_guid
        self.client_capabilities = request.capabilities
        self.client_security_mode = request.security_mode
        self.client_dialects = list(request.dialects)
        # §3.3.5.4: multi-credit on TCP port 445 and RDMA (and QUIC, which carries Direct TCP framing).
        self.supports_multicredit = dialect >= Dialect.SMB_2_1 and self.transport in ("tcp", "quic", "smbdirect")
        self.max_size = self.config.max_size if self.supports_multicredit else SMALL_MTU_SIZE
        if self.rdma is not None and getattr(self.rdma, "max_read_write", 0):
            self.max_size = min(self.max_size, self.rdma.max_read_write)  # MS-SMBD MaxReadWriteSize
        caps = 0
        if dialect >= Dialect.SMB_2_1:
            caps |= Capabilities.LEASING
        caps |= channels.server_capabilities(self.config, dialect, request.capabilities)
        if self.supports_multicredit:
            caps |= Capabilities.LARGE_MTU
        if dialect in (Dialect.SMB_3_0, Dialect.SMB_3_0_2) and request.capabilities & Capabilities.ENCRYPTION:
            caps |= Capabilities.ENCRYPTION
            self.cipher = Cipher.AES_128_CCM
        self.server_capabilities = caps
        self.server_security_mode = SecurityMode.SIGNING_ENABLED | (
            SecurityMode.SIGNING_REQUIRED if self.config.sign else 0)
        self.signing_algorithm = signing_algorithm_for(
            dialect, self.signing_algorithm if self._signing_context_seen else None)
        self.negotiated = True
        response = m.NegotiateResponse(
            dialect_revision=dialect, security_mode=self.server_security_mode, server_guid=self.config.server_guid,
            capabilities=caps, max_transact_size=self.max_size, max_read_size=self.max_size,
            max_write_size=self.max_size, system_time=filetime_from_unix_ns(self.config.clock()),
            security_buffer=server_hint(), contexts=response_contexts)
        reply = Reply(NtStatus.SUCCESS, response)
        if dialect == Dialect.SMB_3_1_1:
            self.preauth.add(bytes(raw))
            reply.after_pack = lambda packed: self.preauth.add(packed)
        return reply

    _signing_context_seen = False

    def _negotiate_contexts(self, contexts: list, out: list) -> int:
        counts: dict[int, int] = {}
        for context in contexts:
            counts[context.context_type] = counts.get(context.context_type, 0) + 1
        if counts.get(NegotiateContextType.PREAUTH_INTEGRITY_CAPABILITIES, 0) != 1:
            return NtStatus.INVALID_PARAMETER
        for kind in (NegotiateContextType.ENCRYPTION_CAPABILITIES, NegotiateContextType.COMPRESSION_CAPABILITIES,
                     NegotiateContextType.RDMA_TRANSFORM_CAPABILITIES, NegotiateContextType.SIGNING_CAPABILITIES):
            if counts.get(kind, 0) > 1:
                return NtStatus.INVALID_PARAMETER
        by_type = {c.context_type: c for c in contexts}
        preauth = by_type[NegotiateContextType.PREAUTH_INTEGRITY_CAPABILITIES]
        if 1 not in preauth.hash_algorithms:
            return NtStatus.SMB_NO_PREAUTH_INTEGRITY_HASH_OVERLAP
        out.append(m.PreauthIntegrityCapabilities([1], os.urandom(32)))
        encryption = by_type.get(NegotiateContextType.ENCRYPTION_CAPABILITIES)
        if encryption is not None:
            chosen = next((c for c in self.config.ciphers if c in encryption.ciphers), Cipher.NONE)
            self.cipher = chosen
            out.append(m.EncryptionCapabilities([chosen]))
        compression = by_type.get(NegotiateContextType.COMPRESSION_CAPABILITIES)
        if compression is not None:
            if not compression.algorithms:
                return NtStatus.INVALID_PARAMETER
            out.append(m.CompressionCapabilities([0], 0))  # parsed, declined: NONE
        rdma = by_type.get(NegotiateContextType.RDMA_TRANSFORM_CAPABILITIES)
        if rdma is not None:
            if not rdma.transform_ids:
                return NtStatus.INVALID_PARAMETER
            # IsRDMATransformSupported, but none of encryption/signing of RDMA payloads is implemented:
            # Connection.RDMATransformIds is empty, answered as TransformCount 1, NONE (§3.3.5.4).
            self.rdma_transform_ids = []
            out.append(m.RdmaTransformCapabilities([0]))
        signing = by_type.get(NegotiateContextType.SIGNING_CAPABILITIES)
        if signing is not None:
            if not signing.algorithms:
                return NtStatus.INVALID_PARAMETER
            chosen = next((a for a in self.config.signing_algorithms if a in signing.algorithms),
                          SigningAlgorithm.AES_CMAC)
            self.signing_algorithm = chosen
            self._signing_context_seen = True
            out.append(m.SigningCapabilities([chosen]))
        transport = by_type.get(NegotiateContextType.TRANSPORT_CAPABILITIES)
        if transport is not None:
            accept = (self.transport == "quic" and self.config.accept_transport_security
                      and bool(transport.flags & TransportCapabilityFlags.ACCEPT_TRANSPORT_LEVEL_SECURITY))
            self.accept_transport_security = accept
            out.append(m.TransportCapabilities(TransportCapabilityFlags.ACCEPT_TRANSPORT_LEVEL_SECURITY if accept else 0))
        return 0

    # ------------------------------------------------------------------ SESSION_SETUP / LOGOFF

    def _session_setup(self, header: Header, request: m.SessionSetupRequest, raw: bytes, encrypted: bool) -> Reply:
        if request.flags & SessionSetupFlags.BINDING:
            return channels.bind(self, header, request, raw)
        encrypt_required = self.config.encrypt and not self.accept_transport_security
        if encrypt_required and self.dialect >= Dialect.SMB_3_0 and not (
                self.client_capabilities & Capabilities.ENCRYPTION or self.cipher):
            raise Fail(NtStatus.ACCESS_DENIED, "encryption required, client cannot encrypt")
        if encrypt_required and self.dialect < Dialect.SMB_3_0:
            raise Fail(NtStatus.ACCESS_DENIED, "encryption required, dialect cannot encrypt")
        reauth = False
        if header.session_id == 0:
            session = Session(self.state.new_session_id(), self)
            session.acceptor = Acceptor(self.config.users)
            if self.dialect == Dialect.SMB_3_1_1:
                session.preauth = self.preauth.for_session()
            self.state.sessions[session.session_id] = session
            self.sessions[session.session_id] = session
        else:
            session = self.state.sessions.get(header.session_id)
            if session is None or self.sessions.get(header.session_id) is not session:
                raise Fail(NtStatus.USER_SESSION_DELETED, "unknown session")
            if session.valid and session.acceptor is None:
                reauth = True
                session.acceptor = Acceptor(self.config.users)
            if session.valid and header.is_signed and not encrypted:
                try:
                    verify_signature(raw, channels.signing_key(self, session), self.signing_algorithm)
                except SMBProtocolError as exc:
                    raise Fail(NtStatus.ACCESS_DENIED, str(exc)) from exc
        if session.preauth is not None and not reauth and not session.valid:
            session.preauth.add(bytes(raw))
        try:
            token, result = session.acceptor.step(request.security_buffer)
        except AuthError:
            session.acceptor = None
            if not session.valid:
                self._drop_session(session)
            raise Fail(NtStatus.LOGON_FAILURE, "authentication failed") from None
        if result is None:
            reply = Reply(NtStatus.MORE_PROCESSING_REQUIRED, m.SessionSetupResponse(0, token or b""),
                          session_id=session.session_id)
            if session.preauth is not None and not session.valid:
                reply.after_pack = session.preauth.add
            return reply
        session.acceptor = None
        flags = 0
        if not reauth:
            session.username = result.username
            preauth_value = session.preauth.value if session.preauth is not None else None
            session.keys = derive_session_keys(self.dialect, result.session_key, preauth_value,
                                               self.cipher if self.dialect >= Dialect.SMB_3_0 else Cipher.NONE)
            session.signing_required = bool(self.config.sign or self.client_security_mode & SecurityMode.SIGNING_REQUIRED)
            if encrypt_required:
                session.encrypt_data = True
                session.signing_required = False
            session.valid = True
            if request.previous_session_id:
                channels.previous_session(self, header, request, result.username)
            if self.config.key_sink and session.keys.c2s:
                self.config.key_sink(SessionKeyRecord(session.session_id, session.keys.session_key,
                                                      session.keys.s2c, session.keys.c2s))
        if session.encrypt_data:
            flags |= SessionFlags.ENCRYPT_DATA
        reply = Reply(NtStatus.SUCCESS, m.SessionSetupResponse(flags, token or b""), session_id=session.session_id,
                      sign_session=session, force_sign=self.dialect >= Dialect.SMB_3_1_1 or session.signing_required)
        return reply

    def _drop_session(self, session: Session) -> None:
        self.state.sessions.pop(session.session_id, None)
        self.sessions.pop(session.session_id, None)

    def _logoff(self, session: Session) -> Reply:
        from . import server_files

        server_files.close_session_opens(self, session)
        reply = Reply(NtStatus.SUCCESS, m.LogoffResponse(), sign_session=session)
        self._drop_session(session)
        session.valid = False
        return reply

    # ------------------------------------------------------------------ TREE_CONNECT (§3.3.5.7)

    def _tree_connect(self, session: Session, request: m.TreeConnectRequest, encrypted: bool) -> Reply:
        path = request.path
        name = path.rsplit("\\", 1)[-1] if path.startswith("\\\\") else path
        if path.startswith("\\\\") and path.count("\\") != 3:
            raise Fail(NtStatus.BAD_NETWORK_NAME, f"bad share path {path!r}")
        share_type = ShareType.DISK
        if name.upper() == "IPC$":
            tree = Tree(session.next_tree_id, None, None, False)
            share_type = ShareType.PIPE
        else:
            found = self.state.shares.get(name.lower())
            if found is None:
                raise Fail(NtStatus.BAD_NETWORK_NAME, f"no share {name!r}")
            share, fs = found
            needs = share.encrypt and not self.accept_transport_security
            if needs and (session.keys is None or session.keys.c2s is None):
                raise Fail(NtStatus.ACCESS_DENIED, "share requires encryption; session cannot encrypt")
            # The TREE_CONNECT itself may travel unencrypted: its response carries ENCRYPT_DATA and
            # every later request on the tree must then be encrypted (§3.3.5.7, checked in _handle).
            tree = Tree(session.next_tree_id, share, fs, needs)
        session.next_tree_id += 1
        session.trees[tree.tree_id] = tree
        flags = ShareFlags.NO_CACHING if share_type == ShareType.PIPE else 0
        if tree.encrypt or session.encrypt_data:
            flags |= ShareFlags.ENCRYPT_DATA
        caps = ShareCapabilities.CONTINUOUS_AVAILABILITY if tree.share is not None and \
            tree.share.continuously_available and self.dialect >= Dialect.SMB_3_0 else 0
        response = m.TreeConnectResponse(share_type=share_type, share_flags=int(flags), capabilities=int(caps),
                                         maximal_access=FULL_ACCESS)
        return Reply(NtStatus.SUCCESS, response, tree_id=tree.tree_id)

    # ------------------------------------------------------------------ async / CANCEL

    def go_async(self, header: Header, session: Session, tree_id: int, encrypted: bool, open_=None) -> Reply:
        pending = Pending(self.state.next_async, header.message_id, session, tree_id, header.command, encrypted,
                          open_, header.is_signed, self)
        self.state.next_async += 1
        self.pending[pending.async_id] = pending
        return Reply(NtStatus.PENDING, m.ErrorResponse(), async_id=pending.async_id, tree_id=tree_id)

    def complete_async(self, pending: Pending, status: int, body: m.Message) -> None:
        self.pending.pop(pending.async_id, None)
        header = Header(command=pending.command, status=status, credits=0,
                        flags=HeaderFlags.SERVER_TO_REDIR | HeaderFlags.ASYNC_COMMAND, message_id=pending.message_id,
                        async_id=pending.async_id, session_id=pending.session.session_id)
        self.send_unsolicited(header, body, pending.session, pending.encrypted, sign=pending.signed)

    def _cancel(self, header: Header) -> None:
        target = None
        for pending in self.pending.values():
            if (header.is_async and pending.async_id == header.async_id) or (
                    not header.is_async and pending.message_id == header.message_id):
                target = pending
                break
        if target is not None:
            self.state.watchers = [w for w in self.state.watchers if w is not target]
            self.complete_async(target, NtStatus.CANCELLED, m.ErrorResponse())
