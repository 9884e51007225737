/* qtest: a native IPPROTO_QUIC program for tests/native, run under `wirecheck exec` with
 * libwirecheck_quic.so preloaded. Plain quic.ko calls (socket, bind, listen, sendmsg with
 * STREAM_INFO, ...); the handshake is the engine's (wirecheck_quic_handshake) until a TLS library
 * drives the raw interface. Each mode prints what the test checks and exits 0, or 1 with "FAIL: ...".
 *
 *   qtest errnos                              socket/bind/listen/getsockname/sockopt errno cases
 *   qtest server HOST PORT PSK [MODE]         accept one client, handshake, echo one message
 *                                             upper-cased; MODE: plain | fork | dup | pass | epoll
 *   qtest client HOST PORT PSK MSG            connect, handshake, send MSG with FIN, print the reply
 *   qtest sink HOST PORT PSK                  accept, receive one stream to its FIN; print bytes + sha256
 *   qtest source HOST PORT PSK NBYTES         connect, send NBYTES in 64 KiB writes with FIN; print sha256
 *   qtest sink-connect / source-listen ...    the same, the other way round (the server sends)
 *   qtest idle HOST PORT PSK MSG              connect with a 3 s idle timeout and a 1.5 s keepalive,
 *                                             print "connected", wait for a line on stdin, then as client
 *   qtest accept-loop HOST PORT PSK N         accept and handshake N clients, one after the other, each until it closes
 *   qtest handshakes HOST PORT PSK N          N connections (socket, connect, handshake, close); print the rate
 *   qtest mmsg-server HOST PORT PSK           accept one client; FIONREAD until its three one-stream
 *                                             messages are queued, take them with one recvmmsg; answer
 *   qtest mmsg-client HOST PORT PSK           connect; sendmmsg three messages on streams 0, 4, 8 (FIN);
 *                                             read the answer; SIOCOUTQ, FIONREAD on a listener
 *   qtest garbage HOST PORT PSK               connect, then write bytes into the fd behind the library's
 *                                             back (a raw write(2)); print what the next calls get
 *   qtest splice-client HOST PORT PSK FILE    (peer: pyquic_peer.py splice-sink) splice/sendfile/tee
 *                                             errnos; a non-blocking splice into a
 *                                             stream whose flow control is full; pipe -> QUIC splices
 *                                             (a child writing the pipe), sendfile of FILE with and
 *                                             without an offset, FIN: print "sent N sha256"; then the
 *                                             answer spliced QUIC -> pipe in pieces
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/quic.h>

#ifndef IPPROTO_QUIC
#define IPPROTO_QUIC 261
#endif
#ifndef SOL_QUIC
#define SOL_QUIC 288
#endif

static int failures;

static void check(int ok, const char *what)
{
	if (ok) {
		printf("ok %s\n", what);
	} else {
		printf("FAIL: %s (errno %d %s)\n", what, errno, strerror(errno));
		failures++;
	}
	fflush(stdout);
}

static void die(const char *what)
{
	printf("FAIL: %s (errno %d %s)\n", what, errno, strerror(errno));
	fflush(stdout);
	exit(1);
}

/* -1 with errno e? */
static int fails_with(int r, int e)
{
	return r == -1 && errno == e;
}

static int handshake(int fd, int role, const char *psk)
{
	int (*hs)(int, int, const char *) = (int (*)(int, int, const char *))dlsym(RTLD_DEFAULT, "wirecheck_quic_handshake");
	if (hs == NULL) {
		errno = ENOSYS;
		return -1;
	}
	char settings[512];
	snprintf(settings, sizeof(settings), "%s=%s\ntimeout=30\nalpns=smb\n", role ? "pkey_file" : "psk_file", psk);
	return hs(fd, role, settings);
}

static struct sockaddr_in addr_of(const char *host, const char *port)
{
	struct sockaddr_in a;
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)atoi(port));
	if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
		die("address");
	return a;
}

static ssize_t send_stream(int fd, const void *buf, size_t len, int64_t sid, uint32_t flags)
{
	char cbuf[CMSG_SPACE(sizeof(struct quic_stream_info))];
	struct iovec iov = {(void *)buf, len};
	struct msghdr m;
	memset(&m, 0, sizeof(m));
	memset(cbuf, 0, sizeof(cbuf));
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	m.msg_control = cbuf;
	m.msg_controllen = sizeof(cbuf);
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	c->cmsg_level = SOL_QUIC;
	c->cmsg_type = QUIC_STREAM_INFO;
	c->cmsg_len = CMSG_LEN(sizeof(struct quic_stream_info));
	struct quic_stream_info info = {.stream_id = sid, .stream_flags = flags};
	memcpy(CMSG_DATA(c), &info, sizeof(info));
	return sendmsg(fd, &m, 0);
}

static ssize_t recv_stream(int fd, void *buf, size_t len, int64_t *sid, uint32_t *flags)
{
	char cbuf[CMSG_SPACE(sizeof(struct quic_stream_info))];
	struct iovec iov = {buf, len};
	struct msghdr m;
	memset(&m, 0, sizeof(m));
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	m.msg_control = cbuf;
	m.msg_controllen = sizeof(cbuf);
	ssize_t r = recvmsg(fd, &m, 0);
	if (r < 0)
		return r;
	*flags = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c != NULL; c = CMSG_NXTHDR(&m, c)) {
		if (c->cmsg_level == SOL_QUIC && c->cmsg_type == QUIC_STREAM_INFO) {
			struct quic_stream_info info;
			memcpy(&info, CMSG_DATA(c), sizeof(info));
			*sid = info.stream_id;
			*flags = info.stream_flags;
		}
	}
	if (m.msg_flags & MSG_QUIC_NOTIFICATION)
		*flags |= 0x80000000u;
	return r;
}

