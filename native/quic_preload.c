/* libwirecheck_quic.so: IPPROTO_QUIC sockets for native programs on wirecheck's emulated network.
 *
 * Preloaded in front of cwrap's libsocket_wrapper.so by `wirecheck exec`. It translates calls and
 * holds no socket state: every QUIC socket lives in the QUIC daemon (wrappers/quic/daemon.py), a
 * Python process per emulated host that hosts ordinary wrappers.quic QuicSocket objects, so
 * timers run while this program sleeps, is stopped or is killed, and every call works from
 * whichever process holds the fd (after fork, dup or SCM_RIGHTS). The fd the program gets is one
 * end of a unix SOCK_SEQPACKET pair whose other end the daemon holds: poll/select/epoll work on it
 * unhooked, since the daemon keeps one token queued on it exactly while a recvmsg would not block.
 *
 * A call on a QUIC fd becomes one request on this thread's control connection to the daemon, with
 * the fd attached (SCM_RIGHTS) so the daemon finds the socket by the fd's inode. recvmsg and accept
 * never block in the daemon: they wait here, with poll() on the fd, for as long as SO_RCVTIMEO and
 * O_NONBLOCK say. Every other fd goes to the next library (cwrap) untouched.
 *
 * Off (no SOCKET_WRAPPER_DIR) the library only passes calls on. quic_control.c reaches the daemon
 * (and starts it on demand, with the Python in $WIRECHECK_PYTHON).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "wirecheck_quic.h"
#include "quic_control.h"
#include "wqd_proto.h"

/* glibc's checked variants (programs built with _FORTIFY_SOURCE call these); no public prototypes */
ssize_t __read_chk(int fd, void *buf, size_t len, size_t buflen);
ssize_t __recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags);
ssize_t __recvfrom_chk(int fd, void *buf, size_t len, size_t buflen, int flags, struct sockaddr *a, socklen_t *al);

#define IPPROTO_QUIC_ 261
#define IPPROTO_SMBDIRECT_ 257 /* the engine daemon hosts these too (wrappers/smbdirect/native.py) */
#define WQ_EXPORT __attribute__((visibility("default")))

/* ---- every libc entry point this library overrides, with the reason (one table) -------------------
 * The same table resolves the next library's function (cwrap, then libc) at load time, so the list
 * cannot drift from the code; a test compares it with the library's exported symbols. */
enum {
	F_SOCKET, F_BIND, F_CONNECT, F_LISTEN, F_ACCEPT, F_ACCEPT4, F_GETSOCKNAME, F_GETPEERNAME,
	F_SETSOCKOPT, F_GETSOCKOPT, F_SENDMSG, F_SEND, F_SENDTO, F_WRITE, F_WRITEV, F_RECVMSG, F_RECV,
	F_RECVFROM, F_READ, F_READV, F_READ_CHK, F_RECV_CHK, F_RECVFROM_CHK, F_SHUTDOWN, F_CLOSE, F_DUP,
	F_DUP2, F_DUP3, F_FCNTL, F_IOCTL, F_SENDMMSG, F_RECVMMSG, F_SPLICE, F_SENDFILE, F_SENDFILE64, F_COUNT
};
static const struct override {
	const char *name;
	const char *why;
} overrides[F_COUNT] = {
	[F_SOCKET] = {"socket", "IPPROTO_QUIC and IPPROTO_SMBDIRECT: the daemon makes the socket and hands back the app fd"},
	[F_BIND] = {"bind", "QUIC: the address belongs to the daemon's socket"},
	[F_CONNECT] = {"connect", "QUIC: quic.ko's connect (no packet sent, no EINPROGRESS)"},
	[F_LISTEN] = {"listen", "QUIC: the daemon listens on the emulated carrier"},
	[F_ACCEPT] = {"accept", "QUIC: a new daemon socket and fd; waits here, on the listener fd"},
	[F_ACCEPT4] = {"accept4", "as accept, with SOCK_NONBLOCK/SOCK_CLOEXEC"},
	[F_GETSOCKNAME] = {"getsockname", "QUIC: the emulated address, not the pair's"},
	[F_GETPEERNAME] = {"getpeername", "QUIC: the emulated peer, not the daemon"},
	[F_SETSOCKOPT] = {"setsockopt", "QUIC: SOL_QUIC options and SO_RCVTIMEO/SO_SNDTIMEO live in the daemon"},
	[F_GETSOCKOPT] = {"getsockopt", "QUIC: SOL_QUIC options (some read an input struct), SO_TYPE/SO_PROTOCOL"},
	[F_SENDMSG] = {"sendmsg", "QUIC: stream/handshake cmsgs and quic.ko's flags"},
	[F_SEND] = {"send", "QUIC: flags carry stream flags (MSG_SYN = NEW, MSG_FIN = FIN)"},
	[F_SENDTO] = {"sendto", "QUIC: as send (the address is ignored, as quic.ko does)"},
	[F_WRITE] = {"write", "QUIC: a send with no flags"},
	[F_WRITEV] = {"writev", "QUIC: a send with no flags"},
	[F_RECVMSG] = {"recvmsg", "QUIC: one queue item with its cmsgs; other sockets: recognise QUIC fds received by SCM_RIGHTS"},
	[F_RECV] = {"recv", "QUIC: a recvmsg without cmsg room"},
	[F_RECVFROM] = {"recvfrom", "QUIC: as recv"},
	[F_READ] = {"read", "QUIC: a recv with no flags"},
	[F_READV] = {"readv", "QUIC: a recv with no flags"},
	[F_READ_CHK] = {"__read_chk", "read() of programs built with _FORTIFY_SOURCE"},
	[F_RECV_CHK] = {"__recv_chk", "recv() of programs built with _FORTIFY_SOURCE"},
	[F_RECVFROM_CHK] = {"__recvfrom_chk", "recvfrom() of programs built with _FORTIFY_SOURCE"},
	[F_SHUTDOWN] = {"shutdown", "QUIC: sends the application close (quic.ko has no half-close)"},
	[F_CLOSE] = {"close", "forget the fd's QUIC mark (the daemon sees the last close itself)"},
	[F_DUP] = {"dup", "the copy is a QUIC fd too"},
	[F_DUP2] = {"dup2", "the copy is a QUIC fd too; the fd it replaces is not any more"},
	[F_DUP3] = {"dup3", "as dup2, with O_CLOEXEC"},
	[F_FCNTL] = {"fcntl", "F_DUPFD/F_DUPFD_CLOEXEC make QUIC copies; the rest passes on"},
	[F_IOCTL] = {"ioctl", "QUIC: SIOCINQ/FIONREAD and SIOCOUTQ count the daemon's queues; the rest (FIONBIO) passes on"},
	[F_SENDMMSG] = {"sendmmsg", "QUIC: one sendmsg per message, as the kernel's loop does"},
	[F_RECVMMSG] = {"recvmmsg", "QUIC: one recvmsg per message, as the kernel's loop does"},
	[F_SPLICE] = {"splice", "QUIC with a pipe: a write (pipe -> QUIC) or a read (QUIC -> pipe), as quic.ko's missing splice ops make it"},
	[F_SENDFILE] = {"sendfile", "QUIC out_fd: the file's bytes sent as by write; QUIC in_fd: a read into a pipe, else EINVAL"},
	[F_SENDFILE64] = {"sendfile64", "as sendfile (a separate name of it in glibc)"},
	/* tee is not here: it needs two pipes, so the kernel refuses a QUIC fd (EINVAL) before touching it */
};
static void *next_fn[F_COUNT];

