"""Loading: schema errors with line and column, unknown operations, duplicate ids, missing files, matrix."""
from __future__ import annotations

import pytest

from harness.scenario import ScenarioError, load_file, load_tree

from .scen import PASS, tree, write


def problems(path) -> list[str]:
    with pytest.raises(ScenarioError) as e:
        load_file(path)
    return e.value.problems


def test_unknown_top_level_key_points_at_the_key(tmp_path):
    p = write(tmp_path, "tcp/001.yaml", """
        id: tcp/001
        description: x
        groups: [quick]
        stepz: []
        steps:
          - sleep: {seconds: 0}
        """)
    assert problems(p) == [f"{p}:4:1: unknown key 'stepz' (known: description, exclude, expect, groups, id, "
                           "matrix, requires, step_timeout, steps, timeout, vars)"]


def test_wrong_type_and_bad_id_have_line_and_column(tmp_path):
    p = write(tmp_path, "tcp/001.yaml", """
        id: TCP-1
        description: x
        groups: quick
        steps:
          - sleep: {seconds: 0}
        """)
    got = problems(p)
    assert got[0].startswith(f"{p}:3:9: groups: 'quick' is not of type 'array'")
    assert got[1].startswith(f"{p}:1:5: id: 'TCP-1' does not match")


def test_operation_argument_errors_point_into_the_step(tmp_path):
    p = write(tmp_path, "tcp/001.yaml", """
        id: tcp/001
        description: x
        groups: [quick]
        steps:
          - tcp.exchange: {host: 11, to: 10, port: 99999, famly: ipv4}
        """)
    got = problems(p)
    assert any(g.startswith(f"{p}:5:51: steps[0].tcp.exchange: unknown key 'famly'") for g in got), got
    assert any(g.startswith(f"{p}:5:44: steps[0].tcp.exchange.port: 99999 is greater than the maximum") for g in got), got


def test_unknown_operation_is_an_error_with_its_position(tmp_path):
    p = write(tmp_path, "tcp/001.yaml", """
        id: tcp/001
        description: x
        groups: [quick]
        steps:
          - sleep: {seconds: 0}
          - tcp.exchang: {host: 1}
        """)
    (msg,) = problems(p)
    assert msg.startswith(f"{p}:6:5: unknown operation 'tcp.exchang' (known: ")


def test_pending_capability_operation_is_gated_not_an_error(tmp_path):
    p = write(tmp_path, "smb/001.yaml", """
        id: smb/001
        description: x
        groups: [quick]
        steps:
          - nbt.connect: {transport: nbt}
        """)
    scen = load_file(p)
    assert scen.missing_ops == {"nbt.connect"}


def test_bad_impairment_spec_is_reported_at_load(tmp_path):
    p = write(tmp_path, "udp/001.yaml", """
        id: udp/001
        description: x
        groups: [quick]
        steps:
          - impair: {host: 11, spec: "out: loss=150%"}
        """)
    (msg,) = problems(p)
    assert msg.startswith(f"{p}:5:5: steps[0].impair: impair: out.loss: '150%' is not a probability")
    assert "150%" in msg and "probability" in msg


def test_yaml_syntax_error(tmp_path):
    p = write(tmp_path, "tcp/001.yaml", "id: tcp/001\nsteps: [\n")
    (msg,) = problems(p)
    assert msg.startswith(f"{p}:3:1: YAML error")


def test_missing_pcap_checks_file(tmp_path):
    p = write(tmp_path, "tcp/001.yaml", """
        id: tcp/001
        description: x
        groups: [quick]
        steps:
          - sleep: {seconds: 0}
        expect:
          - pcap: {file: checks/none.yaml}
        """)
    (msg,) = problems(p)
    assert msg == f"{p}:7:11: expect[0].pcap.file: no such file 'checks/none.yaml'"


def test_duplicate_ids_across_files(tmp_path):
    tree(tmp_path, **{"tcp/001": PASS})
    write(tmp_path, "tcp/002.yaml", PASS.format(id="tcp/001", groups="quick"))
    with pytest.raises(ScenarioError) as e:
        load_tree(tmp_path)
    (msg,) = e.value.problems
    assert msg.startswith(f"{tmp_path / 'tcp/002.yaml'}:1:5: duplicate id 'tcp/001' (also {tmp_path / 'tcp/001.yaml'}:1)")


