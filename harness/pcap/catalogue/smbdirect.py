"""Named checks on SMB Direct (MS-SMBD): the negotiation, and file data moved by RDMA (RoCE and
iWARP opcodes next to SMB2 READ/WRITE requests with an RDMA channel).
"""
from __future__ import annotations

from ..assertions import AllOf, Assertion, Count, Values
from .registry import named

# RoCE RC opcodes (IBA 9.2): RDMA WRITE FIRST..ONLY_WITH_IMMEDIATE, READ REQUEST, READ RESPONSE *
IB_RDMA_WRITE = range(0x06, 0x0C)
IB_RDMA_READ_REQUEST = 0x0C
IB_RDMA_READ_RESPONSE = range(0x0D, 0x11)
CHANNEL_RDMA = {1, 2}  # SMB2_CHANNEL_RDMA_V1, SMB2_CHANNEL_RDMA_V1_INVALIDATE


@named("smbdirect.negotiated")
def smbdirect_negotiated() -> Assertion:
    """An SMB Direct negotiate response with status 0 and version 1.0 (MS-SMBD 2.2.2)."""
    q = "smb_direct.negotiate_response"
    return AllOf("", Count(q, min=1), Values("smb_direct.version.negotiated", q, all={"eq": 0x0100}),
                 Values("smb_direct.status", q, all={"eq": 0}))


def _ops(values) -> str:
    return ",".join(str(v) for v in values)


@named("smbdirect.rdma_used", {"read": {"type": "boolean"}, "write": {"type": "boolean"}})
def smbdirect_rdma_used(read: bool = True, write: bool = True) -> Assertion:
    """SMB Direct moved file data by RDMA: `write` (the server pushes READ data) needs an RDMA WRITE
    (RoCE opcodes 0x06-0x0b, iWARP RDMAP Write) and an SMB2 READ request with Channel RDMA_V1 or
    RDMA_V1_INVALIDATE; `read` (the server pulls WRITE data) needs an RDMA READ REQUEST (0x0c) and
    READ RESPONSE (0x0d-0x10, iWARP 1 and 2) and an SMB2 WRITE request with an RDMA channel.
    tshark 4.0 leaves the RDMA payload itself a `data` layer, so it is counted, not decoded."""
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