/* Exported for tests and people: the table above, so it can be compared with the exports. */
WQ_EXPORT const char *wirecheck_quic_override(int i)
{
	return i >= 0 && i < F_COUNT ? overrides[i].name : NULL;
}

WQ_EXPORT const char *wirecheck_quic_override_reason(int i)
{
	return i >= 0 && i < F_COUNT ? overrides[i].why : NULL;
}

static void resolve(void)
{
	for (int i = 0; i < F_COUNT; i++)
		next_fn[i] = dlsym(RTLD_NEXT, overrides[i].name);
}

#define NEXT(idx, type) ((type)next_fn[idx])

/* ---- which fds are QUIC fds --------------------------------------------------------------------
 * The inode of each QUIC fd this process knows; 0 = not QUIC. A mark is trusted only while the fd
 * still has that inode, so an fd closed behind our back (a raw syscall) and reused is not QUIC. */
#define WQ_MAXFD 65536
static uint64_t quic_ino[WQ_MAXFD];

static void mark(int fd, uint64_t ino)
{
	if (fd >= 0 && fd < WQ_MAXFD)
		__atomic_store_n(&quic_ino[fd], ino, __ATOMIC_RELAXED);
}

static uint64_t marked(int fd)
{
	return fd >= 0 && fd < WQ_MAXFD ? __atomic_load_n(&quic_ino[fd], __ATOMIC_RELAXED) : 0;
}

static int is_quic(int fd)
{
	uint64_t ino = marked(fd);
	if (ino == 0)
		return 0;
	if (wq_fd_ino(fd) == ino)
		return 1;
	mark(fd, 0);
	return 0;
}

/* For smbd_calls.c: every call on an SMB Direct fd takes the QUIC path (one daemon, one protocol). */
int wq_is_engine_fd(int fd)
{
	return is_quic(fd);
}

/* An fd we did not create (inherited across exec, received by SCM_RIGHTS): QUIC when its peer is the
 * daemon's end, bound to an abstract name with our prefix. One getpeername, no daemon call. */
static int recognise(int fd)
{
	struct sockaddr_un sun;
	socklen_t len = sizeof(sun);
	memset(&sun, 0, sizeof(sun));
	if (syscall(SYS_getpeername, fd, (struct sockaddr *)&sun, &len) != 0 || sun.sun_family != AF_UNIX)
		return 0;
	size_t plen = strlen(WQD_APP_PREFIX);
	if (len < offsetof(struct sockaddr_un, sun_path) + 1 + plen || sun.sun_path[0] != '\0' ||
	    memcmp(sun.sun_path + 1, WQD_APP_PREFIX, plen) != 0)
		return 0;
	mark(fd, wq_fd_ino(fd));
	return 1;
}

static void scan_inherited(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (d == NULL)
		return;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		char *end;
		long fd = strtol(de->d_name, &end, 10);
		if (*end == '\0' && fd >= 0 && fd < WQ_MAXFD && fd != dirfd(d))
			recognise((int)fd);
	}
	closedir(d);
}

__attribute__((constructor)) static void wq_init(void)
{
	resolve();
	if (wq_enabled())
		scan_inherited();
}

static int nonblocking(int fd)
{
	long fl = syscall(SYS_fcntl, fd, F_GETFL);
	return fl >= 0 && (fl & O_NONBLOCK);
}

/* Wait until the fd is readable (the daemon's token or EOF), for SO_RCVTIMEO ms (-1: for ever). */
static int wait_readable(int fd, int timeout_ms)
{
	struct pollfd p = {fd, POLLIN, 0};
	int r = poll(&p, 1, timeout_ms); /* EINTR: a signal interrupts a blocking wait, as in the kernel */
	if (r > 0)
		return 0;
	return r == 0 ? wq_set_errno(EAGAIN) : -1;
}

