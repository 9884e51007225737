"""The layering gate can fail: the project's own import-linter contracts, run on a small tree.

`make test` runs `lint-imports` with the contracts in pyproject.toml ([tool.importlinter]). These tests
copy exactly those contracts next to a miniature of the package layout (empty modules named as the
real ones) and check that a clean miniature passes and that each kind of violation (a lower layer
importing a higher one, the SMB stack importing wrappers, pcap importing the SMB stack, the library
importing the tests, an import cycle between siblings) makes lint-imports fail, naming the contract.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")

# the target layout, one empty module per package the contracts name
MINIATURE = [
    "wrappers/__init__.py", "wrappers/quic/__init__.py", "wrappers/quic/sock.py", "wrappers/quic/options.py",
    "harness/__init__.py", "harness/smb/__init__.py", "harness/smb/client.py", "harness/smb/messages.py",
    "harness/transport/__init__.py", "harness/blocking/__init__.py", "harness/scenario/__init__.py",
    "harness/scenario/ops/__init__.py", "harness/runner/__init__.py", "harness/cli/__init__.py",
    "harness/pytest_plugin.py", "harness/pcap/__init__.py", "harness/peers/__init__.py",
    "benchmarks/__init__.py", "tests/helpers.py",
]
# what the real layers may do: each module imports the one below it
CLEAN_IMPORTS = {
    "harness/transport/__init__.py": "import harness.smb.client\nimport wrappers.quic.sock\n",
    "harness/blocking/__init__.py": "import harness.transport\n",
    "harness/scenario/__init__.py": "import harness.blocking\nimport harness.pcap\n",
    "harness/runner/__init__.py": "import harness.scenario\n",
    "harness/cli/__init__.py": "import harness.runner\n",
    "harness/pytest_plugin.py": "import harness.runner\n",
    "harness/peers/__init__.py": "import harness.blocking\n",
    "harness/smb/client.py": "from . import messages\n",
    "wrappers/quic/sock.py": "from . import options\n",
    "benchmarks/__init__.py": "import harness.blocking\n",
    "tests/helpers.py": "import harness.smb\nimport benchmarks\n",
}


def importlinter_section() -> str:
    """The [tool.importlinter] tables of the project's pyproject.toml, verbatim."""
    text = (ROOT / "pyproject.toml").read_text()
    start = text.index("[tool.importlinter]")
    rest = text[start:]
    # up to the first table that is not an import-linter one
    m = re.search(r"^\[(?!\[?tool\.importlinter)[^\n]*\]\s*$", rest, re.M)
    return rest[: m.start()] if m else rest


def miniature(tmp_path: Path, extra: dict[str, str]) -> Path:
    for rel in MINIATURE:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(CLEAN_IMPORTS.get(rel, "") + extra.get(rel, ""))
    (tmp_path / "pyproject.toml").write_text(importlinter_section())
    return tmp_path


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    assert LINT_IMPORTS, "lint-imports is not installed (it is in the test extras: make setup)"
    return subprocess.run([LINT_IMPORTS, "--no-cache"], cwd=root, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), "NO_COLOR": "1"})


def test_the_project_config_has_the_contracts():
    section = importlinter_section()
    for cid in ("layers", "smb-sans-io", "pcap-independent", "no-tests-import", "no-benchmarks-import", "acyclic"):
        assert f'id = "{cid}"' in section


def test_a_clean_miniature_passes(tmp_path):
    r = lint(miniature(tmp_path, {}))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "broken" not in r.stdout.lower().replace("0 broken", "")


@pytest.mark.parametrize(("module", "code", "contract"), [
    ("harness/smb/client.py", "import harness.scenario\n", "wrappers < harness.smb"),
    ("wrappers/quic/sock.py", "import harness.transport\n", "wrappers < harness.smb"),
    ("harness/transport/__init__.py", "import harness.blocking\n", "wrappers < harness.smb"),
    ("harness/smb/client.py", "import wrappers.quic\n", "harness.smb (the sans-IO SMB stack)"),
    ("harness/smb/messages.py", "import harness.pcap\n", "harness.smb (the sans-IO SMB stack)"),
    ("harness/pcap/__init__.py", "import harness.smb\n", "harness.pcap (captures and checks)"),
    ("harness/scenario/ops/__init__.py", "import tests.helpers\n", "nothing imports the tests"),
    ("harness/runner/__init__.py", "import benchmarks\n", "the library does not import the benchmarks"),
    ("wrappers/quic/options.py", "from . import sock\n", "no import cycle"),
])
def test_a_violation_fails_the_gate(tmp_path, module, code, contract):
    r = lint(miniature(tmp_path, {module: code}))
    assert r.returncode != 0, r.stdout
    broken = r.stdout[r.stdout.index("Broken contracts"):]
    assert contract in broken, r.stdout
