"""The pcap view of one emulated TCP connection: sequence numbers that add up.

An emulated TCP connection is a unix stream socket; nothing on it has sequence numbers.  To make
the capture read like real TCP (no "previous segment not captured", no "ACKed unseen segment",
reassembly of application messages across segments), the logger invents them with one simple,
deterministic rule taken from cwrap's socket_wrapper:

* each direction starts at sequence number 0 (the ISN is 0 both ways, so Wireshark's relative
  and absolute numbers coincide);
* a SYN and a FIN count one byte, data counts its length, nothing else counts;
* every segment carries ``seq`` = its sender's counter and ``ack`` = the other direction's counter,
  i.e. it acknowledges everything the other side has sent so far.

Because the rule depends only on the byte stream, the two endpoints of a connection — possibly
two processes logging into one file — can each keep a ``TcpFlow`` and compute the same numbers
without talking to each other.

Model, in the spirit of h11: a ``TcpFlow`` holds the two counters and turns named events
(``handshake``, ``data``, ``fin``, ``rst``) into packets, each packet being a buffer list ready
for ``PcapWriter.write_packet``.  It does no I/O and does not decide *who* logs *what*: that is
the socket wrapper's policy (e.g. "the sender logs data, the closer logs the FIN exchange").  When
the caller learns of bytes it did not log — the peer process logged them — it tells the flow with
``note_received``/``note_sent`` so that later acks stay right.

Directions are from the point of view of the local endpoint: ``"out"`` is local -> remote,
``"in"`` is remote -> local.
"""

from __future__ import annotations

from typing import Literal

from .packets import (
    ACK,
    FIN,
    MAX_SEGMENT_PAYLOAD,
    PSH,
    RST,
    SYN,
    Address,
    Buffer,
    Packet,
    address_family,
    tcp_endpoints,
    tcp_segment,
)

__all__ = ["Direction", "Packet", "TcpFlow"]

Direction = Literal["out", "in"]

_MOD = 1 << 32  # sequence numbers wrap


class TcpFlow:
    """Sequence/ack bookkeeping for one connection between ``local`` and ``remote``.

    ``local_seq`` / ``remote_seq`` are the next sequence number each side will use (both start
    at 0).  They are public so a caller can inspect or correct them.
    """

    def __init__(self, local: Address, remote: Address, *, window: int = 65535) -> None:
        self._local = local
        self._remote = remote
        self._ends = self._endpoints()
        self.family = self._ends[0][0]
        self.window = window
        self.local_seq = 0
        self.remote_seq = 0

    def _endpoints(self) -> tuple:
        """(out, in): the two directions' packets.tcp_endpoints, checked and packed once."""
        local, remote = self._local, self._remote
        try:
            out = tcp_endpoints(local, remote)
        except ValueError:
            if address_family(local) != address_family(remote):
                raise ValueError(f"mixed address families: {local!r} -> {remote!r}") from None
            raise
        family, local_ip, remote_ip, local_port, remote_port = out
        return out, (family, remote_ip, local_ip, remote_port, local_port)

    @property
    def local(self) -> Address:
        return self._local

    @local.setter
    def local(self, value: Address) -> None:
        self._local = value
        self._ends = self._endpoints()
        self.family = self._ends[0][0]

    @property
    def remote(self) -> Address:
        return self._remote

    @remote.setter
    def remote(self, value: Address) -> None:
        self._remote = value
        self._ends = self._endpoints()

    # -- the numbers -------------------------------------------------------------------------

    def advance(self, direction: Direction, nbytes: int) -> None:
        """Count ``nbytes`` of sequence space sent in ``direction`` without producing a packet."""
        if nbytes < 0:
            raise ValueError("cannot un-send bytes")
        if direction == "out":
            self.local_seq = (self.local_seq + nbytes) % _MOD
        elif direction == "in":
            self.remote_seq = (self.remote_seq + nbytes) % _MOD
        else:
            raise ValueError(f"direction must be 'out' or 'in', not {direction!r}")

    def note_received(self, nbytes: int) -> None:
        """The peer sent ``nbytes`` that somebody else logged (or nobody): keep our acks right."""
        self.advance("in", nbytes)

    def note_sent(self, nbytes: int) -> None:
        """We sent ``nbytes`` that were not logged through this flow."""
        self.advance("out", nbytes)

    # -- events -> packets -------------------------------------------------------------------

    def _segment(self, direction: Direction, flags: int, payload: Buffer = b"") -> Packet:
        """One segment with the current numbers, then advance the sender's counter."""
        ends = self._ends
        count = (len(payload) if type(payload) is bytes else memoryview(payload).nbytes) \
            + bool(flags & SYN) + bool(flags & FIN)
        if direction == "out":
            seq, ack = self.local_seq, self.remote_seq
            packet = tcp_segment(ends[0], seq, ack if flags & ACK else 0, flags, payload, self.window)
            self.local_seq = (seq + count) % _MOD
        elif direction == "in":
            seq, ack = self.remote_seq, self.local_seq
            packet = tcp_segment(ends[1], seq, ack if flags & ACK else 0, flags, payload, self.window)
            self.remote_seq = (seq + count) % _MOD
        else:
            raise ValueError(f"direction must be 'out' or 'in', not {direction!r}")
        # (an ack of 0 without ACK: only the very first SYN; a nonzero one is an expert warning)
        return packet

    def handshake(self, initiator: Literal["local", "remote"] = "local") -> list[Packet]:
        """SYN, SYN/ACK, ACK, with ``initiator`` sending the SYN."""
        if initiator not in ("local", "remote"):
            raise ValueError(f"initiator must be 'local' or 'remote', not {initiator!r}")
        first: Direction = "out" if initiator == "local" else "in"
        second: Direction = "in" if first == "out" else "out"
        return [self._segment(first, SYN), self._segment(second, SYN | ACK), self._segment(first, ACK)]

    def data(self, direction: Direction, payload: Buffer) -> list[Packet]:
        """PSH/ACK segments carrying ``payload``, split to fit in IP packets (no copies)."""
        view = memoryview(payload).cast("B")
        step = MAX_SEGMENT_PAYLOAD[self.family]
        return [self._segment(direction, PSH | ACK, view[i : i + step]) for i in range(0, len(view), step)]

    def fin(self, direction: Direction, acked: bool = True) -> list[Packet]:
        """FIN/ACK from ``direction``'s sender, then, if ``acked``, the other side's pure ACK."""
        packets = [self._segment(direction, FIN | ACK)]
        if acked:
            packets.append(self._segment("in" if direction == "out" else "out", ACK))
        return packets

    def rst(self, direction: Direction) -> list[Packet]:
        """RST/ACK from ``direction``'s sender (an abort, or cwrap's way of showing EOF)."""
        return [self._segment(direction, RST | ACK)]

    def __repr__(self) -> str:
        return f"<TcpFlow {self.local!r} <-> {self.remote!r} local_seq={self.local_seq} remote_seq={self.remote_seq}>"
