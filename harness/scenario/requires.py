"""`requires:` — whether a cell can run here, and the reason shown when it cannot.

Why gate instead of hide: a matrix cell whose capability has not landed (QUIC, SMB Direct, a peer
program) must show as `[not run] <reason>`, so that the matrix table tells the truth about coverage.

Two kinds of unmet requirement differ under CI (env CI set). A cell that is not meant for this
section (another section's transport, `sections:`) is "not run" everywhere. A cell whose requirement
is *missing* (tshark, a peer program, a module, an operation) is a failure under CI: a CI run that
lacks its peers must not come out green with the affected cells quietly left out.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Unmet:
    """Why a cell cannot run here; `missing` when something it needs is absent (not merely elsewhere)."""

    reason: str
    missing: bool

    def fails_here(self) -> bool:
        """A missing requirement under CI is a failure of the cell, not a "not run"."""
        return self.missing and under_ci()


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def setting_path(setting: str, default: str) -> str:
    """A folder outside the repository that a scenario needs (a vendored source tree, say): the
    environment variable ``setting`` when set, else ``default``, relative to the repository root."""
    return os.path.normpath(os.path.join(REPO_ROOT, os.environ.get(setting) or default))


def _pkg_config_has(name: str) -> bool:
    if shutil.which("pkg-config") is None:
        return False
    return subprocess.run(["pkg-config", "--exists", name], check=False, timeout=30).returncode == 0


def under_ci() -> bool:
    return bool(os.environ.get("CI"))


def check(requires: dict[str, Any], *, section: str | None = None, needs_tshark: bool = False,
          missing_ops: set[str] | None = None) -> Unmet | None:
    """The first unmet requirement, or None. Placeholders count as unmet (the cell is for another section)."""
    for t in requires.get("transports", []):
        if has_placeholder(t):
            return Unmet(f"transport {t} is not set in this section", missing=False)
        if t not in TRANSPORT_MODULES:
            return Unmet(f"unknown transport {t!r}", missing=True)
        for mod in TRANSPORT_MODULES[t]:
            if not _module_present(mod):
                return Unmet(f"requires transport {t} ({mod} is not available yet)", missing=True)
    for prog in list(requires.get("programs", [])) + (["tshark"] if needs_tshark else []):
        if shutil.which(prog) is None:
            return Unmet(f"requires program {prog} (not found in PATH)", missing=True)
    for mod in requires.get("modules", []):
        if not _module_present(mod):
            return Unmet(f"requires Python module {mod} (not installed)", missing=True)
    for name in requires.get("pkg_config", []):
        if not _pkg_config_has(name):
            return Unmet(f"requires the development files of {name} (pkg-config does not know it)", missing=True)
    for p in requires.get("paths", []):
        where = setting_path(p["setting"], p["default"])
        if not os.path.isdir(where):
            return Unmet(f"requires the folder {where} (set {p['setting']})", missing=True)
    if missing_ops:
        return Unmet(f"operation {', '.join(sorted(missing_ops))} not available yet "
                     "(its capability has not registered it)", missing=True)
    sections = requires.get("sections")
    if sections and section is not None and section not in sections:
        return Unmet(f"not for section {section} (runs in {', '.join(sections)})", missing=False)
    return None


def unmet(requires: dict[str, Any], *, section: str | None = None, needs_tshark: bool = False,
          missing_ops: set[str] | None = None) -> str | None:
    """The first unmet requirement as a not-run reason, or None (see `check` for its kind)."""
    found = check(requires, section=section, needs_tshark=needs_tshark, missing_ops=missing_ops)
    return found.reason if found else None
