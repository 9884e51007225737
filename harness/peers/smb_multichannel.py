"""The client behind the ``smb.multichannel_discover`` scenario operation:
``python -m harness.peers.smb_multichannel --addr A --port P ...``.

It does what a Windows client does once a session is up on a multichannel server: asks
FSCTL_QUERY_NETWORK_INTERFACE_INFO, binds a channel to every address offered (over SMB Direct where
the address is RDMA_CAPABLE), then writes ``--size`` seeded bytes and reads them back, large
READ/WRITE going by RDMA on the SMB Direct channel.  It runs as a process on the emulated network,
so the cell's pcap shows the whole flow.  The last JSON line on stdout is its result.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def run(a: argparse.Namespace) -> int:
    from harness.blocking.multichannel import MultiChannelClient

    user, password = a.user.split(":", 1)
    data = random.Random(a.seed).randbytes(a.size)
    try:
        # Unsigned: a signing session never moves data by RDMA (MS-SMB2 3.2.4.6, 3.2.4.7).
        client = MultiChannelClient(a.addr, a.port, username=user, password=password, timeout=a.timeout,
                                    keys_out=a.keys_out, sign=False)
        offered = client.interfaces() if client.multichannel else []
        interfaces = [{"address": e.address, "port": e.port, "if_index": e.if_index, "capability": e.capability,
                       "link_speed": e.link_speed} for e in offered]
        client.bind_offered(offered=offered)
        with client.share(a.share) as share:
            share.put_bytes(a.path, data)
            read = share.get_bytes(a.path)
        result = {"interfaces": interfaces, "channels": [c.how[0] for c in client.channels],
                  "written_sha256": hashlib.sha256(data).hexdigest(), "read_sha256": hashlib.sha256(read).hexdigest(),
                  "rdma_write": client.rdma_bytes["write"], "rdma_read": client.rdma_bytes["read"]}
        client.close()
    except Exception as exc:  # noqa: BLE001 - reported to the operation
        status = getattr(exc, "status", None)
        _emit({"error": f"{type(exc).__name__}: {exc}", "ntstatus": f"0x{status:08X}" if status else None})
        return 1
    _emit(result)
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.peers.smb_multichannel")
    p.add_argument("--addr", required=True)
    p.add_argument("--port", type=int, default=445)
    p.add_argument("--share", default="data")
    p.add_argument("--path", default="m.bin")
    p.add_argument("--user", default="wirecheck:wirecheck-pass")
    p.add_argument("--size", type=int, default=1 << 20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keys-out")
    p.add_argument("--timeout", type=float, default=20.0)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
