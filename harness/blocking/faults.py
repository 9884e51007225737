"""Faults for reconnect work: a server that can be restarted on the same address with its durable
state, and clients whose first connection carries a planned cut.

The restart model (also in the README): the server's durable opens live in ``state_dir/durable.json``
(written whenever one is granted, reconnected or closed, see harness/smb/durable.py); file data is on
the share.  A restart stops every connection (clients see a reset), then a new server with the same
configuration listens on the same port and loads ``durable.json``: each durable open comes back
detached, with its full timeout, waiting for its owner's DHnC/DH2C.  Sessions, trees, non-durable
opens, credits and locks are gone, as after a real crash.
"""

from __future__ import annotations

import threading

from harness.blocking.server import SMBServer
from harness.smb.server import ServerConfig
from harness.transport import Transport, connect, listen
from harness.transport.fault import FaultPlan, FaultyTransport


class RestartableServer:
    """An :class:`SMBServer` that :meth:`restart` replaces by a fresh one on the same port."""

    def __init__(self, make_config, transport: str = "tcp", host: str = "127.0.0.1", port: int = 0,
                 listen_options: dict | None = None, **server_options) -> None:
        self.make_config = make_config  # () -> ServerConfig; must set state_dir to keep durable opens
        self.kind = transport
        self.host = host
        self.listen_options = listen_options or {}
        self.server_options = server_options
        self.restarts = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self.server = self._start(port)
        self.port = self.server.port

    def _start(self, port: int) -> SMBServer:
        config: ServerConfig = self.make_config()
        listener = listen(self.kind, self.host, port, **self.listen_options)
        return SMBServer(config, transport=self.kind, listener=listener, **self.server_options).start()

    def restart(self) -> None:
        with self._lock:
            old = self.server
            old.stop()
            self.errors += old.errors
            self.server = self._start(self.port)
            self.restarts += 1

    def stop(self) -> None:
        self.server.stop()
        self.errors += self.server.errors

    @property
    def state(self):
        return self.server.state


def faulty_factory(kind: str, host: str, port: int, plan: FaultPlan, timeout: float = 30.0, **options):
    """A transport factory for ResilientClient: the first connection carries ``plan``, later ones
    are clean (a reconnect must not hit the same fault again)."""
    made: list[Transport] = []

    def factory() -> Transport:
        transport = connect(kind, host, port, timeout=timeout, **options)
        made.append(transport)
        return FaultyTransport(transport, plan) if len(made) == 1 else transport

    factory.made = made  # type: ignore[attr-defined]
    return factory
