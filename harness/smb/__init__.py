"""Reference SMB 3.1.1 stack, sans-IO: the codec (header, messages/, compound, FSCC), the crypto
(preauth hash, KDF, signing, encryption, tshark key export), the client state machine (client.py,
reconnect.py, rdma_channel.py) and the server (server/, its file access through vfs.py).  No
sockets, clocks or threads: bytes in, objects out.  Every error it raises derives from
:class:`harness.smb.errors.SMBStackError`.
docs/architecture.md shows where it sits among the layers."""
