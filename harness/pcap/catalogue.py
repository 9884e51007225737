"""Named checks for this domain: each a Python function returning an Assertion, and a YAML name.

Why a catalogue: scenario files should say `quic.path_validated`, not re-derive which tshark fields
prove it. Each entry documents the evidence it uses (the fields), so a reviewer can judge whether
the check proves what its name claims. Parameters are validated by a small JSON schema per entry.

    from harness.pcap import catalogue
    cap.expect(catalogue.quic_handshake_completed(), catalogue.smb2_dialect(0x311))
    # YAML: - quic.handshake_completed
    #       - smb2.dialect: {eq: 0x311}
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .assertions import Absent, AllOf, Assertion, Context, Count, Custom, Values, frame_list

# QUIC v1 constants (RFC 9000)
HANDSHAKE_DONE = 0x1E
LONG_0RTT = 1
TLS_CERTIFICATE = 11
TLS_FINISHED = 20
TLS_ENCRYPTED_EXTENSIONS = 8
SMB2_NEGOTIATE, SMB2_SESSION_SETUP = 0, 1
STATUS_MORE_PROCESSING_REQUIRED = 0xC0000016


@dataclass
class Entry:
    name: str
    fn: Callable[..., Assertion]
    params: dict  # JSON schema of the YAML arguments (an object)
    doc: str


CATALOGUE: dict[str, Entry] = {}


def named(name: str, params: dict | None = None):
    """Register a check under its YAML name; the function's docstring is its documentation."""
    schema = {"type": "object", "additionalProperties": False, "properties": params or {}}

    def deco(fn):
        def wrapper(*a, **kw):
            return fn(*a, **kw).named(name)
        wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
        CATALOGUE[name] = Entry(name, wrapper, schema, (fn.__doc__ or "").strip())
        return wrapper
    return deco


_INT = {"type": "integer", "minimum": 0}


# --------------------------------------------------------------------------- QUIC

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


@named("quic.no_certificate", {"connection": _INT})
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


@named("quic.connections", {"eq": _INT, "min": _INT, "max": _INT})
def quic_connections(eq: int | None = None, min: int | None = None, max: int | None = None) -> Assertion:
    """The number of QUIC connections tshark saw (quic.connection.number). `quic.connections: {eq: 1}`
    asserts a migration did not start a new connection."""
    spec = {k: v for k, v in (("eq", eq), ("min", min), ("max", max)) if v is not None} or {"min": 1}
    return Values("quic.connection.number", "quic", distinct=spec)


@named("quic.no_new_connection")
def quic_no_new_connection() -> Assertion:
    """Exactly one QUIC connection in the capture (a migration did not become a new connection)."""
    return quic_connections(eq=1)


# --------------------------------------------------------------------------- SMB2

@named("smb2.dialect", {"eq": {"type": "integer"}})
def smb2_dialect(eq: int = 0x0311) -> Assertion:
    """Every NEGOTIATE response selected dialect `eq` (default 0x0311)."""
    q = {"smb2.cmd": SMB2_NEGOTIATE, "smb2.flags.response": 1}
    return Values("smb2.dialect", q, all={"eq": eq}, any={"eq": eq})


_AFTER_SETUP = "smb2.cmd && !(smb2.cmd in {0,1}) && smb2.sesid != 0"


@named("smb2.signed")
def smb2_signed() -> Assertion:
    """Every SMB2 message after SESSION_SETUP that is not inside an SMB3 transform header has the
    signed flag (smb2.flags.signature). tshark does not verify signatures; this is the flag only."""
    q = f"{_AFTER_SETUP} && !smb2.header.transform.msg_size"
    return AllOf("", Count(q, min=1), Values("smb2.flags.signature", q, all={"eq": 1}))


@named("smb2.encrypted")
def smb2_encrypted() -> Assertion:
    """Every SMB2 message after SESSION_SETUP travelled inside an SMB3 transform header, and at
    least one such message exists. Frames that stayed encrypted count as encrypted."""
    return AllOf("", Count("smb2.header.transform.msg_size", min=1),
                 Absent(f"{_AFTER_SETUP} && !smb2.header.transform.msg_size"))


