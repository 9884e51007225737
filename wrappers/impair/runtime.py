"""The process state of impairments: which spec is active, and the deciders of every flow.

The active spec is the :func:`configure` override, else ``WIRECHECK_IMPAIR``, else
``WIRECHECK_IMPAIR_FILE`` (re-read when it changes: how a parent changes a child's impairments
mid-run). Deciders are cached per flow and keep their counters and random streams when the rules
change, so a mid-run change continues each flow's fate sequence instead of restarting it.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Literal, overload

from .decisions import DatagramImpairer, StreamImpairer
from .spec import ENV_FILE, ENV_SPEC, ImpairConfig, ImpairSpecError, from_mapping, load_file, parse

RELOAD_INTERVAL = 0.1


# ==================================================================================================
# Process-wide configuration and the per-flow cache
# ==================================================================================================

Address = tuple[Any, ...]  # (host, port) or (host, port, flowinfo, scope_id)
Impairer = DatagramImpairer | StreamImpairer


class _State:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.override_set = False
        self.override: ImpairConfig | None = None
        self.env_checked_at = -math.inf
        self.env_pair: tuple[str | None, str | None] = (None, None)
        self.env_text: str | None = None
        self.env_config: ImpairConfig | None = None
        self.file_path: str | None = None
        self.file_stamp: tuple[int, int] | None = None
        self.file_config: ImpairConfig | None = None
        self.file_checked_at = -math.inf
        self.flows: dict[tuple[str, Address, Address, str], tuple[ImpairConfig, Impairer | None]] = {}


_state = _State()


def _after_fork_in_child() -> None:
    _state.lock = threading.RLock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _check_file(path: str, now: float) -> None:
    s = _state
    first = s.file_path != path
    s.file_checked_at = now
    try:
        st = os.stat(path)
        stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
    except FileNotFoundError:
        stamp = None
    if not first and stamp == s.file_stamp:
        return
    try:
        config = load_file(path) if stamp is not None else None
    except (ImpairSpecError, OSError) as e:
        if first:
            raise
        sys.stderr.write(f"wirecheck: {e}; keeping the previous impairments\n")
        s.file_stamp = stamp  # report once per change
        return
    s.file_path, s.file_stamp, s.file_config = path, stamp, config


def current() -> ImpairConfig | None:
    """The active impairments: :func:`configure` override, else ``WIRECHECK_IMPAIR``, else
    ``WIRECHECK_IMPAIR_FILE`` (stat-ed at most every 100 ms). None when nothing is configured.

    The environment itself is looked at most every 100 ms too (:func:`reset` forces a look)."""
    s = _state
    if s.override_set:
        return s.override
    now = time.monotonic()
    if now - s.env_checked_at >= RELOAD_INTERVAL:
        # os.environ.get of a missing name costs microseconds (it raises KeyError inside): look at most
        # every 100 ms, so that the hot path with nothing configured is a clock read and a compare.
        s.env_pair = (os.environ.get(ENV_SPEC), os.environ.get(ENV_FILE))
        s.env_checked_at = now
    text, path = s.env_pair
    if not text and not path:
        return None
    with s.lock:
        if text and path:
            raise ImpairSpecError(ENV_SPEC, None, None, f"set only one of {ENV_SPEC} and {ENV_FILE}")
        if text:
            if text != s.env_text:
                s.env_config = parse(text, ENV_SPEC)
                s.env_text = text
            return s.env_config
        assert path is not None
        if path != s.file_path or now - s.file_checked_at >= RELOAD_INTERVAL:
            _check_file(path, now)
        return s.file_config


def configure(spec: str | Mapping[str, Any] | ImpairConfig | None) -> ImpairConfig | None:
    """Replace the impairments of this process from Python (mid-run changes). ``None`` goes back to the
    environment; ``""`` means no impairment. Returns the new active config. Raises ImpairSpecError."""
    s = _state
    if spec is None:
        with s.lock:
            s.override_set, s.override = False, None
        return current()
    if isinstance(spec, str):
        config = parse(spec, "configure()")
    elif isinstance(spec, ImpairConfig):
        config = replace(spec, activated_at=time.monotonic())
    else:
        config = from_mapping(spec, "configure()")
    with s.lock:
        s.override_set, s.override = True, config
    return config


def _host_port(addr: Address) -> str:
    host, port = str(addr[0]), addr[1] if len(addr) > 1 else ""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def flow_key(proto: str, local: Address, remote: Address) -> str:
    """The stream_key :func:`impairer_for` gives a flow: ``"udp 127.0.0.1:40000>127.0.0.2:443"``."""
    return f"{proto} {_host_port(local)}>{_host_port(remote)}"


@overload
def impairer_for(
    proto: Literal["udp"], local: Address, remote: Address, direction: str
) -> DatagramImpairer | None: ...
@overload
def impairer_for(
    proto: Literal["tcp"], local: Address, remote: Address, direction: str
) -> StreamImpairer | None: ...
@overload
def impairer_for(proto: str, local: Address, remote: Address, direction: str) -> Impairer | None: ...
def impairer_for(proto: str, local: Address, remote: Address, direction: str) -> Impairer | None:
    """The impairer of a flow (``proto`` "udp" -> DatagramImpairer, "tcp" -> StreamImpairer) in
    ``direction`` ("out" or "in"), or None when no impairment applies. Cached per flow: call it on every
    send/receive; when the rules change the cached impairer is updated in place."""
    config = current()
    if config is None:
        return None
    key = (proto, local, remote, direction)
    entry = _state.flows.get(key)
    if entry is not None and entry[0] is config:
        return entry[1]
    with _state.lock:
        rules = config.rules_for(proto, _port(local), _port(remote), direction)
        stream = proto == "tcp"
        impairer: Impairer | None = None
        if rules is not None and (rules.affects_streams() if stream else rules.affects_datagrams()):
            old = entry[1] if entry is not None else None
            if old is not None:
                old.update(rules, seed=config.seed, epoch=config.activated_at)
                impairer = old
            else:
                cls = StreamImpairer if stream else DatagramImpairer
                impairer = cls(rules, config.seed, flow_key(proto, local, remote), epoch=config.activated_at)
        _state.flows[key] = (config, impairer)
        return impairer


def _port(addr: Address) -> int | None:
    return addr[1] if len(addr) > 1 and isinstance(addr[1], int) else None


def flows() -> dict[tuple[str, Address, Address, str], Impairer]:
    """The cached impairers by (proto, local, remote, direction), for printing fate logs."""
    return {k: v[1] for k, v in list(_state.flows.items()) if v[1] is not None}


def release(proto: str, local: Address, remote: Address, direction: str | None = None) -> None:
    """Forget a flow's impairer(s) (socket closed): a later flow with the same tuple starts afresh."""
    for d in ("out", "in") if direction is None else (direction,):
        _state.flows.pop((proto, local, remote, d), None)


def rebound(proto: str, old_local: Address, new_local: Address) -> None:
    """The emulated source of ``old_local`` flows moved to ``new_local`` (a rebind was carried out):
    their impairers move with them, so :func:`impairer_for` with the new address continues the same flow
    (same counters and random streams; ``rebind=port@100`` does not fire again at the new flow's #100)."""
    with _state.lock:
        for key in [k for k in _state.flows if k[0] == proto and k[1] == old_local]:
            _state.flows[(proto, new_local, key[2], key[3])] = _state.flows.pop(key)


def reset() -> None:
    """Forget every cache and override and look at the environment again (tests; a fresh state)."""
    global _state
    _state = _State()
