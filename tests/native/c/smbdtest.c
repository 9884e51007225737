/* smbdtest: a native SMB Direct program for the tests, on the emulated IPPROTO_SMBDIRECT socket that
 * libwirecheck_quic.so gives it under `wirecheck exec`.
 *
 *   smbdtest smb HOST PORT USER PASSWORD SHARE FILE SIZE          (smbd_smb2.c)
 *       a minimal, real SMB 3.1.1 client: NEGOTIATE (preauth integrity SHA-512), SESSION_SETUP with
 *       NTLMv2 (raw NTLMSSP, no key exchange), a signed TREE_CONNECT (AES-CMAC, keys from the
 *       SP800-108 KDF over the preauth hash: a 3.1.1 server drops an unsigned one), CREATE, a WRITE
 *       whose data the server RDMA-READs from our registered buffer, a READ it RDMA-WRITEs into
 *       another, CLOSE. The session does not sign READ/WRITE (an RDMA channel needs that). Prints
 *       "write <sha256>", "read <sha256>" and what it checked; "FAIL ..." and exit 1 on any error.
 *   smbdtest rdma-server HOST PORT
 *       listen, accept, RDMA WRITE (sendmsg MSG_OOB) and READ into/from the peer's registered buffers,
 *       then let the peer RDMA WRITE into ours (tests/native/pysmbd_peer.py is the peer).
 *   smbdtest register-mode HOST PORT
 *       connect, print the RDMA mode and the errno of registering our memory in it.
 *   smbdtest errnos HOST PORT
 *       every option/state misuse, before and after connecting to an SMB Direct server, printed as
 *       "case NAME errno N" (the test compares them with the Python socket's).
 *
 * Hashes and MACs come from nettle (GnuTLS's crypto library, installed with libgnutls28-dev). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "smbdtest.h"

int (*ws_register)(int, void *, size_t, int, struct smbdirect_buffer_descriptor_v1 *);
int (*ws_deregister)(int, uint32_t);
ssize_t (*ws_rdma_read)(int, void *, size_t, const struct smbdirect_buffer_descriptor_v1 *, size_t, uint64_t);

/* ---- sendmsg with control messages ------------------------------------------------------------------ */
struct cm {
	int level, type;
	const uint8_t *data;
	size_t len;
};

/* One sendmsg of [data, data+len) with the control messages cms[0..n) (each at most 16 bytes). */
static ssize_t send_cmsgs(int fd, const void *data, size_t len, int flags, const struct cm *cms, size_t n)
{
	union {
		char b[CMSG_SPACE(16) * 4];
		struct cmsghdr align;
	} u;
	memset(u.b, 0, sizeof(u.b));
	struct iovec iov = {(void *)data, len};
	struct msghdr mh;
	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = u.b;
	mh.msg_controllen = sizeof(u.b);
	size_t used = 0;
	struct cmsghdr *h = CMSG_FIRSTHDR(&mh);
	for (size_t i = 0; i < n && i < 4 && cms[i].len <= 16; i++) {
		h->cmsg_level = cms[i].level;
		h->cmsg_type = cms[i].type;
		h->cmsg_len = CMSG_LEN(cms[i].len);
		memcpy(CMSG_DATA(h), cms[i].data, cms[i].len);
		used += CMSG_SPACE(cms[i].len);
		h = (struct cmsghdr *)(u.b + used);
	}
	mh.msg_controllen = used;
	return sendmsg(fd, &mh, flags);
}

/* ---- native server: RDMA initiated by the C program, and into its own registered memory ------------- */
static ssize_t recv_whole(int fd, uint8_t *buf, size_t cap)
{
	ssize_t n = recv(fd, buf, cap, 0);
	if (n <= 0)
		FAIL("recv gave %zd", n);
	return n;
}

/* The peer (tests/native/pysmbd_peer.py) sends "DESC" + a descriptor to RDMA WRITE into + one to RDMA
 * READ from + u32 size. We write with sendmsg(MSG_OOB) (two pieces, the second at
 * SMBDIRECT_CMSG_RDMA_OFFSET), read with wirecheck_smbdirect_rdma_read, then send "MINE" + a descriptor
 * of our own buffer as a SEND with Invalidate of the peer's write token; the peer RDMA-WRITEs into ours
 * and answers "WROTE" + the sha256 it wrote. */
