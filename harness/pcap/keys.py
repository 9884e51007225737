"""Decryption material: TLS key logs (QUIC) and SMB3 session keys, turned into tshark options.

Why here and not in the caller: the runs record keys in files, and users pass those files as they
are. This module accepts the forms people actually have (NSS key log; SMB keys as text, as
Wireshark's own UAT file, or JSON; Python objects), checks them with file:line errors, and
converts them to exactly what tshark 4.0 wants (the session id as little-endian wire bytes,
the S2C and C2S keys, no quotes).
"""
from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .tshark import PcapError, run

NSS_LABELS = ("CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET", "CLIENT_TRAFFIC_SECRET_0",
              "SERVER_TRAFFIC_SECRET_0", "CLIENT_EARLY_TRAFFIC_SECRET", "EXPORTER_SECRET", "CLIENT_RANDOM")


class KeyFileError(PcapError):
    pass


# --------------------------------------------------------------------------- TLS key log

def keylog_randoms(path: str | os.PathLike) -> dict[str, set[str]]:
    """client random (hex, lower case) -> labels present in an NSS key log; errors name file:line."""
    p = Path(path)
    if not p.exists():
        raise KeyFileError(f"{p}: key log not found")
    out: dict[str, set[str]] = {}
    for n, ln in enumerate(p.read_text(errors="replace").splitlines(), 1):
        ln = ln.strip()
        if not ln or ln.startswith("#"):
            continue
        parts = ln.split()
        if len(parts) != 3 or not re.fullmatch(r"[0-9a-fA-F]{64}", parts[1]):
            raise KeyFileError(f"{p}:{n}: not an NSS key log line (LABEL <client random> <secret>)")
        out.setdefault(parts[1].lower(), set()).add(parts[0])
    return out


