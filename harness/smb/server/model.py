"""The server's shared types: configuration, sessions, trees, opens, replies and pending requests.

Why a module of its own: every request handler (negotiate, session, tree, create, read/write, info,
directory, ioctl, lock/notify) and the connection that dispatches to them use these types; keeping
them here, importing nothing else of the server, is what lets the handlers live in one module per
command family without importing each other in a circle.  The failures a handler raises
(:class:`Fail`, :class:`Disconnect`) live in :mod:`harness.smb.errors`, under the stack's one root.

Back references to the connection are typed ``Any``: the connection module imports the handlers,
so naming its class here would close the circle this module exists to break.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import durable
from .. import messages as m
from ..auth import Acceptor
from ..constants import Cipher, Dialect, SigningAlgorithm
from ..crypto import NonceGenerator, PreauthIntegrity, SessionKeys
from ..errors import Disconnect, Fail
from ..keys import SessionKeyRecord
from ..vfs import Share

MAX_CREDITS = 8192
LARGE_MTU_SIZE = 8 * 1024 * 1024
SMALL_MTU_SIZE = 65536
ALL_DIALECTS = (Dialect.SMB_3_1_1, Dialect.SMB_3_0_2, Dialect.SMB_3_0, Dialect.SMB_2_1, Dialect.SMB_2_0_2)
FULL_ACCESS = 0x001F01FF
ALL_FF = b"\xff" * 16  # FileId {-1, -1}: "the FileId of the previous element" in a related compound


@dataclass
class ShareConfig:
    name: str
    path: str
    encrypt: bool = False
    continuously_available: bool = False  # persistent handles (DH2Q PERSISTENT) are granted here
    fs: Share | None = None  # the share's file system; None: the host directory ``path`` (LocalShare)


@dataclass
class ListenerInfo:
    """One address the server listens on, as FSCTL_QUERY_NETWORK_INTERFACE_INFO reports it
    (MS-SMB2 §2.2.32.5).  The I/O adapter fills it in from its real listener: ``if_index`` is the
    network interface that owns ``address`` (never 0: §3.3.5.15.11 forbids listing such an
    interface), ``link_speed`` its speed in bit/s, ``rss`` whether it spreads receive work over
    several CPUs.  An SMB Direct listener makes its address RDMA_CAPABLE."""

    transport: str  # "tcp", "nbt", "quic" or "smbdirect"
    address: str  # textual IPv4 or IPv6 address ("127.0.0.10", "fd00::5357:5f0a")
    port: int
    if_index: int = 1
    link_speed: int = 1_000_000_000
    rss: bool = False
    scope_id: int = 0


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
    interfaces: list = field(default_factory=list)  # NetworkInterfaceInfo: overrides what ``listeners`` says
    listeners: list[ListenerInfo] = field(default_factory=list)  # what QUERY_NETWORK_INTERFACE_INFO lists
    key_sink: Callable[[SessionKeyRecord], None] | None = None
    multichannel: bool = False  # SMB2_GLOBAL_CAP_MULTI_CHANNEL and session binding (channels.py in this package)
    durable_timeout_ms: int = durable.DEFAULT_TIMEOUT_MS  # DH2Q asking for Timeout 0 gets this
    durable_max_timeout_ms: int = durable.MAX_TIMEOUT_MS  # and a larger Timeout is cut to this
    durable_v1_timeout_ms: int = durable.V1_TIMEOUT_MS  # DHnQ has no Timeout field: this
    state_dir: str | None = None  # durable opens survive a server restart here (harness/smb/durable.py)
    break_timeout: float = 35.0  # seconds a break waits for its acknowledgment (§3.3.2.1: Windows' 35 s)
    trace: Callable[[str], None] | None = None  # told why each request failed (debugging aid)


@dataclass
class Tree:
    tree_id: int
    share: ShareConfig | None  # None = IPC$
    fs: Share | None  # None for IPC$
    encrypt: bool


@dataclass
class Session:
    session_id: int
    connection: Any  # the ServerConnection it was set up on (the first channel)
    acceptor: Acceptor | None = None
    preauth: PreauthIntegrity | None = None
    keys: SessionKeys | None = None
    valid: bool = False
    username: str = ""
    signing_required: bool = False
    encrypt_data: bool = False
    trees: dict[int, Tree] = field(default_factory=dict)
    opens: dict[int, Open] = field(default_factory=dict)  # volatile id -> Open
    next_tree_id: int = 1
    nonces: NonceGenerator | None = None
    channels: list[Any] = field(default_factory=list)  # connections bound to it, once there are two
    # What the first channel negotiated (Session.Connection.Dialect and its signing algorithm and
    # cipher): binding rules compare a new connection with these, and a request signed with
    # Session.SigningKey on a connection not bound to the session is checked with this algorithm.
    dialect: int = 0
    signing_algorithm: int = 0
    cipher: int = 0


@dataclass
class Open:
    """An open file or directory (the spec's Open, §3.3.1.10).  ``path`` is the share's own name for
    it (see :mod:`harness.smb.vfs`)."""

    persistent: int
    volatile: int
    path: str  # the share's path for it (Share.resolve)
    handle: Any  # the share's handle of an open file; None for a directory or a detached open
    is_dir: bool
    access: int
    share_access: int
    session: Session | None  # None while a durable open is detached
    tree: Tree | None
    connection: Any  # the ServerConnection breaks and notifications go to; None when detached
    delete_on_close: bool = False
    dir_entries: list | None = None
    dir_pos: int = 0
    dir_pattern: str = "*"
    oplock: int = 0
    lease_key: bytes | None = None
    lease_state: int = 0
    lease_epoch: int = 0
    position: int = 0
    durable: durable.DurableInfo | None = None  # set when the open is durable (harness/smb/durable.py)
    channel_sequence: int = 0  # Open.ChannelSequence (replay.py in this package)
    fs: Share | None = None  # the share ``path`` and ``handle`` belong to; None until a restored open is claimed
    lock_sequences: dict[int, int] = field(default_factory=dict)  # Open.LockSequenceArray: index -> number
    resilient: bool = False  # Open.IsResilient (FSCTL_LMR_REQUEST_RESILIENCY): LOCKs are sequence-checked
    app_instance_id: bytes | None = None  # SMB2_CREATE_APP_INSTANCE_ID (create.py, §3.3.5.9.13)
    user_set_write_time: bool = False  # MS-FSA Open.UserSetModificationTime: its writes keep the write time
    write_time_due: int | None = None  # server clock (ns) when its first write's write-time update is due
    write_time_done: bool = False  # that update happened: its later writes leave the write time alone
    write_time_written: bool = False  # it wrote: its close sets the write time
    mode: int = 0  # FileModeInformation (MS-FSCC §2.4.26) as SET_INFO last set it
    deletes_file: bool = False  # the file's delete is pending until this open (of a stream) closes
    stream: str | None = None  # a named data stream of the file at ``path`` (streams.py); None: the file
    # (ClientGuid, CreateGuid) of a DH2Q CREATE that did not become durable, and the CreateAction it
    # answered: a replay of that CREATE gets this open back (create.py, as smbd's replay cache does)
    replay_key: tuple[bytes, bytes] | None = None
    replay_action: int = 0

    @property
    def stream_key(self) -> str | None:
        """What two opens of one path compare to know they open the same stream (names ignore case)."""
        return None if self.stream is None else self.stream.casefold()

    @property
    def file_id(self) -> bytes:
        return struct.pack("<QQ", self.persistent, self.volatile)


@dataclass
class Reply:
    """A handler's result for one element."""

    status: int
    body: m.Message | bytes
    session_id: int | None = None
    tree_id: int | None = None
    force_sign: bool = False
    sign_session: Session | None = None
    after_pack: Callable[[bytes], object] | None = None  # told the packed response (preauth hash)
    async_id: int = 0
    file_id: bytes | None = None


@dataclass
class Pending:
    """An async request (CHANGE_NOTIFY, a blocking LOCK) waiting for completion or CANCEL.

    ``on_cancel`` ends it on CANCEL (the table that holds it answers STATUS_CANCELLED and may
    wake others); ``on_drop`` forgets it unanswered when its connection goes away."""

    async_id: int
    message_id: int
    session: Session
    tree_id: int
    command: int
    encrypted: bool
    open: Open | None = None
    signed: bool = False
    connection: Any = None
    on_cancel: Callable[[], None] | None = None
    on_drop: Callable[[], None] | None = None
    create_guid: bytes = b""  # a waiting DH2Q CREATE's CreateGuid: a replay of it meets it (create.py)


@dataclass
class Related:
    """What a related compound element inherits from the one before it (§3.3.5.2.7.2)."""

    session_id: int = 0
    tree_id: int = 0
    file_id: bytes = b"\xff" * 16
    status: int = 0


# A command handler: (conn, session, tree, header, request, related, encrypted) -> Reply; each
# handler module maps the commands it answers to one in its HANDLERS table.
Handler = Callable[..., Reply]


def error_reply(status: int) -> Reply:
    """The ERROR response (§2.2.2) for a failed request."""
    return Reply(status, m.ErrorResponse())


__all__ = ["MAX_CREDITS", "LARGE_MTU_SIZE", "SMALL_MTU_SIZE", "ALL_DIALECTS", "FULL_ACCESS", "ALL_FF", "Disconnect",
           "Fail", "ShareConfig", "ServerConfig", "Tree", "Session", "Open", "Reply", "Pending", "Related",
           "Handler", "error_reply"]
