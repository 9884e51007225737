"""PATH_CHALLENGE retransmission on a path the peer moved to (aio/connection.py, point 8).

Sans-IO: two KoQuicConnection objects, a virtual clock and a link with a fixed one-way delay; no
sockets, no threads. The client's NAT mapping changes (new source address, same DCID, the client
does not know), so the server validates the new path. A PATH_RESPONSE is sent once and never
retransmitted (RFC 9000 8.2.2, 13.3): the validating end has to send more PATH_CHALLENGE frames, as
quic.ko does from its path timer. Without that, one lost PATH_RESPONSE leaves the path unvalidated
until aioquic abandons it (three PTO), which is the flaky migration/001[nat-addr-idle-5pct-ipv6].

And every challenge sent for a path stays acceptable: a PATH_RESPONSE that answers an earlier
challenge (a late one) validates the path, one that answers nothing we sent is ignored (RFC 9000
8.2.3, 19.18: PROTOCOL_VIOLATION is only a MAY there; quic.ko ignores it); neither closes the
connection.
"""

from __future__ import annotations

import datetime
import heapq
import os
from collections.abc import Callable
from typing import Any

import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted

from wrappers.quic.aio import KoQuicConnection

SERVER = ("10.0.0.10", 443)
CLIENT_OLD = ("10.0.0.11", 50000)
CLIENT_NEW = ("10.0.0.12", 50000)  # the NAT's new mapping: another address, same client socket
DELAY = 0.005  # one-way link delay (s)

_CERT: Any = None


def _self_signed() -> tuple[Any, Any]:
    global _CERT
    if _CERT is None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "server.test")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
        _CERT = (cert, key)
    return _CERT


# a batch filter: (what the sending end is about to send, the datagrams) -> "pass", "drop" or "hold"
Policy = Callable[[dict, list[bytes]], str]