def inject_secrets(pcap: str | os.PathLike, keylog: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write a pcapng with the key log embedded as a Decryption Secrets Block, so that Wireshark and
    tshark open it decrypted with no options (`editcap --inject-secrets tls,KEYLOG`)."""
    keylog_randoms(keylog)  # validate first: editcap accepts garbage silently
    run(["--inject-secrets", f"tls,{keylog}", str(pcap), str(out)], tool="editcap", path=pcap)
    return Path(out)


def embedded_secrets(path: str | os.PathLike) -> int:
    """Number of Decryption Secrets Blocks in a pcapng (0 for pcap). Walks block headers only."""
    count = 0
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"\x0a\x0d\x0d\x0a":
            return 0
        endian = "<" if head[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
        f.seek(0)
        while True:
            hdr = f.read(8)
            if len(hdr) < 8:
                break
            btype, blen = struct.unpack(endian + "II", hdr)
            if blen < 12:
                break
            if btype == 0x0A:
                count += 1
            elif btype == 0x06 or btype == 0x03:
                break  # packets started: a DSB must precede the packets it decrypts
            f.seek(blen - 8, 1)
    return count


# --------------------------------------------------------------------------- SMB3 keys

@dataclass(frozen=True)
class SmbKey:
    """Keys of one SMB3 session. `s2c`/`c2s` are the derived server-to-client / client-to-server keys
    (smbprotocol: Session.decryption_key / Session.encryption_key); tshark 4.0 needs them."""

    session_id: int
    s2c: bytes
    c2s: bytes
    session_key: bytes = b""

    def uat_row(self) -> str:
        sid = struct.pack("<Q", self.session_id).hex()
        return f"{sid},{self.session_key.hex()},{self.s2c.hex()},{self.c2s.hex()}"

    def __str__(self) -> str:
        return f"session 0x{self.session_id:016x}"


def parse_session_id(text: str) -> int:
    """`0x...` or decimal is the session id as a number; 16 bare hex digits are the 8 wire bytes
    (little-endian), as Wireshark's UAT shows them."""
    t = text.strip().strip('"')
    if t.lower().startswith("0x"):
        return int(t, 16)
    if re.fullmatch(r"[0-9a-fA-F]{16}", t):
        return struct.unpack("<Q", bytes.fromhex(t))[0]
    if t.isdigit():
        return int(t)
    raise ValueError(f"bad session id {text!r}")


def _key(text: str, what: str) -> bytes:
    t = text.strip().strip('"').removeprefix("0x")
    if t in ("", "-"):
        return b""
    try:
        b = bytes.fromhex(t)
    except ValueError:
        raise ValueError(f"{what} is not hex: {text!r}") from None
    if len(b) not in (16, 32):
        raise ValueError(f"{what} must be 16 or 32 bytes, got {len(b)}")
    return b


def load_smb_keys(src) -> list[SmbKey]:
    """SMB keys from a file path or from Python objects.

    File formats (one session per line, '#' comments, separators: spaces or commas, quotes ignored):
    `SESID S2C C2S` or `SESID SESSION_KEY S2C C2S` (Wireshark's UAT order; SESSION_KEY may be empty
    or '-'), or JSON: a list of {session_id, s2c, c2s[, session_key]}.
    Objects: SmbKey, (sesid, s2c, c2s) tuples, dicts, or a list of these."""
    if src is None:
        return []
    if isinstance(src, SmbKey):
        return [src]
    if isinstance(src, str | os.PathLike):
        return _load_file(Path(src))
    if isinstance(src, dict) and "session_id" in src:
        return [_from_obj(src, "smb_keys")]
    if isinstance(src, Iterable):
        return [k for item in src for k in ([item] if isinstance(item, SmbKey) else [_from_obj(item, "smb_keys")])]
    raise KeyFileError(f"smb_keys: cannot use {type(src).__name__}")


def _from_obj(o, where: str) -> SmbKey:
    try:
        if isinstance(o, dict):
            sid = o["session_id"]
            sid = sid if isinstance(sid, int) else parse_session_id(str(sid))
            s2c = o.get("s2c", o.get("server_to_client", o.get("decryption_key")))
            c2s = o.get("c2s", o.get("client_to_server", o.get("encryption_key")))
            sk = o.get("session_key", b"")
        else:
            sid, s2c, c2s = o[0], o[1], o[2]
            sk = o[3] if len(o) > 3 else b""
            sid = sid if isinstance(sid, int) else parse_session_id(str(sid))
        def conv(v, w):
            return v if isinstance(v, bytes) else _key(str(v), w)
        return SmbKey(sid, conv(s2c, "S2C key"), conv(c2s, "C2S key"), conv(sk or b"", "session key"))
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise KeyFileError(f"{where}: bad SMB key entry {o!r}: {e}") from None


def _load_file(p: Path) -> list[SmbKey]:
    if not p.exists():
        raise KeyFileError(f"{p}: SMB key file not found")
    text = p.read_text(errors="replace")
    if text.lstrip().startswith(("[", "{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise KeyFileError(f"{p}:{e.lineno}:{e.colno}: {e.msg}") from None
        data = data if isinstance(data, list) else [data]
        return [_from_obj(o, str(p)) for o in data]
    keys = []
    for n, ln in enumerate(text.splitlines(), 1):
        ln = ln.split("#", 1)[0].strip()
        if not ln:
            continue
        parts = [x for x in re.split(r"[\s,]+", ln) if x != ""] if "," not in ln else [x.strip() for x in ln.split(",")]
        try:
            if len(parts) == 3:
                sid, s2c, c2s, sk = parts[0], parts[1], parts[2], ""
            elif len(parts) == 4:
                sid, sk, s2c, c2s = parts
            else:
                raise ValueError(f"expected 3 or 4 columns (SESID [SESSION_KEY] S2C C2S), got {len(parts)}")
            keys.append(SmbKey(parse_session_id(sid), _key(s2c, "S2C key"), _key(c2s, "C2S key"),
                               _key(sk, "session key")))
            if not keys[-1].s2c or not keys[-1].c2s:
                raise ValueError("both S2C and C2S keys are needed (tshark 4.0 does not derive them)")
        except ValueError as e:
            raise KeyFileError(f"{p}:{n}: {e}") from None
    return keys
