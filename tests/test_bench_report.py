"""benchmarks/report.py: the README's performance section is the recorded `make bench` run, and that
run covers every target the benchmarks define (timing itself is never asserted)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from benchmarks import report, transport


def _record() -> dict:
    assert report.LAST_RUN.exists(), "no recorded run: make bench BENCH_ARGS='--save --readme'"
    return json.loads(report.LAST_RUN.read_text())


def test_readme_section_is_the_recorded_run() -> None:
    text = report.README.read_text()
    assert text.count(report.BEGIN) == 1 and text.count(report.END) == 1
    block = text[text.index(report.BEGIN): text.index(report.END) + len(report.END)]
    assert block == report.readme_block(_record()), \
        "README's performance section is stale: run make bench BENCH_ARGS='--save --readme'"


def test_recorded_run_has_every_target_the_code_defines() -> None:
    labels = {t["label"] for s in _record()["sections"] for t in s["targets"]}
    expected = {t[0] for t in transport.TARGETS} | report.TARGET_LABELS
    missing = expected - labels
    assert not missing, f"the recorded run predates these targets: {sorted(missing)}"
    assert {s["name"] for s in _record()["sections"]} == set(report.SECTIONS)


def test_every_target_line_is_printed_with_its_threshold() -> None:
    record = _record()
    for s in record["sections"]:
        for t in s["targets"]:
            line = next((ln for ln in record["report"].splitlines() if ln.strip().startswith(t["label"])), None)
            assert line is not None, t["label"]
            assert t["value"] in line and f"target {t['threshold']}" in line
            assert line.rstrip().endswith("PASS" if t["passed"] else "MISS")


def test_update_readme_replaces_only_the_block(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{report.BEGIN}\nold numbers\n{report.END}\nafter\n")
    report.update_readme({"report": "new numbers"}, readme)
    assert readme.read_text() == f"before\n{report.readme_block({'report': 'new numbers'})}\nafter\n"
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit):
        report.update_readme({"report": "x"}, readme)


def test_format_report_prints_pass_and_miss() -> None:
    sections = [report.Section("a", "A", "table", [report.Target("fast enough", "0.40x", ">= 0.5x", False),
                                                  report.Target("cheap enough", "20%", "<= 30%", True)])]
    text = report.format_report(sections, "header")
    assert "== A ==\ntable" in text
    assert text.splitlines()[-2].split() == ["fast", "enough", "0.40x", "target", ">=", "0.5x", "MISS"]
    assert text.splitlines()[-1].split() == ["cheap", "enough", "20%", "target", "<=", "30%", "PASS"]


def test_report_runs_every_section_small(monkeypatch, capsys, tmp_path: Path) -> None:
    """The whole report, tiny: each section runs, prints its table, and every target gets a line."""
    tiny = transport.Settings(size=256 * 1024, connections=5, datagrams=50, repeat=1, timeout=60.0)
    monkeypatch.setattr(transport.Settings, "quick", classmethod(lambda cls: tiny))
    monkeypatch.setitem(report.PCAP_ASSERTION_SIZES, "quick", (300, 200))
    monkeypatch.setattr(report, "LAST_RUN", tmp_path / "last_run.json")
    assert report.main(["--quick", "--save"]) == 0
    out = capsys.readouterr().out
    record = json.loads((tmp_path / "last_run.json").read_text())
    assert record["report"] == out.rstrip("\n")
    labels = [t["label"] for s in record["sections"] for t in s["targets"]]
    assert set(labels) >= {t[0] for t in transport.TARGETS}
    assert len(labels) == len(transport.TARGETS) + len(report.TARGET_LABELS)
    assert {s["name"] for s in record["sections"]} == set(report.SECTIONS)
    for label in labels:
        assert sum(line.strip().startswith(label) for line in out.splitlines()) == 1, label
    infos = [i for s in record["sections"] for i in s["info"]]
    assert any("quic.ko" in i["label"] for i in infos) and any("native" in i["label"] for i in infos)
    for i in infos:  # after the targets, each with its measured ratio
        line = next(ln for ln in out.split("no target set) ==", 1)[1].splitlines() if ln.strip().startswith(i["label"]))
        assert line.rstrip().endswith(i["value"]) and re.fullmatch(r"[\d.]+x", i["value"]), line
