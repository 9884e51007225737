"""The strict smbtorture bookkeeping itself (torture_lists.judge and the list files), on made-up runs:
each way a run can hide a regression must be reported."""

from __future__ import annotations

import pytest
import torture_lists as tl

FLOOR = tl.Floor("smb2.x", min_passed=2, max_skipped=1)
EXPECTED = ["a", "b", "c", "d"]
KNOWN = {"smb2.x.c": "not implemented"}
FLAPPING = {"smb2.x.d": "timing"}


def judge(results, rc=None, floor=FLOOR, expected=EXPECTED, known=KNOWN, flapping=FLAPPING):
    if rc is None:
        rc = 1 if any(o in ("failure", "error") for o in results.values()) else 0
    return tl.judge("smb2.x", results, rc, expected, known, flapping, floor)


def test_as_recorded_is_clean_and_summarised():
    v = judge({"a": "success", "b": "success", "c": "failure", "d": "failure"})
    assert v.problems == []
    assert v.summary() == "smb2.x: 2 passed / 1 known failures / 0 skipped / 1 flapping"


def test_known_failure_that_passes_fails_the_run():
    v = judge({"a": "success", "b": "success", "c": "success", "d": "success"})
    assert v.problems == ["now passes, remove it from knownfail (and raise the floor): smb2.x.c"]


def test_unlisted_failure_fails_the_run():
    v = judge({"a": "success", "b": "failure", "c": "failure", "d": "success"})
    assert "unexpected failure: smb2.x.b" in v.problems


def test_exit_status_must_agree_with_the_outcomes():
    clean = {"a": "success", "b": "success", "c": "failure", "d": "success"}
    assert any("exited with status 0 after failures" in p for p in judge(clean, rc=0).problems)
    assert any("exited with status 139" in p for p in judge(clean, rc=139).problems)
    no_fail = dict(clean, c="skip")
    assert any("exited with status 1 after no failure" in p
               for p in judge(no_fail, rc=1, known={}, floor=tl.Floor("smb2.x", 2, 5)).problems)


def test_tests_smbtorture_never_reported_fail_the_run():
    v = judge({"a": "success", "b": "success", "c": "failure"})
    assert any("did not report 1 test(s) of smb2.x: d" in p for p in v.problems)


def test_below_the_floor_or_more_skips_fails_the_run():
    v = judge({"a": "success", "b": "skip", "c": "failure", "d": "success"})
    assert v.problems == ["smb2.x: 1 passed, below the floor of 2 (floors.tsv)"]
    v = judge({"a": "skip", "b": "skip", "c": "failure", "d": "success"}, floor=tl.Floor("smb2.x", 0, 1))
    assert v.problems == ["smb2.x: 2 skipped, more than the 1 recorded (floors.tsv)"]
    assert any("has no floor" in p for p in judge({"a": "success"}, floor=None, expected=["a"]).problems)


def test_listed_names_must_be_tests_of_the_suite():
    v = judge({"a": "success", "b": "success", "c": "failure", "d": "failure"},
              known=dict(KNOWN, **{"smb2.x.typo": "r"}))
    assert "listed, but not a test this run of smbtorture has: smb2.x.typo" in v.problems


def test_list_files_are_one_test_per_line_with_reasons(tmp_path):
    known, flapping = tl.read_list(tl.KNOWNFAIL), tl.read_list(tl.FLAPPING)
    assert known and not set(known) & set(flapping)  # flapping may be empty: nothing flaps today
    bad = tmp_path / "kf"
    for text, message in [("^smb2\\.session\\..*  # all of it\n", "not one full smbtorture test name"),
                          ("smb2.a.b\n", "needs its reason"),
                          ("smb2.a.b  # r\nsmb2.a.b  # r\n", "listed twice")]:
        bad.write_text(text)
        with pytest.raises(tl.ListError, match=message):
            tl.read_list(bad)


def test_known_tests_from_the_listing():
    listing = "smb2.connect.connect\nsmb2.ioctl.bug14788.VALIDATE_NEGOTIATE.VALIDATE_NEGOTIATE\n" \
              "smb2.ioctl.copy-chunk streams.copy-chunk streams\nsmb2.ioctl-on-stream.x.x\n"
    assert tl.known_tests(listing, "smb2.ioctl") == ["bug14788.VALIDATE_NEGOTIATE", "copy-chunk streams"]
    assert tl.known_tests(listing, "smb2.connect") == ["connect"]


def test_a_comparison_that_timed_out_names_the_test_it_hung_in():
    import compare_servers as cs

    hung = "test: valid-req\nsuccess: valid-req\ntest: basedir\n"
    assert cs.count(hung, None) == cs.Count(1, 1, "timeout in basedir")
    assert cs.count(hung + "success: basedir\n", None).note == "timeout"
    assert cs.count(hung + "success: basedir\n", 0).note == ""