static int run_rdma_server(char **argv)
{
	int lst = socket(AF_INET, SOCK_STREAM, IPPROTO_SMBDIRECT);
	struct sockaddr_in sin;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)atoi(argv[3]));
	inet_pton(AF_INET, argv[2], &sin.sin_addr);
	if (lst < 0 || bind(lst, (struct sockaddr *)&sin, sizeof(sin)) != 0 || listen(lst, 4) != 0)
		FAIL("socket/bind/listen");
	printf("ready\n");
	struct sockaddr_in peer;
	socklen_t pl = sizeof(peer);
	int fd = accept(lst, (struct sockaddr *)&peer, &pl);
	if (fd < 0)
		FAIL("accept");
	char pa[64];
	inet_ntop(AF_INET, &peer.sin_addr, pa, sizeof(pa));
	printf("accepted %s\n", pa);
	uint8_t msg[256];
	ssize_t n = recv_whole(fd, msg, sizeof(msg));
	if (n != 4 + 32 + 4 || memcmp(msg, "DESC", 4) != 0)
		FAIL("bad DESC message (%zd bytes)", n);
	struct smbdirect_buffer_descriptor_v1 wd = {g64(msg + 4), g32(msg + 12), g32(msg + 16)};
	struct smbdirect_buffer_descriptor_v1 rd = {g64(msg + 20), g32(msg + 28), g32(msg + 32)};
	size_t size = g32(msg + 36);
	uint8_t *out = malloc(size), *in = malloc(size), *mine = calloc(1, size);
	if (out == NULL || in == NULL || mine == NULL)
		FAIL("malloc");
	fill(out, size, 0x1234567887654321ull);
	/* RDMA WRITE in two pieces: [0, half) then [half, size) with SMBDIRECT_CMSG_RDMA_OFFSET */
	size_t half = size / 2;
	uint8_t wdesc[16], offs[8];
	put_desc(wdesc, &wd);
	for (int piece = 0; piece < 2; piece++) {
		p64(offs, piece ? half : 0);
		struct cm cms[2] = {{SOL_SMBDIRECT, SMBDIRECT_CMSG_RDMA_DESCRIPTORS, wdesc, 16},
				    {SOL_SMBDIRECT, SMBDIRECT_CMSG_RDMA_OFFSET, offs, 8}};
		size_t len = piece ? size - half : half;
		ssize_t w = send_cmsgs(fd, piece ? out + half : out, len, MSG_OOB, cms, 2);
		if (w != (ssize_t)len)
			FAIL("RDMA WRITE piece %d gave %zd", piece, w);
	}
	if (wirecheck_smbdirect_rdma_read(fd, in, size, &rd, 1, 0) != (ssize_t)size)
		FAIL("RDMA READ of %zu bytes", size);
	char h1[65], h2[65];
	sha256_hex(out, size, h1);
	sha256_hex(in, size, h2);
	printf("wrote %s\nread %s\n", h1, h2);
	struct smbdirect_buffer_descriptor_v1 md;
	if (wirecheck_smbdirect_register(fd, mine, size, SMBDIRECT_RDMA_REMOTE_WRITE, &md) != 0)
		FAIL("register our buffer");
	memcpy(msg, "MINE", 4);
	put_desc(msg + 4, &md);
	uint8_t tok[4];
	p32(tok, wd.token);
	struct cm inv = {SOL_SMBDIRECT, SMBDIRECT_CMSG_REMOTE_INVALIDATE, tok, 4};
	if (send_cmsgs(fd, msg, 20, 0, &inv, 1) != 20)
		FAIL("send MINE with invalidate");
	n = recv_whole(fd, msg, sizeof(msg));
	if (n != 5 + 64 || memcmp(msg, "WROTE", 5) != 0)
		FAIL("bad WROTE message (%zd bytes)", n);
	sha256_hex(mine, size, h1);
	if (memcmp(msg + 5, h1, 64) != 0)
		FAIL("our registered buffer has sha256 %s, the peer wrote %.64s", h1, (const char *)msg + 5);
	if (wirecheck_smbdirect_deregister(fd, md.token) != 0)
		FAIL("deregister our buffer");
	printf("peer wrote %s\n", h1);
	n = recv(fd, msg, sizeof(msg), 0);
	printf("end %zd\n", n);
	close(fd);
	close(lst);
	free(out), free(in), free(mine);
	printf("done\n");
	return 0;
}

/* ---- errno cases -------------------------------------------------------------------------------- */
static void report(const char *name, int r)
{
	printf("case %s errno %d\n", name, r == 0 ? 0 : errno);
	fflush(stdout);
	errno = 0;
}

