"""What an emulated socket is, beyond the unix socket under it, and how that survives dup and fd passing.

The kernel knows a unix socket; the application believes in an AF_INET/AF_INET6 socket with
addresses. ``SocketMeta`` holds the belief. It is keyed by the socket's sockfs inode, which every
``dup()``, ``fork()`` and SCM_RIGHTS copy shares, so all Python objects on one socket share one
meta. When a socket crosses a process boundary (SCM_RIGHTS), the sender writes a sidecar file
with the meta; the receiver rebuilds it from that file and from the unix names the kernel
reports, so the passed socket keeps its emulated identity.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .addressing import parse_socket_name
from .sockdir import current_pid, private_dir


@dataclass
class SocketMeta:
    family: int
    sotype: int
    proto: int
    socket_dir: str
    local: tuple | None = None  # what getsockname() reports (host, port[, flow, scope])
    local_iface: int = 0
    bound_path: str | None = None
    bound_ino: int | None = None
    autobound: bool = False
    owner_pid: int = field(default_factory=current_pid)
    peer: tuple | None = None  # what getpeername() reports
    peer_path: str | None = None
    unix_connected: bool = False  # UDP connect() is deferred until the first send, as cwrap does
    listening: bool = False
    accepted: bool = False
    shared: bool = False  # crossed a fork() or SCM_RIGHTS: another process may hold it
    passed: bool = False  # sent away in SCM_RIGHTS: the receiver owns its FIN and its file now
    options: dict[tuple[int, int], Any] = field(default_factory=dict)
    # dual-stack (dualstack.py): IPV6_V6ONLY, the families a peer can reach us by (empty: not bound
    # yet), and the second name hard-linked to the bound one
    v6only: bool = False
    reach: frozenset = frozenset()
    twin_path: str | None = None
    twin_ino: int | None = None
    twin_sender: Any = None  # UDP: the unix socket that sends under the twin name (dualstack.py)
    # pcap state (streams): the flow model, whether the peer logs its own sends
    flow: Any = None
    peer_logs: bool | None = False  # None: not known yet (socket_wrapper._peer_logs)
    passed_seq: tuple[int, int] | None = None  # TcpFlow counters carried across fd passing
    peer_pid: int | None = None
    udp_ends: tuple | None = None  # (peer, local, packed endpoints) of the last datagram logged (dgram.py)
    fin_sent: bool = False
    fin_seen: bool = False
    reset: bool = False
    closed: bool = False
    refs: int = 0  # open Python objects (dups) in this process
    inodes: set[int] = field(default_factory=set)  # registry keys (a rebind adds one)
    pending_fd: int | None = None  # registered by fd, its inode not looked up yet (register_fd)
    # impairments
    shaper: Any = None  # stream_shaper.StreamShaper once a connection is impaired
    inbox: deque = field(default_factory=deque)  # duplicated incoming datagrams
    receiver_drops: int = 0  # datagrams dropped because the receiver's queue stayed full
    cut: str | None = None  # "rst" or "blackhole" once a stream was cut

    def to_json(self) -> dict:
        return {
            "family": self.family,
            "sotype": self.sotype,
            "proto": self.proto,
            "local": list(self.local) if self.local else None,
            "local_iface": self.local_iface,
            "bound_path": self.bound_path,
            "autobound": self.autobound,
            "peer": list(self.peer) if self.peer else None,
            "peer_path": self.peer_path,
            "unix_connected": self.unix_connected,
            "listening": self.listening,
            "accepted": self.accepted,
            "peer_pid": self.peer_pid,
            "fin_sent": self.fin_sent,
            "fin_seen": self.fin_seen,
            "seq": [self.flow.local_seq, self.flow.remote_seq] if self.flow is not None else None,
            "v6only": self.v6only,
            "reach": sorted(self.reach),
            "twin_path": self.twin_path,
        }


_registry: dict[int, SocketMeta] = {}
_registry_lock = threading.Lock()
#: fd -> meta of sockets registered with register_fd(): most sockets live and die in one process
#: without a dup, fromfd, fd passing or fork, and never need their inode; the first lookup
#: (or a detach) files them all under it.
_pending: dict[int, SocketMeta] = {}


def inode_of(fd: int) -> int:
    return os.fstat(fd).st_ino


def register(fd: int, meta: SocketMeta) -> None:
    ino = inode_of(fd)
    with _registry_lock:
        _registry[ino] = meta
        meta.inodes.add(ino)


def register_fd(fd: int, meta: SocketMeta) -> None:
    """register(), without the fstat until somebody looks the socket up (flush_pending).

    Only for a socket whose descriptor ``fd`` stays open until forget(meta) (its close) or until
    flush_pending() (its detach): the inode is read from the descriptor when it is needed."""
    with _registry_lock:
        _pending[fd] = meta
        meta.pending_fd = fd


def flush_pending() -> None:
    """File every register_fd() socket under its inode (before a lookup, a detach, a fork)."""
    if not _pending:
        return
    with _registry_lock:
        for fd, meta in _pending.items():
            meta.pending_fd = None
            try:
                ino = inode_of(fd)
            except OSError:
                continue
            _registry[ino] = meta
            meta.inodes.add(ino)
        _pending.clear()


def lookup(fd: int) -> SocketMeta | None:
    flush_pending()
    try:
        return _registry.get(inode_of(fd))
    except OSError:
        return None


def forget(meta: SocketMeta) -> None:
    with _registry_lock:
        fd = meta.pending_fd
        if fd is not None:
            if _pending.get(fd) is meta:
                del _pending[fd]
            meta.pending_fd = None
        for ino in meta.inodes:
            if _registry.get(ino) is meta:
                del _registry[ino]
        meta.inodes.clear()


def mark_all_shared() -> None:
    """After fork() every socket is held by two processes."""
    for m in _registry.values():
        m.shared = True
    for m in _pending.values():
        m.shared = True


os.register_at_fork(after_in_child=mark_all_shared, after_in_parent=mark_all_shared)


# -- fd passing -------------------------------------------------------------------------------

def _sidecar_path(socket_dir: str, ino: int) -> str:
    return os.path.join(private_dir(socket_dir, "passed"), f"{ino}.json")


def export_for_passing(fd: int) -> None:
    """Called before an fd leaves in SCM_RIGHTS: leave its meta where the receiver can find it."""
    meta = lookup(fd)
    if meta is None:
        return
    meta.shared = True
    meta.passed = True
    ino = inode_of(fd)
    path = _sidecar_path(meta.socket_dir, ino)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(meta.to_json(), f)
    os.replace(tmp, path)


def _handover_path(socket_dir: str, ino: int) -> str:
    return os.path.join(private_dir(socket_dir, "passed"), f"{ino}.handover.json")


def note_handover(meta: SocketMeta, ino: int) -> None:
    """A holder that is not the last closes: leave its view of the connection to the last one.

    Called with the pcap lock held (socket_wrapper._fin_owner), so the last holder reads it after
    it was written. Only the counters and the FIN flags matter: they are what the last holder
    needs to log a FIN that follows everything this holder logged.
    """
    assert meta.flow is not None
    path = _handover_path(meta.socket_dir, ino)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump({"seq": [meta.flow.local_seq, meta.flow.remote_seq], "fin_sent": meta.fin_sent,
                   "fin_seen": meta.fin_seen}, f)
    os.replace(tmp, path)


def take_handover(socket_dir: str, ino: int) -> dict | None:
    """The handover another holder left for this socket, removed as it is read (or None)."""
    path = _handover_path(socket_dir, ino)
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    try:
        os.unlink(path)
    except OSError:
        pass
    return data if isinstance(data, dict) else None


def _ahead(a: int, b: int) -> int:
    """The later of two sequence numbers (RFC 1982 serial arithmetic on 32 bits)."""
    return b if 0 < (b - a) % (1 << 32) < (1 << 31) else a


def adopt_handover(meta: SocketMeta, data: dict) -> None:
    """Take the counters a closed holder left: each direction as far as either of us got."""
    seq = data.get("seq")
    if meta.flow is not None and isinstance(seq, list) and len(seq) == 2:
        meta.flow.local_seq = _ahead(meta.flow.local_seq, int(seq[0]))
        meta.flow.remote_seq = _ahead(meta.flow.remote_seq, int(seq[1]))
    meta.fin_sent = meta.fin_sent or bool(data.get("fin_sent"))
    meta.fin_seen = meta.fin_seen or bool(data.get("fin_seen"))


def import_passed(fd: int, socket_dir: str) -> SocketMeta | None:
    """Rebuild the meta of a unix socket that arrived by fd passing (or was inherited)."""
    meta = lookup(fd)
    if meta is not None:
        return meta
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, fileno=os.dup(fd))
    except OSError:
        return None
    try:
        sotype = sock.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
        local_path = sock.getsockname() or None
        try:
            peer_path = sock.getpeername() or None
        except OSError:
            peer_path = None
        listening = bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    finally:
        sock.close()
    ino = inode_of(fd)
    data: dict | None = None
    try:
        with open(_sidecar_path(socket_dir, ino)) as f:
            data = json.load(f)
    except (OSError, ValueError):
        data = None
    if data is not None and data.get("bound_path") == (local_path if isinstance(local_path, str) else None):
        meta = SocketMeta(
            family=data["family"], sotype=data["sotype"], proto=data["proto"], socket_dir=socket_dir,
            local=tuple(data["local"]) if data["local"] else None, local_iface=data["local_iface"],
            bound_path=data["bound_path"], autobound=data["autobound"],
            peer=tuple(data["peer"]) if data["peer"] else None, peer_path=data["peer_path"],
            unix_connected=data["unix_connected"], listening=data["listening"], accepted=data["accepted"],
            peer_pid=data.get("peer_pid"), fin_sent=data.get("fin_sent", False),
            fin_seen=data.get("fin_seen", False),
            passed_seq=tuple(data["seq"]) if data.get("seq") else None,  # type: ignore[arg-type]
            v6only=bool(data.get("v6only", False)), reach=frozenset(data.get("reach") or ()),
            twin_path=data.get("twin_path"),
        )
        if not meta.accepted:
            meta.peer_logs = None
    else:
        if not isinstance(local_path, str) or os.path.dirname(local_path) != socket_dir:
            return None
        parsed = parse_socket_name(local_path)
        if parsed is None or parsed.sotype != sotype:
            return None
        from .addressing import Network, sockaddr

        net = Network(_network_from_env(), parsed.iface if 1 <= parsed.iface <= 64 else 1)
        host = net.iface_address(parsed.family, parsed.iface)
        meta = SocketMeta(
            family=parsed.family, sotype=sotype, proto=0, socket_dir=socket_dir,
            local=sockaddr(parsed.family, host, parsed.port), local_iface=parsed.iface,
            bound_path=local_path, listening=listening,
        )
        if isinstance(peer_path, str) and peer_path:
            p = parse_socket_name(peer_path)
            if p is not None:
                meta.peer = sockaddr(p.family, net.iface_address(p.family, p.iface), p.port)
                meta.peer_path = peer_path
                meta.unix_connected = True
    meta.shared = True
    meta.owner_pid = -1  # the creator unlinks the name, not a process it was passed to
    try:
        meta.bound_ino = os.stat(meta.bound_path).st_ino if meta.bound_path else None
    except OSError:
        meta.bound_ino = None
    register(fd, meta)
    return meta


def _network_from_env() -> str:
    return os.environ.get("SOCKET_WRAPPER_IPV4_NETWORK") or "127.0.0.0"


def others_hold(ino: int) -> bool:
    """Does another process hold this socket? (for sockets that crossed fork or SCM_RIGHTS)

    Walks /proc: only used on close of a shared socket, to decide whether the close is the last
    one (and so whether a FIN goes on the wire).
    """
    me = os.getpid()
    target = f"socket:[{ino}]"
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return False
    for pid in pids:
        if pid == me:
            continue
        fd_dir = f"/proc/{pid}/fd"
        try:
            for fd in os.listdir(fd_dir):
                try:
                    if os.readlink(f"{fd_dir}/{fd}") == target:
                        return True
                except OSError:
                    continue
        except OSError:
            continue
    return False


def export_fds(payload: bytes) -> None:
    import array

    fds = array.array("i")
    raw = bytes(memoryview(payload).cast("B"))
    fds.frombytes(raw[: len(raw) - len(raw) % fds.itemsize])
    for fd in fds:
        try:
            export_for_passing(fd)
        except OSError:
            pass
