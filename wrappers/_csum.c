/* Optional accelerator for wrappers/packets.py: the ones'-complement sum, and the IP + TCP/UDP
 * headers that carry it, at C speed.
 *
 * fold(buf) returns (int.from_bytes(buf, "big") % 0xFFFF, any byte nonzero): exactly what the
 * pure-Python path computes, so packets.py uses either.
 *
 * tcp_headers(...) and udp_headers(...) return the IP header followed by the TCP or UDP header,
 * byte for byte what packets.build_tcp / build_udp compute in Python (tests/test_packets.py
 * compares them): every capture record of an emulated send is built here, and the Python
 * builder costs ~10 us per record where this costs well under one.
 *
 * lock_init/lock_acquire/lock_release: the capture lock, a process-shared robust mutex (below).
 *
 * Why the sum is read 8 bytes at a time in host order: RFC 1071 section 2(B), the sum is
 * independent of byte order.  Modulo 0xFFFF (2**16 == 1), a little-endian 64-bit load is
 * congruent to the sum of its four little-endian 16-bit words, and 2**64 == 1 as well, so the
 * carry out of the 64-bit accumulator is added back in ("end-around carry").  A little-endian
 * word is its big-endian twin times 256 modulo 0xFFFF ((a*256+b)*256 = a*65536 + b*256 == a +
 * b*256), which turns the host-order sum into the network-order one at the end.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#define WC_BIG_ENDIAN_HOST 1
#endif

/* Sum of the big-endian 16-bit words of p[0..n) (an odd last byte padded with a zero after it,
 * RFC 1071), modulo 0xFFFF; *any is set when a byte is nonzero. */
static uint32_t sum_be(const unsigned char *p, size_t n, int *any) {
    uint64_t acc = 0, seen = 0, w;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&w, p + i, 8);
        acc += w;
        acc += (acc < w); /* end-around carry: 2**64 == 1 (mod 0xFFFF) */
        seen |= w;
    }
#ifdef WC_BIG_ENDIAN_HOST
    uint64_t host = acc % 0xFFFF;          /* already the big-endian sum */
#else
    uint64_t host = (acc % 0xFFFF) * 256;  /* little-endian words -> big-endian, see above */
#endif
    uint64_t tail = 0;
    for (; i + 1 < n; i += 2) tail += ((uint32_t)p[i] << 8) | p[i + 1];
    if (i < n) tail += (uint32_t)p[i] << 8;
    for (size_t j = n & ~(size_t)7; j < n; j++) seen |= p[j];
    if (seen) *any = 1;
    return (uint32_t)((host + tail) % 0xFFFF);
}

/* The checksum field for a sum (mod 0xFFFF) as packets.internet_checksum computes it: all-zero
 * data sums to +0 (complement 0xFFFF); a nonzero multiple of 0xFFFF is -0 (complement 0). */
static uint16_t complement(uint32_t sum, int any) {
    if (!any) return 0xFFFF;
    return sum ? (uint16_t)(0xFFFF - sum) : 0;
}

static PyObject *fold(PyObject *self, PyObject *args) {
    Py_buffer b;
    if (!PyArg_ParseTuple(args, "y*", &b)) return NULL;
    const unsigned char *p = b.buf;
    size_t n = (size_t)b.len;
    uint64_t acc = 0;
    int any = 0;
    Py_BEGIN_ALLOW_THREADS
    if (n & 1) { acc = p[0]; any = p[0] != 0; p++; n--; } /* big-endian int: a leading 0 byte */
    acc = (acc + sum_be(p, n, &any)) % 0xFFFF;
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&b);
    return Py_BuildValue("(KO)", (unsigned long long)acc, any ? Py_True : Py_False);
}

static void put16(unsigned char *p, unsigned v) { p[0] = (unsigned char)(v >> 8); p[1] = (unsigned char)v; }
static void put32(unsigned char *p, uint32_t v) { put16(p, v >> 16); put16(p + 2, v & 0xFFFF); }

/* IP header for `proto` carrying `length` bytes, written at out; returns its size (20 or 40).
 * IPv4: DF set, TTL 64, checksum computed; IPv6: hop limit 64, payload length excludes the
 * fixed header (RFC 8200 section 3). */
static size_t ip_header(unsigned char *out, int v6, const Py_buffer *src, const Py_buffer *dst,
                        unsigned proto, unsigned length, unsigned ipid) {
    if (!v6) {
        memset(out, 0, 20);
        out[0] = 0x45;
        put16(out + 2, 20 + length);
        put16(out + 4, ipid);
        put16(out + 6, 0x4000);
        out[8] = 64;
        out[9] = (unsigned char)proto;
        memcpy(out + 12, src->buf, 4);
        memcpy(out + 16, dst->buf, 4);
        int any = 0;
        uint32_t sum = sum_be(out, 20, &any); /* before complement() reads any */
        put16(out + 10, complement(sum, any));
        return 20;
    }
    put32(out, 6u << 28);
    put16(out + 4, length);
    out[6] = (unsigned char)proto;
    out[7] = 64;
    memcpy(out + 8, src->buf, 16);
    memcpy(out + 24, dst->buf, 16);
    return 40;
}

