"""Regenerate every reference capture: `.venv/bin/python -m captures.make [OUTDIR]` (default captures/).

Own-tool captures (smb_tcp, smb_quic, quic_migration, smbdirect) get fresh keys each run: commit each capture
together with its key file."""
from __future__ import annotations

import sys
from pathlib import Path

from . import quic_migration, smb_quic, smb_tcp, smbdirect, synthetic

out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])
for mod in (synthetic, smb_tcp, smb_quic, quic_migration, smbdirect):
    for p in mod.main(out):
        print(f"{p}  {p.stat().st_size} bytes")
