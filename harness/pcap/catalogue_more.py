"""Named checks that need more than a count: migration with a fresh connection id, 1-RTT sent in
clear, transport security accepted, command sequences per session, replay, channel binding, RDMA.

Why a module of its own: these checks walk the table (per connection, per session, in order)
instead of composing the primitives, and each needs a page of reasoning about what tshark 4.0
shows. They register in the same CATALOGUE (imported by catalogue.py), so YAML sees one list.
"""
from __future__ import annotations

from typing import Any

from .assertions import AllOf, Assertion, Context, Count, Custom, frame_list
from .catalogue import CATALOGUE, named
from .table import Table

SMB2_COMMANDS = ["NEGOTIATE", "SESSION_SETUP", "LOGOFF", "TREE_CONNECT", "TREE_DISCONNECT", "CREATE", "CLOSE",
                 "FLUSH", "READ", "WRITE", "LOCK", "IOCTL", "CANCEL", "ECHO", "QUERY_DIRECTORY", "CHANGE_NOTIFY",
                 "QUERY_INFO", "SET_INFO", "OPLOCK_BREAK"]
ACCEPT_TRANSPORT_LEVEL_SECURITY = 0x1  # SMB2_TRANSPORT_CAPABILITIES flag (MS-SMB2 2.2.3.1.5)
TRANSPORT_CAPABILITIES = 0x6
# RoCE RC opcodes (IBA 9.2): RDMA WRITE FIRST..ONLY_WITH_IMMEDIATE, READ REQUEST, READ RESPONSE *
IB_RDMA_WRITE = range(0x06, 0x0C)
IB_RDMA_READ_REQUEST = 0x0C
IB_RDMA_READ_RESPONSE = range(0x0D, 0x11)
CHANNEL_RDMA = {1, 2}  # SMB2_CHANNEL_RDMA_V1, SMB2_CHANNEL_RDMA_V1_INVALIDATE

