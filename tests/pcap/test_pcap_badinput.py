"""Bad input of every kind gets a clear, typed error (never a silent 'no matches')."""
from __future__ import annotations

import pytest

from harness.pcap import BadCapture, BadFilter, Capture, Count, KeyFileError, UnknownField
from harness.pcap import tshark as ts

from . import captures as gen


def test_pcap_truncated_capture(tcp_pcap, tmp_path):
    cut = gen.truncate_file(tcp_pcap, tmp_path / "cut.pcap")
    cap = Capture(cut)
    with pytest.raises(BadCapture, match=r"cut\.pcap: the capture is truncated \(its last packet is cut short\)"):
        cap.count("smb2")


@pytest.mark.parametrize("content,msg", [
    (b"", r"empty file"),
    (b"hello, not a capture\n", r"not a pcap or pcapng file \(starts with 68656c6c\)"),
])
def test_pcap_not_a_capture(tmp_path, content, msg):
    p = tmp_path / "x.pcap"
    p.write_bytes(content)
    with pytest.raises(BadCapture, match=msg):
        Capture(p)


def test_pcap_missing_capture(tmp_path):
    with pytest.raises(BadCapture, match=r"no such capture file"):
        Capture(tmp_path / "nope.pcap")
    with pytest.raises(BadCapture, match=r"is a directory"):
        Capture(tmp_path)


def test_pcap_header_only_capture_is_empty_not_an_error(tmp_path):
    p = tmp_path / "empty.pcap"
    p.write_bytes(bytes.fromhex("d4c3b2a1020004000000000000000000ffff000065000000"))
    assert Capture(p).count("smb2") == 0


def test_pcap_unknown_field_named_before_tshark_runs(tcp_pcap, monkeypatch):
    cap = Capture(tcp_pcap)

    def no_pass(*a, **kw):
        raise AssertionError("tshark pass must not run")
    monkeypatch.setattr(ts, "fields_pass", no_pass)
    with pytest.raises(UnknownField, match=r"unknown tshark field\(s\): smb2.write_lenght"):
        cap.check(Count({"smb2.write_lenght": {"gt": 1}}))
    with pytest.raises(UnknownField, match=r"smb3.cmd"):
        cap.count("smb3.cmd == 1 and smb2")


def test_pcap_tshark_rejecting_a_field_is_explained():
    err = ts.explain('Running as user "root" and group "root". This could be dangerous.\n'
                     "tshark: Some fields aren't valid:\n\tfoo.bar\n\tbar.baz\n")
    assert isinstance(err, UnknownField) and err.fields == ["bar.baz", "foo.bar"]


def test_pcap_bad_display_filter(tcp_pcap):
    cap = Capture(tcp_pcap)
    with pytest.raises(BadFilter, match=r"invalid display filter 'smb2.cmd == == 1'"):
        cap.count("smb2.cmd == == 1")
    with pytest.raises(BadFilter, match=r"invalid display filter 'smb2.cmd in \{0 1\}'"):
        cap.count("smb2.cmd in {0 1}")


def test_pcap_bad_keylog(tcp_pcap, tmp_path):
    k = tmp_path / "k.log"
    k.write_text("CLIENT_RANDOM short\n")
    with pytest.raises(KeyFileError, match=r"k.log:1: not an NSS key log line"):
        Capture(tcp_pcap, keylog=k)
    with pytest.raises(KeyFileError, match=r"key log not found"):
        Capture(tcp_pcap, keylog=tmp_path / "none")


def test_pcap_tshark_missing(monkeypatch, tcp_pcap):
    monkeypatch.setenv("WIRECHECK_TSHARK", "/nonexistent/tshark")
    monkeypatch.setattr(ts.shutil, "which", lambda name: None)
    with pytest.raises(ts.TsharkNotFound, match="tshark not found"):
        ts.find_tshark()