static int adopt_new_fd(int fd, int flags)
{
	if (fd < 0)
		return wq_set_errno(EPROTO);
	if (!(flags & SOCK_CLOEXEC))
		syscall(SYS_fcntl, fd, F_SETFD, 0);
	if (flags & SOCK_NONBLOCK)
		syscall(SYS_fcntl, fd, F_SETFL, O_NONBLOCK | (int)syscall(SYS_fcntl, fd, F_GETFL));
	mark(fd, wq_fd_ino(fd));
	return fd;
}

/* ---- the overrides -------------------------------------------------------------------------------- */
WQ_EXPORT int socket(int domain, int type, int protocol)
{
	if ((protocol != IPPROTO_QUIC_ && protocol != IPPROTO_SMBDIRECT_) || !wq_enabled())
		return NEXT(F_SOCKET, int (*)(int, int, int))(domain, type, protocol);
	char env[64];
	const char *iface = getenv("SOCKET_WRAPPER_DEFAULT_IFACE");
	int n = snprintf(env, sizeof(env), "SOCKET_WRAPPER_DEFAULT_IFACE=%s", iface ? iface : "");
	struct wq_call c;
	wq_call_init(&c, WQD_SOCKET, domain, type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC), protocol);
	c.data = env;
	c.req.len1 = (uint32_t)n + 1;
	if (wq_rpc(-1, &c) < 0)
		return -1;
	return adopt_new_fd(c.new_fd, type);
}

static int addr_call(int op, int fd, const struct sockaddr *addr, socklen_t len)
{
	if (addr == NULL)
		return wq_set_errno(EFAULT);
	struct wq_call c;
	wq_call_init(&c, op, 0, 0, 0);
	c.data = addr;
	c.req.len1 = len > 128 ? 128 : len;
	return wq_rpc(fd, &c) < 0 ? -1 : 0;
}

WQ_EXPORT int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
	if (!is_quic(fd))
		return NEXT(F_BIND, int (*)(int, const struct sockaddr *, socklen_t))(fd, addr, len);
	return addr_call(WQD_BIND, fd, addr, len);
}

WQ_EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	if (!is_quic(fd))
		return NEXT(F_CONNECT, int (*)(int, const struct sockaddr *, socklen_t))(fd, addr, len);
	return addr_call(WQD_CONNECT, fd, addr, len);
}

WQ_EXPORT int listen(int fd, int backlog)
{
	if (!is_quic(fd))
		return NEXT(F_LISTEN, int (*)(int, int))(fd, backlog);
	struct wq_call c;
	wq_call_init(&c, WQD_LISTEN, backlog, 0, 0);
	return wq_rpc(fd, &c) < 0 ? -1 : 0;
}

static void copy_addr(struct sockaddr *addr, socklen_t *len, const void *src, size_t n)
{
	if (addr == NULL || len == NULL)
		return;
	memcpy(addr, src, n < *len ? n : *len);
	*len = (socklen_t)n;
}

static int quic_accept(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
	if (flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC))
		return wq_set_errno(EINVAL);
	unsigned char sa[128];
	for (;;) {
		struct wq_call c;
		wq_call_init(&c, WQD_ACCEPT, 0, 0, 0);
		c.out = sa;
		c.out_cap = sizeof(sa);
		if (wq_rpc(fd, &c) >= 0) {
			copy_addr(addr, len, sa, c.rep.len1);
			return adopt_new_fd(c.new_fd, flags);
		}
		if (errno != EAGAIN || nonblocking(fd))
			return -1;
		if (wait_readable(fd, c.rep.aux) < 0)
			return -1;
	}
}

WQ_EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
	if (!is_quic(fd))
		return NEXT(F_ACCEPT, int (*)(int, struct sockaddr *, socklen_t *))(fd, addr, len);
	return quic_accept(fd, addr, len, 0);
}

WQ_EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
	if (!is_quic(fd))
		return NEXT(F_ACCEPT4, int (*)(int, struct sockaddr *, socklen_t *, int))(fd, addr, len, flags);
	return quic_accept(fd, addr, len, flags);
}

static int name_call(int op, int fd, struct sockaddr *addr, socklen_t *len)
{
	if (addr == NULL || len == NULL)
		return wq_set_errno(EFAULT);
	unsigned char sa[128];
	struct wq_call c;
	wq_call_init(&c, op, 0, 0, 0);
	c.out = sa;
	c.out_cap = sizeof(sa);
	if (wq_rpc(fd, &c) < 0)
		return -1;
	copy_addr(addr, len, sa, c.rep.len1);
	return 0;
}

WQ_EXPORT int getsockname(int fd, struct sockaddr *addr, socklen_t *len)
{
	if (!is_quic(fd))
		return NEXT(F_GETSOCKNAME, int (*)(int, struct sockaddr *, socklen_t *))(fd, addr, len);
	return name_call(WQD_GETSOCKNAME, fd, addr, len);
}

WQ_EXPORT int getpeername(int fd, struct sockaddr *addr, socklen_t *len)
{
	if (!is_quic(fd))
		return NEXT(F_GETPEERNAME, int (*)(int, struct sockaddr *, socklen_t *))(fd, addr, len);
	return name_call(WQD_GETPEERNAME, fd, addr, len);
}

#define OPT_MAX 65536u

WQ_EXPORT int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
	if (!is_quic(fd))
		return NEXT(F_SETSOCKOPT, int (*)(int, int, int, const void *, socklen_t))(fd, level, name, val, len);
	if (len > OPT_MAX)
		return wq_set_errno(EINVAL); /* quic.ko: optlen > 4096 is EINVAL; larger ones we cannot carry */
	struct wq_call c;
	wq_call_init(&c, WQD_SETSOCKOPT, level, name, val == NULL);
	c.data = val;
	c.req.len1 = val == NULL ? 0 : len;
	return wq_rpc(fd, &c) < 0 ? -1 : 0;
}

