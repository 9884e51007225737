"""`requires:` — whether a cell can run here, and the reason shown when it cannot.

Why gate instead of hide: a matrix cell whose capability has not landed (QUIC, SMB Direct, a peer
program) must show as `[not run] <reason>`, so that the matrix table tells the truth about coverage.
"""
from __future__ import annotations

import importlib.util
import shutil
from typing import Any

from .model import has_placeholder

#: transport -> modules that must be importable for it (tcp and udp are the foundation's).
TRANSPORT_MODULES: dict[str, list[str]] = {
    "tcp": [], "udp": [],
    "nbt": ["harness.transport"],
    "quic": ["wrappers.quic"],
    "smbdirect": ["wrappers.smbdirect"],
}


def _module_present(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def unmet(requires: dict[str, Any], *, section: str | None = None, needs_tshark: bool = False,
          missing_ops: set[str] | None = None) -> str | None:
    """The first unmet requirement as a not-run reason, or None. Placeholders count as unmet."""
    for t in requires.get("transports", []):
        if has_placeholder(t):
            return f"transport {t} is not set in this section"
        if t not in TRANSPORT_MODULES:
            return f"unknown transport {t!r}"
        for mod in TRANSPORT_MODULES[t]:
            if not _module_present(mod):
                return f"requires transport {t} ({mod} is not available yet)"
    for prog in list(requires.get("programs", [])) + (["tshark"] if needs_tshark else []):
        if shutil.which(prog) is None:
            return f"requires program {prog} (not found in PATH)"
    for mod in requires.get("modules", []):
        if not _module_present(mod):
            return f"requires Python module {mod} (not installed)"
    if missing_ops:
        return f"operation {', '.join(sorted(missing_ops))} not available yet (its capability has not registered it)"
    sections = requires.get("sections")
    if sections and section is not None and section not in sections:
        return f"not for section {section} (runs in {', '.join(sections)})"
    return None
