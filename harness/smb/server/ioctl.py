"""IOCTL (MS-SMB2 §3.3.5.15): the FSCTLs this server answers.

VALIDATE_NEGOTIATE_INFO disconnects on any mismatch with what NEGOTIATE saw (a downgrade,
§3.3.5.15.12); QUERY_NETWORK_INTERFACE_INFO lists the addresses the server really listens on
(§3.3.5.15.11, from ``ServerConfig.listeners``), so that a client can bind further channels to
them, over SMB Direct where an address is RDMA_CAPABLE; SRV_COPYCHUNK copies
between two opens of the session within Samba's limits (§3.3.5.15.6); SET_SPARSE,
QUERY_ALLOCATED_RANGES and SET_ZERO_DATA are the sparse-file FSCTLs of :mod:`.sparse`; the rest
answer what smbtorture expects of a plain file system.  Pipes and DFS are not served.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from .. import messages as m
from ..constants import AccessMask, Capabilities, Command, Dialect, Fsctl, InterfaceCapability, NtStatus
from ..errors import SMBProtocolError
from .breaks import break_others
from .locking import check_io
from .model import ALL_FF, Disconnect, Fail, Handler, Reply
from .opens import READ_RIGHTS, WRITE_RIGHTS, open_for, share_of, stat_open
from .sparse import query_allocated_ranges, set_sparse, set_zero_data

SPARSE_FSCTLS: dict[int, Callable[..., Reply]] = {
    Fsctl.SET_SPARSE: set_sparse, Fsctl.QUERY_ALLOCATED_RANGES: query_allocated_ranges,
    Fsctl.SET_ZERO_DATA: set_zero_data}


def _ioctl(conn, session, tree, header, request: m.IoctlRequest, related, encrypted) -> Reply:
    code = request.ctl_code
    if code == Fsctl.VALIDATE_NEGOTIATE_INFO:
        return _validate_negotiate(conn, request)
    if code == Fsctl.QUERY_NETWORK_INTERFACE_INFO:
        return _network_interfaces(conn, request)
    if code == FSCTL_CREATE_OR_GET_OBJECT_ID and tree.fs is not None:
        # FILE_OBJECTID_BUFFER (MS-FSCC 2.3.7, 2.1.3.1): ObjectId from the inode, the rest zero.
        # smbtorture smb2.replay uses it as its IOCTL for channel-sequence checks.
        opened = open_for(session, tree, request.file_id, related)
        st = stat_open(opened)
        output = struct.pack("<QQ", st.file_id, st.volume_id) + bytes(48)
        if request.max_output_response < len(output):
            raise Fail(NtStatus.BUFFER_TOO_SMALL, "output buffer too small")
        return Reply(NtStatus.SUCCESS, m.IoctlResponse(code, opened.file_id, output, b"", 0))
    if code == Fsctl.SRV_REQUEST_RESUME_KEY and tree.fs is not None:
        opened = open_for(session, tree, request.file_id, related)
        output = opened.file_id + opened.file_id[:8] + struct.pack("<I", 0) + bytes(4)
        return Reply(NtStatus.SUCCESS, m.IoctlResponse(code, opened.file_id, output[:32], b"", 0))
    if code == FSCTL_GET_COMPRESSION and tree.fs is not None:
        open_for(session, tree, request.file_id, related)
        return Reply(NtStatus.SUCCESS, m.IoctlResponse(code, request.file_id, struct.pack("<H", 0), b"", 0))
    if code == FSCTL_SET_COMPRESSION and tree.fs is not None:
        open_for(session, tree, request.file_id, related)
        if len(request.input) < 2:
            raise Fail(NtStatus.INVALID_PARAMETER, "SET_COMPRESSION input")
        if struct.unpack_from("<H", request.input)[0] != 0:  # only COMPRESSION_FORMAT_NONE
            raise Fail(NtStatus.NOT_SUPPORTED, "no compression on this file system")
        return Reply(NtStatus.SUCCESS, m.IoctlResponse(code, request.file_id, b"", b"", 0))
    if code == Fsctl.FILE_LEVEL_TRIM and tree.fs is not None:
        open_for(session, tree, request.file_id, related)  # a hint; nothing to trim on a plain file system
        if len(request.input) < 8:
            raise Fail(NtStatus.INVALID_PARAMETER, "FILE_LEVEL_TRIM input")
        ranges = struct.unpack_from("<I", request.input, 4)[0]
        return Reply(NtStatus.SUCCESS, m.IoctlResponse(code, request.file_id, struct.pack("<I", ranges), b"", 0))
    if code in (Fsctl.SRV_COPYCHUNK, Fsctl.SRV_COPYCHUNK_WRITE) and tree.fs is not None:
        return _copychunk(conn, session, tree, request, related)
    if code in SPARSE_FSCTLS and tree.fs is not None:
        return SPARSE_FSCTLS[code](conn, open_for(session, tree, request.file_id, related), request)
    if code == FSCTL_LMR_REQUEST_RESILIENCY:
        # §3.3.5.15.9: NETWORK_RESILIENCY_REQUEST {Timeout (ms), Reserved}; the open becomes resilient
        # (its LOCKs are sequence-checked, locking.py); keeping it across a lost connection is not offered.
        opened = open_for(session, tree, request.file_id, related)
        if conn.dialect == Dialect.SMB_2_0_2:
            raise Fail(NtStatus.INVALID_DEVICE_REQUEST, "no resiliency on 2.0.2")
        if len(request.input) < 8:
            raise Fail(NtStatus.INVALID_PARAMETER, "short NETWORK_RESILIENCY_REQUEST")
        if struct.unpack_from("<I", request.input)[0] > MAX_RESILIENCY_TIMEOUT_MS:
            raise Fail(NtStatus.INVALID_PARAMETER, "resiliency Timeout above the maximum")
        opened.resilient = True
        if opened.durable is not None:  # Open.IsDurable MUST be set to FALSE
            conn.state.durable.remove(opened)
            opened.durable = None
        return Reply(NtStatus.SUCCESS, m.IoctlResponse(code, opened.file_id, b"", b"", 0))
    if code == Fsctl.PIPE_TRANSCEIVE or code == Fsctl.DFS_GET_REFERRALS or code == Fsctl.DFS_GET_REFERRALS_EX:
        raise Fail(NtStatus.NOT_FOUND if code != Fsctl.PIPE_TRANSCEIVE else NtStatus.NOT_SUPPORTED, "unsupported")
    raise Fail(NtStatus.INVALID_DEVICE_REQUEST, f"FSCTL 0x{code:08x}")


FSCTL_GET_COMPRESSION = 0x0009003C

FSCTL_SET_COMPRESSION = 0x0009C040

COPYCHUNK_MAX_CHUNKS = 256

COPYCHUNK_MAX_CHUNK = 1024 * 1024

COPYCHUNK_MAX_TOTAL = 16 * 1024 * 1024

INVALID_VIEW_SIZE = NtStatus.INVALID_VIEW_SIZE

def _copychunk(conn, session, tree, request: m.IoctlRequest, related) -> Reply:
    """FSCTL_SRV_COPYCHUNK(_WRITE) (§3.3.5.15.6): server-side copy between two opens of the session.
    Limit violations answer INVALID_PARAMETER *with* an IOCTL response carrying the limits."""
    target = open_for(session, tree, request.file_id, related)
    if request.max_output_response < 12:
        raise Fail(NtStatus.INVALID_PARAMETER, "MaxOutputResponse < 12")
    data = request.input
    if len(data) < 32:
        raise Fail(NtStatus.INVALID_PARAMETER, "short SRV_COPYCHUNK_COPY")
    key = data[:24]
    (count,) = struct.unpack_from("<I", data, 24)
    if len(data) < 32 + 24 * count:
        raise Fail(NtStatus.INVALID_PARAMETER, "chunk array truncated")
    chunks = [struct.unpack_from("<QQI", data, 32 + 24 * i) for i in range(count)]
    total = sum(length for _, _, length in chunks)
    if (count > COPYCHUNK_MAX_CHUNKS or any(length > COPYCHUNK_MAX_CHUNK or length == 0 for _, _, length in chunks)
            or total > COPYCHUNK_MAX_TOTAL):
        limits = struct.pack("<III", COPYCHUNK_MAX_CHUNKS, COPYCHUNK_MAX_CHUNK, COPYCHUNK_MAX_TOTAL)
        return Reply(NtStatus.INVALID_PARAMETER, m.IoctlResponse(request.ctl_code, target.file_id, limits, b"", 0))
    source = next((o for o in session.opens.values() if o.file_id == key[:16]), None)
    if source is None:
        raise Fail(NtStatus.OBJECT_NAME_NOT_FOUND, "unknown resume key")
    if source.is_dir or target.is_dir:
        raise Fail(NtStatus.INVALID_PARAMETER, "copychunk on a directory")
    # The source must be readable: MS-SMB2 3.3.5.15.6 names FILE_READ_DATA, but a read is allowed with
    # FILE_EXECUTE too (as READ itself allows it here); Samba and Windows copy from such an open
    # (smbtorture smb2.ioctl.copy_chunk_bad_access).
    if not source.access & READ_RIGHTS:
        raise Fail(NtStatus.ACCESS_DENIED, "source not readable")
    if not target.access & WRITE_RIGHTS or (request.ctl_code == Fsctl.SRV_COPYCHUNK
                                            and not target.access & AccessMask.FILE_READ_DATA):
        raise Fail(NtStatus.ACCESS_DENIED, "target access")
    size = share_of(source).fstat(source.handle).end_of_file
    written = bytes_written = 0
    for source_offset, target_offset, length in chunks:
        # A chunk past the source's end (INVALID_VIEW_SIZE) or in a byte-range lock (locks bind a
        # server-side copy as they bind READ and WRITE: FILE_LOCK_CONFLICT) stops the copy; the chunks
        # before it stay copied and the SRV_COPYCHUNK_RESPONSE says so (smbtorture
        # copy_chunk_src_exceed_multi, copy_chunk_*_lock).
        try:
            if source_offset + length > size:
                raise Fail(INVALID_VIEW_SIZE, "chunk beyond the source's end")
            check_io(conn.state, source, source_offset, length, write=False)
            check_io(conn.state, target, target_offset, length, write=True)
        except Fail as exc:
            if written:
                break_others(conn, target)
            output = struct.pack("<III", written, 0, bytes_written)
            return Reply(exc.status, m.IoctlResponse(request.ctl_code, target.file_id, output, b"", 0))
        block = share_of(source).pread(source.handle, length, source_offset)
        share_of(target).pwrite(target.handle, block, target_offset)
        written += 1
        bytes_written += len(block)
    if chunks:
        break_others(conn, target)
    output = struct.pack("<III", written, 0, bytes_written)
    return Reply(NtStatus.SUCCESS, m.IoctlResponse(request.ctl_code, target.file_id, output, b"", 0))


def interface_entries(config) -> list[m.NetworkInterfaceInfo]:
    """NETWORK_INTERFACE_INFO entries for the server's listeners (§3.3.5.15.11): one per listening
    address and port, in listening order.  An SMB Direct listener's entry is RDMA_CAPABLE (the
    client may then bind an SMB Direct channel there and move READ/WRITE data by RDMA), RSS_CAPABLE
    where the listener says its interface spreads receive work; IfIndex is the interface that owns
    the address, so an interface's IPv4 and IPv6 addresses share it, as the section requires.
    The port travels in the SOCKADDR's Port field: with listeners on other than the well-known
    ports (445 TCP, 5445 SMB Direct, 443 QUIC) a client could not find them otherwise.
    ``config.interfaces``, when given, replaces the list (a test may describe any network)."""
    if config.interfaces:
        return list(config.interfaces)
    entries = []
    for listener in config.listeners:
        if listener.if_index == 0:
            continue  # "MUST NOT include the IP address for a network interface with IfIndex equal to zero"
        capability = InterfaceCapability.RDMA_CAPABLE if listener.transport == "smbdirect" else 0
        if listener.rss:
            capability |= InterfaceCapability.RSS_CAPABLE
        entries.append(m.NetworkInterfaceInfo(listener.if_index, int(capability), listener.link_speed,
                                              listener.address, listener.port, 0, listener.scope_id))
    return entries


def _network_interfaces(conn, request: m.IoctlRequest) -> Reply:
    """§3.3.5.15: this FSCTL names no open, FileId must be {-1, -1} (else STATUS_INVALID_PARAMETER);
    §3.3.5.15.11: NOT_SUPPORTED below 3.x or without SMB2_GLOBAL_CAP_MULTI_CHANNEL (the server
    offers no channel to bind); an output larger than MaxOutputResponse is STATUS_BUFFER_TOO_SMALL
    and no list at all: a truncated list would hide interfaces, a short entry is malformed."""
    if request.file_id != ALL_FF:
        raise Fail(NtStatus.INVALID_PARAMETER, "QUERY_NETWORK_INTERFACE_INFO needs FileId {-1, -1}")
    if conn.dialect < Dialect.SMB_3_0 or not conn.server_capabilities & Capabilities.MULTI_CHANNEL:
        raise Fail(NtStatus.NOT_SUPPORTED, "multichannel is off")
    output = m.NetworkInterfaceInfo.pack_list(interface_entries(conn.config))
    if len(output) > request.max_output_response:
        raise Fail(NtStatus.BUFFER_TOO_SMALL, f"{len(output)} bytes of interfaces, MaxOutputResponse "
                                              f"{request.max_output_response}")
    return Reply(NtStatus.SUCCESS, m.IoctlResponse(Fsctl.QUERY_NETWORK_INTERFACE_INFO, ALL_FF, output, b"", 0))


def _validate_negotiate(conn, request: m.IoctlRequest) -> Reply:
    """§3.3.5.15.12: any mismatch with what NEGOTIATE saw means a downgrade attack: disconnect."""
    if request.file_id != ALL_FF or request.flags != 1:
        raise Fail(NtStatus.INVALID_PARAMETER, "VALIDATE_NEGOTIATE_INFO needs FileId -1 and FSCTL")
    try:
        info = m.ValidateNegotiateInfoRequest.unpack(request.input)
    except SMBProtocolError as exc:
        raise Disconnect(str(exc)) from exc
    if request.max_output_response < 24:
        raise Fail(NtStatus.INVALID_PARAMETER, "MaxOutputResponse < 24")
    if (info.capabilities != conn.client_capabilities or info.guid != conn.client_guid
            or info.security_mode != conn.client_security_mode or sorted(info.dialects) != sorted(conn.client_dialects)):
        raise Disconnect("VALIDATE_NEGOTIATE_INFO mismatch")
    output = m.ValidateNegotiateInfoResponse(conn.server_capabilities, conn.config.server_guid,
                                             conn.server_security_mode, conn.dialect).pack()
    return Reply(NtStatus.SUCCESS, m.IoctlResponse(Fsctl.VALIDATE_NEGOTIATE_INFO, ALL_FF, output, b"", 0))


FSCTL_CREATE_OR_GET_OBJECT_ID = 0x000900C0
FSCTL_LMR_REQUEST_RESILIENCY = 0x001401D4
MAX_RESILIENCY_TIMEOUT_MS = 300_000  # MaxResiliencyTimeout (§3.3.1.5; Windows: 300 seconds)


HANDLERS: dict[int, Handler] = {
    Command.IOCTL: _ioctl,
}
