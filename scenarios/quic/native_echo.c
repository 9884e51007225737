/* A native (C) QUIC program for scenario cells: plain quic.ko socket calls, no library of ours to link.
 * Run on an emulated host by `proc.start` / `host.run`; `wirecheck` preloads libwirecheck_quic.so,
 * which gives it IPPROTO_QUIC. The TLS handshake is the engine's (wirecheck_quic_handshake, found
 * with dlsym) since this program brings no TLS library.
 *
 *   native_echo server HOST PORT PSKFILE      accept one client, echo one stream upper-cased (FIN)
 *   native_echo client HOST PORT PSKFILE MSG  send MSG with FIN; print {"reply": "..."} (one JSON line)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define IPPROTO_QUIC_ 261
#define SOL_QUIC_ 288
#define QUIC_STREAM_INFO_ 0
#define STREAM_NEW 0x400
#define STREAM_FIN 0x200
#define MSG_NOTIFICATION_ 0x8000

struct stream_info { /* struct quic_stream_info */
	int64_t stream_id;
	uint32_t stream_flags;
};

static int fail(const char *what)
{
	printf("{\"error\": \"%s\", \"errno\": %d}\n", what, errno);
	return 1;
}

static int handshake(int fd, int role, const char *psk)
{
	int (*hs)(int, int, const char *) = (int (*)(int, int, const char *))dlsym(RTLD_DEFAULT, "wirecheck_quic_handshake");
	char settings[512];
	if (hs == NULL) {
		errno = ENOSYS;
		return -1;
	}
	snprintf(settings, sizeof(settings), "%s=%s\ntimeout=3\n", role ? "pkey_file" : "psk_file", psk);
	return hs(fd, role, settings);
}

static ssize_t xfer(int fd, char *buf, size_t len, int64_t *sid, uint32_t *flags, int sending)
{
	char cbuf[CMSG_SPACE(sizeof(struct stream_info))];
	struct iovec iov = {buf, len};
	struct msghdr m;
	memset(&m, 0, sizeof(m));
	memset(cbuf, 0, sizeof(cbuf));
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	m.msg_control = cbuf;
	m.msg_controllen = sizeof(cbuf);
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	if (sending) {
		struct stream_info info = {*sid, *flags};
		c->cmsg_level = SOL_QUIC_;
		c->cmsg_type = QUIC_STREAM_INFO_;
		c->cmsg_len = CMSG_LEN(sizeof(info));
		memcpy(CMSG_DATA(c), &info, sizeof(info));
		return sendmsg(fd, &m, 0);
	}
	ssize_t n = recvmsg(fd, &m, 0);
	if (n >= 0 && (c = CMSG_FIRSTHDR(&m)) != NULL && c->cmsg_level == SOL_QUIC_) {
		struct stream_info info;
		memcpy(&info, CMSG_DATA(c), sizeof(info));
		*sid = info.stream_id;
		*flags = info.stream_flags | ((m.msg_flags & MSG_NOTIFICATION_) ? 0x80000000u : 0);
	}
	return n;
}

int main(int argc, char **argv)
{
	if (argc < 5)
		return 2;
	struct sockaddr_in a;
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)atoi(argv[3]));
	inet_pton(AF_INET, argv[2], &a.sin_addr);
	char buf[4096];
	int64_t sid = -1;
	uint32_t flags = 0;
	if (strcmp(argv[1], "server") == 0) {
		int l = socket(AF_INET, SOCK_DGRAM, IPPROTO_QUIC_);
		if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 4))
			return fail("listen");
		for (;;) { /* a client whose attempt failed (it came too early, or its handshake timed out) tries again */
			int c = accept(l, NULL, NULL);
			if (c < 0)
				return fail("accept");
			if (handshake(c, 1, argv[4])) {
				close(c);
				continue;
			}
			ssize_t n = xfer(c, buf, sizeof(buf), &sid, &flags, 0);
			if (n < 0 && errno == ENOTCONN) { /* that client gave up (its handshake timed out first) */
				close(c);
				continue;
			}
			if (n < 0)
				return fail("recv");
			for (ssize_t i = 0; i < n; i++)
				if (buf[i] >= 'a' && buf[i] <= 'z')
					buf[i] = (char)(buf[i] - 32);
			flags = STREAM_FIN;
			if (xfer(c, buf, (size_t)n, &sid, &flags, 1) != n)
				return fail("send");
			while (recv(c, buf, sizeof(buf), 0) >= 0) /* until the client closes */
				;
			printf("{\"echoed\": %zd}\n", n);
			return 0;
		}
	}
	if (argc < 6)
		return 2;
	for (int attempt = 0; attempt < 20; attempt++) { /* the server may still be starting */
		int fd = socket(AF_INET, SOCK_DGRAM, IPPROTO_QUIC_);
		if (fd < 0)
			return fail("socket");
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) || handshake(fd, 0, argv[4])) {
			close(fd);
			usleep(300 * 1000);
			continue;
		}
		size_t len = strlen(argv[5]) < sizeof(buf) ? strlen(argv[5]) : sizeof(buf) - 1;
		memcpy(buf, argv[5], len);
		flags = STREAM_NEW | STREAM_FIN;
		if (xfer(fd, buf, len, &sid, &flags, 1) != (ssize_t)len)
			return fail("send");
		ssize_t n;
		do
			n = xfer(fd, buf, sizeof(buf) - 1, &sid, &flags, 0);
		while (n >= 0 && (flags & 0x80000000u));
		if (n < 0)
			return fail("recv");
		buf[n] = 0;
		printf("{\"reply\": \"%s\", \"attempts\": %d}\n", buf, attempt + 1);
		close(fd);
		return 0;
	}
	return fail("handshake");
}