/* Sum of the pseudo-header TCP and UDP checksums cover (RFC 9293 section 3.1, RFC 8200 8.1). */
static uint32_t pseudo_sum(int v6, const Py_buffer *src, const Py_buffer *dst, unsigned proto,
                           unsigned length, int *any) {
    unsigned char ph[40];
    size_t n = v6 ? 40 : 12;
    size_t a = v6 ? 16 : 4;
    memcpy(ph, src->buf, a);
    memcpy(ph + a, dst->buf, a);
    if (v6) { put32(ph + 32, length); ph[36] = ph[37] = ph[38] = 0; ph[39] = (unsigned char)proto; }
    else { ph[8] = 0; ph[9] = (unsigned char)proto; put16(ph + 10, length); }
    return sum_be(ph, n, any);
}

static int check_addresses(int v6, const Py_buffer *src, const Py_buffer *dst) {
    Py_ssize_t want = v6 ? 16 : 4;
    if (src->len != want || dst->len != want) {
        PyErr_Format(PyExc_ValueError, "addresses must be %zd bytes", want);
        return -1;
    }
    return 0;
}

/* tcp_headers(v6, src_ip, dst_ip, sport, dport, seq, ack, flags, window, ipid, payload) -> bytes */
static PyObject *tcp_headers(PyObject *self, PyObject *args) {
    int v6;
    Py_buffer src, dst, payload;
    unsigned int sport, dport, flags, window, ipid;
    unsigned long seq, ack;
    if (!PyArg_ParseTuple(args, "py*y*IIkkIIIy*", &v6, &src, &dst, &sport, &dport, &seq, &ack, &flags,
                          &window, &ipid, &payload))
        return NULL;
    PyObject *res = NULL;
    unsigned length = 20 + (unsigned)payload.len;
    if (check_addresses(v6, &src, &dst) < 0) goto done;
    if (payload.len > (v6 ? 0xFFFF : 0xFFFF - 20) - 20) {
        PyErr_SetString(PyExc_ValueError, "TCP payload does not fit in one IP packet");
        goto done;
    }
    unsigned char out[60];
    size_t ip = ip_header(out, v6, &src, &dst, 6, length, ipid & 0xFFFF);
    unsigned char *t = out + ip;
    put16(t, sport);
    put16(t + 2, dport);
    put32(t + 4, (uint32_t)seq);
    put32(t + 8, (uint32_t)ack);
    t[12] = 5 << 4;
    t[13] = (unsigned char)flags;
    put16(t + 14, window);
    put16(t + 16, 0);
    put16(t + 18, 0);
    int any = 0;
    uint64_t sum = pseudo_sum(v6, &src, &dst, 6, length, &any);
    sum += sum_be(t, 20, &any);
    Py_BEGIN_ALLOW_THREADS
    sum += sum_be(payload.buf, (size_t)payload.len, &any);
    Py_END_ALLOW_THREADS
    put16(t + 16, complement((uint32_t)(sum % 0xFFFF), any));
    res = PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)(ip + 20));
done:
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    PyBuffer_Release(&payload);
    return res;
}

/* udp_headers(v6, src_ip, dst_ip, sport, dport, ipid, payload) -> bytes; a computed checksum of
 * 0 is sent as 0xFFFF (RFC 768: 0 means "none", which IPv6 forbids). */
static PyObject *udp_headers(PyObject *self, PyObject *args) {
    int v6;
    Py_buffer src, dst, payload;
    unsigned int sport, dport, ipid;
    if (!PyArg_ParseTuple(args, "py*y*IIIy*", &v6, &src, &dst, &sport, &dport, &ipid, &payload))
        return NULL;
    PyObject *res = NULL;
    unsigned length = 8 + (unsigned)payload.len;
    if (check_addresses(v6, &src, &dst) < 0) goto done;
    if (payload.len > (v6 ? 0xFFFF : 0xFFFF - 20) - 8) {
        PyErr_SetString(PyExc_ValueError, "UDP payload does not fit in one IP packet");
        goto done;
    }
    unsigned char out[48];
    size_t ip = ip_header(out, v6, &src, &dst, 17, length, ipid & 0xFFFF);
    unsigned char *u = out + ip;
    put16(u, sport);
    put16(u + 2, dport);
    put16(u + 4, length);
    put16(u + 6, 0);
    int any = 0;
    uint64_t sum = pseudo_sum(v6, &src, &dst, 17, length, &any);
    sum += sum_be(u, 8, &any);
    sum += sum_be(payload.buf, (size_t)payload.len, &any);
    uint16_t c = complement((uint32_t)(sum % 0xFFFF), any);
    put16(u + 6, c ? c : 0xFFFF);
    res = PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)(ip + 8));
done:
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    PyBuffer_Release(&payload);
    return res;
}

