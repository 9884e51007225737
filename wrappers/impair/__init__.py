"""Seeded, reproducible network impairments, per flow and per direction.

The package has three parts, each with one job:

- :mod:`.spec` -- the spec language (string and file forms, documented in docs/impairments.md):
  parse text into :class:`ImpairConfig`; bad input is an :class:`ImpairSpecError` naming
  ``source[:line]``, the field and the value.
- :mod:`.decisions` -- the sans-IO deciders :class:`DatagramImpairer` and :class:`StreamImpairer`:
  given ``now``, the fate of the next datagram or chunk. No socket, clock or thread.
- :mod:`.runtime` -- the process state: the active spec (:func:`configure` override, else
  ``WIRECHECK_IMPAIR``, else ``WIRECHECK_IMPAIR_FILE``, re-read when it changes) and the per-flow
  cache of deciders (:func:`impairer_for`, :func:`rebound`, :func:`release`, :func:`flows`).

What the pcap shows is what the wire carried: the socket wrapper records a datagram when it is
actually delivered (after delay, duplicated, corrupted, from the rebound port); a dropped datagram
is not recorded, and the fate log (``impairer.history``) says why it went missing.

Python API:

- :func:`current` -- the active :class:`ImpairConfig`, or None.
- :func:`configure` ``(spec)`` -- replace the rules in-process (a spec string, a mapping as in the
  file form, or an :class:`ImpairConfig`); wins over the environment until ``configure(None)``.
  ``configure("")`` means "no impairment, whatever the environment says".
- :func:`impairer_for` ``(proto, local, remote, direction)`` -- the decider of a flow, or None when
  nothing applies (the hot path: with nothing configured it is two dict look-ups). Call it on every
  send/receive: holding on to one misses mid-run changes.
- :func:`rebound` ``(proto, old_local, new_local)`` -- after carrying out a rebind, so that the flow
  keeps its decider under the new address (otherwise it is a new flow: counters restart and
  ``rebind=port@100`` would fire again). :func:`release` forgets a closed socket's flows.
- ``DatagramImpairer.decide(now, payload) -> Fate``; ``StreamImpairer.on_send(now, nbytes) ->
  StreamFate`` and ``.cut_pending(now)`` / ``.cut_deadline`` for timed cuts of idle connections.
"""

from __future__ import annotations

from .decisions import (
    HISTORY_LIMIT,
    DatagramImpairer,
    Delivery,
    Fate,
    FateRecord,
    StreamFate,
    StreamImpairer,
    StreamRecord,
)
from .runtime import (
    RELOAD_INTERVAL,
    Address,
    Impairer,
    configure,
    current,
    flow_key,
    flows,
    impairer_for,
    rebound,
    release,
    reset,
)
from .spec import (
    DEFAULT_REORDER_DELAY,
    ENV_FILE,
    ENV_SPEC,
    Cut,
    CutKind,
    Direction,
    DirectionRules,
    ImpairConfig,
    ImpairSpecError,
    RebindEvent,
    RebindKind,
    Rule,
    Selector,
    Window,
    from_mapping,
    load_file,
    parse,
)

__all__ = [
    "ENV_SPEC",
    "ENV_FILE",
    "ImpairSpecError",
    "ImpairConfig",
    "Rule",
    "Selector",
    "DirectionRules",
    "Window",
    "RebindEvent",
    "Cut",
    "Delivery",
    "Fate",
    "FateRecord",
    "StreamFate",
    "StreamRecord",
    "DatagramImpairer",
    "StreamImpairer",
    "parse",
    "from_mapping",
    "load_file",
    "current",
    "configure",
    "impairer_for",
    "flow_key",
    "flows",
    "release",
    "rebound",
    "reset",
    # constants and type aliases the package's modules share
    "RELOAD_INTERVAL",
    "HISTORY_LIMIT",
    "DEFAULT_REORDER_DELAY",
    "Address",
    "Impairer",
    "Direction",
    "RebindKind",
    "CutKind",
]