/* ---- errnos ---- */
static int mode_errnos(void)
{
	check(fails_with(socket(AF_INET, SOCK_SEQPACKET, IPPROTO_QUIC), EPROTONOSUPPORT), "socket SOCK_SEQPACKET -> EPROTONOSUPPORT");
	check(fails_with(socket(AF_UNIX, SOCK_DGRAM, IPPROTO_QUIC), EAFNOSUPPORT), "socket AF_UNIX -> EAFNOSUPPORT");
	int fd = socket(AF_INET, SOCK_DGRAM, IPPROTO_QUIC);
	check(fd >= 0, "socket AF_INET SOCK_DGRAM IPPROTO_QUIC");
	int v = 0;
	socklen_t vl = sizeof(v);
	check(getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &v, &vl) == 0 && v == IPPROTO_QUIC, "SO_PROTOCOL is IPPROTO_QUIC");
	vl = sizeof(v);
	check(getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &vl) == 0 && v == SOCK_DGRAM, "SO_TYPE is SOCK_DGRAM");
	check(fails_with(setsockopt(fd, SOL_QUIC, 99, &v, sizeof(v)), ENOPROTOOPT), "setsockopt unknown option -> ENOPROTOOPT");
	vl = sizeof(v);
	check(fails_with(getsockopt(fd, SOL_QUIC, QUIC_SOCKOPT_KEY_UPDATE, &v, &vl), ENOPROTOOPT), "getsockopt set-only KEY_UPDATE -> ENOPROTOOPT");
	struct quic_event_option ev = {.type = 0, .on = 1};
	check(fails_with(setsockopt(fd, SOL_QUIC, QUIC_SOCKOPT_EVENT, &ev, sizeof(ev)), EINVAL), "EVENT type 0 -> EINVAL");
	ev.type = QUIC_EVENT_STREAM_UPDATE;
	check(setsockopt(fd, SOL_QUIC, QUIC_SOCKOPT_EVENT, &ev, sizeof(ev)) == 0, "EVENT STREAM_UPDATE on");
	struct quic_event_option got = {.type = QUIC_EVENT_STREAM_UPDATE, .on = 0};
	vl = sizeof(got);
	check(getsockopt(fd, SOL_QUIC, QUIC_SOCKOPT_EVENT, &got, &vl) == 0 && got.on == 1 && vl == sizeof(got),
	      "getsockopt EVENT reads its input struct (type) and returns on=1");
	struct quic_transport_param tp;
	memset(&tp, 0, sizeof(tp));
	tp.max_idle_timeout = 999;
	check(fails_with(setsockopt(fd, SOL_QUIC, QUIC_SOCKOPT_TRANSPORT_PARAM, &tp, sizeof(tp)), EINVAL), "TRANSPORT_PARAM idle 999 us -> EINVAL");
	char big[5000];
	memset(big, 'a', sizeof(big));
	check(fails_with(setsockopt(fd, SOL_QUIC, QUIC_SOCKOPT_ALPN, big, sizeof(big)), EINVAL), "optlen > 4096 -> EINVAL");
	check(setsockopt(fd, SOL_QUIC, QUIC_SOCKOPT_ALPN, "smb, h3", 7) == 0, "ALPN set");
	char alpn[64];
	vl = sizeof(alpn);
	check(getsockopt(fd, SOL_QUIC, QUIC_SOCKOPT_ALPN, alpn, &vl) == 0 && vl == 6 && memcmp(alpn, "smb,h3", 6) == 0, "ALPN get smb,h3");
	vl = 2;
	check(fails_with(getsockopt(fd, SOL_QUIC, QUIC_SOCKOPT_ALPN, alpn, &vl), EINVAL), "ALPN get into 2 bytes -> EINVAL");
	check(fails_with(send(fd, "x", 1, 0), EPIPE), "send on a CLOSED socket -> EPIPE");
	check(fails_with(send(fd, "x", 1, MSG_EOR | MSG_NOSIGNAL), EINVAL), "send with MSG_EOR -> EINVAL");
	char b[8];
	check(fails_with(recv(fd, b, sizeof(b), MSG_DONTWAIT), ENOTCONN), "recv on a CLOSED socket -> ENOTCONN");
	struct sockaddr_in a = addr_of("127.0.0.11", "0");
	check(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0, "bind 127.0.0.11:0");
	check(fails_with(bind(fd, (struct sockaddr *)&a, sizeof(a)), EINVAL), "bind twice -> EINVAL");
	check(fails_with(accept(fd, NULL, NULL), EINVAL), "accept on a non-listener -> EINVAL");
	check(listen(fd, 8) == 0, "listen");
	struct sockaddr_in n;
	socklen_t nl = sizeof(n);
	check(getsockname(fd, (struct sockaddr *)&n, &nl) == 0 && n.sin_family == AF_INET && ntohs(n.sin_port) != 0 &&
	      n.sin_addr.s_addr == a.sin_addr.s_addr, "getsockname after listen: 127.0.0.11, a port");
	check(fails_with(setsockopt(fd, SOL_QUIC, QUIC_SOCKOPT_ALPN, "smb", 3), EINVAL), "ALPN on a listener -> EINVAL");
	check(fails_with(recv(fd, b, sizeof(b), 0), ENOTCONN), "recv on a listener -> ENOTCONN");
	int fl = fcntl(fd, F_GETFL);
	fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	check(fails_with(accept(fd, NULL, NULL), EAGAIN), "non-blocking accept, empty queue -> EAGAIN");
	struct pollfd p = {fd, POLLIN, 0};
	check(poll(&p, 1, 0) == 0, "listener with no client is not readable");
	nl = sizeof(n);
	check(fails_with(getpeername(fd, (struct sockaddr *)&n, &nl), ENOTCONN), "getpeername on a listener -> ENOTCONN");
	check(listen(fd, 0) == 0, "listen(0) stops listening");
	check(fails_with(listen(fd, 0), EINVAL), "listen(0) when not listening -> EINVAL");
	close(fd);
	int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_QUIC);
	check(c >= 0 && (fcntl(c, F_GETFL) & O_NONBLOCK) && (fcntl(c, F_GETFD) & FD_CLOEXEC), "SOCK_NONBLOCK|SOCK_CLOEXEC");
	struct sockaddr_in any = addr_of("0.0.0.0", "443");
	check(fails_with(connect(c, (struct sockaddr *)&any, sizeof(any)), EINVAL), "connect to a wildcard -> EINVAL");
	struct sockaddr un = {.sa_family = AF_UNSPEC};
	check(fails_with(connect(c, &un, sizeof(un)), EOPNOTSUPP), "connect AF_UNSPEC -> EOPNOTSUPP");
	check(fails_with(connect(c, (struct sockaddr *)&any, 4), EINVAL), "connect with a short address -> EINVAL");
	close(c);
	/* not a QUIC socket: cwrap's, untouched */
	int u = socket(AF_INET, SOCK_DGRAM, 0);
	vl = sizeof(v);
	check(u >= 0 && getsockopt(u, SOL_SOCKET, SO_TYPE, &v, &vl) == 0 && v == SOCK_DGRAM && send(u, "x", 1, 0) == -1 && errno != EPIPE, "a UDP socket stays cwrap's (no QUIC errno)");
	close(u);
	return failures ? 1 : 0;
}