WQ_EXPORT int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
	if (!is_quic(fd))
		return NEXT(F_GETSOCKOPT, int (*)(int, int, int, void *, socklen_t *))(fd, level, name, val, len);
	if (len == NULL)
		return wq_set_errno(EFAULT);
	socklen_t n = *len > OPT_MAX ? OPT_MAX : *len;
	if (val == NULL)
		n = 0;
	struct wq_call c;
	wq_call_init(&c, WQD_GETSOCKOPT, level, name, (int)n);
	c.data = val; /* some options read an input struct from the buffer (EVENT, STREAM_OPEN, ...) */
	c.req.len1 = n;
	c.out = val;
	c.out_cap = n;
	if (wq_rpc(fd, &c) < 0)
		return -1;
	*len = c.rep.len1;
	return 0;
}

/* ---- data ---------------------------------------------------------------------------------------- */
static int pack_cmsgs(const struct msghdr *m, unsigned char **out, uint32_t *outlen)
{
	*out = NULL;
	*outlen = 0;
	if (m->msg_control == NULL || m->msg_controllen == 0)
		return 0;
	if (m->msg_controllen > OPT_MAX)
		return wq_set_errno(EINVAL);
	unsigned char *buf = malloc(m->msg_controllen + sizeof(struct wqd_anc));
	if (buf == NULL)
		return wq_set_errno(ENOMEM);
	size_t off = 0;
	const unsigned char *p = m->msg_control, *end = p + m->msg_controllen;
	while ((size_t)(end - p) >= sizeof(struct cmsghdr)) {
		struct cmsghdr h;
		memcpy(&h, p, sizeof(h));
		if (h.cmsg_len < CMSG_LEN(0) || h.cmsg_len > (size_t)(end - p)) {
			free(buf);
			return wq_set_errno(EINVAL); /* quic.ko: a malformed cmsg is EINVAL */
		}
		struct wqd_anc a = {h.cmsg_level, h.cmsg_type, (uint32_t)(h.cmsg_len - CMSG_LEN(0))};
		memcpy(buf + off, &a, sizeof(a));
		memcpy(buf + off + sizeof(a), p + CMSG_LEN(0), a.len);
		off += sizeof(a) + a.len;
		size_t step = CMSG_ALIGN(h.cmsg_len);
		if (step >= (size_t)(end - p))
			break;
		p += step;
	}
	*out = buf;
	*outlen = (uint32_t)off;
	return 0;
}

static ssize_t quic_send(int fd, const struct iovec *iov, size_t iovcnt, const struct msghdr *m, int flags)
{
	size_t total = 0;
	for (size_t i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len > WQD_MAX_CALL - total)
			return wq_set_errno(EMSGSIZE);
		total += iov[i].iov_len;
	}
	unsigned char *data = malloc(total ? total : 1);
	if (data == NULL)
		return wq_set_errno(ENOMEM);
	size_t off = 0;
	for (size_t i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len)
			memcpy(data + off, iov[i].iov_base, iov[i].iov_len);
		off += iov[i].iov_len;
	}
	unsigned char *anc = NULL;
	uint32_t anclen = 0;
	if (m != NULL && pack_cmsgs(m, &anc, &anclen) < 0) {
		free(data);
		return -1;
	}
	if (nonblocking(fd))
		flags |= MSG_DONTWAIT;
	struct wq_call c;
	wq_call_init(&c, WQD_SENDMSG, flags, 0, 0);
	c.data = data;
	c.req.len1 = (uint32_t)total;
	c.anc = anc;
	c.req.len2 = anclen;
	long r = wq_rpc(fd, &c);
	int e = errno;
	free(data);
	free(anc);
	if (r < 0 && e == EPIPE && !(flags & MSG_NOSIGNAL))
		raise(SIGPIPE); /* quic.ko raises SIGPIPE on a stream send to a closed socket */
	errno = e;
	return r;
}

/* Ancillary items from the daemon into the caller's msg_control; what does not fit sets MSG_CTRUNC. */
static void unpack_cmsgs(struct msghdr *m, const unsigned char *anc, size_t n, uint32_t *flags)
{
	size_t used = 0;
	size_t room = m->msg_control != NULL ? m->msg_controllen : 0;
	size_t off = 0;
	while (off + sizeof(struct wqd_anc) <= n) {
		struct wqd_anc a;
		memcpy(&a, anc + off, sizeof(a));
		off += sizeof(a);
		if (a.len > n - off)
			break;
		if (used + CMSG_SPACE(a.len) > room) {
			*flags |= MSG_CTRUNC;
		} else {
			struct cmsghdr h;
			memset((unsigned char *)m->msg_control + used, 0, CMSG_SPACE(a.len));
			h.cmsg_len = CMSG_LEN(a.len);
			h.cmsg_level = a.level;
			h.cmsg_type = a.type;
			memcpy((unsigned char *)m->msg_control + used, &h, sizeof(h));
			memcpy((unsigned char *)m->msg_control + used + CMSG_LEN(0), anc + off, a.len);
			used += CMSG_SPACE(a.len);
		}
		off += a.len;
	}
	m->msg_controllen = used;
}

