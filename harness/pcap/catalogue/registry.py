"""The registry of named checks: each check registers under its YAML name with a JSON schema of its
arguments, so scenario files and YAML check lists name checks (`quic.path_validated`) and the loader
validates their arguments before any capture is read.

A leaf module: the protocol modules of this package import it, it imports none of them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..assertions import Assertion


@dataclass
class Entry:
    name: str
    fn: Callable[..., Assertion]
    params: dict  # JSON schema of the YAML arguments (an object)
    doc: str


CATALOGUE: dict[str, Entry] = {}


def named(name: str, params: dict | None = None):
    """Register a check under its YAML name; the function's docstring is its documentation."""
    schema = {"type": "object", "additionalProperties": False, "properties": params or {}}

    def deco(fn):
        def wrapper(*a, **kw):
            return fn(*a, **kw).named(name)
        wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
        CATALOGUE[name] = Entry(name, wrapper, schema, (fn.__doc__ or "").strip())
        return wrapper
    return deco


INT = {"type": "integer", "minimum": 0}


def build(name: str, args: Any = None) -> Assertion:
    """A catalogue check from its YAML name and arguments (a mapping or nothing)."""
    entry = CATALOGUE[name]
    return entry.fn(**(args or {}))