class Link:
    """Client and server connections joined by a delaying link, driven by a virtual clock."""

    def __init__(self) -> None:
        cert, key = _self_signed()
        self.now = 0.0
        self.client_addr = CLIENT_OLD
        self.client = KoQuicConnection(configuration=QuicConfiguration(
            is_client=True, alpn_protocols=["smb"], server_name="server.test", verify_mode=0))
        self.server = KoQuicConnection(
            configuration=QuicConfiguration(is_client=False, alpn_protocols=["smb"], certificate=cert,
                                            private_key=key),
            original_destination_connection_id=self.client.original_destination_connection_id)
        self.flight: list[tuple[float, int, str, bytes, Any]] = []  # (arrival, seq, to, datagram, from)
        self.seq = 0
        self.held: list[tuple[str, bytes, Any]] = []
        self.c2s: Policy = lambda info, dgs: "pass"
        self.s2c: Policy = lambda info, dgs: "pass"
        self.closed: list[ConnectionTerminated] = []
        self.handshakes = 0
        self.challenges_sent = 0  # PATH_CHALLENGE-carrying batches the server sent on the new path
        self.client.connect(SERVER, now=self.now)
        self.run(1.0)
        assert self.handshakes == 2

    # -- sending ---------------------------------------------------------------------------------
    def _put(self, to: str, dg: bytes, src: Any) -> None:
        heapq.heappush(self.flight, (self.now + DELAY, self.seq, to, dg, src))
        self.seq += 1

    def _send_client(self) -> None:
        path = self.client.network_paths[0]
        info = {"responses": [bytes(c) for c in path.remote_challenges]}
        dgs = [dg for dg, _ in self.client.datagrams_to_send(self.now)]
        if not dgs:
            return
        verdict = self.c2s(info, dgs)
        for dg in dgs:
            if verdict == "pass":
                self._put("server", dg, self.client_addr)
            elif verdict == "hold":
                self.held.append(("server", dg, self.client_addr))

    def _send_server(self) -> None:
        if not self.server.network_paths:
            return  # nothing received yet
        path = self.server.network_paths[0]
        info = {"challenge": not (path.is_validated or path.local_challenge_sent) and path.addr == CLIENT_NEW,
                "to": path.addr}
        out = self.server.datagrams_to_send(self.now)
        if not out:
            return
        if info["challenge"] and path.local_challenge_sent:
            self.challenges_sent += 1
        dgs = [dg for dg, addr in out if addr == self.client_addr]  # to the old mapping: gone
        verdict = self.s2c(info, dgs) if dgs else "pass"
        for dg in dgs:
            if verdict == "pass":
                self._put("client", dg, SERVER)
            elif verdict == "hold":
                self.held.append(("client", dg, SERVER))

    def release_held(self) -> None:
        """Deliver what was held back now (late, after later packets)."""
        held, self.held = self.held, []
        for to, dg, src in held:
            self._put(to, dg, src)

    # -- the clock -------------------------------------------------------------------------------
    def _deliver(self, to: str, dg: bytes, src: Any) -> None:
        (self.server if to == "server" else self.client).receive_datagram(dg, src, self.now)

    def _events(self) -> None:
        for q in (self.client, self.server):
            while (ev := q.next_event()) is not None:
                if isinstance(ev, ConnectionTerminated):
                    self.closed.append(ev)
                elif isinstance(ev, HandshakeCompleted):
                    self.handshakes += 1

    def run(self, duration: float, tick: Callable[[], None] | None = None, every: float = 0.02,
            until: Callable[[], bool] | None = None) -> bool:
        """Advance the clock by ``duration``: deliveries, timers, and ``tick`` every ``every`` s.
        Returns whether ``until`` became true (stops there)."""
        end = self.now + duration
        next_tick = self.now
        while True:
            self._send_client()
            self._send_server()
            self._events()
            if until is not None and until():
                return True
            times = [t for t in (self.client.get_timer(), self.server.get_timer()) if t is not None]
            if self.flight:
                times.append(self.flight[0][0])
            if tick is not None:
                times.append(next_tick)
            t = min(times, default=end)
            if t > end:
                self.now = end
                return False
            self.now = max(self.now, t)
            while self.flight and self.flight[0][0] <= self.now:
                _, _, to, dg, src = heapq.heappop(self.flight)
                self._deliver(to, dg, src)
            for q in (self.client, self.server):
                qt = q.get_timer()
                if qt is not None and qt <= self.now:
                    q.handle_timer(self.now)
            if tick is not None and next_tick <= self.now:
                tick()
                next_tick = self.now + every

    # -- the application ---------------------------------------------------------------------------
    def client_writes(self) -> None:
        """A small request on a stream, as an SMB client keeps sending (and gives the server
        anti-amplification credit on the new path)."""
        self.client.send_stream_data(0, b"x" * 200)

    def rebind(self) -> None:
        """The NAT maps the client to a new address: the server sees its next packet come from there."""
        self.client_addr = CLIENT_NEW

    def server_path(self) -> Any:
        return self.server.network_paths[0]

    def validated(self) -> bool:
        p = self.server_path()
        return p.addr == CLIENT_NEW and p.is_validated


def _first_response_lost(link: Link) -> Policy:
    """Drop the client's first batch that answers a PATH_CHALLENGE (on the new path)."""
    state = {"done": False}

    def policy(info: dict, dgs: list[bytes]) -> str:
        if info["responses"] and not state["done"] and link.client_addr == CLIENT_NEW:
            state["done"] = True
            return "drop"
        return "pass"
    return policy


def _start_migration(link: Link) -> Any:
    """Rebind, let the client's next packet reach the server: returns the path the server validates."""
    link.rebind()
    link.client_writes()
    assert link.run(0.5, link.client_writes, until=lambda: link.challenges_sent >= 1)
    path = link.server_path()
    assert path.addr == CLIENT_NEW and not path.is_validated and path.validation_deadline is not None
    return path


