"""Generators of small, deterministic captures for the pcap library's tests.

Why generated and not recorded: each test needs traffic with one precise property (a retransmission,
a non-445 port, an encrypted session, a key update...), and a generator states that property in code
that is reviewable, while a binary file does not. Every generator is a plain function so that other
test suites and `captures/` (reference files) can reuse it.

Everything runs on a fake clock: timestamps start at T0 and advance by a fixed step per packet, so
"within N ms" assertions are deterministic.
"""
from __future__ import annotations

import datetime
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.smb2_bytes import (  # noqa: F401 - the generators' vocabulary, re-exported
    CLIENT,
    CLOSE,
    CREATE,
    ECHO,
    LOGOFF,
    NEGOTIATE,
    READ,
    SERVER,
    SESSION_ID,
    SESSION_SETUP,
    TREE_CONNECT,
    TREE_DISCONNECT,
    TREE_ID,
    WRITE,
    _contexts,
    _neg_contexts,
    _pad8,
    direct_tcp,
    echo,
    negotiate_request,
    negotiate_response,
    session_setup_request,
    session_setup_response,
    smb2_header,
    tree_connect_request,
    tree_connect_response,
    write_request,
    write_response,
)

T0 = 1_700_000_000.0
STEP = 0.001  # one millisecond per packet

def smb_session(*, signed: bool = False, echoes: int = 1, write_size: int = 1000,
                sesid: int = SESSION_ID, write_status: int = 0) -> list[tuple[str, bytes]]:
    """A typical SMB 3.1.1 exchange as (direction, message) pairs, direction 'c' (client to server)
    or 's'. Messages after SESSION_SETUP carry the signed flag when `signed`."""
    msgs = [("c", negotiate_request(0)), ("s", negotiate_response(0)),
            ("c", session_setup_request(1)), ("s", session_setup_response(1, sesid)),
            ("c", tree_connect_request(2, sesid=sesid, signed=signed)),
            ("s", tree_connect_response(2, sesid=sesid, signed=signed)),
            ("c", write_request(3, b"w" * write_size, sesid=sesid, signed=signed)),
            ("s", write_response(3, write_size, sesid=sesid, signed=signed, status=write_status))]
    for i in range(echoes):
        msgs += [("c", echo(4 + i, sesid=sesid, signed=signed)),
                 ("s", echo(4 + i, response=True, sesid=sesid, signed=signed))]
    return msgs


# --------------------------------------------------------------------------- pcap writing

