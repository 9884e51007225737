"""Impairments: the spec (string and file), the deciders (reproducible, statistically right) and the
process-wide config (override, env, file re-read)."""

from __future__ import annotations

import os
import random
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wrappers import impair
from wrappers.impair import (
    Cut,
    DatagramImpairer,
    DirectionRules,
    ImpairSpecError,
    RebindEvent,
    Selector,
    StreamFate,
    StreamImpairer,
    Window,
)


@pytest.fixture(autouse=True)
def clean_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(impair.ENV_SPEC, raising=False)
    monkeypatch.delenv(impair.ENV_FILE, raising=False)
    impair.reset()
    yield
    impair.reset()


def out_rules(spec: str) -> DirectionRules:
    config = impair.parse(f"out: {spec}")
    assert config is not None and config.rules[0].out is not None
    return config.rules[0].out


def run(imp: DatagramImpairer, n: int, step: float = 0.001, size: int = 32) -> list[impair.Fate]:
    payloads = random.Random(1234)
    return [imp.decide(i * step, payloads.randbytes(size)) for i in range(n)]


def loss_runs(fates: list[impair.Fate]) -> list[int]:
    runs, current = [], 0
    for f in fates:
        if f.dropped:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    if current:
        runs.append(current)
    return runs


# ==================================================================================================
# Parser: every field
# ==================================================================================================

EXAMPLE = (
    "seed=42; out: loss=10% burst=4 drop=3,7-9 dup=1% reorder=2% reorder_delay=15ms delay=20ms "
    "jitter=5ms corrupt=0.5% blackhole=2s+1s,10s+500ms rebind=port@100 ; in: loss=5% ; match: udp:443"
)


def test_example_spec_parses() -> None:
    config = impair.parse(EXAMPLE)
    assert config is not None
    assert config.seed == 42
    (rule,) = config.rules
    assert rule.match == (Selector("udp", 443),)
    assert rule.out == DirectionRules(
        direction="out",
        loss=0.10,
        burst=4.0,
        drop=((3, 3), (7, 9)),
        dup=0.01,
        reorder=0.02,
        reorder_delay=0.015,
        delay=0.020,
        jitter=0.005,
        corrupt=0.005,
        blackhole=(Window(2.0, 1.0), Window(10.0, 0.5)),
        rebind=(RebindEvent("port", index=100),),
    )
    assert rule.in_ == DirectionRules(direction="in", loss=0.05)


@pytest.mark.parametrize(
    ("field", "text", "expected"),
    [
        ("loss", "10%", 0.1),
        ("loss", "0.25", 0.25),
        ("loss", "0.5%", 0.005),
        ("loss", "100%", 1.0),
        ("loss", "0", 0.0),
        ("dup", "1%", 0.01),
        ("reorder", "2.5%", 0.025),
        ("corrupt", "0.001", 0.001),
        ("drop", "0", ((0, 0),)),
        ("drop", "3,7-9,20", ((3, 3), (7, 9), (20, 20))),
        ("delay", "20ms", 0.02),
        ("delay", "1.5s", 1.5),
        ("delay", "250us", 0.00025),
        ("delay", "0", 0.0),
        ("jitter", ".5ms", 0.0005),
        ("reorder_delay", "15ms", 0.015),
        ("blackhole", "2s+1s", (Window(2.0, 1.0),)),
        ("blackhole", "0+500ms,10s+2s", (Window(0.0, 0.5), Window(10.0, 2.0))),
        ("rebind", "port@100", (RebindEvent("port", index=100),)),
        ("rebind", "addr@0,both@2.5s", (RebindEvent("addr", index=0), RebindEvent("both", at=2.5))),
        ("cut", "rst@100000", Cut("rst", after_bytes=100000)),
        ("cut", "blackhole@64KiB", Cut("blackhole", after_bytes=65536)),
        ("cut", "rst@1MB", Cut("rst", after_bytes=1_000_000)),
        ("cut", "rst@3s", Cut("rst", at=3.0)),
        ("cut", "rst@0", Cut("rst", after_bytes=0)),
    ],
)
def test_every_field_parses(field: str, text: str, expected: object) -> None:
    assert getattr(out_rules(f"{field}={text}"), field) == expected


def test_burst_parses_with_loss() -> None:
    r = out_rules("loss=10% burst=2.5")
    assert (r.loss, r.burst) == (0.1, 2.5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("udp", (Selector("udp", None),)),
        ("tcp:445", (Selector("tcp", 445),)),
        ("443", (Selector(None, 443),)),
        ("udp:443, tcp:445", (Selector("udp", 443), Selector("tcp", 445))),
    ],
)
def test_match_selectors(text: str, expected: tuple[Selector, ...]) -> None:
    config = impair.parse(f"match: {text}; out: delay=1ms")
    assert config is not None and config.rules[0].match == expected


def test_blank_spec_is_no_impairment() -> None:
    assert impair.parse("") is None
    assert impair.parse("  ;  ") is not None  # clauses but no rules: a config with no rule sets
    assert impair.parse("  ;  ").rules == ()  # type: ignore[union-attr]


