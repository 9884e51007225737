"""No comment or document points outside the repository.

A person who clones wirecheck has only the repository: a comment that says "see DESIGN.md", "specs
section 4", "pitfall 11" or "issue 5" sends them to something they cannot open. Such comments state
the fact itself instead; citations of public specifications (MS-SMB2, MS-SMBD, RFCs) are fine.
The one exception is the test setting that finds the vendored lxin/quic tree, whose default may name
``../shared/vendor/lxin-quic`` (in tests/ and in the scenarios, which are tests written as data).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".c", ".h", ".toml", ".sh", ".ini", ".cfg", ".txt"}
NAMES = {"Makefile", "knownfail", "flapping", "run"}
SKIP_DIRS = {".git", ".venv", "results", "build", "dist", ".tox", "__pycache__", ".pytest_cache",
             ".mypy_cache", ".ruff_cache", ".hypothesis", ".import_linter_cache", ".grimp_cache"}

OUTSIDE = re.compile("|".join([
    r"DESIGN\.md",
    r"\.\./shared\b",
    r"\bshared/specs\b",
    r"\bspecs/[\w.-]+",
    r"\b(?:smb3-transport-facts|quic-socket-api|socket-wrapper-compat|pcap-facts|runner-conventions"
    r"|smb3-known-answer)\b",
    r"\bpeers\.md\b",
    r"\bpitfalls? \d+",
    r"\bissues? #?\d+",
    r"\bspecs? (?:section|§)",
    r"\bspecs? \d+(?:\.\d+)*\b",
    r"\bspec's table\b",
]), re.IGNORECASE)
ALLOWED = re.compile(r"\.\./shared/vendor/lxin-quic")


def text_files(root: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        out += [Path(dirpath, f) for f in filenames if Path(f).suffix in SUFFIXES or f in NAMES]
    return sorted(out)


def outside_references(root: Path, skip: Path | None = None) -> list[str]:
    """``path:line: text`` of every line that points outside the repository."""
    found = []
    for p in text_files(root):
        if skip is not None and p.resolve() == skip:
            continue
        rel = p.relative_to(root)
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(lines, 1):
            m = OUTSIDE.search(line)
            if m is None:
                continue
            if rel.parts[0] in ("tests", "scenarios") and ALLOWED.search(line) and not OUTSIDE.search(ALLOWED.sub("", line)):
                continue
            found.append(f"{rel}:{n}: {line.strip()}")
    return found


def test_no_comment_or_document_points_outside_the_repository():
    assert outside_references(ROOT, skip=Path(__file__).resolve()) == []


def test_the_scan_finds_each_kind_of_outside_reference(tmp_path):
    """The scan above is not vacuous: every kind of reference is found, in code and in documents,
    while public spec citations and the one lxin/quic setting pass."""
    bad = [
        "# see DESIGN.md",
        "# contract: ../shared/README",
        '"""Values follow specs/quic-socket-api.md section 1."""',
        "# the checks in quic.ko's order (specs section 4)",
        "# limits are EINVAL (spec 7.6)",
        "# never hashed (pitfall 1)",
        "# rule 12 of smb3-transport-facts",
        "# (issue 10)",
        "# Errnos follow the spec's table",
    ]
    good = [
        "# MS-SMB2 §3.3.5.4 and RFC 9000 §18.2",
        "# MS-SMBD §2.2.3: no transport header",
        "# impairment spec string",
    ]
    (tmp_path / "wrappers").mkdir()
    (tmp_path / "wrappers" / "mod.py").write_text("\n".join(bad + good) + "\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("See pcap-facts.md for tshark.\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "settings.py").write_text('LXIN = os.environ.get("X", "../shared/vendor/lxin-quic")\n')
    found = outside_references(tmp_path)
    assert [f.split(": ", 1)[1] for f in found if f.startswith("wrappers")] == bad
    assert found[0].startswith("docs/page.md:1:")
    assert not any(f.startswith("tests/") for f in found)