/* ---- server / client ---- */
static int accept_one(const char *host, const char *port, const char *psk, int *lfd)
{
	int fd = socket(AF_INET, SOCK_DGRAM, IPPROTO_QUIC);
	if (fd < 0)
		die("socket");
	struct sockaddr_in a = addr_of(host, port);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) || setsockopt(fd, SOL_QUIC, QUIC_SOCKOPT_ALPN, "smb", 3) ||
	    listen(fd, 8))
		die("bind/listen");
	printf("ready\n");
	fflush(stdout);
	int c = accept(fd, NULL, NULL);
	if (c < 0)
		die("accept");
	(void)psk;
	*lfd = fd;
	return c;
}

static void echo_one(int c)
{
	char buf[4096];
	int64_t sid = -1;
	uint32_t flags = 0;
	ssize_t n;
	do {
		n = recv_stream(c, buf, sizeof(buf), &sid, &flags);
	} while (n >= 0 && (flags & 0x80000000u));
	if (n < 0)
		die("recv");
	for (ssize_t i = 0; i < n; i++)
		if (buf[i] >= 'a' && buf[i] <= 'z')
			buf[i] = (char)(buf[i] - 32);
	if (send_stream(c, buf, (size_t)n, sid, MSG_QUIC_STREAM_FIN) != n)
		die("send");
	printf("echoed %zd bytes on stream %lld pid %d\n", n, (long long)sid, (int)getpid());
	fflush(stdout);
	char tail[16]; /* until the client closes */
	while (recv(c, tail, sizeof(tail), 0) >= 0)
		;
	printf("closed: errno %d\n", errno);
	fflush(stdout);
}

static int send_fd(int via, int fd)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	char one = 'f';
	struct iovec iov = {&one, 1};
	struct msghdr m;
	memset(&m, 0, sizeof(m));
	memset(cbuf, 0, sizeof(cbuf));
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	m.msg_control = cbuf;
	m.msg_controllen = sizeof(cbuf);
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	return sendmsg(via, &m, 0) == 1 ? 0 : -1;
}

static int recv_fd(int via)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	char one;
	struct iovec iov = {&one, 1};
	struct msghdr m;
	memset(&m, 0, sizeof(m));
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	m.msg_control = cbuf;
	m.msg_controllen = sizeof(cbuf);
	if (recvmsg(via, &m, 0) != 1)
		return -1;
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	if (c == NULL || c->cmsg_type != SCM_RIGHTS)
		return -1;
	int fd;
	memcpy(&fd, CMSG_DATA(c), sizeof(int));
	return fd;
}

