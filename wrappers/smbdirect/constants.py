"""Numbers of the IPPROTO_SMBDIRECT emulation: the kernel proposal's, MS-SMBD's, and ours.

Proposal (Stefan Metzmacher, not merged): ``IPPROTO_SMBDIRECT = 257``, ``SOL_SMBDIRECT = 289``.
Everything below "ours" is wirecheck's own definition (the proposal gives no option numbers yet);
the README lists them.
"""

from __future__ import annotations

IPPROTO_SMBDIRECT = 257
SOL_SMBDIRECT = 289

# -- MS-SMBD -------------------------------------------------------------------------------------
SMBD_VERSION = 0x0100
SMB_DIRECT_RESPONSE_REQUESTED = 0x0001
STATUS_SUCCESS = 0x00000000
STATUS_NOT_SUPPORTED = 0xC00000BB
STATUS_INSUFFICIENT_RESOURCES = 0xC000009A

NEGOTIATE_REQUEST_SIZE = 20
NEGOTIATE_RESPONSE_SIZE = 32
DATA_HEADER_SIZE = 20
DATA_OFFSET = 24  # SHOULD be 24 (SMBD 3.1.5.4); tshark's heuristic dissector insists on it
MIN_RECEIVE_SIZE = 128  # SMBD 3.1.5.6 / 3.1.5.7
MIN_FRAGMENTED_SIZE = 131072
MIN_NEGOTIATE_RECEIVE = 512  # "post one receive buffer of at least 512 bytes"
BUFFER_DESCRIPTOR_SIZE = 16

# Windows defaults (SMBD <3>, <8>, <2>, <4>)
DEFAULT_RECEIVE_CREDIT_MAX = 255
DEFAULT_SEND_CREDIT_TARGET = 255
DEFAULT_MAX_SEND_SIZE = 1364
DEFAULT_MAX_RECEIVE_SIZE = 8192
DEFAULT_MAX_FRAGMENTED_RECV_SIZE = 1048576
DEFAULT_MAX_READ_WRITE_SIZE = 8388608
DEFAULT_KEEPALIVE_INTERVAL = 120.0
DEFAULT_KEEPALIVE_RESPONSE_TIMEOUT = 5.0  # <4>: idle timer after a keepalive was sent
NEGOTIATE_TIMEOUT_ACTIVE = 120.0  # SMBD 3.1.4.1
NEGOTIATE_TIMEOUT_PASSIVE = 5.0  # SMBD 3.1.7.2

# -- ours: socket options at SOL_SMBDIRECT ---------------------------------------------------------
# Settable before connect()/listen() (the local initial values), readable at any time (the
# negotiated values once established).  Values are C ints (4 bytes) unless noted; times in ms.
SMBDIRECT_RECEIVE_CREDIT_MAX = 1
SMBDIRECT_SEND_CREDIT_TARGET = 2
SMBDIRECT_MAX_SEND_SIZE = 3
SMBDIRECT_MAX_RECEIVE_SIZE = 4
SMBDIRECT_MAX_FRAGMENTED_RECV_SIZE = 5
SMBDIRECT_MAX_FRAGMENTED_SEND_SIZE = 6  # read-only (the peer's MaxFragmentedSize)
SMBDIRECT_MAX_READ_WRITE_SIZE = 7
SMBDIRECT_KEEPALIVE_INTERVAL = 8  # ms
SMBDIRECT_KEEPALIVE_RESPONSE_TIMEOUT = 9  # ms
SMBDIRECT_NEGOTIATE_TIMEOUT = 10  # ms
SMBDIRECT_SEND_CREDITS = 11  # read-only: Connection.SendCredits now
SMBDIRECT_RECEIVE_CREDITS = 12  # read-only: Connection.ReceiveCredits now
SMBDIRECT_CONNECTION_PARAMETERS = 13  # read-only struct, SMBD 3.1.4.7 (see uapi.ConnectionParameters)
SMBDIRECT_RDMA_MODE = 14  # read-only: 1 process_vm_*, 2 memfd (how the peer reaches OUR memory)

OPTION_NAMES = {
    SMBDIRECT_RECEIVE_CREDIT_MAX: "receive_credit_max",
    SMBDIRECT_SEND_CREDIT_TARGET: "send_credit_target",
    SMBDIRECT_MAX_SEND_SIZE: "max_send_size",
    SMBDIRECT_MAX_RECEIVE_SIZE: "max_receive_size",
    SMBDIRECT_MAX_FRAGMENTED_RECV_SIZE: "max_fragmented_recv_size",
    SMBDIRECT_MAX_READ_WRITE_SIZE: "max_read_write_size",
    SMBDIRECT_KEEPALIVE_INTERVAL: "keepalive_interval",
    SMBDIRECT_KEEPALIVE_RESPONSE_TIMEOUT: "keepalive_response_timeout",
    SMBDIRECT_NEGOTIATE_TIMEOUT: "negotiate_timeout",
}
TIME_OPTIONS = {SMBDIRECT_KEEPALIVE_INTERVAL, SMBDIRECT_KEEPALIVE_RESPONSE_TIMEOUT, SMBDIRECT_NEGOTIATE_TIMEOUT}

# -- ours: control messages (cmsg_level SOL_SMBDIRECT) ---------------------------------------------
SMBDIRECT_CMSG_REMOTE_INVALIDATE = 1  # sendmsg: u32 token the peer's NIC invalidates with the SEND
SMBDIRECT_CMSG_INVALIDATED_TOKEN = 2  # recvmsg: u32 local token the peer invalidated with its SEND
SMBDIRECT_CMSG_RDMA_DESCRIPTORS = 3  # sendmsg(MSG_OOB): Buffer Descriptor V1 array; data = RDMA WRITE
SMBDIRECT_CMSG_RDMA_OFFSET = 4  # sendmsg(MSG_OOB): u64 offset into the descriptors (default 0)

# -- ours: registration access flags -------------------------------------------------------------
RDMA_REMOTE_READ = 1  # the peer may RDMA READ from the buffer (our SMB2 WRITE source)
RDMA_REMOTE_WRITE = 2  # the peer may RDMA WRITE into the buffer (our SMB2 READ destination)

RDMA_MODE_VM = 1
RDMA_MODE_MEMFD = 2

# -- ours: file letters in SOCKET_WRAPPER_DIR ------------------------------------------------------
# cwrap uses T/U (IPv4 TCP/UDP) and X/Y (IPv6); a file named EINVAL can appear too.
LETTER_V4 = "R"  # IPv4 SMB Direct listener: R<iface 02X><port 04X>
LETTER_V6 = "S"  # IPv6 SMB Direct listener
DEFAULT_PORT = 445
