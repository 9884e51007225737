"""Small files in $SOCKET_WRAPPER_DIR/.wirecheck that tell one end of a connection about the other.

Unix sockets carry only bytes; two facts a real TCP peer would learn from the wire need a side
channel between the two processes: which process accepted a connection (so the client knows
whether its peer logs into the pcap, recorder.py) and that a connection was reset rather than
closed (a unix socket can only signal EOF).
"""

from __future__ import annotations

import os

from .meta import SocketMeta
from .sockdir import private_dir


def note_acceptor(m: SocketMeta) -> None:
    """Leave this (accepting) process's pid where the client will look for it."""
    if m.peer_path:
        path = os.path.join(private_dir(m.socket_dir, "accepted"), os.path.basename(m.peer_path))
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(str(os.getpid()))
        os.replace(tmp, path)


def acceptor_of(m: SocketMeta) -> int | None:
    if not m.bound_path:
        return None
    try:
        with open(os.path.join(m.socket_dir, ".wirecheck", "accepted", os.path.basename(m.bound_path))) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def _kind_dir(m: SocketMeta, kind: str) -> str | None:
    """The marker directory of a kind, or None when none was ever made (the common case: no
    listener was shared, no connection was cut), which spares a close two failing unlinks."""
    path = os.path.join(m.socket_dir, ".wirecheck", kind)
    return path if os.path.isdir(path) else None


def forget_acceptor(m: SocketMeta) -> None:
    if m.bound_path and _kind_dir(m, "accepted"):
        try:
            os.unlink(os.path.join(m.socket_dir, ".wirecheck", "accepted", os.path.basename(m.bound_path)))
        except OSError:
            pass


def _reset_key(m: SocketMeta) -> str | None:
    """A name both ends of one connection compute: client's unix name + listener's unix name."""
    if not m.peer_path or not m.bound_path:
        return None
    a, b = os.path.basename(m.bound_path), os.path.basename(m.peer_path)
    client, server = (b, a) if m.accepted else (a, b)
    return f"{client}-{server}"


def write_reset_marker(m: SocketMeta) -> None:
    key = _reset_key(m)
    if key:
        with open(os.path.join(private_dir(m.socket_dir, "reset"), key), "w"):
            pass


def reset_marker_exists(m: SocketMeta) -> bool:
    key = _reset_key(m)
    return bool(key) and os.path.exists(os.path.join(m.socket_dir, ".wirecheck", "reset", key))  # type: ignore[arg-type]


def remove_reset_marker(m: SocketMeta) -> None:
    key = _reset_key(m) if _kind_dir(m, "reset") else None
    if key:
        try:
            os.unlink(os.path.join(m.socket_dir, ".wirecheck", "reset", key))
        except OSError:
            pass