static int mode_server(const char *host, const char *port, const char *psk, const char *mode)
{
	int via[2] = {-1, -1};
	pid_t kid = -1;
	if (strcmp(mode, "pass") == 0) { /* the receiver exists before the QUIC fd does */
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, via))
			die("socketpair");
		kid = fork();
		if (kid == 0) {
			close(via[0]);
			/* other settings name another daemon for this process: calls on the passed fd must
			 * still reach the daemon that holds its socket */
			setenv("WIRECHECK_QUIC_MTU", "1300", 1);
			int fd = recv_fd(via[1]);
			if (fd < 0)
				die("recv_fd");
			int v = 0;
			socklen_t vl = sizeof(v);
			if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &v, &vl) || v != IPPROTO_QUIC)
				die("the passed fd is not a QUIC socket in the receiver");
			echo_one(fd);
			_exit(0);
		}
		close(via[1]);
	}
	int lfd;
	int c = accept_one(host, port, psk, &lfd);
	if (handshake(c, 1, psk))
		die("server handshake");
	printf("handshake done\n");
	fflush(stdout);
	if (strcmp(mode, "fork") == 0) {
		pid_t p = fork();
		if (p == 0) {
			close(lfd);
			echo_one(c);
			_exit(0);
		}
		close(c);
		int st;
		waitpid(p, &st, 0);
		return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
	}
	if (strcmp(mode, "dup") == 0) {
		int d = dup(c);
		int d2 = fcntl(d, F_DUPFD_CLOEXEC, 100);
		close(c);
		close(d);
		if (d2 < 100)
			die("F_DUPFD_CLOEXEC");
		echo_one(d2);
		return 0;
	}
	if (strcmp(mode, "pass") == 0) {
		if (send_fd(via[0], c))
			die("send_fd");
		close(c);
		int st;
		waitpid(kid, &st, 0);
		return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
	}
	if (strcmp(mode, "epoll") == 0) {
		for (int et = 0; et < 2; et++) {
			int ep = epoll_create1(0);
			struct epoll_event e = {.events = EPOLLIN | (et ? EPOLLET : 0), .data.fd = c};
			epoll_ctl(ep, EPOLL_CTL_ADD, c, &e);
			struct epoll_event out[4];
			if (et == 0) {
				check(epoll_wait(ep, out, 4, 0) == 0, "LT: nothing queued -> no event");
				printf("go\n"); /* the test tells the client to send now */
				fflush(stdout);
				check(epoll_wait(ep, out, 4, 10000) == 1 && (out[0].events & EPOLLIN), "LT: data -> EPOLLIN");
				check(epoll_wait(ep, out, 4, 0) == 1, "LT: still queued -> EPOLLIN again");
				char buf[16];
				int64_t sid;
				uint32_t fl;
				ssize_t n = recv_stream(c, buf, 4, &sid, &fl); /* a partial read leaves the rest queued */
				check(n == 4, "partial read of 4 bytes");
				check(epoll_wait(ep, out, 4, 0) == 1, "LT: rest still queued -> EPOLLIN");
				n = recv_stream(c, buf, sizeof(buf), &sid, &fl);
				check(n > 0, "read the rest");
				check(epoll_wait(ep, out, 4, 0) == 0, "LT: queue empty -> no event (a recv would block)");
				check(fails_with(recv(c, buf, sizeof(buf), MSG_DONTWAIT), EAGAIN), "recv MSG_DONTWAIT -> EAGAIN");
			} else {
				check(epoll_wait(ep, out, 4, 0) == 0, "ET: nothing queued -> no event");
				printf("go\n");
				fflush(stdout);
				check(epoll_wait(ep, out, 4, 10000) == 1, "ET: data -> one event");
				check(epoll_wait(ep, out, 4, 0) == 0, "ET: no new arrival -> no second event");
				char buf[64];
				int64_t sid;
				uint32_t fl;
				check(recv_stream(c, buf, sizeof(buf), &sid, &fl) > 0, "ET: read it");
			}
			close(ep);
		}
		return failures ? 1 : 0;
	}
	echo_one(c);
	return 0;
}

static int connect_one(const char *host, const char *port, const char *psk)
{
	int fd = socket(AF_INET, SOCK_DGRAM, IPPROTO_QUIC);
	if (fd < 0)
		die("socket");
	struct sockaddr_in a = addr_of(host, port);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)))
		die("connect");
	if (handshake(fd, 0, psk))
		die("client handshake");
	return fd;
}

static int mode_client(const char *host, const char *port, const char *psk, const char *msg)
{
	int fd = connect_one(host, port, psk);
	if (send_stream(fd, msg, strlen(msg), -1, MSG_QUIC_STREAM_NEW | MSG_QUIC_STREAM_FIN) != (ssize_t)strlen(msg))
		die("send");
	char buf[4096];
	int64_t sid;
	uint32_t flags;
	ssize_t n = recv_stream(fd, buf, sizeof(buf) - 1, &sid, &flags);
	if (n < 0)
		die("recv");
	buf[n] = 0;
	printf("%s\n", buf);
	close(fd);
	return 0;
}

static void hex(const unsigned char *d, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", d[i]);
}

/* The end of a bulk transfer: the listening side (accept + server handshake) or the connecting one. */
static int bulk_end(const char *host, const char *port, const char *psk, int listening)
{
	if (!listening)
		return connect_one(host, port, psk);
	int lfd;
	int c = accept_one(host, port, psk, &lfd);
	if (handshake(c, 1, psk))
		die("server handshake");
	return c;
}

static int mode_sink(const char *host, const char *port, const char *psk, int listening)
{
	int c = bulk_end(host, port, psk, listening);
	gnutls_hash_hd_t h;
	gnutls_hash_init(&h, GNUTLS_DIG_SHA256);
	static char buf[1 << 20];
	unsigned long long total = 0;
	for (;;) {
		int64_t sid;
		uint32_t flags;
		ssize_t n = recv_stream(c, buf, sizeof(buf), &sid, &flags);
		if (n < 0)
			die("recv");
		if (flags & 0x80000000u)
			continue;
		gnutls_hash(h, buf, (size_t)n);
		total += (unsigned long long)n;
		if (flags & MSG_QUIC_STREAM_FIN)
			break;
	}
	unsigned char d[32];
	char hx[65];
	gnutls_hash_deinit(h, d);
	hex(d, 32, hx);
	printf("received %llu %s\n", total, hx);
	fflush(stdout);
	send_stream(c, "k", 1, listening ? 1 : 0, MSG_QUIC_STREAM_NEW | MSG_QUIC_STREAM_FIN);
	char tail[16];
	while (recv(c, tail, sizeof(tail), 0) >= 0)
		;
	return 0;
}