static ssize_t quic_recv(int fd, struct msghdr *m, int flags)
{
	size_t total = 0;
	for (size_t i = 0; i < m->msg_iovlen; i++)
		total += m->msg_iov[i].iov_len;
	if (total > WQD_MAX_CALL)
		total = WQD_MAX_CALL;
	size_t room = m->msg_control != NULL ? m->msg_controllen : 0;
	unsigned char *buf = malloc(total ? total : 1);
	unsigned char ancbuf[1024];
	if (buf == NULL)
		return wq_set_errno(ENOMEM);
	int nb = (flags & MSG_DONTWAIT) || nonblocking(fd);
	for (;;) {
		struct wq_call c;
		wq_call_init(&c, WQD_RECVMSG, flags & ~MSG_DONTWAIT, (int)total, (int)(room > 1024 ? 1024 : room));
		c.out = buf;
		c.out_cap = total;
		c.anc_out = ancbuf;
		c.anc_cap = sizeof(ancbuf);
		long r = wq_rpc(fd, &c);
		if (r >= 0) {
			size_t off = 0;
			for (size_t i = 0; i < m->msg_iovlen && off < c.rep.len1; i++) {
				size_t k = m->msg_iov[i].iov_len < c.rep.len1 - off ? m->msg_iov[i].iov_len : c.rep.len1 - off;
				memcpy(m->msg_iov[i].iov_base, buf + off, k);
				off += k;
			}
			uint32_t mf = c.rep.msg_flags;
			unpack_cmsgs(m, ancbuf, c.rep.len2, &mf);
			m->msg_flags = (int)mf;
			m->msg_namelen = 0;
			free(buf);
			return (ssize_t)c.rep.len1;
		}
		if (errno != EAGAIN || nb || wait_readable(fd, c.rep.aux) < 0) {
			int e = errno;
			free(buf);
			return wq_set_errno(e);
		}
	}
}

WQ_EXPORT ssize_t sendmsg(int fd, const struct msghdr *m, int flags)
{
	if (!is_quic(fd))
		return NEXT(F_SENDMSG, ssize_t (*)(int, const struct msghdr *, int))(fd, m, flags);
	if (m == NULL)
		return wq_set_errno(EFAULT);
	return quic_send(fd, m->msg_iov, m->msg_iovlen, m, flags);
}

WQ_EXPORT ssize_t send(int fd, const void *buf, size_t len, int flags)
{
	if (!is_quic(fd))
		return NEXT(F_SEND, ssize_t (*)(int, const void *, size_t, int))(fd, buf, len, flags);
	struct iovec iov = {(void *)buf, len};
	return quic_send(fd, &iov, 1, NULL, flags);
}

WQ_EXPORT ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *a, socklen_t al)
{
	if (!is_quic(fd))
		return NEXT(F_SENDTO, ssize_t (*)(int, const void *, size_t, int, const struct sockaddr *, socklen_t))(
			fd, buf, len, flags, a, al);
	struct iovec iov = {(void *)buf, len};
	return quic_send(fd, &iov, 1, NULL, flags);
}

WQ_EXPORT ssize_t write(int fd, const void *buf, size_t len)
{
	if (!is_quic(fd))
		return NEXT(F_WRITE, ssize_t (*)(int, const void *, size_t))(fd, buf, len);
	struct iovec iov = {(void *)buf, len};
	return quic_send(fd, &iov, 1, NULL, 0);
}

WQ_EXPORT ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
	if (!is_quic(fd))
		return NEXT(F_WRITEV, ssize_t (*)(int, const struct iovec *, int))(fd, iov, cnt);
	if (cnt < 0)
		return wq_set_errno(EINVAL);
	return quic_send(fd, iov, (size_t)cnt, NULL, 0);
}

/* fds received on an ordinary socket may be QUIC fds passed by another process. */
static void recognise_passed(struct msghdr *m)
{
	if (m->msg_control == NULL || !wq_enabled())
		return;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c != NULL; c = CMSG_NXTHDR(m, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int f;
			memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			recognise(f);
		}
	}
}

WQ_EXPORT ssize_t recvmsg(int fd, struct msghdr *m, int flags)
{
	if (!is_quic(fd)) {
		ssize_t r = NEXT(F_RECVMSG, ssize_t (*)(int, struct msghdr *, int))(fd, m, flags);
		if (r >= 0 && m != NULL)
			recognise_passed(m);
		return r;
	}
	if (m == NULL)
		return wq_set_errno(EFAULT);
	return quic_recv(fd, m, flags);
}

static ssize_t quic_recv_plain(int fd, void *buf, size_t len, int flags)
{
	struct iovec iov = {buf, len};
	struct msghdr m;
	memset(&m, 0, sizeof(m));
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	return quic_recv(fd, &m, flags);
}

WQ_EXPORT ssize_t recv(int fd, void *buf, size_t len, int flags)
{
	if (!is_quic(fd))
		return NEXT(F_RECV, ssize_t (*)(int, void *, size_t, int))(fd, buf, len, flags);
	return quic_recv_plain(fd, buf, len, flags);
}

WQ_EXPORT ssize_t recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *a, socklen_t *al)
{
	if (!is_quic(fd))
		return NEXT(F_RECVFROM, ssize_t (*)(int, void *, size_t, int, struct sockaddr *, socklen_t *))(
			fd, buf, len, flags, a, al);
	if (al != NULL)
		*al = 0;
	return quic_recv_plain(fd, buf, len, flags);
}

WQ_EXPORT ssize_t read(int fd, void *buf, size_t len)
{
	if (!is_quic(fd))
		return NEXT(F_READ, ssize_t (*)(int, void *, size_t))(fd, buf, len);
	return quic_recv_plain(fd, buf, len, 0);
}

WQ_EXPORT ssize_t readv(int fd, const struct iovec *iov, int cnt)
{
	if (!is_quic(fd))
		return NEXT(F_READV, ssize_t (*)(int, const struct iovec *, int))(fd, iov, cnt);
	if (cnt < 0)
		return wq_set_errno(EINVAL);
	struct msghdr m;
	memset(&m, 0, sizeof(m));
	m.msg_iov = (struct iovec *)iov;
	m.msg_iovlen = (size_t)cnt;
	return quic_recv(fd, &m, 0);
}

