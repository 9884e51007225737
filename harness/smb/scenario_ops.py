"""Scenario operations of the SMB capability: `serve`, `smb.connect`, `smb.negotiate`, `smb.write`, `smb.read`.

The reference server (harness.smb_server.SMBServer) and client (harness.smb_client.SMBClient) run as
child processes on emulated hosts, started through the cell context like the tcp/udp peers of
harness.scenario.ops.net, so the socket wrapper's pcap of the cell captures them. This module is also
the peer program: ``python -m harness.smb.scenario_ops server|client ...``.

* ``serve`` starts the server on ``host`` (a temporary share directory in the cell's scratch area) and
  returns once it listens.
* ``smb.connect`` starts a client process that opens the transport connection (TCP, SMB Direct, or
  QUIC including its handshake) and then waits for requests. The client process stays up for the
  rest of the cell; later steps (``on: <as of smb.connect>``) hand it requests through files in the
  cell's scratch directory (``<name>.ctl/N.req.json`` -> ``N.res.json``).
* ``smb.connect`` with ``resume: resumed|0rtt`` (QUIC) first makes a full connection, keeps its session
  ticket and closes it, then resumes; ``0rtt`` sends the first SMB PDU before the handshake (0-RTT).
  The client also serves side requests (``quic.migrate``) while an SMB request is in progress
  (quic_scenario_ops.py).
* ``smb.negotiate`` sends SMB2 NEGOTIATE (only); ``smb.write`` / ``smb.read`` negotiate if not done yet,
  run SESSION_SETUP and TREE_CONNECT once, then WRITE / READ a file. ``smb.write`` records
  ``written_sha256`` in its own result and in the connection's (``${c.written_sha256}``); ``smb.read``
  records ``sha256``.

Keys: the client writes SMB session keys to the cell's key file (WIRECHECK_SMB_KEYS, tshark's
smb2_seskey_list), QUIC/TLS secrets go to the cell's SSLKEYLOGFILE, so the cell's pcap checks can
decrypt. QUIC options: ``auth`` psk | cert | cert-client (the client presents a certificate the server
requires), ``version`` v1 | v2 (the client's first Initial and the listener's preferred version), and
the section variable QUIC_1RTT_ENCRYPTION=off sets quic.ko's test-only disable_1rtt_encryption on both
ends. Certificates and the PSK are generated per cell in the cell's scratch directory.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import socket
import sys
import time
from pathlib import Path
from typing import Any

TRANSPORTS = ["tcp", "nbt", "quic", "smbdirect"]
DEFAULT_USER = "wirecheck:wirecheck-pass"
SERVER_NAME = "server.test"
READY = "listening"


# ------------------------------------------------------------------------------------- peer programs

def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _quic_tune(sock: Any, a: argparse.Namespace) -> None:
    """CONFIG.version and TRANSPORT_PARAM.disable_1rtt_encryption, read-modify-write."""
    from wrappers import quic

    if a.version == "v2":
        cfg = quic.Config.unpack(sock.getsockopt(quic.SOL_QUIC, quic.QUIC_SOCKOPT_CONFIG, quic.Config.FMT.size))
        cfg.version = quic.QUIC_VERSION_V2
        sock.setsockopt(quic.SOL_QUIC, quic.QUIC_SOCKOPT_CONFIG, cfg.pack())
    if a.no_1rtt_encryption:
        tp = quic.TransportParam.unpack(sock.getsockopt(quic.SOL_QUIC, quic.QUIC_SOCKOPT_TRANSPORT_PARAM,
                                                        quic.TransportParam.FMT.size))
        tp.disable_1rtt_encryption = 1
        sock.setsockopt(quic.SOL_QUIC, quic.QUIC_SOCKOPT_TRANSPORT_PARAM, tp.pack())


def _quic_listener(a: argparse.Namespace) -> Any:
    from harness.transport.base import TransportError
    from harness.transport.quic import ALPN, QuicListener, QuicTransport, _quic

    class Listener(QuicListener):
        def accept(self, timeout: float | None = None) -> QuicTransport:
            quic = _quic()
            self.sock.settimeout(timeout)
            try:
                conn, _ = self.sock.accept()
            except OSError as exc:
                if "timed out" in str(exc) or getattr(exc, "errno", None) in (11, 110):
                    raise TimeoutError(str(exc)) from exc
                raise
            try:
                if a.auth == "psk":
                    quic.server_handshake(conn, a.psk, None, a.alpn, timeout=self.io_timeout)
                else:
                    quic.server_handshake(conn, self.key, self.cert, a.alpn, cafile=self.client_ca,
                                          require_client_cert=bool(self.client_ca), timeout=self.io_timeout)
            except OSError as exc:
                conn.close()
                raise TransportError(f"QUIC handshake failed: {exc}") from exc
            return QuicTransport(conn, self.io_timeout)

    listener = Listener(a.addr, a.port, cert=a.cert, key=a.key,
                        client_ca=a.ca if a.auth == "cert-client" else None)
    if a.alpn != ALPN:
        listener.sock.setsockopt(_quic().SOL_QUIC, _quic().QUIC_SOCKOPT_ALPN, a.alpn.encode())
    _quic_tune(listener.sock, a)
    return listener


def run_server(a: argparse.Namespace) -> int:
    from harness.smb.server import ServerConfig, ShareConfig
    from harness.smb_server import SMBServer
    from harness.transport import listen

    user, password = a.user.split(":", 1)
    from harness.smb.client import CIPHER_NAMES

    extra = {"ciphers": tuple(CIPHER_NAMES[c] for c in a.ciphers.split(","))} if a.ciphers else {}
    config = ServerConfig(shares={a.share: ShareConfig(a.share, a.path, False)}, users={user: password},
                          encrypt=a.encrypt, accept_transport_security=a.accept_transport_security, **extra)
    listener = _quic_listener(a) if a.transport == "quic" else listen(a.transport, a.addr, a.port)
    server = SMBServer(config, transport=a.transport, listener=listener)
    _emit({"state": READY, "address": a.addr, "port": server.port})
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def _quic_handshake(sock: Any, a: argparse.Namespace, session: bytes | None = None) -> None:
    from harness.transport.quic import _quic

    quic = _quic()
    name = a.server_name or SERVER_NAME
    if a.auth == "psk":
        quic.client_handshake(sock, a.psk, name, a.alpn, timeout=a.timeout, session_data=session)
    else:
        client_cert = a.auth == "cert-client"
        quic.client_handshake(sock, None, name, a.alpn, cafile=a.ca,
                              certfile=a.client_cert if client_cert else None,
                              keyfile=a.client_key if client_cert else None, timeout=a.timeout, session_data=session)


def _first_session(a: argparse.Namespace) -> tuple[bytes, bytes]:
    """--resume: a first QUIC connection with a full handshake, kept until its ticket arrives; returns
    (session data, the server's transport parameters as saved for 0-RTT), then closes."""
    from harness.transport.quic import _new_socket, _quic

    quic = _quic()
    sock = _new_socket(socket.AF_INET6 if ":" in a.addr else socket.AF_INET)
    try:
        _quic_tune(sock, a)
        sock.settimeout(a.timeout)
        sock.connect((a.addr, a.port))
        _quic_handshake(sock, a)
        deadline = time.monotonic() + min(a.timeout, 10.0)
        while True:
            try:
                session = quic.session_get_data(sock)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise OSError(11, "no session ticket from the server within 10 s") from None
                time.sleep(0.01)
        saved = sock.getsockopt(quic.SOL_QUIC, quic.QUIC_SOCKOPT_TRANSPORT_PARAM, quic.TransportParam(remote=1).pack())
        return session, saved
    finally:
        sock.close()


def _connect_quic(a: argparse.Namespace) -> Any:
    """The QUIC connection; with --resume, a second one resuming the first's session (``resumed``),
    optionally sending its first SMB PDU (NEGOTIATE) as 0-RTT data (``0rtt``: the handshake runs when
    the client first waits for a response, as libquic's user sends before quic_handshake())."""
    from harness.transport.base import TransportError
    from harness.transport.quic import QuicTransport, _new_socket, _quic

    quic = _quic()
    session = saved = None
    if a.resume != "none":
        try:
            session, saved = _first_session(a)
        except OSError as exc:
            raise TransportError(f"QUIC first connection to {a.addr}:{a.port} failed: {exc}") from exc
    sock = _new_socket(socket.AF_INET6 if ":" in a.addr else socket.AF_INET)
    try:
        _quic_tune(sock, a)
        sock.settimeout(a.timeout)
        sock.connect((a.addr, a.port))
        if a.resume == "0rtt":
            sock.setsockopt(quic.SOL_QUIC, quic.QUIC_SOCKOPT_TRANSPORT_PARAM, saved)
            return EarlyQuicTransport(sock, a.timeout, lambda: _quic_handshake(sock, a, session))
        _quic_handshake(sock, a, session)
    except OSError as exc:
        sock.close()
        raise TransportError(f"QUIC handshake with {a.addr}:{a.port} failed: {exc}") from exc
    return QuicTransport(sock, a.timeout)


def _early_transport_class() -> type:
    from harness.transport.base import TransportError
    from harness.transport.quic import QuicTransport

    class Early(QuicTransport):
        """Sends before the handshake (0-RTT data) and runs the handshake on the first receive."""

        def __init__(self, sock: Any, io_timeout: float, handshake: Any) -> None:
            super().__init__(sock, io_timeout)
            self._handshake = handshake

        def recv_frame(self, timeout: float | None = None) -> Any:
            if self._handshake is not None:
                h, self._handshake = self._handshake, None
                try:
                    h()
                except OSError as exc:
                    raise TransportError(f"QUIC 0-RTT handshake failed: {exc}") from exc
            return super().recv_frame(timeout)

    return Early


def EarlyQuicTransport(sock: Any, io_timeout: float, handshake: Any) -> Any:  # noqa: N802 - a class factory
    return _early_transport_class()(sock, io_timeout, handshake)


def _quic_state(transport: Any) -> dict:
    """What the QUIC socket says about its handshake (for scenario expectations)."""
    from wrappers.quic import QuicSocket

    sock = getattr(transport, "sock", None)
    conn = getattr(sock, "_conn", None) if isinstance(sock, QuicSocket) else None
    if conn is None:  # not QUIC (SMB Direct sockets have a _conn of their own)
        return {}
    return {"resumed": conn.session_resumed, "early_data": conn.early_data_accepted}


def _serve_requests(ctl: Path, prefix: str, handle: Any) -> None:
    """The client's control-file protocol: ``<prefix>N.req.json`` -> ``<prefix>N.res.json`` in order;
    ``handle(req)`` returns the result, an exception becomes ``error`` (and ``ntstatus``); ``close`` ends."""
    n = 0
    while True:
        req_path = ctl / f"{prefix}{n}.req.json"
        if not req_path.exists():
            time.sleep(0.005)
            continue
        req = json.loads(req_path.read_text())
        try:
            res = handle(req)
        except Exception as exc:  # noqa: BLE001 - reported to the operation
            status = getattr(exc, "status", None)
            res = {"error": f"{type(exc).__name__}: {exc}",
                   "ntstatus": getattr(status, "name", None) if status is not None else None}
        tmp = ctl / f"{prefix}{n}.res.tmp"
        tmp.write_text(json.dumps(res))
        tmp.rename(ctl / f"{prefix}{n}.res.json")
        n += 1
        if req["op"] == "close":
            return


def _side_requests(ctl: Path, transport: Any) -> None:
    """Requests that must not wait for the SMB request in progress (``quic.migrate`` during a
    transfer): ``side.N.req.json`` -> ``side.N.res.json``, served by a thread of the client."""
    from wrappers import quic

    def handle(req: dict) -> dict:
        if req["op"] != "quic.migrate":
            raise ValueError(f"unknown side request {req['op']}")
        sock = transport.sock
        host, port = sock.getsockname()[:2]
        new_port = port + int(req.get("port_offset", 1))
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock.setsockopt(quic.SOL_QUIC, quic.QUIC_SOCKOPT_CONNECTION_MIGRATION, quic.sockaddr_in(host, new_port, fam))
        return {"old_port": port, "new_port": new_port}

    _serve_requests(ctl, "side.", handle)


def _client_class() -> type:
    from harness.smb_client import SMBClient

    class Client(SMBClient):
        """SMBClient whose constructor stops after NEGOTIATE (SESSION_SETUP on the first use)."""

        deferred = True

        def _login(self) -> None:
            if not self.deferred:
                super()._login()

    return Client


def run_client(a: argparse.Namespace) -> int:
    from harness.transport import connect

    ctl = Path(a.control)
    user, password = a.user.split(":", 1)
    try:
        transport = _connect_quic(a) if a.transport == "quic" else connect(a.transport, a.addr, a.port,
                                                                           timeout=a.timeout)
    except Exception as exc:  # noqa: BLE001 - reported to the operation
        _emit({"state": "error", "error": f"{type(exc).__name__}: {exc}", "errno": _errno_of(exc)})
        return 3
    _emit({"state": "connected", "transport": a.transport, **_quic_state(transport)})
    if a.transport == "quic":
        import threading

        threading.Thread(target=_side_requests, args=(ctl, transport), daemon=True).start()
    client: Any = None
    share: Any = None
    side: Any = None

    def negotiate() -> Any:
        nonlocal client
        if client is None:
            client = _client_class()(a.addr, a.port, transport=a.transport, username=user, password=password,
                                     server_name=SERVER_NAME, timeout=a.timeout, keys_out=a.keys_out,
                                     transport_obj=transport, sign=a.sign == "yes", encrypt=a.encrypt,
                                     cipher=a.cipher, accept_transport_security=a.transport_security)
        return client

    def tree() -> Any:
        nonlocal share
        c = negotiate()
        if c.deferred:
            c.deferred = False
            c._login()
        if share is None:
            share = c.share(a.share)
        return share

    side: Any = None

    def handle(req: dict) -> dict:
        nonlocal side
        if req["op"] == "negotiate":
            c = negotiate()
            return {"dialect": f"0x{int(c.conn.dialect):04x}" if getattr(c.conn, "dialect", None) else None,
                    "cipher": _cipher_name(c.conn.cipher),
                    "transport_security": bool(c.conn.accept_transport_security)}
        if req["op"] == "session":
            tree()
            sess = client.session
            return {"cipher": _cipher_name(client.conn.cipher), "encrypted": bool(sess.encrypt),
                    "transport_security": bool(client.conn.accept_transport_security)}
        if req["op"] == "write":
            data = random.Random(req["seed"]).randbytes(req["size"])
            sh = tree()
            sh.client.rdma = req.get("rdma", True)
            before = sh.client.rdma_bytes["write"]
            sh.put_bytes(req["path"], data)
            return {"written": len(data), "written_sha256": hashlib.sha256(data).hexdigest(),
                    "rdma_bytes": sh.client.rdma_bytes["write"] - before}
        if req["op"] == "read":
            sh = tree()
            sh.client.rdma = req.get("rdma", True)
            before = sh.client.rdma_bytes["read"]
            data = sh.get_bytes(req["path"])
            return {"read": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                    "rdma_bytes": sh.client.rdma_bytes["read"] - before}
        if req["op"] == "side_start":
            side = _SideStreams(transport, req)
            return {"started": req["streams"]}
        if req["op"] == "side_wait":
            return side.wait(float(req.get("timeout", 60)))
        if req["op"] == "quic.state":
            return _quic_state(transport)
        if req["op"] == "close":
            if client is not None:
                client.close()
            return {"closed": True}
        return {}

    _serve_requests(ctl, "", handle)
    return 0


class _SideStreams:
    """Other streams on the SMB connection's QUIC socket, sent from a thread while SMB goes on.

    Each of `streams` streams (uni or bidi) carries `size` seeded bytes and FIN. The SMB transport pins
    its own stream id, so neither side mixes these bytes into SMB PDUs."""

    def __init__(self, transport: Any, req: dict):
        import threading

        self.req = req
        self.out: dict[str, Any] = {"sids": [], "sent": 0, "sent_sha256": [], "errors": []}
        self.thread = threading.Thread(target=self.run, args=(transport.sock,), daemon=True)
        self.thread.start()

    def run(self, sock: Any) -> None:
        from wrappers import quic

        flags = quic.MSG_STREAM_UNI if self.req.get("kind") == "uni" else 0
        for i in range(int(self.req["streams"])):
            data = random.Random(500 + i).randbytes(int(self.req["size"]))
            try:
                sid = quic.StreamInfo.unpack(sock.getsockopt(quic.SOL_QUIC, quic.QUIC_SOCKOPT_STREAM_OPEN,
                                                             quic.StreamInfo(-1, flags).pack())).stream_id
                view = memoryview(data)
                while view:
                    last = len(view) <= 16384
                    n = quic.quic_sendmsg(sock, bytes(view[:16384]), sid, quic.MSG_STREAM_FIN if last else 0)
                    view = view[n:]
            except OSError as exc:
                self.out["errors"].append(f"stream {i}: {_errno_of(exc) or exc}")
                continue
            self.out["sids"].append(sid)
            self.out["sent"] += 1
            self.out["sent_sha256"].append(hashlib.sha256(data).hexdigest())

    def wait(self, timeout: float) -> dict:
        self.thread.join(timeout)
        if self.thread.is_alive():
            return {**self.out, "error": f"side streams still sending after {timeout:g}s"}
        return {**self.out, "failed": len(self.out["errors"])}


def _errno_of(exc: BaseException | None) -> str | None:
    """The errno name of the first OSError in an exception's chain (a handshake failure's ETIMEDOUT...)."""
    import errno as _errno

    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno:
            return _errno.errorcode.get(exc.errno)
        if isinstance(exc, TimeoutError):
            return "ETIMEDOUT"
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _cipher_name(cipher: Any) -> str | None:
    from harness.smb.client import CIPHER_NAMES

    names = {int(v): k for k, v in CIPHER_NAMES.items()}
    return names.get(int(cipher)) if cipher else None


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.smb.scenario_ops")
    p.add_argument("role", choices=["server", "client"])
    p.add_argument("--transport", choices=TRANSPORTS, required=True)
    p.add_argument("--addr", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--share", default="data")
    p.add_argument("--path")
    p.add_argument("--user", default=DEFAULT_USER)
    p.add_argument("--auth", choices=["psk", "cert", "cert-client"], default="cert")
    p.add_argument("--version", choices=["v1", "v2"], default="v1")
    p.add_argument("--no-1rtt-encryption", action="store_true")
    p.add_argument("--resume", choices=["none", "resumed", "0rtt"], default="none")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--ca")
    p.add_argument("--client-cert")
    p.add_argument("--client-key")
    p.add_argument("--psk")
    p.add_argument("--keys-out")
    p.add_argument("--control")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--sign", choices=["yes", "no"], default="yes",
                   help="client: require signing (no: the session may use RDMA channels, MS-SMB2 3.2.4.6)")
    p.add_argument("--alpn", default="smb")
    p.add_argument("--server-name")
    p.add_argument("--encrypt", action="store_true")
    p.add_argument("--cipher")
    p.add_argument("--ciphers")
    p.add_argument("--transport-security", action="store_true")
    p.add_argument("--accept-transport-security", action="store_true")
    a = p.parse_args(argv)
    return run_server(a) if a.role == "server" else run_client(a)


# ------------------------------------------------------------------------------------- operations

if __name__ != "__main__":
    from harness.scenario import OpError, StepFailed, operation
    from harness.scenario.context import Context
    from harness.scenario.ops.core import HOST
    from harness.scenario.ops.net import FAMILY, SIZE, address, size_of

    def _pki(ctx: Context) -> dict[str, str]:
        """A CA, server and client certificates and a PSK file in the cell's scratch directory (once)."""
        d = ctx.work / "pki"
        if (d / "server-expired.key").exists():
            return {k: str(d / f) for k, f in (("ca", "ca.pem"), ("cert", "server.pem"), ("key", "server.key"),
                                               ("client_cert", "client.pem"), ("client_key", "client.key"),
                                               ("psk", "psk.txt"), ("psk_unknown", "psk-unknown.txt"),
                                               ("cert_expired", "server-expired.pem"),
                                               ("key_expired", "server-expired.key"))}
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        d.mkdir(mode=0o700, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)

        def name(cn: str) -> x509.Name:
            return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

        def build(subject: str, pub: Any, issuer: str, signer: Any, ca: bool, sans: list | None) -> Any:
            b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
                 .public_key(pub).serial_number(x509.random_serial_number())
                 .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
                 .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
            if sans:
                b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            return b.sign(signer, hashes.SHA256())

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = build("wirecheck cell CA", ca_key.public_key(), "wirecheck cell CA", ca_key, True, None)
        files: dict[str, str] = {}

        def write(key: str, fname: str, data: bytes) -> None:
            (d / fname).write_bytes(data)
            files[key] = str(d / fname)

        write("ca", "ca.pem", ca.public_bytes(serialization.Encoding.PEM))
        for role, cn, sans in (("cert", SERVER_NAME, [x509.DNSName(SERVER_NAME),
                                                       x509.IPAddress(ipaddress.ip_address("127.0.0.10"))]),
                               ("client_cert", "client.test", [x509.DNSName("client.test")])):
            k = ec.generate_private_key(ec.SECP256R1())
            cert = build(cn, k.public_key(), "wirecheck cell CA", ca_key, False, sans)
            stem = "server" if role == "cert" else "client"
            write(role, f"{stem}.pem", cert.public_bytes(serialization.Encoding.PEM))
            write("key" if role == "cert" else "client_key", f"{stem}.key",
                  k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
        psk_key = os.urandom(32).hex()
        write("psk", "psk.txt", f"wirecheck:{psk_key}\n".encode())
        # negative cells: the same key under an identity the server does not know, and a server
        # certificate that expired yesterday (otherwise valid: same CA, same names)
        write("psk_unknown", "psk-unknown.txt", f"stranger:{psk_key}\n".encode())
        k = ec.generate_private_key(ec.SECP256R1())
        expired = (x509.CertificateBuilder().subject_name(name(SERVER_NAME)).issuer_name(name("wirecheck cell CA"))
                   .public_key(k.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=3)).not_valid_after(now - datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), critical=False)
                   .sign(ca_key, hashes.SHA256()))
        write("cert_expired", "server-expired.pem", expired.public_bytes(serialization.Encoding.PEM))
        write("key_expired", "server-expired.key",
              k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))
        return files

    def _quic_argv(ctx: Context, args: dict) -> list[str]:
        """QUIC options of a server or client; the negative-cell knobs: `alpn`, `server_name` (client),
        `psk_identity: unknown` (client), `certificate: expired` (server)."""
        pki = _pki(ctx)
        expired = args.get("certificate") == "expired"
        argv = ["--auth", args.get("auth", "cert"), "--version", args.get("version", "v1"),
                "--cert", pki["cert_expired" if expired else "cert"], "--key", pki["key_expired" if expired else "key"],
                "--ca", pki["ca"], "--client-cert", pki["client_cert"], "--client-key", pki["client_key"],
                "--psk", pki["psk_unknown" if args.get("psk_identity") == "unknown" else "psk"],
                "--alpn", args.get("alpn", "smb")]
        if args.get("server_name"):
            argv += ["--server-name", args["server_name"]]
        if str(ctx.vars.get("QUIC_1RTT_ENCRYPTION", "on")).lower() in ("off", "0", "no", "false"):
            argv.append("--no-1rtt-encryption")
        return argv

    def _port(args: dict) -> int:
        from harness.transport import DEFAULT_PORTS

        return int(args.get("port") or DEFAULT_PORTS[args["transport"]])

    def _wait_line(ctx: Context, name: str, timeout: float) -> dict:
        """The first JSON line a peer prints (its state), or StepFailed when it exits or stays silent."""
        proc = ctx.proc(name)
        deadline = time.monotonic() + timeout
        while True:
            for line in proc.stdout().splitlines():
                line = line.strip()
                if line.startswith("{"):
                    return json.loads(line)
            if proc.popen.poll() is not None:
                raise StepFailed(f"{name} exited with status {proc.popen.returncode}: "
                                 + proc.err_path.read_text(errors="replace")[-800:])
            if time.monotonic() > deadline:
                raise StepFailed(f"{name} printed nothing within {timeout:g}s")
            time.sleep(0.01)

    CIPHERS = {"enum": ["aes-128-ccm", "aes-128-gcm", "aes-256-ccm", "aes-256-gcm"]}
    COMMON = {"transport": {"enum": TRANSPORTS}, "host": HOST, "family": FAMILY,
              "port": {"type": "integer", "minimum": 1, "maximum": 65535},
              "auth": {"enum": ["psk", "cert", "cert-client"]}, "version": {"enum": ["v1", "v2"]},
              "alpn": {"type": "string", "minLength": 1, "maxLength": 255},
              "encrypt": {"type": "boolean"}, "as": {"type": "string"}}
    SERVE = {"type": "object", "additionalProperties": False, "required": ["transport", "host"],
             "properties": {**COMMON, "share": {"type": "string"}, "user": {"type": "string"},
                            "ciphers": {"type": "array", "minItems": 1, "items": CIPHERS},
                            "accept_transport_security": {"type": "boolean"},
                            "certificate": {"enum": ["valid", "expired"]}}}
    CONNECT = {"type": "object", "additionalProperties": False, "required": ["transport", "host", "to"],
               "properties": {**COMMON, "to": HOST, "share": {"type": "string"}, "user": {"type": "string"},
                              "resume": {"enum": ["none", "resumed", "0rtt"]},
                              "io_timeout": {"type": "number", "exclusiveMinimum": 0},
                              "sign": {"type": "boolean"},
                              "cipher": CIPHERS, "transport_security": {"type": "boolean"},
                              "server_name": {"type": "string", "minLength": 1},
                              "psk_identity": {"enum": ["known", "unknown"]}}}
    ON = {"on": {"type": "string"}, "as": {"type": "string"}}
    NEGOTIATE = {"type": "object", "additionalProperties": False, "required": ["on"], "properties": ON}
    WRITE = {"type": "object", "additionalProperties": False, "required": ["on", "path", "size"],
             "properties": {**ON, "path": {"type": "string"}, "size": SIZE, "seed": {"type": "integer"},
                            "rdma": {"type": "boolean"}}}
    READ = {"type": "object", "additionalProperties": False, "required": ["on", "path"],
            "properties": {**ON, "path": {"type": "string"}, "rdma": {"type": "boolean"}}}

    @operation("serve", schema=SERVE, timeout=30)
    def serve(ctx: Context, args: dict) -> dict:
        """Start the SMB server on `host` over `transport` with one share (a fresh directory); returns once it listens."""
        family = args.get("family", "ipv4")
        addr = address(family, args["host"])
        name = args.get("as") or "smb-server"
        share = args.get("share", "data")
        path = ctx.work / f"{name}.share"
        path.mkdir(mode=0o700, exist_ok=True)
        argv = [sys.executable, "-m", "harness.smb.scenario_ops", "server", "--transport", args["transport"],
                "--addr", addr, "--port", str(_port(args)), "--share", share, "--path", str(path),
                "--user", args.get("user", DEFAULT_USER)]
        if args["transport"] == "quic":
            argv += _quic_argv(ctx, args)
        if args.get("encrypt"):
            argv.append("--encrypt")
        if args.get("ciphers"):
            argv += ["--ciphers", ",".join(args["ciphers"])]
        if args.get("accept_transport_security"):
            argv.append("--accept-transport-security")
        ctx.start(name, argv, host=args["host"], cwd=os.getcwd())  # relative key and pcap paths
        state = _wait_line(ctx, name, 20.0)
        return {**state, "share": share, "path": str(path), "transport": args["transport"]}

    def _request(ctx: Context, on: str, req: dict, timeout: float = 120.0, side: bool = False) -> dict:
        """A request to an smb.connect client; ``side``: one its side thread serves at once."""
        info = ctx.results.get(on) or {}
        ctl = info.get("control")
        if not ctl:
            raise StepFailed(f"{on!r} is not an smb.connect result")
        prefix, counter = ("side.", "side_requests") if side else ("", "requests")
        with ctx.lock:
            n = info[counter] = info.get(counter, 0) + 1
        n -= 1
        d = Path(ctl)
        tmp = d / f"{prefix}{n}.req.tmp"
        tmp.write_text(json.dumps(req))
        tmp.rename(d / f"{prefix}{n}.req.json")
        proc = ctx.proc(on)
        res_path = d / f"{prefix}{n}.res.json"
        deadline = time.monotonic() + timeout
        while not res_path.exists():
            if proc.popen.poll() is not None:
                raise StepFailed(f"client {on} exited with status {proc.popen.returncode}: "
                                 + proc.err_path.read_text(errors="replace")[-800:])
            if time.monotonic() > deadline:
                raise StepFailed(f"client {on} did not answer {req['op']} within {timeout:g}s")
            time.sleep(0.005)
        res = json.loads(res_path.read_text())
        if res.get("error"):
            raise OpError(f"{req['op']} on {on}: {res['error']}", ntstatus=res.get("ntstatus"), result=res)
        return res

    @operation("smb.connect", schema=CONNECT, timeout=30)
    def smb_connect(ctx: Context, args: dict) -> dict:
        """Start an SMB client process on `host` and open the transport connection to `to` (QUIC: with its handshake)."""
        family = args.get("family", "ipv4")
        addr = address(family, args["to"])
        name = args.get("as") or f"smb-client-{len(ctx.procs) + 1}"
        ctl = ctx.work / f"{name}.ctl"
        ctl.mkdir(mode=0o700, exist_ok=True)
        argv = [sys.executable, "-m", "harness.smb.scenario_ops", "client", "--transport", args["transport"],
                "--addr", addr, "--port", str(_port(args)), "--share", args.get("share", "data"),
                "--user", args.get("user", DEFAULT_USER), "--keys-out", ctx.smb_keys, "--control", str(ctl),
                "--timeout", str(args.get("io_timeout", 30))]
        # Signing is required unless asked otherwise; over SMB Direct it is off by default, since a
        # signed session never uses RDMA channels (MS-SMB2 3.2.4.6/3.2.4.7) and RDMA is the point.
        argv += ["--sign", "yes" if args.get("sign", args["transport"] != "smbdirect") else "no"]
        if args["transport"] == "quic":
            argv += _quic_argv(ctx, args) + ["--resume", args.get("resume", "none")]
        elif args.get("resume", "none") != "none":
            raise StepFailed("resume: needs transport: quic")
        if args.get("encrypt"):
            argv.append("--encrypt")
        if args.get("cipher"):
            argv += ["--cipher", args["cipher"]]
        if args.get("transport_security"):
            argv.append("--transport-security")
        ctx.start(name, argv, host=args["host"], cwd=os.getcwd())  # relative key and pcap paths

        def close() -> None:
            if ctx.proc(name).popen.poll() is None:
                try:
                    _request(ctx, name, {"op": "close"}, timeout=3)
                except Exception:  # noqa: BLE001, S110 - teardown stops it anyway
                    pass
        ctx.on_cleanup(close)
        state = _wait_line(ctx, name, 30.0)
        if state.get("state") != "connected":
            raise OpError(f"{name}: {state.get('error')}", errno=state.get("errno"), result=state)
        return {**state, "control": str(ctl), "address": addr}

    @operation("smb.negotiate", schema=NEGOTIATE, timeout=30)
    def smb_negotiate(ctx: Context, args: dict) -> dict:
        """SMB2 NEGOTIATE on an smb.connect connection: the dialect."""
        return _request(ctx, args["on"], {"op": "negotiate"})

    @operation("smb.session", schema=NEGOTIATE, timeout=60)
    def smb_session(ctx: Context, args: dict) -> dict:
        """SESSION_SETUP and TREE_CONNECT on an smb.connect connection: cipher, encrypted, transport_security."""
        return _request(ctx, args["on"], {"op": "session"})

    SIDE = {"type": "object", "additionalProperties": False, "required": ["on", "streams"],
            "properties": {**ON, "streams": {"type": "integer", "minimum": 1, "maximum": 1000}, "size": SIZE,
                           "kind": {"enum": ["uni", "bidi"]}}}

    @operation("smb.side_streams", schema=SIDE, timeout=30)
    def smb_side_streams(ctx: Context, args: dict) -> dict:
        """QUIC only: start sending `streams` other streams (uni or bidi, `size` seeded bytes + FIN each) on the connection's socket."""
        return _request(ctx, args["on"], {"op": "side_start", "streams": args["streams"], "kind": args.get("kind", "uni"),
                                          "size": size_of(args.get("size", 65536))})

    @operation("smb.side_wait", schema=NEGOTIATE, timeout=90)
    def smb_side_wait(ctx: Context, args: dict) -> dict:
        """Wait for smb.side_streams to finish: sids, sent, sent_sha256, errors, failed."""
        return _request(ctx, args["on"], {"op": "side_wait", "timeout": 60})

    @operation("smb.write", schema=WRITE, timeout=120)
    def smb_write(ctx: Context, args: dict) -> dict:
        """Write `size` seeded bytes to `path` on the connection's share: written, written_sha256, rdma_bytes
        (also on the connection).  `rdma: true` demands that the data went by RDMA (SMB2_CHANNEL_RDMA_V1*),
        `rdma: false` forbids it; unset, the client decides (SMB Direct, unsigned session, > 16 KiB)."""
        res = _request(ctx, args["on"], {"op": "write", "path": args["path"], "size": size_of(args["size"]),
                                         "seed": args.get("seed", 1), "rdma": args.get("rdma", True) is not False})
        _check_rdma(args, res, res["written"])
        with ctx.lock:
            ctx.results[args["on"]].update(res)
        return res

    def _check_rdma(args: dict, res: dict, size: int) -> None:
        # Never pass an inline transfer off as an RDMA one.
        if args.get("rdma") and res.get("rdma_bytes", 0) < size:
            raise StepFailed(f"rdma: true, but only {res.get('rdma_bytes', 0)} of {size} bytes went by RDMA "
                             "(needs transport smbdirect, an unsigned, unencrypted session and I/O above 16 KiB)")

    @operation("smb.read", schema=READ, timeout=120)
    def smb_read(ctx: Context, args: dict) -> dict:
        """Read `path` from the connection's share: read (bytes), sha256, rdma_bytes (`rdma` as for smb.write)."""
        res = _request(ctx, args["on"], {"op": "read", "path": args["path"], "rdma": args.get("rdma", True) is not False})
        _check_rdma(args, res, res["read"])
        return res

    from . import quic_scenario_ops  # noqa: E402, F401 - quic.migrate, quic.rebind, quic.state


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
