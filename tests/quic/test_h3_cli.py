"""`wirecheck h3 serve` / `wirecheck h3 get` (harness/cli/h3.py) over real loopback UDP: a file comes
back byte-exact, a missing one is a 404 (exit 1), no server is a failure within the timeout (exit 2),
and ngtcp2's gtlsclient fetches from `wirecheck h3 serve`."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time

import pytest
from procutil import need_program

WIRECHECK = [sys.executable, "-c", "from harness.cli import main; main()"]


def _free_udp_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


@pytest.fixture
def server(pki, tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    (www / "f.bin").write_bytes(os.urandom(500_000))
    port = _free_udp_port()
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    p = subprocess.Popen([*WIRECHECK, "h3", "serve", "--listen", f"127.0.0.1:{port}", "--cert", pki["server"],
                          "--key", pki["server_key"], "--root", str(www), "--timeout", "10"],
                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 20
    while b"listening" not in (tmp_path / "serve.log").read_bytes():
        assert p.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
        time.sleep(0.05)
    yield port, www
    p.kill()
    p.wait()
    log.close()


def _get(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([*WIRECHECK, "h3", "get", *args], capture_output=True, timeout=timeout)


def test_get_a_file_and_a_404(pki, server, tmp_path):
    port, www = server
    out = tmp_path / "out.bin"
    r = _get(f"https://localhost:{port}/f.bin", "--ca", pki["ca"], "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256((www / "f.bin").read_bytes()).digest()
    r = _get(f"https://localhost:{port}/missing", "--insecure", "-o", str(tmp_path / "none"))
    assert r.returncode == 1 and b"HTTP status 404" in r.stderr


def test_untrusted_certificate_and_no_server(pki, server, tmp_path):
    port, _ = server
    other = tmp_path / "other-ca"
    other.mkdir()
    sys.path.insert(0, os.path.dirname(__file__))
    from .certs import make_pki

    wrong = make_pki(str(other))
    r = _get(f"https://localhost:{port}/f.bin", "--ca", wrong["ca"], "--timeout", "5")
    assert r.returncode == 2 and b"handshake failed" in r.stderr, r.stderr
    t0 = time.monotonic()
    r = _get(f"https://localhost:{_free_udp_port()}/f.bin", "--insecure", "--timeout", "2")
    assert r.returncode == 2 and b"timed out" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 20


@pytest.mark.peer
def test_gtlsclient_gets_from_wirecheck_h3_serve(server, tmp_path):
    client = need_program("gtlsclient", "ngtcp2-client")
    port, www = server
    dl = tmp_path / "dl"
    dl.mkdir()
    r = subprocess.run([client, "-q", "--exit-on-all-streams-close", f"--download={dl}", "127.0.0.1", str(port),
                        f"https://localhost:{port}/f.bin"], capture_output=True, timeout=30)
    why = (r.stdout[-2000:] + r.stderr[-2000:]).decode(errors="replace") + "\nserver:\n" + \
        (tmp_path / "serve.log").read_text(errors="replace")
    assert r.returncode == 0, why
    assert (dl / "f.bin").exists(), why  # seen once missing after exit 0 (real UDP, loaded machine)
    assert (dl / "f.bin").read_bytes() == (www / "f.bin").read_bytes()
