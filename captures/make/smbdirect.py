"""captures/smbdirect-own.pcap: our SMB server and client over SMB Direct with RDMA I/O.

`wirecheck serve --transport smbdirect` and two `wirecheck smb --transport smbdirect --no-sign`
runs (put, then get, of a 64 KiB file) on the emulated network, recorded by the socket wrapper as
RoCEv2: the SMBD negotiate, SMB2 NEGOTIATE .. TREE_CONNECT, CREATE, a WRITE with Channel
RDMA_V1_INVALIDATE whose data the server pulls by RDMA READ (REQUEST + RESPONSE with RETH/AETH),
a READ with Channel RDMA_V1_INVALIDATE whose data it pushes by RDMA WRITE, both answered with
SEND_ONLY_WITH_INVALIDATE, CLOSE, LOGOFF.  Unsigned sessions (a signed one never uses RDMA,
MS-SMB2 3.2.4.6), so no keys are needed.  RDMA payloads are recorded up to 4 KiB per operation
(the wrapper's default), which keeps the file small.

    .venv/bin/python -m captures.make.smbdirect [OUTDIR]
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from .emulated import SERVER, USER, Session

UNC = f"//{SERVER}/share"
SIZE = 64 * 1024  # above the client's 16 KiB RDMA threshold: one READ and one WRITE by RDMA


def run(pcap: Path) -> None:
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "upload.bin"
        src.write_bytes(bytes(range(256)) * (SIZE // 256))
        back = Path(d) / "back.bin"
        with Session(pcap, ["--transport", "smbdirect", f"--listen={SERVER}:445"]) as s:
            base = [UNC, "--transport", "smbdirect", "--no-sign", "--user", USER]
            s.client([*base, "put", str(src), "upload.bin"])
            s.client([*base, "get", "upload.bin", str(back)])
        if back.read_bytes() != src.read_bytes():
            raise RuntimeError("the file read back over SMB Direct differs")


def main(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    pcap = out / "smbdirect-own.pcap"
    pcap.unlink(missing_ok=True)
    run(pcap)
    return [pcap]


if __name__ == "__main__":
    for p in main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])):
        print(f"{p}  {p.stat().st_size} bytes")
