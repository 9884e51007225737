"""The SMB peers behind the scenario operations of harness.scenario.ops.smb:
``python -m harness.peers.smb_ops server|client ...``.

Both run as child processes on emulated hosts, started through the cell context, so the socket
wrapper's pcap of the cell captures them; each prints one JSON line (its state) on stdout.

* ``server`` runs the reference server (harness.blocking.server.SMBServer) on one share and prints
  ``{"state": "listening", ...}`` once it listens.
* ``client`` opens the transport connection (TCP, SMB Direct, or QUIC including its handshake), prints
  ``{"state": "connected", ...}`` and then serves requests handed to it through files in its control
  directory (``N.req.json`` -> ``N.res.json``, in order, each announced by its name on stdin and
  answered by ``res N`` on stdout; ``close`` ends it). Over QUIC a thread also
  serves side requests (``side.N.req.json``: ``quic.migrate``) while an SMB request is in progress.
  With ``--resume resumed|0rtt`` it first makes a full connection, keeps its session ticket and closes
  it, then resumes; ``0rtt`` sends the first SMB PDU before the handshake (0-RTT). The SMB client stops
  after NEGOTIATE until a request needs a session (SESSION_SETUP and TREE_CONNECT on first use).

Keys: the client writes SMB session keys to ``--keys-out`` (tshark's smb2_seskey_list), QUIC/TLS secrets
go to SSLKEYLOGFILE, so the cell's pcap checks can decrypt. QUIC options: ``--auth`` psk | cert |
cert-client (the client presents a certificate the server requires), ``--version`` v1 | v2 (the
client's first Initial and the listener's preferred version), ``--no-1rtt-encryption`` (quic.ko's
test-only disable_1rtt_encryption).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

TRANSPORTS = ["tcp", "nbt", "quic", "smbdirect"]
DEFAULT_USER = "wirecheck:wirecheck-pass"
SERVER_NAME = "server.test"
READY = "listening"


# ------------------------------------------------------------------------------------- peer programs

_OUT = threading.Lock()


def _emit(obj: dict | str) -> None:
    """One whole line on stdout (a JSON state, or ``res N``), whichever thread prints it."""
    with _OUT:
        sys.stdout.write((obj if isinstance(obj, str) else json.dumps(obj)) + "\n")
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


def quic_listener(a: argparse.Namespace) -> Any:
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
    """Listen first, say so, then load the SMB server: its modules take most of a second to import,
    and a client connecting meanwhile waits in the listen backlog (a QUIC client retransmits its
    Initial) rather than the whole cell waiting for the import before it starts the client."""
    from harness.transport import listen

    listener = quic_listener(a) if a.transport == "quic" else listen(a.transport, a.addr, a.port)
    _emit({"state": READY, "address": a.addr, "port": listener.address[1]})

    from harness.blocking.server import SMBServer
    from harness.smb.client import CIPHER_NAMES
    from harness.smb.server import ServerConfig, ShareConfig

    user, password = a.user.split(":", 1)
    extra = {"ciphers": tuple(CIPHER_NAMES[c] for c in a.ciphers.split(","))} if a.ciphers else {}
    config = ServerConfig(shares={a.share: ShareConfig(a.share, a.path, False)}, users={user: password},
                          encrypt=a.encrypt, accept_transport_security=a.accept_transport_security, **extra)
    server = SMBServer(config, transport=a.transport, listener=listener)
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


def connect_quic(a: argparse.Namespace) -> Any:
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


class _Wakeups:
    """The launcher announces each request file by a line on stdin naming it (``N`` or ``side.N``);
    a thread sorts the lines into one queue per prefix, so each server loop blocks until its next
    request is there instead of polling the control directory. End of stdin (the launcher is gone)
    ends both loops."""

    def __init__(self) -> None:
        import queue
        import threading

        self.queues: dict[str, Any] = {"": queue.Queue(), "side.": queue.Queue()}
        threading.Thread(target=self._read, name="wakeups", daemon=True).start()

    def _read(self) -> None:
        for line in sys.stdin:
            name = line.strip()
            self.queues["side." if name.startswith("side.") else ""].put(name)
        for q in self.queues.values():
            q.put(None)

    def next(self, prefix: str) -> str | None:
        return self.queues[prefix].get()


def _serve_requests(ctl: Path, prefix: str, handle: Any, wakeups: _Wakeups) -> None:
    """The client's control-file protocol: ``<prefix>N.req.json`` -> ``<prefix>N.res.json`` in order,
    each announced on stdin and answered by the line ``res <prefix>N`` on stdout once its result file
    is in place; ``handle(req)`` returns the result, an exception becomes ``error`` (and ``ntstatus``);
    ``close`` ends."""
    n = 0
    while True:
        req_path = ctl / f"{prefix}{n}.req.json"
        if not req_path.exists():
            if wakeups.next(prefix) is None:
                return
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
        _emit(f"res {prefix}{n}")
        n += 1
        if req["op"] == "close":
            return


def _side_requests(ctl: Path, transport: Any, wakeups: _Wakeups) -> None:
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

    _serve_requests(ctl, "side.", handle, wakeups)


def _client_class() -> type:
    from harness.blocking.client import SMBClient

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
    # the SMB client's modules before the connection, so NEGOTIATE follows the handshake at once
    # (imported on the first request, they left a gap of 0.2-0.4 s after it in every capture)
    client_class = _client_class()
    try:
        transport = connect_quic(a) if a.transport == "quic" else connect(a.transport, a.addr, a.port,
                                                                          timeout=a.timeout)
    except Exception as exc:  # noqa: BLE001 - reported to the operation
        _emit({"state": "error", "error": f"{type(exc).__name__}: {exc}", "errno": _errno_of(exc)})
        return 3
    _emit({"state": "connected", "transport": a.transport, **_quic_state(transport)})
    wakeups = _Wakeups()
    if a.transport == "quic":
        import threading

        threading.Thread(target=_side_requests, args=(ctl, transport, wakeups), daemon=True).start()
    client: Any = None
    share: Any = None
    side: Any = None

    def negotiate() -> Any:
        nonlocal client
        if client is None:
            client = client_class(a.addr, a.port, transport=a.transport, username=user, password=password,
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

    _serve_requests(ctl, "", handle, wakeups)
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
    p = argparse.ArgumentParser(prog="python -m harness.peers.smb_ops")
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