def test_empty_section_and_default_seed() -> None:
    config = impair.parse("in:")
    assert config is not None and config.seed == 0
    assert config.rules[0].in_ == DirectionRules(direction="in")
    assert config.rules[0].out is None


def test_several_rule_sets_first_match_per_direction() -> None:
    config = impair.parse(
        "seed=7; match: tcp:445; out: cut=rst@1MiB | match: udp; out: loss=5% | in: delay=10ms"
    )
    assert config is not None and len(config.rules) == 3
    tcp_out = config.rules_for("tcp", 50000, 445, "out")
    assert tcp_out is not None and tcp_out.cut == Cut("rst", after_bytes=2**20)
    udp_out = config.rules_for("udp", 50000, 443, "out")
    assert udp_out is not None and udp_out.loss == 0.05
    assert config.rules_for("tcp", 50000, 80, "out") is None
    # No rule set before the third has "in:", so every flow gets the incoming delay.
    for proto, port in [("tcp", 445), ("udp", 443), ("tcp", 80)]:
        d = config.rules_for(proto, 1234, port, "in")
        assert d is not None and d.delay == 0.01


def test_port_matches_local_or_remote() -> None:
    config = impair.parse("match: udp:443; out: loss=1%")
    assert config is not None
    assert config.rules_for("udp", 443, 50000, "out") is not None  # server side
    assert config.rules_for("udp", 50000, 443, "out") is not None  # client side
    assert config.rules_for("udp", 50000, 53, "out") is None
    assert config.rules_for("tcp", 50000, 443, "out") is None


def test_empty_section_exempts_matching_flows() -> None:
    config = impair.parse("match: udp:53; out: | out: loss=50%")
    assert config is not None
    exempt = config.rules_for("udp", 1, 53, "out")
    assert exempt is not None and not exempt.affects_datagrams()
    other = config.rules_for("udp", 1, 443, "out")
    assert other is not None and other.loss == 0.5


# ==================================================================================================
# Parser: every malformed field names itself and its value
# ==================================================================================================

BAD_SPECS = [
    ("out: loss=150%", "out.loss: '150%' is not a probability between 0% and 100%"),
    ("out: loss=-1%", "out.loss: '-1%'"),
    ("out: loss=10", "out.loss: '10' is not a probability"),
    ("out: loss=abc", "out.loss: 'abc'"),
    ("out: loss=nan", "out.loss: 'nan'"),
    ("out: loss=", "out.loss: ''"),
    ("out: dup=2", "out.dup: '2'"),
    ("out: reorder=x%", "out.reorder: 'x%'"),
    ("out: corrupt=101%", "out.corrupt: '101%'"),
    ("out: burst=4", "out.burst: '4' has no effect without loss"),
    ("out: loss=10% burst=0.5", "out.burst: '0.5' is not a mean burst length"),
    ("out: loss=10% burst=inf", "out.burst: 'inf'"),
    ("out: loss=80% burst=2", "out.burst: '2' is too short for loss=80%"),
    ("out: drop=3,x", "out.drop: '3,x'"),
    ("out: drop=9-7", "out.drop: '9-7' has a backwards range"),
    ("out: drop=1,,2", "out.drop: '1,,2'"),
    ("out: drop=-1", "out.drop: '-1'"),
    ("out: delay=20", "out.delay: '20' needs a unit"),
    ("out: delay=20min", "out.delay: '20min' is not a duration"),
    ("out: jitter=-5ms", "out.jitter: '-5ms'"),
    ("out: reorder_delay=fast", "out.reorder_delay: 'fast'"),
    ("out: blackhole=2s", "out.blackhole: '2s' is not a list of START+DURATION"),
    ("out: blackhole=2s+1", "out.blackhole: '2s+1' has a bad window"),
    ("out: blackhole=2s+1s,x+1s", "out.blackhole: '2s+1s,x+1s'"),
    ("out: rebind=ip@3", "out.rebind: 'ip@3'"),
    ("out: rebind=port", "out.rebind: 'port'"),
    ("out: rebind=port@soon", "out.rebind: 'port@soon'"),
    ("in: rebind=port@3", "in.rebind: 'port@3' is only possible in out:"),
    ("out: cut=rst", "out.cut: 'rst'"),
    ("out: cut=fin@100", "out.cut: 'fin@100'"),
    ("out: cut=rst@lots", "out.cut: 'rst@lots'"),
    ("out: cut=rst@10XB", "out.cut: 'rst@10XB'"),
    ("out: lose=10%", "out.lose: unknown field"),
    ("out: loss=1% loss=2%", "out.loss: '2%' is a second value"),
    ("out: loss10%", "out: 'loss10%' is not name=value"),
    ("out: loss=1%; out: dup=1%", "out: section given twice"),
    ("loss=10%", "loss: 'loss=10%' is outside a section"),
    ("inn: loss=1%", "'inn: loss=1%' is not a clause"),
    ("seed=abc; out: loss=1%", "seed: 'abc' is not an integer seed"),
    ("seed=1; seed=2", "seed: '2' is a second seed"),
    ("match: sctp; out: loss=1%", "match: 'sctp' is not a selector"),
    ("match: udp:99999; out: loss=1%", "match: 'udp:99999' has a port above 65535"),
    ("match: udp,; out: loss=1%", "match: 'udp,'"),
    ("match: udp", "match: 'udp' has no out: or in: section"),
    ("match: udp; match: tcp; out: delay=1ms", "match: 'tcp' is a second match"),
    ("match: tcp; out: loss=1%", "out.loss: '1%' applies to datagrams, but this rule set matches only tcp"),
    ("match: tcp:445; in: drop=1", "in.drop: '1' applies to datagrams"),
    ("match: udp; out: cut=rst@1", "out.cut: 'rst@1' applies to streams, but this rule set matches only udp"),
    ("out: delay=1ms | out: loss=2", "rules[1].out.loss: '2'"),
    ("out: delay=1ms | match: x; out: loss=1%", "rules[1].match: 'x'"),
]


