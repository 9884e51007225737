"""Fixtures shared by the multi-process tests (procs, sockdir, pcaps): see procutil.py.

Also prints, at the end of the run, the per-suite lines tests leave in their user properties as
"smbtorture_summary" (passed / known failures / skipped per smbtorture suite; xdist workers send
user properties to the controller, so this works with -n too).
"""

from procutil import pcaps, procs, sockdir  # noqa: F401

_SUMMARIES: list[str] = []


def pytest_runtest_logreport(report):
    if report.when == "call":
        _SUMMARIES.extend(v for k, v in report.user_properties if k == "smbtorture_summary")


def pytest_terminal_summary(terminalreporter):
    if _SUMMARIES:
        terminalreporter.write_sep("-", "smbtorture per suite (passed / known failures / skipped)")
        for line in sorted(_SUMMARIES):
            terminalreporter.write_line(line)
