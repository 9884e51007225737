/* libwirecheck_quic.so: IPPROTO_QUIC sockets for native programs on wirecheck's emulated network.
 *
 * Preloaded in front of cwrap's libsocket_wrapper.so by `wirecheck exec`. It translates calls and
 * holds no socket state: every QUIC socket lives in the QUIC daemon (wrappers/quic/daemon.py), a
 * Python process per emulated network that hosts ordinary wrappers.quic QuicSocket objects, so
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
 * Off (no SOCKET_WRAPPER_DIR) the library only passes calls on. The daemon is started on demand,
 * under a lock file in the socket directory, with the Python in $WIRECHECK_PYTHON.
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
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "wirecheck_quic.h"
#include "wqd_proto.h"

/* glibc's checked variants (programs built with _FORTIFY_SOURCE call these); no public prototypes */
ssize_t __read_chk(int fd, void *buf, size_t len, size_t buflen);
ssize_t __recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags);
ssize_t __recvfrom_chk(int fd, void *buf, size_t len, size_t buflen, int flags, struct sockaddr *a, socklen_t *al);

#define IPPROTO_QUIC_ 261
#define WQ_EXPORT __attribute__((visibility("default")))

/* ---- every libc entry point this library overrides, with the reason (one table) -------------------
 * The same table resolves the next library's function (cwrap, then libc) at load time, so the list
 * cannot drift from the code; a test compares it with the library's exported symbols. */
enum {
	F_SOCKET, F_BIND, F_CONNECT, F_LISTEN, F_ACCEPT, F_ACCEPT4, F_GETSOCKNAME, F_GETPEERNAME,
	F_SETSOCKOPT, F_GETSOCKOPT, F_SENDMSG, F_SEND, F_SENDTO, F_WRITE, F_WRITEV, F_RECVMSG, F_RECV,
	F_RECVFROM, F_READ, F_READV, F_READ_CHK, F_RECV_CHK, F_RECVFROM_CHK, F_SHUTDOWN, F_CLOSE, F_DUP,
	F_DUP2, F_DUP3, F_FCNTL, F_COUNT
};
static const struct override {
	const char *name;
	const char *why;
} overrides[F_COUNT] = {
	[F_SOCKET] = {"socket", "IPPROTO_QUIC: the daemon makes the socket and hands back the app fd"},
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

static int enabled(void)
{
	const char *d = getenv("SOCKET_WRAPPER_DIR");
	return d != NULL && *d != '\0';
}

static int debug(void)
{
	const char *d = getenv("WIRECHECK_QUIC_DEBUG");
	return d != NULL && *d != '\0' && strcmp(d, "0") != 0;
}

/* ---- which fds are QUIC fds --------------------------------------------------------------------
 * The inode of each QUIC fd this process knows; 0 = not QUIC. A mark is trusted only while the fd
 * still has that inode, so an fd closed behind our back (a raw syscall) and reused is not QUIC. */
#define WQ_MAXFD 65536
static uint64_t quic_ino[WQ_MAXFD];

static uint64_t fd_ino(int fd)
{
	struct stat st;
	if (syscall(SYS_fstat, fd, &st) != 0 || !S_ISSOCK(st.st_mode))
		return 0;
	return (uint64_t)st.st_ino;
}

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
	if (fd_ino(fd) == ino)
		return 1;
	mark(fd, 0);
	return 0;
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
	mark(fd, fd_ino(fd));
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
	if (enabled())
		scan_inherited();
}

/* ---- the daemon and this thread's control connection ------------------------------------------ */
static int set_errno(int e)
{
	errno = e;
	return -1;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	const unsigned char *c = p;
	for (size_t i = 0; i < n; i++) {
		h ^= c[i];
		h *= 1099511628211ull;
	}
	return h;
}

/* The settings that shape the engine: processes that agree on them share one daemon. The interface
 * is per socket (sent with each socket()), not part of the name. */
static const char *const engine_vars[] = {
	"SOCKET_WRAPPER_PCAP_FILE", "SOCKET_WRAPPER_IPV4_NETWORK", "WIRECHECK_QUIC_CARRIER", "WIRECHECK_IMPAIR",
	"WIRECHECK_IMPAIR_FILE", "WIRECHECK_QUIC_MTU", "QLOGDIR", "SSLKEYLOGFILE", NULL,
};

