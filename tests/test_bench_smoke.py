"""benchmarks/transport.py runs and prints its table (tiny sizes; timing is never asserted)."""

from __future__ import annotations

import json
import math
import re

import pytest

from benchmarks import transport

TINY = ["--size", "256KiB", "--connections", "5", "--datagrams", "50", "--repeat", "1", "-q"]


def _tiny_settings(**over: object) -> transport.Settings:
    s = transport.Settings(size=256 * 1024, connections=5, datagrams=50, repeat=1, timeout=60.0)
    for k, v in over.items():
        setattr(s, k, v)
    return s


@pytest.mark.parametrize("kind", list(transport.STREAM_KINDS))
def test_throughput_every_kind(kind: str) -> None:
    rate, detail = transport.measure_throughput(kind, 256 * 1024, 64 * 1024, _tiny_settings())
    assert rate > 0 and math.isfinite(rate)
    assert detail["recv_calls"] >= 1
    if kind == "emu-pcap":
        assert detail["pcap_bytes"] > 256 * 1024  # every byte was logged once, plus headers
    else:
        assert detail["pcap_bytes"] == 0


@pytest.mark.parametrize("kind", list(transport.STREAM_KINDS))
def test_connect_rate_every_kind(kind: str) -> None:
    rate, detail = transport.measure_connect_rate(kind, 5, _tiny_settings())
    assert rate > 0 and detail["client_s"] > 0


@pytest.mark.parametrize("kind", list(transport.DGRAM_KINDS))
def test_udp_rate_every_kind(kind: str) -> None:
    rate, detail = transport.measure_udp_rate(kind, 50, 1200, _tiny_settings())
    assert detail["sent"] == 50
    assert 0 <= detail["received"] <= 50
    assert rate >= 0
    if kind != "udp":  # unix datagrams (and so emulated UDP) block instead of dropping
        assert detail["received"] == 50


def test_main_table_and_json(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    assert transport.main([*TINY, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for bench in transport.BENCHMARKS.values():
        assert bench[0] in text
        for label in bench[2].values():
            assert re.search(rf"^  {re.escape(label)} +[\d,]+\.\d +[\d,]+\.\d +\d+%", text, re.M), label
    targets = text[text.index("Targets"):].splitlines()[1:]
    assert len(targets) == len(transport.TARGETS)
    assert all(re.search(r"\d(x|%) +(PASS|MISS)$", line) for line in targets)

    data = json.loads(out.read_text())
    assert set(data["benchmarks"]) == set(transport.BENCHMARKS)
    for bench in data["benchmarks"].values():
        for kind in bench["kinds"].values():
            assert len(kind["samples"]) == 1 and kind["median"] > 0
    assert {t["label"] for t in data["targets"]} == {t[0] for t in transport.TARGETS}
    assert all(isinstance(t["pass"], bool) for t in data["targets"])


def test_only_and_format_without_some_benchmarks(capsys) -> None:
    results = transport.run(_tiny_settings(only=("connect",)))
    text = transport.format_table(results)
    assert "connect" in text and "UDP datagram rate" not in text
    assert [t["benchmark"] for t in results["targets"]] == ["connect", "connect"]


def test_bad_arguments() -> None:
    with pytest.raises(SystemExit):
        transport.main(["--only", "nonsense"])
    with pytest.raises(SystemExit):
        transport.main(["--repeat", "0"])


def test_pcap_benchmark_tshark_per_check_baseline(tmp_path, capsys) -> None:
    """The `tshark -Y` once-per-check baseline answers as the library does, and can answer False."""
    from benchmarks import pcap_speed
    from benchmarks.pcap_fast_capture import fast_smb_tcp_capture

    path = fast_smb_tcp_capture(tmp_path / "b.pcap", 300, pcap_speed.STREAMS)
    _, ours, _ = pcap_speed.library(path)
    secs, theirs = pcap_speed.tshark_per_check(path)
    assert ours == theirs == [True] * 10 and secs > 0
    # told to expect one more connection, its SYN count check fails (it reads the capture)
    assert pcap_speed.tshark_per_check(path, pcap_speed.STREAMS + 1)[1] == [True] * 9 + [False]
    pcap_speed.main(["--packets", "300", "--big", "0", "--no-pyshark"])
    out = capsys.readouterr().out
    assert re.search(r"^ratio: library is [\d.]+x faster than tshark -Y once per check$", out, re.M)


def test_quic_bulk_against_ngtcp2(tmp_path, capsys) -> None:
    """benchmarks/quic.py's bulk prints the emulated carrier against ngtcp2's gtlsclient/gtlsserver
    (which must be installed) and quic.ko's published figure."""
    from benchmarks import quic as bench

    out = tmp_path / "q.json"
    assert bench.main(["--only", "bulk", "--size", "1MiB", "--repeat", "1", "--kinds", "emu-pcap,ngtcp2",
                       "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "against ngtcp2 gtlsclient/gtlsserver over real loopback UDP" in text, text
    assert re.search(r"^  emu-pcap +[\d.]+x ngtcp2 +[\d.]+x quic\.ko +target >= 0\.5x (PASS|MISS)$", text, re.M), text
    bulk = json.loads(out.read_text())["bulk"]
    assert bulk["ngtcp2"]["median"] > 0 and bulk["emu-pcap"]["median"] > 0