WQ_EXPORT ssize_t __read_chk(int fd, void *buf, size_t len, size_t buflen)
{
	if (len > buflen)
		abort(); /* what glibc's checked read does */
	return read(fd, buf, len);
}

WQ_EXPORT ssize_t __recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags)
{
	if (len > buflen)
		abort();
	return recv(fd, buf, len, flags);
}

WQ_EXPORT ssize_t __recvfrom_chk(int fd, void *buf, size_t len, size_t buflen, int flags, struct sockaddr *a,
				 socklen_t *al)
{
	if (len > buflen)
		abort();
	return recvfrom(fd, buf, len, flags, a, al);
}

WQ_EXPORT int shutdown(int fd, int how)
{
	if (!is_quic(fd))
		return NEXT(F_SHUTDOWN, int (*)(int, int))(fd, how);
	struct wq_call c;
	wq_call_init(&c, WQD_SHUTDOWN, how, 0, 0);
	return wq_rpc(fd, &c) < 0 ? -1 : 0;
}

/* ---- fd bookkeeping -------------------------------------------------------------------------------- */
WQ_EXPORT int close(int fd)
{
	mark(fd, 0);
	return NEXT(F_CLOSE, int (*)(int))(fd);
}

WQ_EXPORT int dup(int fd)
{
	int r = NEXT(F_DUP, int (*)(int))(fd);
	if (r >= 0)
		mark(r, is_quic(fd) ? marked(fd) : 0);
	return r;
}

WQ_EXPORT int dup2(int fd, int to)
{
	int q = is_quic(fd);
	int r = NEXT(F_DUP2, int (*)(int, int))(fd, to);
	if (r >= 0 && r != fd)
		mark(r, q ? marked(fd) : 0);
	return r;
}

WQ_EXPORT int dup3(int fd, int to, int flags)
{
	int q = is_quic(fd);
	int r = NEXT(F_DUP3, int (*)(int, int, int))(fd, to, flags);
	if (r >= 0)
		mark(r, q ? marked(fd) : 0);
	return r;
}

WQ_EXPORT int fcntl(int fd, int cmd, ...)
{
	va_list ap;
	va_start(ap, cmd);
	void *arg = va_arg(ap, void *); /* every fcntl argument fits a pointer; unused ones are ignored */
	va_end(ap);
	int r = NEXT(F_FCNTL, int (*)(int, int, void *))(fd, cmd, arg);
	if (r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC))
		mark(r, is_quic(fd) ? marked(fd) : 0);
	return r;
}

/* ---- ioctl and the multi-message calls ------------------------------------------------------------- */
WQ_EXPORT int ioctl(int fd, unsigned long req, ...)
{
	va_list ap;
	va_start(ap, req);
	void *arg = va_arg(ap, void *); /* every ioctl argument fits a pointer */
	va_end(ap);
	if (!is_quic(fd) || (req != FIONREAD && req != TIOCOUTQ)) /* SIOCINQ == FIONREAD, SIOCOUTQ == TIOCOUTQ */
		return NEXT(F_IOCTL, int (*)(int, unsigned long, void *))(fd, req, arg);
	if (arg == NULL)
		return wq_set_errno(EFAULT);
	int value = 0;
	struct wq_call c;
	wq_call_init(&c, WQD_IOCTL, (int)req, 0, 0);
	c.out = &value;
	c.out_cap = sizeof(value);
	if (wq_rpc(fd, &c) < 0)
		return -1;
	memcpy(arg, &value, sizeof(value));
	return 0;
}

/* The kernel's sendmmsg/recvmmsg are loops over sendmsg/recvmsg: the count of messages done, or
 * the first call's error when none was. recvmmsg: MSG_WAITFORONE makes every call after the first
 * non-blocking; a timeout is checked after each message, as the kernel does. */
WQ_EXPORT int sendmmsg(int fd, struct mmsghdr *v, unsigned int n, int flags)
{
	if (!is_quic(fd))
		return NEXT(F_SENDMMSG, int (*)(int, struct mmsghdr *, unsigned int, int))(fd, v, n, flags);
	if (v == NULL && n > 0)
		return wq_set_errno(EFAULT);
	unsigned int i;
	for (i = 0; i < n && i < UIO_MAXIOV; i++) {
		ssize_t r = quic_send(fd, v[i].msg_hdr.msg_iov, v[i].msg_hdr.msg_iovlen, &v[i].msg_hdr, flags);
		if (r < 0)
			return i > 0 ? (int)i : -1;
		v[i].msg_len = (unsigned int)r;
	}
	return (int)i;
}

static double mono_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

WQ_EXPORT int recvmmsg(int fd, struct mmsghdr *v, unsigned int n, int flags, struct timespec *timeout)
{
	if (!is_quic(fd))
		return NEXT(F_RECVMMSG, int (*)(int, struct mmsghdr *, unsigned int, int, struct timespec *))(
			fd, v, n, flags, timeout);
	if (v == NULL && n > 0)
		return wq_set_errno(EFAULT);
	if (timeout != NULL && (timeout->tv_sec < 0 || timeout->tv_nsec < 0 || timeout->tv_nsec >= 1000000000L))
		return wq_set_errno(EINVAL);
	double end = timeout != NULL ? mono_now() + (double)timeout->tv_sec + (double)timeout->tv_nsec / 1e9 : 0;
	int each = flags & ~MSG_WAITFORONE;
	unsigned int i;
	for (i = 0; i < n && i < UIO_MAXIOV; i++) {
		ssize_t r = quic_recv(fd, &v[i].msg_hdr, each);
		if (r < 0) {
			if (i > 0) /* what was read is returned; the error shows at the next call */
				break;
			return -1;
		}
		v[i].msg_len = (unsigned int)r;
		if (flags & MSG_WAITFORONE)
			each |= MSG_DONTWAIT;
		if (timeout != NULL && mono_now() >= end) {
			i++;
			break;
		}
	}
	return (int)i;
}

