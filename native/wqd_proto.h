/* The wire format between this preload library and the QUIC daemon (wrappers/quic/native_proto.py
 * is the Python side and says why it looks like this). Little-endian, one machine, no padding
 * surprises: both headers are 32 bytes and checked by a test against the Python structs. */
#ifndef WQD_PROTO_H
#define WQD_PROTO_H

#include <stdint.h>

#define WQD_MAGIC 0x31445157u /* "WQD1" */

enum wqd_op {
	WQD_SOCKET = 1,
	WQD_BIND = 2,
	WQD_CONNECT = 3,
	WQD_LISTEN = 4,
	WQD_ACCEPT = 5,
	WQD_GETSOCKNAME = 6,
	WQD_GETPEERNAME = 7,
	WQD_SETSOCKOPT = 8,
	WQD_GETSOCKOPT = 9,
	WQD_SENDMSG = 10,
	WQD_RECVMSG = 11,
	WQD_SHUTDOWN = 12,
	WQD_HANDSHAKE = 13,
	WQD_IOCTL = 14, /* a = request (SIOCINQ/FIONREAD, SIOCOUTQ); the reply data is the int */
	/* IPPROTO_SMBDIRECT fds only (smbd_calls.c) */
	WQD_SMBD_REGISTER = 32,
	WQD_SMBD_DEREGISTER = 33,
	WQD_SMBD_RDMA_READ = 34,
};

struct wqd_req {
	uint32_t magic;
	uint16_t op;
	uint16_t flags;
	int32_t a, b, c, d;
	uint32_t len1; /* data bytes that follow */
	uint32_t len2; /* ancillary-item bytes that follow the data */
};

struct wqd_rep {
	int64_t ret; /* >= 0, or -errno */
	uint32_t msg_flags;
	uint32_t len1;
	uint32_t len2;
	int32_t aux; /* RECVMSG/ACCEPT with EAGAIN: the socket's SO_RCVTIMEO in ms, -1 = none */
	int64_t aux2;
} __attribute__((packed));

/* One ancillary item: level, type, length, then length bytes (no padding). */
struct wqd_anc {
	int32_t level;
	int32_t type;
	uint32_t len;
};

/* The daemon's end of every app fd is bound to an abstract name with this prefix. */
#define WQD_APP_PREFIX "wirecheck-quic:"
#define WQD_MAX_CALL (64u * 1024u * 1024u)

#endif
