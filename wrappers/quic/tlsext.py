"""What aioquic's TLS lacks and quic.ko's users need: external PSK, a throwaway server key, key logs.

External PSK (RFC 8446 section 4.2.11). aioquic resumes sessions with tickets but has no external PSK
mode. A ticket resumption and an external PSK handshake are the same exchange with two differences:
the identity comes from a PSK file instead of a NewSessionTicket, and the binder key is derived with
the label "ext binder" instead of "res binder". We therefore present the PSK to aioquic as a session
ticket (identity = ticket, key = resumption secret) and swap the binder label. aioquic builds its key
schedules from the module-level name ``aioquic.tls.KeySchedule``; we replace it with a subclass whose
``derive_secret`` swaps the label only while the current thread is handling an external-PSK connection
(``external_psk()``), so every other aioquic user in the process is unaffected. No aioquic code is
copied or changed.

aioquic insists on a server certificate even when the PSK makes it unused, so PSK servers get a
process-wide throwaway self-signed key (``throwaway_certificate``).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import threading
from collections.abc import Iterator

from aioquic import tls
from aioquic.quic.logger import QLOG_VERSION, QuicLogger, QuicLoggerTrace
from aioquic.tls import CipherSuite, SessionTicket
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_state = threading.local()


class _KeySchedule(tls.KeySchedule):
    def derive_secret(self, label: bytes) -> bytes:
        if label == b"res binder" and getattr(_state, "external", False):
            label = b"ext binder"
        return super().derive_secret(label)


if tls.KeySchedule.__name__ != "_KeySchedule":
    tls.KeySchedule = _KeySchedule  # type: ignore[misc]


@contextlib.contextmanager
def external_psk(on: bool) -> Iterator[None]:
    """Run TLS code of one connection; binders use "ext binder" when ``on``."""
    old = getattr(_state, "external", False)
    _state.external = on
    try:
        yield
    finally:
        _state.external = old


PSK_CIPHER = CipherSuite.AES_128_GCM_SHA256
"""GnuTLS hashes an external PSK's binder with SHA-256, so the PSK is bound to a SHA-256 suite."""


class _ExternalPskTicket(SessionTicket):
    """A ticket whose obfuscated_ticket_age is 0, as RFC 8446 section 4.2.11 asks of an externally
    established identity. aioquic would send the ticket's age in milliseconds; GnuTLS (libquic's
    server) takes a PSK identity with a non-zero age for a resumption ticket of its own, fails to
    decrypt it, ignores the PSK without a word and then lacks a certificate ("Insufficient
    credentials")."""

    @property
    def obfuscated_age(self) -> int:
        return 0


def psk_ticket(identity: bytes, key: bytes, server_name: str = "") -> SessionTicket:
    """An external PSK dressed as an aioquic session ticket (see the module docstring)."""
    now = datetime.datetime.now(datetime.UTC)
    return _ExternalPskTicket(
        age_add=0, cipher_suite=PSK_CIPHER, not_valid_before=now - datetime.timedelta(seconds=1),
        not_valid_after=now + datetime.timedelta(days=3650), resumption_secret=bytes(key),
        server_name=server_name, ticket=bytes(identity),
    )


def read_psk_file(path: str | os.PathLike[str]) -> list[tuple[bytes, bytes]]:
    """``identity:hexkey`` lines of a GnuTLS PSK file (libquic: the client uses the first line)."""
    out = []
    with open(path, encoding="ascii") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            ident, _, hexkey = line.partition(":")
            out.append((ident.encode(), bytes.fromhex(hexkey)))
    if not out:
        raise ValueError(f"{path}: no identity:hexkey line")
    return out


_throwaway: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None
_throwaway_lock = threading.Lock()


def throwaway_certificate() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    global _throwaway
    with _throwaway_lock:
        if _throwaway is None:
            key = ec.generate_private_key(ec.SECP256R1())
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wirecheck-psk")])
            now = datetime.datetime.now(datetime.UTC)
            cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                    .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                    .not_valid_after(now + datetime.timedelta(days=3650)).sign(key, hashes.SHA256()))
            _throwaway = (cert, key)
        return _throwaway


class KeyLog:
    """An append-only NSS key log shared by every connection of the process (aioquic's
    ``secrets_log_file`` protocol: it calls ``write`` with whole lines and ``flush``)."""

    _lock = threading.Lock()
    _open: dict[str, KeyLog] = {}

    def __init__(self, path: str):
        self.path = path

    @classmethod
    def for_path(cls, path: str) -> KeyLog:
        with cls._lock:
            log = cls._open.get(path)
            if log is None:
                log = cls._open[path] = cls(path)
            return log

    def write(self, text: str) -> int:
        data = text.encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        return len(text)

    def flush(self) -> None:
        pass


class _Fanout:
    def __init__(self, logs: list[KeyLog]):
        self.logs = logs
        self._line = ""

    def write(self, text: str) -> int:
        # aioquic writes one complete line per call; buffer anyway so each record lands whole
        self._line += text
        if self._line.endswith("\n"):
            for log in self.logs:
                log.write(self._line)
            self._line = ""
        return len(text)

    def flush(self) -> None:
        pass


