/*
 * What the transports share (tcp.c, unix.c, inproc.c, transport.c), written once: closing
 * on an error path, the one-line `why` messages and the errno causes in them, naming inet
 * addresses, the accept loop, and both halves of a non-blocking connect.
 *
 * Internal to transport/: nothing outside it includes this header. Every function is
 * thread-safe, never blocks and never allocates.
 */
#ifndef ARPC_TRANSPORT_SOCK_H
#define ARPC_TRANSPORT_SOCK_H

#include <stddef.h>
#include <sys/socket.h>

#include "transport/transport.h"

/* Closes fd without touching errno, so an error path can clean up and still report why. */
void arpc_sock_close_keep_errno(int fd);

/* ---- why lines (format in transport.h); these leave errno alone ---- */

/* Writes the formatted line into why (unless why is NULL or whylen 0), cut to fit, and
 * returns code, so a failure is one statement: return arpc_sock_why(why, whylen, code, ...). */
int arpc_sock_why(char *why, size_t whylen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* As arpc_sock_why, followed by ": " and what err means with its name, e.g. "accept on
 * tcp://0.0.0.0:7000 failed: out of file descriptors (EMFILE)". */
int arpc_sock_why_errno(char *why, size_t whylen, int code, int err, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* ---- addresses ---- */

/* Starts filling *t for ops and rest: t_ops, t_addr = "scheme://rest", t_count = 0.
 * ARPC_EADDR (with why) when the full address does not fit ARPC_ADDR_MAX. */
int arpc_sock_target_init(struct arpc_target *t, const struct arpc_transport_ops *ops,
                          const char *rest, char *why, size_t whylen);

/* The part of t->t_addr after "scheme://". */
const char *arpc_sock_target_rest(const struct arpc_target *t);

/* Starts filling a listener for ops whose address is "scheme://rest" (unix and inproc; tcp
 * reports the bound address instead): l_ops, l_addr, l_fd = -1. ARPC_EADDR (with why) when
 * the address does not fit. */
int arpc_sock_listener_init(struct arpc_listener *l, const struct arpc_transport_ops *ops,
                            const char *rest, char *why, size_t whylen);

/* Writes an AF_INET or AF_INET6 address as "1.2.3.4:5" or "[::1]:5", after "scheme://" when
 * scheme is not NULL. ARPC_OK; ARPC_EADDR for another family or when outlen cuts the text
 * (a cut address would be a wrong one; out then holds "" when outlen > 0). */
int arpc_sock_inet_name(const struct sockaddr *sa, const char *scheme, char *out, size_t outlen);

/* Names address i of t for why lines: "127.0.0.1:7000", "localhost:7000 (127.0.0.1:7000)"
 * when a name was resolved, "unix path /run/x.sock", or t_addr. Cut to fit outlen (> 0). */
void arpc_sock_target_name(const struct arpc_target *t, size_t i, char *out, size_t outlen);

/* ---- listening ---- */

/* Maps what bind or listen set errno to; what names the address ("tcp://0.0.0.0:80").
 * EADDRINUSE: ARPC_EADDRINUSE; not an address of this host or an unsupported family:
 * ARPC_EADDR; the rest (EACCES, EMFILE...): ARPC_ESYSTEM. Leaves errno at err. */
int arpc_sock_listen_failed(int err, const char *what, char *why, size_t whylen);

/* A t_accept for socket listeners (unix's, and tcp's before TCP_NODELAY): accepts one
 * connection from l->l_fd as a non-blocking, close-on-exec fd and names its peer
 * (arpc_sock_peer_name), skipping connections that failed before accept. ARPC_OK,
 * ARPC_EAGAIN when none waits, ARPC_ESYSTEM (with why: out of fds, of buffers...). */
int arpc_sock_accept(struct arpc_listener *l, int *fd_out, char *peer, size_t peerlen,
                     char *why, size_t whylen);

/* The name of a peer accepted on l: "scheme://1.2.3.4:5" or "scheme://[::1]:5" for an inet
 * peer; l->l_addr for anything else (unix and inproc peers have no address of their own). */
void arpc_sock_peer_name(const struct arpc_listener *l, const struct sockaddr_storage *sa,
                         char *peer, size_t peerlen);

/* ---- connecting ---- */

/* Creates a non-blocking, close-on-exec stream socket for sa and starts connecting it.
 * ARPC_OK: connected; ARPC_EAGAIN: in progress (wait until writable); both set *fd_out.
 * ARPC_ESYSTEM: no fd, errno says why; no why is written: the caller knows the names. */
int arpc_sock_connect_start(const struct sockaddr *sa, socklen_t salen, int *fd_out);

/* A t_connect_done for every transport: reads the outcome from SO_ERROR and reports a
 * failure as arpc_sock_connect_failed does. */
int arpc_sock_connect_done(const struct arpc_target *t, size_t i, int fd, char *why,
                           size_t whylen);

/* Maps what a connect to address i of t set errno to, for the causes all sockets share.
 * Refused, reset or unreachable: ARPC_ECONNREFUSED; ETIMEDOUT: ARPC_ETIMEDOUT; an
 * unsupported family: ARPC_EADDR; the rest (EACCES, EMFILE...): ARPC_ESYSTEM. Leaves errno
 * at err. */
int arpc_sock_connect_failed(const struct arpc_target *t, size_t i, int err, char *why,
                             size_t whylen);

/* t_peer_creds for AF_UNIX sockets (unix and inproc): SO_PEERCRED. */
int arpc_sock_peer_creds(int fd, struct arpc_peer_creds *out);

#endif
