"""The dual-stack part of WrappedSocket: which names a bind takes, the twin name, datagram sources.

The rules (and why) are in dualstack.py; this mixin applies them to an emulated socket's SocketMeta.
Split out of socket_wrapper.py so that file keeps to the socket's life cycle.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from . import dualstack
from . import meta as metamod
from .sockbase import AF_INET, AF_INET6, AF_UNIX, SOCK_STREAM, SocketParts, _orig_socket, _oserror

_V4_ONLY, _V6_ONLY, _DUAL = dualstack.V4_ONLY, dualstack.V6_ONLY, dualstack.DUAL


class DualStackMixin(SocketParts):
    """Part of WrappedSocket (socket_wrapper.py); self is the socket."""

    __slots__ = ()

    def _bind_family(self, host: str) -> tuple[int, str, frozenset]:
        """(family of the file name, host to name, families that reach us): dualstack.bind_plan."""
        m = self._sw
        assert m is not None
        try:
            return dualstack.bind_plan(self._net, m.family, host, m.v6only)
        except OSError as e:
            raise _oserror(e.errno or errno.EINVAL, e.strerror or "") from None

    def _link_twin(self, twin: str) -> None:
        """Give the just-bound socket its IPv4 name too; undo the bind if that fails."""
        m = self._sw
        assert m is not None
        try:
            m.twin_ino = dualstack.link_twin(m.bound_path, twin)  # type: ignore[arg-type]
        except OSError as e:
            self._undo_bind()
            raise _oserror(e.errno or errno.EADDRINUSE) from None
        m.twin_path = twin

    def _undo_bind(self) -> None:
        """A bind that failed half way leaves the socket unbound: a fresh unix socket under the fd."""
        m = self._sw
        assert m is not None
        path, m.bound_path = m.bound_path, None
        fresh = _orig_socket(AF_UNIX, m.sotype, 0)
        metamod.forget(m)
        os.dup2(fresh.fileno(), self.fileno(), inheritable=False)
        fresh.close()
        metamod.register(self.fileno(), m)
        _orig_socket.settimeout(self, None if self._sw_timeout is None else 0.0)
        if m.sotype == SOCK_STREAM:
            self._set_buffers()
        if path:
            try:
                os.unlink(path)
            except OSError:
                pass

    def _reach_out(self, path: str) -> None:
        """An autobound dual-stack UDP socket about to send to the other family takes its twin name
        first, so the answer finds it (Linux bound it to ``::`` all along)."""
        m = self._sw
        assert m is not None
        if m.family != AF_INET6 or m.v6only or not m.autobound or m.reach == _DUAL or not m.bound_path:
            return
        dest = AF_INET if os.path.basename(path)[0] in "TU" else AF_INET6
        if dest in m.reach:
            return
        twin = dualstack.twin_name(m.bound_path)
        if twin is None:
            return
        try:
            self._claim(twin)
            m.twin_ino = dualstack.link_twin(m.bound_path, twin)
        except OSError:
            return  # the name is taken: answers from that family cannot reach us (counted nowhere)
        m.twin_path, m.reach = twin, _DUAL

    def _twin_sender_for(self, path: str) -> Any:
        """The socket a datagram to ``path`` leaves from when that is the twin's family, else None."""
        m = self._sw
        assert m is not None
        if m.twin_path is None or m.bound_path is None:
            return None
        if dualstack.family_of_name(path) == dualstack.family_of_name(m.bound_path):
            return None
        if m.twin_sender is None:
            m.twin_sender = dualstack.open_twin_sender(m.twin_path, m.sotype) or False
        return m.twin_sender or None

    def _wire(self, peer: tuple) -> tuple[tuple, tuple]:
        """(local, peer) as the pcap writes them: one family, v4-mapped addresses as IPv4."""
        m = self._sw
        assert m is not None and m.local is not None
        return dualstack.wire_pair(self._net, m.local, peer, m.local_iface)
