"""Helpers: write small scenario trees into tmp dirs (fast scenarios: `host.run` of python -c)."""
from __future__ import annotations

import textwrap
from pathlib import Path

PASS = """
id: {id}
description: passes quickly
groups: [{groups}]
steps:
  - host.run: {{argv: [python, -c, "print('ok')"], as: r}}
expect:
  - value: {{of: r.status, eq: 0}}
"""

FAIL = """
id: {id}
description: fails quickly (exit status 3)
groups: [{groups}]
steps:
  - host.run: {{argv: [python, -c, "import sys; sys.exit(3)"]}}
"""

NOTRUN = """
id: {id}
description: needs a program nobody has
groups: [{groups}]
requires:
  programs: [no-such-program-wirecheck]
steps:
  - sleep: {{seconds: 0}}
"""


def write(root: Path, rel: str, text: str) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(text).lstrip())
    return p


def tree(root: Path, **scenarios: str) -> Path:
    """tree(tmp, **{"tcp/001": PASS, ...}) with groups `quick auto` unless the text sets them."""
    for sid, text in scenarios.items():
        write(root, f"{sid}.yaml", text.format(id=sid, groups="auto, quick"))
    return root
