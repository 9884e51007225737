"""Peer programs: the processes a scenario cell, a test or a benchmark starts on the emulated network.

Naming rule: ``harness/peers/<protocol>_<job>.py``, run as ``python -m harness.peers.<protocol>_<job>
ROLE [options]``. ``<protocol>`` is what the peer speaks on the wire (``net`` for plain TCP/UDP,
``quic``, ``smb``, ``smbdirect``); ``<job>`` says what it is for (the scenario operations it serves, a
demo, an echo). The first positional argument is the role (``server``, ``client``, ...). A peer prints
its state and its result as JSON lines on stdout, so the launcher can follow it without parsing prose.

A peer is a program, not a library: it knows its launcher only through argv, stdout and files in a
control directory, and nothing in harness imports a peer except for shared constants and helpers of
another peer. Peers that are not Python programs of ours (Samba's smbd) have a launcher module here
under the same rule (``smb_samba``).
"""
