"""Sans-IO SMB2/3 server: PDUs in, PDUs out (MS-SMB2 §3.3).

The package's layout follows the command families, as :mod:`harness.smb.messages` does:

- :mod:`.model`: the shared types (configuration, sessions, trees, opens, replies); imports no other
  module of the package, so every handler can use it.
- :mod:`.connection`: :class:`ServerConnection`, the rules every request meets (transform,
  compound, credits, signing, encryption) and response assembly; :mod:`.state` what connections
  of one server share.
- Handlers: :mod:`.negotiate`, :mod:`.session` (+ :mod:`.channels` for multichannel binding),
  :mod:`.tree`, and behind :mod:`.dispatch` the file commands: :mod:`.create`, :mod:`.readwrite`,
  :mod:`.lock_notify`, :mod:`.directory`, :mod:`.query_info`, :mod:`.set_info`, :mod:`.ioctl`,
  with :mod:`.opens`, :mod:`.breaks` and :mod:`.replay` as their shared rules, and
  :mod:`.oplocks` (oplock and lease grants, breaks, requests waiting for acknowledgments, and the
  OPLOCK_BREAK acknowledgments) on the rules of :mod:`harness.smb.caching`.

Imports go one way: handlers -> opens/breaks -> model; connection -> handlers.  File access goes
through a share of :mod:`harness.smb.vfs`.
"""

from __future__ import annotations

from .connection import ServerConnection
from .model import (
    ALL_DIALECTS,
    FULL_ACCESS,
    LARGE_MTU_SIZE,
    MAX_CREDITS,
    SMALL_MTU_SIZE,
    Disconnect,
    Fail,
    ListenerInfo,
    Open,
    Pending,
    Reply,
    ServerConfig,
    Session,
    ShareConfig,
    Tree,
)
from .state import ServerState

__all__ = ["ALL_DIALECTS", "FULL_ACCESS", "LARGE_MTU_SIZE", "MAX_CREDITS", "SMALL_MTU_SIZE", "Disconnect", "Fail",
           "ListenerInfo", "Open", "Pending", "Reply", "ServerConfig", "ServerConnection", "ServerState", "Session", "ShareConfig",
           "Tree"]
