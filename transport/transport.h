/*
 * The transport interface: one ops table per address scheme, each in its own file whose
 * only export is that table (transport/tcp.c, transport/unix.c, transport/inproc.c).
 *
 * Transports deal only in non-blocking file descriptors; reading, writing and framing are the
 * core's job (every transport yields a stream socket). Ops never call back into the core.
 * Which ops block is stated per op. All ops are thread-safe.
 *
 * Addresses: "tcp://HOST:PORT" (IPv4 dotted quad, "[v6]" or a name resolved with
 * getaddrinfo; PORT 0 picks a free port on listen), "unix:///absolute/path" (or a relative
 * path: "unix://rel/path"), "inproc://NAME" (in this process only).
 */
#ifndef ARPC_TRANSPORT_TRANSPORT_H
#define ARPC_TRANSPORT_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#define ARPC_ADDR_MAX 256

struct arpc_transport_ops {
    const char *t_scheme; /* "tcp", "unix", "inproc" */

    /* Creates a non-blocking listening fd for rest (the address after "scheme://"). Does not
     * block. bound receives the full address actually bound (e.g. the port chosen for port
     * 0), NUL-terminated, at most boundlen bytes. Errors: ARPC_EADDR, ARPC_EADDRINUSE,
     * ARPC_ENOMEM, ARPC_ESYSTEM. */
    int (*t_listen)(const char *rest, int *fd_out, char *bound, size_t boundlen);

    /* Accepts one connection as a non-blocking, close-on-exec fd. Does not block: returns
     * ARPC_EAGAIN when none is waiting. Errors: ARPC_ESYSTEM. */
    int (*t_accept)(int listen_fd, int *fd_out);

    /* Closes a listening fd and releases what t_listen reserved (unlinks the unix socket
     * path, unregisters the inproc name). rest is the address given to t_listen. */
    void (*t_unlisten)(const char *rest, int listen_fd);

    /* Connects, blocking the caller at most timeout_ms (ARPC_FOREVER = -1: no limit); the
     * returned fd is non-blocking and close-on-exec. Errors: ARPC_EADDR, ARPC_ECONNREFUSED,
     * ARPC_ETIMEDOUT, ARPC_ENOMEM, ARPC_ESYSTEM. */
    int (*t_connect)(const char *rest, int64_t timeout_ms, int *fd_out);
};

extern const struct arpc_transport_ops arpc_transport_tcp;
extern const struct arpc_transport_ops arpc_transport_unix;
extern const struct arpc_transport_ops arpc_transport_inproc;

/* Finds the ops for addr's scheme and sets *rest to the part after "scheme://".
 * Returns NULL for an unknown scheme or a malformed address. */
const struct arpc_transport_ops *arpc_transport_find(const char *addr, const char **rest);

#endif
