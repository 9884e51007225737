/* wirecheck's own entry points in libwirecheck_quic.so (not quic.ko's API). A program finds them
 * with dlsym(RTLD_DEFAULT, ...) so it still links and runs without the library. */
#ifndef WIRECHECK_QUIC_H
#define WIRECHECK_QUIC_H

/* TLS inside the engine (the Python client_handshake/server_handshake): role 0 client, 1 server;
 * settings are "key=value" lines: psk_file, pkey_file, cert_file, alpns, hostname, timeout.
 * 0, or -1 with errno (ETIMEDOUT, ECONNREFUSED with the reason in the daemon's log). */
int wirecheck_quic_handshake(int fd, int role, const char *settings);

/* The name of the i-th libc entry point the library overrides, NULL past the end. */
const char *wirecheck_quic_override(int i);
/* Why it is overridden. */
const char *wirecheck_quic_override_reason(int i);

#endif
