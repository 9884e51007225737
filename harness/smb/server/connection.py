"""Sans-IO SMB2/3 server connection: PDUs in, PDUs out.

Rules this state machine enforces, in the order a request meets them (MS-SMB2 §3.3.5):

1. The first PDU must be NEGOTIATE; anything else, or a second NEGOTIATE, drops the connection
   without a reply (§3.3.5.2.2, §3.3.5.4).
2. 0xFD TRANSFORM messages are opened with the session's C2S key; a missing session or a failed
   check drops the connection (§3.3.5.2.1.1).  0xFC compressed messages are never negotiated, so
   they drop it too.
3. Every element of a compound is handled in order; related elements inherit SessionId, TreeId and
   FileId from the previous one, and fail with its status if it failed (§3.3.5.2.7.2).  As Samba
   and Windows do: a related first element is INVALID_PARAMETER and so are the related ones after
   it; a related element whose inherited session is no session is INVALID_PARAMETER; in an
   unrelated element an all-0xFF FileId is just an unknown FileId (FILE_CLOSED).
4. Credits (§3.3.5.2.3): MessageId..MessageId+CreditCharge-1 must lie in the granted window and be
   unused, else the connection is dropped; CANCEL consumes nothing.  Each response grants
   max(1, CreditRequest) while the outstanding window stays <= MAX_CREDITS.
5. Signatures (§3.3.5.2.4): a signed request is verified with the session's signing key; a bad one
   is STATUS_ACCESS_DENIED.  An unsigned, unencrypted request on a signing-required session is
   STATUS_ACCESS_DENIED too.  Responses are signed when the request was, when signing is required,
   and always for the final 3.1.1 SESSION_SETUP; never when encrypted.  STATUS_USER_SESSION_DELETED
   is signed only when the request was (with the keys of a session that ended, kept a while).
6. Encryption: responses to encrypted requests are encrypted with the S2C key; a session or share
   that requires encryption answers unencrypted requests with STATUS_ACCESS_DENIED (§3.3.5.2.9,
   §3.3.5.2.11).  With AcceptTransportSecurity (QUIC only) encryption is skipped.
7. Only contexts the client sent get a response context (clients reject any other).
8. On 3.1.1 a TREE_CONNECT that is neither signed nor encrypted drops the connection (§3.3.5.7): it
   is what protects the negotiation once VALIDATE_NEGOTIATE_INFO is gone.

Output: :meth:`ServerConnection.receive_pdu` returns the PDUs to send now; asynchronous completions
and break notifications (possibly for *other* connections) are queued on each connection's
``outbox`` and announced through ``ServerState.on_output``.  No sockets, threads or clocks here: the
clock is ``ServerConfig.clock`` and file access goes through a share of :mod:`harness.smb.vfs`.

This module owns the rules above; the command handlers live one module per command family
(:mod:`.negotiate`, :mod:`.session`, :mod:`.tree`, and the file commands behind :mod:`.dispatch`),
the types they share in :mod:`.model`.
"""

from __future__ import annotations

from collections.abc import Callable