static int daemon_name(char *out, size_t n)
{
	const char *dir = getenv("SOCKET_WRAPPER_DIR");
	struct stat st;
	if (dir == NULL || stat(dir, &st) != 0)
		return set_errno(ENOENT);
	uint64_t h = 1469598103934665603ull;
	h = fnv(h, &st.st_dev, sizeof(st.st_dev));
	h = fnv(h, &st.st_ino, sizeof(st.st_ino));
	for (int i = 0; engine_vars[i] != NULL; i++) {
		const char *v = getenv(engine_vars[i]);
		h = fnv(h, engine_vars[i], strlen(engine_vars[i]));
		if (v != NULL)
			h = fnv(h, v, strlen(v) + 1);
	}
	snprintf(out, n, "wirecheck-quicd:%016llx", (unsigned long long)h);
	return 0;
}

static int connect_abstract(const char *name)
{
	struct sockaddr_un sun;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	size_t n = strlen(name);
	if (n + 1 > sizeof(sun.sun_path))
		return set_errno(ENAMETOOLONG);
	memcpy(sun.sun_path + 1, name, n);
	int fd = (int)syscall(SYS_socket, AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
	if (syscall(SYS_connect, fd, (struct sockaddr *)&sun, len) != 0) {
		int e = errno;
		syscall(SYS_close, fd);
		return set_errno(e);
	}
	return fd;
}

extern char **environ;

/* Start the daemon, detached (its own session, not our child: a program that reaps every child or
 * dies does not take the engine with it), with no fd of ours but a log file. */
static void spawn_daemon(const char *name)
{
	const char *py = getenv("WIRECHECK_PYTHON");
	if (py == NULL || *py == '\0')
		py = "python3";
	const char *dir = getenv("SOCKET_WRAPPER_DIR");
	char logpath[PATH_MAX];
	snprintf(logpath, sizeof(logpath), "%s/.quicd.log", dir);
	size_t n = 0;
	while (environ[n] != NULL)
		n++;
	char **env = calloc(n + 2, sizeof(char *));
	if (env == NULL)
		return;
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (strncmp(environ[i], "LD_PRELOAD=", 11) != 0 && strncmp(environ[i], "WIRECHECK_QUICD=", 16) != 0)
			env[k++] = environ[i];
	env[k++] = (char *)"WIRECHECK_QUICD=1";
	env[k] = NULL;
	pid_t pid = fork();
	if (pid == 0) {
		char *argv[] = {(char *)py, (char *)"-m", (char *)"wrappers.quic.daemon", (char *)name, NULL};
		if (fork() != 0)
			_exit(0);
		setsid();
		int nul = open("/dev/null", O_RDONLY);
		int log = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (nul >= 0)
			dup2(nul, 0);
		if (log >= 0) {
			dup2(log, 1);
			dup2(log, 2);
		}
		syscall(SYS_close_range, 3, ~0u, 0);
		execvpe(py, argv, env);
		_exit(127);
	}
	if (pid > 0)
		waitpid(pid, NULL, 0);
	free(env);
}

static int open_control(void)
{
	char name[64];
	if (daemon_name(name, sizeof(name)) != 0)
		return -1;
	int fd = connect_abstract(name);
	if (fd >= 0)
		return fd;
	char lockpath[PATH_MAX];
	snprintf(lockpath, sizeof(lockpath), "%s/.quicd.lock", getenv("SOCKET_WRAPPER_DIR"));
	int lock = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lock >= 0)
		flock(lock, LOCK_EX);
	fd = connect_abstract(name);
	if (fd < 0) {
		spawn_daemon(name);
		for (int i = 0; i < 1000 && fd < 0; i++) { /* up to 20 s: Python starting on a loaded machine */
			struct timespec ts = {0, 20 * 1000 * 1000};
			nanosleep(&ts, NULL);
			fd = connect_abstract(name);
		}
	}
	if (lock >= 0)
		close(lock); /* our close(): not a QUIC fd, passes on */
	if (fd < 0 && debug())
		fprintf(stderr, "wirecheck-quic: cannot reach the QUIC daemon %s\n", name);
	return fd < 0 ? set_errno(ECONNREFUSED) : fd;
}

