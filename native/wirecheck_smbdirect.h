/* IPPROTO_SMBDIRECT for native programs under `wirecheck exec` (libwirecheck_quic.so), the same API the
 * Python socket has: socket(AF_INET|AF_INET6, SOCK_STREAM, IPPROTO_SMBDIRECT), connect/bind/listen/
 * accept, one whole SMB2 message per send/recv (MSG_TRUNC when the buffer is short), options at
 * SOL_SMBDIRECT (4-byte values, ms for times; read back the negotiated values), RDMA WRITE as sendmsg
 * with MSG_OOB and an SMBDIRECT_CMSG_RDMA_DESCRIPTORS cmsg, and wirecheck's own calls below for
 * registering memory and RDMA READ (the Python socket's register/deregister/rdma_read). Numbers from
 * the kernel proposal (IPPROTO_SMBDIRECT 257, SOL_SMBDIRECT 289), the rest wirecheck's (README). */
#ifndef WIRECHECK_SMBDIRECT_H
#define WIRECHECK_SMBDIRECT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define IPPROTO_SMBDIRECT 257
#define SOL_SMBDIRECT 289

/* options (level SOL_SMBDIRECT): settable before connect()/listen(), readable at any time */
#define SMBDIRECT_RECEIVE_CREDIT_MAX 1
#define SMBDIRECT_SEND_CREDIT_TARGET 2
#define SMBDIRECT_MAX_SEND_SIZE 3
#define SMBDIRECT_MAX_RECEIVE_SIZE 4
#define SMBDIRECT_MAX_FRAGMENTED_RECV_SIZE 5
#define SMBDIRECT_MAX_FRAGMENTED_SEND_SIZE 6 /* read-only */
#define SMBDIRECT_MAX_READ_WRITE_SIZE 7
#define SMBDIRECT_KEEPALIVE_INTERVAL 8
#define SMBDIRECT_KEEPALIVE_RESPONSE_TIMEOUT 9
#define SMBDIRECT_NEGOTIATE_TIMEOUT 10
#define SMBDIRECT_SEND_CREDITS 11	     /* read-only */
#define SMBDIRECT_RECEIVE_CREDITS 12	     /* read-only */
#define SMBDIRECT_CONNECTION_PARAMETERS 13 /* read-only, 6 x u32 */
#define SMBDIRECT_RDMA_MODE 14	     /* read-only: 1 process_vm, 2 memfd */

/* control messages (cmsg_level SOL_SMBDIRECT) */
#define SMBDIRECT_CMSG_REMOTE_INVALIDATE 1 /* sendmsg: u32 token, a SEND with Invalidate */
#define SMBDIRECT_CMSG_INVALIDATED_TOKEN 2 /* recvmsg: u32 of ours the peer invalidated */
#define SMBDIRECT_CMSG_RDMA_DESCRIPTORS 3  /* sendmsg(MSG_OOB): descriptors; the data is RDMA WRITTEN */
#define SMBDIRECT_CMSG_RDMA_OFFSET 4	     /* sendmsg(MSG_OOB): u64 offset into the descriptors */

/* registration access */
#define SMBDIRECT_RDMA_REMOTE_READ 1  /* the peer may RDMA READ the buffer (an SMB2 WRITE's source) */
#define SMBDIRECT_RDMA_REMOTE_WRITE 2 /* the peer may RDMA WRITE into it (an SMB2 READ's destination) */

/* SMB_DIRECT_BUFFER_DESCRIPTOR_V1 (MS-SMBD 2.2.3.1), little-endian on the wire, 16 bytes */
struct smbdirect_buffer_descriptor_v1 {
	uint64_t offset;
	uint32_t token;
	uint32_t length;
};

/* MS-SMBD 3.1.4.3: make [buf, buf+len) reachable by the peer's RDMA; fills one descriptor.
 * 0, or -1 with errno (EINVAL access/length, EFAULT an address not ours, ENOTCONN, EOPNOTSUPP when
 * the peer cannot reach process memory). Keep the memory mapped until deregistered or invalidated. */
int wirecheck_smbdirect_register(int fd, void *buf, size_t len, int access,
				 struct smbdirect_buffer_descriptor_v1 *desc);
/* MS-SMBD 3.1.4.4: 0, or -1 with ENOENT when the token is not registered (or was invalidated). */
int wirecheck_smbdirect_deregister(int fd, uint32_t token);
/* MS-SMBD 3.1.4.6: RDMA READ len bytes from the peer's registered buffers into buf. */
ssize_t wirecheck_smbdirect_rdma_read(int fd, void *buf, size_t len, const struct smbdirect_buffer_descriptor_v1 *descs,
				      size_t ndesc, uint64_t offset);

#endif
