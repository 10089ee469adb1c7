/*
 * The transport interface: one ops table per address scheme, each in its own file whose
 * only export is that table (transport/tcp.c, transport/unix.c, transport/inproc.c).
 *
 * Transports deal only in non-blocking, close-on-exec file descriptors; reading, writing and
 * framing are the core's job (every transport yields a stream socket). Ops never call back
 * into the core. Which ops block is stated per op. All ops are thread-safe; a listener must
 * not be used by other calls while or after t_unlisten runs.
 *
 * Addresses: "tcp://HOST:PORT" (IPv4 dotted quad, "[v6]" or a name resolved with
 * getaddrinfo; PORT 0 picks a free port on listen), "unix:///absolute/path" (or a relative
 * path: "unix://rel/path"), "inproc://NAME" (in this process only), "tls://HOST:PORT" (as
 * tcp; the transport yields the socket, the core adds TLS: transport/tls.h).
 *
 * Errors: every op that can fail takes why/whylen. why may be NULL (nothing is written);
 * otherwise a failure writes one NUL-terminated line a user can act on, naming the address
 * and the cause ("connection refused by 127.0.0.1:7000"), with no "arpc:" prefix and no
 * newline, cut to fit whylen (ARPC_WHY_MAX is a good size). why is left alone on success
 * and on ARPC_EAGAIN. errno is left as the failing system call set it.
 */
#ifndef ARPC_TRANSPORT_TRANSPORT_H
#define ARPC_TRANSPORT_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define ARPC_ADDR_MAX 256
#define ARPC_WHY_MAX 256 /* a good size for `why` buffers */
#define ARPC_TARGET_MAX_ADDRS 8

/* Where to connect, resolved ahead (t_resolve) so that connecting never waits on a name
 * lookup. Plain data owned by the caller: copy it, keep it, use it from any thread. */
struct arpc_target {
    const struct arpc_transport_ops *t_ops;
    char t_addr[ARPC_ADDR_MAX]; /* the full address as given, e.g. "tcp://localhost:7000" */
    size_t t_count;             /* addresses to try, in order (>= 1 on success) */
    struct sockaddr_storage t_sa[ARPC_TARGET_MAX_ADDRS];
    socklen_t t_salen[ARPC_TARGET_MAX_ADDRS];
    bool t_named; /* the addresses are a name lookup's answer, which may change (a client
                   * looks it up again when reconnects fail: core/client_lookup.c) */
};

/* A listening socket, made by t_listen and released by t_unlisten only. A transport
 * allocates a larger struct beginning with this one for its private state (the unix path to
 * unlink, the inproc registration); the caller reads these fields and never writes them. */
struct arpc_listener {
    const struct arpc_transport_ops *l_ops;
    int l_fd;                   /* non-blocking; readable while a connection waits */
    char l_addr[ARPC_ADDR_MAX]; /* the address actually bound (the port chosen for port 0) */
};

/* The process at the other end of a local socket, as the kernel saw it at connect (SO_PEERCRED). */
struct arpc_peer_creds {
    uint32_t pc_uid, pc_gid; /* effective ids */
    int32_t pc_pid;
};

struct arpc_transport_ops {
    const char *t_scheme; /* "tcp", "unix", "inproc" */

    /* Parses rest (after "scheme://") into *target (t_ops and t_addr included). May block on
     * a name lookup: call it on an application thread, never on a loop thread. Errors:
     * ARPC_EADDR (malformed, or the name does not resolve), ARPC_ENOMEM, ARPC_ESYSTEM
     * (resolver unreachable: worth retrying later). */
    int (*t_resolve)(const char *rest, struct arpc_target *target, char *why, size_t whylen);

    /* Starts connecting to address i (< t_count) of target. Never blocks. ARPC_OK: *fd_out
     * is connected; ARPC_EAGAIN: *fd_out is connecting: wait until it is writable, then call
     * t_connect_done; any other code: failed, no fd (ARPC_ECONNREFUSED, ARPC_EADDR,
     * ARPC_ESYSTEM...). ARPC_ECONNREFUSED with errno left at EAGAIN means the server is there
     * but has no room now (a unix listener's full backlog): worth retrying soon. */
    int (*t_connect_start)(const struct arpc_target *target, size_t i, int *fd_out, char *why,
                           size_t whylen);

