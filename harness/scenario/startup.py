"""How long a cell takes before its first request: read from the cell's own capture.

Why the capture: it is the one clock every peer shares. The socket wrapper stamps each record with the
wall clock when the packet is sent, so comparing the first records with the wall clock at the cell's
start says how much of the cell went into starting processes, importing modules and listening, as
opposed to talking. Two moments are reported:

* ``first_packet``: the first record of any kind (a TCP SYN, a QUIC Initial, a UDP datagram);
* ``first_request``: the first record that carries application bytes (a TCP segment with payload, any
  UDP datagram). Over TCP the difference between the two is the gap the handshake leaves before the
  first SMB PDU; over QUIC the Initial already carries bytes, so both are the same moment.

Only the classic pcap layout the recorder writes is read (host byte order, microseconds, raw IP); a
file that is missing, empty or of another layout yields no figure rather than a wrong one.
"""
from __future__ import annotations

import struct
import sys
from pathlib import Path

_FILE_HEADER = struct.Struct("=IHHiIII")
_RECORD_HEADER = struct.Struct("=IIII")
_MAGIC = 0xA1B2C3D4
_LINKTYPE_RAW = 101
#: records read at most: the first request comes within a handful of packets; a bound keeps a huge
#: capture of a cell whose first packets carry no payload (a failed handshake) cheap to scan
MAX_RECORDS = 2000


def _carries_payload(pkt: bytes) -> bool:
    """A raw IPv4/IPv6 packet with TCP payload, or any UDP datagram (other protocols count too)."""
    if not pkt:
        return False
    version = pkt[0] >> 4
    if version == 4 and len(pkt) >= 20:
        ihl = (pkt[0] & 0x0F) * 4
        proto, total = pkt[9], int.from_bytes(pkt[2:4], "big")
        l4, l4_len = pkt[ihl:], total - ihl
    elif version == 6 and len(pkt) >= 40:
        proto, l4 = pkt[6], pkt[40:]
        l4_len = int.from_bytes(pkt[4:6], "big")
    else:
        return False
    if proto == 6:  # TCP: the data offset says where the payload starts
        return len(l4) >= 13 and l4_len - (l4[12] >> 4) * 4 > 0
    return proto != 1 and proto != 58  # ICMP/ICMPv6 (port unreachable) is no request


def first_times(pcap: str | Path) -> tuple[float | None, float | None]:
    """(wall-clock time of the first record, of the first record with application bytes)."""
    try:
        with open(pcap, "rb") as f:
            head = f.read(_FILE_HEADER.size)
            if len(head) < _FILE_HEADER.size:
                return None, None
            magic, _, _, _, _, _, linktype = _FILE_HEADER.unpack(head)
            if magic != _MAGIC or linktype != _LINKTYPE_RAW:
                return None, None
            first = request = None
            for _ in range(MAX_RECORDS):
                rec = f.read(_RECORD_HEADER.size)
                if len(rec) < _RECORD_HEADER.size:
                    break
                sec, usec, incl, _ = _RECORD_HEADER.unpack(rec)
                pkt = f.read(incl)
                ts = sec + usec / 1e6
                first = ts if first is None else first
                if _carries_payload(pkt):
                    request = ts
                    break
            return first, request
    except OSError:
        return None, None


def startup(pcap: str | Path, cell_start: float) -> dict[str, float]:
    """Seconds from ``cell_start`` (wall clock) to the first packet and to the first request; a
    moment the capture does not show is left out."""
    first, request = first_times(pcap)
    out = {}
    if first is not None:
        out["first_packet"] = round(first - cell_start, 3)
    if request is not None:
        out["first_request"] = round(request - cell_start, 3)
    return out


def describe(times: dict[str, float]) -> str:
    """One line for the cell's log."""
    if not times:
        return "start-up: no packet in the capture"
    parts = [f"first packet {times['first_packet']:.2f}s" if "first_packet" in times else "",
             f"first request {times['first_request']:.2f}s" if "first_request" in times else "no request"]
    return "start-up: " + ", ".join(p for p in parts if p) + " after the cell started"


if __name__ == "__main__":  # pragma: no cover - a manual look at a capture
    print(first_times(sys.argv[1]))