static int mode_source(const char *host, const char *port, const char *psk, const char *nbytes, int listening)
{
	int fd = bulk_end(host, port, psk, listening);
	unsigned long long want = strtoull(nbytes, NULL, 10), sent = 0;
	static char buf[65536];
	gnutls_hash_hd_t h;
	gnutls_hash_init(&h, GNUTLS_DIG_SHA256);
	uint64_t x = 0x9e3779b97f4a7c15ull;
	int64_t sid = listening ? 1 : 0;
	printf("sending\n");
	fflush(stdout);
	while (sent < want) {
		size_t n = want - sent < sizeof(buf) ? (size_t)(want - sent) : sizeof(buf);
		for (size_t i = 0; i < n; i += 8) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			memcpy(buf + i, &x, n - i < 8 ? n - i : 8);
		}
		uint32_t flags = (sent == 0 ? MSG_QUIC_STREAM_NEW : 0) | (sent + n == want ? MSG_QUIC_STREAM_FIN : 0);
		ssize_t r = send_stream(fd, buf, n, sid, flags);
		if (r != (ssize_t)n)
			die("send");
		gnutls_hash(h, buf, n);
		sent += n;
	}
	unsigned char d[32];
	char hx[65];
	gnutls_hash_deinit(h, d);
	hex(d, 32, hx);
	printf("sent %llu %s\n", sent, hx);
	fflush(stdout);
	char ack[4];
	int64_t s2;
	uint32_t f2;
	ssize_t n;
	do {
		n = recv_stream(fd, ack, sizeof(ack), &s2, &f2);
	} while (n >= 0 && (f2 & 0x80000000u));
	close(fd);
	return n == 1 ? 0 : 1;
}

static int mode_idle(const char *host, const char *port, const char *psk, const char *msg)
{
	int fd = socket(AF_INET, SOCK_DGRAM, IPPROTO_QUIC);
	if (fd < 0)
		die("socket");
	struct quic_transport_param tp;
	memset(&tp, 0, sizeof(tp));
	tp.max_idle_timeout = 3000000;
	struct quic_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.keepalive_probe_interval = 1500000;
	if (setsockopt(fd, SOL_QUIC, QUIC_SOCKOPT_TRANSPORT_PARAM, &tp, sizeof(tp)) ||
	    setsockopt(fd, SOL_QUIC, QUIC_SOCKOPT_CONFIG, &cfg, sizeof(cfg)))
		die("idle/keepalive options");
	struct sockaddr_in a = addr_of(host, port);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) || handshake(fd, 0, psk))
		die("connect/handshake");
	printf("connected\n");
	fflush(stdout);
	char line[64];
	if (fgets(line, sizeof(line), stdin) == NULL) /* the test stops us (SIGSTOP) for longer than the idle timeout */
		die("stdin");
	if (send_stream(fd, msg, strlen(msg), -1, MSG_QUIC_STREAM_NEW | MSG_QUIC_STREAM_FIN) != (ssize_t)strlen(msg))
		die("send after the stop");
	char buf[256];
	int64_t sid;
	uint32_t flags;
	ssize_t n = recv_stream(fd, buf, sizeof(buf) - 1, &sid, &flags);
	if (n < 0)
		die("recv after the stop");
	buf[n] = 0;
	printf("%s\n", buf);
	close(fd);
	return 0;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int mode_accept_loop(const char *host, const char *port, const char *psk, int n)
{
	int lfd;
	int c = accept_one(host, port, psk, &lfd);
	for (int i = 0; i < n; i++) {
		if (i > 0 && (c = accept(lfd, NULL, NULL)) < 0)
			die("accept");
		if (handshake(c, 1, psk))
			die("server handshake");
		char b[8];
		while (recv(c, b, sizeof(b), 0) >= 0) /* until the client's close: ENOTCONN */
			;
		if (errno != ENOTCONN)
			die("waiting for the client's close");
		close(c);
	}
	printf("accepted %d\n", n);
	return 0;
}

static int mode_handshakes(const char *host, const char *port, const char *psk, int n)
{
	double spent = 0;
	for (int i = 0; i < n; i++) {
		double t0 = now_s();
		int fd = connect_one(host, port, psk);
		if (i > 0) /* the first one also starts this host's daemon: not timed */
			spent += now_s() - t0;
		close(fd); /* at once: the server waits for this close */
	}
	printf("handshakes %d in %.3f s: %.1f/s\n", n - 1, spent, (n - 1) / spent);
	return 0;
}

static const char *const mmsg_text[3] = {"first", "second!", "third..."}; /* 5 + 7 + 8 = 20 bytes */

static void fill_mmsg(struct mmsghdr *v, struct iovec *iov, char (*cbuf)[CMSG_SPACE(sizeof(struct quic_stream_info))],
		      char (*bufs)[64], int sending)
{
	memset(v, 0, 4 * sizeof(*v));
	for (int i = 0; i < 4; i++) {
		iov[i].iov_base = sending ? (void *)mmsg_text[i % 3] : bufs[i];
		iov[i].iov_len = sending ? strlen(mmsg_text[i % 3]) : sizeof(bufs[i]);
		v[i].msg_hdr.msg_iov = &iov[i];
		v[i].msg_hdr.msg_iovlen = 1;
		v[i].msg_hdr.msg_control = cbuf[i];
		v[i].msg_hdr.msg_controllen = sizeof(cbuf[i]);
		memset(cbuf[i], 0, sizeof(cbuf[i]));
		if (sending) {
			struct cmsghdr *c = CMSG_FIRSTHDR(&v[i].msg_hdr);
			c->cmsg_level = SOL_QUIC;
			c->cmsg_type = QUIC_STREAM_INFO;
			c->cmsg_len = CMSG_LEN(sizeof(struct quic_stream_info));
			struct quic_stream_info info = {.stream_id = 4 * i, .stream_flags = MSG_QUIC_STREAM_NEW | MSG_QUIC_STREAM_FIN};
			memcpy(CMSG_DATA(c), &info, sizeof(info));
		}
	}
}

