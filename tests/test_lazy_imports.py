"""Peers start sooner when activation and the SMB client skip modules they do not use yet.

Each check runs in a fresh interpreter (a module once imported stays in sys.modules), and checks both
halves: the heavy module is absent after the cheap import, and what needs it still gets it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(code: str, tmp_path: Path) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                                          "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_activation_defers_smbdirect_socket_until_first_use(tmp_path: Path) -> None:
    out = _run(f"""
        import socket, sys
        import wrappers
        wrappers.activate(socket_dir={str(tmp_path / "sw")!r}, iface=11, create=True)
        print("sock loaded at activation:", "wrappers.smbdirect.sock" in sys.modules)
        from wrappers.smbdirect import IPPROTO_SMBDIRECT
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_SMBDIRECT)
        print("made:", type(s).__name__)
        s.close()
        import wrappers.smbdirect as sd
        print("lazy name:", sd.SmbDirectSocket is type(s), callable(sd.encode_descriptors))
    """, tmp_path)
    assert "sock loaded at activation: False" in out
    assert "made: SmbDirectSocket" in out
    assert "lazy name: True True" in out


def test_smbdirect_star_import_still_exports_everything(tmp_path: Path) -> None:
    out = _run("""
        from wrappers.smbdirect import *
        print(SmbDirectSocket.__name__, BufferDescriptor.__name__, IPPROTO_SMBDIRECT)
    """, tmp_path)
    assert out.split() == ["SmbDirectSocket", "BufferDescriptor", "257"]


def test_smb_client_loads_only_what_negotiate_needs(tmp_path: Path) -> None:
    """Not the server's file system, nor the directory/stat/notify codecs or SESSION_SETUP's
    authentication (pyspnego) before their first use."""
    out = _run("""
        import sys
        import harness.blocking.client, harness.blocking.multichannel, harness.smb.client
        print(sorted(m for m in ("harness.smb.vfs", "harness.smb.holes", "harness.smb.fscc",
                                 "harness.smb.change_notify", "harness.smb.auth", "spnego") if m in sys.modules))
    """, tmp_path)
    assert out.strip() == "[]"
