"""`requires: paths` and `requires: pkg_config`: a folder outside the repository (found through a
setting with a default relative to the repository root) and development files a cell compiles
against. Missing, they make the cell "not run" on a laptop and a failure under CI."""

from __future__ import annotations

import pytest

from harness.scenario.requires import REPO_ROOT, check, setting_path

SETTING = "WIRECHECK_TEST_REQUIRES_FOLDER"


def test_the_default_is_relative_to_the_repository_root(monkeypatch):
    monkeypatch.delenv(SETTING, raising=False)
    assert setting_path(SETTING, "scenarios/quic") == f"{REPO_ROOT}/scenarios/quic"
    assert check({"paths": [{"setting": SETTING, "default": "scenarios/quic"}]}) is None


def test_the_setting_overrides_the_default(monkeypatch, tmp_path):
    monkeypatch.setenv(SETTING, str(tmp_path))
    assert check({"paths": [{"setting": SETTING, "default": "no/such/folder"}]}) is None
    monkeypatch.setenv(SETTING, str(tmp_path / "gone"))
    found = check({"paths": [{"setting": SETTING, "default": "scenarios/quic"}]})
    assert found is not None and found.missing
    assert found.reason == f"requires the folder {tmp_path / 'gone'} (set {SETTING})"


@pytest.mark.parametrize("ci", ["", "1"])
def test_a_missing_folder_is_not_run_here_and_a_failure_under_ci(monkeypatch, ci):
    monkeypatch.delenv(SETTING, raising=False)
    monkeypatch.setenv("CI", ci)
    found = check({"paths": [{"setting": SETTING, "default": "no/such/folder"}]})
    assert found is not None and found.fails_here() == bool(ci)


def test_pkg_config_names_what_it_lacks():
    found = check({"pkg_config": ["no-such-library-wirecheck"]})
    assert found is not None and found.missing
    assert "no-such-library-wirecheck" in found.reason
    assert check({"pkg_config": ["gnutls"]}) is None  # setup installs pkg-config and libgnutls28-dev
