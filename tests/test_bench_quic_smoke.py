"""benchmarks/quic.py (bulk against ngtcp2) and benchmarks/smb_quic.py run small and print their ratios
with the targets, so neither rots (timing is never asserted). Both need their real peers: ngtcp2's
gtlsclient/gtlsserver, Samba's smbd and smbprotocol; under CI a missing one fails the test."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil

import pytest

from benchmarks import quic as quic_bench
from benchmarks import smb_quic


def _missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing")
    pytest.skip(f"{what} is missing")


def _need(program: str) -> None:
    if shutil.which(program) is None and not os.path.exists(f"/usr/sbin/{program}"):
        _missing(program)


def test_quic_bulk_against_ngtcp2_prints_the_ratio_and_target(tmp_path, capsys) -> None:
    _need("gtlsclient")
    _need("gtlsserver")
    out = tmp_path / "quic.json"
    assert quic_bench.main(["--only", "bulk", "--kinds", "emu-pcap,ngtcp2", "--size", "1MiB", "--repeat", "1",
                            "--timeout", "120", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    line = re.search(r"^  emu-pcap +([\d.]+)x ngtcp2 +([\d.]+)x quic\.ko +target >= 0\.5x (PASS|MISS)$", text, re.M)
    assert line, text
    data = json.loads(out.read_text())["bulk"]
    assert data["emu-pcap"]["median"] > 0 and data["ngtcp2"]["median"] > 0
    assert data["emu-pcap"]["vs_ngtcp2"] == pytest.approx(data["emu-pcap"]["median"] / data["ngtcp2"]["median"])


def test_smb_over_emulated_quic_tcp_and_smbprotocol_prints_the_ratios(tmp_path, capsys) -> None:
    _need("smbd")
    if importlib.util.find_spec("smbclient") is None:  # smbprotocol's high-level client
        _missing("smbprotocol")
    out = tmp_path / "smb.json"
    assert smb_quic.main(["--size-mib", "2", "--repeat", "1", "--timeout", "180", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert re.search(r"^  emulated QUIC vs emulated TCP: [\d.]+x \(target >= 0\.5x\) (PASS|MISS)$", text, re.M), text
    assert re.search(r"^  emulated QUIC vs smbprotocol->smbd: [\d.]+x; emulated TCP vs smbprotocol->smbd: [\d.]+x$",
                     text, re.M), text
    data = json.loads(out.read_text())
    for kind in smb_quic.KINDS:
        assert data["median"][kind]["write"] > 0 and data["median"][kind]["read"] > 0
