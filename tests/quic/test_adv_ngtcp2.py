"""Interop with an independent QUIC stack: Debian's ngtcp2 0.12 examples (gtlsserver, gtlsclient; GnuTLS,
nghttp3), QUIC v1, over real loopback UDP (our QuicSocket without a socket directory is a user-space
quic.ko on real UDP). HTTP/3 on our side is wrappers/quic/h3.py over the socket API.

Proven here: full TLS 1.3 handshakes both ways with certificates and ALPN "h3"; a 300 kB GET from
gtlsserver byte-exact after a key update we started (gtlsserver keeps answering in the new phase); a
4 MB GET by gtlsclient from our server byte-exact while gtlsclient updates keys (--key-update), and our
passive side reports QUIC_EVENT_KEY_UPDATE; gtlsclient's Initial routed by our ALPN routing to the
"h3" listener next to an "smb" listener on the same port. The emulated network (the ngtcp2
program under libsocket_wrapper.so) is test_adv_ngtcp2_cwrap.py. Not covered: QUIC v2 with ngtcp2 (0.12 has
only the v2 draft)."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import threading
import time

import pytest
from procutil import need_program
from threadutil import joined

from wrappers.quic import (
    QUIC_EVENT_KEY_UPDATE,
    QUIC_SOCKOPT_ALPN,
    QUIC_SOCKOPT_EVENT,
    QUIC_SOCKOPT_KEY_UPDATE,
    SOL_QUIC,
    EventOption,
    QuicSocket,
    client_handshake,
    h3,
    server_handshake,
)

pytestmark = pytest.mark.peer


def _free_udp_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def www(tmp_path):
    d = tmp_path / "www"
    d.mkdir()
    (d / "small.bin").write_bytes(os.urandom(300_000))
    (d / "big.bin").write_bytes(os.urandom(4_000_000))
    return d


def _one_rtt(sock: QuicSocket):
    return sock._conn.quic.one_rtt_crypto()  # type: ignore[union-attr]


def test_our_client_gets_from_gtlsserver_after_key_update(pki, www, tmp_path):
    server = need_program("gtlsserver", "ngtcp2-server")
    port = _free_udp_port()
    log = open(tmp_path / "gtlsserver.log", "wb")  # noqa: SIM115
    p = subprocess.Popen([server, "-q", "-d", str(www), "127.0.0.1", str(port), pki["server_key"], pki["server"]],
                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        time.sleep(0.3)
        assert p.poll() is None, (tmp_path / "gtlsserver.log").read_text()
        c = QuicSocket(socket.AF_INET, socket.SOCK_DGRAM)
        c.connect(("127.0.0.1", port))
        client_handshake(c, None, "localhost", "h3", timeout=5)
        assert c._carrier == "real" and c._conn.alpn == "h3"  # type: ignore[union-attr]
        c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_KEY_UPDATE, None, 0)
        status, headers, body = h3.get(c, f"localhost:{port}", "/small.bin")
        assert status == 200 and headers[b"server"].startswith(b"nghttp3/ngtcp2")
        assert _sha(body) == _sha((www / "small.bin").read_bytes())
        pair = _one_rtt(c)
        assert pair.send.key_phase == 1 and pair.recv.key_phase == 1  # gtlsserver followed our update
        c.close()
    finally:
        p.kill()
        p.wait()
        log.close()


def test_gtlsclient_gets_from_our_server_with_key_updates(pki, www, tmp_path):
    client = need_program("gtlsclient", "ngtcp2-client")
    ls = QuicSocket(socket.AF_INET, socket.SOCK_DGRAM)
    ls.setsockopt(SOL_QUIC, QUIC_SOCKOPT_ALPN, b"h3")
    ls.bind(("127.0.0.1", 0))
    ls.listen(4)
    port = ls.getsockname()[1]
    dl = tmp_path / "dl"
    dl.mkdir()
    log = open(tmp_path / "gtlsclient.log", "wb")  # noqa: SIM115
    p = subprocess.Popen([client, "-q", "--exit-on-all-streams-close", f"--download={dl}", "--key-update=100ms",
                          "127.0.0.1", str(port), f"https://localhost:{port}/big.bin"],
                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        ls.settimeout(10)
        s, _ = ls.accept()
        s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_EVENT, EventOption(QUIC_EVENT_KEY_UPDATE, 1).pack())
        server_handshake(s, pki["server_key"], pki["server"], timeout=5)
        r = h3.serve(s, str(www))
        assert p.wait(20) == 0, (tmp_path / "gtlsclient.log").read_text()
        assert _sha((dl / "big.bin").read_bytes()) == _sha((www / "big.bin").read_bytes())
        # the passive side of gtlsclient's key update reports it (event type 7, the new phase)
        assert bytes([QUIC_EVENT_KEY_UPDATE, 1]) in r.events
        s.close()
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()
        log.close()
        ls.close()


def test_gtlsclient_is_routed_by_alpn(pki, www, tmp_path):
    """An "smb" and an "h3" listener on one real UDP port: gtlsclient's ClientHello (ALPN h3) reaches h3."""
    client = need_program("gtlsclient", "ngtcp2-client")
    smb = QuicSocket(socket.AF_INET, socket.SOCK_DGRAM)
    smb.setsockopt(SOL_QUIC, QUIC_SOCKOPT_ALPN, b"smb")
    smb.bind(("127.0.0.1", 0))
    smb.listen(4)
    port = smb.getsockname()[1]
    web = QuicSocket(socket.AF_INET, socket.SOCK_DGRAM)
    web.setsockopt(SOL_QUIC, QUIC_SOCKOPT_ALPN, b"h3")
    web.bind(("127.0.0.1", port))
    web.listen(4)
    dl = tmp_path / "dl"
    dl.mkdir()
    done: dict[str, object] = {}

    def serve() -> None:
        try:
            web.settimeout(10)
            s, _ = web.accept()
            server_handshake(s, pki["server_key"], pki["server"], timeout=5)
            h3.serve(s, str(www))
            s.close()
        except BaseException as e:
            done["e"] = e

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    r = subprocess.run([client, "-q", "--exit-on-all-streams-close", f"--download={dl}", "127.0.0.1", str(port),
                        f"https://localhost:{port}/small.bin"], capture_output=True, timeout=20)
    joined(t, 10)
    try:
        assert r.returncode == 0, r.stderr
        assert "e" not in done, done
        assert _sha((dl / "small.bin").read_bytes()) == _sha((www / "small.bin").read_bytes())
        smb.setblocking(False)
        with pytest.raises(BlockingIOError):
            smb.accept()  # nothing reached the smb listener
    finally:
        smb.close()
        web.close()
