"""The test run must leave nothing in the checkout: every file a test or a peer program writes goes
to tmp_path or a results directory.  A program started with the repository root as its working
directory (smbtorture makes ``smbtortureXXXXXX`` there, and leaves it when killed) would otherwise
litter the work tree unnoticed.

The check compares the root's untracked, not ignored entries at the start and at the end of the
session (``git ls-files --others --directory``: read-only, so it never contends for git's index lock).
Only the root's own entries count: that is where a relative path of a program run from the root
lands, and a developer adding files below it while tests run must not fail the run.  Outside a git
work tree whose top is the root (a scratch copy for mutation testing, an unpacked archive) there is
nothing to compare and the check is off.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None


def untracked_entries(root: Path = ROOT) -> set[str] | None:
    """The names directly in ``root`` that git neither tracks nor ignores (a directory with a
    trailing "/"); None when ``root`` is not the top of a git work tree."""
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or top.returncode != 0 or Path(top.stdout.strip()).resolve() != root.resolve():
        return None
    listed = _git(root, "ls-files", "-z", "--others", "--exclude-standard", "--directory")
    if listed is None or listed.returncode != 0:
        return None
    # --directory lists a wholly untracked directory once, as "name/"; a new file inside a tracked
    # directory comes as "dir/file" and is not the root's own entry.
    return {path for path in listed.stdout.split("\0") if path and "/" not in path.rstrip("/")}


def left_behind(before: set[str] | None, after: set[str] | None) -> list[str]:
    """The entries the run added (none when either listing could not be made)."""
    if before is None or after is None:
        return []
    return sorted(after - before)