def test_every_problem_of_the_tree_is_reported(tmp_path):
    write(tmp_path, "tcp/001.yaml", "id: tcp/001\ndescription: x\ngroups: [q]\nsteps: []\n")
    write(tmp_path, "udp/001.yaml", "id: udp/001\ndescription: x\ngroups: [q]\nsteps: [{nope: {}}]\n")
    with pytest.raises(ScenarioError) as e:
        load_tree(tmp_path)
    assert len(e.value.problems) == 2


def test_matrix_cells_ids_exclusions_and_labels(tmp_path):
    p = write(tmp_path, "quic/012.yaml", """
        id: quic/012
        description: x
        groups: [quick]
        matrix:
          auth: [psk, cert]
          version: [v1, v2]
          family: [ipv4, ipv6]
          loss: ["0%", "5%"]
        exclude:
          - {auth: cert, version: v2}
          - {loss: "5%", family: [ipv6]}
        steps:
          - sleep: {seconds: 0}
        """)
    cells = load_file(p).cells()
    ids = [c.id for c in cells]
    assert "quic/012[psk-v2-ipv6-0pct]" in ids
    assert "quic/012[psk-v2-ipv6-5pct]" not in ids
    assert not any(i.startswith("quic/012[cert-v2") for i in ids)
    assert len(ids) == 2 * 2 * 2 * 2 - 4 - 3
    assert cells[0].file_stem == "012.psk-v1-ipv4-0pct"
    assert cells[0].values == {"auth": "psk", "version": "v1", "family": "ipv4", "loss": "0%"}


def test_exclusion_naming_an_unknown_axis_or_value(tmp_path):
    p = write(tmp_path, "tcp/001.yaml", """
        id: tcp/001
        description: x
        groups: [quick]
        matrix: {family: [ipv4, ipv6]}
        exclude:
          - {famly: ipv4}
          - {family: ipv5}
        steps:
          - sleep: {seconds: 0}
        """)
    got = problems(p)
    assert got[0] == f"{p}:6:6: exclude[0]: 'famly' is not a matrix axis"
    assert got[1] == f"{p}:7:14: exclude[1].family: 'ipv5' is not a value of the axis (values: ipv4, ipv6)"


def test_variables_keep_types_and_dotted_lookup(tmp_path):
    from harness.scenario.model import substitute

    env = {"n": 5, "family": {"name": "ipv6", "ip": "ipv6"}}
    assert substitute({"a": "${n}", "b": "port ${n}", "c": ["${family.ip} && x"]}, env) == \
        {"a": 5, "b": "port 5", "c": ["ipv6 && x"]}
    assert substitute("${later}", env) == "${later}"


def test_the_shipped_scenarios_load():
    scenarios = load_tree("scenarios")
    ids = {s.id for s in scenarios}
    assert {"tcp/001", "udp/001", "quic/001", "smb/001", "smbdirect/001"} <= ids
    assert any("quick" in s.groups for s in scenarios)


@pytest.mark.peer
def test_pcap_check_errors_point_into_the_scenario(tmp_path):
    import tsharkutil

    tsharkutil.tshark_path()
    p = write(tmp_path, "tcp/001.yaml", """
        id: tcp/001
        description: x
        groups: [quick]
        steps:
          - sleep: {seconds: 0}
        expect:
          - pcap:
              - count: {filter: "tcp.port == 1", min: 1}
              - count: {filter: "tcp.nosuchfield == 1", min: 1}
              - no.such_check
        """)
    got = problems(p)
    assert got[0] == f"{p}:9:25: unknown field 'tcp.nosuchfield' in display filter 'tcp.nosuchfield == 1'"
    assert got[1].startswith(f"{p}:10:9: unknown check 'no.such_check'")


def test_missing_script_file_is_reported_at_load(tmp_path):
    p = write(tmp_path, "tcp/001.yaml", """
        id: tcp/001
        description: x
        groups: [quick]
        steps:
          - host.run: {script: peers/missing.py, argv: [--port, 1]}
          - host.run: {host: 3}
        """)
    got = problems(p)
    assert got[0] == f"{p}:5:24: steps[0].host.run.script: no such file 'peers/missing.py'"
    assert got[1] == f"{p}:6:15: steps[1].host.run: needs one of: argv, script"


def test_on_is_a_key_not_a_boolean(tmp_path):
    """YAML 1.1 would read `on:` as True and break `smb.read: {on: c}`."""
    from harness.scenario.marks import load_yaml

    data = load_yaml("step: {on: c, flag: true, word: yes}\n", "x.yaml")
    assert dict(data["step"]) == {"on": "c", "flag": True, "word": "yes"}
