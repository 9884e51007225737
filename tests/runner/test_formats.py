"""Golden console lines, summary lines, check.log/check.time and xunit (validated against xunit.xsd)."""
from __future__ import annotations

from pathlib import Path

from lxml import etree

from harness.runner import report
from harness.runner.console import cell_line, header_lines
from harness.runner.outcome import CellReport

XSD = etree.XMLSchema(etree.parse(str(Path(__file__).with_name("xunit.xsd"))))


def rep(cid: str, verdict: str, reason: str = "", details=None, duration: float = 4.4, order: int = 0,
        list_reason: str = "") -> CellReport:
    scen = cid.split("[")[0]
    area, num = scen.split("/")
    label = cid[len(scen) + 1:-1] if "[" in cid else ""
    labels = dict(zip(["family", "loss"], label.split("-"), strict=False)) if label else {}
    stem = f"{num}.{label}" if label else num
    return CellReport(cid, scen, area, stem, labels, "tcp", verdict, reason, list(details or []), duration,
                      list_reason, order)


def test_summary_all_passed():
    rs = [rep("tcp/001[ipv4]", "pass", order=0), rep("tcp/001[ipv6]", "pass", order=1)]
    assert report.summary_lines(rs) == ["Ran: tcp/001[ipv4] tcp/001[ipv6]", "Passed all 2 tests"]


def test_summary_failures_notrun_and_expunged():
    rs = [rep("tcp/001", "pass", order=0), rep("tcp/002", "fail", "x", order=1),
          rep("quic/001", "notrun", "needs quic", order=2), rep("tcp/003", "expunged", order=3),
          rep("tcp/004", "uxsuccess", order=4), rep("tcp/005", "xfail", order=5)]
    assert report.summary_lines(rs) == [
        "Ran: tcp/001 tcp/002 tcp/004 tcp/005",
        "Not run: quic/001",
        "Known failures: tcp/005",
        "Failures: tcp/002 tcp/004",
        "Failed 2 of 4 tests",
    ]
    assert report.summary_lines(rs, brief=True) == ["Known failures: tcp/005", "Failures: tcp/002 tcp/004",
                                                    "Failed 2 of 4 tests"]


def test_summary_counts_only_cells_that_ran():
    rs = [rep("tcp/001", "pass", order=0), rep("quic/001", "notrun", "needs quic", order=1),
          rep("quic/002", "notrun", "needs quic", order=2)]
    assert report.summary_lines(rs) == ["Ran: tcp/001", "Not run: quic/001 quic/002", "Passed all 1 tests"]


def test_summary_of_a_section_that_ran_nothing_has_no_passed_line():
    rs = [rep("quic/001", "notrun", "needs quic", order=0), rep("tcp/003", "expunged", order=1)]
    lines = report.summary_lines(rs)
    assert lines == ["Not run: quic/001", "No tests ran (1 not run)"]
    assert not any(line.startswith(("Passed all", "Ran:")) for line in lines)
    assert report.summary_lines([]) == ["No tests ran (0 not run)"]


def test_summary_lists_in_selection_order_not_completion_order():
    rs = [rep("udp/001", "pass", order=2), rep("tcp/001", "pass", order=0), rep("tcp/002", "pass", order=1)]
    assert report.summary_lines(rs)[0] == "Ran: tcp/001 tcp/002 udp/001"


def test_console_lines_are_xfstests_lines(monkeypatch):
    monkeypatch.delenv("DIFF_LENGTH", raising=False)
    width = len("tcp/001[ipv4]")
    assert cell_line(rep("tcp/001[ipv4]", "pass", duration=5.2), width, 4) == "tcp/001[ipv4] 4s ...  5s"
    assert cell_line(rep("tcp/001[ipv4]", "pass", duration=5.2), width, None) == "tcp/001[ipv4]        5s"
    assert cell_line(rep("tcp/001", "notrun", "requires program x"), width, None) == \
        "tcp/001             [not run] requires program x"
    assert cell_line(rep("tcp/001", "expunged"), width, None) == "tcp/001             [expunged]"
    bad = "results/tcp/tcp/001.out.bad"
    assert cell_line(rep("tcp/001", "fail", "a", ["a", "b"]), 7, 3, bad) == \
        f"tcp/001 3s ... - output mismatch (see {bad})\n    a\n    b"