class RawIpWriter:
    """Raw-IP (LINKTYPE 101) pcap writer on a fake clock; one call per packet."""

    def __init__(self, path: str | os.PathLike, t0: float = T0, step: float = STEP):
        from scapy.utils import PcapWriter

        self._w = PcapWriter(str(path), linktype=101, sync=True)
        self._w.write_header(None)
        self._us = int(round(t0 * 1e6))  # integer microseconds: no float drift in timestamps
        self._step_us = int(round(step * 1e6))

    @property
    def now(self) -> float:
        return self._us / 1e6

    @now.setter
    def now(self, t: float) -> None:
        self._us = int(round(t * 1e6))

    def write(self, pkt_bytes: bytes) -> None:
        self._w.write_packet(pkt_bytes, sec=self._us // 1_000_000, usec=self._us % 1_000_000)
        self._us += self._step_us

    def close(self) -> None:
        self._w.close()


@dataclass
class TcpFlow:
    """Synthesises one TCP connection with consistent sequence numbers (handshake, data, FIN).

    Why not scapy sessions: we need full control to inject a retransmission or a bad segment."""

    w: RawIpWriter
    cport: int = 50000
    sport: int = 445
    client: str = CLIENT
    server: str = SERVER
    seq: dict = field(default_factory=lambda: {"c": 1000, "s": 5000})
    mss: int = 1400

    def _pkt(self, d: str, flags: str, payload: bytes = b"", seq: int | None = None) -> bytes:
        from scapy.layers.inet import IP, TCP

        src, dst, sp, dp = ((self.client, self.server, self.cport, self.sport) if d == "c"
                            else (self.server, self.client, self.sport, self.cport))
        other = "s" if d == "c" else "c"
        ack = self.seq[other] if "A" in flags else 0
        p = IP(src=src, dst=dst) / TCP(sport=sp, dport=dp, flags=flags, seq=self.seq[d] if seq is None else seq,
                                       ack=ack, window=65535) / payload
        return bytes(p)

    def handshake(self) -> None:
        self.w.write(self._pkt("c", "S"))
        self.seq["c"] += 1
        self.w.write(self._pkt("s", "SA"))
        self.seq["s"] += 1
        self.w.write(self._pkt("c", "A"))

    def send(self, d: str, data: bytes, retransmit_first: bool = False) -> None:
        """Send `data` in MSS-sized segments; optionally repeat the first segment (a retransmission)."""
        for i in range(0, len(data), self.mss):
            chunk = data[i:i + self.mss]
            start = self.seq[d]
            self.w.write(self._pkt(d, "PA", chunk))
            self.seq[d] += len(chunk)
            if retransmit_first and i == 0:
                self.w.write(self._pkt(d, "PA", chunk, seq=start))
        self.w.write(self._pkt("s" if d == "c" else "c", "A"))

    def close(self) -> None:
        self.w.write(self._pkt("c", "FA"))
        self.seq["c"] += 1
        self.w.write(self._pkt("s", "FA"))
        self.seq["s"] += 1
        self.w.write(self._pkt("c", "A"))


def smb_tcp_capture(path: str | os.PathLike, *, port: int = 445, signed: bool = False, echoes: int = 1,
                    retransmit: bool = False, malformed: bool = False, write_size: int = 1000,
                    streams: int = 1, pipelined: bool = False, write_status: int = 0) -> Path:
    """SMB 3.1.1 over TCP: NEGOTIATE, SESSION_SETUP, TREE_CONNECT, WRITE, ECHO x `echoes`, per stream.

    `write_status` makes the WRITE response an error (e.g. 0xC0000022, STATUS_ACCESS_DENIED).
    `pipelined` adds two ECHO requests in one TCP segment and their two responses in one segment
    (frames with two SMB2 PDUs: smb2.cmd = (13, 13)).
    `retransmit` repeats the first segment of the WRITE request; `malformed` appends a truncated
    SMB2 message (a header cut short) so tshark flags `_ws.malformed`; `streams` opens several TCP
    connections, each with its own session id (SESSION_ID + stream index)."""
    path = Path(path)
    w = RawIpWriter(path)
    for s in range(streams):
        flow = TcpFlow(w, cport=50000 + s, sport=port)
        flow.handshake()
        for d, msg in smb_session(signed=signed, echoes=echoes, write_size=write_size, sesid=SESSION_ID + s,
                                  write_status=write_status):
            is_write_req = d == "c" and msg[12:14] == struct.pack("<H", WRITE)
            flow.send(d, direct_tcp(msg), retransmit_first=retransmit and is_write_req)
        if pipelined:
            flow.send("c", direct_tcp(echo(50, sesid=SESSION_ID + s)) + direct_tcp(echo(51, sesid=SESSION_ID + s)))
            flow.send("s", direct_tcp(echo(50, True, sesid=SESSION_ID + s)) + direct_tcp(echo(51, True, sesid=SESSION_ID + s)))
        if malformed:
            bad = echo(99, sesid=SESSION_ID + s)[:40]
            flow.send("c", struct.pack(">I", len(bad)) + bad)  # a complete frame holding half a header
        flow.close()
    w.close()
    return path


def truncate_file(src: str | os.PathLike, dst: str | os.PathLike, cut: int = 30) -> Path:
    """Copy a capture without its last `cut` bytes: the last record is cut short."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[:-cut])
    return Path(dst)


# --------------------------------------------------------------------------- SMB3 encryption

@dataclass
class SmbKeys:
    session_id: int
    c2s: bytes  # client-to-server key (smbprotocol: Session.encryption_key)
    s2c: bytes  # server-to-client key (smbprotocol: Session.decryption_key)

    def line(self) -> str:
        """One line of the `--smb-keys` file format (see harness/pcap/keys.py)."""
        return f"0x{self.session_id:016x} {self.s2c.hex()} {self.c2s.hex()}\n"


def transform(msg: bytes, key: bytes, sesid: int, nonce_counter: int) -> bytes:
    """Wrap an SMB2 message in an SMB3 TRANSFORM_HEADER, AES-128-GCM (MS-SMB2 3.1.4.3)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = struct.pack("<Q", nonce_counter) + b"wcwc"  # 12 bytes used, 4 zero bytes follow on the wire
    aad = struct.pack("<16sIHHQ", nonce + bytes(4), len(msg), 0, 1, sesid)
    ct = AESGCM(key).encrypt(nonce, msg, aad)
    enc, sig = ct[:-16], ct[-16:]
    return b"\xfdSMB" + sig + aad + enc


def smb_encrypted_capture(path: str | os.PathLike, *, port: int = 445) -> tuple[Path, SmbKeys]:
    """SMB 3.1.1 with AES-128-GCM: clear NEGOTIATE and SESSION_SETUP, then TREE_CONNECT, WRITE and
    ECHO inside transform headers. Returns the capture and the keys that decrypt it."""
    keys = SmbKeys(SESSION_ID, c2s=bytes(range(0x10, 0x20)), s2c=bytes(range(0x20, 0x30)))
    path = Path(path)
    w = RawIpWriter(path)
    flow = TcpFlow(w, sport=port)
    flow.handshake()
    counter = {"c": 1, "s": 1}
    for d, msg in smb_session(echoes=1):
        cmd = struct.unpack_from("<H", msg, 12)[0]
        if cmd in (NEGOTIATE, SESSION_SETUP):
            if cmd == SESSION_SETUP and d == "s":
                msg = session_setup_response(1, encrypt=True)
            flow.send(d, direct_tcp(msg))
            continue
        key = keys.c2s if d == "c" else keys.s2c
        flow.send(d, direct_tcp(transform(msg, key, SESSION_ID, counter[d])))
        counter[d] += 1
    flow.close()
    w.close()
    return path, keys


# --------------------------------------------------------------------------- QUIC

def _self_signed():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "server")])
    now = datetime.datetime(2023, 11, 1, tzinfo=datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
            .sign(key, hashes.SHA256()))
    return cert, key


