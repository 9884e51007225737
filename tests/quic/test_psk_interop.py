"""External PSK interoperates: OpenSSL's TLS 1.3 server (``s_server -psk``, an external PSK, as GnuTLS
and libquic use) accepts the binder our aioquic extension computes with the "ext binder" label, and
rejects the ticket-style "res binder" aioquic alone would compute. TLS over TCP: the binder and key
schedule are the same as in QUIC's CRYPTO frames."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import time

import pytest
from aioquic import tls
from aioquic.buffer import Buffer
from procutil import need_program

from wrappers.quic import tlsext

pytestmark = pytest.mark.peer


def _client_hello(key: bytes, external: bool) -> bytes:
    ctx = tls.Context(is_client=True, cipher_suites=[tlsext.PSK_CIPHER])
    ctx.session_ticket = tlsext.psk_ticket(b"wirecheck", key, None)  # type: ignore[arg-type]
    ctx.update_traffic_key_cb = lambda *a: None
    bufs = {e: Buffer(capacity=4096) for e in tls.Epoch}
    with tlsext.external_psk(external):
        ctx.handle_message(b"", bufs)
    return bufs[tls.Epoch.INITIAL].data


def _server_hello_extensions(port: int, hello: bytes) -> set[int] | None:
    """Extension types of the ServerHello, or None when the server answered with an alert/close."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"\x16\x03\x01" + struct.pack(">H", len(hello)) + hello)
        data = b""
        while len(data) < 5 or len(data) < 5 + struct.unpack(">H", data[3:5])[0]:
            chunk = s.recv(4096)
            if not chunk:
                return None
            data += chunk
    if data[0] != 0x16:
        return None
    body = data[5:]
    assert body[0] == 2  # ServerHello
    p = 4 + 2 + 32
    p += 1 + body[p] + 2 + 1
    end = p + 2 + struct.unpack(">H", body[p:p + 2])[0]
    p += 2
    types = set()
    while p < end:
        t, n = struct.unpack(">HH", body[p:p + 4])
        types.add(t)
        p += 4 + n
    return types


@pytest.mark.parametrize("external", [True, False], ids=["ext-binder", "res-binder"])
def test_openssl_accepts_our_external_psk_binder(external, tmp_path):
    openssl = need_program("openssl", "openssl")
    key = os.urandom(32)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = open(tmp_path / "s_server.log", "w")
    srv = subprocess.Popen([openssl, "s_server", "-accept", str(port), "-tls1_3", "-psk_identity", "wirecheck",
                            "-psk", key.hex(), "-nocert", "-naccept", "1"],
                           stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT)
    try:
        exts = None
        for _ in range(100):  # until s_server listens
            try:
                exts = _server_hello_extensions(port, _client_hello(key, external))
                break
            except ConnectionRefusedError:
                time.sleep(0.1)
        accepted = exts is not None and 0x29 in exts  # pre_shared_key in the ServerHello
        assert accepted == external, f"ServerHello extensions {exts}"
    finally:
        srv.kill()
        srv.wait(5)
        log.close()
