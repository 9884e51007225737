"""Named checks on SMB2/3 (MS-SMB2): dialect, signing and encryption, errors, every request
answered, transport security over QUIC, command sequences per session, replay, channel binding.

The helpers that walk the frame table per connection and per session (conn_key, smb_pdus,
session_commands) live here too: only SMB2 checks need them.
"""
from __future__ import annotations

from typing import Any

from ..assertions import Absent, AllOf, Assertion, Context, Count, Custom, Values, frame_list
from ..table import Table
from .registry import CATALOGUE, named

SMB2_NEGOTIATE, SMB2_SESSION_SETUP = 0, 1
STATUS_MORE_PROCESSING_REQUIRED = 0xC0000016
SMB2_COMMANDS = ["NEGOTIATE", "SESSION_SETUP", "LOGOFF", "TREE_CONNECT", "TREE_DISCONNECT", "CREATE", "CLOSE",
                 "FLUSH", "READ", "WRITE", "LOCK", "IOCTL", "CANCEL", "ECHO", "QUERY_DIRECTORY", "CHANGE_NOTIFY",
                 "QUERY_INFO", "SET_INFO", "OPLOCK_BREAK"]
ACCEPT_TRANSPORT_LEVEL_SECURITY = 0x1  # SMB2_TRANSPORT_CAPABILITIES flag (MS-SMB2 2.2.3.1.5)
TRANSPORT_CAPABILITIES = 0x6

_CONN_FIELDS = ["tcp.stream", "quic.connection.number", "udp.srcport", "udp.dstport"]


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
