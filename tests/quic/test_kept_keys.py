"""After a key update the previous receive keys stay for the packets still under way
(wrappers/quic/aio/keyphase.py; RFC 9001 6.5, as quic.ko does). aioquic alone drops them: the
peer counts them lost. Two 1-RTT crypto pairs, packets built and protected as on the wire."""

from __future__ import annotations

import os

import pytest
from aioquic.quic.crypto import CryptoError, CryptoPair
from aioquic.tls import CipherSuite

from wrappers.quic.aio.keyphase import KEEP_PACKETS, KeptKeysPair, keep_previous_keys

DCID = bytes(8)
SUITE = CipherSuite.AES_128_GCM_SHA256


def _pairs(kept: bool) -> tuple[CryptoPair, CryptoPair]:
    c_secret, s_secret = os.urandom(32), os.urandom(32)
    client, server = CryptoPair(), CryptoPair()
    for pair, recv, send in ((client, s_secret, c_secret), (server, c_secret, s_secret)):
        pair.recv.setup(cipher_suite=SUITE, secret=recv, version=1)
        pair.send.setup(cipher_suite=SUITE, secret=send, version=1)
    if kept:
        keep_previous_keys(client)
    return client, server


def _packet(pair: CryptoPair, pn: int, payload: bytes) -> bytes:
    header = bytes([0x40 | (pair.key_phase << 2) | 0x01]) + DCID + pn.to_bytes(2, "big")
    return pair.encrypt_packet(header, payload.ljust(24, b"\0"), pn)


def _read(pair: CryptoPair, packet: bytes, expected: int) -> bytes:
    _, payload, _ = pair.decrypt_packet(packet, 1 + len(DCID), expected)
    return payload.rstrip(b"\0")


def test_aioquic_alone_drops_a_packet_sent_before_the_peer_saw_our_update():
    client, server = _pairs(kept=False)
    in_flight = _packet(server, 5, b"old phase")
    client.update_key()
    _packet(client, 3, b"first new-phase packet")  # the update applies with the first packet sent
    with pytest.raises(CryptoError):
        _read(client, in_flight, 5)


def test_the_previous_keys_read_what_was_under_way_and_a_later_update_still_works():
    client, server = _pairs(kept=True)
    assert isinstance(client, KeptKeysPair)
    early, late = _packet(server, 4, b"sent first"), _packet(server, 5, b"sent second")
    client.update_key()
    ours = _packet(client, 3, b"first new-phase packet")
    assert _read(client, late, 5) == b"sent second"  # our update has gone out, the peer's old packet is read
    assert client.recv.key_phase == 1 and client.old_decrypted == 1
    assert _read(server, ours, 3) == b"first new-phase packet"  # the server follows the update
    assert _read(client, _packet(server, 6, b"new phase"), 6) == b"new phase"
    assert _read(client, early, 4) == b"sent first"  # reordered: lower than the new phase's first number
    assert client.old_decrypted == 2 and client.recv.key_phase == 1
    # the server updates again (allowed: we acknowledged its new-phase packets): phase 0 again, with
    # the next keys, not the previous ones; a higher packet number says which
    server.update_key()
    assert _read(client, _packet(server, 20, b"third phase"), 20) == b"third phase"
    assert client.recv.key_phase == 0 and client.old_decrypted == 2


def test_the_previous_keys_go_after_enough_packets_of_the_new_phase():
    client, server = _pairs(kept=True)
    stale = _packet(server, 2, b"stale")
    client.update_key()
    _read(server, _packet(client, 1, b"update"), 1)
    for pn in range(10, 10 + KEEP_PACKETS):
        _read(client, _packet(server, pn, b"x"), pn)
    assert client.previous is None
    with pytest.raises(CryptoError):
        _read(client, stale, 2)
