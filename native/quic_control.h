/* The preload library's connection to the QUIC daemon (quic_control.c): one call = one request with
 * the QUIC fd attached and one reply (wqd_proto.h has the format). */
#ifndef QUIC_CONTROL_H
#define QUIC_CONTROL_H

#include <stddef.h>
#include <stdint.h>

#include "wqd_proto.h"

struct wq_call {
	struct wqd_req req;
	const void *data; /* len1 bytes */
	const void *anc;  /* len2 bytes */
	struct wqd_rep rep;
	void *out;      /* reply data goes here, up to out_cap bytes */
	size_t out_cap;
	void *anc_out;  /* reply ancillary items, up to anc_cap bytes */
	size_t anc_cap;
	int new_fd;     /* SOCKET/ACCEPT: the fd in the reply */
};

/* One request and its reply on this thread's control connection (the daemon is started when needed).
 * Returns rep.ret (>= 0) or -1 with errno: the daemon's errno, or ECONNRESET when the daemon is gone. */
long wq_rpc(int fd, struct wq_call *c);
void wq_call_init(struct wq_call *c, int op, int a, int b, int cc);

int wq_set_errno(int e);    /* errno = e; returns -1 */
int wq_enabled(void);       /* SOCKET_WRAPPER_DIR is set: the emulation is on */
int wq_debug(void);         /* WIRECHECK_QUIC_DEBUG: print the daemon's reasons */
uint64_t wq_fd_ino(int fd); /* the inode of a socket fd, 0 for anything else */
int wq_is_engine_fd(int fd); /* an fd whose socket the engine daemon holds (QUIC or SMB Direct) */

#endif
