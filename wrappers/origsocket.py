"""The socket class as the standard library made it, captured before the wrapper replaces it.

A leaf module on purpose: every part of the wrapper that needs a real, unwrapped socket (the unix
sockets under the emulation, dual-stack twin senders) imports it from here, so none of them has to
import the wrapper's own socket modules to get one.
"""

from __future__ import annotations

import socket as _socket_mod

orig_socket = _socket_mod.socket