/* This thread's control connection. After fork the child opens its own (the parent's is shared);
 * a call made while one is in progress on this thread (a signal handler) uses a fresh one. */
static __thread int ctl_fd = -1;
static __thread pid_t ctl_pid;
static __thread uint64_t ctl_ino;
static __thread int ctl_busy;

static int control(int *fresh)
{
	*fresh = 0;
	if (ctl_busy) {
		*fresh = 1;
		return open_control();
	}
	int ours = ctl_fd >= 0 && fd_ino(ctl_fd) == ctl_ino;
	if (ours && ctl_pid == getpid())
		return ctl_fd;
	if (ours) /* the parent's connection, inherited by fork: this process talks on its own */
		syscall(SYS_close, ctl_fd);
	ctl_fd = open_control();
	if (ctl_fd < 0)
		return -1;
	ctl_pid = getpid();
	ctl_ino = fd_ino(ctl_fd);
	return ctl_fd;
}

static void control_broken(int fd, int fresh)
{
	syscall(SYS_close, fd);
	if (!fresh)
		ctl_fd = -1;
}

static int write_all(int fd, struct iovec *iov, int iovcnt, int pass_fd)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct msghdr m;
	memset(&m, 0, sizeof(m));
	m.msg_iov = iov;
	m.msg_iovlen = (size_t)iovcnt;
	if (pass_fd >= 0) {
		memset(cbuf, 0, sizeof(cbuf));
		m.msg_control = cbuf;
		m.msg_controllen = sizeof(cbuf);
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
	}
	while (m.msg_iovlen > 0) {
		ssize_t r = syscall(SYS_sendmsg, fd, &m, MSG_NOSIGNAL);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		m.msg_control = NULL;
		m.msg_controllen = 0;
		size_t left = (size_t)r;
		while (m.msg_iovlen > 0 && left >= m.msg_iov[0].iov_len) {
			left -= m.msg_iov[0].iov_len;
			m.msg_iov++;
			m.msg_iovlen--;
		}
		if (m.msg_iovlen > 0) {
			m.msg_iov[0].iov_base = (char *)m.msg_iov[0].iov_base + left;
			m.msg_iov[0].iov_len -= left;
		}
	}
	return 0;
}

static int read_exact(int fd, void *buf, size_t n, int *got_fd)
{
	size_t off = 0;
	while (off < n) {
		char cbuf[CMSG_SPACE(sizeof(int) * 4)];
		struct iovec iov = {(char *)buf + off, n - off};
		struct msghdr m;
		memset(&m, 0, sizeof(m));
		m.msg_iov = &iov;
		m.msg_iovlen = 1;
		m.msg_control = cbuf;
		m.msg_controllen = sizeof(cbuf);
		ssize_t r = syscall(SYS_recvmsg, fd, &m, MSG_CMSG_CLOEXEC);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (r == 0)
			return set_errno(ECONNRESET);
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c != NULL; c = CMSG_NXTHDR(&m, c)) {
			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (size_t i = 0; i < k; i++) {
				int f;
				memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
				if (got_fd != NULL && *got_fd < 0)
					*got_fd = f;
				else
					syscall(SYS_close, f);
			}
		}
		off += (size_t)r;
	}
	return 0;
}

