/* smbd_calls.c: wirecheck's own IPPROTO_SMBDIRECT calls (register, deregister, RDMA READ) for native
 * programs; every other call on an SMB Direct fd goes through the same overrides as QUIC's (the engine
 * daemon hosts both kinds of socket, quic_preload.c translates the calls, the daemon tells them apart).
 *
 * Registered memory stays where the program has it: the daemon writes the program's pid and address
 * into the connection's region table and the peer's emulated NIC copies with process_vm_readv/writev
 * straight into this process. That needs no privilege for a process of the same user; under Yama's
 * ptrace_scope 1 the peer is not our ancestor, so we allow any of our user's processes in
 * (PR_SET_PTRACER_ANY), as the Python socket does. A memfd would need the program's buffer to be
 * shared memory, which malloc'd or stack memory is not (remapping it under the program is unsafe). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "quic_control.h"
#include "wirecheck_smbdirect.h"

#define WS_EXPORT __attribute__((visibility("default")))

#ifndef PR_SET_PTRACER
#define PR_SET_PTRACER 0x59616d61
#endif
#ifndef PR_SET_PTRACER_ANY
#define PR_SET_PTRACER_ANY ((unsigned long)-1)
#endif

static void put_u64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_u64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static uint32_t get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

WS_EXPORT int wirecheck_smbdirect_register(int fd, void *buf, size_t len, int access,
					   struct smbdirect_buffer_descriptor_v1 *desc)
{
	if (!wq_is_engine_fd(fd))
		return wq_set_errno(ENOTSOCK);
	if (desc == NULL)
		return wq_set_errno(EFAULT);
	prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0); /* no-op without Yama */
	unsigned char req[20], rep[16];
	put_u64(req, (uint64_t)(uintptr_t)buf);
	put_u64(req + 8, (uint64_t)len);
	put_u32(req + 16, (uint32_t)access);
	struct wq_call c;
	wq_call_init(&c, WQD_SMBD_REGISTER, 0, 0, 0);
	c.req.d = (int32_t)getpid();
	c.data = req;
	c.req.len1 = sizeof(req);
	c.out = rep;
	c.out_cap = sizeof(rep);
	if (wq_rpc(fd, &c) < 0)
		return -1;
	if (c.rep.len1 != sizeof(rep))
		return wq_set_errno(EPROTO);
	desc->offset = get_u64(rep);
	desc->token = get_u32(rep + 8);
	desc->length = get_u32(rep + 12);
	return 0;
}

WS_EXPORT int wirecheck_smbdirect_deregister(int fd, uint32_t token)
{
	if (!wq_is_engine_fd(fd))
		return wq_set_errno(ENOTSOCK);
	unsigned char req[4];
	put_u32(req, token);
	struct wq_call c;
	wq_call_init(&c, WQD_SMBD_DEREGISTER, 0, 0, 0);
	c.data = req;
	c.req.len1 = sizeof(req);
	return wq_rpc(fd, &c) < 0 ? -1 : 0;
}

WS_EXPORT ssize_t wirecheck_smbdirect_rdma_read(int fd, void *buf, size_t len,
						const struct smbdirect_buffer_descriptor_v1 *descs, size_t ndesc,
						uint64_t offset)
{
	if (!wq_is_engine_fd(fd))
		return wq_set_errno(ENOTSOCK);
	if (len > WQD_MAX_CALL || ndesc > 4096)
		return wq_set_errno(EINVAL);
	if ((buf == NULL && len > 0) || (descs == NULL && ndesc > 0))
		return wq_set_errno(EFAULT);
	size_t n = 8 + 16 * ndesc;
	unsigned char *req = malloc(n);
	if (req == NULL)
		return wq_set_errno(ENOMEM);
	put_u64(req, offset);
	for (size_t i = 0; i < ndesc; i++) {
		put_u64(req + 8 + 16 * i, descs[i].offset);
		put_u32(req + 16 + 16 * i, descs[i].token);
		put_u32(req + 20 + 16 * i, descs[i].length);
	}
	struct wq_call c;
	wq_call_init(&c, WQD_SMBD_RDMA_READ, (int)len, 0, 0);
	c.data = req;
	c.req.len1 = (uint32_t)n;
	c.out = buf;
	c.out_cap = len;
	long r = wq_rpc(fd, &c);
	free(req);
	return r < 0 ? -1 : (ssize_t)c.rep.len1;
}