static int run_errnos(char **argv)
{
	const char *host = argv[2];
	int port = atoi(argv[3]);
	uint32_t v = 0;
	socklen_t vl;
	char buf[64];
	report("socket_dgram", socket(AF_INET, SOCK_DGRAM, IPPROTO_SMBDIRECT) >= 0 ? 0 : -1);
	report("socket_unix", socket(AF_UNIX, SOCK_STREAM, IPPROTO_SMBDIRECT) >= 0 ? 0 : -1);
	int fd = socket(AF_INET, SOCK_STREAM, IPPROTO_SMBDIRECT);
	report("socket", fd >= 0 ? 0 : -1);
	v = 0;
	report("set_credits_0", setsockopt(fd, SOL_SMBDIRECT, SMBDIRECT_RECEIVE_CREDIT_MAX, &v, sizeof(v)));
	v = 100;
	report("set_send_size_100", setsockopt(fd, SOL_SMBDIRECT, SMBDIRECT_MAX_SEND_SIZE, &v, sizeof(v)));
	report("set_short_len", setsockopt(fd, SOL_SMBDIRECT, SMBDIRECT_MAX_SEND_SIZE, &v, 2));
	v = 0;
	report("set_keepalive_0", setsockopt(fd, SOL_SMBDIRECT, SMBDIRECT_KEEPALIVE_INTERVAL, &v, sizeof(v)));
	v = 1;
	report("set_unknown", setsockopt(fd, SOL_SMBDIRECT, 99, &v, sizeof(v)));
	report("set_readonly", setsockopt(fd, SOL_SMBDIRECT, SMBDIRECT_SEND_CREDITS, &v, sizeof(v)));
	report("set_other_level", setsockopt(fd, IPPROTO_TCP, 1, &v, sizeof(v)));
	v = 0;
	vl = sizeof(v);
	int r = getsockopt(fd, SOL_SMBDIRECT, SMBDIRECT_RECEIVE_CREDIT_MAX, &v, &vl);
	printf("value receive_credit_max %u\n", v);
	report("get_default", r);
	vl = sizeof(buf);
	report("get_params_unconnected", getsockopt(fd, SOL_SMBDIRECT, SMBDIRECT_CONNECTION_PARAMETERS, buf, &vl));
	vl = sizeof(v);
	report("get_credits_unconnected", getsockopt(fd, SOL_SMBDIRECT, SMBDIRECT_SEND_CREDITS, &v, &vl));
	vl = sizeof(v);
	report("get_unknown", getsockopt(fd, SOL_SMBDIRECT, 99, &v, &vl));
	report("send_unconnected", send(fd, "x", 1, 0) >= 0 ? 0 : -1);
	report("recv_unconnected", recv(fd, buf, sizeof(buf), MSG_DONTWAIT) >= 0 ? 0 : -1);
	struct smbdirect_buffer_descriptor_v1 d;
	report("register_unconnected", wirecheck_smbdirect_register(fd, buf, sizeof(buf), 1, &d));
	report("register_not_smbdirect", wirecheck_smbdirect_register(1, buf, sizeof(buf), 1, &d));
	struct sockaddr_in sin;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons(1);
	inet_pton(AF_INET, host, &sin.sin_addr);
	report("connect_refused", connect(fd, (struct sockaddr *)&sin, sizeof(sin)));
	close(fd);

	fd = socket(AF_INET, SOCK_STREAM, IPPROTO_SMBDIRECT);
	sin.sin_port = htons((uint16_t)port);
	report("connect", connect(fd, (struct sockaddr *)&sin, sizeof(sin)));
	report("connect_again", connect(fd, (struct sockaddr *)&sin, sizeof(sin)));
	v = 10;
	report("set_after_connect", setsockopt(fd, SOL_SMBDIRECT, SMBDIRECT_RECEIVE_CREDIT_MAX, &v, sizeof(v)));
	vl = sizeof(v);
	r = getsockopt(fd, SOL_SMBDIRECT, SMBDIRECT_MAX_SEND_SIZE, &v, &vl);
	printf("value max_send_size %u\n", v);
	report("get_negotiated", r);
	uint32_t params[6];
	vl = sizeof(params);
	report("get_params", getsockopt(fd, SOL_SMBDIRECT, SMBDIRECT_CONNECTION_PARAMETERS, params, &vl));
	vl = sizeof(v);
	r = getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &v, &vl);
	printf("value so_protocol %u\n", v);
	report("get_so_protocol", r);
	report("register_access_0", wirecheck_smbdirect_register(fd, buf, sizeof(buf), 0, &d));
	report("register_access_8", wirecheck_smbdirect_register(fd, buf, sizeof(buf), 8, &d));
	report("register_empty", wirecheck_smbdirect_register(fd, buf, 0, 1, &d));
	report("register_unmapped", wirecheck_smbdirect_register(fd, (void *)16, 4096, 1, &d));
	report("deregister_unknown", wirecheck_smbdirect_deregister(fd, 0xdeadbeef));
	r = wirecheck_smbdirect_register(fd, buf, sizeof(buf), 3, &d);
	report("register", r);
	report("deregister", wirecheck_smbdirect_deregister(fd, d.token));
	report("deregister_twice", wirecheck_smbdirect_deregister(fd, d.token));
	report("recv_oob", recv(fd, buf, sizeof(buf), MSG_OOB) >= 0 ? 0 : -1);
	report("recv_nothing_waiting", recv(fd, buf, sizeof(buf), MSG_DONTWAIT) >= 0 ? 0 : -1);
	report("send_oob_without_descriptors", send(fd, "x", 1, MSG_OOB) >= 0 ? 0 : -1);
	/* cmsg cases */
	uint8_t zero[16] = {0}, bad[16];
	struct cm c_level = {SOL_SOCKET + 1000, 1, zero, 4};
	struct cm c_desc = {SOL_SMBDIRECT, SMBDIRECT_CMSG_RDMA_DESCRIPTORS, zero, 16};
	struct cm c_short = {SOL_SMBDIRECT, SMBDIRECT_CMSG_RDMA_DESCRIPTORS, zero, 12};
	struct cm c_inv = {SOL_SMBDIRECT, SMBDIRECT_CMSG_REMOTE_INVALIDATE, zero, 2};
	report("send_bad_cmsg_level", send_cmsgs(fd, "abcd", 4, 0, &c_level, 1) >= 0 ? 0 : -1);
	report("send_descriptors_without_oob", send_cmsgs(fd, "abcd", 4, 0, &c_desc, 1) >= 0 ? 0 : -1);
	report("send_oob_short_descriptors", send_cmsgs(fd, "abcd", 4, MSG_OOB, &c_short, 1) >= 0 ? 0 : -1);
	report("send_invalidate_short", send_cmsgs(fd, "abcd", 4, 0, &c_inv, 1) >= 0 ? 0 : -1);
	report("rdma_read_no_descriptors", wirecheck_smbdirect_rdma_read(fd, buf, 4, NULL, 0, 0) >= 0 ? 0 : -1);
	/* last: an RDMA WRITE to a token the peer never registered is a remote access error, fatal */
	struct smbdirect_buffer_descriptor_v1 bogus = {0x1000, 0x12345678, 4};
	put_desc(bad, &bogus);
	struct cm c_bad = {SOL_SMBDIRECT, SMBDIRECT_CMSG_RDMA_DESCRIPTORS, bad, 16};
	report("rdma_write_bad_token", send_cmsgs(fd, "abcd", 4, MSG_OOB, &c_bad, 1) >= 0 ? 0 : -1);
	report("send_after_abort", send(fd, "x", 1, MSG_NOSIGNAL) >= 0 ? 0 : -1);
	close(fd);
	printf("done\n");
	return 0;
}

