"""harness.pcap.smbinfo: the Info column's per-message details for the ladder."""
from __future__ import annotations

from harness.pcap.smbinfo import details


def test_details_per_message():
    info = ("Create Request File: a.txt;GetInfo Request FILE_INFO/SMB2_FILE_ALL_INFO;Close Request")
    assert details(info, 3) == ["File: a.txt", "FILE_INFO/SMB2_FILE_ALL_INFO", ""]
    assert details("Create Response, Error: STATUS_OBJECT_NAME_NOT_FOUND", 1) == ["STATUS_OBJECT_NAME_NOT_FOUND"]
    assert details("[TCP Retransmission] Write Request Len:5 Off:0 File: x", 1) == ["Len:5 Off:0 File: x"]


def test_details_refuse_what_does_not_line_up():
    assert details("Create Request File: a.txt", 2) == []
    assert details("Protected Payload (KP0)", 1) == []
    assert details(None, 1) == [] and details("Create Request File: a", 0) == []
