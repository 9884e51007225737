"""benchmarks/scenarios.py's figures from a matrix.json: what `make bench` prints for the runner."""
from __future__ import annotations

from benchmarks.scenarios import cells, format_result, summarize

MATRIX = {"tables": [
    {"section": "tcp", "results": [
        {"id": "tcp/001", "result": "pass", "time": 2.0, "startup": {"first_packet": 0.9, "first_request": 1.0}},
        {"id": "tcp/002", "result": "notrun", "time": 0.0, "startup": {}},
        {"id": "tcp/003", "result": "fail", "time": 4.0, "startup": {"first_packet": 3.0}}]},
    {"section": "quic", "results": [
        {"id": "quic/005", "result": "pass", "time": 33.0, "startup": {"first_packet": 2.5, "first_request": 2.5}}]},
]}


def test_summary_counts_cells_that_ran_and_names_the_slowest_with_its_section():
    s = summarize(cells(MATRIX))
    assert s["cells"] == 3 and s["results"] == {"pass": 2, "fail": 1}
    assert s["cell_time_sum"] == 39.0 and s["cell_time_median"] == 4.0
    assert s["slowest_cell"] == {"id": "quic/005", "section": "quic", "time": 33.0}
    # tcp/003 has no request in its capture: left out of the start-up figures, not counted as 0
    assert s["startup_median"] == 1.75
    assert s["startup_slowest"] == {"id": "quic/005", "section": "quic", "time": 2.5}


def test_report_shows_a_failed_run_with_its_last_lines():
    r = {"group": "quick", "jobs": 2, "wall": 41.5, "status": 1, "tail": ["Failures: tcp/003"],
         **summarize(cells(MATRIX))}
    text = format_result(r)
    assert "41.5 s" in text and "exit status 1" in text and "quic/005 (quic)" in text
    assert text.splitlines()[-1].strip() == "Failures: tcp/003"