/* Which RDMA mode the connection runs in, and whether our memory can be registered in it. */
static int run_register_mode(char **argv)
{
	int fd = socket(AF_INET, SOCK_STREAM, IPPROTO_SMBDIRECT);
	struct sockaddr_in sin;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)atoi(argv[3]));
	inet_pton(AF_INET, argv[2], &sin.sin_addr);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0)
		FAIL("socket/connect");
	uint32_t mode = 0;
	socklen_t ml = sizeof(mode);
	if (getsockopt(fd, SOL_SMBDIRECT, SMBDIRECT_RDMA_MODE, &mode, &ml) != 0)
		FAIL("getsockopt SMBDIRECT_RDMA_MODE");
	static uint8_t buf[4096];
	struct smbdirect_buffer_descriptor_v1 d;
	errno = 0;
	int r = wirecheck_smbdirect_register(fd, buf, sizeof(buf), SMBDIRECT_RDMA_REMOTE_WRITE, &d);
	printf("mode %u register errno %d\n", mode, r == 0 ? 0 : errno);
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	*(void **)&ws_register = dlsym(RTLD_DEFAULT, "wirecheck_smbdirect_register");
	*(void **)&ws_deregister = dlsym(RTLD_DEFAULT, "wirecheck_smbdirect_deregister");
	*(void **)&ws_rdma_read = dlsym(RTLD_DEFAULT, "wirecheck_smbdirect_rdma_read");
	if (ws_register == NULL || ws_deregister == NULL || ws_rdma_read == NULL)
		FAIL("libwirecheck_quic.so is not preloaded (run under wirecheck exec)");
	if (argc == 9 && strcmp(argv[1], "smb") == 0)
		return run_smb(argv);
	if (argc == 4 && strcmp(argv[1], "errnos") == 0)
		return run_errnos(argv);
	if (argc == 4 && strcmp(argv[1], "register-mode") == 0)
		return run_register_mode(argv);
	if (argc == 4 && strcmp(argv[1], "rdma-server") == 0)
		return run_rdma_server(argv);
	fprintf(stderr, "usage: smbdtest smb HOST PORT USER PASSWORD SHARE FILE SIZE | errnos HOST PORT | rdma-server HOST PORT | register-mode HOST PORT\n");
	return 2;
}