def test_console_failure_excerpt_is_diff_length_lines(monkeypatch):
    monkeypatch.setenv("DIFF_LENGTH", "2")
    text = cell_line(rep("tcp/001", "fail", "l0", [f"l{i}" for i in range(5)]), 7, None, "B")
    assert text.splitlines() == ["tcp/001       - output mismatch (see B)", "    l0", "    l1", "    ...",
                                 "(Run 'cat B'  to see the entire report)"]


def test_header_labels_are_padded_to_14_columns():
    lines = header_lines("quic", {"TRANSPORT": "quic", "QUIC_1RTT_ENCRYPTION": "off", "EMPTY": ""})
    assert lines[0] == "SECTION       -- quic"
    assert lines[1].startswith("PLATFORM      -- Linux/")
    assert lines[2:] == ["TRANSPORT     -- quic", "QUIC_1RTT_ENCRYPTION -- off", ""]
    assert header_lines(None, {})[0].startswith("PLATFORM      -- ")


def test_results_files_check_time_and_check_log(tmp_path):
    rs = [rep("tcp/001[ipv4]", "pass", duration=3.6), rep("tcp/002", "fail", "step 0 x: boom", ["step 0 x: boom"]),
          rep("quic/001", "notrun", "needs quic"), rep("tcp/003", "uxsuccess", list_reason="bug 1 (knownfail:3)")]
    for r in rs:
        report.write_cell_files(tmp_path, r)
    assert (tmp_path / "tcp/002.out.bad").read_text() == "step 0 x: boom\n"
    assert (tmp_path / "quic/001.notrun").read_text() == "needs quic\n"
    assert "unexpected success" in (tmp_path / "tcp/003.out.bad").read_text()
    assert not (tmp_path / "tcp/001.ipv4.out.bad").exists()
    report.update_times(tmp_path / "check.time", rs)
    assert (tmp_path / "check.time").read_text() == "tcp/001[ipv4] 4\n"
    report.append_log(tmp_path / "check.log", rs, 0.0)
    report.append_log(tmp_path / "check.log", rs[:1], 0.0, interrupted=True)
    log = (tmp_path / "check.log").read_text().splitlines()
    assert log[0] == "" and log[1].startswith("Kernel version: ")
    assert log[3:7] == ["Ran: tcp/001[ipv4] tcp/002 tcp/003", "Not run: quic/001",
                        "Failures: tcp/002 tcp/003", "Failed 2 of 3 tests"]
    assert log[-2:] == ["Passed all 1 tests", "Interrupted!"]


def test_xunit_validates_and_counts(tmp_path):
    rs = [rep("tcp/001[ipv4]", "pass"), rep("tcp/002", "fail", "step 0 x: <boom> ]]>", ["d"]),
          rep("quic/001", "notrun", "needs quic"), rep("tcp/003", "expunged"), rep("tcp/005", "xfail", "f")]
    (tmp_path / "tcp").mkdir()
    (tmp_path / "tcp/002.full").write_text("log with ]]> and \x01 control\n")
    report.write_cell_files(tmp_path, rs[1])
    report.write_xunit(tmp_path / "result.xml", rs, "tcp", 0.0, {"SECTION": "tcp", "B": "2", "A": "1"}, tmp_path)
    doc = etree.parse(str(tmp_path / "result.xml"))
    assert XSD.validate(doc), XSD.error_log
    ns = {"x": report.XUNIT_NS}
    suite = doc.getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "1", "1")
    assert [p.get("name") for p in suite.findall("x:properties/x:property", ns)] == ["A", "B", "SECTION"]
    cases = suite.findall("x:testcase", ns)
    assert [c.get("name") for c in cases] == ["tcp/001[ipv4]", "tcp/002", "quic/001", "tcp/005"]
    assert cases[0].get("classname") == "wirecheck.tcp"
    fail = cases[1].find("x:failure", ns)
    assert fail.get("message") == "step 0 x: <boom> ]]>" and fail.get("type") == "TestFail"
    assert "log with ]]> and  control" in cases[1].find("x:system-out", ns).text
    assert cases[2].find("x:skipped", ns).get("message") == "needs quic"
    assert cases[3].find("x:failure", ns) is None


def test_xunit_quiet_has_no_output(tmp_path):
    rs = [rep("tcp/002", "fail", "boom", ["boom"])]
    (tmp_path / "tcp").mkdir()
    (tmp_path / "tcp/002.full").write_text("log\n")
    report.write_xunit(tmp_path / "r.xml", rs, "tcp", 0.0, {}, tmp_path, quiet=True)
    doc = etree.parse(str(tmp_path / "r.xml"))
    assert XSD.validate(doc)
    assert b"system-out" not in (tmp_path / "r.xml").read_bytes()
