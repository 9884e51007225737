"""SMB2 messages built byte by byte, independent of harness/smb's codec on purpose.

The pcap library is tested on captures whose SMB2 bytes do not come from the stack under test, so a
codec bug cannot hide itself in its own test data. The pcap tests' generators (tests/pcap) and the
pcap benchmark's million-packet generator share these builders; they live here because the tests may
import the benchmarks, never the reverse.
"""
from __future__ import annotations

import struct

CLIENT = "10.53.57.1"
SERVER = "10.53.57.2"

# SMB2 commands (MS-SMB2 2.2.1)
NEGOTIATE, SESSION_SETUP, LOGOFF, TREE_CONNECT, TREE_DISCONNECT = 0, 1, 2, 3, 4
CREATE, CLOSE, READ, WRITE, ECHO = 5, 6, 8, 9, 13

SESSION_ID = 0x00000000028033EE
TREE_ID = 5


# --------------------------------------------------------------------------- SMB2 messages

def smb2_header(cmd: int, *, msg_id: int, response: bool = False, sesid: int = 0, tid: int = 0,
                signed: bool = False, status: int = 0, credits: int = 1) -> bytes:
    """64-byte sync SMB2 header. A signed message gets a non-zero signature (tshark shows the flag;
    it cannot verify the signature without keys, and neither do the assertions)."""
    flags = (1 if response else 0) | (8 if signed else 0)
    sig = bytes(range(1, 17)) if signed else bytes(16)
    return struct.pack("<4sHHIHHIIQIIQ16s", b"\xfeSMB", 64, 1, status, cmd, credits, flags, 0,
                       msg_id, 0xFEFF, tid, sesid, sig)


def _pad8(b: bytes) -> bytes:
    return b + bytes(-len(b) % 8)


def _contexts(ctxs: list[tuple[int, bytes]]) -> bytes:
    out = b""
    for i, (ctype, data) in enumerate(ctxs):
        c = struct.pack("<HHI", ctype, len(data), 0) + data
        out += _pad8(c) if i < len(ctxs) - 1 else c
    return out


def _neg_contexts(cipher: int, signing_algo: int) -> list[tuple[int, bytes]]:
    preauth = struct.pack("<HHH", 1, 32, 1) + bytes(range(32))
    return [(1, preauth), (2, struct.pack("<HH", 1, cipher)), (8, struct.pack("<HH", 1, signing_algo))]


def negotiate_request(msg_id: int = 0, dialects=(0x0202, 0x0210, 0x0300, 0x0302, 0x0311),
                      cipher: int = 2) -> bytes:
    hdr = smb2_header(NEGOTIATE, msg_id=msg_id)
    fixed_len = 36 + 2 * len(dialects)
    ctx_off = 64 + fixed_len + (-(64 + fixed_len) % 8)
    body = struct.pack("<HHHHI16sIHH", 36, len(dialects), 1, 0, 0x7F, b"wirecheck-client", ctx_off,
                       3, 0) + struct.pack(f"<{len(dialects)}H", *dialects)
    body += bytes(ctx_off - 64 - len(body))
    return hdr + body + _contexts(_neg_contexts(cipher, 2))


def negotiate_response(msg_id: int = 0, dialect: int = 0x0311, cipher: int = 2) -> bytes:
    hdr = smb2_header(NEGOTIATE, msg_id=msg_id, response=True)
    sec_off = 64 + 64
    ctx_off = sec_off  # no security buffer: contexts follow the fixed part directly
    ncontexts = 3 if dialect == 0x0311 else 0
    body = struct.pack("<HHHH16sIIIIQQHHI", 65, 1, dialect, ncontexts, b"wirecheck-server", 0x7F,
                       1 << 20, 1 << 20, 1 << 20, 0, 0, sec_off, 0, ctx_off if ncontexts else 0)
    if ncontexts:
        return hdr + body + _contexts(_neg_contexts(cipher, 2))
    return hdr + body + b"\x00"


def session_setup_request(msg_id: int) -> bytes:
    return smb2_header(SESSION_SETUP, msg_id=msg_id) + struct.pack("<HBBIIHHQ", 25, 0, 1, 1, 0, 0x58, 0, 0) + b"\0"


def session_setup_response(msg_id: int, sesid: int = SESSION_ID, encrypt: bool = False) -> bytes:
    return (smb2_header(SESSION_SETUP, msg_id=msg_id, response=True, sesid=sesid)
            + struct.pack("<HHHH", 9, 4 if encrypt else 0, 0x48, 0) + b"\0")


def tree_connect_request(msg_id: int, path: str = r"\\server\share", sesid: int = SESSION_ID,
                         signed: bool = False) -> bytes:
    p = path.encode("utf-16-le")
    return (smb2_header(TREE_CONNECT, msg_id=msg_id, sesid=sesid, signed=signed)
            + struct.pack("<HHHH", 9, 0, 0x48, len(p)) + p)


def tree_connect_response(msg_id: int, tid: int = TREE_ID, sesid: int = SESSION_ID, signed: bool = False) -> bytes:
    return (smb2_header(TREE_CONNECT, msg_id=msg_id, response=True, sesid=sesid, tid=tid, signed=signed)
            + struct.pack("<HBBIII", 16, 1, 0, 0, 0, 0x1F01FF))


def write_request(msg_id: int, data: bytes, offset: int = 0, sesid: int = SESSION_ID, tid: int = TREE_ID,
                  signed: bool = False) -> bytes:
    return (smb2_header(WRITE, msg_id=msg_id, sesid=sesid, tid=tid, signed=signed)
            + struct.pack("<HHIQ16sIIHHI", 49, 0x70, len(data), offset, bytes(range(16)), 0, 0, 0, 0, 0)
            + data)


def write_response(msg_id: int, count: int, sesid: int = SESSION_ID, tid: int = TREE_ID, signed: bool = False,
                   status: int = 0) -> bytes:
    if status:  # an error response has the ERROR body (MS-SMB2 2.2.2)
        return (smb2_header(WRITE, msg_id=msg_id, response=True, sesid=sesid, tid=tid, signed=signed, status=status)
                + struct.pack("<HBBI", 9, 0, 0, 0) + b"\0")
    return (smb2_header(WRITE, msg_id=msg_id, response=True, sesid=sesid, tid=tid, signed=signed)
            + struct.pack("<HHIIHH", 17, 0, count, 0, 0, 0) + b"\0")


def echo(msg_id: int, response: bool = False, sesid: int = SESSION_ID, signed: bool = False) -> bytes:
    return smb2_header(ECHO, msg_id=msg_id, response=response, sesid=sesid, signed=signed) + struct.pack("<HH", 4, 0)


def direct_tcp(msg: bytes) -> bytes:
    """Direct-TCP transport framing (MS-SMB2 2.1): a zero byte and a 24-bit big-endian length."""
    return struct.pack(">I", len(msg)) + msg