static int mode_mmsg_server(const char *host, const char *port, const char *psk)
{
	int lfd;
	int c = accept_one(host, port, psk, &lfd);
	int q = -1;
	check(ioctl(lfd, FIONREAD, &q) == -1 && errno == EINVAL, "FIONREAD on a listener -> EINVAL");
	if (handshake(c, 1, psk))
		die("server handshake");
	int avail = 0;
	for (int i = 0; i < 1000 && avail < 20; i++) { /* the client's three messages, 20 bytes in all */
		struct pollfd p = {c, POLLIN, 0};
		poll(&p, 1, 20);
		if (ioctl(c, FIONREAD, &avail) != 0)
			die("FIONREAD");
	}
	check(avail == 20, "FIONREAD counts the three queued messages (20 bytes)");
	struct mmsghdr v[4];
	struct iovec iov[4];
	char cbuf[4][CMSG_SPACE(sizeof(struct quic_stream_info))];
	char bufs[4][64];
	fill_mmsg(v, iov, cbuf, bufs, 0);
	int n = recvmmsg(c, v, 4, MSG_WAITFORONE, NULL);
	check(n == 3, "recvmmsg takes the three messages in one call (MSG_WAITFORONE: no wait for a fourth)");
	int good = 0;
	for (int i = 0; i < n && i < 3; i++) {
		struct cmsghdr *cm = CMSG_FIRSTHDR(&v[i].msg_hdr);
		struct quic_stream_info info = {0};
		if (cm != NULL && cm->cmsg_type == QUIC_STREAM_INFO)
			memcpy(&info, CMSG_DATA(cm), sizeof(info));
		good += v[i].msg_len == strlen(mmsg_text[i]) && memcmp(bufs[i], mmsg_text[i], v[i].msg_len) == 0 &&
			info.stream_id == 4 * i && (info.stream_flags & MSG_QUIC_STREAM_FIN);
	}
	check(good == 3, "each message: its bytes, its stream id and FIN");
	check(ioctl(c, FIONREAD, &avail) == 0 && avail == 0, "FIONREAD is 0 once read");
	check(recvmmsg(c, v, 4, MSG_DONTWAIT, NULL) == -1 && errno == EAGAIN, "recvmmsg on an empty queue, MSG_DONTWAIT -> EAGAIN");
	if (send_stream(c, "ok", 2, 1, MSG_QUIC_STREAM_NEW | MSG_QUIC_STREAM_FIN) != 2)
		die("answer");
	char b[8];
	while (recv(c, b, sizeof(b), 0) >= 0) /* until the client closes */
		;
	close(c);
	close(lfd);
	printf("done %d failures\n", failures);
	return failures ? 1 : 0;
}

static int mode_mmsg_client(const char *host, const char *port, const char *psk)
{
	int fd = connect_one(host, port, psk);
	struct mmsghdr v[4];
	struct iovec iov[4];
	char cbuf[4][CMSG_SPACE(sizeof(struct quic_stream_info))];
	char bufs[4][64];
	fill_mmsg(v, iov, cbuf, bufs, 1);
	int n = sendmmsg(fd, v, 3, 0);
	check(n == 3 && v[0].msg_len == 5 && v[1].msg_len == 7 && v[2].msg_len == 8, "sendmmsg sends three messages");
	int out = -1;
	check(ioctl(fd, TIOCOUTQ, &out) == 0 && out >= 0 && out <= 20, "SIOCOUTQ: bytes written and not yet acknowledged");
	int nb = 1;
	check(ioctl(fd, FIONBIO, &nb) == 0 && (fcntl(fd, F_GETFL) & O_NONBLOCK), "FIONBIO passes on: the fd is non-blocking");
	nb = 0;
	ioctl(fd, FIONBIO, &nb);
	char buf[16];
	int64_t sid = -1;
	uint32_t flags = 0;
	ssize_t r;
	do
		r = recv_stream(fd, buf, sizeof(buf), &sid, &flags);
	while (r >= 0 && (flags & 0x80000000u));
	check(r == 2 && memcmp(buf, "ok", 2) == 0, "the server's answer");
	close(fd);
	printf("done %d failures\n", failures);
	return failures ? 1 : 0;
}

/* ---- splice / sendfile / tee ---- */
#define SPLICE_REPLY "spliced back to you" /* pyquic_peer.py splice-sink's answer */

/* The client's stream bytes are a function of their position, whoever writes them (a child into a pipe). */
static void pattern(unsigned char *b, size_t n, unsigned long long at)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (unsigned char)(((at + i) * 2654435761ull) >> 13);
}

static int queued(int fd)
{
	int n = -1;
	return ioctl(fd, FIONREAD, &n) == 0 ? n : -1;
}

static void set_nonblocking(int fd, int on)
{
	int fl = fcntl(fd, F_GETFL);
	fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK);
}