@pytest.mark.parametrize(("spec", "message"), BAD_SPECS, ids=[s for s, _ in BAD_SPECS])
def test_malformed_spec_names_field_and_value(spec: str, message: str) -> None:
    with pytest.raises(ImpairSpecError) as info:
        impair.parse(spec)
    text = str(info.value)
    assert text.startswith("WIRECHECK_IMPAIR: "), text
    assert message in text, text


def test_error_attributes() -> None:
    with pytest.raises(ImpairSpecError) as info:
        impair.parse("seed=1; out: loss=150%")
    e = info.value
    assert (e.source, e.field, e.value, e.line) == ("WIRECHECK_IMPAIR", "out.loss", "150%", None)
    assert isinstance(e, ValueError)
    assert str(e) == "WIRECHECK_IMPAIR: out.loss: '150%' is not a probability between 0% and 100%"


# ==================================================================================================
# File form
# ==================================================================================================

YAML_EXAMPLE = """\
seed: 42
rules:
  - match: [udp:443]
    out:
      loss: 10%
      burst: 4
      drop: [3, 7-9]
      dup: 1%
      reorder: 2%
      reorder_delay: 15ms
      delay: 20ms
      jitter: 5ms
      corrupt: 0.5%
      blackhole: [2s+1s, 10s+500ms]
      rebind: port@100
    in: {loss: 5%}
"""


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_yaml_file_equals_string_form(tmp_path: Path) -> None:
    from_file = impair.load_file(_write(tmp_path, "impair.yaml", YAML_EXAMPLE))
    from_string = impair.parse(EXAMPLE)
    assert from_file is not None and from_string is not None
    assert (from_file.seed, from_file.rules) == (from_string.seed, from_string.rules)


def test_yaml_single_rule_at_top_level(tmp_path: Path) -> None:
    config = impair.load_file(
        _write(tmp_path, "one.yaml", "match: tcp:445\nout: {cut: rst@64KiB, delay: 5ms}\n")
    )
    assert config is not None and config.seed == 0
    assert config.rules[0].out == DirectionRules(
        direction="out", delay=0.005, cut=Cut("rst", after_bytes=65536)
    )


def test_json_file(tmp_path: Path) -> None:
    text = '{"seed": 3, "rules": [{"match": "udp", "out": {"loss": 0.1, "drop": [1, "4-5"]}}]}'
    config = impair.load_file(_write(tmp_path, "impair.json", text))
    assert config is not None and config.seed == 3
    assert config.rules[0].out == DirectionRules(direction="out", loss=0.1, drop=((1, 1), (4, 5)))


def test_empty_file_is_no_impairment(tmp_path: Path) -> None:
    assert impair.load_file(_write(tmp_path, "empty.yaml", "")) is None


BAD_FILES = [
    ("seed: 1\nout:\n  loss: 150%\n", 3, "out.loss: '150%' is not a probability"),
    ("rules:\n  - match: udp\n    out:\n      delay: 20\n", 4, "rules[0].out.delay: '20' needs a unit"),
    ("rules:\n  - out: {dup: 1%}\n  - out:\n      drop: [1, x]\n", 4, "rules[1].out.drop: '1,x'"),
    ("seed: [1]\n", 1, "seed: [1] is not an integer seed"),
    ("seed: 1\nloss: 5%\n", 2, "loss: unknown key"),
    ("rules:\n  - match: tcp\n    outt: {loss: 1%}\n", 3, "rules[0].outt: unknown key"),
    ("rules: {out: 1}\n", 1, "rules: {'out': 1} is not a list"),
    ("out: {loss: [1]}\n", 1, "out.loss: [1] is not a scalar"),
    ("out: {loss: true}\n", 1, "out.loss: True is not a valid value"),
    ("out: 5\n", 1, "out: 5 is not a mapping of fields"),
    ("\n\nrules:\n  - match: udp\n", 4, "rules[0]: has no out: or in: section"),
    ("out:\n  loss: 10%\n  bogus: 1\n", 3, "out.bogus: unknown field"),
    ("out: {loss: 10%\n", 2, "not valid YAML/JSON"),
    ("- 1\n- 2\n", 1, "[1, 2] is not a mapping"),
]


