"""Named checks on TCP, from tshark's TCP analysis."""
from __future__ import annotations

from ..assertions import Absent, Assertion
from .registry import named


@named("tcp.no_retransmission")
def tcp_no_retransmission() -> Assertion:
    """tshark's TCP analysis flagged no retransmission (plain, fast or spurious)."""
    return Absent("tcp.analysis.retransmission || tcp.analysis.fast_retransmission"
                  " || tcp.analysis.spurious_retransmission")
