/* smbd_smb2.c: smbdtest's "smb" mode, a minimal real SMB 3.1.1 client over IPPROTO_SMBDIRECT: NEGOTIATE
 * (preauth integrity SHA-512), SESSION_SETUP with NTLMv2 (raw NTLMSSP, no key exchange, no MIC), a
 * TREE_CONNECT signed with AES-CMAC (keys from the SP800-108 KDF over the preauth hash: a 3.1.1 server
 * drops an unsigned one), CREATE, WRITE and READ through RDMA_V1_INVALIDATE channels, CLOSE. The session
 * does not sign READ/WRITE (an RDMA channel needs that). Hashes and MACs from nettle. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <nettle/cmac.h>
#include <nettle/hmac.h>
#include <nettle/md4.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "smbdtest.h"

static size_t utf16(uint8_t *out, const char *s, int upper)
{
	size_t n = 0;
	for (; *s; s++, n += 2) {
		char c = *s;
		if (upper && c >= 'a' && c <= 'z')
			c = (char)(c - 32);
		out[n] = (uint8_t)c;
		out[n + 1] = 0;
	}
	return n;
}


static void hmac_md5(const uint8_t *key, size_t klen, const uint8_t *a, size_t alen, const uint8_t *b, size_t blen,
		     uint8_t out[16])
{
	struct hmac_md5_ctx h;
	hmac_md5_set_key(&h, klen, key);
	hmac_md5_update(&h, alen, a);
	if (blen)
		hmac_md5_update(&h, blen, b);
	hmac_md5_digest(&h, 16, out);
}

/* ---- the connection --------------------------------------------------------------------------------- */
struct conn {
	int fd;
	uint64_t msg_id;
	uint64_t session_id;
	uint32_t tree_id;
	uint8_t preauth[64];  /* connection's, then the session's */
	uint8_t sign_key[16];
	uint32_t last_token; /* from SMBDIRECT_CMSG_INVALIDATED_TOKEN, 0 = none */
};

static void preauth_add(uint8_t h[64], const uint8_t *msg, size_t n)
{
	struct sha512_ctx c;
	sha512_init(&c);
	sha512_update(&c, 64, h);
	sha512_update(&c, n, msg);
	sha512_digest(&c, 64, h);
}

static void header(struct conn *c, uint8_t *m, uint16_t cmd, uint16_t charge)
{
	memset(m, 0, 64);
	memcpy(m, "\xfeSMB", 4);
	p16(m + 4, 64);
	p16(m + 6, charge);
	p16(m + 12, cmd);
	p16(m + 14, 256); /* credits asked */
	p64(m + 24, c->msg_id);
	p32(m + 36, c->tree_id);
	p64(m + 40, c->session_id);
	c->msg_id += charge ? charge : 1;
}

static void sign(struct conn *c, uint8_t *m, size_t n)
{
	struct cmac_aes128_ctx k;
	p32(m + 16, g32(m + 16) | 0x8); /* SMB2_FLAGS_SIGNED */
	memset(m + 48, 0, 16);
	cmac_aes128_set_key(&k, c->sign_key);
	cmac_aes128_update(&k, n, m);
	cmac_aes128_digest(&k, 16, m + 48);
}

static void sendmsg_smb(struct conn *c, const uint8_t *m, size_t n)
{
	ssize_t r = send(c->fd, m, n, 0); /* one SMB2 message = one SMB Direct upper-layer message */
	if (r != (ssize_t)n)
		FAIL("send of %zu bytes gave %zd", n, r);
}

/* One whole response (interim STATUS_PENDING responses are skipped); returns its length. */
static size_t recv_smb(struct conn *c, uint8_t *buf, size_t cap, uint32_t *status)
{
	for (;;) {
		char cbuf[CMSG_SPACE(4)];
		struct iovec iov = {buf, cap};
		struct msghdr mh;
		memset(&mh, 0, sizeof(mh));
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = cbuf;
		mh.msg_controllen = sizeof(cbuf);
		ssize_t n = recvmsg(c->fd, &mh, 0);
		if (n < 64)
			FAIL("recvmsg gave %zd", n);
		if (mh.msg_flags & MSG_TRUNC)
			FAIL("response longer than %zu bytes", cap);
		for (struct cmsghdr *h = CMSG_FIRSTHDR(&mh); h != NULL; h = CMSG_NXTHDR(&mh, h))
			if (h->cmsg_level == SOL_SMBDIRECT && h->cmsg_type == SMBDIRECT_CMSG_INVALIDATED_TOKEN)
				c->last_token = g32(CMSG_DATA(h));
		*status = g32(buf + 8);
		if (*status == 0x00000103 && (g32(buf + 16) & 0x2)) /* STATUS_PENDING, async */
			continue;
		return (size_t)n;
	}
}

