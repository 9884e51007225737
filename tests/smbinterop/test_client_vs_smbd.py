"""Our client against Samba's smbd: put, get and ls byte-exact, signed and encrypted (4 ciphers)."""

from __future__ import annotations

import hashlib
import os

import pytest
from peers_smb import PASSWORD, USER

from harness.blocking.client import SMBClient
from harness.smb.client import SMBError
from harness.smb.constants import Cipher, Dialect, NtStatus
from harness.smb.keys import parse_keys_file

CIPHERS = ["aes-128-ccm", "aes-128-gcm", "aes-256-ccm", "aes-256-gcm"]


def _roundtrip(client: SMBClient, share_name: str, share_dir, size: int = 3 * 1024 * 1024 + 17) -> None:
    data = os.urandom(size)
    name = f"f-{hashlib.sha1(data).hexdigest()[:8]}.bin"
    with client.share(share_name) as share:
        share.put_bytes(name, data)
        assert (share_dir / name).read_bytes() == data  # what smbd wrote to disk
        assert share.get_bytes(name) == data
        assert name in [entry.name for entry in share.listdir("")]
        share.remove(name)
    assert not (share_dir / name).exists()


def test_signed_put_get_ls(smbd):
    with SMBClient("127.0.0.1", smbd.port, username=USER, password=PASSWORD) as client:
        assert client.conn.dialect == Dialect.SMB_3_1_1
        assert client.session.signing_required and not client.session.encrypt
        _roundtrip(client, "share", smbd.share_dir)


@pytest.mark.parametrize("cipher", CIPHERS)
def test_encrypted_put_get_ls(smbd, cipher, tmp_path):
    keys = tmp_path / "keys.txt"
    with SMBClient("127.0.0.1", smbd.port, username=USER, password=PASSWORD, encrypt=True, cipher=cipher,
                   keys_out=str(keys)) as client:
        assert client.conn.cipher == {"aes-128-ccm": Cipher.AES_128_CCM, "aes-128-gcm": Cipher.AES_128_GCM,
                                      "aes-256-ccm": Cipher.AES_256_CCM, "aes-256-gcm": Cipher.AES_256_GCM}[cipher]
        assert client.session.encrypt
        _roundtrip(client, "share", smbd.share_dir, 1024 * 1024 + 5)
    (record,) = parse_keys_file(keys.read_text())
    assert len(record.c2s_key) == (32 if "256" in cipher else 16)


def test_encrypted_share_requires_encryption(smbd):
    with SMBClient("127.0.0.1", smbd.port, username=USER, password=PASSWORD) as client:
        # smbd marks the share ENCRYPT_DATA; our client then encrypts everything on that tree.
        _roundtrip(client, "enc", smbd.enc_dir, 100_000)


def test_wrong_password_and_unknown_share(smbd):
    with pytest.raises(SMBError) as info:
        SMBClient("127.0.0.1", smbd.port, username=USER, password="wrong")
    assert info.value.status == NtStatus.LOGON_FAILURE
    with SMBClient("127.0.0.1", smbd.port, username=USER, password=PASSWORD) as client:
        with pytest.raises(SMBError) as info:
            client.share("nosuchshare")
        assert info.value.status == NtStatus.BAD_NETWORK_NAME
