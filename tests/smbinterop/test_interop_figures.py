"""The README's smbtorture table is generated from floors.tsv and the lists (scripts/interop_figures.py)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "interop_figures.py"
spec = importlib.util.spec_from_file_location("interop_figures", SCRIPT)
figures = importlib.util.module_from_spec(spec)
spec.loader.exec_module(figures)


def test_readme_table_is_up_to_date():
    res = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr


def _copied_lists(tmp_path: Path) -> Path:
    interop = tmp_path / "smbinterop"
    interop.mkdir()
    for name in ("knownfail", "flapping", "floors.tsv", "compare.tsv"):
        shutil.copy(ROOT / "tests/smbinterop" / name, interop / name)
    return interop


def test_a_changed_floor_makes_the_readme_stale(tmp_path):
    interop = _copied_lists(tmp_path)
    floors = interop / "floors.tsv"
    floors.write_text(floors.read_text().replace("smb2.rw\t3\t0", "smb2.rw\t2\t0"))
    readme = (ROOT / "README.md").read_text()
    assert figures.render(readme) == readme
    changed = figures.render(readme, interop)
    assert "| smb2.rw | 2 | 0 | 0 | 0 |" in changed and changed != readme
    stale = tmp_path / "README.md"
    stale.write_text(readme.replace("| smb2.rw | 3 |", "| smb2.rw | 4 |"))
    res = subprocess.run([sys.executable, str(SCRIPT), "--check", "--readme", str(stale)], capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 1 and "make interop-figures" in res.stderr


def test_a_changed_comparison_row_makes_the_readme_stale(tmp_path):
    interop = _copied_lists(tmp_path)
    compare = interop / "compare.tsv"
    rows = compare.read_text().splitlines()
    at = next(i for i, line in enumerate(rows) if line.startswith("smb2.connect\t"))
    rows[at] = "smb2.connect\t1\t1\t0\t1\t"
    compare.write_text("\n".join(rows) + "\n")
    readme = (ROOT / "README.md").read_text()
    changed = figures.render(readme, interop)
    assert "| smb2.connect | 1/1 | 0/1 |" in changed and changed != readme
    assert "| smb2.connect | 1/1 | 1/1 |" in readme  # what the stored run says


def test_the_comparison_covers_every_suite_of_the_run():
    import sys

    sys.path.insert(0, str(ROOT / "tests/smbinterop"))
    import compare_servers

    rows = compare_servers.read_tsv()
    assert list(rows) == compare_servers.SUITES
    assert all(c.passed <= c.ran for pair in rows.values() for c in pair)
