"""Pick a transport by name: the only place that knows the list."""

from __future__ import annotations

from .base import Listener, Transport

DEFAULT_PORTS = {"tcp": 445, "nbt": 139, "quic": 443, "smbdirect": 445}


def connect(kind: str, host: str, port: int | None = None, timeout: float = 30.0, **options) -> Transport:
    port = port or DEFAULT_PORTS[kind]
    if kind in ("tcp", "nbt"):
        from .tcp import connect_stream

        return connect_stream(host, port, kind, timeout=timeout)
    if kind == "quic":
        from .quic import connect_quic

        return connect_quic(host, port, timeout=timeout, **options)
    if kind == "smbdirect":
        from .smbdirect import connect_smbdirect

        return connect_smbdirect(host, port, timeout=timeout, **options)
    raise ValueError(f"unknown transport {kind!r}")


def listen(kind: str, host: str, port: int | None = None, **options) -> Listener:
    port = DEFAULT_PORTS[kind] if port is None else port
    if kind in ("tcp", "nbt"):
        from .tcp import StreamListener

        return StreamListener(host, port, kind)
    if kind == "quic":
        from .quic import listen_quic

        return listen_quic(host, port, **options)
    if kind == "smbdirect":
        from .smbdirect import listen_smbdirect

        return listen_smbdirect(host, port, **options)
    raise ValueError(f"unknown transport {kind!r}")
