"""The rows of a ladder (sequence) diagram: endpoints as lanes, one labelled event per frame.

Every rendering (text.py, picture.py) draws these rows, so they never disagree. The events come
from the same frame table as the assertions (one tshark pass), so what the ladder shows is exactly
what the assertions saw.
"""
from __future__ import annotations

from ..capture import Capture
from ..smbinfo import INFO_FIELD, details

#: one row: frame number, time, from-lane, to-lane, label
Event = tuple[int, float, int, int, str]

SMB2_COMMANDS = ["NEGOTIATE", "SESSION_SETUP", "LOGOFF", "TREE_CONNECT", "TREE_DISCONNECT", "CREATE", "CLOSE",
                 "FLUSH", "READ", "WRITE", "LOCK", "IOCTL", "CANCEL", "ECHO", "QUERY_DIRECTORY", "CHANGE_NOTIFY",
                 "QUERY_INFO", "SET_INFO", "OPLOCK_BREAK", "SERVER_TO_CLIENT_NOTIFICATION"]
QUIC_LONG = {0: "Initial", 1: "0-RTT", 2: "Handshake", 3: "Retry"}
QUIC_FRAMES = {0x01: "PING", 0x02: "ACK", 0x03: "ACK", 0x04: "RESET_STREAM", 0x05: "STOP_SENDING", 0x06: "CRYPTO",
               0x07: "NEW_TOKEN", 0x10: "MAX_DATA", 0x11: "MAX_STREAM_DATA", 0x12: "MAX_STREAMS",
               0x13: "MAX_STREAMS", 0x14: "DATA_BLOCKED", 0x15: "STREAM_DATA_BLOCKED", 0x16: "STREAMS_BLOCKED",
               0x17: "STREAMS_BLOCKED", 0x18: "NEW_CONNECTION_ID", 0x19: "RETIRE_CONNECTION_ID",
               0x1A: "PATH_CHALLENGE", 0x1B: "PATH_RESPONSE", 0x1C: "CONNECTION_CLOSE", 0x1D: "CONNECTION_CLOSE",
               0x1E: "HANDSHAKE_DONE", 0x30: "DATAGRAM", 0x31: "DATAGRAM"}
TLS_TYPES = {1: "ClientHello", 2: "ServerHello", 4: "NewSessionTicket", 8: "EncryptedExtensions",
             11: "Certificate", 15: "CertificateVerify", 20: "Finished"}

FIELDS = ["ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "tcp.srcport", "tcp.dstport", "udp.srcport", "udp.dstport",
          "tcp.flags.syn", "tcp.flags.fin", "tcp.flags.reset", "tcp.flags.ack", "tcp.len",
          "tcp.analysis.retransmission", "smb2.cmd", "smb2.flags.response", "smb2.nt_status",
          "smb2.header.transform.msg_size", "quic.long.packet_type", "quic.short", "quic.frame_type", "quic.key_phase",
          "quic.remaining_payload", "tls.handshake.type", "smb_direct.negotiate_request",
          "smb_direct.negotiate_response", "infiniband.bth.opcode", "infiniband.reth.dmalen", "_ws.malformed", INFO_FIELD]
# RoCE RC opcodes that move memory instead of carrying SMBD messages (IBA 9.2)
IB_RDMA = {0x06: "RDMA WRITE FIRST", 0x07: "RDMA WRITE MIDDLE", 0x08: "RDMA WRITE LAST", 0x09: "RDMA WRITE LAST+IMM",
           0x0A: "RDMA WRITE ONLY", 0x0B: "RDMA WRITE ONLY+IMM", 0x0C: "RDMA READ REQUEST",
           0x0D: "RDMA READ RESPONSE FIRST", 0x0E: "RDMA READ RESPONSE MIDDLE", 0x0F: "RDMA READ RESPONSE LAST",
           0x10: "RDMA READ RESPONSE ONLY", 0x11: "ACK"}


def _smb2(f) -> str:
    cmds, resps, stats = f.all("smb2.cmd"), f.all("smb2.flags.response"), f.all("smb2.nt_status")
    parts = []
    info = details(f.get(INFO_FIELD), len(cmds))  # file names, status names, info classes
    for i, c in enumerate(cmds):
        name = SMB2_COMMANDS[c] if 0 <= c < len(SMB2_COMMANDS) else f"cmd {c}"
        resp = resps[i] if i < len(resps) else 0
        st = stats[i] if i < len(stats) else 0
        extra = info[i] if info else ""
        status = f" status=0x{st:08x}" if resp and st and "STATUS_" not in extra else ""
        parts.append(f"{name} {'resp' if resp else 'req'}" + status + (f" {extra}" if extra else ""))
    prefix = "SMB3[enc] " if f.all("smb2.header.transform.msg_size") else "SMB2 "
    if not parts and f.all("smb2.header.transform.msg_size"):
        return "SMB3 encrypted (no key)"
    return prefix + ", ".join(parts) if parts else ""


