"""Step semantics in real cells: parallel groups, background steps joined by `wait`, expected outcomes,
variables from earlier results, and operations users register through $WIRECHECK_OPERATIONS."""
from __future__ import annotations

import json
import os
import textwrap

import pytest

from harness.scenario import load_file, registry
from harness.scenario.cellproc import run_isolated


def run(tmp_path, text: str, env: dict | None = None) -> dict:
    p = tmp_path / "sc/tcp/001.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(text).lstrip())
    old = dict(os.environ)
    os.environ.update(env or {})
    try:
        (cell,) = load_file(p).cells()
        return run_isolated(cell, tmp_path / "out", ladder=False)
    finally:
        os.environ.clear()
        os.environ.update(old)


SLEEPER = '[python, -c, "import time,json; time.sleep(1); print(json.dumps(dict(t=time.time())))"]'


def test_parallel_steps_overlap_and_results_flow(tmp_path):
    r = run(tmp_path, f"""
        id: tcp/001
        description: x
        groups: [quick]
        steps:
          - parallel:
              - host.run: {{argv: {SLEEPER}, as: a}}
              - host.run: {{argv: {SLEEPER}, as: b}}
              - host.run: {{argv: {SLEEPER}, as: c}}
          - host.run: {{argv: [python, -c, "import sys; sys.exit(0 if '${{a.status}}' == '0' else 1)"]}}
        """)
    assert r["status"] == "pass", r
    ts = [r["results"][k]["t"] for k in "abc"]
    assert max(ts) - min(ts) < 0.9          # they slept at the same time


def test_background_step_and_wait(tmp_path):
    r = run(tmp_path, f"""
        id: tcp/001
        description: x
        groups: [quick]
        steps:
          - host.run: {{argv: {SLEEPER}, as: bg, background: true}}
          - host.run: {{argv: [python, -c, "import time,json; print(json.dumps(dict(t=time.time())))"], as: fg}}
          - wait: {{for: bg}}
        expect:
          - value: {{of: bg.status, eq: 0}}
        """)
    assert r["status"] == "pass", r
    assert r["results"]["fg"]["t"] < r["results"]["bg"]["t"]


def test_expected_error_outcome_and_mismatch(tmp_path):
    ok = run(tmp_path, """
        id: tcp/001
        description: x
        groups: [quick]
        steps:
          - host.run: {argv: [python, -c, "raise SystemExit(4)"], as: r, expect: {outcome: error}}
        expect:
          - value: {of: r.status, eq: 4}
        """)
    assert ok["status"] == "pass", ok
    bad = run(tmp_path, """
        id: tcp/001
        description: x
        groups: [quick]
        steps:
          - host.run: {argv: [python, -c, "pass"], expect: {outcome: error}}
        """)
    assert bad["status"] == "fail"
    assert bad["reason"] == "step 0 host.run (001.yaml:5): expected an error, but the operation succeeded"


def test_tcp_connection_refused_is_an_expected_errno(tmp_path):
    r = run(tmp_path, """
        id: tcp/001
        description: nobody listens on 10:7999
        groups: [quick]
        steps:
          - tcp.exchange: {host: 11, to: 10, port: 7999, size: 10, as: c, expect: {errno: EHOSTUNREACH}}
        expect:
          - value: {of: c.sent, eq: 0}
        """)
    assert r["status"] == "pass", r


