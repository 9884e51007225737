"""The Makefile's test targets pass only when pytest says so: "no tests collected" (exit 5) is a failure.

Each pytest recipe line of a target is run by the shell, as make runs it, with the venv's python
replaced by a stub that exits with a chosen status, so the test sees what make would do with it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def recipe(target: str) -> list[str]:
    """The recipe lines of `target` (make's leading '@' dropped, '$$' unescaped)."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    out = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        out.append(line[1:].lstrip("@").replace("$$", "$"))
    return out


def pytest_lines(target: str) -> list[str]:
    found = [line for line in recipe(target) if ".venv/bin/python -m pytest" in line]
    assert found, f"make {target} runs no pytest"
    return found


def run_with_status(line: str, status: int, tmp_path: Path) -> int:
    stub = tmp_path / "python"
    stub.write_text(f"#!/bin/sh\nexit {status}\n")
    stub.chmod(0o755)
    return subprocess.run(["/bin/sh", "-c", line.replace(".venv/bin/python", str(stub))], timeout=30).returncode


@pytest.mark.parametrize("target", ["test", "test-slow"])
def test_no_tests_collected_fails_the_target(target, tmp_path):
    for line in pytest_lines(target):
        assert run_with_status(line, 0, tmp_path) == 0, line
        assert run_with_status(line, 5, tmp_path) != 0, f"make {target} accepts 'no tests collected': {line}"
        assert run_with_status(line, 1, tmp_path) != 0, line
