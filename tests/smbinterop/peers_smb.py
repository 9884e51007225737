"""The interop tests' view of harness/peers/smb_samba.py: a missing program skips the test on a laptop and
fails it under CI (procutil._missing)."""

from __future__ import annotations

from pathlib import Path

from procutil import _missing

from harness.peers import smb_samba
from harness.peers.smb_samba import NSS_WRAPPER, PASSWORD, USER, free_port, wait_port

__all__ = ["NSS_WRAPPER", "PASSWORD", "USER", "Smbd", "free_port", "need", "wait_port"]


def need(program: str, apt: str) -> str:
    return smb_samba.need(program, apt, _missing)


def Smbd(tree: Path, signing: str = "mandatory", extra_global: str = "") -> smb_samba.Smbd:  # noqa: N802
    return smb_samba.Smbd(tree, signing, _missing, extra_global)
