"""Fixtures for the SMB interop tests: smbd (one per module) and our own server (one per test)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pdu_pcap import PduCapture  # noqa: E402
from peers_smb import PASSWORD, USER, Smbd, free_port  # noqa: E402

from harness.blocking.server import SMBServer  # noqa: E402
from harness.smb.server import ServerConfig, ShareConfig  # noqa: E402
from harness.transport import listen  # noqa: E402


@pytest.fixture(scope="module")
def smbd(tmp_path_factory):
    server = Smbd(tmp_path_factory.mktemp("smbd"))
    yield server
    server.stop()


class OurServer:
    """Our server on real loopback.  ``capture``: record every accepted connection into
    ``root/server.pcap`` (tests/pdu_pcap.py: what the server received and sent, shown on port 445)."""

    def __init__(self, root: Path, encrypt: bool = False, sign: bool = False, transport: str = "tcp",
                 multichannel: bool = False, continuously_available: bool = False, capture: bool = False) -> None:
        self.share_dir = root / "share"
        self.enc_dir = root / "enc"
        self.share_dir.mkdir()
        self.enc_dir.mkdir()
        self.keys = root / "keys.txt"
        config = ServerConfig(shares={"share": ShareConfig("share", str(self.share_dir),
                                                           continuously_available=continuously_available),
                                      "enc": ShareConfig("enc", str(self.enc_dir), encrypt=True)},
                              users={USER: PASSWORD}, encrypt=encrypt, sign=sign, multichannel=multichannel,
                              state_dir=str(root / "state"))
        self.pcap = root / "server.pcap" if capture else None
        listener = None
        if self.pcap is not None:
            self.recorder = PduCapture(self.pcap)
            listener = self.recorder.listener(listen(transport, "127.0.0.1", free_port()), local=("127.0.0.1", 445))
        self.server = SMBServer(config, "127.0.0.1", None if listener else free_port(), transport=transport,
                                keys_out=str(self.keys), listener=listener)
        self.port = self.server.port
        self.server.start()

    def stop(self) -> None:
        self.server.stop()
        if self.pcap is not None:
            self.recorder.close()
        assert not self.server.errors, self.server.errors


@pytest.fixture
def our_server(tmp_path):
    server = OurServer(tmp_path, capture=True)
    yield server
    server.stop()
