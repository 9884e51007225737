"""pcap assertions for SMB2/3 over TCP, QUIC and SMB Direct, backed by one tshark pass per batch.

    from harness.pcap import Capture, Count, Before
    cap = Capture("run.pcap", keylog="run.keys", smb_keys="run.smbkeys")
    cap.expect(Count("smb2.cmd == 9", min=1), Before("smb2.cmd == 0", "smb2.cmd == 1")).verify()
    assert cap.count({"smb2.cmd": 13}) == 2

Modules: tshark (running tshark, streaming its rows), table (the compact columnar frame table),
query (filters, predicates, grouping), assertions (assertion kinds + failure text), capture (Capture),
keys (decryption material), checks_yaml (declarative checks), the catalogue package (named checks,
one module per protocol), the ladder package (text ladder for `wirecheck pcap show`, SVG/HTML ladder;
`write_ladder` for the runner). The command line is harness/cli/pcap.py.

A failing scenario cell gets its pictures with
    from harness.pcap.ladder import write_ladder
    paths = write_ladder(pcap, cell_dir, keylog=keys, smb_keys=smbkeys)   # [*.ladder.svg, *.ladder.html]
"""
from . import catalogue
from .assertions import (
    Absent,
    AllOf,
    Assertion,
    Before,
    Count,
    Custom,
    First,
    FollowedBy,
    InOrder,
    Last,
    Result,
    Values,
)
from .capture import Capture
from .checks_yaml import ChecksError, load_checks, parse_checks
from .keys import KeyFileError, SmbKey, inject_secrets
from .ladder import write_ladder
from .query import Query
from .tshark import BadCapture, BadFilter, PcapError, TsharkNotFound, UnknownField

__all__ = ["Absent", "AllOf", "Assertion", "BadCapture", "BadFilter", "Before", "Capture", "ChecksError", "Count",
           "Custom", "First", "FollowedBy", "InOrder", "KeyFileError", "Last", "PcapError", "Query", "Result",
           "SmbKey", "TsharkNotFound", "UnknownField", "Values", "catalogue", "inject_secrets", "load_checks",
           "parse_checks", "write_ladder"]