_CONN_FIELDS = ["tcp.stream", "quic.connection.number", "udp.srcport", "udp.dstport"]
_ADDR_FIELDS = ["ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "udp.srcport", "udp.dstport"]


def cmd_name(c: int) -> str:
    return SMB2_COMMANDS[c] if 0 <= c < len(SMB2_COMMANDS) else f"cmd{c}"


def cmd_number(c: Any) -> int:
    """A command given as a number or a name (case-insensitive, `SESSION_SETUP` or `session_setup`)."""
    if isinstance(c, int):
        return c
    name = str(c).strip().upper().replace("-", "_")
    if name not in SMB2_COMMANDS:
        raise ValueError(f"unknown SMB2 command {c!r} (one of {', '.join(SMB2_COMMANDS)})")
    return SMB2_COMMANDS.index(name)


def conn_key(t: Table, r: int) -> tuple:
    """Which transport connection a frame belongs to: TCP stream, QUIC connection, else UDP ports
    (SMB Direct over RoCEv2 has no connection number in tshark)."""
    if v := t.values("tcp.stream", r):
        return ("tcp", v[0])
    if v := t.values("quic.connection.number", r):
        return ("quic", v[0])
    ports = sorted([*t.values("udp.srcport", r), *t.values("udp.dstport", r)])
    return ("udp", *ports)


def _fmt_conn(k: tuple) -> str:
    return f"{k[0]} {'/'.join(map(str, k[1:]))}" if k[0] == "udp" else f"{k[0]} stream {k[1]}" if k[0] == "tcp" \
        else f"quic connection {k[1]}"


def smb_pdus(t: Table, r: int) -> list[tuple[int, int, int]]:
    """(cmd, response, sesid) of each SMB2 PDU in a frame. A decrypted transform frame shows
    smb2.sesid once more (the transform header's) before the inner header's: drop it."""
    cmds, resp, sids = t.values("smb2.cmd", r), t.values("smb2.flags.response", r), list(t.values("smb2.sesid", r))
    if len(sids) > len(cmds) and t.values("smb2.header.transform.msg_size", r):
        sids = sids[len(sids) - len(cmds):]
    return [(c, int(bool(x)), s) for c, x, s in zip(cmds, resp, sids + [0] * (len(cmds) - len(sids)), strict=False)]


# --------------------------------------------------------------------------- QUIC

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


# --------------------------------------------------------------------------- SMB2

@named("smb2.transport_security_accepted")
def smb2_transport_security_accepted() -> Assertion:
    """A NEGOTIATE response carries an SMB2_TRANSPORT_CAPABILITIES context with
    SMB2_ACCEPT_TRANSPORT_LEVEL_SECURITY (MS-SMB2 2.2.4.1.5: the server relies on QUIC/TLS, no SMB
    encryption), and on those connections no SMB3 transform header follows."""
    def check(ctx: Context):
        t = ctx.table
        accepted: dict[tuple, int] = {}
        for r in range(len(t)):
            if not any(c == 0 and resp for c, resp, _ in smb_pdus(t, r)):
                continue
            types, flags = t.values("smb2.negotiate_context.type", r), t.values("smb2.negotiate_context.transport_flags", r)
            if TRANSPORT_CAPABILITIES in types and any(int(f) & ACCEPT_TRANSPORT_LEVEL_SECURITY for f in flags):
                accepted.setdefault(conn_key(t, r), r)
        exp = "ACCEPT_TRANSPORT_LEVEL_SECURITY in a NEGOTIATE response, then no transform header"
        if not accepted:
            return False, exp, "no NEGOTIATE response with TRANSPORT_CAPABILITIES/ACCEPT_TRANSPORT_LEVEL_SECURITY", []
        bad = [r for r in range(len(t)) if t.values("smb2.header.transform.msg_size", r)
               and conn_key(t, r) in accepted and r > accepted[conn_key(t, r)]]
        acc = ", ".join(f"{_fmt_conn(k)} at frame {t.numbers[r]}" for k, r in accepted.items())
        if bad:
            return (False, exp, f"accepted ({acc}) but {len(bad)} transform header(s) follow: "
                    f"{frame_list(ctx.nums(bad))}", ctx.nums(bad))
        return True, exp, f"accepted ({acc}), no transform header after", [t.numbers[r] for r in accepted.values()]
    return Custom("smb2.transport_security_accepted", check,
                  needs=["smb2.cmd", "smb2.flags.response", "smb2.sesid", "smb2.negotiate_context.type",
                         "smb2.negotiate_context.transport_flags", "smb2.header.transform.msg_size", *_CONN_FIELDS])


def session_commands(t: Table) -> dict[int, list[tuple[int, int]]]:
    """SMB2 request commands per session id, as (frame, cmd), in frame order. Requests sent before
    the session has an id (NEGOTIATE, the first SESSION_SETUP leg, id 0) belong to the first session
    id that appears later on the same connection; a session spans all its channels."""
    out: dict[int, list[tuple[int, int]]] = {}
    waiting: dict[tuple, list[tuple[int, int]]] = {}
    for r in range(len(t)):
        for c, resp, sid in smb_pdus(t, r):
            k = conn_key(t, r)
            if sid:
                out.setdefault(sid, []).extend(waiting.pop(k, []))
            if resp:
                continue
            if sid:
                out[sid].append((t.numbers[r], c))
            else:
                waiting.setdefault(k, []).append((t.numbers[r], c))
    return out


@named("smb2.command_sequence", {"commands": {"type": "array", "minItems": 1,
                                              "items": {"anyOf": [{"enum": SMB2_COMMANDS},
                                                                  {"type": "integer", "minimum": 0}]}},
                                 "exact": {"type": "boolean"}, "session": {"type": "integer"}})
def smb2_command_sequence(commands: list | None = None, exact: bool = False, session: int | None = None) -> Assertion:
    """Each SMB session's requests include `commands` in this order (names like TREE_CONNECT or
    numbers; other commands may come between), or with `exact` are exactly that list. `session`
    restricts it to one session id. NEGOTIATE and the first SESSION_SETUP leg (session id 0) count
    for the session that the connection then gets."""
    if not commands:
        raise ValueError("smb2.command_sequence needs `commands`, a list of SMB2 command names")
    want = [cmd_number(c) for c in commands]
    want_txt = " → ".join(cmd_name(c) for c in want)

    def check(ctx: Context):
        per = session_commands(ctx.table)
        if session is not None:
            per = {session: per.get(session, [])}
        scope = f"session 0x{session:x}" if session is not None else "every session"
        exp = f"{'exactly ' if exact else ''}{want_txt} in {scope}"
        if not per:
            return False, exp, "no SMB2 session in the capture", []
        bad, frames = [], []
        for sid, seq in per.items():
            got = [c for _, c in seq]
            shown = ", ".join(f"{cmd_name(c)}@{n}" for n, c in seq[:16]) + (" …" if len(seq) > 16 else "")
            if exact:
                if got != want:
                    bad.append(f"session 0x{sid:x}: [{shown}]")
                    frames += [n for n, _ in seq]
                continue
            i = 0
            for c in got:
                if i < len(want) and c == want[i]:
                    i += 1
            if i < len(want):
                bad.append(f"session 0x{sid:x}: step {i + 1} ({cmd_name(want[i])}) missing; requests [{shown}]")
                frames += [n for n, _ in seq]
        return not bad, exp, "; ".join(bad) or f"{len(per)} session(s) conform", frames
    return Custom("smb2.command_sequence", check, needs=["smb2.cmd", "smb2.flags.response", "smb2.sesid",
                                                         "smb2.header.transform.msg_size", *_CONN_FIELDS])


CATALOGUE["smb2.command_sequence"].params["required"] = ["commands"]


@named("smb2.replay_flag_seen", {"min": {"type": "integer", "minimum": 1}})
def smb2_replay_flag_seen(min: int = 1) -> Assertion:
    """At least `min` SMB2 requests carry SMB2_FLAGS_REPLAY_OPERATION (smb2.flags.replay): the
    client replayed an operation on a (new) channel after a failure (MS-SMB2 3.2.5.1)."""
    return Count({"smb2.flags.replay": 1, "smb2.flags.response": 0}, min=min)


@named("smb2.channel_binding")
def smb2_channel_binding() -> Assertion:
    """A SESSION_SETUP request with SMB2_SESSION_FLAG_BINDING names a session id established
    earlier on ANOTHER connection (TCP stream, QUIC connection), and the binding succeeded (its
    final SESSION_SETUP response has status 0): a second channel joined the session (MS-SMB2 3.2.4.1.7)."""
    def check(ctx: Context):
        t = ctx.table
        established: dict[int, tuple[tuple, int]] = {}
        binds = []
        for r in range(len(t)):
            pdus = smb_pdus(t, r)
            if len(pdus) != 1 or pdus[0][0] != 1:
                continue
            _, resp, sid = pdus[0]
            k = conn_key(t, r)
            if resp:
                status = (t.values("smb2.nt_status", r) or (0,))[0]
                if status == 0 and sid:
                    for b in binds:
                        if b["sid"] == sid and b["conn"] == k and b.get("ok") is None:
                            b["ok"] = t.numbers[r]
                    established.setdefault(sid, (k, t.numbers[r]))
            elif 1 in t.values("smb2.ses_req_flags.session_binding", r):
                binds.append({"sid": sid, "conn": k, "frame": t.numbers[r], "known": established.get(sid)})
        exp = "a SESSION_SETUP with the BINDING flag on a second connection for a known session, answered with success"
        if not binds:
            return False, exp, "no SESSION_SETUP request with SMB2_SESSION_FLAG_BINDING", []
        good, bad = [], []
        for b in binds:
            known = b["known"]
            if known is None:
                bad.append(f"frame {b['frame']}: binds session 0x{b['sid']:x}, not established before")
            elif known[0] == b["conn"]:
                bad.append(f"frame {b['frame']}: binds session 0x{b['sid']:x} on the connection that established it")
            elif not b.get("ok"):
                bad.append(f"frame {b['frame']}: binding of session 0x{b['sid']:x} got no successful response")
            else:
                good.append(f"session 0x{b['sid']:x} from {_fmt_conn(known[0])} (frame {known[1]}) bound on "
                            f"{_fmt_conn(b['conn'])} (frames {b['frame']}, {b['ok']})")
        frames = [b["frame"] for b in binds]
        return bool(good), exp, "; ".join(good or bad), frames
    return Custom("smb2.channel_binding", check,
                  needs=["smb2.cmd", "smb2.flags.response", "smb2.sesid", "smb2.nt_status",
                         "smb2.ses_req_flags.session_binding", "smb2.header.transform.msg_size", *_CONN_FIELDS])


# --------------------------------------------------------------------------- SMB Direct

def _ops(values) -> str:
    return ",".join(str(v) for v in values)


@named("smbdirect.rdma_used", {"read": {"type": "boolean"}, "write": {"type": "boolean"}})
def smbdirect_rdma_used(read: bool = True, write: bool = True) -> Assertion:
    """SMB Direct moved file data by RDMA: `write` (the server pushes READ data) needs an RDMA WRITE
    (RoCE opcodes 0x06-0x0b, iWARP RDMAP Write) and an SMB2 READ request with Channel RDMA_V1 or
    RDMA_V1_INVALIDATE; `read` (the server pulls WRITE data) needs an RDMA READ REQUEST (0x0c) and
    READ RESPONSE (0x0d-0x10, iWARP 1 and 2) and an SMB2 WRITE request with an RDMA channel.
    tshark 4.0 dissects RDMA transfers at the IB/iWARP level and leaves their payload a `data` layer, so it is counted, not decoded."""
    chan = f"smb2.channel in {{{_ops(CHANNEL_RDMA)}}} && smb2.flags.response == 0"
    parts: list[Assertion] = []
    if write:
        parts += [Count(f"infiniband.bth.opcode in {{{_ops(IB_RDMA_WRITE)}}} || iwarp_rdma.opcode == 0", min=1),
                  Count(f"smb2.cmd == 8 && {chan}", min=1)]
    if read:
        parts += [Count(f"infiniband.bth.opcode == {IB_RDMA_READ_REQUEST} || iwarp_rdma.opcode == 1", min=1),
                  Count(f"infiniband.bth.opcode in {{{_ops(IB_RDMA_READ_RESPONSE)}}} || iwarp_rdma.opcode == 2", min=1),
                  Count(f"smb2.cmd == 9 && {chan}", min=1)]
    if not parts:
        raise ValueError("smbdirect.rdma_used: at least one of read/write must be true")
    return AllOf("", *parts)