def _quic(f) -> str:
    if f.all("quic.long.packet_type"):
        kinds = [QUIC_LONG.get(t, f"long {t}") for t in f.all("quic.long.packet_type")]
    else:
        kinds = ["1-RTT" + (" KP1" if 1 in f.all("quic.key_phase") else "")]
    frames: list[str] = []
    for t in f.all("quic.frame_type"):
        name = "STREAM" if 0x08 <= t <= 0x0F else QUIC_FRAMES.get(t, "" if t == 0 else f"0x{t:x}")
        if name and name not in frames:
            frames.append(name)
    tls = [TLS_TYPES.get(t, str(t)) for t in f.all("tls.handshake.type")]
    enc = " (encrypted)" if f.all("quic.remaining_payload") else ""
    return f"QUIC {'+'.join(dict.fromkeys(kinds))} {' '.join(frames)}{' ' + ','.join(tls) if tls else ''}{enc}".strip()


def _tcp(f) -> str:
    flags = []
    if f.get("tcp.flags.syn"):
        flags.append("SYN")
    if f.get("tcp.flags.fin"):
        flags.append("FIN")
    if f.get("tcp.flags.reset"):
        flags.append("RST")
    if flags and f.get("tcp.flags.ack") and "SYN" in flags:
        flags.append("ACK")
    text = "TCP " + ",".join(flags) if flags else ""
    if f.get("tcp.len"):
        text = (text + " " if text else "TCP ") + f"data len={f['tcp.len']}"
    if f.get("tcp.analysis.retransmission") is not None:
        text += " [retransmission]"
    return text


def event(f, all_tcp: bool = False) -> str:
    smb = _smb2(f)
    label = ""
    if f.all("quic.frame_type") or f.all("quic.long.packet_type") or f.all("quic.short"):
        label = _quic(f) + (f" | {smb}" if smb else "")
    elif f.all("smb_direct.negotiate_request") or f.all("smb_direct.negotiate_response"):
        label = "SMBD Negotiate " + ("Request" if f.all("smb_direct.negotiate_request") else "Response")
    elif (op := f.get("infiniband.bth.opcode")) in IB_RDMA and not smb:
        dma = f.get("infiniband.reth.dmalen")
        label = f"RoCE {IB_RDMA[op]}" + (f" len={dma}" if dma else "")
    elif smb:
        label = ("SMBD | " if f.get("udp.dstport") == 4791 else "") + smb
        if f.get("tcp.analysis.retransmission") is not None:
            label += " [retransmission]"
    elif f.get("tcp.srcport") is not None:
        label = _tcp(f)
        if not label and all_tcp:
            label = "TCP ACK"
    if f.all("_ws.malformed"):
        label = (label + " " if label else "") + "[MALFORMED]"
    return label


def _endpoint(f) -> tuple[str, str]:
    src = f.get("ip.src") or f.get("ipv6.src") or "?"
    dst = f.get("ip.dst") or f.get("ipv6.dst") or "?"
    if f.get("udp.dstport") == 4791 or f.get("udp.srcport") == 4791:  # RoCEv2: one lane per host
        return str(src), str(dst)
    sp = f.get("tcp.srcport", f.get("udp.srcport"))
    dp = f.get("tcp.dstport", f.get("udp.dstport"))
    return (f"{src}:{sp}" if sp is not None else str(src)), (f"{dst}:{dp}" if dp is not None else str(dst))


def events(cap: Capture, all_tcp: bool = False) -> tuple[list[str], list[Event]]:
    """The lanes (endpoints, in order of first appearance) and the events (frame number, time,
    from-lane, to-lane, label) that every rendering of the ladder draws: text, SVG, HTML."""
    frames = cap.frames(None, FIELDS)
    evs = []
    lanes: list[str] = []
    for f in frames:
        label = event(f, all_tcp)
        if not label:
            continue
        a, b = _endpoint(f)
        for e in (a, b):
            if e not in lanes:
                lanes.append(e)
        evs.append((f.number, f.time, lanes.index(a), lanes.index(b), label))
    return lanes, evs