@pytest.mark.parametrize(("text", "line", "message"), BAD_FILES)
def test_file_errors_carry_file_and_line(tmp_path: Path, text: str, line: int | None, message: str) -> None:
    path = _write(tmp_path, "bad.yaml", text)
    with pytest.raises(ImpairSpecError) as info:
        impair.load_file(path)
    where = f"{path}:{line}: " if line is not None else f"{path}: "
    assert str(info.value).startswith(where), str(info.value)
    assert message in str(info.value)
    assert info.value.line == line


def test_configure_with_mapping() -> None:
    config = impair.configure({"seed": 5, "out": {"loss": "10%"}})
    assert config is not None and config.seed == 5 and config.source == "configure()"
    with pytest.raises(ImpairSpecError, match=r"^configure\(\): out.dup: '200%'"):
        impair.configure({"out": {"dup": "200%"}})


# ==================================================================================================
# Reproducibility
# ==================================================================================================

FIELD_VALUES = {
    "loss": ["0", "5%", "30%", "100%"],
    "burst": ["1", "3", "10"],
    "drop": ["0", "3,7-9", "1-40"],
    "dup": ["10%", "50%", "100%"],
    "reorder": ["10%", "60%"],
    "reorder_delay": ["1ms", "30ms"],
    "delay": ["0", "5ms", "50ms"],
    "jitter": ["1ms", "20ms"],
    "corrupt": ["5%", "100%"],
    "blackhole": ["10ms+20ms", "0+5ms,50ms+1ms"],
    "rebind": ["port@3", "addr@5ms,both@10"],
}


@st.composite
def datagram_specs(draw: st.DrawFn) -> str:
    names = draw(st.sets(st.sampled_from(sorted(FIELD_VALUES)), min_size=1))
    if "burst" in names:
        names.add("loss")
    fields = {n: draw(st.sampled_from(FIELD_VALUES[n])) for n in names}
    if "burst" in fields and fields["loss"] in ("0", "100%"):
        fields["loss"] = "30%"
    return " ".join(f"{k}={v}" for k, v in fields.items())


def _fates(spec: str, seed: int, key: str, n: int = 60) -> list[tuple[object, ...]]:
    imp = DatagramImpairer(out_rules(spec), seed, key, epoch=0.0)
    return [(f.record(), tuple(d.payload for d in f.deliveries)) for f in run(imp, n, step=0.0007)]


@settings(max_examples=150, deadline=None)
@given(
    spec=datagram_specs(),
    seed=st.integers(min_value=0, max_value=2**64),
    key=st.text(st.characters(), max_size=20),
)
def test_same_seed_same_fates_twice(spec: str, seed: int, key: str) -> None:
    assert _fates(spec, seed, key) == _fates(spec, seed, key)


def test_same_seed_same_fates_across_processes() -> None:
    # random.Random(str) must not depend on PYTHONHASHSEED: compare with a child interpreter.
    import subprocess
    import sys

    code = (
        "from wrappers.impair import DatagramImpairer, parse\n"
        "r = parse('out: loss=30% burst=2 dup=20% corrupt=20% delay=5ms jitter=4ms').rules[0].out\n"
        "imp = DatagramImpairer(r, 99, 'udp a>b', epoch=0.0)\n"
        "for i in range(300): imp.decide(i * 0.001, bytes(range(40)))\n"
        "print(repr([(h.index, h.deliveries, h.reasons) for h in imp.history]))\n"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": str(hs)},
            cwd=Path(__file__).resolve().parent.parent,
        ).stdout
        for hs in (1, 2)
    }
    assert len(outs) == 1 and "loss" in outs.pop()


def test_different_seeds_differ() -> None:
    spec = "loss=30% dup=20% delay=10ms jitter=5ms corrupt=10%"
    by_seed = {repr(_fates(spec, seed, "k", n=100)) for seed in range(10)}
    assert len(by_seed) == 10


def test_different_stream_keys_and_directions_differ() -> None:
    spec = "loss=30%"
    assert _fates(spec, 1, "udp a>b", 100) != _fates(spec, 1, "udp a>c", 100)
    r_out = out_rules(spec)
    r_in = DirectionRules(direction="in", loss=0.3)
    a = [f.dropped for f in run(DatagramImpairer(r_out, 1, "k"), 200)]
    b = [f.dropped for f in run(DatagramImpairer(r_in, 1, "k"), 200)]
    assert a != b


def test_independent_streams_do_not_perturb_each_other() -> None:
    spec = "loss=20% burst=3 dup=10% reorder=10% jitter=5ms delay=5ms corrupt=5%"
    impair.configure(f"seed=5; out: {spec}")
    a = impair.impairer_for("udp", ("127.0.0.1", 1000), ("127.0.0.2", 443), "out")
    b = impair.impairer_for("udp", ("127.0.0.1", 1001), ("127.0.0.2", 443), "out")
    c = impair.impairer_for("udp", ("127.0.0.1", 1000), ("127.0.0.2", 443), "in")
    assert isinstance(a, DatagramImpairer) and isinstance(b, DatagramImpairer)
    assert c is None  # no in: section
    assert a.stream_key != b.stream_key
    times = [a.epoch + i * 0.0007 for i in range(300)]  # type: ignore[operator]
    payloads = [random.Random(i).randbytes(32) for i in range(300)]

    solo = DatagramImpairer(a.rules, 5, a.stream_key, epoch=a.epoch)
    expected = [solo.decide(t, p) for t, p in zip(times, payloads, strict=True)]
    # The same flow, interleaved irregularly with another flow of the same process config.
    noise = random.Random(0)
    got = []
    for t, p in zip(times, payloads, strict=True):
        for _ in range(noise.randrange(4)):
            b.decide(t, noise.randbytes(20))
        got.append(a.decide(t, p))
    assert got == expected
    # ...and the other flow has its own random streams, not a copy of this one.
    n = min(len(b.history), 100)
    assert [f.dropped for f in got[:n]] != [not r.deliveries for r in list(b.history)[:n]]


