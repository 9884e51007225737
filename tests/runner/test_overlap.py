"""The run loop's speed-ups, checked for what they must keep: sections share the -j workers yet
print one after the other; the longest cells go first; a forked cell does not run the main
script again; the lxin/quic build is made once and reused."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from harness.runner.run import Options, Runner, _Plan

from .scen import PASS, tree, write

ROOT = Path(__file__).resolve().parents[2]

STAMP = """
id: {id}
description: records when it ran
groups: [{groups}]
steps:
  - host.run: {{argv: [python, -c, "import json,time; print(json.dumps(dict(t=time.time())))"], as: r}}
"""

SLOW_STAMPS = """
id: {id}
description: records its start, sleeps, records its end
groups: [{groups}]
steps:
  - host.run: {{argv: [python, -c, "import json,time; print(json.dumps(dict(t=time.time())))"], as: a}}
  - sleep: {{seconds: 4}}
  - host.run: {{argv: [python, -c, "import json,time; print(json.dumps(dict(t=time.time())))"], as: b}}
"""


def _check(tmp_path: Path, *args: str, main: list[str] | None = None, env: dict | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [*(main or [sys.executable, "-c", "from harness.cli import main; main()"]), "check", "--plain",
           "--scenarios", str(tmp_path / "sc"), "--results", str(tmp_path / "results"), *args]
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    full_env.pop("CI", None)
    full_env.pop("WIRECHECK_CELL_SPAWN", None)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=str(ROOT))


def _stamp(path: Path, key: str) -> float:
    return float(json.loads(path.read_text())["results"][key]["t"])


def test_sections_share_the_workers_and_still_print_one_after_the_other(tmp_path):
    """With -j 2, the second section's cells run while the first section's slow cell sleeps (before,
    each section waited for the last cell of the one before it); the output still has the first
    section's header, cell line and summary before the second section's header."""
    tree(tmp_path / "sc", **{"tcp/001": SLOW_STAMPS, "udp/001": STAMP, "udp/002": STAMP})
    (tmp_path / "sc/sections.conf").write_text("[one]\nAREAS=tcp\n[two]\nAREAS=udp\n")
    res = _check(tmp_path, "-j", "2")
    assert res.returncode == 0, res.stdout + res.stderr
    slow = tmp_path / "results/one/tcp/001.json"
    end = _stamp(slow, "b")   # one section after the other, both udp cells would run after this
    for n in ("001", "002"):
        assert _stamp(tmp_path / f"results/two/udp/{n}.json", "r") < end, res.stdout
    out = res.stdout
    order = [out.index("SECTION       -- one\n"), out.index("tcp/001"), out.index("Ran: tcp/001"),
             out.index("SECTION       -- two\n"), out.index("udp/001 "), out.index("Ran: udp/001 udp/002")]
    assert order == sorted(order), out
    assert out.count("SECTION       -- two\n") == 2  # its header, and its block in the final summary
    times = (tmp_path / "results/two/check.time").read_text()
    assert "udp/001" in times and "udp/002" in times


def _plans(runner: Runner) -> list[_Plan]:
    def cell(cid: str, timeout: float) -> SimpleNamespace:
        return SimpleNamespace(id=cid, scenario=SimpleNamespace(timeout=timeout))

    one = _Plan(SimpleNamespace(name="one"), Path("."), runner.out, True)
    one.todo = [cell("a", 120), cell("b", 120), cell("c", 120)]
    one.expected = {"a": 2.0, "b": 9.0}
    two = _Plan(SimpleNamespace(name="two"), Path("."), runner.out, False)
    two.todo = [cell("d", 120), cell("e", 300), cell("a", 120)]
    two.expected = {"d": 30.0, "a": 1.0}
    return [one, two]


def test_queue_runs_the_longest_cells_first_across_sections():
    """Cells without a recorded time first, the longest scenario timeout first; then by the time each
    took when it last passed, whatever section it is in; ties keep the listed order."""
    runner = Runner(Options(jobs=2), SimpleNamespace())
    plans = _plans(runner)
    got = [(p.section.name, c.id) for p, c in runner.queue_order(plans)]
    assert got == [("two", "e"), ("one", "c"), ("two", "d"), ("one", "b"), ("one", "a"), ("two", "a")]


def test_queue_keeps_the_listed_order_with_one_job_random_or_exact_order():
    for opts in (Options(jobs=1), Options(jobs=2, randomize=True), Options(jobs=2, exact_order=True)):
        runner = Runner(opts, SimpleNamespace())
        got = [(p.section.name, c.id) for p, c in runner.queue_order(_plans(runner))]
        assert got == [("one", "a"), ("one", "b"), ("one", "c"), ("two", "d"), ("two", "e"), ("two", "a")]


MAIN_SCRIPT = """
import os, sys
with open(os.environ["WIRECHECK_T_RUNS"], "a") as f:
    f.write(f"{os.getpid()} {'harness.cli' in sys.modules}\\n")
