"""A test that collects pcap assertions with Capture.expect() and never calls verify() has checked
nothing; the pytest plugin turns that into an error of the test (one such test hid a never-run
capture check before). Shown through pytester: the forgetful test errors, the careful one passes."""
from __future__ import annotations

import textwrap
from importlib import metadata

from harness.pcap.capture import unverified

pytest_plugins = ["pytester"]

_LOADED = any(ep.value == "harness.pytest_plugin" for ep in metadata.entry_points(group="pytest11"))
P = () if _LOADED else ("-p", "harness.pytest_plugin")

BODY = """
from harness.pcap import Capture
from harness.pcap.assertions import Count

def test_forgot_verify():
    Capture({path!r}).expect(Count("smb2", min=1))

def test_verified():
    Capture({path!r}).expect(Count("smb2", min=1)).verify()

def test_checked_at_once():
    Capture({path!r}).check(Count("smb2", min=1))
"""


def test_expect_without_verify_errors_the_test(pytester, clean_pcap):
    pytester.makepyfile(test_forgetful=textwrap.dedent(BODY.format(path=str(clean_pcap))))
    res = pytester.runpytest_subprocess(*P, "-p", "no:randomly", "-q")
    res.assert_outcomes(passed=3, errors=1)
    out = res.stdout.str()
    assert "test_forgot_verify" in out and "never evaluated" in out
    assert f"{clean_pcap} (1 assertion(s) never verified)" in out


def test_registry_follows_pending_assertions(clean_pcap):
    from harness.pcap import Capture
    from harness.pcap.assertions import Count

    unverified()  # start empty whatever ran before in this process
    cap = Capture(clean_pcap).expect(Count("smb2", min=1), Count("smb2", min=1))
    assert unverified(clear=False) == [f"{clean_pcap} (2 assertion(s) never verified)"]
    cap.results()
    assert unverified() == []