/* ---- NTLMv2 (MS-NLMP 3.3.2), no key exchange, no MIC ---------------------------------------------- */
#define NTLM_FLAGS 0x20880205u /* UNICODE, REQUEST_TARGET, NTLM, EXTENDED_SESSIONSECURITY, TARGET_INFO, 128 */

static size_t ntlm_negotiate(uint8_t *out)
{
	memset(out, 0, 32);
	memcpy(out, "NTLMSSP\0", 8);
	p32(out + 8, 1);
	p32(out + 12, NTLM_FLAGS);
	return 32;
}

static size_t ntlm_authenticate(uint8_t *out, const uint8_t *chal, size_t chal_len, const char *user,
				const char *password, uint8_t session_key[16])
{
	if (chal_len < 48 || memcmp(chal, "NTLMSSP\0", 8) != 0 || g32(chal + 8) != 2)
		FAIL("not an NTLM CHALLENGE");
	const uint8_t *server_challenge = chal + 24;
	size_t ti_len = g16(chal + 40), ti_off = g32(chal + 44);
	if (ti_off + ti_len > chal_len)
		FAIL("CHALLENGE target info out of bounds");
	uint8_t pw[512], nt_hash[16], ident[512], ntowf[16];
	size_t pwn = utf16(pw, password, 0);
	struct md4_ctx md4;
	md4_init(&md4);
	md4_update(&md4, pwn, pw);
	md4_digest(&md4, 16, nt_hash);
	size_t idn = utf16(ident, user, 1); /* UPPER(user) + domain (empty) */
	hmac_md5(nt_hash, 16, ident, idn, NULL, 0, ntowf);
	/* temp = 1, 1, Z(6), time, client challenge, Z(4), target info, Z(4) */
	uint8_t temp[2048];
	size_t tn = 0;
	memset(temp, 0, sizeof(temp));
	temp[0] = 1;
	temp[1] = 1;
	tn = 8;
	p64(temp + tn, ((uint64_t)time(NULL) + 11644473600ull) * 10000000ull);
	tn += 8;
	for (int i = 0; i < 8; i++)
		temp[tn + (size_t)i] = (uint8_t)(rand() & 0xff);
	tn += 8 + 4;
	if (ti_len > sizeof(temp) - tn - 4)
		FAIL("target info too long");
	memcpy(temp + tn, chal + ti_off, ti_len);
	tn += ti_len + 4;
	uint8_t proof[16];
	hmac_md5(ntowf, 16, server_challenge, 8, temp, tn, proof);
	hmac_md5(ntowf, 16, proof, 16, NULL, 0, session_key); /* SessionBaseKey = KeyExchangeKey = the key */
	/* AUTHENTICATE: 64-byte header (no Version, no MIC), then LM(24 zero), NT, domain(0), user, workstation(0) */
	memset(out, 0, 64);
	memcpy(out, "NTLMSSP\0", 8);
	p32(out + 8, 3);
	size_t off = 64;
	memset(out + off, 0, 24);
	p16(out + 12, 24), p16(out + 14, 24), p32(out + 16, (uint32_t)off);
	off += 24;
	memcpy(out + off, proof, 16);
	memcpy(out + off + 16, temp, tn);
	p16(out + 20, (uint32_t)(16 + tn)), p16(out + 22, (uint32_t)(16 + tn)), p32(out + 24, (uint32_t)off);
	off += 16 + tn;
	p32(out + 32, (uint32_t)off); /* domain: empty */
	size_t un = utf16(out + off, user, 0);
	p16(out + 36, (uint32_t)un), p16(out + 38, (uint32_t)un), p32(out + 40, (uint32_t)off);
	off += un;
	p32(out + 48, (uint32_t)off); /* workstation: empty */
	p32(out + 56, (uint32_t)off); /* no encrypted random session key */
	p32(out + 60, NTLM_FLAGS);
	return off;
}

