"""The previous 1-RTT receive keys, kept after a key update as quic.ko keeps them (RFC 9001 6.5).

aioquic forgets the old receive keys the moment it updates. A packet the peer protected with them
and that arrives afterwards is then tried with the *next* keys (its key phase bit differs from the
current one), fails, and is dropped. After our own update that is every packet the peer sent before
it saw our first new-phase packet: on a loaded machine a few of them, which the peer then counts as
lost, shrinking its congestion window for nothing. As aioquic cuts stream frames to what the window
leaves, a small message may then go out in two pieces: lxin's func_test (C client, Python server)
saw its 17-byte echo arrive as 16 bytes right after two such drops, in 2 of 30 runs under load.
quic.ko keeps the previous keys and decrypts such packets.

Rules, as RFC 9001 6.4 and 6.5 put them:

- a packet whose key phase differs from the current one and whose packet number is below every
  packet received in the current phase is tried with the previous keys first;
- if that fails, or the number is higher, it is the peer's next key update (aioquic's own path);
- the previous keys go after ``KEEP_PACKETS`` packets of the current phase were received (a stand-in
  for the RFC's three PTOs: this layer has no clock), or with the next update.
"""

from __future__ import annotations

from typing import Any

from aioquic.quic.crypto import CryptoContext, CryptoError, CryptoPair
from aioquic.quic.packet import decode_packet_number, is_long_header

#: packets of the current phase after which the previous keys are dropped
KEEP_PACKETS = 64


class KeptKeysPair(CryptoPair):
    """A 1-RTT ``CryptoPair`` that keeps its previous receive keys (see the module docstring)."""

    previous: CryptoContext | None = None
    first_current: int | None = None  # the lowest packet number received in the current phase
    current_count = 0
    old_decrypted = 0  # packets read with the previous keys (for tests and qlog-less debugging)

    def decrypt_packet(self, packet: bytes, encrypted_offset: int, expected_packet_number: int) -> tuple:
        prev = self.previous
        if prev is not None and prev.hp is not None and prev.aead is not None and not getattr(self, "cleartext", False):
            plain_header, truncated = prev.hp.remove(packet, encrypted_offset)
            first = plain_header[0]
            if not is_long_header(first) and (first & 4) >> 2 != self.recv.key_phase:
                pn = decode_packet_number(truncated, ((first & 3) + 1) * 8, expected_packet_number)
                if self.first_current is None or pn < self.first_current:
                    try:
                        payload = prev.aead.decrypt(packet[len(plain_header):], plain_header, pn)
                    except CryptoError:
                        pass  # not the old keys: the peer's next update, or garbage
                    else:
                        self.old_decrypted += 1
                        return plain_header, payload, pn
        phase = self.recv.key_phase
        plain_header, payload, pn = super().decrypt_packet(packet, encrypted_offset, expected_packet_number)
        if self.previous is not None:
            if self.recv.key_phase != phase:
                self.first_current = pn  # the peer's update: this packet opens the new phase
            else:
                self.first_current = pn if self.first_current is None else min(self.first_current, pn)
                self.current_count += 1
                if self.current_count >= KEEP_PACKETS:
                    self.previous = None
        return plain_header, payload, pn

    def _update_key(self, trigger: str) -> None:
        old = CryptoContext(key_phase=self.recv.key_phase)
        old.aead, old.hp, old.cipher_suite = self.recv.aead, self.recv.hp, self.recv.cipher_suite
        super()._update_key(trigger)
        self.previous, self.first_current, self.current_count = old, None, 0


def keep_previous_keys(pair: Any) -> None:
    """Make one aioquic 1-RTT ``CryptoPair`` keep its previous receive keys."""
    if type(pair) is CryptoPair:
        pair.__class__ = KeptKeysPair