static int mode_splice_client(const char *host, const char *port, const char *psk, const char *path)
{
	int fd = connect_one(host, port, psk);
	int file = open(path, O_RDONLY), devnull = open("/dev/null", O_WRONLY), p[2];
	if (file < 0 || devnull < 0 || pipe(p))
		die("open/pipe");
	loff_t off = 0;
	off_t o = 0;
	check(fails_with(splice(fd, NULL, devnull, NULL, 16, 0), EINVAL), "splice QUIC -> /dev/null (no pipe) -> EINVAL");
	check(fails_with(splice(file, NULL, fd, NULL, 16, 0), EINVAL), "splice file -> QUIC (no pipe) -> EINVAL");
	check(fails_with(splice(p[0], &off, fd, NULL, 16, 0), ESPIPE), "splice from a pipe with an offset -> ESPIPE");
	check(fails_with(splice(p[0], NULL, fd, &off, 16, 0), EINVAL), "splice into QUIC with an offset -> EINVAL");
	check(fails_with(splice(fd, &off, p[1], NULL, 16, 0), EINVAL), "splice from QUIC with an offset -> EINVAL");
	check(fails_with(sendfile(devnull, fd, NULL, 16), EINVAL), "sendfile, QUIC in_fd, out_fd not a pipe -> EINVAL");
	check(fails_with(sendfile(p[1], fd, &o, 16), ESPIPE), "sendfile, QUIC in_fd with an offset -> ESPIPE");
	check(fails_with(sendfile(fd, p[0], NULL, 16), EINVAL), "sendfile from a pipe into QUIC -> EINVAL");
	check(fails_with(tee(fd, p[1], 16, 0), EINVAL) && fails_with(tee(p[0], fd, 16, 0), EINVAL),
	      "tee with a QUIC end -> EINVAL (the kernel's: tee needs two pipes)");

	gnutls_hash_hd_t h;
	gnutls_hash_init(&h, GNUTLS_DIG_SHA256);
	unsigned long long sent = 0;
	static unsigned char buf[65536];
	/* open stream 0: write, splice and sendfile (no cmsg) go to it, quic.ko's active stream */
	pattern(buf, 1, sent);
	if (send_stream(fd, buf, 1, 0, MSG_QUIC_STREAM_NEW) != 1)
		die("open stream 0");
	gnutls_hash(h, buf, 1);
	sent += 1;

	/* the sink reads nothing yet: non-blocking writes until EAGAIN, in rounds 200 ms apart until a round's
	 * first write fails too (ACKs of what was in flight no longer free room: the stream stays full) */
	set_nonblocking(fd, 1);
	int full = 0;
	for (int round = 0; round < 100 && !full && sent < (256ull << 20); round++) {
		usleep(round ? 200000 : 0);
		for (int n = 0;; n++) {
			pattern(buf, sizeof(buf), sent);
			ssize_t r = write(fd, buf, sizeof(buf));
			if (r < 0) {
				if (errno != EAGAIN)
					die("non-blocking write");
				full = n == 0;
				break;
			}
			gnutls_hash(h, buf, (size_t)r);
			sent += (unsigned long long)r;
		}
	}
	check(full, "non-blocking writes until EAGAIN (flow control and send buffer full)");
	int q[2];
	if (pipe(q))
		die("pipe");
	pattern(buf, sizeof(buf), sent);
	if (write(q[1], buf, sizeof(buf)) != (ssize_t)sizeof(buf))
		die("fill the pipe");
	check(fails_with(splice(q[0], NULL, fd, NULL, sizeof(buf), 0), EAGAIN) && queued(q[0]) == (int)sizeof(buf),
	      "non-blocking QUIC fd full: splice pipe -> QUIC is EAGAIN, nothing taken from the pipe");
	set_nonblocking(fd, 0); /* the test lets the sink read now */
	size_t moved = 0;
	while (queued(q[0]) > 0) {
		ssize_t r = splice(q[0], NULL, fd, NULL, 1 << 20, SPLICE_F_MORE);
		if (r <= 0)
			die("splice pipe -> QUIC");
		moved += (size_t)r;
	}
	check(moved == sizeof(buf), "blocking again: the pipe's 65536 bytes spliced into the stream");
	gnutls_hash(h, buf, sizeof(buf));
	sent += sizeof(buf);

	/* a child writes the pipe in uneven pieces; splice until its EOF (waiting for data in between) */
	const unsigned long long child_bytes = 300000, base = sent;
	int w[2];
	if (pipe(w))
		die("pipe");
	pid_t kid = fork();
	if (kid == 0) {
		close(w[0]);
		for (unsigned long long at = 0; at < child_bytes;) {
			size_t n = 1000 + (size_t)(at % 6000);
			n = n < child_bytes - at ? n : (size_t)(child_bytes - at);
			pattern(buf, n, base + at);
			if (write(w[1], buf, n) != (ssize_t)n)
				_exit(1);
			at += n;
			if (at % 7 == 0)
				usleep(1000);
		}
		_exit(0);
	}
	close(w[1]);
	unsigned long long got = 0;
	for (;;) {
		ssize_t r = splice(w[0], NULL, fd, NULL, 100000, 0);
		if (r < 0)
			die("splice from the child's pipe");
		if (r == 0)
			break;
		got += (unsigned long long)r;
	}
	int st = -1;
	waitpid(kid, &st, 0);
	check(got == child_bytes && WIFEXITED(st) && WEXITSTATUS(st) == 0, "pipe -> QUIC splices until the writer's EOF: 300000 bytes");
	for (unsigned long long at = 0; at < child_bytes; at += sizeof(buf)) {
		size_t n = child_bytes - at < sizeof(buf) ? (size_t)(child_bytes - at) : sizeof(buf);
		pattern(buf, n, base + at);
		gnutls_hash(h, buf, n);
	}
	sent += child_bytes;

	/* sendfile: the whole file with an offset, a middle piece without, the tail by sendfile64 past EOF */
	struct stat fst;
	if (fstat(file, &fst))
		die("fstat");
	size_t fsize = (size_t)fst.st_size;
	off_t fo = 0;
	unsigned long long fsent = 0;
	while ((size_t)fo < fsize) {
		ssize_t r = sendfile(fd, file, &fo, fsize - (size_t)fo);
		if (r <= 0)
			die("sendfile");
		fsent += (unsigned long long)r;
	}
	check(fsent == fsize && (size_t)fo == fsize && lseek(file, 0, SEEK_CUR) == 0,
	      "sendfile with an offset: the whole file, *offset advanced, the file position untouched");
	lseek(file, 4096, SEEK_SET);
	ssize_t mid = sendfile(fd, file, NULL, 10000);
	check(mid == 10000 && lseek(file, 0, SEEK_CUR) == 14096, "sendfile without an offset: from the file position, which advances");
	off64_t o64 = (off64_t)fsize - 5000;
	ssize_t tail = sendfile64(fd, file, &o64, 100000);
	check(tail == 5000 && o64 == (off64_t)fsize, "sendfile64 past EOF: the last 5000 bytes");
	for (size_t at = 0; at < fsize; at += sizeof(buf)) {
		ssize_t n = pread(file, buf, fsize - at < sizeof(buf) ? fsize - at : sizeof(buf), (off_t)at);
		gnutls_hash(h, buf, n > 0 ? (size_t)n : 0);
	}
	if (pread(file, buf, 10000, 4096) != 10000)
		die("pread");
	gnutls_hash(h, buf, 10000);
	if (pread(file, buf, 5000, (off_t)fsize - 5000) != 5000)
		die("pread");
	gnutls_hash(h, buf, 5000);
	sent += fsize + 15000;
	check(send_stream(fd, "", 0, 0, MSG_QUIC_STREAM_FIN) == 0, "FIN");
	unsigned char d[32];
	char hx[65];
	gnutls_hash_deinit(h, d);
	hex(d, 32, hx);
	printf("sent %llu %s\n", sent, hx);
	fflush(stdout);

	/* QUIC -> pipe: the sink's answer, in pieces */
	int r2[2];
	if (pipe(r2))
		die("pipe");
	set_nonblocking(r2[1], 1);
	while (write(r2[1], buf, 4096) > 0)
		;
	set_nonblocking(r2[1], 0);
	check(fails_with(splice(fd, NULL, r2[1], NULL, 100, SPLICE_F_NONBLOCK), EAGAIN), "splice QUIC -> a full pipe, SPLICE_F_NONBLOCK -> EAGAIN");
	set_nonblocking(r2[0], 1);
	while (read(r2[0], buf, sizeof(buf)) > 0)
		;
	set_nonblocking(r2[0], 0);
	char msg[64] = {0};
	ssize_t a = splice(fd, NULL, r2[1], NULL, 5, 0); /* waits for the answer */
	check(a == 5 && read(r2[0], msg, 5) == 5, "splice QUIC -> pipe, len 5: 5 bytes, the rest stays queued");
	ssize_t b = sendfile(r2[1], fd, NULL, 4096);
	ssize_t k = b > 0 ? read(r2[0], msg + 5, sizeof(msg) - 6) : -1;
	check(b == (ssize_t)strlen(SPLICE_REPLY) - 5 && k == b && strcmp(msg, SPLICE_REPLY) == 0,
	      "sendfile QUIC -> pipe: the rest of the answer (a read); the answer byte-exact");
	set_nonblocking(fd, 1);
	check(fails_with(splice(fd, NULL, r2[1], NULL, 100, 0), EAGAIN), "splice from a non-blocking QUIC fd, nothing queued -> EAGAIN");
	close(fd);
	printf("done %d failures\n", failures);
	fflush(stdout);
	return failures ? 1 : 0;
}

