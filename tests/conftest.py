"""Fixtures shared by the multi-process tests (procs, sockdir, pcaps): see procutil.py.

Also prints, at the end of the run, the per-suite lines tests leave in their user properties as
"smbtorture_summary" (passed / known failures / skipped per smbtorture suite; xdist workers send
user properties to the controller, so this works with -n too).

And fails the run when it left a new untracked entry in the repository root (checkout_guard.py):
checked once, by the controller (xdist workers share its checkout), unless the run was interrupted.
"""

import pytest
from checkout_guard import left_behind, untracked_entries
from procutil import pcaps, procs, sockdir  # noqa: F401

_SUMMARIES: list[str] = []
_UNTRACKED_AT_START: set[str] | None = None
_LEFT_BEHIND: list[str] = []


def _controller(config) -> bool:
    return not hasattr(config, "workerinput")


def pytest_sessionstart(session):
    global _UNTRACKED_AT_START
    if _controller(session.config):
        _UNTRACKED_AT_START = untracked_entries()


def pytest_sessionfinish(session, exitstatus):
    if not _controller(session.config) or exitstatus == pytest.ExitCode.INTERRUPTED:
        return
    _LEFT_BEHIND[:] = left_behind(_UNTRACKED_AT_START, untracked_entries())
    if _LEFT_BEHIND and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_runtest_logreport(report):
    if report.when == "call":
        _SUMMARIES.extend(v for k, v in report.user_properties if k == "smbtorture_summary")


def pytest_terminal_summary(terminalreporter):
    if _LEFT_BEHIND:
        terminalreporter.write_sep("!", "the run left new entries in the repository root (tests/checkout_guard.py)",
                                   red=True)
        for name in _LEFT_BEHIND:
            terminalreporter.write_line(f"  {name}")
    if _SUMMARIES:
        terminalreporter.write_sep("-", "smbtorture per suite (passed / known failures / skipped)")
        for line in sorted(_SUMMARIES):
            terminalreporter.write_line(line)