def test_adding_an_aspect_does_not_change_the_loss_pattern() -> None:
    base = [f.dropped for f in run(DatagramImpairer(out_rules("loss=20% burst=2"), 3, "k"), 500)]
    more = [
        f.dropped
        for f in run(
            DatagramImpairer(out_rules("loss=20% burst=2 dup=30% corrupt=10% jitter=3ms"), 3, "k"), 500
        )
    ]
    assert base == more


# ==================================================================================================
# Statistics and exact behaviours (fake clock)
# ==================================================================================================


@pytest.mark.parametrize("seed", range(3))
def test_gilbert_elliott_loss_rate_and_burst_length(seed: int) -> None:
    fates = run(DatagramImpairer(out_rules("loss=10% burst=4"), seed, "stat"), 20000)
    rate = sum(f.dropped for f in fates) / len(fates)
    assert 0.08 <= rate <= 0.12, rate
    runs = loss_runs(fates)
    mean_burst = sum(runs) / len(runs)
    assert 3.4 <= mean_burst <= 4.6, mean_burst
    assert all(f.reasons == ("loss",) for f in fates if f.dropped)


def test_independent_losses_without_burst() -> None:
    fates = run(DatagramImpairer(out_rules("loss=10%"), 0, "stat"), 20000)
    rate = sum(f.dropped for f in fates) / len(fates)
    assert 0.09 <= rate <= 0.11, rate
    runs = loss_runs(fates)
    assert 1.05 <= sum(runs) / len(runs) <= 1.18  # 1/(1-p) = 1.11 for independent losses


def test_loss_extremes() -> None:
    assert all(f.dropped for f in run(DatagramImpairer(out_rules("loss=100%"), 0, "k"), 300))
    assert all(f.dropped for f in run(DatagramImpairer(out_rules("loss=100% burst=3"), 0, "k"), 300))
    assert not any(f.dropped for f in run(DatagramImpairer(out_rules("loss=0 delay=1ms"), 0, "k"), 300))


def test_drop_list_drops_exactly_those_indices() -> None:
    fates = run(DatagramImpairer(out_rules("drop=0,3,7-9,50"), 0, "k"), 100)
    assert [f.index for f in fates if f.dropped] == [0, 3, 7, 8, 9, 50]
    assert all(f.reasons == ("drop-list",) for f in fates if f.dropped)


def test_drop_list_adds_to_loss() -> None:
    with_list = run(DatagramImpairer(out_rules("loss=10% drop=5-9"), 0, "k"), 200)
    without = run(DatagramImpairer(out_rules("loss=10%"), 0, "k"), 200)
    assert {f.index for f in with_list if f.dropped} == {f.index for f in without if f.dropped} | set(
        range(5, 10)
    )


def test_dup_gives_two_deliveries() -> None:
    fates = run(DatagramImpairer(out_rules("dup=100%"), 0, "k"), 50)
    for f in fates:
        assert len(f.deliveries) == 2 and "dup" in f.reasons
        assert f.deliveries[0].payload == f.deliveries[1].payload
    some = run(DatagramImpairer(out_rules("dup=30%"), 0, "k"), 5000)
    share = sum(len(f.deliveries) == 2 for f in some) / 5000
    assert 0.27 <= share <= 0.33


def test_corrupt_changes_exactly_one_byte() -> None:
    imp = DatagramImpairer(out_rules("corrupt=100%"), 0, "k")
    rng = random.Random(9)
    for i in range(500):
        payload = rng.randbytes(rng.randrange(1, 64))
        (d,) = imp.decide(i * 0.001, payload).deliveries
        assert d.corrupted and len(d.payload) == len(payload)
        assert sum(a != b for a, b in zip(d.payload, payload, strict=True)) == 1
    # An empty datagram has no byte to corrupt.
    (d,) = imp.decide(1.0, b"").deliveries
    assert not d.corrupted and d.payload == b""


def test_corrupt_rate() -> None:
    fates = run(DatagramImpairer(out_rules("corrupt=5%"), 0, "k"), 10000)
    share = sum(f.deliveries[0].corrupted for f in fates) / 10000
    assert 0.04 <= share <= 0.06
    assert all(("corrupt" in f.reasons) == f.deliveries[0].corrupted for f in fates)


