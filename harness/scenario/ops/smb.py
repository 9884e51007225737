"""Scenario operations of the SMB capability: `serve`, `smb.connect`, `smb.negotiate`, `smb.session`,
`smb.write`, `smb.read`, `smb.side_streams`, `smb.side_wait`.

The reference server and client run as child processes on emulated hosts (the peer program
harness.peers.smb_ops), started through the cell context like the tcp/udp peers of
harness.scenario.ops.net, so the socket wrapper's pcap of the cell captures them.

* ``serve`` starts the server on ``host`` (a temporary share directory in the cell's scratch area) and
  returns once it listens.


* ``smb.connect`` starts a client process that opens the transport connection (TCP, SMB Direct, or
  QUIC including its handshake) and then waits for requests. The client process stays up for the
  rest of the cell; later steps (``on: <as of smb.connect>``) hand it requests through files in the
  cell's scratch directory (``<name>.ctl/N.req.json`` -> ``N.res.json``).


* ``smb.connect`` with ``resume: resumed|0rtt`` (QUIC) first makes a full connection, keeps its session
  ticket and closes it, then resumes; ``0rtt`` sends the first SMB PDU before the handshake (0-RTT).
  The client also serves side requests (``quic.migrate`` of harness.scenario.ops.quic) while an SMB
  request is in progress.


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

import json
import os
import sys
from pathlib import Path
from typing import Any

from harness.peers.smb_ops import DEFAULT_USER, SERVER_NAME, TRANSPORTS
from harness.scenario import OpError, StepFailed, operation
from harness.scenario.context import Context
from harness.scenario.ops.core import HOST
from harness.scenario.ops.net import FAMILY, SIZE, address, size_of


def pki_files(ctx: Context) -> dict[str, str]:
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


def quic_argv(ctx: Context, args: dict) -> list[str]:
    """QUIC options of a server or client; the negative-cell knobs: `alpn`, `server_name` (client),
    `psk_identity: unknown` (client), `certificate: expired` (server)."""
    pki = pki_files(ctx)
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


def port_of(args: dict) -> int:
    from harness.transport import DEFAULT_PORTS

    return int(args.get("port") or DEFAULT_PORTS[args["transport"]])


def first_json(text: str) -> dict | None:
    """The first complete line of ``text`` that is a JSON object."""
    for line in text.split("\n")[:-1]:
        if line.strip().startswith("{"):
            return json.loads(line)
    return None


def wait_line(ctx: Context, name: str, timeout: float) -> dict:
    """The first JSON line a peer prints (its state), or StepFailed when it exits or stays silent.
    Woken by the line itself (the cell follows the peer's stdout pipe), not by polling."""
    proc = ctx.proc(name)
    state = proc.wait_output(first_json, timeout)
    if state is not None:
        return state
    if proc.stdout_closed:
        proc.wait(2.0)  # it closed stdout: it is exiting
    if proc.popen.poll() is not None:
        raise StepFailed(f"{name} exited with status {proc.popen.returncode}: "
                         + proc.err_path.read_text(errors="replace")[-800:])
    raise StepFailed(f"{name} printed nothing within {timeout:g}s")


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
    argv = [sys.executable, "-m", "harness.peers.smb_ops", "server", "--transport", args["transport"],
            "--addr", addr, "--port", str(port_of(args)), "--share", share, "--path", str(path),
            "--user", args.get("user", DEFAULT_USER)]
    if args["transport"] == "quic":
        argv += quic_argv(ctx, args)
    if args.get("encrypt"):
        argv.append("--encrypt")
    if args.get("ciphers"):
        argv += ["--ciphers", ",".join(args["ciphers"])]
    if args.get("accept_transport_security"):
        argv.append("--accept-transport-security")
    ctx.start(name, argv, host=args["host"], cwd=os.getcwd())  # relative key and pcap paths
    state = wait_line(ctx, name, 20.0)
    return {**state, "share": share, "path": str(path), "transport": args["transport"]}


def request(ctx: Context, on: str, req: dict, timeout: float = 120.0, side: bool = False) -> dict:
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
    proc.tell(f"{prefix}{n}")  # the client wakes on this line; it answers with `res <prefix><n>`
    res_path = d / f"{prefix}{n}.res.json"
    done = f"res {prefix}{n}\n"
    if not proc.wait_output(lambda text: done in text, timeout):
        if proc.stdout_closed:
            proc.wait(2.0)
        if proc.popen.poll() is not None:
            raise StepFailed(f"client {on} exited with status {proc.popen.returncode}: "
                             + proc.err_path.read_text(errors="replace")[-800:])
        raise StepFailed(f"client {on} did not answer {req['op']} within {timeout:g}s")
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
    argv = [sys.executable, "-m", "harness.peers.smb_ops", "client", "--transport", args["transport"],
            "--addr", addr, "--port", str(port_of(args)), "--share", args.get("share", "data"),
            "--user", args.get("user", DEFAULT_USER), "--keys-out", ctx.smb_keys, "--control", str(ctl),
            "--timeout", str(args.get("io_timeout", 30))]
    # Signing is required unless asked otherwise; over SMB Direct it is off by default, since a
    # signed session never uses RDMA channels (MS-SMB2 3.2.4.6/3.2.4.7) and RDMA is the point.
    argv += ["--sign", "yes" if args.get("sign", args["transport"] != "smbdirect") else "no"]
    if args["transport"] == "quic":
        argv += quic_argv(ctx, args) + ["--resume", args.get("resume", "none")]
    elif args.get("resume", "none") != "none":
        raise StepFailed("resume: needs transport: quic")
    if args.get("encrypt"):
        argv.append("--encrypt")
    if args.get("cipher"):
        argv += ["--cipher", args["cipher"]]
    if args.get("transport_security"):
        argv.append("--transport-security")
    ctx.start(name, argv, host=args["host"], cwd=os.getcwd(), stdin=True)  # cwd: relative key and pcap paths

    def close() -> None:
        if ctx.proc(name).popen.poll() is None:
            try:
                request(ctx, name, {"op": "close"}, timeout=3)
            except Exception:  # noqa: BLE001, S110 - teardown stops it anyway
                pass
    ctx.on_cleanup(close)
    state = wait_line(ctx, name, 30.0)
    if state.get("state") != "connected":
        raise OpError(f"{name}: {state.get('error')}", errno=state.get("errno"), result=state)
    return {**state, "control": str(ctl), "address": addr}


@operation("smb.negotiate", schema=NEGOTIATE, timeout=30)
def smb_negotiate(ctx: Context, args: dict) -> dict:
    """SMB2 NEGOTIATE on an smb.connect connection: the dialect."""
    return request(ctx, args["on"], {"op": "negotiate"})


@operation("smb.session", schema=NEGOTIATE, timeout=60)
def smb_session(ctx: Context, args: dict) -> dict:
    """SESSION_SETUP and TREE_CONNECT on an smb.connect connection: cipher, encrypted, transport_security."""
    return request(ctx, args["on"], {"op": "session"})

SIDE = {"type": "object", "additionalProperties": False, "required": ["on", "streams"],
        "properties": {**ON, "streams": {"type": "integer", "minimum": 1, "maximum": 1000}, "size": SIZE,
                       "kind": {"enum": ["uni", "bidi"]}}}


@operation("smb.side_streams", schema=SIDE, timeout=30)
def smb_side_streams(ctx: Context, args: dict) -> dict:
    """QUIC only: start sending `streams` other streams (uni or bidi, `size` seeded bytes + FIN each) on the connection's socket."""
    return request(ctx, args["on"], {"op": "side_start", "streams": args["streams"], "kind": args.get("kind", "uni"),
                                      "size": size_of(args.get("size", 65536))})


@operation("smb.side_wait", schema=NEGOTIATE, timeout=90)
def smb_side_wait(ctx: Context, args: dict) -> dict:
    """Wait for smb.side_streams to finish: sids, sent, sent_sha256, errors, failed."""
    return request(ctx, args["on"], {"op": "side_wait", "timeout": 60})


@operation("smb.write", schema=WRITE, timeout=120)
def smb_write(ctx: Context, args: dict) -> dict:
    """Write `size` seeded bytes to `path` on the connection's share: written, written_sha256, rdma_bytes
    (also on the connection).  `rdma: true` demands that the data went by RDMA (SMB2_CHANNEL_RDMA_V1*),
    `rdma: false` forbids it; unset, the client decides (SMB Direct, unsigned session, > 16 KiB)."""
    res = request(ctx, args["on"], {"op": "write", "path": args["path"], "size": size_of(args["size"]),
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
    res = request(ctx, args["on"], {"op": "read", "path": args["path"], "rdma": args.get("rdma", True) is not False})
    _check_rdma(args, res, res["read"])
    return res
