/*
 * What the transports share (transport/sock.h).
 *
 * Design notes.
 *
 * Messages: a why line names the address and the cause in words a user can act on. Where a
 * cause is an errno, the line ends with its meaning and its name ("out of file descriptors
 * (EMFILE)"): the name for searching and bug reports, the meaning for everyone else. The
 * errnos an operator meets most get a plainer phrase than strerror's.
 *
 * Accept: Linux reports a pending connection's network error from accept itself (accept(2));
 * that connection is gone, so it is skipped as if it had never been queued. Running out of
 * fds or buffers is not skipped: the listening fd stays readable, and the caller must pause
 * rather than spin.
 */
#define _GNU_SOURCE /* accept4, strerrorname_np, strerrordesc_np */
#include "transport/sock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "arpc/error.h"

void arpc_sock_close_keep_errno(int fd)
{
    int saved = errno;
    close(fd);
    errno = saved;
}

/* ---- why lines ---- */

static const char *errno_phrase(int err)
{
    switch (err) {
    case EMFILE:
        return "out of file descriptors";
    case ENFILE:
        return "the system is out of file descriptors";
    case ENOBUFS:
        return "out of socket buffers";
    case ENOMEM:
        return "out of kernel memory";
    default: {
        const char *desc = strerrordesc_np(err);
        return desc != NULL ? desc : "unknown error";
    }
    }
}

/* Writes the line, then ": phrase (ENAME)" when err is not 0 and there is room left. */
static int vwhy(char *why, size_t whylen, int code, int err, const char *fmt, va_list ap)
{
    if (why == NULL || whylen == 0)
        return code;
    int saved = errno;
    int used = vsnprintf(why, whylen, fmt, ap);
    if (err != 0 && used >= 0 && (size_t)used < whylen) {
        const char *name = strerrorname_np(err);
        if (name != NULL)
            snprintf(why + used, whylen - (size_t)used, ": %s (%s)", errno_phrase(err), name);
        else
            snprintf(why + used, whylen - (size_t)used, ": %s (errno %d)", errno_phrase(err), err);
    }
    errno = saved;
    return code;
}

int arpc_sock_why(char *why, size_t whylen, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vwhy(why, whylen, code, 0, fmt, ap);
    va_end(ap);
    return code;
}

int arpc_sock_why_errno(char *why, size_t whylen, int code, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vwhy(why, whylen, code, err, fmt, ap);
    va_end(ap);
    return code;
}

/* ---- addresses ---- */

static int full_addr(const struct arpc_transport_ops *ops, const char *rest, char *out,
                     char *why, size_t whylen)
{
    int n = snprintf(out, ARPC_ADDR_MAX, "%s://%s", ops->t_scheme, rest);
    if (n >= 0 && n < ARPC_ADDR_MAX)
        return ARPC_OK;
    out[0] = '\0';
    return arpc_sock_why(why, whylen, ARPC_EADDR, "address too long (at most %d bytes): %s://%.40s...",
                         ARPC_ADDR_MAX - 1, ops->t_scheme, rest);
}

int arpc_sock_target_init(struct arpc_target *t, const struct arpc_transport_ops *ops,
                          const char *rest, char *why, size_t whylen)
{
    memset(t, 0, sizeof(*t)); /* no stale address survives in a reused target */
    t->t_ops = ops;
    return full_addr(ops, rest, t->t_addr, why, whylen);
}

const char *arpc_sock_target_rest(const struct arpc_target *t)
{
    return t->t_addr + strlen(t->t_ops->t_scheme) + strlen("://");
}

int arpc_sock_listener_init(struct arpc_listener *l, const struct arpc_transport_ops *ops,
                            const char *rest, char *why, size_t whylen)
{
    l->l_ops = ops;
    l->l_fd = -1;
    return full_addr(ops, rest, l->l_addr, why, whylen);
}

int arpc_sock_inet_name(const struct sockaddr *sa, const char *scheme, char *out, size_t outlen)
{
    char ip[INET6_ADDRSTRLEN];
    unsigned port;
    bool v6 = sa->sa_family == AF_INET6;
    if (v6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
        port = ntohs(sin6->sin6_port);
    } else if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
        port = ntohs(sin->sin_port);
    } else {
        if (outlen > 0)
            out[0] = '\0';
        return ARPC_EADDR;
    }
    int n = snprintf(out, outlen, "%s%s%s%s%s:%u", scheme != NULL ? scheme : "",
                     scheme != NULL ? "://" : "", v6 ? "[" : "", ip, v6 ? "]" : "", port);
    if (n >= 0 && (size_t)n < outlen)
        return ARPC_OK;
    if (outlen > 0)
        out[0] = '\0';
    return ARPC_EADDR;
}

void arpc_sock_target_name(const struct arpc_target *t, size_t i, char *out, size_t outlen)
{
    if (i >= t->t_count) {
        snprintf(out, outlen, "%s", t->t_addr);
        return;
    }
    const struct sockaddr *sa = (const struct sockaddr *)&t->t_sa[i];
    const char *rest = arpc_sock_target_rest(t);
    char num[INET6_ADDRSTRLEN + sizeof("[]:65535")];
    if (sa->sa_family == AF_UNIX)
        snprintf(out, outlen, "unix path %s", ((const struct sockaddr_un *)sa)->sun_path);
    else if (arpc_sock_inet_name(sa, NULL, num, sizeof(num)) != ARPC_OK)
        snprintf(out, outlen, "%s", t->t_addr);
    else if (strcmp(num, rest) == 0)
        snprintf(out, outlen, "%s", num);
    else /* a name: say what it resolved to */
        snprintf(out, outlen, "%s (%s)", rest, num);
}