def test_blackhole_windows_drop_exactly_inside() -> None:
    epoch = 100.0
    imp = DatagramImpairer(out_rules("blackhole=2s+1s,10s+500ms"), 0, "k", epoch=epoch)
    for ms in range(0, 12000, 10):
        t = ms / 1000
        f = imp.decide(epoch + t, b"x")
        inside = 2.0 <= t < 3.0 or 10.0 <= t < 10.5
        assert f.dropped == inside, t
        if inside:
            assert f.reasons == ("blackhole",)


def test_blackhole_epoch_defaults_to_first_datagram() -> None:
    imp = DatagramImpairer(out_rules("blackhole=0+1s"), 0, "k")
    assert imp.decide(50.0, b"x").dropped
    assert imp.decide(50.999, b"x").dropped
    assert not imp.decide(51.0, b"x").dropped


def test_delay_only_keeps_fifo() -> None:
    imp = DatagramImpairer(out_rules("delay=20ms jitter=15ms"), 0, "k")
    fates = run(imp, 3000, step=0.001)
    ats = [f.deliveries[0].at for f in fates]
    assert ats == sorted(ats)
    assert min(f.deliveries[0].at - f.now for f in fates) >= 0.005 - 1e-9
    # Spaced wider than the jitter range, FIFO never binds and the delays spread over [5ms, 35ms].
    spaced = run(DatagramImpairer(out_rules("delay=20ms jitter=15ms"), 0, "k"), 500, step=0.05)
    delays = [f.deliveries[0].at - f.now for f in spaced]
    assert 0.005 - 1e-9 <= min(delays) < 0.007 and 0.033 < max(delays) <= 0.035 + 1e-9
    # Without reorder there are no reorder reasons.
    assert not any("reorder" in f.reasons for f in fates)


def test_delay_without_jitter_is_exact() -> None:
    imp = DatagramImpairer(out_rules("delay=20ms"), 0, "k")
    for f in run(imp, 100):
        assert f.deliveries[0].at == pytest.approx(f.now + 0.020)


def test_reorder_produces_overtakes() -> None:
    imp = DatagramImpairer(out_rules("reorder=10% reorder_delay=15ms"), 0, "k")
    fates = run(imp, 2000, step=0.001)
    held = [f for f in fates if "reorder" in f.reasons]
    assert 150 <= len(held) <= 250
    for f in held:
        assert f.deliveries[0].at == pytest.approx(f.now + 0.015)
    order = sorted(range(len(fates)), key=lambda i: (fates[i].deliveries[0].at, i))
    overtaken = sum(1 for pos, i in enumerate(order) if any(j < i for j in order[pos + 1 :]))
    assert overtaken > 0
    # Datagrams that were not held stay in order among themselves.
    normal = [f.deliveries[0].at for f in fates if "reorder" not in f.reasons]
    assert normal == sorted(normal)


def test_no_reorder_no_overtakes_with_dup_and_jitter() -> None:
    fates = run(DatagramImpairer(out_rules("dup=30% delay=5ms jitter=5ms"), 0, "k"), 2000)
    ats = [d.at for f in fates for d in f.deliveries]
    assert ats == sorted(ats)


def test_rebind_by_index_and_time() -> None:
    imp = DatagramImpairer(out_rules("rebind=port@3,addr@3,port@2.5s,addr@7"), 0, "k", epoch=0.0)
    fates = [imp.decide(i * 0.5, b"x") for i in range(12)]
    assert {f.index: f.rebind for f in fates if f.rebind} == {3: "both", 5: "port", 7: "addr"}


def test_rebind_happens_even_when_dropped() -> None:
    imp = DatagramImpairer(out_rules("rebind=port@2 drop=2"), 0, "k")
    f = [imp.decide(i, b"x") for i in range(4)][2]
    assert f.dropped and f.rebind == "port"


def test_history_is_payload_free_and_printable() -> None:
    imp = DatagramImpairer(out_rules("drop=1 delay=10ms dup=100%"), 0, "k")
    run(imp, 3)
    assert [r.index for r in imp.history] == [0, 1, 2]
    assert str(imp.history[1]) == "#1 dropped [drop-list]"
    assert str(imp.history[0]).startswith("#0 +10.0ms, +10.0ms [dup]")


def test_update_keeps_counters() -> None:
    imp = DatagramImpairer(out_rules("drop=5"), 0, "k")
    run(imp, 3)
    imp.update(out_rules("drop=4"), epoch=0.0)
    fates = [imp.decide(1.0, b"x") for _ in range(3)]
    assert [(f.index, f.dropped) for f in fates] == [(3, False), (4, True), (5, False)]


# -- streams ---------------------------------------------------------------------------------------


def test_stream_cut_after_bytes() -> None:
    s = StreamImpairer(out_rules("cut=rst@100000"), 0, "tcp a>b")
    got = [s.on_send(i * 0.01, 30000) for i in range(6)]
    assert [f.allowed for f in got] == [30000, 30000, 30000, 10000, 0, 0]
    assert [f.cut for f in got] == [None, None, None, "rst", "rst", "rst"]
    assert s.total == 100000