@dataclass
class QuicPair:
    """An aioquic client and server wired back to back on a fake clock, writing every datagram to a
    Raw-IP pcap with synthetic IPv4/UDP headers (tshark 4.0 decrypts this like real traffic)."""

    w: RawIpWriter
    client_addr: tuple = (CLIENT, 50001)
    server_addr: tuple = (SERVER, 443)
    client: object = None
    server: object = None

    def pump(self, rounds: int = 20) -> None:
        from scapy.layers.inet import IP, UDP

        for _ in range(rounds):
            moved = False
            for src_conn, dst_conn, sender_is_client in ((self.client, self.server, True),
                                                         (self.server, self.client, False)):
                for data, addr in src_conn.datagrams_to_send(now=self.w.now):
                    moved = True
                    if sender_is_client:
                        src, dst = self.client_addr, self.server_addr
                    else:
                        src, dst = self.server_addr, addr
                    self.w.write(bytes(IP(src=src[0], dst=dst[0]) / UDP(sport=src[1], dport=dst[1]) / data))
                    dst_conn.receive_datagram(data, src, now=self.w.now)
            if not moved:
                # let timers (ACK delay, loss detection) fire on the fake clock; stop when idle
                due = [t for c in (self.client, self.server) if (t := c.get_timer()) is not None
                       and t <= self.w.now + 0.05]
                if not due:
                    return
                self.w.now = max(self.w.now, min(due))
                for c in (self.client, self.server):
                    t = c.get_timer()
                    if t is not None and t <= self.w.now:
                        c.handle_timer(now=self.w.now)

    def events(self, conn):
        out = []
        while (ev := conn.next_event()) is not None:
            out.append(ev)
        return out


