"""Sans-IO SMB2/3 client connection: the caller asks for request PDUs and feeds back response PDUs.

Rules this model keeps (MS-SMB2 §3.2):

1. NEGOTIATE first (§3.2.4.2.2.2): dialects 2.0.2..3.1.1 (3.1.1 only over QUIC, never over NBT),
   contexts PREAUTH (SHA-512, 32-byte salt), ENCRYPTION (our cipher preference), SIGNING, NETNAME,
   and TRANSPORT_CAPABILITIES only on QUIC with AcceptTransportSecurity wanted.
2. The response is checked (§3.2.5.2): exactly one PREAUTH, at most one of each known context, the
   chosen cipher/signing algorithm must be one we offered; unknown contexts are ignored.
3. Credits: every request spends CreditCharge credits (multi-credit only with LARGE_MTU) from what
   the server granted, and MessageIds advance by the charge; responses add their CreditResponse.
   Interim STATUS_PENDING responses grant credits too; MessageId 0xFFFF... notifications do not.
4. Session setup hashes every request and each MORE_PROCESSING_REQUIRED response into the session
   preauth hash (3.1.1), derives the keys on success and requires the final response to be signed.
5. Requests are signed when the session requires signing, and TREE_CONNECT always on 3.1.1
   (§3.2.4.2.4), unless they are encrypted; they are
   encrypted (C2S key) when the session or tree asks for it.  Responses are verified except interim
   and unsolicited ones (§3.2.5.1.3).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from . import messages as m
from .compound import build_compound, split_compound
from .constants import (
    PROTOCOL_ID_TRANSFORM,
    UNSOLICITED_MESSAGE_ID,
    Capabilities,
    Cipher,
    Command,
    Dialect,
    HeaderFlags,
    NegotiateContextType,
    NtStatus,
    SecurityMode,
    SessionFlags,
    ShareFlags,
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
    must_verify_signature,
    sign_header,
    sign_message,
    signing_algorithm_for,
    verify_signature,
)
from .errors import SMBProtocolError, SMBStatusError
from .header import HEADER_SIZE, Header
from .keys import SessionKeyRecord

if TYPE_CHECKING:  # pyspnego (and cryptography's x509 with it) loads at the first SESSION_SETUP
    from .auth import Initiator

CIPHER_NAMES = {"aes-128-ccm": Cipher.AES_128_CCM, "aes-128-gcm": Cipher.AES_128_GCM,
                "aes-256-ccm": Cipher.AES_256_CCM, "aes-256-gcm": Cipher.AES_256_GCM}
DEFAULT_CIPHERS = (Cipher.AES_128_GCM, Cipher.AES_128_CCM, Cipher.AES_256_GCM, Cipher.AES_256_CCM)


class SMBError(SMBStatusError):
    """A request failed with an NTSTATUS (the server's answer to a client request)."""

    def __init__(self, status: int, command: int, message: str = "") -> None:
        try:
            name = NtStatus(status).name
        except ValueError:
            name = "?"
        super().__init__(status, f"{Command(command).name} failed: 0x{status:08X} ({name})"
                                 f"{': ' + message if message else ''}")
        self.command = command


_Body = TypeVar("_Body", bound=m.Message)


@dataclass
class Response:
    header: Header
    body: m.Message
    raw: bytes

    def body_as(self, cls: type[_Body]) -> _Body:
        """The body as the structure ``cls`` the command answers with; anything else (an ERROR
        structure where the command's own was due) is an invalid response."""
        if not isinstance(self.body, cls):
            raise SMBProtocolError(NtStatus.INVALID_NETWORK_RESPONSE,
                                   f"{type(self.body).__name__} where {cls.__name__} was expected")
        return self.body


@dataclass
class ClientSession:
    session_id: int = 0
    keys: SessionKeys | None = None
    preauth: PreauthIntegrity | None = None
    signing_required: bool = False
    encrypt: bool = False
    nonces: NonceGenerator | None = None
    initiator: Initiator | None = None
    trees: dict[int, bool] = field(default_factory=dict)  # tree id -> encrypt
    previous_session_id: int = 0  # set when logging on again after losing a connection (§3.2.4.2.3)


class ClientConnection:
    def __init__(self, transport: str = "tcp", server_name: str = "", ciphers: tuple[int, ...] = DEFAULT_CIPHERS,
                 signing_algorithms: tuple[int, ...] = (SigningAlgorithm.AES_GMAC, SigningAlgorithm.AES_CMAC,
                                                        SigningAlgorithm.HMAC_SHA256),
                 require_signing: bool = False, encrypt: bool = False, accept_transport_security: bool = False,
                 dialects: tuple[int, ...] | None = None) -> None:
        self.transport = transport
        self.server_name = server_name
        self.ciphers = ciphers
        self.signing_algorithms = signing_algorithms
        self.require_signing = require_signing
        self.want_encrypt = encrypt
        self.want_transport_security = accept_transport_security and transport == "quic"
        if dialects is None:
            dialects = (Dialect.SMB_2_0_2, Dialect.SMB_2_1, Dialect.SMB_3_0, Dialect.SMB_3_0_2, Dialect.SMB_3_1_1)
            if transport == "nbt":
                dialects = tuple(d for d in dialects if d <= Dialect.SMB_3_0_2)
            if transport == "quic":
                dialects = (Dialect.SMB_3_1_1,)
            if transport == "smbdirect":  # §2.1: SMB Direct carries the 3.x dialects only
                dialects = tuple(d for d in dialects if d >= Dialect.SMB_3_0)
        self.dialects = dialects
        self.client_guid = os.urandom(16)
        self.preauth = PreauthIntegrity()
        self.next_message_id = 0
        self.credits = 1
        self.dialect = 0
        self.cipher = Cipher.NONE
        self.signing_algorithm: int = SigningAlgorithm.AES_CMAC
        self.multicredit = False
        self.max_read = self.max_write = self.max_transact = 65536
        self.server_guid = b""
        self.server_capabilities = 0
        self.server_security_mode = 0
        self.accept_transport_security = False
        self.key_records: list[SessionKeyRecord] = []
        self._negotiate_raw = b""
        self._offered: dict[int, Any] = {}
        self.channel_sequence = 0  # copied into every 3.x request (§3.2.4.1.1); see harness/smb/reconnect.py

    # ------------------------------------------------------------------ NEGOTIATE

    def negotiate_request(self) -> bytes:
        capabilities = Capabilities.LEASING | Capabilities.LARGE_MTU | Capabilities.ENCRYPTION
        if max(self.dialects) >= Dialect.SMB_3_0:  # harness/blocking/multichannel.py, harness/blocking/reconnect.py
            capabilities |= Capabilities.MULTI_CHANNEL | Capabilities.PERSISTENT_HANDLES
        contexts: list = []
        if Dialect.SMB_3_1_1 in self.dialects:
            contexts = [m.PreauthIntegrityCapabilities([1], os.urandom(32)),
                        m.EncryptionCapabilities(list(self.ciphers)),
                        m.SigningCapabilities(list(self.signing_algorithms))]
            if self.server_name:
                contexts.append(m.NetnameContext(self.server_name))
            if self.want_transport_security:
                contexts.append(m.TransportCapabilities(TransportCapabilityFlags.ACCEPT_TRANSPORT_LEVEL_SECURITY))
            if self.rdma_transforms_offered:  # §3.2.4.2.2.2 IsRDMATransformSupported
                contexts.append(m.RdmaTransformCapabilities(list(self.rdma_transforms_offered)))
        mode = SecurityMode.SIGNING_ENABLED | (SecurityMode.SIGNING_REQUIRED if self.require_signing else 0)
        body = m.NegotiateRequest(list(self.dialects), mode, capabilities, self.client_guid, contexts)
        self._offered = {c.context_type: c for c in contexts}
        self._negotiate_body = body
        raw, _ = self.build(Command.NEGOTIATE, body)
        self._negotiate_raw = raw
        return raw

    def receive_negotiate(self, pdu: bytes) -> m.NegotiateResponse:
        (response,) = self.receive(pdu)
        if response.header.status != NtStatus.SUCCESS:
            raise SMBError(response.header.status, Command.NEGOTIATE)
        body = response.body_as(m.NegotiateResponse)
        if body.dialect_revision not in self.dialects:
            raise SMBProtocolError(NtStatus.INVALID_NETWORK_RESPONSE, f"dialect 0x{body.dialect_revision:04x} not offered")
        self.dialect = body.dialect_revision
        self.server_guid = body.server_guid
        self.server_capabilities = body.capabilities
        self.server_security_mode = body.security_mode
        self.multicredit = bool(body.capabilities & Capabilities.LARGE_MTU) and self.dialect >= Dialect.SMB_2_1
        self.max_read, self.max_write, self.max_transact = body.max_read_size, body.max_write_size, body.max_transact_size
        if self.dialect in (Dialect.SMB_3_0, Dialect.SMB_3_0_2) and body.capabilities & Capabilities.ENCRYPTION:
            self.cipher = Cipher.AES_128_CCM
        if self.dialect == Dialect.SMB_3_1_1:
            self._check_contexts(body.contexts)
            self.preauth.add(self._negotiate_raw)
            self.preauth.add(response.raw)
        self.signing_algorithm = signing_algorithm_for(self.dialect, self._signing)
        return body

    _signing: int | None = None  # set by a SIGNING context (HMAC-SHA256 is 0, so None means absent)
    #: RDMA transforms to offer (SMB2_RDMA_TRANSFORM_ENCRYPTION 1, SIGNING 2); none by default, and
    #: Connection.RDMATransformIds as the server answered (§3.2.5.2: NONE means an empty list).
    rdma_transforms_offered: tuple[int, ...] = ()
    rdma_transform_ids: tuple[int, ...] = ()

    def _check_contexts(self, contexts: list) -> None:
        seen: dict[int, Any] = {}  # negotiate context type -> its (type-specific) context
        for context in contexts:
            if context.context_type in seen and context.context_type in (1, 2, 3, 6, 7, 8):
                raise SMBProtocolError(NtStatus.INVALID_NETWORK_RESPONSE, f"duplicate context {context.context_type}")
            seen[context.context_type] = context
        bad = NtStatus.INVALID_NETWORK_RESPONSE
        preauth = seen.get(NegotiateContextType.PREAUTH_INTEGRITY_CAPABILITIES)
        if preauth is None or preauth.hash_algorithms != [1]:
            raise SMBProtocolError(bad, "PREAUTH context missing or not SHA-512")
        for kind in (3, 6, 7, 8):
            if kind in seen and kind not in self._offered:
                raise SMBProtocolError(bad, f"context {kind} was not requested")
        encryption = seen.get(NegotiateContextType.ENCRYPTION_CAPABILITIES)
        if encryption is not None:
            if len(encryption.ciphers) != 1 or (encryption.ciphers[0] and encryption.ciphers[0] not in self.ciphers):
                raise SMBProtocolError(bad, "cipher not offered")
            self.cipher = encryption.ciphers[0]
        signing = seen.get(NegotiateContextType.SIGNING_CAPABILITIES)
        if signing is not None:
            if len(signing.algorithms) != 1 or signing.algorithms[0] not in self.signing_algorithms:
                raise SMBProtocolError(bad, "signing algorithm not offered")
            self._signing = signing.algorithms[0]
        rdma = seen.get(NegotiateContextType.RDMA_TRANSFORM_CAPABILITIES)
        if rdma is not None:
            offered = self._offered[NegotiateContextType.RDMA_TRANSFORM_CAPABILITIES].transform_ids
            if not rdma.transform_ids or any(t and t not in offered for t in rdma.transform_ids):
                raise SMBProtocolError(bad, f"RDMA transforms {rdma.transform_ids} not among those offered")
            self.rdma_transform_ids = tuple(t for t in rdma.transform_ids if t)
        transport = seen.get(NegotiateContextType.TRANSPORT_CAPABILITIES)
        if transport is not None and self.transport == "quic":
            self.accept_transport_security = bool(transport.flags & TransportCapabilityFlags.ACCEPT_TRANSPORT_LEVEL_SECURITY)

    # ------------------------------------------------------------------ SESSION_SETUP

    def session_setup_request(self, session: ClientSession, token: bytes | None) -> bytes:
        mode = SecurityMode.SIGNING_ENABLED | (SecurityMode.SIGNING_REQUIRED if self.require_signing else 0)
        body = m.SessionSetupRequest(0, mode, Capabilities.DFS if False else 0, 0, session.previous_session_id,
                                     token or b"")
        raw, _ = self.build(Command.SESSION_SETUP, body, session)
        if self.dialect == Dialect.SMB_3_1_1:
            if session.preauth is None:
                session.preauth = self.preauth.for_session()
            session.preauth.add(raw)
        return raw

    def session_setup_response(self, session: ClientSession, response: Response) -> bytes | None:
        """Process one SESSION_SETUP response; return the next token to send, or None when done."""
        status = response.header.status
        initiator = session.initiator
        if initiator is None:
            raise SMBProtocolError(NtStatus.INVALID_NETWORK_RESPONSE, "SESSION_SETUP response without a setup")
        if status not in (NtStatus.MORE_PROCESSING_REQUIRED, NtStatus.SUCCESS):
            raise SMBError(status, Command.SESSION_SETUP)
        body = response.body_as(m.SessionSetupResponse)
        if status == NtStatus.MORE_PROCESSING_REQUIRED:
            session.session_id = response.header.session_id
            if session.preauth is not None:
                session.preauth.add(response.raw)
            return initiator.step(body.security_buffer) or b""
        session.session_id = response.header.session_id
        if body.security_buffer:
            initiator.step(body.security_buffer)
        key = initiator.session_key
        cipher = self.cipher if self.dialect >= Dialect.SMB_3_0 else Cipher.NONE
        session.keys = derive_session_keys(self.dialect, key, session.preauth.value if session.preauth else None,
                                           cipher)
        flags = body.session_flags
        session.encrypt = bool(flags & SessionFlags.ENCRYPT_DATA) or (self.want_encrypt and cipher != Cipher.NONE)
        if self.want_encrypt and cipher == Cipher.NONE and not self.accept_transport_security:
            raise SMBError(NtStatus.ACCESS_DENIED, Command.SESSION_SETUP, "server offers no common cipher")
        if self.accept_transport_security:
            session.encrypt = False
        session.signing_required = not flags & (SessionFlags.IS_GUEST | SessionFlags.IS_NULL) and (
            self.require_signing or bool(self.server_security_mode & SecurityMode.SIGNING_REQUIRED))
        if flags & SessionFlags.ENCRYPT_DATA:
            session.signing_required = True if not session.encrypt else session.signing_required
        if self.dialect >= Dialect.SMB_3_1_1 or response.header.is_signed:
            if not response.header.is_signed:
                raise SMBProtocolError(NtStatus.ACCESS_DENIED, "final SESSION_SETUP response is not signed")
            verify_signature(response.raw, session.keys.signing, self.signing_algorithm)
        if session.keys.c2s and session.keys.s2c:
            self.key_records.append(SessionKeyRecord(session.session_id, session.keys.session_key,
                                                     session.keys.s2c, session.keys.c2s))
        session.initiator = None
        return None

    # ------------------------------------------------------------------ generic requests

    def charge_for(self, payload: int) -> int:
        if not self.multicredit:
            return 1
        return max(1, (payload - 1) // 65536 + 1) if payload else 1

    def build(self, command: int, body: m.Message, session: ClientSession | None = None, tree_id: int = 0,
              payload: int = 0, credits_wanted: int = 0) -> tuple[bytes, int]:
        """An unsigned, unencrypted request message and its MessageId; spends credits."""
        parts, message_id = self.build_parts(command, body, session, tree_id, payload, credits_wanted)
        return b"".join(parts), message_id

    def build_parts(self, command: int, body: m.Message, session: ClientSession | None = None, tree_id: int = 0,
                    payload: int = 0, credits_wanted: int = 0) -> tuple[list[bytes], int]:
        """As :meth:`build`, as buffers (header, fixed part, data) for :meth:`seal_parts`."""
        charge = self.charge_for(payload)
        if command != Command.CANCEL:
            if charge > self.credits:
                raise SMBProtocolError(NtStatus.INSUFFICIENT_RESOURCES,
                                       f"{charge} credits needed, {self.credits} available")
            self.credits -= charge
        message_id = self.next_message_id
        if command != Command.CANCEL:
            self.next_message_id += charge
        # Ask for enough to keep a window of large requests in flight (servers cap it, smbd at 8192).
        want = max(credits_wanted, charge * 2 + (8 if self.multicredit else 1))
        header = Header(command=command, credit_charge=charge if self.dialect >= Dialect.SMB_2_1 else 0,
                        credits=min(want, 512), message_id=message_id, tree_id=tree_id,
                        session_id=session.session_id if session else 0)
        if self.dialect >= Dialect.SMB_3_0 and command not in (Command.NEGOTIATE, Command.SESSION_SETUP):
            header.status = self.channel_sequence & 0xFFFF
        if self.dialect == Dialect.SMB_3_1_1:
            header.flags |= 0x10  # priority 1, as smbclient does
        body_parts = body.pack_parts() if hasattr(body, "pack_parts") else [body.pack()]
        return [header.pack(), *body_parts], message_id

    def cancel_request(self, message_id: int, async_id: int, session: ClientSession | None) -> bytes:
        """A CANCEL of the request ``message_id`` (3.2.4.24): it takes the target's MessageId and, once
        the interim response gave one, its AsyncId; it spends no credit and gets no response."""
        header = Header(command=Command.CANCEL, message_id=message_id, async_id=async_id,
                        flags=HeaderFlags.ASYNC_COMMAND if async_id else 0,
                        session_id=session.session_id if session else 0)
        return self.seal_parts([header.pack(), m.CancelRequest().pack()], session)

    def seal_parts(self, parts: list[bytes], session: ClientSession | None, tree_id: int = 0) -> bytes:
        """:meth:`seal` for one uncompounded request given as buffers: the data is copied once."""
        if session is None or session.keys is None:
            return b"".join(parts)
        encrypt = (session.encrypt or session.trees.get(tree_id, False)) and not self.accept_transport_security
        if encrypt and session.keys.c2s:
            if session.nonces is None:
                session.nonces = NonceGenerator(self.cipher)
            return encrypt_parts(parts, session.keys.c2s, self.cipher, session.session_id, session.nonces.next())
        command = int.from_bytes(parts[0][12:14], "little")
        if session.signing_required or (self.dialect == Dialect.SMB_3_1_1 and command == Command.TREE_CONNECT):
            return b"".join([sign_header(parts[0], parts[1:], session.keys.signing, self.signing_algorithm),
                             *parts[1:]])
        return b"".join(parts)

    def seal(self, raws: list[bytes], session: ClientSession | None, tree_id: int = 0,
             related: bool | Sequence[bool] = False) -> bytes:
        """Chain, sign and (when required) encrypt requests into one PDU (``related``: as
        :func:`~harness.smb.compound.build_compound` takes it)."""
        chain = build_compound(raws, related) if len(raws) > 1 else raws[0]
        if session is None or session.keys is None:
            return chain
        encrypt = (session.encrypt or session.trees.get(tree_id, False)) and not self.accept_transport_security
        if encrypt and session.keys.c2s:
            if session.nonces is None:
                session.nonces = NonceGenerator(self.cipher)
            return encrypt_message(chain, session.keys.c2s, self.cipher, session.session_id, session.nonces.next())
        elements = split_compound(chain)
        # §3.2.4.2.4: on 3.1.1 a TREE_CONNECT is always signed (it replaces secure negotiate).
        tree_connect = self.dialect == Dialect.SMB_3_1_1 and any(
            e.header.command == Command.TREE_CONNECT for e in elements)
        if session.signing_required or tree_connect:
            return b"".join(sign_message(e.raw, session.keys.signing, self.signing_algorithm) for e in elements)
        return chain

    def receive(self, pdu: bytes, sessions: dict[int, ClientSession] | None = None) -> list[Response]:
        """Open one response PDU: decrypt, split, verify, account credits."""
        encrypted = bytes(pdu[:4]) == PROTOCOL_ID_TRANSFORM
        if encrypted:
            session_id = int.from_bytes(pdu[44:52], "little")
            session = (sessions or {}).get(session_id)
            if session is None or session.keys is None or session.keys.s2c is None:
                raise SMBProtocolError(NtStatus.INVALID_NETWORK_RESPONSE, "encrypted response for an unknown session")
            _, pdu = decrypt_message(pdu, session.keys.s2c, self.cipher)
        responses = []
        for element in split_compound(pdu):
            header = element.header
            if not header.is_response:
                raise SMBProtocolError(NtStatus.INVALID_NETWORK_RESPONSE, "request received by the client")
            if header.message_id != UNSOLICITED_MESSAGE_ID:
                self.credits += header.credits
            end = header.next_command or len(element.raw)
            body = m.decode_body(header.command, True, memoryview(element.raw)[HEADER_SIZE:end], header.status)
            if not encrypted and must_verify_signature(header) and sessions:
                session = sessions.get(header.session_id)
                if session is not None and session.keys is not None and header.command != Command.SESSION_SETUP:
                    verify_signature(element.raw, session.keys.signing, self.signing_algorithm)
            elif (not encrypted and sessions and header.message_id != UNSOLICITED_MESSAGE_ID
                  and header.status != NtStatus.PENDING):
                session = sessions.get(header.session_id)
                if session is not None and session.signing_required and session.keys is not None \
                        and header.command != Command.SESSION_SETUP:
                    raise SMBProtocolError(NtStatus.ACCESS_DENIED, "unsigned response on a signed session")
            responses.append(Response(header, body, element.raw))
        return responses

    def tree_encrypts(self, response: m.TreeConnectResponse) -> bool:
        return bool(response.share_flags & ShareFlags.ENCRYPT_DATA)

    @property
    def is_async_interim(self):
        return lambda r: r.header.status == NtStatus.PENDING and bool(r.header.flags & HeaderFlags.ASYNC_COMMAND)
