"""What the parts of the QUIC socket share: the base class of QuicSocket and its option mixin.

The QUIC socket is built like the emulated TCP/UDP socket (``wrappers/sockbase.py``): the option
calls (``options.py``) are a mixin of the socket class, so they use the socket's own attributes as
``self`` instead of reaching into another object's private state. At run time this class adds
nothing; for the type checker it says which attributes and methods each part may use of the
others, all of which ``QuicSocket`` (``sock.py``) defines.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..sockbase import _orig_socket

if TYPE_CHECKING:
    from . import uapi
    from .carriers import Addressing
    from .connection_ids import ConnectionIds
    from .core import Connection, Options
    from .loop import Engine, Link


class QuicSocketParts(_orig_socket):
    """The common base of QuicSocket's parts (sock.py, sockdata.py, sockpaths.py, options.py)."""

    _opts: Options
    _cids: ConnectionIds
    _is_client: bool | None
    _remote_tp: uapi.TransportParam | None
    _timeout: float | None
    _sndtimeo: float | None
    _qfamily: int
    _qtype: int
    _v6only: bool
    _local: tuple | None
    _engine: Engine
    _link: Link | None
    _cfg: Any  # the wrapper Config (config.py) this socket was made under, or None
    _carrier: str
    _state: int
    _peer: tuple | None
    _q: deque[list[Any]]
    _nhs: int  # raw handshake items at the head of the receive queue
    _nev: int  # then this many events

    if TYPE_CHECKING:
        @property
        def _conn(self) -> Connection | None: ...
        @property
        def quic_state(self) -> int: ...
        def _engine_call(self, fn: Callable[[], Any]) -> Any: ...
        def _established(self, c: Connection) -> None: ...
        def _stream_open(self, info: uapi.StreamInfo) -> int: ...
        def _migrate(self, new_local: tuple) -> None: ...
        def _set_preferred(self, addr: tuple) -> None: ...
        def _ticket_key(self) -> bytes: ...
        def _peer_tp(self) -> uapi.TransportParam: ...
        def _local_event(self, etype: int, payload: bytes) -> None: ...
        def _blocking(self, fn: Callable[[], Any], nonblock: bool, timeout: float | None) -> Any: ...
        def _send_timeout(self) -> float | None: ...
        def _deadline(self, timeout: float | None) -> float | None: ...
        def _wildcard(self, addr: tuple) -> bool: ...
        def _local_host(self) -> str: ...
        def _tuple(self, host: str, port: int) -> tuple: ...
        def _names(self, host: str) -> tuple[int, str, frozenset[int], Addressing]: ...
