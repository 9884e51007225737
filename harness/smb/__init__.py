"""Reference SMB 3.1.1 stack, part one: the sans-IO codec (header, messages, compound, FSCC) and the
crypto (preauth hash, KDF, signing, encryption, tshark key export).  No sockets, clocks or threads:
bytes in, objects out.  docs/architecture.md shows where it sits among the layers."""
