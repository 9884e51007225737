"""Named checks on the whole capture, whatever the protocol: nothing malformed, everything decrypted."""
from __future__ import annotations

from ..assertions import Absent, AllOf, Assertion
from .registry import named


@named("no_malformed", {"ignore_empty_fin": {"type": "boolean"}, "ignore_spnego_over_quic": {"type": "boolean"}})
def no_malformed(ignore_empty_fin: bool = False, ignore_spnego_over_quic: bool = False) -> Assertion:
    """No frame has a malformed-packet error (_ws.malformed). `ignore_empty_fin` skips QUIC packets
    with a FIN, which tshark 4.0 shows as malformed NBSS when the STREAM frame is empty.
    `ignore_spnego_over_quic` skips SMB2 NEGOTIATE responses over QUIC: tshark 4.0 reads their
    SPNEGO negTokenInit2 (negHints at [3], as Windows and Samba send it) as RFC 4178 negTokenInit
    when the port is not 445/139, and reports a BER error (seen in captures/smb3-quic.pcap)."""
    flt = "_ws.malformed" + (" && !(quic.stream.fin == 1)" if ignore_empty_fin else "")
    if ignore_spnego_over_quic:
        flt += " && !(quic && smb2.cmd == 0 && smb2.flags.response == 1)"
    return Absent(flt)


@named("decrypted")
def decrypted() -> Assertion:
    """Everything decrypted: no QUIC payload tshark could not decrypt and no SMB3 transform without
    a decrypted SMB2 header inside. On failure the notices name the missing keys."""
    return AllOf("", Absent("quic.remaining_payload"), Absent("smb2.header.transform.msg_size && !smb2.cmd"))
