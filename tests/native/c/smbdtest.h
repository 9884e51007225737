/* smbdtest.h: what smbdtest.c (the socket, RDMA and errno modes) and smbd_smb2.c (the SMB 3.1.1 client)
 * share: little-endian packing, hashes, the failure macro, and wirecheck's own calls found at run time. */
#ifndef SMBDTEST_H
#define SMBDTEST_H

#include <errno.h>
#include <nettle/sha2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "wirecheck_smbdirect.h"

/* wirecheck's own calls, found with dlsym at start (the program links and runs without the library, as
 * a program written for a kernel with smbdirect would); defined in smbdtest.c */
extern int (*ws_register)(int, void *, size_t, int, struct smbdirect_buffer_descriptor_v1 *);
extern int (*ws_deregister)(int, uint32_t);
extern ssize_t (*ws_rdma_read)(int, void *, size_t, const struct smbdirect_buffer_descriptor_v1 *, size_t, uint64_t);
#define wirecheck_smbdirect_register ws_register
#define wirecheck_smbdirect_deregister ws_deregister
#define wirecheck_smbdirect_rdma_read ws_rdma_read

#define FAIL(...)                                                                                                      \
	do {                                                                                                           \
		printf("FAIL ");                                                                                       \
		printf(__VA_ARGS__);                                                                                   \
		printf(" (errno %d)\n", errno);                                                                        \
		exit(1);                                                                                               \
	} while (0)

/* ---- little-endian helpers ------------------------------------------------------------------------ */
static inline void p16(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}
static inline void p32(uint8_t *p, uint32_t v)
{
	p16(p, v & 0xffff);
	p16(p + 2, v >> 16);
}
static inline void p64(uint8_t *p, uint64_t v)
{
	p32(p, (uint32_t)v);
	p32(p + 4, (uint32_t)(v >> 32));
}
static inline uint32_t g16(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}
static inline uint32_t g32(const uint8_t *p)
{
	return g16(p) | g16(p + 2) << 16;
}
static inline uint64_t g64(const uint8_t *p)
{
	return (uint64_t)g32(p) | (uint64_t)g32(p + 4) << 32;
}

static inline void put_desc(uint8_t out[16], const struct smbdirect_buffer_descriptor_v1 *d)
{
	p64(out, d->offset), p32(out + 8, d->token), p32(out + 12, d->length);
}

static inline void hex(char *out, const uint8_t *d, size_t n)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", d[i]);
}


static inline void sha256_hex(const uint8_t *d, size_t n, char out[65])
{
	struct sha256_ctx s;
	uint8_t h[32];
	sha256_init(&s);
	sha256_update(&s, n, d);
	sha256_digest(&s, 32, h);
	hex(out, h, 32);
}


static inline void fill(uint8_t *p, size_t n, uint64_t seed)
{
	uint64_t x = seed;
	for (size_t i = 0; i < n; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		p[i] = (uint8_t)x;
	}
}

int run_smb(char **argv); /* smbd_smb2.c */

#endif
