"""The generated reference captures (tests/pcap/captures*.py on a fake clock), for properties our own
tools cannot produce on purpose: a retransmission, a malformed frame, 0-RTT, a replayed WRITE, a bound
channel, RDMA reads and writes, 1-RTT sent in clear.

    .venv/bin/python -m captures.make.synthetic [OUTDIR]
"""
from __future__ import annotations

import sys
from pathlib import Path


def main(out: Path) -> list[Path]:
    from tests.pcap import captures as gen
    from tests.pcap import captures_extra as extra

    out.mkdir(parents=True, exist_ok=True)
    gen.write_reference_captures(out)
    made = [extra.smb_features_capture(out / "smb2-features.pcap"),
            extra.smbdirect_rdma_capture(out / "smbdirect-rdma.pcap"),
            gen.quic_smb_capture(out / "quic-1rtt-clear.pcap", out / "quic-1rtt-clear.keys", cleartext=True),
            out / "quic-1rtt-clear.keys"]
    return sorted({*made, *(out / n for n in gen.REFERENCE)})


if __name__ == "__main__":
    for p in main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])):
        print(f"{p}  {p.stat().st_size} bytes")
