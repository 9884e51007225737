"""checkout_guard: what counts as an entry a test run left in the repository root."""

from __future__ import annotations

import subprocess

from checkout_guard import left_behind, untracked_entries


def _repo(tmp_path):
    root = tmp_path / "repo"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "a.py").write_text("")
    (root / ".gitignore").write_text("results/\n")
    for argv in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git", "-C", str(root), *argv], check=True, capture_output=True, timeout=60)
    return root


def test_new_root_entries_are_found_ignored_and_nested_ones_are_not(tmp_path):
    root = _repo(tmp_path)
    before = untracked_entries(root)
    assert before == set()
    (root / "smbtortureAb12Cd").mkdir()  # empty, as smbtorture leaves it
    (root / "stray.txt").write_text("x")
    (root / "newdir" / "deep").mkdir(parents=True)
    (root / "newdir" / "deep" / "f").write_text("x")
    (root / "results").mkdir()  # ignored
    (root / "results" / "r.json").write_text("{}")
    (root / "pkg" / "b.py").write_text("")  # new file below the root: a developer's, not counted
    after = untracked_entries(root)
    assert after == {"smbtortureAb12Cd/", "stray.txt", "newdir/"}
    assert left_behind(before, after) == ["newdir/", "smbtortureAb12Cd/", "stray.txt"]


def test_entries_there_before_the_run_do_not_count(tmp_path):
    root = _repo(tmp_path)
    (root / "smbtortureOld123").mkdir()
    before = untracked_entries(root)
    (root / "later").write_text("")
    assert left_behind(before, untracked_entries(root)) == ["later"]


def test_off_outside_the_top_of_a_work_tree(tmp_path):
    assert untracked_entries(_repo(tmp_path) / "pkg") is None  # a subdirectory is not the root
    plain = tmp_path / "copy"
    plain.mkdir()
    assert untracked_entries(plain) is None
    assert left_behind(None, {"x"}) == [] and left_behind({"x"}, None) == []
