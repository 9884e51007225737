"""SMB session keys in the form tshark's ``uat:smb2_seskey_list`` preference takes
(tshark 4.0): ``<SessionId as its 8 LE wire bytes, hex>,<SessionKey>,<S2C key>,<C2S key>``,
hex without quotes.  tshark decrypts with the derived S2C/C2S keys; the SessionKey column may be
empty.  Only text is produced here; writing the file is the caller's (I/O-free layer)."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass


def format_tshark_seskey(session_id: int, session_key: bytes | None, s2c_key: bytes, c2s_key: bytes) -> str:
    """One ``smb2_seskey_list`` entry, e.g. ``ee33800200000000,,9d1d…,629a…``."""
    for name, key in (("s2c_key", s2c_key), ("c2s_key", c2s_key)):
        if len(key) not in (16, 32):
            raise ValueError(f"{name} must be 16 or 32 bytes, got {len(key)}")
    return ",".join((struct.pack("<Q", session_id).hex(), (session_key or b"").hex(), s2c_key.hex(), c2s_key.hex()))


@dataclass(frozen=True)
class SessionKeyRecord:
    session_id: int
    session_key: bytes | None
    s2c_key: bytes
    c2s_key: bytes

    def line(self) -> str:
        return format_tshark_seskey(self.session_id, self.session_key, self.s2c_key, self.c2s_key)


def keys_file_text(records: Iterable[SessionKeyRecord]) -> str:
    """A keys file: one entry per session (the first record of a SessionId wins), newline-terminated.
    Each line can be passed as ``-o uat:smb2_seskey_list:<line>``."""
    seen: set[int] = set()
    lines = []
    for record in records:
        if record.session_id in seen:
            continue
        seen.add(record.session_id)
        lines.append(record.line())
    return "".join(line + "\n" for line in lines)


def parse_keys_file(text: str) -> list[SessionKeyRecord]:
    """Inverse of :func:`keys_file_text` (blank lines and ``#`` comments ignored)."""
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(",")
        if len(fields) != 4 or len(fields[0]) != 16:
            raise ValueError(f"keys file line {number}: expected sesid,sessionkey,s2c,c2s")
        sid, sk, s2c, c2s = fields
        records.append(SessionKeyRecord(struct.unpack("<Q", bytes.fromhex(sid))[0],
                                        bytes.fromhex(sk) or None, bytes.fromhex(s2c), bytes.fromhex(c2s)))
    return records