/* ---- listening ---- */

/* The causes listening and connecting share; doing: "listening on", "connecting to". */
static int shared_cause(int err, const char *doing, const char *what, char *why, size_t whylen)
{
    switch (err) {
    case EACCES:
    case EPERM:
        return arpc_sock_why(why, whylen, ARPC_ESYSTEM, "permission denied for %s", what);
    case EAFNOSUPPORT: /* e.g. IPv6 disabled */
        return arpc_sock_why(why, whylen, ARPC_EADDR, "address family not supported: %s", what);
    default: /* EMFILE, ENOBUFS...: the errno says it */
        return arpc_sock_why_errno(why, whylen, ARPC_ESYSTEM, err, "%s %s failed", doing, what);
    }
}

int arpc_sock_listen_failed(int err, const char *what, char *why, size_t whylen)
{
    int rv;
    if (err == EADDRINUSE)
        rv = arpc_sock_why(why, whylen, ARPC_EADDRINUSE, "address already in use: %s", what);
    else if (err == EADDRNOTAVAIL)
        rv = arpc_sock_why(why, whylen, ARPC_EADDR, "not an address of this host: %s", what);
    else
        rv = shared_cause(err, "listening on", what, why, whylen);
    errno = err;
    return rv;
}

int arpc_sock_accept(struct arpc_listener *l, int *fd_out, char *peer, size_t peerlen,
                     char *why, size_t whylen)
{
    for (;;) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof(sa);
        int fd = accept4(l->l_fd, (struct sockaddr *)&sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            arpc_sock_peer_name(l, &sa, peer, peerlen);
            *fd_out = fd;
            return ARPC_OK;
        }
        switch (errno) {
        case EAGAIN:
            return ARPC_EAGAIN;
        case EINTR:
        case ECONNABORTED: /* the client left before we got to it */
        case ENETDOWN:     /* the rest: the pending connection's own network error */
        case EPROTO:
        case ENOPROTOOPT:
        case EHOSTDOWN:
        case ENONET:
        case EHOSTUNREACH:
        case EOPNOTSUPP:
        case ENETUNREACH:
            continue;
        default: { /* EMFILE, ENFILE, ENOBUFS, ENOMEM: the caller must pause, not spin */
            int err = errno;
            int rv = arpc_sock_why_errno(why, whylen, ARPC_ESYSTEM, err, "accept on %s failed", l->l_addr);
            errno = err; /* the caller tells running out of descriptors from the rest */
            return rv;
        }
        }
    }
}

void arpc_sock_peer_name(const struct arpc_listener *l, const struct sockaddr_storage *sa,
                         char *peer, size_t peerlen)
{
    if (peer == NULL || peerlen == 0)
        return;
    if (sa != NULL &&
        arpc_sock_inet_name((const struct sockaddr *)sa, l->l_ops->t_scheme, peer, peerlen) == ARPC_OK)
        return;
    snprintf(peer, peerlen, "%s", l->l_addr);
}

/* ---- connecting ---- */

int arpc_sock_connect_start(const struct sockaddr *sa, socklen_t salen, int *fd_out)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return ARPC_ESYSTEM;
    int rv = ARPC_OK;
    if (connect(fd, sa, salen) != 0) {
        /* EINTR on a non-blocking connect: the attempt goes on in the background. */
        if (errno != EINPROGRESS && errno != EINTR) {
            arpc_sock_close_keep_errno(fd);
            return ARPC_ESYSTEM;
        }
        rv = ARPC_EAGAIN;
    }
    *fd_out = fd;
    return rv;
}

int arpc_sock_connect_done(const struct arpc_target *t, size_t i, int fd, char *why,
                           size_t whylen)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    return err == 0 ? ARPC_OK : arpc_sock_connect_failed(t, i, err, why, whylen);
}

int arpc_sock_connect_failed(const struct arpc_target *t, size_t i, int err, char *why,
                             size_t whylen)
{
    char name[ARPC_WHY_MAX];
    arpc_sock_target_name(t, i, name, sizeof(name));
    int rv;
    switch (err) {
    case ECONNREFUSED:
        rv = arpc_sock_why(why, whylen, ARPC_ECONNREFUSED, "connection refused by %s", name);
        break;
    case ECONNRESET:
        rv = arpc_sock_why(why, whylen, ARPC_ECONNREFUSED, "connection reset by %s", name);
        break;
    case EHOSTUNREACH:
    case EHOSTDOWN:
        rv = arpc_sock_why(why, whylen, ARPC_ECONNREFUSED, "host unreachable: %s", name);
        break;
    case ENETUNREACH:
    case ENETDOWN:
        rv = arpc_sock_why(why, whylen, ARPC_ECONNREFUSED, "network unreachable: %s", name);
        break;
    case ETIMEDOUT: /* the kernel gave up (SYN retries), before any deadline of ours */
        rv = arpc_sock_why(why, whylen, ARPC_ETIMEDOUT, "connecting to %s timed out", name);
        break;
    default:
        rv = shared_cause(err, "connecting to", name, why, whylen);
        break;
    }
    errno = err;
    return rv;
}

int arpc_sock_peer_creds(int fd, struct arpc_peer_creds *out)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
        return ARPC_ESYSTEM;
    *out = (struct arpc_peer_creds){.pc_uid = cred.uid, .pc_gid = cred.gid, .pc_pid = cred.pid};
    return ARPC_OK;
}
