"""captures/smb3-quic.pcap: our SMB server and client over QUIC (harness/transport over wrappers/quic).

Both ends offer SMB2_ACCEPT_TRANSPORT_LEVEL_SECURITY, so the server's NEGOTIATE response carries
the TRANSPORT_CAPABILITIES context and no SMB encryption follows (QUIC's TLS protects it). The TLS
secrets come from SSLKEYLOGFILE (written by the QUIC socket); a throw-away CA and server
certificate are made for the run.

    .venv/bin/python -m captures.make.smb_quic [OUTDIR]
"""
from __future__ import annotations

import datetime
import sys
import tempfile
from pathlib import Path

from .emulated import SERVER, USER, Session


def server_cert(d: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "server.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("server.test")]), critical=False)
            .sign(key, hashes.SHA256()))
    c, k = d / "server.pem", d / "server.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return c, k


def main(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    pcap, keylog = out / "smb3-quic.pcap", out / "smb3-quic.keys"
    keylog.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as d:
        cert, key = server_cert(Path(d))
        serve = ["--transport", "quic", f"--listen={SERVER}:443", "--cert", str(cert), "--key", str(key),
                 "--accept-transport-security"]
        with Session(pcap, serve) as s:
            s.client([f"//{SERVER}:443/share", "--transport", "quic", "--user", USER, "--insecure",
                      "--server-name", "server.test", "--accept-transport-security", "cat", "hello.txt"],
                     env={"SSLKEYLOGFILE": str(keylog)})
    side = pcap.with_suffix(".keys")  # the socket wrapper also writes <pcap>.keys: same secrets
    if side != keylog and side.exists():
        side.unlink()
    return [pcap, keylog]


if __name__ == "__main__":
    for p in main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])):
        print(f"{p}  {p.stat().st_size} bytes")
