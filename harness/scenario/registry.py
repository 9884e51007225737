"""The operation registry: what a scenario step's name means.

Scenario files are data; every step is one operation, looked up here by name. Each capability
owns a module that registers its operations, so adding SMB or QUIC steps never touches the loader
or the runner::

    # mypkg/scenario_ops.py
    from harness.scenario import operation, OpError

    @operation("smb.connect", schema={"type": "object", "required": ["transport"],
                                      "properties": {"transport": {"enum": ["tcp", "quic"]}}},
               timeout=30)
    def smb_connect(ctx, args):
        '''Open an SMB connection from the cell's client host (the docstring is the help text).'''
        conn = ...                       # ctx.socket_dir, ctx.pcap, ctx.env(host=11) ...
        ctx.on_cleanup(conn.close)       # run when the cell ends, pass or fail
        return {"dialect": "3.1.1"}      # stored as ctx.results[<as>], usable as ${<as>.dialect}

``args`` arrive with the matrix variables substituted and without the keys every step accepts
(``as``, ``background``, ``timeout``, ``expect``). Raise :class:`OpError` (with ``errno=`` or
``ntstatus=``) for an outcome a step may ``expect:``; any other exception fails the cell.

How modules are found (:func:`discover`): the built-in list :data:`BUILTIN_MODULES`, the optional
modules of capabilities still being built (:data:`OPTIONAL_MODULES`, skipped while they do not exist),
every ``wirecheck.operations`` entry point of installed packages::

    [project.entry-points."wirecheck.operations"]
    mypkg = "mypkg.scenario_ops"

and the modules named in ``$WIRECHECK_OPERATIONS`` (comma-separated), for a user's tree without
packaging.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

__all__ = ["Operation", "operation", "get", "known", "discover", "BUILTIN_MODULES", "OPTIONAL_MODULES"]

DEFAULT_TIMEOUT = 30.0

BUILTIN_MODULES = ["harness.scenario.ops.core", "harness.scenario.ops.net", "harness.scenario.ops.quic",
                   "harness.scenario.ops.smb", "harness.scenario.ops.smb_reconnect",
                   "harness.scenario.ops.smb_multichannel"]
OPTIONAL_MODULES = ["harness.transport.scenario_ops", "wrappers.quic.scenario_ops", "wrappers.smbdirect.scenario_ops"]
ENTRY_POINT_GROUP = "wirecheck.operations"

#: Namespaces of capabilities still being built. A step naming an unregistered operation in one of them
#: does not stop the run: its cells show as `[not run] operation smb.connect is not available yet`.
#: An unregistered operation in any other namespace is a load error (a typo must not pass as a skip).
PENDING_NAMESPACES = {"smb", "quic", "smbdirect", "nbt", "serve", "transport", "h3"}
ENV_MODULES = "WIRECHECK_OPERATIONS"


@dataclass
class Operation:
    name: str
    func: Callable[..., Any]
    schema: dict = field(default_factory=lambda: {"type": "object"})
    timeout: float = DEFAULT_TIMEOUT
    module: str = ""
    files: tuple[str, ...] = ()
    check: Callable[[dict], str | None] | None = None

    @property
    def help(self) -> str:
        return (self.func.__doc__ or "").strip().splitlines()[0] if self.func.__doc__ else ""


_REGISTRY: dict[str, Operation] = {}
_discovered = False


def operation(name: str, *, schema: dict | None = None, timeout: float = DEFAULT_TIMEOUT,
              files: tuple[str, ...] = (), check: Callable[[dict], str | None] | None = None):
    """Register ``func(ctx, args)`` as the operation `name` (decorator).

    `schema` is a JSON schema for the arguments (validated at load time, errors with line and column);
    `timeout` is the step's default timeout in seconds (a step may override it with ``timeout:``).
    Registering a name twice from different functions is an error: two capabilities must not fight over
    one step name. `files` names arguments that are paths relative to the scenario file: a missing one
    is a load error. `check(args)` returns a problem text or None: a deeper load-time check than the
    schema (for example the impairment grammar), run when the arguments have no `${...}` left.
    """
    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        old = _REGISTRY.get(name)
        if old is not None and (old.func.__module__, old.func.__qualname__) != (func.__module__, func.__qualname__):
            raise ValueError(f"operation {name!r} registered twice ({old.module} and {func.__module__})")
        _REGISTRY[name] = Operation(name, func, schema or {"type": "object"}, timeout, func.__module__,
                                    tuple(files), check)
        return func
    return register


def _exists(module: str) -> bool:
    """Whether the module's file exists, without importing its parent packages (wrappers.quic pulls in
    aioquic: seconds per cell process for nothing when its scenario_ops is not there yet)."""
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        return False
    for base in spec.submodule_search_locations:
        path = os.path.join(base, *rest)
        if os.path.exists(path + ".py") or os.path.exists(os.path.join(path, "__init__.py")):
            return True
    return False


def _import_optional(module: str) -> None:
    if not _exists(module):
        return
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        # Only "this capability has not landed" is tolerated; a broken import inside it is not.
        if e.name is None or not (module == e.name or module.startswith(e.name + ".")):
            raise


def discover() -> dict[str, Operation]:
    """Import every module that registers operations (once); return the registry."""
    global _discovered
    if not _discovered:
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
        for module in OPTIONAL_MODULES:
            _import_optional(module)
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            ep.load()
        for module in filter(None, (m.strip() for m in os.environ.get(ENV_MODULES, "").split(","))):
            importlib.import_module(module)
        _discovered = True
    return _REGISTRY


def get(name: str) -> Operation | None:
    return discover().get(name)


def pending(name: str) -> bool:
    return name.split(".", 1)[0] in PENDING_NAMESPACES


def known() -> list[str]:
    return sorted(discover())
