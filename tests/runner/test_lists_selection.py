"""knownfail/flapping files and verdicts; -g/-x/-e/-E/TESTS selection; the sections file."""
from __future__ import annotations

import pytest

from harness.runner import config, lists
from harness.runner.outcome import verdict
from harness.runner.selection import read_exclude_file, select
from harness.scenario import load_tree

from .scen import PASS, tree, write


def test_list_format_reasons_dirs_and_backup_files(tmp_path):
    write(tmp_path, "knownfail", """
        # comment
        ^tcp/002\\[   # stream delay loses data
        ^quic/.*\\(quic-noenc\\)$
        """)
    write(tmp_path, "knownfail.d/smb", "^smb/001  # multichannel bug\n")
    write(tmp_path, "knownfail.d/old~", "^tcp/001\n")
    kf = lists.load("knownfail", [tmp_path / "knownfail", tmp_path / "knownfail.d", tmp_path / "missing"])
    assert [(e.pattern.pattern, e.reason) for e in kf.entries] == [
        ("^tcp/002\\[", "stream delay loses data"), ("^quic/.*\\(quic-noenc\\)$", ""), ("^smb/001", "multichannel bug")]
    assert kf.match("tcp/002[ipv4](tcp)").where == f"{tmp_path / 'knownfail'}:2"
    assert kf.match("quic/001[psk](quic-noenc)") and not kf.match("quic/001[psk](quic)")
    assert kf.match("tcp/001(tcp)") is None


def test_bad_regex_names_file_line_and_column(tmp_path):
    write(tmp_path, "flapping", "^ok\n^tcp/00(1\n")
    with pytest.raises(lists.ListError) as e:
        lists.load("flapping", [tmp_path / "flapping"])
    assert str(e.value).startswith(f"{tmp_path / 'flapping'}:2:")
    assert "missing )" in str(e.value)


@pytest.mark.parametrize("raw,known,flap,want", [
    ("pass", False, False, "pass"), ("pass", True, False, "uxsuccess"), ("pass", False, True, "pass"),
    ("fail", False, False, "fail"), ("fail", True, False, "xfail"), ("fail", False, True, "flapping"),
    ("fail", True, True, "flapping"), ("notrun", True, True, "notrun"),
])
def test_verdicts(raw, known, flap, want):
    kf = lists.ExpectedList("knownfail", [lists.Entry(__import__("re").compile("^tcp/001"), "bug", "kf:1")] if known else [])
    fl = lists.ExpectedList("flapping", [lists.Entry(__import__("re").compile("^tcp/001"), "race", "fl:1")] if flap else [])
    assert verdict(raw, "tcp/001[ipv4]", "tcp", kf, fl)[0] == want


@pytest.fixture
def scenarios(tmp_path):
    tree(tmp_path, **{"tcp/001": PASS, "tcp/002": PASS, "udp/001": PASS})
    write(tmp_path, "tcp/010.yaml", PASS.format(id="tcp/010", groups="auto, slow"))
    write(tmp_path, "udp/010.yaml", PASS.format(id="udp/010", groups="auto, slow").replace(
        "steps:", "matrix: {family: [ipv4, ipv6]}\nsteps:"))
    return load_tree(tmp_path)


def ids(sel):
    return [(c.id, x) for c, x in sel.cells]


def test_default_is_the_quick_group(scenarios):
    assert [i for i, _ in ids(select(scenarios, [], [], [], []))] == ["tcp/001", "tcp/002", "udp/001"]


def test_groups_area_groups_and_exclusions(scenarios):
    assert [i for i, _ in ids(select(scenarios, [], ["slow"], [], []))] == ["tcp/010", "udp/010[ipv4]", "udp/010[ipv6]"]
    assert [i for i, _ in ids(select(scenarios, [], ["udp/slow"], [], []))] == ["udp/010[ipv4]", "udp/010[ipv6]"]
    assert [i for i, _ in ids(select(scenarios, [], ["auto"], ["slow"], []))] == ["tcp/001", "tcp/002", "udp/001"]
    assert [i for i, _ in ids(select(scenarios, [], ["all"], [], [], areas=["udp"]))] == \
        ["udp/001", "udp/010[ipv4]", "udp/010[ipv6]"]


def test_tests_globs_cells_and_unknown(scenarios):
    sel = select(scenarios, ["tcp/00?", "udp/010[ipv6]", "nope/001"], [], [], [])
    assert [i for i, _ in ids(sel)] == ["tcp/001", "tcp/002", "udp/010[ipv6]"]
    assert sel.unknown == ["nope/001"]
    assert [i for i, _ in ids(select(scenarios, ["*/010"], [], [], []))] == ["tcp/010", "udp/010[ipv4]", "udp/010[ipv6]"]


def test_exclude_tests_are_expunged(scenarios, tmp_path):
    ex = tmp_path / "exclude"
    ex.write_text("# flaky here\ntcp/002   # why\n")
    sel = select(scenarios, [], ["quick", "slow"], [], ["udp/010[ipv4],tcp/001"] + read_exclude_file(str(ex)))
    assert ids(sel) == [("tcp/001", True), ("tcp/002", True), ("tcp/010", False), ("udp/001", False),
                        ("udp/010[ipv4]", True), ("udp/010[ipv6]", False)]


def test_sections_carry_values_over(tmp_path):
    secs = config.parse("[tcp]\nTRANSPORT=tcp\nAREAS=tcp udp\n[quic]\nTRANSPORT=quic\n# c\n[x] \nK='v w'\n")
    assert [(s.name, s.vars) for s in secs] == [
        ("tcp", {"TRANSPORT": "tcp", "AREAS": "tcp udp"}), ("quic", {"TRANSPORT": "quic", "AREAS": "tcp udp"}),
        ("x", {"TRANSPORT": "quic", "AREAS": "tcp udp", "K": "v w"})]
    assert secs[0].areas == ["tcp", "udp"]
    assert [s.name for s in config.choose(secs, ["quic"], [])] == ["quic"]
    assert [s.name for s in config.choose(secs, [], ["quic"])] == ["tcp", "x"]
    with pytest.raises(config.ConfigError):
        config.choose(secs, ["nope"], [])
    with pytest.raises(config.ConfigError, match=r"sections.conf:2:1: expected"):
        config.parse("[a]\nnot an assignment\n")
    assert config.parse("X=1\n")[0].name is None


def test_cell_globs_select_labels_inside_brackets(tmp_path):
    write(tmp_path, "tcp/001.yaml", """
        id: tcp/001
        description: x
        groups: [quick]
        matrix:
          family: [ipv4, ipv6]
          loss: [none, 5pct]
        steps:
          - sleep: {seconds: 0}
        """)
    scen = load_tree(tmp_path)
    ids = lambda *t: [c.id for c, _ in select(scen, list(t), [], [], []).cells]  # noqa: E731
    assert ids("tcp/001[ipv6-*]") == ["tcp/001[ipv6-none]", "tcp/001[ipv6-5pct]"]
    assert ids("tcp/00?[*-5pct]") == ["tcp/001[ipv4-5pct]", "tcp/001[ipv6-5pct]"]
    assert ids("tcp/001[ipv4-none]") == ["tcp/001[ipv4-none]"]
    assert select(scen, ["tcp/001[ipv7-*]"], [], [], []).unknown == ["tcp/001[ipv7-*]"]