def quic_smb_capture(path: str | os.PathLike, keylog: str | os.PathLike, *, resume: bool = False,
                     zero_rtt: bool = False, key_update: bool = False, migrate: bool = False,
                     new_cid: bool = True, cleartext: bool = False, version: int | None = None) -> Path:
    """SMB2 over QUIC (ALPN "smb"): handshake, NEGOTIATE request/response and one ECHO on stream 0,
    each SMB2 message in one QUIC packet (tshark 4.0 does not reassemble an SMB2 message across
QUIC packets).

    `resume` first runs a full connection, then a second one resuming its session ticket (no
    Certificate in the second handshake); `zero_rtt` additionally sends the NEGOTIATE as 0-RTT
    early data; `key_update` makes the client update its 1-RTT keys before the ECHO; `migrate`
    moves the client to a new UDP port before the ECHO (the server validates the new path), with a
    fresh destination connection id unless `new_cid` is False (then it looks like a NAT rebinding);
    `cleartext` sends every 1-RTT packet after the handshake without header protection and payload
    encryption (quic.ko's disable_1rtt_encryption, see captures_extra.cleartext_1rtt)."""
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    path = Path(path)
    cert, key = _self_signed()
    tickets: dict = {}
    client_tickets: list = []
    w = RawIpWriter(path)
    with open(keylog, "w") as klog:
        def one_connection(port: int, ticket=None, early: bool = False) -> None:
            kw = {"supported_versions": [version]} if version else {}
            ccfg = QuicConfiguration(is_client=True, alpn_protocols=["smb"], secrets_log_file=klog,
                                     server_name="server", verify_mode=0, max_datagram_size=1400,
                                     session_ticket=ticket, **kw)
            scfg = QuicConfiguration(is_client=False, alpn_protocols=["smb"], certificate=cert,
                                     private_key=key, max_datagram_size=1400, **kw)
            client = QuicConnection(configuration=ccfg, session_ticket_handler=client_tickets.append)
            pair = QuicPair(w, client_addr=(CLIENT, port), client=client)
            client.connect(pair.server_addr, now=w.now)
            pair.server = QuicConnection(
                configuration=scfg, original_destination_connection_id=client.original_destination_connection_id,
                session_ticket_fetcher=tickets.pop,
                session_ticket_handler=lambda t: tickets.__setitem__(t.ticket, t))
            server = pair.server
            sid = client.get_next_available_stream_id()
            if early:
                client.send_stream_data(sid, direct_tcp(negotiate_request(0)))
            pair.pump()
            if not early:
                client.send_stream_data(sid, direct_tcp(negotiate_request(0)))
                pair.pump()
            server.send_stream_data(sid, direct_tcp(negotiate_response(0)))
            pair.pump()
            if cleartext:
                from .captures_extra import cleartext_1rtt

                cleartext_1rtt(client)
                cleartext_1rtt(server)
            if key_update:
                client.request_key_update()
            if migrate:
                pair.client_addr = (CLIENT, port + 1000)
                if new_cid:
                    client.change_connection_id()
            client.send_stream_data(sid, direct_tcp(echo(1, sesid=0)))
            pair.pump()
            server.send_stream_data(sid, direct_tcp(echo(1, response=True, sesid=0)))
            pair.pump()
            # FIN together with data: tshark 4.0 shows an empty FIN as a malformed NBSS packet
            client.send_stream_data(sid, direct_tcp(echo(2, sesid=0)), end_stream=True)
            pair.pump()
            server.send_stream_data(sid, direct_tcp(echo(2, response=True, sesid=0)), end_stream=True)
            pair.pump()
            client.close()
            pair.pump()

        one_connection(50001)
        if resume or zero_rtt:
            assert client_tickets, "aioquic issued no session ticket"
            one_connection(50002, ticket=client_tickets[-1], early=zero_rtt)
    w.close()
    return path


# --------------------------------------------------------------------------- SMB Direct (RoCEv2)

def _smbd_negotiate_request() -> bytes:
    return struct.pack("<HHHHHHII", 0x0100, 0x0100, 0, 255, 1364, 1364, 1048576, 1048576)[:20]


def _smbd_negotiate_response() -> bytes:
    return struct.pack("<HHHHHHIIIII", 0x0100, 0x0100, 0x0100, 0, 255, 255, 0, 1048576, 1364, 1364, 1048576)[:32]


def _smbd_data(payload: bytes) -> bytes:
    return struct.pack("<HHHHIIII", 1, 255, 0, 0, 0, 24, len(payload), 0) + payload


def _roce_send(qp: int, psn: int, payload: bytes) -> bytes:
    pad = -len(payload) % 4
    bth = struct.pack(">BBHII", 0x04, (pad << 4), 0xFFFF, qp & 0xFFFFFF, psn & 0xFFFFFF)
    return bth + payload + bytes(pad) + b"\0\0\0\0"


