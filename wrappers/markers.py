"""Small files in $SOCKET_WRAPPER_DIR/.wirecheck that tell one end of a connection about the other.

Unix sockets carry only bytes; two facts a real TCP peer would learn from the wire need a side
channel between the two processes: which process accepted a connection (so the client knows
whether its peer logs into the pcap, recorder.py) and that a connection was reset rather than
closed (a unix socket can only signal EOF).
"""

from __future__ import annotations

import os

from .meta import SocketMeta
from .sockdir import PRIVATE_SUBDIR, current_pid, private_dir

#: Marker directories seen to exist. Nothing removes one while its socket directory is in use,
#: so a close that finds it here skips the look-up (a wrong guess only costs a failing unlink).
_seen_dirs: set[str] = set()


def _marker_dir(socket_dir: str, kind: str) -> str:
    return f"{socket_dir}/{PRIVATE_SUBDIR}/{kind}"


def _basename(path: str) -> str:
    return path.rpartition("/")[2]


def note_acceptor(m: SocketMeta) -> None:
    """Leave this (accepting) process's pid where the client will look for it."""
    if m.peer_path:
        path = os.path.join(private_dir(m.socket_dir, "accepted"), os.path.basename(m.peer_path))
        tmp = f"{path}.{current_pid()}"
        with open(tmp, "w") as f:
            f.write(str(current_pid()))
        os.replace(tmp, path)


def acceptor_of(m: SocketMeta) -> int | None:
    if not m.bound_path:
        return None
    path = f"{_marker_dir(m.socket_dir, 'accepted')}/{_basename(m.bound_path)}"
    if not os.access(path, os.F_OK):  # the common case, answered without an exception
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return int(os.read(fd, 64))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


def _kind_dir(m: SocketMeta, kind: str) -> str | None:
    """The marker directory of a kind, or None when none was ever made (the common case: no
    listener was shared, no connection was cut), which spares a close two failing unlinks."""
    path = _marker_dir(m.socket_dir, kind)
    if path in _seen_dirs:
        return path
    if not os.access(path, os.F_OK):  # a bool, not a FileNotFoundError to build and catch
        return None
    _seen_dirs.add(path)
    return path


def forget_acceptor(m: SocketMeta) -> None:
    if m.bound_path and _kind_dir(m, "accepted"):
        try:
            os.unlink(f"{_marker_dir(m.socket_dir, 'accepted')}/{_basename(m.bound_path)}")
        except OSError:
            pass


def _reset_key(m: SocketMeta) -> str | None:
    """A name both ends of one connection compute: client's unix name + listener's unix name."""
    if not m.peer_path or not m.bound_path:
        return None
    a, b = _basename(m.bound_path), _basename(m.peer_path)
    client, server = (b, a) if m.accepted else (a, b)
    return f"{client}-{server}"


def write_reset_marker(m: SocketMeta) -> None:
    key = _reset_key(m)
    if key:
        with open(os.path.join(private_dir(m.socket_dir, "reset"), key), "w"):
            pass


def reset_marker_exists(m: SocketMeta) -> bool:
    key = _reset_key(m)
    return bool(key) and os.access(f"{_marker_dir(m.socket_dir, 'reset')}/{key}", os.F_OK)


def remove_reset_marker(m: SocketMeta) -> None:
    key = _reset_key(m) if _kind_dir(m, "reset") else None
    if key:
        try:
            os.unlink(f"{_marker_dir(m.socket_dir, 'reset')}/{key}")
        except OSError:
            pass
