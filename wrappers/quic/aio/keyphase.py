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

The same class protects and opens 1-RTT packets with fewer copies than aioquic's CryptoContext, whose
header protection copies the whole packet two or three times to change at most five header bytes:
on the emulated carrier a packet is up to 64 KiB. Header protection reads only the header and the
16-byte sample after the packet number, so it is given just those bytes (``HP_SPAN`` past the packet
number offset); the AEAD reads the payload through a memoryview. The bytes on the wire are the same.
"""

from __future__ import annotations

from typing import Any

from aioquic.quic.crypto import CryptoContext, CryptoError, CryptoPair, KeyUnavailableError, next_key_phase
from aioquic.quic.packet import decode_packet_number, is_long_header

#: packets of the current phase after which the previous keys are dropped
KEEP_PACKETS = 64
#: header protection's reach past the packet number offset: the longest packet number (4) and the sample (16)
HP_SPAN = 4 + 16


def open_packet(ctx: CryptoContext, packet: bytes, encrypted_offset: int, expected_packet_number: int,
                plain_header: bytes, truncated: int) -> tuple[bytes, int]:
    """The payload and the full packet number of a packet whose header ``ctx.hp`` has removed."""
    pn = decode_packet_number(truncated, ((plain_header[0] & 3) + 1) * 8, expected_packet_number)
    # the caller has checked the keys are there; aioquic's binding reads any buffer, typed bytes
    return ctx.aead.decrypt(memoryview(packet)[len(plain_header):], plain_header, pn), pn  # type: ignore[union-attr,arg-type]


def protect_packet(ctx: CryptoContext, plain_header: bytes, plain_payload: bytes, packet_number: int) -> bytes:
    """aioquic's CryptoContext.encrypt_packet, copying the protected payload once."""
    protected = ctx.aead.encrypt(plain_payload, plain_header, packet_number)  # type: ignore[union-attr]  # set: we send
    n = len(plain_header)
    # the mask comes from a sample within the first HP_SPAN bytes of the protected payload, and only
    # header bytes change: protect the header with just those bytes after it
    return ctx.hp.apply(plain_header, protected[:HP_SPAN])[:n] + protected  # type: ignore[union-attr]


class KeptKeysPair(CryptoPair):
    """A 1-RTT ``CryptoPair`` that keeps its previous receive keys (see the module docstring)."""

    previous: CryptoContext | None = None
    first_current: int | None = None  # the lowest packet number received in the current phase
    current_count = 0
    old_decrypted = 0  # packets read with the previous keys (for tests and qlog-less debugging)

    def decrypt_packet(self, packet: bytes, encrypted_offset: int, expected_packet_number: int) -> tuple:
        if getattr(self, "cleartext", False):  # disable_1rtt_encryption: connection.make_cleartext's
            return super().decrypt_packet(packet, encrypted_offset, expected_packet_number)
        head = packet[:encrypted_offset + HP_SPAN]
        prev = self.previous
        if prev is not None and prev.hp is not None and prev.aead is not None:
            plain_header, truncated = prev.hp.remove(head, encrypted_offset)
            first = plain_header[0]
            if not is_long_header(first) and (first & 4) >> 2 != self.recv.key_phase:
                pn = decode_packet_number(truncated, ((first & 3) + 1) * 8, expected_packet_number)
                if self.first_current is None or pn < self.first_current:
                    try:
                        payload = prev.aead.decrypt(memoryview(packet)[len(plain_header):],  # type: ignore[arg-type]
                                                    plain_header, pn)
                    except CryptoError:
                        pass  # not the old keys: the peer's next update, or garbage
                    else:
                        self.old_decrypted += 1
                        return plain_header, payload, pn
        phase = self.recv.key_phase
        plain_header, payload, pn = self._open_current(packet, head, encrypted_offset, expected_packet_number)
        if self.previous is not None:
            if self.recv.key_phase != phase:
                self.first_current = pn  # the peer's update: this packet opens the new phase
            else:
                self.first_current = pn if self.first_current is None else min(self.first_current, pn)
                self.current_count += 1
                if self.current_count >= KEEP_PACKETS:
                    self.previous = None
        return plain_header, payload, pn

    def _open_current(self, packet: bytes, head: bytes, encrypted_offset: int, expected: int) -> tuple:
        """aioquic's CryptoPair.decrypt_packet (current keys, or the peer's next phase), with the
        header protection given only ``head``."""
        ctx = self.recv
        if ctx.aead is None:
            raise KeyUnavailableError("Decryption key is not available")
        plain_header, truncated = ctx.hp.remove(head, encrypted_offset)  # type: ignore[union-attr]  # set with aead
        first = plain_header[0]
        crypto = ctx
        if not is_long_header(first) and (first & 4) >> 2 != ctx.key_phase:
            crypto = next_key_phase(ctx)
        payload, pn = open_packet(crypto, packet, encrypted_offset, expected, plain_header, truncated)
        if crypto is not ctx:
            self._update_key("remote_update")
        return plain_header, payload, pn

    def encrypt_packet(self, plain_header: bytes, plain_payload: bytes, packet_number: int) -> bytes:
        if getattr(self, "cleartext", False):
            return super().encrypt_packet(plain_header, plain_payload, packet_number)
        if self._update_key_requested:
            self._update_key("local_update")
        assert self.send.is_valid(), "Encryption key is not available"
        return protect_packet(self.send, plain_header, plain_payload, packet_number)

    def _update_key(self, trigger: str) -> None:
        old = CryptoContext(key_phase=self.recv.key_phase)
        old.aead, old.hp, old.cipher_suite = self.recv.aead, self.recv.hp, self.recv.cipher_suite
        super()._update_key(trigger)
        self.previous, self.first_current, self.current_count = old, None, 0


def keep_previous_keys(pair: Any) -> None:
    """Make one aioquic 1-RTT ``CryptoPair`` keep its previous receive keys."""
    if type(pair) is CryptoPair:
        pair.__class__ = KeptKeysPair
