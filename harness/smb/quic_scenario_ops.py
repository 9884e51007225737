"""Scenario operations for QUIC path changes and handshakes of an SMB client connection.

* ``quic.migrate {on, how}``: the client of an ``smb.connect`` (QUIC) moves to a new local address with
  quic.ko's CONNECTION_MIGRATION (``how: option``, same IP, port + ``port_offset``), or its host's NAT
  rebinds (``how: nat-port|nat-addr|nat-both``, with ``host`` and ``spec`` as for quic.rebind). It is a side request of the client
  process (scenario_ops._side_requests), so it runs while an SMB transfer started with
  ``background: true`` is in progress; the migration completes on the next packet from the server.
* ``quic.rebind {host, kind, spec}``: NAT rebinding of everything ``host`` sends from now on (its
  next datagram comes from a new port, address or both): the impairment ``rebind=KIND@0s`` added to
  ``spec`` (the host's other impairments, e.g. loss, which it replaces as ``impair`` does).
* ``quic.state {on}``: what the client's QUIC socket says about its handshake: ``resumed`` and
  ``early_data`` (0-RTT accepted), for ``expect: value``.
"""
from __future__ import annotations

from harness.scenario import operation
from harness.scenario.context import Context
from harness.scenario.impairspec import problem
from harness.scenario.ops.core import HOSTS, write_impairments

MIGRATE = {"type": "object", "additionalProperties": False, "required": ["on"],
           "properties": {"on": {"type": "string"}, "as": {"type": "string"},
                          "port_offset": {"type": "integer", "minimum": 1, "maximum": 1000},
                          "how": {"enum": ["option", "nat-port", "nat-addr", "nat-both"]},
                          "host": {"type": "integer", "minimum": 1, "maximum": 64},
                          "spec": {"type": ["string", "null"]}}}
REBIND = {"type": "object", "additionalProperties": False, "required": ["host", "kind"],
          "properties": {"host": HOSTS, "kind": {"enum": ["port", "addr", "both"]},
                         "spec": {"type": ["string", "null"]}, "as": {"type": "string"}}}
STATE = {"type": "object", "additionalProperties": False, "required": ["on"],
         "properties": {"on": {"type": "string"}, "as": {"type": "string"}}}


def _side(ctx: Context, on: str, req: dict, timeout: float = 10.0) -> dict:
    from .scenario_ops import _request

    return _request(ctx, on, req, timeout, side=True)


def _rebind_spec(args: dict) -> str:
    base = (args.get("spec") or "").strip()
    field = f"rebind={args['kind']}@0s"
    if not base:
        return f"out: {field}"
    if "|" in base:
        raise ValueError("quic.rebind spec: one rule set only")
    clauses = [c.strip() for c in base.split(";") if c.strip()]
    for i, c in enumerate(clauses):
        if c.startswith("out:"):
            clauses[i] = f"{c} {field}"
            break
    else:
        clauses.append(f"out: {field}")
    return "; ".join(clauses)


def _rebind_problem(args: dict) -> str | None:
    try:
        return problem(_rebind_spec(args))
    except ValueError as e:
        return str(e)


def _migrate_problem(args: dict) -> str | None:
    how = args.get("how", "option")
    if how == "option":
        return None
    if "host" not in args:
        return f"quic.migrate how: {how} needs `host` (the client's host, whose NAT rebinds)"
    return _rebind_problem({"kind": how[4:], "spec": args.get("spec")})


@operation("quic.migrate", schema=MIGRATE, timeout=15, check=_migrate_problem)
def quic_migrate(ctx: Context, args: dict) -> dict:
    """The smb.connect client's path changes, even mid-transfer: `how: option` (default) moves it to its
    port + port_offset with CONNECTION_MIGRATION; `nat-port|nat-addr|nat-both` rebinds `host`'s NAT
    (quic.rebind with `spec`, the host's other impairments), the client unaware."""
    how = args.get("how", "option")
    if how != "option":
        return {"how": how, **quic_rebind(ctx, {"host": args["host"], "kind": how[4:], "spec": args.get("spec")})}
    return {"how": how, **_side(ctx, args["on"], {"op": "quic.migrate", "port_offset": args.get("port_offset", 1)})}


@operation("quic.rebind", schema=REBIND, timeout=10, check=_rebind_problem)
def quic_rebind(ctx: Context, args: dict) -> dict:
    """NAT rebinding: what `host` sends next comes from a new port/address (`spec`: its other impairments)."""
    spec = _rebind_spec(args)
    write_impairments(ctx, args["host"], spec)
    return {"spec": spec}


@operation("quic.state", schema=STATE, timeout=10)
def quic_state(ctx: Context, args: dict) -> dict:
    """The client's QUIC handshake facts: resumed, early_data."""
    from .scenario_ops import _request

    return _request(ctx, args["on"], {"op": "quic.state"})