/* SP800-108 counter-mode KDF with HMAC-SHA256 (MS-SMB2 3.1.4.2), 128-bit key */
static void kdf(const uint8_t key[16], const char *label, size_t label_len, const uint8_t *ctx, size_t ctx_len,
		uint8_t out[16])
{
	struct hmac_sha256_ctx h;
	uint8_t one[4] = {0, 0, 0, 1}, zero = 0, bits[4] = {0, 0, 0, 128}, full[32];
	hmac_sha256_set_key(&h, 16, key);
	hmac_sha256_update(&h, 4, one);
	hmac_sha256_update(&h, label_len, (const uint8_t *)label);
	hmac_sha256_update(&h, 1, &zero);
	hmac_sha256_update(&h, ctx_len, ctx);
	hmac_sha256_update(&h, 4, bits);
	hmac_sha256_digest(&h, 32, full);
	memcpy(out, full, 16);
}

/* ---- SMB2 commands ---------------------------------------------------------------------------------- */
static uint8_t rbuf[1 << 20];

static void negotiate(struct conn *c, uint32_t *max_read, uint32_t *max_write)
{
	uint8_t m[256];
	memset(m, 0, sizeof(m));
	header(c, m, 0x0000, 0);
	uint8_t *b = m + 64;
	p16(b, 36);
	p16(b + 2, 1);	/* one dialect */
	p16(b + 4, 1);	/* SIGNING_ENABLED: the session will not require signing */
	for (int i = 0; i < 16; i++)
		b[12 + i] = (uint8_t)rand();
	size_t ctx_off = 64 + 36 + 2;
	ctx_off = (ctx_off + 7) & ~(size_t)7;
	p32(b + 28, (uint32_t)ctx_off);
	p16(b + 32, 1);
	p16(b + 36, 0x0311);
	uint8_t *x = m + ctx_off; /* SMB2_PREAUTH_INTEGRITY_CAPABILITIES: SHA-512, 32-byte salt */
	p16(x, 1);
	p16(x + 2, 38);
	p16(x + 8, 1);
	p16(x + 10, 32);
	p16(x + 12, 1);
	for (int i = 0; i < 32; i++)
		x[14 + i] = (uint8_t)rand();
	size_t n = ctx_off + 8 + 38;
	memset(c->preauth, 0, 64);
	preauth_add(c->preauth, m, n);
	sendmsg_smb(c, m, n);
	uint32_t st;
	size_t rn = recv_smb(c, rbuf, sizeof(rbuf), &st);
	if (st != 0 || rn < 64 + 65)
		FAIL("NEGOTIATE status %#x", st);
	preauth_add(c->preauth, rbuf, rn);
	if (g16(rbuf + 64 + 4) != 0x0311)
		FAIL("dialect %#x, not 3.1.1", g16(rbuf + 64 + 4));
	*max_read = g32(rbuf + 64 + 32);
	*max_write = g32(rbuf + 64 + 36);
	printf("negotiated 3.1.1 max_read %u max_write %u\n", *max_read, *max_write);
}

static size_t session_setup_msg(struct conn *c, uint8_t *m, const uint8_t *tok, size_t tn)
{
	header(c, m, 0x0001, 1);
	uint8_t *b = m + 64;
	memset(b, 0, 24);
	p16(b, 25);
	b[3] = 1; /* SIGNING_ENABLED */
	p16(b + 12, 64 + 24);
	p16(b + 14, (uint32_t)tn);
	memcpy(b + 24, tok, tn);
	return 64 + 24 + tn;
}