/* ---- splice and sendfile -----------------------------------------------------------------------------
 * quic.ko has no splice_read and no sendpage, so the kernel moves spliced or sent-file bytes into a QUIC
 * socket with a plain sendmsg (no cmsgs: what write() does) and out of one with a recvmsg (what read()
 * does). Passed on, these calls would act on the pair itself (garbage for the daemon), so a call with a
 * QUIC fd on one end is done here with quic_send / quic_recv_plain. Errnos and their order are the
 * kernel's (checked against a unix socket on Linux 6.18). Blocking as in the kernel: the QUIC side by the
 * QUIC fd's O_NONBLOCK only (SPLICE_F_NONBLOCK does not reach a socket), the pipe side by
 * SPLICE_F_NONBLOCK or the pipe's O_NONBLOCK. Each call moves at most WQ_SPLICE_MAX bytes through the
 * pipe (a short count, which splice may return); sendfile loops to count, as the kernel does. */
#define WQ_SPLICE_MAX 65536
#define WQ_SPLICE_FLAGS 0xfu /* SPLICE_F_MOVE | _NONBLOCK | _MORE | _GIFT; any other bit is EINVAL */
#define WQ_MAX_RW 0x7ffff000u /* the kernel's MAX_RW_COUNT on 4 KiB pages: sendfile's count is cut to it */

static int is_pipe(int fd)
{
	struct stat st;
	return fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode);
}

/* Our own pipes and the caller's pipe: straight to the kernel, past every wrapper. */
static ssize_t raw_read(int fd, void *buf, size_t len)
{
	return syscall(SYS_read, fd, buf, len);
}

/* pipe -> QUIC, without losing bytes: tee() copies the pipe's head into a private pipe (consuming
 * nothing), that copy is sent, and only the bytes the send took are then read off the caller's pipe. An
 * EAGAIN, an error or a short send leaves the rest in the pipe. (Another reader of the same pipe between
 * the tee and the read would break this; the kernel holds the pipe's lock, we cannot.) */
static ssize_t splice_to_quic(int in, int out, size_t len, unsigned int flags)
{
	int nb = (flags & SPLICE_F_NONBLOCK) || nonblocking(in);
	size_t n = len < WQ_SPLICE_MAX ? len : WQ_SPLICE_MAX;
	int copy[2];
	if (pipe2(copy, O_CLOEXEC) != 0)
		return -1;
	unsigned char *buf = malloc(n);
	/* tee waits for data as splice does (EAGAIN when non-blocking), 0 at an empty pipe with no writer;
	 * the private pipe is empty, so it never waits for room there */
	ssize_t r = buf == NULL ? wq_set_errno(ENOMEM) : tee(in, copy[1], n, nb ? SPLICE_F_NONBLOCK : 0);
	for (ssize_t got = 0, k; r > 0 && got < r; got += k)
		if ((k = raw_read(copy[0], buf + got, (size_t)(r - got))) <= 0)
			r = wq_set_errno(EIO); /* cannot happen: the copy is all there */
	if (r > 0) {
		struct iovec iov = {buf, (size_t)r};
		r = quic_send(out, &iov, 1, NULL, 0); /* write()'s path: O_NONBLOCK, SIGPIPE, errnos */
	}
	for (ssize_t done = 0, k; r > 0 && done < r; done += k) /* consume exactly what was sent */
		if ((k = raw_read(in, buf, (size_t)(r - done))) <= 0)
			break; /* only if another reader took them */
	int e = errno;
	syscall(SYS_close, copy[0]);
	syscall(SYS_close, copy[1]);
	free(buf);
	errno = e;
	return r;
}

/* QUIC -> pipe: wait for room in the pipe as the kernel does, then read at most the room through read()'s
 * path, so writing what was read cannot fall short (a message's rest stays queued, as after a short
 * read()). */
static ssize_t splice_from_quic(int in, int out, size_t len, int nb)
{
	size_t room;
	for (;;) {
		struct pollfd p = {out, POLLOUT, 0};
		int queued = 0;
		long size = syscall(SYS_fcntl, out, F_GETPIPE_SZ);
		if (poll(&p, 1, 0) < 0 || size < 0 || syscall(SYS_ioctl, out, FIONREAD, &queued) < 0)
			return -1;
		if (p.revents & POLLERR) { /* no reader: the kernel's SIGPIPE and EPIPE */
			raise(SIGPIPE);
			return wq_set_errno(EPIPE);
		}
		if ((p.revents & POLLOUT) && size > queued) {
			room = (size_t)(size - queued);
			break;
		}
		if (nb)
			return wq_set_errno(EAGAIN);
		/* full (10 ms steps in the unlikely case of a free slot but no free byte) */
		if (poll(&p, 1, (p.revents & POLLOUT) ? 10 : -1) < 0)
			return -1; /* EINTR, as the kernel's wait for room */
	}
	size_t n = len < room ? len : room;
	n = n < WQ_SPLICE_MAX ? n : WQ_SPLICE_MAX;
	unsigned char *buf = malloc(n);
	if (buf == NULL)
		return wq_set_errno(ENOMEM);
	ssize_t r = quic_recv_plain(in, buf, n, 0);
	for (ssize_t done = 0, k; r > 0 && done < r; done += k > 0 ? k : 0) {
		k = syscall(SYS_write, out, buf + done, (size_t)(r - done));
		if (k < 0 && errno == EAGAIN) { /* pipe slots ran out before its bytes: wait, lose nothing */
			struct pollfd p = {out, POLLOUT, 0};
			poll(&p, 1, 10);
		} else if (k < 0 && errno != EINTR) {
			r = -1; /* the reader left meanwhile: the bytes are gone, as a kernel splice's would be */
		}
	}
	int e = errno;
	free(buf);
	errno = e;
	return r;
}