    /* Collects the outcome of a connect left in progress, once fd is writable. Never blocks.
     * ARPC_OK, or an error (the caller closes fd): ARPC_ECONNREFUSED, ARPC_ETIMEDOUT,
     * ARPC_ESYSTEM. */
    int (*t_connect_done)(const struct arpc_target *target, size_t i, int fd, char *why,
                          size_t whylen);

    /* Creates a listener for rest; the caller owns *out until it gives it to t_unlisten.
     * Does not block. Errors: ARPC_EADDR, ARPC_EADDRINUSE, ARPC_ENOMEM, ARPC_ESYSTEM. */
    int (*t_listen)(const char *rest, struct arpc_listener **out, char *why, size_t whylen);

    /* Accepts one connection (non-blocking, close-on-exec; TCP_NODELAY for tcp) and writes its
     * peer's name to peer ("tcp://10.1.2.3:5555", "tcp://[::1]:5555"; unix and inproc peers
     * have no address of their own: the listener's address); ARPC_ADDR_MAX bytes hold any
     * name. Does not block: ARPC_EAGAIN when none waits; connections that failed before
     * accept are skipped. Errors: ARPC_ESYSTEM with why naming the cause (e.g. "out of file
     * descriptors (EMFILE)") and errno as accept(2) left it: the caller pauses accepting,
     * as the fd stays readable (or, for EMFILE/ENFILE, frees a spare descriptor to shed the
     * pending connection: core/listener.c). */
    int (*t_accept)(struct arpc_listener *l, int *fd_out, char *peer, size_t peerlen,
                    char *why, size_t whylen);

    /* Closes the listener, releases what t_listen reserved (unlinks the unix path, unregisters
     * the inproc name; connections not yet accepted are closed) and frees l. */
    void (*t_unlisten)(struct arpc_listener *l);

    /* Optional (NULL where the scheme has none, e.g. tcp): the credentials of the peer of an
     * accepted fd. Does not block. ARPC_OK, or ARPC_ESYSTEM (errno says why). */
    int (*t_peer_creds)(int fd, struct arpc_peer_creds *out);
};

extern const struct arpc_transport_ops arpc_transport_tcp;
extern const struct arpc_transport_ops arpc_transport_unix;
extern const struct arpc_transport_ops arpc_transport_inproc;
/* "tls://HOST:PORT": tcp's sockets; the core puts TLS on them (transport/tls.h). Built
 * without TLS, every op refuses with ARPC_EADDR "built without TLS". */
extern const struct arpc_transport_ops arpc_transport_tls;

/* Finds the ops for addr's scheme and sets *rest to the part after "scheme://". NULL for an
 * unknown scheme or a malformed or too long (>= ARPC_ADDR_MAX bytes) address. */
const struct arpc_transport_ops *arpc_transport_find(const char *addr, const char **rest);

/* Why arpc_transport_find rejected addr, in why: "unknown scheme in ..." (naming the schemes
 * there are), "address too long ...", "no address given". Returns ARPC_EADDR. */
int arpc_transport_find_failed(const char *addr, char *why, size_t whylen);

/* find + t_resolve; blocks as t_resolve does. ARPC_EADDR (why: "unknown scheme in ...")
 * for an address find rejects. */
int arpc_transport_resolve(const char *addr, struct arpc_target *target, char *why,
                           size_t whylen);

/* A blocking connect for tests and tools (the client connects through its loop instead):
 * resolve, then try each address in turn within one time budget (timeout_ms; ARPC_FOREVER or
 * any negative: no limit; INT64_MAX works too), waiting with poll. A timeout spends the
 * budget and ends the search; a unix backlog that stays full until then is ARPC_ETIMEDOUT.
 * Errors: those of t_resolve and t_connect_start, ARPC_ETIMEDOUT. */
int arpc_transport_connect(const char *addr, int64_t timeout_ms, int *fd_out, char *why,
                           size_t whylen);

#endif