static void session_setup(struct conn *c, const char *user, const char *password)
{
	static uint8_t m[4096], tok[2048];
	uint8_t hs[64], key[16];
	size_t tn = ntlm_negotiate(tok);
	size_t n = session_setup_msg(c, m, tok, tn);
	memcpy(hs, c->preauth, 64);
	preauth_add(hs, m, n);
	sendmsg_smb(c, m, n);
	uint32_t st;
	size_t rn = recv_smb(c, rbuf, sizeof(rbuf), &st);
	if (st != 0xC0000016)
		FAIL("SESSION_SETUP 1: status %#x, not MORE_PROCESSING_REQUIRED", st);
	preauth_add(hs, rbuf, rn);
	c->session_id = g64(rbuf + 40);
	size_t off = g16(rbuf + 64 + 4), len = g16(rbuf + 64 + 6);
	if (off + len > rn)
		FAIL("SESSION_SETUP 1: security buffer out of bounds");
	tn = ntlm_authenticate(tok, rbuf + off, len, user, password, key);
	n = session_setup_msg(c, m, tok, tn);
	preauth_add(hs, m, n);
	sendmsg_smb(c, m, n);
	rn = recv_smb(c, rbuf, sizeof(rbuf), &st);
	if (st != 0)
		FAIL("SESSION_SETUP 2: status %#x", st);
	kdf(key, "SMBSigningKey", 14, hs, 64, c->sign_key);
	/* the final response is signed with the new key: check it, as a 3.1.1 client must */
	uint8_t got[16], want[16];
	memcpy(got, rbuf + 48, 16);
	struct cmac_aes128_ctx k;
	memset(rbuf + 48, 0, 16);
	cmac_aes128_set_key(&k, c->sign_key);
	cmac_aes128_update(&k, rn, rbuf);
	cmac_aes128_digest(&k, 16, want);
	if (memcmp(got, want, 16) != 0)
		FAIL("SESSION_SETUP response signature does not verify");
	printf("session %#llx, signature verified\n", (unsigned long long)c->session_id);
}

static void tree_connect(struct conn *c, const char *host, const char *share)
{
	uint8_t m[1024];
	char path[300];
	snprintf(path, sizeof(path), "\\\\%s\\%s", host, share);
	memset(m, 0, sizeof(m));
	header(c, m, 0x0003, 1);
	uint8_t *b = m + 64;
	p16(b, 9);
	p16(b + 4, 64 + 8);
	size_t pn = utf16(b + 8, path, 0);
	p16(b + 6, (uint32_t)pn);
	size_t n = 64 + 8 + pn;
	sign(c, m, n);
	sendmsg_smb(c, m, n);
	uint32_t st;
	recv_smb(c, rbuf, sizeof(rbuf), &st);
	if (st != 0)
		FAIL("TREE_CONNECT %s: status %#x", path, st);
	c->tree_id = g32(rbuf + 36);
}

static void create(struct conn *c, const char *name, uint8_t fid[16])
{
	uint8_t m[1024];
	memset(m, 0, sizeof(m));
	header(c, m, 0x0005, 1);
	uint8_t *b = m + 64;
	p16(b, 57);
	p32(b + 4, 2);		  /* Impersonation */
	p32(b + 24, 0x0012019F); /* generic read/write */
	p32(b + 28, 0x80);	  /* FILE_ATTRIBUTE_NORMAL */
	p32(b + 32, 7);		  /* share all */
	p32(b + 36, 5);		  /* FILE_OVERWRITE_IF */
	p32(b + 40, 0x40);	  /* FILE_NON_DIRECTORY_FILE */
	p16(b + 44, 64 + 56);
	size_t nn = utf16(b + 56, name, 0);
	p16(b + 46, (uint32_t)nn);
	sendmsg_smb(c, m, 64 + 56 + (nn ? nn : 1));
	uint32_t st;
	recv_smb(c, rbuf, sizeof(rbuf), &st);
	if (st != 0)
		FAIL("CREATE %s: status %#x", name, st);
	memcpy(fid, rbuf + 64 + 64, 16);
}

static uint16_t charge(size_t n)
{
	return (uint16_t)(n == 0 ? 1 : (n - 1) / 65536 + 1);
}

static void check_invalidated(struct conn *c, const struct smbdirect_buffer_descriptor_v1 *d, const char *what)
{
	if (c->last_token != d->token)
		FAIL("%s: the response did not invalidate token %#x (got %#x)", what, d->token, c->last_token);
	/* MS-SMBD 3.1.4.4: the token is gone already; deregistering it again is ENOENT */
	errno = 0;
	if (wirecheck_smbdirect_deregister(c->fd, d->token) == 0 || errno != ENOENT)
		FAIL("%s: deregister of an invalidated token did not give ENOENT", what);
	printf("%s: token %#x at %#llx invalidated by the response\n", what, d->token, (unsigned long long)d->offset);
}

/* WRITE (MS-SMB2 2.2.21) or READ (2.2.19) through Channel RDMA_V1_INVALIDATE: the buffer registered for
 * the server's RDMA READ (our WRITE's source) or RDMA WRITE (our READ's destination), its descriptor
 * after the 48-byte body; no data in the messages either way. */
