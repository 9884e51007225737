/* quic_control.c: how the preload library reaches the QUIC daemon (wrappers/quic/daemon.py).
 *
 * The daemon is named after the socket directory and the settings that shape the engine (pcap,
 * carrier, impairments, ...): processes that agree share one engine. The first process to need it
 * starts it, under a lock file in the socket directory, detached from itself (its own session, no fd
 * of ours), so the engine outlives any one program. Each thread keeps one control connection (a fork
 * child opens its own); a call made while another is in progress on the thread (a signal handler)
 * uses a fresh one. Control I/O uses raw syscalls, so neither cwrap nor our own overrides see it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
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

#include "quic_control.h"

int wq_enabled(void)
{
	const char *d = getenv("SOCKET_WRAPPER_DIR");
	return d != NULL && *d != '\0';
}

int wq_debug(void)
{
	const char *d = getenv("WIRECHECK_QUIC_DEBUG");
	return d != NULL && *d != '\0' && strcmp(d, "0") != 0;
}

uint64_t wq_fd_ino(int fd)
{
	struct stat st;
	if (syscall(SYS_fstat, fd, &st) != 0 || !S_ISSOCK(st.st_mode))
		return 0;
	return (uint64_t)st.st_ino;
}

/* ---- the daemon and this thread's control connection ------------------------------------------ */
int wq_set_errno(int e)
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
 * is one of them: one daemon per emulated host, so two hosts' engines do not share one Python process
 * (and its GIL): a native transfer between two hosts then runs as fast as one between two Python
 * processes (measured: 1.03x, against 0.46x with one daemon for the whole network). */
static const char *const engine_vars[] = {
	"SOCKET_WRAPPER_DEFAULT_IFACE", "SOCKET_WRAPPER_PCAP_FILE", "SOCKET_WRAPPER_IPV4_NETWORK",
	"WIRECHECK_QUIC_CARRIER", "WIRECHECK_IMPAIR", "WIRECHECK_IMPAIR_FILE", "WIRECHECK_QUIC_MTU",
	"QLOGDIR", "SSLKEYLOGFILE", "WIRECHECK_SMBDIRECT_RDMA", "WIRECHECK_SMBDIRECT_PCAP_RDMA", NULL,
};

static int daemon_name(char *out, size_t n)
{
	const char *dir = getenv("SOCKET_WRAPPER_DIR");
	struct stat st;
	if (dir == NULL || stat(dir, &st) != 0)
		return wq_set_errno(ENOENT);
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
		return wq_set_errno(ENAMETOOLONG);
	memcpy(sun.sun_path + 1, name, n);
	int fd = (int)syscall(SYS_socket, AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
	if (syscall(SYS_connect, fd, (struct sockaddr *)&sun, len) != 0) {
		int e = errno;
		syscall(SYS_close, fd);
		return wq_set_errno(e);
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

/* The daemon that holds an existing QUIC fd: the daemon's end of the pair is bound to
 * "\0" WQD_APP_PREFIX "<daemon name>:<n>". A process whose settings name another daemon (another host's
 * impairments, say) that receives the fd still talks to the daemon that has the socket. */
static int fd_daemon(int fd, char *out, size_t n)
{
	struct sockaddr_un sun;
	socklen_t len = sizeof(sun);
	memset(&sun, 0, sizeof(sun));
	if (syscall(SYS_getpeername, fd, (struct sockaddr *)&sun, &len) != 0 || sun.sun_family != AF_UNIX)
		return -1;
	size_t plen = strlen(WQD_APP_PREFIX), total = len - offsetof(struct sockaddr_un, sun_path);
	if (total < 1 + plen || total > sizeof(sun.sun_path) || sun.sun_path[0] != '\0' ||
	    memcmp(sun.sun_path + 1, WQD_APP_PREFIX, plen) != 0)
		return -1;
	const char *name = sun.sun_path + 1 + plen, *end = sun.sun_path + total;
	const char *colon = NULL;
	for (const char *q = name; q < end; q++)
		if (*q == ':')
			colon = q;
	if (colon == NULL || (size_t)(colon - name) >= n)
		return -1;
	memcpy(out, name, (size_t)(colon - name));
	out[colon - name] = '\0';
	return 0;
}

static int open_control(char *name, size_t n)
{
	if (daemon_name(name, n) != 0)
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
	if (fd < 0 && wq_debug())
		fprintf(stderr, "wirecheck-quic: cannot reach the QUIC daemon %s\n", name);
	return fd < 0 ? wq_set_errno(ECONNREFUSED) : fd;
}

/* This thread's control connection (to the daemon its settings name). After fork the child opens
 * its own (the parent's is shared); a call made while one is in progress on this thread (a signal
 * handler), or on an fd another daemon holds, uses a fresh one. */
static __thread int ctl_fd = -1;
static __thread pid_t ctl_pid;
static __thread uint64_t ctl_ino;
static __thread int ctl_busy;
static __thread char ctl_name[64];

static int control(int fd, int *fresh)
{
	char want[64];
	*fresh = 0;
	int have = fd >= 0 && fd_daemon(fd, want, sizeof(want)) == 0;
	int ours = ctl_fd >= 0 && wq_fd_ino(ctl_fd) == ctl_ino;
	if (have && !(ours && strcmp(want, ctl_name) == 0)) {
		char mine[64];
		if (daemon_name(mine, sizeof(mine)) != 0 || strcmp(want, mine) != 0) {
			*fresh = 1; /* another daemon's socket: no start, it is there or the socket is gone */
			int c = connect_abstract(want);
			return c >= 0 ? c : wq_set_errno(ECONNRESET);
		}
	}
	if (ctl_busy) {
		char name[64];
		*fresh = 1;
		return open_control(name, sizeof(name));
	}
	if (ours && ctl_pid == getpid())
		return ctl_fd;
	if (ours) /* the parent's connection, inherited by fork: this process talks on its own */
		syscall(SYS_close, ctl_fd);
	ctl_fd = open_control(ctl_name, sizeof(ctl_name));
	if (ctl_fd < 0)
		return -1;
	ctl_pid = getpid();
	ctl_ino = wq_fd_ino(ctl_fd);
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
			return wq_set_errno(ECONNRESET);
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


/* One request and its reply. Returns rep.ret (>= 0) or -1 with errno (the daemon's, or ECONNRESET
 * when the daemon is gone: every socket it held is gone with it). */
long wq_rpc(int fd, struct wq_call *c)
{
	int fresh;
	int ctl = control(fd, &fresh);
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
		return wq_set_errno(e == EPROTO ? EPROTO : ECONNRESET);
	}
	if (fresh)
		syscall(SYS_close, ctl);
	if (c->rep.ret < 0) {
		if (why != NULL && wq_debug())
			fprintf(stderr, "wirecheck-quic: call %u on fd %d: %s\n", c->req.op, fd, why);
		free(why);
		return wq_set_errno((int)-c->rep.ret);
	}
	free(why);
	return (long)c->rep.ret;
}

void wq_call_init(struct wq_call *c, int op, int a, int b, int cc)
{
	memset(c, 0, sizeof(*c));
	c->req.op = (uint16_t)op;
	c->req.a = a;
	c->req.b = b;
	c->req.c = cc;
	c->new_fd = -1;
}