def test_stream_cut_exactly_at_boundary() -> None:
    s = StreamImpairer(out_rules("cut=blackhole@64KiB"), 0, "k")
    assert s.on_send(0.0, 65536) == StreamFate(65536, 0.0, "blackhole")
    assert s.on_send(0.1, 1) == StreamFate(0, 0.0, "blackhole")


def test_stream_cut_at_time() -> None:
    s = StreamImpairer(out_rules("cut=rst@3s"), 0, "k", epoch=10.0)
    assert s.cut_deadline == 13.0
    assert s.on_send(12.999, 100) == StreamFate(100, 0.0, None)
    assert s.on_send(13.0, 100) == StreamFate(0, 0.0, "rst")
    assert s.cut_deadline is None


def test_stream_delay_fifo_with_jitter() -> None:
    s = StreamImpairer(out_rules("delay=20ms jitter=10ms"), 0, "k")
    ends = []
    for i in range(1000):
        f = s.on_send(i * 0.001, 100)
        assert f.allowed == 100 and f.cut is None and f.delay >= 0
        ends.append(i * 0.001 + f.delay)
    assert ends == sorted(ends)
    assert len({round(e - i * 0.001, 6) for i, e in enumerate(ends)}) > 10


def test_stream_same_seed_same_fates() -> None:
    def go(seed: int) -> list[StreamFate]:
        s = StreamImpairer(out_rules("delay=5ms jitter=5ms cut=rst@5000"), seed, "k")
        return [s.on_send(i * 0.002, 97) for i in range(80)]

    assert go(1) == go(1)
    assert go(1) != go(2)


# ==================================================================================================
# Process-wide configuration
# ==================================================================================================

L, R = ("127.0.0.1", 40000), ("127.0.0.2", 443)


def test_nothing_configured_is_none_and_cheap() -> None:
    assert impair.current() is None
    assert impair.impairer_for("udp", L, R, "out") is None
    n = 20000
    t0 = time.perf_counter()
    for _ in range(n):
        impair.impairer_for("udp", L, R, "out")
    per_call = (time.perf_counter() - t0) / n
    assert per_call < 20e-6, per_call  # a couple of dict look-ups (~1 us); generous for slow CI


def test_env_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(impair.ENV_SPEC, "seed=3; out: loss=50%")
    config = impair.current()
    assert config is not None and config.seed == 3
    assert impair.current() is config  # cached
    imp = impair.impairer_for("udp", L, R, "out")
    assert isinstance(imp, DatagramImpairer) and imp.stream_key == "udp 127.0.0.1:40000>127.0.0.2:443"
    assert impair.impairer_for("udp", L, R, "out") is imp
    assert impair.impairer_for("udp", L, R, "in") is None  # no in: section
    assert impair.impairer_for("tcp", L, R, "out") is None  # loss does not apply to streams


def test_env_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(impair.ENV_SPEC, "out: loss=150%")
    with pytest.raises(ImpairSpecError, match=r"^WIRECHECK_IMPAIR: out.loss: '150%'"):
        impair.current()
    monkeypatch.setenv(impair.ENV_FILE, "/nonexistent")
    impair.reset()  # the environment is looked at every 100 ms
    with pytest.raises(ImpairSpecError, match="set only one of"):
        impair.current()


def test_stream_impairer_for_tcp() -> None:
    impair.configure("match: tcp:445; out: cut=rst@10")
    imp = impair.impairer_for("tcp", ("10.53.57.1", 50000), ("10.53.57.2", 445), "out")
    assert isinstance(imp, StreamImpairer)
    assert imp.on_send(time.monotonic(), 20) == StreamFate(10, 0.0, "rst")
    v6 = impair.impairer_for("tcp", ("fd00::5357:5f01", 50000, 0, 0), ("fd00::5357:5f02", 445, 0, 0), "out")
    assert (
        isinstance(v6, StreamImpairer)
        and v6.stream_key == "tcp [fd00::5357:5f01]:50000>[fd00::5357:5f02]:445"
    )


def test_configure_overrides_env_until_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(impair.ENV_SPEC, "seed=1; out: loss=50%")
    impair.reset()
    first = impair.impairer_for("udp", L, R, "out")
    assert isinstance(first, DatagramImpairer)
    for _ in range(5):
        first.decide(time.monotonic(), b"x")
    # Mid-run change: the same flow keeps its impairer (and its counters), with the new rules.
    impair.configure("seed=1; out: drop=5")
    again = impair.impairer_for("udp", L, R, "out")
    assert again is first and again.rules.drop == ((5, 5),) and again.index == 5
    assert again.decide(time.monotonic(), b"x").reasons == ("drop-list",)
    impair.configure("")
    assert impair.current() is None and impair.impairer_for("udp", L, R, "out") is None
    impair.configure(None)
    config = impair.current()
    assert config is not None and config.rules[0].out is not None and config.rules[0].out.loss == 0.5


def test_configure_error_keeps_previous() -> None:
    impair.configure("out: loss=1%")
    with pytest.raises(ImpairSpecError, match=r"^configure\(\): out.loss"):
        impair.configure("out: loss=1000%")
    config = impair.current()
    assert config is not None and config.rules[0].out is not None and config.rules[0].out.loss == 0.01


