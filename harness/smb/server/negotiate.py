"""NEGOTIATE (MS-SMB2 §3.3.5.4): choosing the dialect, capabilities and 3.1.1 negotiate contexts.

Rules: a second NEGOTIATE drops the connection; the dialects allowed depend on the transport (no
3.1.1 over NetBIOS, only 3.1.1 over QUIC, only 3.x over RDMA, §2.1); multi-credit and large MTU on
TCP, QUIC and RDMA from 2.1 on; on 3.1.1 exactly one PREAUTH_INTEGRITY context with SHA-512 is
required, duplicate contexts are STATUS_INVALID_PARAMETER, and only contexts the client sent get a
response context.  AcceptTransportSecurity is granted only over QUIC when configured.
"""

from __future__ import annotations

import os

from .. import messages as m
from ..auth import server_hint
from ..constants import (
    Capabilities,
    Cipher,
    Command,
    Dialect,
    NegotiateContextType,
    NtStatus,
    SecurityMode,
    SigningAlgorithm,
    TransportCapabilityFlags,
)
from ..crypto import signing_algorithm_for
from ..errors import SMBProtocolError
from ..fscc import filetime_from_unix_ns
from ..header import HEADER_SIZE, Header
from . import channels
from .model import SMALL_MTU_SIZE, Disconnect, Reply, error_reply


def negotiate(conn, header: Header, raw: bytes) -> Reply:
    if conn.negotiated:
        raise Disconnect("second NEGOTIATE")
    if header.is_signed:
        return error_reply(NtStatus.INVALID_PARAMETER)
    try:
        request = m.decode_body(Command.NEGOTIATE, False, raw[HEADER_SIZE:])
    except SMBProtocolError:
        return error_reply(NtStatus.INVALID_PARAMETER)
    if not isinstance(request, m.NegotiateRequest) or not request.dialects:
        return error_reply(NtStatus.INVALID_PARAMETER)
    allowed = [d for d in conn.config.dialects if d in request.dialects]
    if conn.transport == "nbt":
        allowed = [d for d in allowed if d <= Dialect.SMB_3_0_2]  # §2.1: no 3.1.1 over NetBIOS
    if conn.transport == "quic":
        allowed = [d for d in allowed if d == Dialect.SMB_3_1_1]
    if conn.transport == "smbdirect":
        allowed = [d for d in allowed if d >= Dialect.SMB_3_0]  # §2.1: 3.x only over RDMA
    if not allowed:
        return error_reply(NtStatus.NOT_SUPPORTED)
    dialect = max(allowed)
    response_contexts: list = []
    if dialect == Dialect.SMB_3_1_1:
        status = negotiate_contexts(conn, request.contexts, response_contexts)
        if status:
            return error_reply(status)
    conn.dialect = dialect
    conn.client_guid = request.client_guid
    conn.client_capabilities = request.capabilities
    conn.client_security_mode = request.security_mode
    conn.client_dialects = list(request.dialects)
    # §3.3.5.4: multi-credit on TCP port 445 and RDMA (and QUIC, which carries Direct TCP framing).
    conn.supports_multicredit = dialect >= Dialect.SMB_2_1 and conn.transport in ("tcp", "quic", "smbdirect")
    conn.max_size = conn.config.max_size if conn.supports_multicredit else SMALL_MTU_SIZE
    rdma_limit = getattr(conn.rdma, "max_read_write", 0) if conn.rdma is not None else 0
    if rdma_limit:
        conn.max_size = min(conn.max_size, rdma_limit)  # MS-SMBD MaxReadWriteSize
    caps = 0
    if dialect >= Dialect.SMB_2_1:
        caps |= Capabilities.LEASING
    caps |= channels.server_capabilities(conn.config, dialect, request.capabilities)
    if conn.supports_multicredit:
        caps |= Capabilities.LARGE_MTU
    if dialect in (Dialect.SMB_3_0, Dialect.SMB_3_0_2) and request.capabilities & Capabilities.ENCRYPTION:
        caps |= Capabilities.ENCRYPTION
        conn.cipher = Cipher.AES_128_CCM
    conn.server_capabilities = caps
    conn.server_security_mode = SecurityMode.SIGNING_ENABLED | (
        SecurityMode.SIGNING_REQUIRED if conn.config.sign else 0)
    conn.signing_algorithm = signing_algorithm_for(
        dialect, conn.signing_algorithm if conn.signing_context_seen else None)
    conn.negotiated = True
    response = m.NegotiateResponse(
        dialect_revision=dialect, security_mode=conn.server_security_mode, server_guid=conn.config.server_guid,
        capabilities=caps, max_transact_size=conn.max_size, max_read_size=conn.max_size,
        max_write_size=conn.max_size, system_time=filetime_from_unix_ns(conn.config.clock()),
        security_buffer=server_hint(), contexts=response_contexts)
    reply = Reply(NtStatus.SUCCESS, response)
    if dialect == Dialect.SMB_3_1_1:
        conn.preauth.add(bytes(raw))
        reply.after_pack = lambda packed: conn.preauth.add(packed)
    return reply


def negotiate_contexts(conn, contexts: list, out: list) -> int:
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
        chosen = next((c for c in conn.config.ciphers if c in encryption.ciphers), Cipher.NONE)
        conn.cipher = chosen
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
        conn.rdma_transform_ids = []
        out.append(m.RdmaTransformCapabilities([0]))
    signing = by_type.get(NegotiateContextType.SIGNING_CAPABILITIES)
    if signing is not None:
        if not signing.algorithms:
            return NtStatus.INVALID_PARAMETER
        chosen = next((a for a in conn.config.signing_algorithms if a in signing.algorithms),
                      SigningAlgorithm.AES_CMAC)
        conn.signing_algorithm = chosen
        conn.signing_context_seen = True
        out.append(m.SigningCapabilities([chosen]))
    transport = by_type.get(NegotiateContextType.TRANSPORT_CAPABILITIES)
    if transport is not None:
        accept = (conn.transport == "quic" and conn.config.accept_transport_security
                  and bool(transport.flags & TransportCapabilityFlags.ACCEPT_TRANSPORT_LEVEL_SECURITY))
        conn.accept_transport_security = accept
        out.append(m.TransportCapabilities(TransportCapabilityFlags.ACCEPT_TRANSPORT_LEVEL_SECURITY if accept else 0))
    return 0
