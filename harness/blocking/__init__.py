"""The blocking I/O adapters of the SMB stack, kept apart from the sans-IO protocol code in
harness/smb the way aioquic keeps ``quic/`` (the state machines) apart from ``asyncio/`` (the I/O).

harness/smb turns bytes into events and never touches a socket, a clock or a thread; the modules
here own those: they read and write frames through a harness.transport Transport, run threads and
timeouts, and drive the sans-IO state machines.

* ``client``: SMBClient, the blocking client API (pipelined READ/WRITE, credits, signing, encryption).
* ``server``: SMBServer, one accept thread and one thread per connection around the sans-IO server.
* ``multichannel``: MultiChannelClient, one session over several connections (session binding).
* ``reconnect``: ResilientClient, a client that survives transport failures with durable handles.
* ``faults``: a restartable server and transports whose first connection carries a planned cut.
* ``inotify``: Linux inotify through ctypes, feeding other programs' changes in a local share to
  the server's CHANGE_NOTIFY rules.
"""