/* The capture lock (pcapfile.py): a robust, process-shared pthread mutex in a small shared
 * file that every writer of one pcap maps.  Uncontended, taking and releasing it are two atomic
 * instructions in user space, where flock() costs two system calls per hold; contended, the
 * kernel's futex queue does what flock's wait queue did.  Robust: when a holder dies (even by
 * SIGKILL), the kernel marks the mutex and the next taker gets EOWNERDEAD, makes it consistent
 * and carries on, as flock would have released it.  The mutex is owned by a thread: the caller
 * takes and releases it on the same thread (pcapfile's context manager does), and serialises
 * its own threads with a threading.Lock first. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>

#ifndef YIELDS
#define YIELDS 16
#endif

static int lock_buffer(PyObject *args, Py_buffer *b) {
    if (!PyArg_ParseTuple(args, "w*", b)) return -1;
    if ((size_t)b->len < sizeof(pthread_mutex_t) || ((uintptr_t)b->buf % sizeof(void *)) != 0) {
        PyBuffer_Release(b);
        PyErr_SetString(PyExc_ValueError, "lock buffer too small or misaligned");
        return -1;
    }
    return 0;
}

/* lock_size() -> the bytes a lock needs. */
static PyObject *lock_size(PyObject *self, PyObject *args) {
    return PyLong_FromSize_t(sizeof(pthread_mutex_t));
}

/* lock_init(buffer): make the start of a (shared, writable) buffer an unlocked lock.  Only on
 * memory nobody else uses yet (pcapfile initialises a private file, then links it in place). */
static PyObject *lock_init(PyObject *self, PyObject *args) {
    Py_buffer b;
    if (lock_buffer(args, &b) < 0) return NULL;
    pthread_mutexattr_t attr;
    int err = pthread_mutexattr_init(&attr);
    if (!err) err = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    if (!err) err = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    if (!err) err = pthread_mutex_init((pthread_mutex_t *)b.buf, &attr);
    pthread_mutexattr_destroy(&attr);
    PyBuffer_Release(&b);
    if (err) { errno = err; return PyErr_SetFromErrno(PyExc_OSError); }
    Py_RETURN_NONE;
}

/* lock_acquire(buffer, wait=True) -> True when a dead holder's lock was taken over, else False;
 * None when ``wait`` is false and the lock is held.  Waits without the GIL. */
static PyObject *lock_acquire(PyObject *self, PyObject *args) {
    Py_buffer b;
    int wait = 1;
    if (!PyArg_ParseTuple(args, "w*|p", &b, &wait)) return NULL;
    if ((size_t)b.len < sizeof(pthread_mutex_t) || ((uintptr_t)b.buf % sizeof(void *)) != 0) {
        PyBuffer_Release(&b);
        PyErr_SetString(PyExc_ValueError, "lock buffer too small or misaligned");
        return NULL;
    }
    pthread_mutex_t *m = (pthread_mutex_t *)b.buf;
    int err = pthread_mutex_trylock(m);
    if (err == EBUSY && !wait) {
        PyBuffer_Release(&b);
        Py_RETURN_NONE;
    }
    if (err == EBUSY) {
        Py_BEGIN_ALLOW_THREADS
        /* The holder is usually a peer that our own wake-up preempted on this CPU in the middle
         * of its short hold (a send wakes the receiver, which reacts and wants the lock): yield
         * to it a few times before sleeping on the futex, which costs the holder a wake-up call
         * and both of us two more context switches. */
        for (int i = 0; i < YIELDS && err == EBUSY; i++) {
            sched_yield();
            err = pthread_mutex_trylock(m);
        }
        if (err == EBUSY) err = pthread_mutex_lock(m);
        Py_END_ALLOW_THREADS
    }
    int recovered = 0;
    if (err == EOWNERDEAD) {
        err = pthread_mutex_consistent(m);
        recovered = 1;
    }
    PyBuffer_Release(&b);
    if (err) { errno = err; return PyErr_SetFromErrno(PyExc_OSError); }
    return PyBool_FromLong(recovered);
}

/* lock_release(buffer) */
static PyObject *lock_release(PyObject *self, PyObject *args) {
    Py_buffer b;
    if (lock_buffer(args, &b) < 0) return NULL;
    int err = pthread_mutex_unlock((pthread_mutex_t *)b.buf);
    PyBuffer_Release(&b);
    if (err) { errno = err; return PyErr_SetFromErrno(PyExc_OSError); }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"lock_size", lock_size, METH_NOARGS, "bytes a capture lock needs"},
    {"lock_init", lock_init, METH_VARARGS, "initialise a process-shared robust mutex in a buffer"},
    {"lock_acquire", lock_acquire, METH_VARARGS, "take the mutex; True if its holder had died"},
    {"lock_release", lock_release, METH_VARARGS, "release the mutex"},
    {"fold", fold, METH_VARARGS, "sum mod 0xFFFF, nonzero"},
    {"tcp_headers", tcp_headers, METH_VARARGS, "IP + TCP headers, checksums computed"},
    {"udp_headers", udp_headers, METH_VARARGS, "IP + UDP headers, checksums computed"},
    {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_csum", NULL, -1, methods};
PyMODINIT_FUNC PyInit__csum(void) { return PyModule_Create(&module); }