def test_flows_and_release() -> None:
    impair.configure("out: delay=1ms")
    imp = impair.impairer_for("udp", L, R, "out")
    assert impair.flows() == {("udp", L, R, "out"): imp}
    impair.release("udp", L, R)
    assert impair.flows() == {}
    assert impair.impairer_for("udp", L, R, "out") is not imp


def test_activation_time_is_the_epoch() -> None:
    before = time.monotonic()
    config = impair.configure("out: blackhole=0+10s")
    imp = impair.impairer_for("udp", L, R, "out")
    assert config is not None and isinstance(imp, DatagramImpairer)
    assert before <= imp.epoch == config.activated_at <= time.monotonic()  # type: ignore[operator]
    assert imp.decide(config.activated_at + 9.9, b"x").dropped
    assert not imp.decide(config.activated_at + 10.0, b"x").dropped


# -- the file, re-read on mtime change ------------------------------------------------------------


def _set_file(path: Path, text: str, mtime_ns: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_file_reread_on_mtime_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "impair.yaml"
    _set_file(path, "out: {loss: 10%}\n", 1_000_000_000_000_000_000)
    monkeypatch.setenv(impair.ENV_FILE, str(path))
    first = impair.current()
    assert first is not None and first.rules[0].out.loss == 0.1  # type: ignore[union-attr]
    imp = impair.impairer_for("udp", L, R, "out")
    assert isinstance(imp, DatagramImpairer)

    _set_file(path, "out: {loss: 20%}\n", 1_000_000_001_000_000_000)
    assert impair.current() is first  # checked at most every 100 ms
    time.sleep(impair.RELOAD_INTERVAL + 0.02)
    second = impair.current()
    assert second is not None and second is not first
    assert second.rules[0].out.loss == 0.2  # type: ignore[union-attr]
    assert impair.impairer_for("udp", L, R, "out") is imp and imp.rules.loss == 0.2

    # Same mtime and size: not re-read.
    time.sleep(impair.RELOAD_INTERVAL + 0.02)
    assert impair.current() is second


def test_file_broken_midrun_keeps_previous(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "impair.yaml"
    _set_file(path, "out: {loss: 10%}\n", 1_000_000_000_000_000_000)
    monkeypatch.setenv(impair.ENV_FILE, str(path))
    first = impair.current()
    _set_file(path, "out: {loss: 200%}\n", 1_000_000_002_000_000_000)
    time.sleep(impair.RELOAD_INTERVAL + 0.02)
    assert impair.current() is first
    assert f"{path}:1: out.loss: '200%'" in capfd.readouterr().err
    # Removing the file means no impairment.
    path.unlink()
    time.sleep(impair.RELOAD_INTERVAL + 0.02)
    assert impair.current() is None


def test_file_broken_at_start_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "impair.yaml"
    path.write_text("seed: 1\nout:\n  delay: 20\n")
    monkeypatch.setenv(impair.ENV_FILE, str(path))
    with pytest.raises(ImpairSpecError, match=r"impair.yaml:3: out.delay: '20' needs a unit"):
        impair.current()


def test_missing_file_at_start_is_no_impairment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(impair.ENV_FILE, str(tmp_path / "later.yaml"))
    assert impair.current() is None
    _set_file(tmp_path / "later.yaml", "in: {delay: 5ms}\n", 1_000_000_000_000_000_000)
    time.sleep(impair.RELOAD_INTERVAL + 0.02)
    config = impair.current()
    assert config is not None and config.rules[0].in_ is not None and config.rules[0].in_.delay == 0.005


def test_cut_pending_for_idle_connections() -> None:
    s = StreamImpairer(out_rules("cut=blackhole@2s"), 0, "k", epoch=0.0)
    assert s.cut_pending(1.9) is None
    assert s.cut_pending(2.0) == "blackhole"
    assert s.cut_pending(2.1) == "blackhole"
    assert s.on_send(3.0, 10) == StreamFate(0, 0.0, "blackhole")
    by_bytes = StreamImpairer(out_rules("cut=rst@5"), 0, "k", epoch=0.0)
    assert by_bytes.cut_pending(100.0) is None  # a byte cut needs bytes
    by_bytes.on_send(0.0, 10)
    assert by_bytes.cut_pending(0.0) == "rst"


def test_rebound_flow_keeps_its_impairer() -> None:
    impair.configure("out: rebind=port@2")
    imp = impair.impairer_for("udp", L, R, "out")
    assert imp is not None
    fates = [imp.decide(0.0, b"x") for _ in range(3)]
    assert fates[2].rebind == "port"
    moved = ("127.0.0.1", 40001)
    impair.rebound("udp", L, moved)
    same = impair.impairer_for("udp", moved, R, "out")
    assert same is imp and same.index == 3
    assert not any(same.decide(0.0, b"x").rebind for _ in range(10))
    assert impair.impairer_for("udp", L, R, "out") is not imp  # the old tuple is a new flow now


def test_env_change_noticed_within_reload_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    assert impair.current() is None
    monkeypatch.setenv(impair.ENV_SPEC, "out: delay=1ms")
    time.sleep(impair.RELOAD_INTERVAL + 0.02)
    assert impair.current() is not None