def test_lost_path_response_is_recovered_by_a_new_challenge():
    """The first PATH_RESPONSE is lost: the server challenges again and the path is validated
    before aioquic's abandon deadline (three PTO, RFC 9000 8.2.4), on the same path, no close."""
    link = Link()
    link.run(0.2, link.client_writes)
    link.c2s = _first_response_lost(link)
    path = _start_migration(link)
    deadline = path.validation_deadline
    ok = link.run(deadline - link.now - 0.001, link.client_writes, until=link.validated)
    assert ok, f"path not validated before the validation deadline ({link.challenges_sent} challenge(s) sent)"
    assert link.server_path() is path  # validated, not abandoned and rebuilt
    assert link.challenges_sent >= 2
    assert len(path.local_challenges) == 0  # aioquic clears them on validation
    link.run(1.0, link.client_writes)
    assert not link.closed
    assert link.validated()


def test_lost_path_challenge_is_sent_again():
    """The first PATH_CHALLENGE datagram is lost: a new challenge validates the path in time."""
    link = Link()
    link.run(0.2, link.client_writes)
    state = {"done": False}

    def drop_first_challenge(info: dict, dgs: list[bytes]) -> str:
        if info["challenge"] and not state["done"]:
            state["done"] = True
            return "drop"
        return "pass"
    link.s2c = drop_first_challenge
    path = _start_migration(link)
    ok = link.run(path.validation_deadline - link.now - 0.001, link.client_writes, until=link.validated)
    assert ok and link.server_path() is path
    link.run(1.0, link.client_writes)
    assert not link.closed


def test_challenges_stop_once_validated_and_are_bounded():
    """No loss: one challenge, validated, nothing more. With every response lost: at most three
    challenges (quic.ko's path timer probes three times), all still acceptable, then aioquic's
    deadline abandons the path (RFC 9000 8.2.4) and the connection is not closed."""
    link = Link()
    link.run(0.2, link.client_writes)
    path = _start_migration(link)
    assert link.run(0.5, link.client_writes, until=link.validated)
    link.run(2.0, link.client_writes)
    assert link.challenges_sent == 1 and link.server_path() is path

    link = Link()
    link.run(0.2, link.client_writes)
    link.c2s = lambda info, dgs: "drop" if info["responses"] else "pass"
    path = _start_migration(link)
    deadline = path.validation_deadline
    link.run(deadline - link.now - 0.001, link.client_writes)
    assert not path.is_validated
    assert link.challenges_sent == 3
    assert len(path.local_challenges) == 3  # none evicted: a late answer to any of them counts
    assert not link.closed


@pytest.mark.parametrize("after", ["before-validation", "after-validation"])
def test_late_response_to_an_earlier_challenge(after):
    """The answer to the first challenge is held back and arrives after the second challenge went
    out (before-validation: it validates the path) or after the second one's answer validated the
    path (after-validation: ignored). Neither is a PROTOCOL_VIOLATION."""
    link = Link()
    link.run(0.2, link.client_writes)
    state = {"n": 0}

    def hold_first(info: dict, dgs: list[bytes]) -> str:
        if info["responses"] and link.client_addr == CLIENT_NEW:
            state["n"] += 1
            if state["n"] == 1:
                return "hold"
            if after == "before-validation":
                return "drop"  # only the late answer can validate
        return "pass"
    link.c2s = hold_first
    path = _start_migration(link)
    first = list(path.local_challenges)
    assert len(first) == 1
    assert link.run(path.validation_deadline - link.now - 0.001, link.client_writes,
                    until=lambda: link.challenges_sent >= 2)
    if after == "after-validation":
        assert link.run(0.5, link.client_writes, until=link.validated)
    else:
        link.run(0.05, link.client_writes)
        assert not path.is_validated and first[0] in path.local_challenges
    link.release_held()
    link.run(0.5, link.client_writes)
    assert link.validated() and link.server_path() is path
    assert not link.closed
    assert not link.server.terminated and link.server.close_begun() is None


def test_response_to_a_challenge_never_sent_is_ignored():
    """A PATH_RESPONSE whose data no challenge carried: ignored (quic.ko: ``goto out``), no close."""
    link = Link()
    link.run(0.2, link.client_writes)
    link.client.network_paths[0].remote_challenges.append(os.urandom(8))  # the client answers nothing
    link.run(0.5, link.client_writes)
    assert not link.closed and link.server.close_begun() is None