/* file -> QUIC: pieces of the file (pread at *offset, or read at the file position, set back by what a
 * send did not take) sent through write()'s path until count, EOF or a short send. The bytes sent, or
 * -1 when none were. */
static ssize_t sendfile_to_quic(int out, int in, int64_t *offset, size_t count)
{
	struct stat st;
	if (fstat(in, &st) != 0)
		return -1;
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
		return wq_set_errno(EINVAL); /* the kernel: in_fd must be a file (not a pipe or socket) */
	if (count > WQ_MAX_RW)
		count = WQ_MAX_RW;
	unsigned char *buf = malloc(WQ_SPLICE_MAX);
	if (buf == NULL)
		return wq_set_errno(ENOMEM);
	size_t sent = 0;
	ssize_t r = 0;
	while (sent < count) {
		size_t n = count - sent < WQ_SPLICE_MAX ? count - sent : WQ_SPLICE_MAX;
		ssize_t k = offset ? pread(in, buf, n, (off_t)(*offset + (int64_t)sent)) : raw_read(in, buf, n);
		if (k <= 0) {
			r = k;
			break;
		}
		struct iovec iov = {buf, (size_t)k};
		r = quic_send(out, &iov, 1, NULL, 0);
		sent += r > 0 ? (size_t)r : 0;
		if (r < k) {
			int e = errno;
			if (offset == NULL)
				lseek(in, -(off_t)(k - (r > 0 ? r : 0)), SEEK_CUR);
			errno = e;
			break;
		}
	}
	int e = errno;
	free(buf);
	if (offset != NULL)
		*offset += (int64_t)sent;
	errno = e;
	return sent > 0 ? (ssize_t)sent : r < 0 ? -1 : 0;
}

/* sendfile/sendfile64 with a QUIC fd on one end. A QUIC in_fd: an offset is ESPIPE (a socket has no
 * position); into a pipe it is the read splice does; into anything else EINVAL (the kernel's in_fd
 * must be a file unless out_fd is a pipe). */
static ssize_t quic_sendfile(int out, int in, int64_t *offset, size_t count)
{
	if (!is_quic(in))
		return sendfile_to_quic(out, in, offset, count);
	if (offset != NULL)
		return wq_set_errno(ESPIPE);
	if (!is_pipe(out))
		return wq_set_errno(EINVAL);
	return count == 0 ? 0 : splice_from_quic(in, out, count, nonblocking(in) || nonblocking(out));
}

WQ_EXPORT ssize_t splice(int in, loff_t *off_in, int out, loff_t *off_out, size_t len, unsigned int flags)
{
	int to_quic = is_quic(out) && is_pipe(in), from_quic = !to_quic && is_quic(in) && is_pipe(out);
	if (!to_quic && !from_quic) /* no QUIC fd, or no pipe: the kernel refuses it before touching either */
		return NEXT(F_SPLICE, ssize_t (*)(int, loff_t *, int, loff_t *, size_t, unsigned int))(
			in, off_in, out, off_out, len, flags);
	if (len == 0)
		return 0;
	if (flags & ~WQ_SPLICE_FLAGS)
		return wq_set_errno(EINVAL);
	if ((to_quic ? off_in : off_out) != NULL) /* an offset on the pipe's side */
		return wq_set_errno(ESPIPE);
	if ((to_quic ? off_out : off_in) != NULL) /* an offset on the socket's side */
		return wq_set_errno(EINVAL);
	if (to_quic)
		return splice_to_quic(in, out, len, flags);
	return splice_from_quic(in, out, len, (flags & SPLICE_F_NONBLOCK) || nonblocking(out));
}

WQ_EXPORT ssize_t sendfile(int out, int in, off_t *offset, size_t count)
{
	if (!is_quic(out) && !is_quic(in))
		return NEXT(F_SENDFILE, ssize_t (*)(int, int, off_t *, size_t))(out, in, offset, count);
	int64_t o = offset != NULL ? (int64_t)*offset : 0;
	ssize_t r = quic_sendfile(out, in, offset != NULL ? &o : NULL, count);
	if (offset != NULL)
		*offset = (off_t)o;
	return r;
}

WQ_EXPORT ssize_t sendfile64(int out, int in, off64_t *offset, size_t count)
{
	if (!is_quic(out) && !is_quic(in))
		return NEXT(F_SENDFILE64, ssize_t (*)(int, int, off64_t *, size_t))(out, in, offset, count);
	int64_t o = offset != NULL ? (int64_t)*offset : 0;
	ssize_t r = quic_sendfile(out, in, offset != NULL ? &o : NULL, count);
	if (offset != NULL)
		*offset = (off64_t)o;
	return r;
}

/* ---- wirecheck's own call (not quic.ko's) -------------------------------------------------------- */
/* TLS inside the engine, as the Python client_handshake/server_handshake do: for native programs (and
 * tests) that bring no TLS library. role 0 = client, 1 = server; settings are "key=value" lines
 * (psk_file, pkey_file, cert_file, alpns, hostname, timeout). Returns 0 or -1 with errno. */
WQ_EXPORT int wirecheck_quic_handshake(int fd, int role, const char *settings)
{
	if (!is_quic(fd))
		return wq_set_errno(ENOTSOCK);
	struct wq_call c;
	wq_call_init(&c, WQD_HANDSHAKE, role, 0, 0);
	c.data = settings;
	c.req.len1 = settings ? (uint32_t)strlen(settings) : 0;
	return wq_rpc(fd, &c) < 0 ? -1 : 0;
}