struct call {
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

/* One request and its reply. Returns rep.ret (>= 0) or -1 with errno (the daemon's, or ECONNRESET
 * when the daemon is gone: every socket it held is gone with it). */
static long rpc(int fd, struct call *c)
{
	int fresh;
	int ctl = control(&fresh);
	c->new_fd = -1;
	if (ctl < 0)
		return -1;
	c->req.magic = WQD_MAGIC;
	struct iovec iov[3] = {
		{&c->req, sizeof(c->req)},
		{(void *)c->data, c->req.len1},
		{(void *)c->anc, c->req.len2},
	};
	ctl_busy++;
	int ok = write_all(ctl, iov, 3, fd) == 0 && read_exact(ctl, &c->rep, sizeof(c->rep), &c->new_fd) == 0;
	char *why = NULL;
	if (ok) {
		size_t n1 = c->rep.len1, n2 = c->rep.len2;
		if (c->rep.ret < 0 && n1 > 0) { /* the daemon's reason, as text */
			why = calloc(1, n1 + 1);
			ok = why != NULL && read_exact(ctl, why, n1, NULL) == 0;
			n1 = 0;
		}
		if (ok && (n1 > c->out_cap || n2 > c->anc_cap)) {
			errno = EPROTO;
			ok = 0;
		}
		if (ok && n1 > 0)
			ok = read_exact(ctl, c->out, n1, NULL) == 0;
		if (ok && n2 > 0)
			ok = read_exact(ctl, c->anc_out, n2, NULL) == 0;
	}
	ctl_busy--;
	if (!ok) {
		int e = errno;
		control_broken(ctl, fresh);
		if (c->new_fd >= 0)
			syscall(SYS_close, c->new_fd);
		c->new_fd = -1;
		free(why);
		return set_errno(e == EPROTO ? EPROTO : ECONNRESET);
	}
	if (fresh)
		syscall(SYS_close, ctl);
	if (c->rep.ret < 0) {
		if (why != NULL && debug())
			fprintf(stderr, "wirecheck-quic: call %u on fd %d: %s\n", c->req.op, fd, why);
		free(why);
		return set_errno((int)-c->rep.ret);
	}
	free(why);
	return (long)c->rep.ret;
}

static void call_init(struct call *c, int op, int a, int b, int cc)
{
	memset(c, 0, sizeof(*c));
	c->req.op = (uint16_t)op;
	c->req.a = a;
	c->req.b = b;
	c->req.c = cc;
	c->new_fd = -1;
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
	return r == 0 ? set_errno(EAGAIN) : -1;
}

static int adopt_new_fd(int fd, int flags)
{
	if (fd < 0)
		return set_errno(EPROTO);
	if (!(flags & SOCK_CLOEXEC))
		syscall(SYS_fcntl, fd, F_SETFD, 0);
	if (flags & SOCK_NONBLOCK)
		syscall(SYS_fcntl, fd, F_SETFL, O_NONBLOCK | (int)syscall(SYS_fcntl, fd, F_GETFL));
	mark(fd, fd_ino(fd));
	return fd;
}

/* ---- the overrides -------------------------------------------------------------------------------- */
WQ_EXPORT int socket(int domain, int type, int protocol)
{
	if (protocol != IPPROTO_QUIC_ || !enabled())
		return NEXT(F_SOCKET, int (*)(int, int, int))(domain, type, protocol);
	char env[64];
	const char *iface = getenv("SOCKET_WRAPPER_DEFAULT_IFACE");
	int n = snprintf(env, sizeof(env), "SOCKET_WRAPPER_DEFAULT_IFACE=%s", iface ? iface : "");
	struct call c;
	call_init(&c, WQD_SOCKET, domain, type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC), protocol);
	c.data = env;
	c.req.len1 = (uint32_t)n + 1;
	if (rpc(-1, &c) < 0)
		return -1;
	return adopt_new_fd(c.new_fd, type);
}

