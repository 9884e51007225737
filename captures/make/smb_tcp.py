"""captures/smb3-tcp-signed.pcap and smb3-tcp-encrypted.pcap: our SMB server and client over TCP/445.

Signed: the server requires signing (`--sign`); the client uploads a file, lists the share and
reads the file back. Encrypted: the client asks for encryption (`--encrypt`, AES-128-GCM) and does
the same. Keys: `--keys-out` of the client (tshark smb2_seskey_list rows).

    .venv/bin/python -m captures.make.smb_tcp [OUTDIR]
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from .emulated import SERVER, USER, Session, keep_first_keys

UNC = f"//{SERVER}/share"


def session(out: Path, name: str, serve: list[str], client: list[str]) -> list[Path]:
    pcap, keys = out / f"{name}.pcap", out / f"{name}.smbkeys"
    keys.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "upload.bin"
        src.write_bytes(bytes(range(256)) * 12)  # 3 KiB: a WRITE that spans TCP segments
        with Session(pcap, [f"--listen={SERVER}:445", *serve]) as s:
            base = [UNC, "--user", USER, "--keys-out", str(keys), *client]
            s.client([*base, "put", str(src), "upload.bin"])
            s.client([*base, "ls"])
            s.client([*base, "cat", "hello.txt"])
    keep_first_keys(keys)
    return [pcap, keys]


def main(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    return (session(out, "smb3-tcp-signed", ["--sign"], [])
            + session(out, "smb3-tcp-encrypted", [], ["--encrypt", "--cipher", "aes-128-gcm"]))


if __name__ == "__main__":
    for p in main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])):
        print(f"{p}  {p.stat().st_size} bytes")