def test_user_operation_from_environment(tmp_path):
    mod = tmp_path / "mods/myops.py"
    mod.parent.mkdir()
    mod.write_text(textwrap.dedent("""
        from harness.scenario import operation, OpError

        @operation("my.double", schema={"type": "object", "required": ["n"],
                                        "properties": {"n": {"type": "integer"}, "as": {"type": "string"}}})
        def double(ctx, args):
            '''Twice n (a user's operation).'''
            if args["n"] < 0:
                raise OpError("negative", errno="EINVAL")
            return {"value": 2 * args["n"]}
    """))
    env = {"WIRECHECK_OPERATIONS": "myops", "PYTHONPATH": f"{mod.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    import sys
    sys.path.insert(0, str(mod.parent))
    saved = registry._discovered
    registry._discovered = False
    os.environ["WIRECHECK_OPERATIONS"] = "myops"
    try:
        r = run(tmp_path, """
            id: tcp/001
            description: x
            groups: [quick]
            steps:
              - my.double: {n: 21, as: d}
              - my.double: {n: -1, expect: {errno: EINVAL}}
            expect:
              - value: {of: d.value, eq: 42}
            """, env)
        assert r["status"] == "pass", r
        assert registry.get("my.double").help == "Twice n (a user's operation)."
        with pytest.raises(ValueError, match="registered twice"):
            registry.operation("my.double")(lambda ctx, args: None)
    finally:
        os.environ.pop("WIRECHECK_OPERATIONS", None)
        sys.path.remove(str(mod.parent))
        registry._discovered = saved


def test_result_record_is_json(tmp_path):
    run(tmp_path, """
        id: tcp/001
        description: x
        groups: [quick]
        steps:
          - sleep: {seconds: 0}
        """)
    rec = json.loads((tmp_path / "out/001.json").read_text())
    assert rec["status"] == "pass" and rec["step"] == ""


WHEN = """
id: tcp/001
description: x
groups: [quick]
matrix:
  mode: [a, b]
steps:
  - host.run: {argv: [python, -c, "import json; print(json.dumps(dict(v=1)))"], as: r}
expect:
  - value: {of: r.v, eq: 1}
  - when: {mode: a}
    value: {of: r.v, eq: 2}
  - when: {SECTION_VAR: ["on", ""]}
    value: {of: r.v, eq: 3}
"""


def test_when_limits_an_expectation_to_matching_cells(tmp_path):
    p = tmp_path / "sc/tcp/001.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(WHEN)
    a, b = load_file(p).cells()
    ra = run_isolated(a, tmp_path / "out", ladder=False, section_vars={"SECTION_VAR": "off"})
    assert ra["status"] == "fail" and ra["details"] == ["expect[1] value (001.yaml:11): r.v is 1, expected eq 2"]
    rb = run_isolated(b, tmp_path / "out", ladder=False, section_vars={"SECTION_VAR": "off"})
    assert rb["status"] == "pass", rb
    rb = run_isolated(b, tmp_path / "out", ladder=False)          # unset counts as ""
    assert rb["status"] == "fail" and rb["reason"].startswith("expect[2] value (001.yaml:13)")


def test_when_needs_an_expectation_beside_it(tmp_path):
    from harness.scenario import ScenarioError

    p = tmp_path / "sc/tcp/001.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(WHEN.replace("    value: {of: r.v, eq: 2}\n", "").replace("- when: {mode: a}", "- when: {mode: a}"))
    with pytest.raises(ScenarioError) as e:
        load_file(p)
    assert e.value.problems[0].startswith(f"{p}:11:5: expect[1]:")


def test_when_list_is_any_of(tmp_path):
    from harness.scenario.model import expect_applies

    p = tmp_path / "sc/tcp/001.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(WHEN)
    a, b = load_file(p).cells()
    item = {"when": [{"mode": "a", "X": "1"}, {"mode": "b"}], "value": {}}
    assert not expect_applies(item, a, {"X": "2"}) and expect_applies(item, a, {"X": "1"})
    assert expect_applies(item, b, {})
    assert not expect_applies({"when": [{"mode": "c"}], "value": {}}, b, {})


def test_processes_get_absolute_capture_paths_with_a_relative_results_dir(tmp_path, monkeypatch):
    """`wirecheck check` from a checkout writes under the relative `results/`, while the cell's
    processes run in its work directory (and so do the QUIC daemons their first socket starts): the
    pcap and key log names they get must be absolute (a native QUIC server's daemon could not open
    the relative key log, its TLS never answered the ClientHello, and the client hung 60 s)."""
    p = tmp_path / "sc/tcp/001.yaml"
    p.parent.mkdir(parents=True)
    p.write_text(textwrap.dedent("""
        id: tcp/001
        description: x
        groups: [quick]
        steps:
          - host.run: {host: 11, as: e, argv: [python, -c, "import os, json; print(json.dumps({k: os.environ[k] for k in ('SOCKET_WRAPPER_PCAP_FILE', 'SSLKEYLOGFILE', 'WIRECHECK_SMB_KEYS')}))"]}
        """).lstrip())
    monkeypatch.chdir(tmp_path)
    (cell,) = load_file(p).cells()
    r = run_isolated(cell, "results", ladder=False)
    assert r["status"] == "pass", r
    paths = [r["results"]["e"][k] for k in ("SOCKET_WRAPPER_PCAP_FILE", "SSLKEYLOGFILE", "WIRECHECK_SMB_KEYS")]
    assert all(os.path.isabs(x) and x.startswith(str(tmp_path / "results")) for x in paths), paths
