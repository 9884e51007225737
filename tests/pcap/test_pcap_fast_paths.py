"""The fast paths of a batch answer exactly what the plain ones do (differential tests):
column-wise query evaluation against per-frame calls, bulk column building against cell-by-cell
appends, the SMB port search run beside the pass against running it first, the catalogue's index
against `tshark -G fields`."""
from __future__ import annotations

import pytest

from harness.pcap import Capture, Count
from harness.pcap import tshark as ts
from harness.pcap.query import And, Pred, Query, field_predicate, select
from harness.pcap.table import AGG, Table, new_column

from .test_pcap_query import FILTERS, MATCH_CASES


@pytest.fixture(scope="module")
def table(tcp_pcap):
    cap = Capture(tcp_pcap)
    fields = set().union(*(Query(filter=f).fields() for f in FILTERS), *(set(m) for _, m, _ in MATCH_CASES))
    return cap.load(fields)


def _per_row(p, t: Table, rows) -> list[int]:
    return [r for r in rows if p(t, r)]


@pytest.mark.parametrize("flt", FILTERS)
def test_pcap_filter_column_wise_equals_per_frame(table, flt):
    pred = Query(filter=flt).compiled.pred
    assert isinstance(pred, Pred)
    every = range(len(table))
    assert pred.select(table, every) == _per_row(pred, table, every)
    some = list(range(1, len(table), 3))  # a subset, as an `and` hands its later parts
    assert pred.select(table, some) == _per_row(pred, table, some)


@pytest.mark.parametrize("name,match,frames", MATCH_CASES, ids=[c[0] for c in MATCH_CASES])
def test_pcap_match_column_wise_equals_per_frame(table, name, match, frames):
    pred = And([field_predicate(f, s) for f, s in match.items()])
    every = range(len(table))
    assert pred.select(table, every) == _per_row(pred, table, every)
    assert [table.numbers[r] for r in pred.select(table, every)] == frames


def test_pcap_select_takes_plain_callables_and_plain_columns():
    t = Table([1, 2, 3], {"smb2.cmd": [(9,), (), (9, 13)]})  # a list column, as merge() makes
    assert select(lambda t, r: r != 1, t, range(3)) == [0, 2]
    p = field_predicate("smb2.cmd", 9)
    assert p.select(t, range(3)) == _per_row(p, t, range(3)) == [0, 2]


def test_pcap_bulk_columns_equal_cell_by_cell():
    cells = {
        "smb2.sesid": ["", "5", f"1{AGG}2", "0xffffffffffffffff", "0x10", " 7 ", "-3", "x1", "0x1f", "1_0", "5"],
        "frame.time_relative": ["0.5", "", "nan", "1e3", f"1{AGG}2.5", "oops", "0.5"],
        "frame.protocols": ["raw:ip:tcp", "", "raw:ip:tcp", f"a{AGG}b", "raw:ip:tcp"],
        "smb2.cmd": ["9", "13", "", "99999999999999999999999", "9"],
    }
    for field, texts in cells.items():
        one, bulk = new_column(field), new_column(field)
        for c in texts:
            one.append_text(c)
        bulk.extend_texts(texts)
        got = [bulk[r] for r in range(len(bulk))]
        want = [one[r] for r in range(len(one))]
        assert [tuple(map(repr, c)) for c in got] == [tuple(map(repr, c)) for c in want], field


def test_pcap_table_rows_short_and_long():
    rows = [["1", "0.1", "9", "extra"], ["2", "0.2"], ["3", "0.3", f"13{AGG}13"]]
    t = Table.from_rows(["frame.number", "frame.time_relative", "smb2.cmd"], rows)
    assert list(t.numbers) == [1, 2, 3]
    # a short row fills only its first columns, as cell-by-cell appends always did
    assert [t.values("smb2.cmd", r) for r in range(len(t.columns["smb2.cmd"]))] == [(9,), (13, 13)]


def test_pcap_port_search_beside_the_pass_drops_it_when_ports_are_found(port8445_pcap, monkeypatch):
    """When the search finds a port, the pass read meanwhile (without decode-as) is not used."""
    monkeypatch.setattr(ts, "smb_elsewhere_likely", lambda path: False)  # read beside the search anyway
    cap = Capture(port8445_pcap)
    assert cap.count("smb2.cmd == 9") == 2 and cap.detected_smb_ports == [8445]
    assert cap.passes == 1 and cap.discarded_passes == 1
    cap.check(Count("smb2.cmd == 9", eq=2))


def test_pcap_port_search_beside_the_pass_keeps_it_on_445(tcp_pcap):
    cap = Capture(tcp_pcap)
    assert cap.count("smb2.cmd == 9") == 2 and cap.detected_smb_ports == []
    assert cap.passes == 1 and cap.discarded_passes == 0


def test_pcap_guess_of_smb_elsewhere(port8445_pcap, tcp_pcap):
    assert ts.smb_elsewhere_likely(port8445_pcap) and not ts.smb_elsewhere_likely(tcp_pcap)


def test_pcap_truncated_capture_fails_alike_beside_the_search(tcp_pcap, tmp_path):
    from . import captures as gen

    cut = gen.truncate_file(tcp_pcap, tmp_path / "cut.pcap")
    with pytest.raises(ts.BadCapture, match=r"cut\.pcap: the capture is truncated"):
        ts.smb_tcp_ports(cut)
    search = ts.SmbPortSearch(cut)
    try:
        with pytest.raises(ts.BadCapture, match=r"cut\.pcap: the capture is truncated"):
            search.result()
    finally:
        search.close()


def test_pcap_catalogue_index_answers_like_g_fields():
    cat, raw = ts.field_catalogue(), ts._g_fields()
    for name in ("smb2.cmd", "smb2.sesid", "tcp.stream", "frame.time_relative", "smb2", "quic", "ip.src",
                 "tls.handshake.random", "tcp.analysis.retransmission"):
        assert cat[name] == raw[name] and name in cat and cat.get(name) == raw[name]
    for name in ("smb2.cmdd", "", "smb3.cmd"):
        assert name not in cat and cat.get(name) is None and name not in raw
    assert cat["_ws.col.Info"] == ts.FieldInfo("_ws.col.Info", "FT_STRING")
    assert len(cat) == len(raw.keys() | ts._COLUMN_FIELDS)
