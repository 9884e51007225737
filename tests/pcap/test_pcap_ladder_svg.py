"""The ladder as a picture (SVG) and a page (HTML), and the runner's hook `write_ladder`."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from click.testing import CliRunner

from harness.cli.pcap import pcap
from harness.pcap import Capture
from harness.pcap.ladder import MAX_EVENTS, events, svg, write_ladder

NS = "{http://www.w3.org/2000/svg}"


def test_pcap_write_ladder_svg_and_html(tcp_pcap, tmp_path):
    paths = write_ladder(tcp_pcap, tmp_path / "cell", stem="cell-3")
    assert [p.name for p in paths] == ["cell-3.ladder.svg", "cell-3.ladder.html"]
    lanes, evs = events(Capture(tcp_pcap))
    root = ET.parse(paths[0]).getroot()  # well-formed XML
    assert root.tag == f"{NS}svg"
    lines = root.iter(f"{NS}line")
    assert sum(1 for _ in lines) == len(lanes) + len(evs)  # a lane line per endpoint, an arrow per event
    text = paths[0].read_text()
    assert "TCP data len=1116 [retransmission]" in text and "10.53.57.2:445" in text
    assert 'fill="#c62828"' in text  # the retransmission and the malformed frame are red
    page = paths[1].read_text()
    assert page.count("<tr>") == len(evs) + 1 and "<svg" in page and "[MALFORMED]" in page


def test_pcap_ladder_svg_escapes_and_truncates():
    evs = [(1, 0.0, 0, 1, "A <b>&amp; " + "x" * 300), (2, 0.001, 1, 1, "self")]
    s = svg(["c<1>", "s"], evs, "t & u", ["keys missing"])
    root = ET.fromstring(s)
    texts = ["".join(t.itertext()) for t in root.iter(f"{NS}text")]
    assert "c<1>" in texts and "t & u" in texts
    assert any(t.startswith("A <b>&amp; x") and t.endswith("…") for t in texts)
    assert any("notice: keys missing" in t for t in texts)


def test_pcap_ladder_svg_caps_rows():
    evs = [(n, n / 1000, 0, 1, "QUIC 1-RTT ACK") for n in range(MAX_EVENTS + 5)]
    s = svg(["a", "b"], evs)
    assert "5 more events not drawn" in s


def test_pcap_cli_show_svg_html(quic_capture, tmp_path):
    path, keys = quic_capture
    r = CliRunner().invoke(pcap, ["show", str(path), "--keylog", str(keys), "--svg", str(tmp_path / "q.svg"),
                                  "--html", str(tmp_path / "q.html")])
    assert r.exit_code == 0, r.output
    assert f"wrote {tmp_path / 'q.svg'}" in r.output
    assert "SMB2 NEGOTIATE req" in (tmp_path / "q.svg").read_text()
    ET.parse(tmp_path / "q.svg")
    assert "HANDSHAKE_DONE" in (tmp_path / "q.html").read_text()