from harness.cli import main
if __name__ == "__main__":
    main()
"""


def test_a_forked_cell_finds_the_main_scripts_imports_done(tmp_path):
    """A forked cell runs the parent's main script again (Python 3.11's fork server does not spare
    it); for `wirecheck` that script imports harness.cli, which the fork server has preloaded, so
    the cell does not import it anew (before: 0.17 s of CPU per cell)."""
    tree(tmp_path / "sc", **{f"tcp/00{i}": PASS for i in range(1, 5)})
    script = write(tmp_path, "main.py", MAIN_SCRIPT)
    runs = tmp_path / "runs"
    res = _check(tmp_path, "-j", "2", main=[sys.executable, str(script)], env={"WIRECHECK_T_RUNS": str(runs)})
    assert res.returncode == 0 and "Passed all 4 tests" in res.stdout, res.stdout + res.stderr
    seen = [line.split()[1] for line in runs.read_text().splitlines()]
    assert seen[0] == "False"                           # the runner itself, at its start
    assert len(seen) == 5 and seen[1:] == ["True"] * 4, seen   # each forked cell: already imported


def _lxin_func():
    spec = importlib.util.spec_from_file_location("lxin_func", ROOT / "scenarios/quic/lxin_func.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_lxin_build_is_made_once_per_source_and_reused(tmp_path, monkeypatch):
    """build.sh runs once for the same sources (two cells, or two runs, share it) and again when a
    source changes; the cell's ./lxin reaches the build; WIRECHECK_LXIN_CACHE=0 builds in place."""
    lf = _lxin_func()
    src = tmp_path / "src"
    write(src, "tests/func_test.c", "int main(void) { return 0; }\n")
    builds: list[str] = []

    def fake_build(source: str, out: str) -> None:
        builds.append(out)
        os.makedirs(out, exist_ok=True)
        Path(out, "func_test").write_text("built\n")

    monkeypatch.setattr(lf, "_run_build", fake_build)
    monkeypatch.setattr(lf.tempfile, "gettempdir", lambda: str(tmp_path / "cache"))
    monkeypatch.setattr(lf, "setting_path", lambda name, default: str(src))
    for cell in ("one", "two"):
        (tmp_path / cell).mkdir()
        monkeypatch.chdir(tmp_path / cell)
        lf.build("unused")
        assert Path("lxin/func_test").read_text() == "built\n"
    assert len(builds) == 1
    write(src, "tests/func_test.c", "int main(void) { return 1; }\n")
    (tmp_path / "three").mkdir()
    monkeypatch.chdir(tmp_path / "three")
    lf.build("unused")
    assert len(builds) == 2 and builds[0] != builds[1]
    monkeypatch.setenv("WIRECHECK_LXIN_CACHE", "0")
    (tmp_path / "four").mkdir()
    monkeypatch.chdir(tmp_path / "four")
    lf.build("unused")
    assert builds[-1] == str(tmp_path / "four" / "lxin") and not Path("lxin").is_symlink()
