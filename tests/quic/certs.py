"""Test PKI for the QUIC tests: a CA, a server certificate and a client certificate (PEM files)."""

from __future__ import annotations

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(directory: str) -> dict[str, str]:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("wirecheck test CA")).issuer_name(_name("wirecheck test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    out = {}

    def leaf(cn: str, sans: list[x509.GeneralName]) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .sign(ca_key, hashes.SHA256()))
        return cert, key

    srv, srv_key = leaf("server.test", [x509.DNSName("server.test"), x509.DNSName("localhost"),
                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cli, cli_key = leaf("client.test", [x509.DNSName("client.test")])
    for name, obj in (("ca.pem", ca), ("server.pem", srv), ("client.pem", cli)):
        path = os.path.join(directory, name)
        with open(path, "wb") as f:
            f.write(obj.public_bytes(serialization.Encoding.PEM))
        out[name[:-4]] = path
    for name, key in (("server.key", srv_key), ("client.key", cli_key)):
        path = os.path.join(directory, name)
        with open(path, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        out[name.replace(".", "_")] = path
    psk = os.path.join(directory, "psk.txt")
    with open(psk, "w") as f:
        f.write("wirecheck:" + os.urandom(32).hex() + "\n")
    out["psk"] = psk
    return out