class QlogDir(QuicLogger):
    """One qlog file per connection end in QLOGDIR, named ``<ODCID>_<client|server>.qlog`` (as
    quic-go and ngtcp2 name them); aioquic's QuicFileLogger names by ODCID only, so the two ends of a
    connection in one process would overwrite each other."""

    def __init__(self, path: str):
        os.makedirs(path, exist_ok=True)
        self.path = path
        super().__init__()
        self.open_traces: list[QuicLoggerTrace] = []  # ours: the base class's list is private

    def start_trace(self, is_client: bool, odcid: bytes) -> QuicLoggerTrace:
        trace = QuicLoggerTrace(is_client=is_client, odcid=odcid)
        self.open_traces.append(trace)
        return trace

    def end_trace(self, trace: QuicLoggerTrace) -> None:
        data = trace.to_dict()
        name = f"{data['common_fields']['ODCID']}_{data['vantage_point']['type']}.qlog"
        tmp = os.path.join(self.path, "." + name)
        with open(tmp, "w") as f:
            json.dump({"qlog_format": "JSON", "qlog_version": QLOG_VERSION, "traces": [data]}, f)
        os.replace(tmp, os.path.join(self.path, name))
        self.open_traces.remove(trace)


def keylog_paths(pcap_file: str | None) -> list[str]:
    """Where secrets go: ``<pcap without suffix>.keys`` next to the capture, and SSLKEYLOGFILE."""
    paths = []
    if pcap_file:
        base, _ = os.path.splitext(pcap_file)
        paths.append(base + ".keys")
    env = os.environ.get("SSLKEYLOGFILE")
    if env:
        paths.append(os.path.abspath(env))
    return paths


def secrets_log(pcap_file: str | None) -> _Fanout | None:
    paths = keylog_paths(pcap_file)
    return _Fanout([KeyLog.for_path(p) for p in paths]) if paths else None


# -- session resumption: tickets issued by a server, session data held by a client ------------------

class TicketStore:
    """Tickets a server issued, per master key (quic.ko's SESSION_TICKET key: set on the listener, or
    derived from the listener's secret and the client's IP). aioquic puts a random label in the
    NewSessionTicket and hands the ticket's state to a callback; we keep it under (key, label). A
    connection resumes only with a label issued under its own key: a ticket from another server or
    a corrupted one is not found and the handshake falls back to a full one (RFC 8446 4.6.1), as
    GnuTLS does when a ticket does not decrypt. Process-wide (tickets outlive connections and
    listeners, as a key shared between listeners does); old entries expire with the ticket."""

    _lock = threading.Lock()
    _tickets: dict[tuple[bytes, bytes], SessionTicket] = {}

    @classmethod
    def issue(cls, key: bytes, ticket: SessionTicket) -> None:
        now = datetime.datetime.now(datetime.UTC)
        with cls._lock:
            for k in [k for k, t in cls._tickets.items() if t.not_valid_after < now]:
                del cls._tickets[k]
            cls._tickets[(bytes(key), bytes(ticket.ticket))] = ticket

    @classmethod
    def fetch(cls, key: bytes, label: bytes) -> SessionTicket | None:
        with cls._lock:
            return cls._tickets.get((bytes(key), bytes(label)))


SESSION_MAGIC = "wirecheck-quic-session-1"


def encode_session(t: SessionTicket) -> bytes:
    """libquic's session data (quic_session_get_data): what a client needs to resume, self-contained."""
    return json.dumps({
        "v": SESSION_MAGIC, "age_add": t.age_add, "cipher_suite": int(t.cipher_suite),
        "max_early_data_size": t.max_early_data_size,
        "not_valid_after": t.not_valid_after.isoformat(), "not_valid_before": t.not_valid_before.isoformat(),
        "other_extensions": [[typ, bytes(v).hex()] for typ, v in t.other_extensions],
        "resumption_secret": t.resumption_secret.hex(), "server_name": t.server_name, "ticket": t.ticket.hex(),
    }).encode()


def decode_session(data: bytes) -> SessionTicket:
    """The inverse of encode_session; ValueError names what is wrong."""
    try:
        d = json.loads(bytes(data).decode())
        if not isinstance(d, dict) or d.get("v") != SESSION_MAGIC:
            raise ValueError("not wirecheck QUIC session data")
        return SessionTicket(
            age_add=int(d["age_add"]), cipher_suite=CipherSuite(int(d["cipher_suite"])),
            not_valid_after=datetime.datetime.fromisoformat(d["not_valid_after"]),
            not_valid_before=datetime.datetime.fromisoformat(d["not_valid_before"]),
            resumption_secret=bytes.fromhex(d["resumption_secret"]), server_name=str(d["server_name"]),
            ticket=bytes.fromhex(d["ticket"]), max_early_data_size=d["max_early_data_size"],
            other_extensions=[(int(typ), bytes.fromhex(v)) for typ, v in d["other_extensions"]],
        )
    except (KeyError, TypeError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"bad session data: {e}") from e


def psk_aware_fetcher(psks: dict[bytes, SessionTicket], key: bytes | None):
    """A server's ticket fetcher: an external PSK identity (binder label "ext binder") or a ticket
    this server issued under ``key`` (a resumption: "res binder"). aioquic asks before it derives
    the binder, in the thread that runs this connection's TLS, so the label follows the identity."""
    def fetch(label: bytes) -> SessionTicket | None:
        t = psks.get(label)
        if t is not None:
            _state.external = True
            return t
        _state.external = False
        return TicketStore.fetch(key, label) if key is not None else None
    return fetch