from .. import messages as m
from ..compound import build_compound, split_compound
from ..constants import (
    PROTOCOL_ID_SMB2,
    PROTOCOL_ID_TRANSFORM,
    Cipher,
    Command,
    Dialect,
    HeaderFlags,
    NtStatus,
    SigningAlgorithm,
)
from ..crypto import (
    NonceGenerator,
    PreauthIntegrity,
    decrypt_message,
    encrypt_message,
    encrypt_parts,
    sign_header,
    sign_message,
    verify_signature,
)
from ..errors import SMBProtocolError
from ..header import HEADER_SIZE, Header
from ..rdma_channel import ServerRdmaPort
from ..wire import pad8
from . import channels, oplocks
from .dispatch import dispatch
from .model import (
    ALL_FF,
    MAX_CREDITS,
    SMALL_MTU_SIZE,
    Disconnect,
    Fail,
    Pending,
    Related,
    Reply,
    Session,
    error_reply,
)
from .negotiate import negotiate
from .opens import close_session_opens
from .session import logoff, session_setup
from .state import ServerState
from .tree import tree_connect, tree_disconnect


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
        # Set by the I/O adapter: has the peer certainly gone (Transport.peer_gone)? Asked when
        # another connection's request depends on this one being alive (a durable reconnect).
        self.peer_gone: Callable[[], bool] = lambda: False
        # RDMA (SMB Direct only): the adapter's RDMA port, and tokens the next reply must invalidate
        # (rdma_channel.py).  RDMATransformIds stays empty: RDMA transforms are declined.
        self.rdma: ServerRdmaPort | None = None
        self.invalidate_tokens: list[int] = []
        self.rdma_transform_ids: list[int] = []
        self.channel_keys: dict[int, bytes] = {}  # session id -> Channel.SigningKey of a bound channel
        self.bindings: dict[int, channels.Binding] = {}
        self.signing_context_seen = False  # a 3.1.1 SIGNING_CAPABILITIES context chose the algorithm

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
        related = Related()
        replies: list[tuple[Header, Reply]] = []
        for index, element in enumerate(elements):
            header = element.header
            if header.is_response:
                raise Disconnect("response received by the server")
            self._consume_credits(header)
            reply = self._handle(element, index, related, encrypted_session is not None)
            if reply is None:  # CANCEL: no response
                continue
            if reply.status == NtStatus.PENDING and reply.async_id and index < len(elements) - 1 \
                    and header.command != Command.CREATE:
                reply = self._no_async_inside_a_chain(reply)
            replies.append((header, reply))
        oplocks.resume(self.state)  # acknowledgments and closes above may let waiting requests go on
        if not replies:
            return []
        return [self._pack_replies(replies, encrypted_session)]

    def close(self) -> None:
        """The transport went away: forget sessions bound here and their opens (§3.3.7.1)."""
        self.closed = True
        for pending in list(self.pending.values()):  # nobody left to answer: forget them
            self.pending.pop(pending.async_id, None)
            if pending.on_drop is not None:
                pending.on_drop()
        for session in list(self.sessions.values()):
            if channels.drop_channel(self, session):
                continue  # still bound to another channel (multichannel)
            close_session_opens(self, session, keep_durable=True)
            if self.state.sessions.get(session.session_id) is session:
                del self.state.sessions[session.session_id]
        self.sessions.clear()
        oplocks.drop_waiting(self.state, connection=self)
        oplocks.settle_unheard(self.state)  # breaks this connection carried: nobody can acknowledge them now
        oplocks.resume(self.state)

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

    def _handle(self, element, index: int, related: Related, encrypted: bool) -> Reply | None:
        header = element.header
        if header.command == Command.CANCEL:
            self._cancel(header)
            return None
        if header.is_related:
            if index == 0:  # nothing to relate to; the related elements after it fail alike (as Samba)
                related.status = NtStatus.INVALID_PARAMETER
                return error_reply(NtStatus.INVALID_PARAMETER)
            if related.status:
                return Reply(related.status, m.ErrorResponse(), session_id=related.session_id,
                             tree_id=related.tree_id)
            header.session_id = related.session_id
            header.tree_id = related.tree_id
            if header.command != Command.SESSION_SETUP and not self._has_session(header.session_id):
                # The session it inherits is no session here (the previous element named a bad one):
                # Samba and Windows answer INVALID_PARAMETER, not USER_SESSION_DELETED.
                return error_reply(NtStatus.INVALID_PARAMETER)
        else:  # an unrelated element stands alone: an all-0xFF FileId names no open (§3.3.5.2.7.1)
            related.file_id = ALL_FF
            related.status = 0
        try:
            if header.command == Command.NEGOTIATE:
                reply = negotiate(self, header, element.raw)
            else:
                end = header.next_command or len(element.raw)
                try:
                    request = m.decode_body(header.command, False, memoryview(element.raw)[HEADER_SIZE:end])
                except SMBProtocolError as exc:
                    raise Fail(exc.status, exc.message) from exc
                if isinstance(request, m.SessionSetupRequest):
                    reply = session_setup(self, header, request, element.raw, encrypted)
                elif header.command == Command.ECHO:
                    session = self.state.sessions.get(header.session_id)
                    if session is not None and session.valid and header.is_signed and not encrypted:
                        try:
                            verify_signature(element.raw, *channels.signing_for(self, session))
                        except SMBProtocolError as exc:
                            raise Fail(NtStatus.ACCESS_DENIED, str(exc)) from exc
                    reply = Reply(NtStatus.SUCCESS, m.EchoResponse())
                    reply.sign_session = session if session and session.valid else None
                else:
                    session = self._session_for(header, element.raw, encrypted)
                    if header.command == Command.LOGOFF:
                        reply = logoff(self, session)
                    elif header.command == Command.TREE_CONNECT:
                        if self.dialect == Dialect.SMB_3_1_1 and not (header.is_signed or encrypted):
                            raise Disconnect("unsigned, unencrypted TREE_CONNECT on 3.1.1 (§3.3.5.7)")
                        if not isinstance(request, m.TreeConnectRequest):
                            raise Fail(NtStatus.INVALID_PARAMETER, "TREE_CONNECT body")
                        reply = tree_connect(self, session, request, encrypted)
                    else:
                        tree = session.trees.get(header.tree_id)
                        if tree is None:
                            raise Fail(NtStatus.NETWORK_NAME_DELETED, f"no tree {header.tree_id}")
                        if tree.encrypt and not encrypted and not self.accept_transport_security:
                            raise Fail(NtStatus.ACCESS_DENIED, "share requires encryption")
                        if header.command == Command.TREE_DISCONNECT:
                            reply = tree_disconnect(self, session, tree)
                        else:
                            reply = dispatch(self, session, tree, header, request, related, encrypted)
                    if reply.sign_session is None:
                        reply.sign_session = session
        except Fail as exc:
            if self.config.trace:
                self.config.trace(f"{Command(header.command).name} mid={header.message_id}: 0x{exc.status:08X} {exc}")
            reply = error_reply(exc.status)
            session = self.state.sessions.get(header.session_id)
            # USER_SESSION_DELETED is signed only when the request was: a client that signed it
            # wants a signed answer (and skips checking that signature for this status).
            if session is not None and session.valid and (exc.status != NtStatus.USER_SESSION_DELETED
                                                          or header.is_signed):
                reply.sign_session = session
            elif exc.status == NtStatus.USER_SESSION_DELETED and header.is_signed and not encrypted:
                reply.sign_session = self.state.ended_sessions.get(header.session_id)
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

    def _has_session(self, session_id: int) -> bool:
        session = self.state.sessions.get(session_id)
        return session is not None and session.valid and self.sessions.get(session_id) is session

    def _session_for(self, header: Header, raw: bytes, encrypted: bool) -> Session:
        session = self.state.sessions.get(header.session_id)
        if session is None or not session.valid or self.sessions.get(header.session_id) is not session:
            raise Fail(NtStatus.USER_SESSION_DELETED, f"no session 0x{header.session_id:x}")
        if header.is_signed and not encrypted:
            try:
                verify_signature(raw, *channels.signing_for(self, session))
            except SMBProtocolError as exc:
                raise Fail(NtStatus.ACCESS_DENIED, str(exc)) from exc
        elif session.signing_required and not encrypted:
            raise Fail(NtStatus.ACCESS_DENIED, "unsigned request on a signing-required session")
        if session.encrypt_data and not encrypted and not self.accept_transport_security:
            raise Fail(NtStatus.ACCESS_DENIED, "session requires encryption")
        return session

    def _pack_replies(self, replies: list[tuple[Header, Reply]], encrypted_session: Session | None) -> bytes:
        if len(replies) == 1 and replies[0][1].after_pack is None:
            return self._pack_single(*replies[0], encrypted_session)
        raws = []
        related_flags = []
        for header, reply in replies:
            raws.append(self._pack_one(header, reply))
            related_flags.append(header.is_related)
        if len(raws) > 1:
            # §3.3.4.1.3: the last response of a compound is padded to 8 bytes too, as Windows and
            # Samba do (smbtorture smb2.compound.compound-padding measures the last READ of a chain)
            raws[-1] += bytes(pad8(len(raws[-1])))
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
            return encrypt_parts([head, *parts], _s2c_key(encrypted_session), self.cipher,
                                 encrypted_session.session_id, encrypted_session.nonces.next())
        session = reply.sign_session
        if (session is not None and session.keys is not None and reply.status != NtStatus.PENDING
                and (reply.force_sign or request.is_signed or session.signing_required)):
            head = sign_header(head, parts, *channels.signing_for(self, session))
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
            return sign_message(raw, *channels.signing_for(self, session))
        return raw

    def _encrypt(self, message: bytes, session: Session) -> bytes:
        if session.nonces is None:
            session.nonces = NonceGenerator(self.cipher)
        return encrypt_message(message, _s2c_key(session), self.cipher, session.session_id, session.nonces.next())

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
                raw = sign_message(raw, *channels.signing_for(self, session))
        self.outbox.append(raw)
        self.state.on_output(self)

    def take_output(self) -> list[bytes]:
        out, self.outbox = self.outbox, []
        return out

    def go_async(self, header: Header, session: Session, tree_id: int, encrypted: bool, open_=None) -> Reply:
        pending = Pending(self.state.next_async, header.message_id, session, tree_id, header.command, encrypted,
                          open_, header.is_signed, self)
        self.state.next_async += 1
        self.pending[pending.async_id] = pending
        return Reply(NtStatus.PENDING, m.ErrorResponse(), async_id=pending.async_id, tree_id=tree_id)

    def _no_async_inside_a_chain(self, reply: Reply) -> Reply:
        """Only the last request of a compound, or a CREATE waiting for an oplock break, may go
        asynchronous: Windows fails any other with STATUS_INTERNAL_ERROR in the compound response
        (MS-SMB2 3.3.5.2.7 and its product notes; smbd does the same). A CHANGE_NOTIFY in the middle
        of a chain would otherwise hold the whole compound response back until a change comes
        (smbtorture smb2.compound.interim2 hung on it). The request is withdrawn as if never made."""
        pending = self.pending.pop(reply.async_id, None)
        if pending is not None:
            oplocks.drop_waiting(self.state, pending=pending)
            if pending.on_drop is not None:
                pending.on_drop()
        return Reply(NtStatus.INTERNAL_ERROR, m.ErrorResponse(), tree_id=reply.tree_id)

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
            oplocks.drop_waiting(self.state, pending=target)
            if target.on_cancel is not None:  # its table answers STATUS_CANCELLED (and may wake others)
                target.on_cancel()
            else:
                self.complete_async(target, NtStatus.CANCELLED, m.ErrorResponse())


def _s2c_key(session: Session) -> bytes:
    """The key a reply to an encrypted request is encrypted with: it exists, since the request
    was decrypted with the same session's keys."""
    if session.keys is None or session.keys.s2c is None:
        raise Disconnect(f"session 0x{session.session_id:x} has no encryption key")
    return session.keys.s2c