@named("smb2.no_error")
def smb2_no_error() -> Assertion:
    """No SMB2 response carries an error status: severity bits 11 (0xC0000000 and up, MS-ERREF
    2.3). STATUS_MORE_PROCESSING_REQUIRED of a multi-leg SESSION_SETUP is not an error, and neither
    are warnings such as STATUS_NO_MORE_FILES (0x80000006) that end every directory listing."""
    return Absent(f"smb2.flags.response == 1 && smb2.nt_status >= 0xc0000000 && smb2.nt_status != {STATUS_MORE_PROCESSING_REQUIRED:#x}")


@named("smb2.all_requests_answered")
def smb2_all_requests_answered() -> Assertion:
    """Every SMB2 request (per message id and TCP stream/QUIC connection) has a response."""
    def check(ctx: Context):
        t = ctx.table
        pending: dict[tuple, int] = {}
        for r in range(len(t)):
            conn = (t.values("tcp.stream", r) or t.values("quic.connection.number", r) or (None,))[0]
            for mid, resp in zip(t.values("smb2.msg_id", r), t.values("smb2.flags.response", r), strict=False):
                if resp:
                    pending.pop((conn, mid), None)
                else:
                    pending.setdefault((conn, mid), t.numbers[r])
        lonely = sorted(pending.values())
        return (not lonely, "a response for every SMB2 request",
                f"{len(lonely)} unanswered: {frame_list(lonely)}" if lonely else "all answered", lonely)
    return Custom("smb2.all_requests_answered", check,
                  needs=["smb2.msg_id", "smb2.flags.response", "tcp.stream", "quic.connection.number"])


@named("smbdirect.negotiated")
def smbdirect_negotiated() -> Assertion:
    """An SMB Direct negotiate response with status 0 and version 1.0 (MS-SMBD 2.2.2)."""
    q = "smb_direct.negotiate_response"
    return AllOf("", Count(q, min=1), Values("smb_direct.version.negotiated", q, all={"eq": 0x0100}),
                 Values("smb_direct.status", q, all={"eq": 0}))


# --------------------------------------------------------------------------- TCP and general

@named("tcp.no_retransmission")
def tcp_no_retransmission() -> Assertion:
    """tshark's TCP analysis flagged no retransmission (plain, fast or spurious)."""
    return Absent("tcp.analysis.retransmission || tcp.analysis.fast_retransmission"
                  " || tcp.analysis.spurious_retransmission")


@named("no_malformed", {"ignore_empty_fin": {"type": "boolean"}, "ignore_spnego_over_quic": {"type": "boolean"}})
def no_malformed(ignore_empty_fin: bool = False, ignore_spnego_over_quic: bool = False) -> Assertion:
    """No frame has a malformed-packet error (_ws.malformed). `ignore_empty_fin` skips QUIC packets
    with a FIN, which tshark 4.0 shows as malformed NBSS when the STREAM frame is empty.
    `ignore_spnego_over_quic` skips SMB2 NEGOTIATE responses over QUIC: tshark 4.0 reads their
    SPNEGO negTokenInit2 (negHints at [3], as Windows and Samba send it) as RFC 4178 negTokenInit
    when the port is not 445/139, and reports a BER error (seen in captures/smb3-quic.pcap)."""
    flt = "_ws.malformed" + (" && !(quic.stream.fin == 1)" if ignore_empty_fin else "")
    if ignore_spnego_over_quic:
        flt += " && !(quic && smb2.cmd == 0 && smb2.flags.response == 1)"
    return Absent(flt)


@named("decrypted")
def decrypted() -> Assertion:
    """Everything decrypted: no QUIC payload tshark could not decrypt and no SMB3 transform without
    a decrypted SMB2 header inside. On failure the notices name the missing keys."""
    return AllOf("", Absent("quic.remaining_payload"), Absent("smb2.header.transform.msg_size && !smb2.cmd"))


def build(name: str, args: Any = None) -> Assertion:
    """A catalogue check from its YAML name and arguments (a mapping or nothing)."""
    entry = CATALOGUE[name]
    return entry.fn(**(args or {}))


# The checks that walk the table per connection/session live in catalogue_more; importing it here
# registers them, so `catalogue.CATALOGUE` and `catalogue.<function>` are the whole list.
from .catalogue_more import quic_1rtt_in_clear as quic_1rtt_in_clear  # noqa: E402
from .catalogue_more import quic_new_cid_after_migration as quic_new_cid_after_migration  # noqa: E402

__all__ = [n for n, v in list(globals().items()) if callable(v) and getattr(v, "__module__", "").startswith(__package__)
           and not n.startswith("_")] + ["CATALOGUE", "build"]