def smbdirect_capture(path: str | os.PathLike) -> Path:
    """SMB Direct over RoCEv2 (UDP 4791): SMBD negotiate, then NEGOTIATE and ECHO in SEND_ONLY messages."""
    from scapy.layers.inet import IP, UDP

    path = Path(path)
    w = RawIpWriter(path)
    psn = {"c": 0, "s": 0}

    def send(d: str, smbd: bytes) -> None:
        src, dst, qp = (CLIENT, SERVER, 0x11) if d == "c" else (SERVER, CLIENT, 0x22)
        w.write(bytes(IP(src=src, dst=dst) / UDP(sport=49152, dport=4791) / _roce_send(qp, psn[d], smbd)))
        psn[d] += 1

    send("c", _smbd_negotiate_request())
    send("s", _smbd_negotiate_response())
    for d, msg in [("c", negotiate_request(0)), ("s", negotiate_response(0)),
                   ("c", echo(1, sesid=0)), ("s", echo(1, response=True, sesid=0))]:
        send(d, _smbd_data(msg))
    w.close()
    return path


# --------------------------------------------------------------------------- reference set

REFERENCE = {
    # file name: (what it shows, how to read it)
    "smb2-tcp445.pcap": "SMB 3.1.1 over TCP/445: negotiate, session setup, tree connect, write, echoes; one "
                        "retransmitted WRITE segment (frame 17), two pipelined ECHOs per segment (frames 29, 31), "
                        "one malformed SMB2 frame (33), no response to it",
    "smb2-tcp8445.pcap": "the clean SMB exchange on TCP port 8445 (needs decode-as: smb_ports=[8445])",
    "smb3-encrypted-gcm.pcap": "SMB 3.1.1, AES-128-GCM: clear NEGOTIATE/SESSION_SETUP, then 6 encrypted messages; "
                               "keys in smb3-encrypted-gcm.smbkeys",
    "quic-smb.pcap": "SMB2 over QUIC (ALPN smb), one connection, full handshake; keys in quic-smb.keys",
    "quic-smb.pcapng": "quic-smb.pcap with quic-smb.keys injected (Decryption Secrets Block): opens decrypted",
    "quic-features.pcap": "two QUIC connections: key update + migration (path validation) in the first, "
                          "session resumption with 0-RTT in the second; keys in quic-features.keys",
    "smbdirect-rocev2.pcap": "SMB Direct over RoCEv2 (UDP 4791): SMBD negotiate, SMB2 NEGOTIATE and ECHO",
    # written by captures/make/synthetic.py from captures_extra.py
    "smb2-features.pcap": "SMB over TCP: TRANSPORT_CAPABILITIES accepted, a replayed WRITE, a second channel bound",
    "smbdirect-rdma.pcap": "SMB Direct over RoCEv2: WRITE served by RDMA READ, READ served by RDMA WRITE",
    "quic-1rtt-clear.pcap": "SMB2 over QUIC whose 1-RTT packets after the handshake are in clear (disable_1rtt_encryption)",
}


def write_reference_captures(outdir: str | os.PathLike) -> list[Path]:
    """(Re)generate the reference captures of `captures/`. QUIC files get fresh random keys and
    connection ids on every run, so regenerate them together with their key files."""
    from harness.pcap.keys import inject_secrets

    d = Path(outdir)
    d.mkdir(parents=True, exist_ok=True)
    smb_tcp_capture(d / "smb2-tcp445.pcap", retransmit=True, malformed=True, echoes=2, pipelined=True)
    smb_tcp_capture(d / "smb2-tcp8445.pcap", port=8445)
    _, keys = smb_encrypted_capture(d / "smb3-encrypted-gcm.pcap")
    (d / "smb3-encrypted-gcm.smbkeys").write_text("# SESID S2C C2S (harness/pcap/keys.py)\n" + keys.line())
    quic_smb_capture(d / "quic-smb.pcap", d / "quic-smb.keys")
    inject_secrets(d / "quic-smb.pcap", d / "quic-smb.keys", d / "quic-smb.pcapng")
    quic_smb_capture(d / "quic-features.pcap", d / "quic-features.keys", zero_rtt=True, key_update=True, migrate=True)
    smbdirect_capture(d / "smbdirect-rocev2.pcap")
    return sorted(d.iterdir())


if __name__ == "__main__":  # python -m tests.pcap.captures captures/
    import sys

    for p in write_reference_captures(sys.argv[1] if len(sys.argv) > 1 else "captures"):
        print(f"{p}  {p.stat().st_size} bytes")
