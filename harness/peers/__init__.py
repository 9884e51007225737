"""Peer programs: the processes a scenario cell, a test, a benchmark or the demo starts on the
emulated network, all in this package under one naming rule.

Naming rule: ``harness/peers/<protocol>_<job>.py``, run as ``python -m harness.peers.<protocol>_<job>
[ROLE] [options]``. ``<protocol>`` is what the peer speaks on the wire (``net`` for plain TCP/UDP,
``quic``, ``smb``, ``smbdirect``); ``<job>`` says what it is for (the scenario operations it serves,
an echo, the demo). A peer with more than one role takes it as its first positional argument
(``server``, ``client``, ...). Peers report their state and results on stdout (JSON lines, except the
demo's and the echo's plain text), so a launcher follows them without parsing prose.

* ``net_demo``: the client and UDP echo server of ``wirecheck demo`` (standard library only).
* ``net_exchange``: the TCP/UDP echo servers and clients of the ``tcp.*``/``udp.*`` exchange operations
  (standard library only; the UDP client is stop-and-wait, so it delivers every byte through loss).
* ``quic_echo``: an IPPROTO_QUIC echo server and client (external PSK, one stream).
* ``quic_streams``: the two ends of the ``quic.streams`` scenario operation (the stream matrix).
* ``smb_ops``: the reference SMB server and the request-driven SMB client of the ``smb.*`` operations.
* ``smb_reconnect``: the durable server, resilient client and multichannel client of the reconnect
  operations.
* ``smb_samba``: not a program of ours but the launcher of one: Samba's smbd as a private peer
  (interop tests and the SMB benchmark).
* ``smbdirect_commands``: an SMB Direct listener that obeys text commands (register, RDMA
  read/write, send with invalidate).

A peer knows its launcher only through argv, stdout and files in a control directory. Launchers
import from here only the constants a peer's command line needs (transport names, defaults) and,
for smb_samba, its launcher class.

Test-only programs stay with the tests: ``tests/peers.py`` must run as a file under ``python3 -I``
(standard library only, no package on the path) beside cwrap's C library.
"""
