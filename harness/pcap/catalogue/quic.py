"""Named checks on QUIC (RFC 9000, RFC 9001, RFC 9369): handshake, version, ALPN, resumption and
0-RTT, key update, path validation and migration, connection counts, 1-RTT sent in clear.

Most compose the assertion primitives; the migration and clear-text checks walk the frame table
because each needs a page of reasoning about what tshark 4.0 shows.
"""
from __future__ import annotations

from typing import Any

from ..assertions import Absent, AllOf, Assertion, Context, Count, Custom, Values, frame_list
from ..table import Table
from .registry import INT, named

# QUIC v1 constants (RFC 9000)
HANDSHAKE_DONE = 0x1E
LONG_0RTT = 1
TLS_CERTIFICATE = 11
TLS_FINISHED = 20
TLS_ENCRYPTED_EXTENSIONS = 8
SMB2_NEGOTIATE, SMB2_SESSION_SETUP = 0, 1
_ADDR_FIELDS = ["ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "udp.srcport", "udp.dstport"]


@named("quic.handshake_completed")
def quic_handshake_completed() -> Assertion:
    """Every QUIC connection carries a HANDSHAKE_DONE frame (quic.frame_type 0x1e, sent by the server
    once the handshake is confirmed). Needs the keys: the frame is in 1-RTT packets."""
    return Count(f"quic.frame_type == {HANDSHAKE_DONE:#x}", min=1, per="quic")


@named("quic.version", {"eq": {"type": "integer"}})
def quic_version(eq: int = 0x00000001) -> Assertion:
    """Every long-header packet uses QUIC version `eq` (default 1, RFC 9000)."""
    return Values("quic.version", "quic.version", all={"eq": eq}, any={"eq": eq})


@named("quic.alpn", {"eq": {"type": "string"}})
def quic_alpn(eq: str = "smb") -> Assertion:
    """The server selected ALPN `eq` (EncryptedExtensions' ALPN) in every handshake it completed."""
    q = {"tls.handshake.type": TLS_ENCRYPTED_EXTENSIONS}
    return Values("tls.handshake.extensions_alpn_str", q, all={"eq": eq}, any={"eq": eq})


@named("quic.no_certificate", {"connection": INT})
def quic_no_certificate(connection: int | None = None) -> Assertion:
    """No TLS Certificate message (a resumed, PSK handshake) in QUIC connection `connection`
    (tshark's quic.connection.number, from 0) or, without it, in the whole capture."""
    match: dict[str, Any] = {"tls.handshake.type": TLS_CERTIFICATE}
    finished: dict[str, Any] = {"tls.handshake.type": TLS_FINISHED}
    if connection is not None:
        match["quic.connection.number"] = finished["quic.connection.number"] = connection
    # the Finished proves the handshake was decrypted: without keys, "no Certificate" proves nothing
    return AllOf("", Count({"match": finished}, min=1), Absent({"match": match}))


@named("quic.zero_rtt_used")
def quic_zero_rtt_used() -> Assertion:
    """A 0-RTT packet carried STREAM data that tshark decrypted (frame types 0x08-0x0f): the client
    used early data. Needs CLIENT_EARLY_TRAFFIC_SECRET in the key log.

    v1: long header type 1. QUIC v2 (RFC 9369) numbers the types differently and tshark 4.0 leaves
    quic.long.packet_type empty there, so a datagram of long-header packets only that carries STREAM
    frames counts too: of the long-header packets only 0-RTT may carry STREAM (RFC 9000 12.4)."""
    def check(ctx: Context):
        t = ctx.table
        frames = []
        for r in range(len(t)):
            if not any(8 <= int(f) <= 15 for f in t.values("quic.frame_type", r)):
                continue
            forms = t.values("quic.header_form", r)
            if LONG_0RTT in t.values("quic.long.packet_type", r) or (forms and all(int(f) == 1 for f in forms)):
                frames.append(t.numbers[r])
        exp = "at least 1 datagram with STREAM data in a 0-RTT packet"
        return bool(frames), exp, (f"{len(frames)} (frames {frame_list(frames)})" if frames else "0 (no frames)"), frames
    return Custom("quic.zero_rtt_used", check,
                  needs=["quic.frame_type", "quic.header_form", "quic.long.packet_type"])


@named("quic.key_phase_changed")
def quic_key_phase_changed() -> Assertion:
    """Short-header packets were sent in both key phases: a key update happened (RFC 9001 6)."""
    return Values("quic.key_phase", "quic.short", distinct={"min": 2})


@named("quic.path_validated")
def quic_path_validated() -> Assertion:
    """Some PATH_CHALLENGE was answered by a later PATH_RESPONSE with the same data (RFC 9000 8.2),
    i.e. a new path (migration, NAT rebinding) was validated."""
    def check(ctx: Context):
        t = ctx.table
        challenges, answered = [], []
        for r in range(len(t)):
            for data in t.values("quic.path_challenge.data", r):
                challenges.append((t.numbers[r], data))
        for n, data in challenges:
            for r in range(t.row_of[n] + 1, len(t)):
                if data in t.values("quic.path_response.data", r):
                    answered.append((n, t.numbers[r]))
                    break
        if not challenges:
            return False, "a PATH_CHALLENGE answered by a PATH_RESPONSE", "no PATH_CHALLENGE frame", []
        if not answered:
            return (False, "a PATH_CHALLENGE answered by a PATH_RESPONSE",
                    f"PATH_CHALLENGE at {frame_list([n for n, _ in challenges])} never answered",
                    [n for n, _ in challenges])
        return (True, "a PATH_CHALLENGE answered by a PATH_RESPONSE",
                ", ".join(f"challenge {a} answered at {b}" for a, b in answered), [x for p in answered for x in p])
    return Custom("quic.path_validated", check, needs=["quic.path_challenge.data", "quic.path_response.data"])


@named("quic.connections", {"eq": INT, "min": INT, "max": INT})
def quic_connections(eq: int | None = None, min: int | None = None, max: int | None = None) -> Assertion:
    """The number of QUIC connections tshark saw (quic.connection.number). `quic.connections: {eq: 1}`
    asserts a migration did not start a new connection."""
    spec = {k: v for k, v in (("eq", eq), ("min", min), ("max", max)) if v is not None} or {"min": 1}
    return Values("quic.connection.number", "quic", distinct=spec)


@named("quic.no_new_connection")
def quic_no_new_connection() -> Assertion:
    """Exactly one QUIC connection in the capture (a migration did not become a new connection)."""
    return quic_connections(eq=1)


def _addr(t: Table, r: int, which: str) -> tuple:
    ip = (t.values(f"ip.{which}", r) or t.values(f"ipv6.{which}", r) or ("?",))[0]
    port = (t.values(f"udp.{which[:3]}port", r) or ("?",))[0]
    return (str(ip), port)


@named("quic.new_cid_after_migration")
def quic_new_cid_after_migration() -> Assertion:
    """The client migrated (its 1-RTT packets to the server came from a new address or port) and,
    on every new path, used only destination connection ids it never used on an earlier path
    (RFC 9000 9.5: an endpoint MUST NOT reuse a connection id when it migrates). A path change that
    keeps the old DCID looks like NAT rebinding and fails. The server is the destination of each
    connection's first packet. Needs the keys only to link the new DCID to the connection."""
    def check(ctx: Context):
        t = ctx.table
        server: dict[Any, tuple] = {}
        paths: dict[Any, dict[tuple, set]] = {}
        moves, reused = [], []
        for r in range(len(t)):
            conn = t.values("quic.connection.number", r)
            if not conn:
                continue
            conn = conn[0]
            if conn not in server:
                server[conn] = _addr(t, r, "dst")
            if not t.values("quic.short", r) or _addr(t, r, "dst") != server[conn]:
                continue
            dcids = t.values("quic.dcid", r)
            if not dcids:
                continue
            dcid, path = str(dcids[-1]), _addr(t, r, "src")  # a short header is the last packet in a datagram
            seen = paths.setdefault(conn, {})
            if seen and path not in seen:
                moves.append((conn, path, t.numbers[r]))
            if seen and path != next(iter(seen)) and any(dcid in v for p, v in seen.items() if p != path):
                reused.append((conn, path, t.numbers[r], dcid))
            seen.setdefault(path, set()).add(dcid)
        exp = "a client migration to a new path with a new destination connection id"
        if not moves:
            return False, exp, "no migration: every QUIC client stayed on its first address", []
        if reused:
            first = {}
            for conn, path, n, dcid in reused:
                first.setdefault((conn, path), (n, dcid))
            txt = "; ".join(f"connection {c} moved to {p[0]}:{p[1]} but kept DCID {d} (frame {n})"
                            for (c, p), (n, d) in first.items())
            return False, exp, txt, [n for n, _ in first.values()]
        txt = "; ".join(f"connection {c} moved to {p[0]}:{p[1]} at frame {n} with a new DCID" for c, p, n in moves)
        return True, exp, txt, [n for *_, n in moves]
    return Custom("quic.new_cid_after_migration", check,
                  needs=["quic.connection.number", "quic.short", "quic.dcid", *_ADDR_FIELDS])


@named("quic.1rtt_in_clear", {"marker": {"type": "string", "pattern": "^([0-9a-fA-F]{2})+$"},
                              "absent": {"type": "boolean"}})
def quic_1rtt_in_clear(marker: str = "fe534d42", absent: bool = False) -> Assertion:
    """Short-header (1-RTT) packets carry their payload in clear, as quic.ko sends them when both
    ends set disable_1rtt_encryption (transport parameter 0xbaad). tshark 4.0 has no notion of
    that: it shows such packets as undecryptable, the bytes in `quic.remaining_payload` (no keys)
    or `quic.protected_payload` with the expert note "Decryption failed" (keys given; packets
    shorter than the header-protection sample even show as Malformed). So the evidence is that
    those undecrypted bytes contain `marker` (hex; default FE 'S' 'M' 'B', the SMB2 protocol id),
    which real AEAD output never does. `absent: true` asserts the opposite (nothing in clear)."""
    want = bytes.fromhex(marker).hex()

    def check(ctx: Context):
        t = ctx.table
        hits = []
        for r in range(len(t)):
            if not t.values("quic.short", r):
                continue
            blobs = [*t.values("quic.remaining_payload", r), *t.values("quic.protected_payload", r)]
            if any(want in str(b).replace(":", "").lower() for b in blobs):
                hits.append(t.numbers[r])
        what = f"1-RTT payload containing {want} readable without keys"
        if absent:
            return (not hits, f"no {what}", f"{len(hits)} in clear ({frame_list(hits)})" if hits
                    else "none in clear", hits)
        return (bool(hits), what, f"{len(hits)} short-header packet(s) in clear ({frame_list(hits)})" if hits
                else "no short-header packet with its payload in clear", hits)
    return Custom("quic.1rtt_in_clear", check,
                  needs=["quic.short", "quic.remaining_payload", "quic.protected_payload"])