static int addr_call(int op, int fd, const struct sockaddr *addr, socklen_t len)
{
	if (addr == NULL)
		return set_errno(EFAULT);
	struct call c;
	call_init(&c, op, 0, 0, 0);
	c.data = addr;
	c.req.len1 = len > 128 ? 128 : len;
	return rpc(fd, &c) < 0 ? -1 : 0;
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
	struct call c;
	call_init(&c, WQD_LISTEN, backlog, 0, 0);
	return rpc(fd, &c) < 0 ? -1 : 0;
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
		return set_errno(EINVAL);
	unsigned char sa[128];
	for (;;) {
		struct call c;
		call_init(&c, WQD_ACCEPT, 0, 0, 0);
		c.out = sa;
		c.out_cap = sizeof(sa);
		if (rpc(fd, &c) >= 0) {
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
		return set_errno(EFAULT);
	unsigned char sa[128];
	struct call c;
	call_init(&c, op, 0, 0, 0);
	c.out = sa;
	c.out_cap = sizeof(sa);
	if (rpc(fd, &c) < 0)
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
		return set_errno(EINVAL); /* quic.ko: optlen > 4096 is EINVAL; larger ones we cannot carry */
	struct call c;
	call_init(&c, WQD_SETSOCKOPT, level, name, val == NULL);
	c.data = val;
	c.req.len1 = val == NULL ? 0 : len;
	return rpc(fd, &c) < 0 ? -1 : 0;
}

WQ_EXPORT int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
	if (!is_quic(fd))
		return NEXT(F_GETSOCKOPT, int (*)(int, int, int, void *, socklen_t *))(fd, level, name, val, len);
	if (len == NULL)
		return set_errno(EFAULT);
	socklen_t n = *len > OPT_MAX ? OPT_MAX : *len;
	if (val == NULL)
		n = 0;
	struct call c;
	call_init(&c, WQD_GETSOCKOPT, level, name, (int)n);
	c.data = val; /* some options read an input struct from the buffer (EVENT, STREAM_OPEN, ...) */
	c.req.len1 = n;
	c.out = val;
	c.out_cap = n;
	if (rpc(fd, &c) < 0)
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
		return set_errno(EINVAL);
	unsigned char *buf = malloc(m->msg_controllen + sizeof(struct wqd_anc));
	if (buf == NULL)
		return set_errno(ENOMEM);
	size_t off = 0;
	const unsigned char *p = m->msg_control, *end = p + m->msg_controllen;
	while ((size_t)(end - p) >= sizeof(struct cmsghdr)) {
		struct cmsghdr h;
		memcpy(&h, p, sizeof(h));
		if (h.cmsg_len < CMSG_LEN(0) || h.cmsg_len > (size_t)(end - p)) {
			free(buf);
			return set_errno(EINVAL); /* quic.ko: a malformed cmsg is EINVAL */
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
			return set_errno(EMSGSIZE);
		total += iov[i].iov_len;
	}
	unsigned char *data = malloc(total ? total : 1);
	if (data == NULL)
		return set_errno(ENOMEM);
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
	struct call c;
	call_init(&c, WQD_SENDMSG, flags, 0, 0);
	c.data = data;
	c.req.len1 = (uint32_t)total;
	c.anc = anc;
	c.req.len2 = anclen;
	long r = rpc(fd, &c);
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
		return set_errno(ENOMEM);
	int nb = (flags & MSG_DONTWAIT) || nonblocking(fd);
	for (;;) {
		struct call c;
		call_init(&c, WQD_RECVMSG, flags & ~MSG_DONTWAIT, (int)total, (int)(room > 1024 ? 1024 : room));
		c.out = buf;
		c.out_cap = total;
		c.anc_out = ancbuf;
		c.anc_cap = sizeof(ancbuf);
		long r = rpc(fd, &c);
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
			return set_errno(e);
		}
	}
}

WQ_EXPORT ssize_t sendmsg(int fd, const struct msghdr *m, int flags)
{
	if (!is_quic(fd))
		return NEXT(F_SENDMSG, ssize_t (*)(int, const struct msghdr *, int))(fd, m, flags);
	if (m == NULL)
		return set_errno(EFAULT);
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
		return set_errno(EINVAL);
	return quic_send(fd, iov, (size_t)cnt, NULL, 0);
}

/* fds received on an ordinary socket may be QUIC fds passed by another process. */
static void recognise_passed(struct msghdr *m)
{
	if (m->msg_control == NULL || !enabled())
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
		return set_errno(EFAULT);
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
		return set_errno(EINVAL);
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
	struct call c;
	call_init(&c, WQD_SHUTDOWN, how, 0, 0);
	return rpc(fd, &c) < 0 ? -1 : 0;
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

/* ---- wirecheck's own call (not quic.ko's) -------------------------------------------------------- */
/* TLS inside the engine, as the Python client_handshake/server_handshake do: for native programs (and
 * tests) that bring no TLS library. role 0 = client, 1 = server; settings are "key=value" lines
 * (psk_file, pkey_file, cert_file, alpns, hostname, timeout). Returns 0 or -1 with errno. */
WQ_EXPORT int wirecheck_quic_handshake(int fd, int role, const char *settings)
{
	if (!is_quic(fd))
		return set_errno(ENOTSOCK);
	struct call c;
	call_init(&c, WQD_HANDSHAKE, role, 0, 0);
	c.data = settings;
	c.req.len1 = settings ? (uint32_t)strlen(settings) : 0;
	return rpc(fd, &c) < 0 ? -1 : 0;
}
