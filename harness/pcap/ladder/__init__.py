"""Ladder (sequence) diagrams of a capture: endpoints as lanes, one event per frame, drawn as text
for CI logs and as SVG/HTML pictures for reports.

Modules: rows (the lanes and labelled events every rendering draws, from one tshark pass), text
(the text ladder of `wirecheck pcap show`), picture (hand-written SVG and an HTML page; `write_ladder`
for the scenario runner's failing cells). rows is the leaf; text and picture import it, never each
other.

    from harness.pcap.ladder import ladder, write_ladder
    print("\\n".join(ladder(cap)))
    paths = write_ladder("run.pcap", "results/cell-3", keylog="run.keys", smb_keys="run.smbkeys")
"""
from __future__ import annotations

from .picture import MAX_EVENTS, html_page, render, svg, write_ladder
from .rows import FIELDS, Event, event, events
from .text import ladder

__all__ = ["FIELDS", "MAX_EVENTS", "Event", "event", "events", "html_page", "ladder", "render", "svg", "write_ladder"]
