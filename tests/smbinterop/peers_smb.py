"""The interop tests' view of harness/smbd_peer.py: a missing program skips the test on a laptop and
fails it under CI (procutil._missing)."""

from __future__ import annotations

from pathlib import Path

from procutil import _missing

from harness import smbd_peer
from harness.smbd_peer import NSS_WRAPPER, PASSWORD, USER, free_port, wait_port

__all__ = ["NSS_WRAPPER", "PASSWORD", "USER", "Smbd", "free_port", "need", "wait_port"]


def need(program: str, apt: str) -> str:
    return smbd_peer.need(program, apt, _missing)


def Smbd(tree: Path, signing: str = "mandatory", extra_global: str = "") -> smbd_peer.Smbd:  # noqa: N802
    return smbd_peer.Smbd(tree, signing, _missing, extra_global)
