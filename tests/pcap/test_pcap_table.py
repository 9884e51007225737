"""The compact frame table: typed array columns, interned object columns, the same tuple view."""
from __future__ import annotations

import pytest

from benchmarks.pcap_fast_capture import fast_smb_tcp_capture
from harness.pcap.table import AGG, NumColumn, ObjColumn, Table, new_column


def test_pcap_table_num_column_cells():
    col = new_column("smb2.sesid")  # FT_UINT64: values beyond 2**63 go aside, not wrong
    assert isinstance(col, NumColumn)
    for cell in ["", "5", f"1{AGG}2", "0xffffffffffffffff", "0x10"]:
        col.append_text(cell)
    assert [col[r] for r in range(5)] == [(), (5,), (1, 2), (0xFFFFFFFFFFFFFFFF,), (16,)]
    assert len(col) == 5 and list(col)[1] == (5,)


def test_pcap_table_obj_column_interns():
    col = new_column("frame.protocols")
    assert isinstance(col, ObjColumn)
    for _ in range(3):
        col.append_text("raw:ip:tcp:nbss:smb2")
    col.append_text("")
    assert col[0] is col[2] and col[0] == ("raw:ip:tcp:nbss:smb2",) and col[3] == ()


def test_pcap_table_rows_and_index():
    t = Table.from_rows(["frame.number", "frame.time_relative", "smb2.cmd"],
                        [["3", "0.5", "9"], ["7", "0.75", f"13{AGG}13"], ["9", "1.0", ""]])
    assert list(t.numbers) == [3, 7, 9] and t.row_of[7] == 1 and t.row_of.get(8) is None and 9 in t.row_of
    assert t.values("smb2.cmd", 1) == (13, 13) and t.time(2) == 1.0 and t.frame(0)["smb2.cmd"] == 9


@pytest.mark.slow  # pyshark's per-packet PDML path: ~10 s even on 400 packets under load
def test_pcap_fast_generator_and_benchmark_agree(tmp_path):
    """The benchmark's 10 assertions answer the same on both sides (on a small capture)."""
    from benchmarks import pcap_speed

    path = fast_smb_tcp_capture(tmp_path / "b.pcap", 400, pcap_speed.STREAMS)
    _, ours, passes = pcap_speed.library(path)
    _, theirs = pcap_speed.pyshark_loop(path)
    assert passes == 1 and ours == theirs == [True] * 10