static int mode_garbage(const char *host, const char *port, const char *psk)
{
	int fd = connect_one(host, port, psk);
	printf("connected\n");
	fflush(stdout);
	if (syscall(SYS_write, fd, "garbage!", 8) != 8)
		die("raw write");
	struct pollfd p = {fd, POLLIN, 0};
	poll(&p, 1, 5000); /* the daemon cuts the socket off: the fd reads EOF */
	int e1 = send(fd, "x", 1, MSG_NOSIGNAL) == -1 ? errno : 0;
	char b[8];
	int e2 = recv(fd, b, sizeof(b), MSG_DONTWAIT) == -1 ? errno : 0;
	printf("cut off: send errno %d, recv errno %d, revents %#x\n", e1, e2, (unsigned)p.revents);
	fflush(stdout);
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc >= 2 && strcmp(argv[1], "errnos") == 0)
		return mode_errnos();
	if (argc >= 5 && strcmp(argv[1], "server") == 0)
		return mode_server(argv[2], argv[3], argv[4], argc >= 6 ? argv[5] : "plain");
	if (argc >= 6 && strcmp(argv[1], "client") == 0)
		return mode_client(argv[2], argv[3], argv[4], argv[5]);
	if (argc >= 5 && strcmp(argv[1], "sink") == 0)
		return mode_sink(argv[2], argv[3], argv[4], 1);
	if (argc >= 5 && strcmp(argv[1], "sink-connect") == 0)
		return mode_sink(argv[2], argv[3], argv[4], 0);
	if (argc >= 6 && strcmp(argv[1], "source-listen") == 0)
		return mode_source(argv[2], argv[3], argv[4], argv[5], 1);
	if (argc >= 6 && strcmp(argv[1], "idle") == 0)
		return mode_idle(argv[2], argv[3], argv[4], argv[5]);
	if (argc >= 5 && strcmp(argv[1], "mmsg-server") == 0)
		return mode_mmsg_server(argv[2], argv[3], argv[4]);
	if (argc >= 5 && strcmp(argv[1], "mmsg-client") == 0)
		return mode_mmsg_client(argv[2], argv[3], argv[4]);
	if (argc >= 6 && strcmp(argv[1], "accept-loop") == 0)
		return mode_accept_loop(argv[2], argv[3], argv[4], atoi(argv[5]));
	if (argc >= 6 && strcmp(argv[1], "handshakes") == 0)
		return mode_handshakes(argv[2], argv[3], argv[4], atoi(argv[5]));
	if (argc >= 6 && strcmp(argv[1], "splice-client") == 0)
		return mode_splice_client(argv[2], argv[3], argv[4], argv[5]);
	if (argc >= 5 && strcmp(argv[1], "garbage") == 0)
		return mode_garbage(argv[2], argv[3], argv[4]);
	if (argc >= 6 && strcmp(argv[1], "source") == 0)
		return mode_source(argv[2], argv[3], argv[4], argv[5], 0);
	fprintf(stderr, "usage: qtest errnos | server H P PSK [plain|fork|dup|pass|epoll] | client H P PSK MSG | "
			"sink[-connect] H P PSK | source[-listen] H P PSK NBYTES\n");
	return 2;
}