static void rdma_io(struct conn *c, const uint8_t fid[16], uint8_t *buf, size_t size, int write)
{
	const char *what = write ? "write" : "read";
	struct smbdirect_buffer_descriptor_v1 d;
	int access = write ? SMBDIRECT_RDMA_REMOTE_READ : SMBDIRECT_RDMA_REMOTE_WRITE;
	if (wirecheck_smbdirect_register(c->fd, buf, size, access, &d) != 0)
		FAIL("register the %s buffer", what);
	uint8_t m[256];
	memset(m, 0, sizeof(m));
	header(c, m, write ? 0x0009 : 0x0008, charge(size));
	uint8_t *b = m + 64;
	p16(b, 49);
	memcpy(b + 16, fid, 16);
	if (write) { /* Length 0, DataOffset 0, RemainingBytes = size */
		p32(b + 32, 2);
		p32(b + 36, (uint32_t)size);
		p16(b + 40, 64 + 48);
		p16(b + 42, 16);
	} else {
		b[2] = 0x50;
		p32(b + 4, (uint32_t)size);
		p32(b + 36, 2);
		p16(b + 44, 64 + 48);
		p16(b + 46, 16);
	}
	put_desc(b + 48, &d);
	c->last_token = 0;
	sendmsg_smb(c, m, 64 + 48 + 16);
	uint32_t st;
	recv_smb(c, rbuf, sizeof(rbuf), &st);
	if (st != 0)
		FAIL("%s: status %#x", what, st);
	if (write && g32(rbuf + 64 + 4) != size)
		FAIL("WRITE: count %u, not %zu", g32(rbuf + 64 + 4), size);
	if (!write && (g32(rbuf + 64 + 4) != 0 || g32(rbuf + 64 + 8) != size))
		FAIL("READ: DataLength %u DataRemaining %u (an RDMA READ has 0 and %zu)", g32(rbuf + 64 + 4),
		     g32(rbuf + 64 + 8), size);
	check_invalidated(c, &d, what);
}

static void close_file(struct conn *c, const uint8_t fid[16])
{
	uint8_t m[128];
	memset(m, 0, sizeof(m));
	header(c, m, 0x0006, 1);
	p16(m + 64, 24);
	memcpy(m + 64 + 8, fid, 16);
	sendmsg_smb(c, m, 64 + 24);
	uint32_t st;
	recv_smb(c, rbuf, sizeof(rbuf), &st);
	if (st != 0)
		FAIL("CLOSE: status %#x", st);
}

static int connect_to(const char *host, int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, IPPROTO_SMBDIRECT);
	if (fd < 0)
		FAIL("socket(AF_INET, SOCK_STREAM, IPPROTO_SMBDIRECT)");
	struct sockaddr_in sin;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	inet_pton(AF_INET, host, &sin.sin_addr);
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0)
		FAIL("connect to %s:%d", host, port);
	return fd;
}

int run_smb(char **argv)
{
	struct conn c;
	memset(&c, 0, sizeof(c));
	srand((unsigned)getpid());
	size_t size = strtoul(argv[8], NULL, 0);
	c.fd = connect_to(argv[2], atoi(argv[3]));
	uint32_t v = 0;
	socklen_t vl = sizeof(v);
	if (getsockopt(c.fd, SOL_SMBDIRECT, SMBDIRECT_RDMA_MODE, &v, &vl) != 0 || v != 1)
		FAIL("RDMA mode %u, not process_vm (1)", v);
	uint32_t max_read, max_write;
	negotiate(&c, &max_read, &max_write);
	if (size > max_read || size > max_write)
		FAIL("size %zu over the server's max read/write", size);
	session_setup(&c, argv[4], argv[5]);
	tree_connect(&c, argv[2], argv[6]);
	uint8_t fid[16];
	create(&c, argv[7], fid);
	/* page-aligned mappings, as an RDMA program would register; filled with a pattern of our own */
	uint8_t *src = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t *dst = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (src == MAP_FAILED || dst == MAP_FAILED)
		FAIL("mmap");
	fill(src, size, 0x9E3779B97F4A7C15ull ^ (uint64_t)getpid());
	char h1[65], h2[65];
	sha256_hex(src, size, h1);
	rdma_io(&c, fid, src, size, 1);
	printf("write %s\n", h1);
	rdma_io(&c, fid, dst, size, 0);
	sha256_hex(dst, size, h2);
	printf("read %s\n", h2);
	close_file(&c, fid);
	if (strcmp(h1, h2) != 0)
		FAIL("read back differs from what was written");
	close(c.fd);
	printf("done\n");
	return 0;
}

