/*
 * TCP transport: "tcp://HOST:PORT" with HOST an IPv4 dotted quad, "[IPv6]" or a name.
 *
 * Design notes.
 *
 * Resolution: numeric hosts are converted with inet_pton and never reach getaddrinfo (no
 * allocation, no NSS); names go through getaddrinfo, whose answers are copied into a small
 * fixed array so both paths hand the same thing to listen and connect. A name may yield
 * several addresses: listen binds the first that works, connect tries each in turn within
 * the one time budget (so "localhost" works whether the server is on 127.0.0.1 or ::1).
 * An empty HOST is rejected: say "0.0.0.0" or "[::]" to listen on every interface.
 *
 * Latency: TCP_NODELAY on both ends. The core writes whole batches with one writev, so
 * Nagle's algorithm has nothing to coalesce and would only hold back the last small frame.
 *
 * Errors: ARPC_ESYSTEM leaves errno as the failing system call set it.
 */
#define _GNU_SOURCE /* accept4 */
#include "transport/transport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "arpc/common.h"
#include "arpc/error.h"

/* Queue length for connections not yet accepted; the kernel caps it at net.core.somaxconn.
 * Large, so that a burst of clients is not refused while the reactor is busy. */
#define TCP_BACKLOG 1024
/* Addresses kept from one name lookup; more would only lengthen a failing connect. */
#define TCP_MAX_ADDRS 8
#define TCP_SCHEME "tcp://"

struct tcp_addrs {
    size_t a_count;
    struct sockaddr_storage a_sa[TCP_MAX_ADDRS];
    socklen_t a_len[TCP_MAX_ADDRS];
};

static void close_keep_errno(int fd)
{
    int saved = errno;
    close(fd);
    errno = saved;
}

/* PORT: 1 to 5 decimal digits, at most 65535, nothing after. */
static int tcp_parse_port(const char *s, unsigned *port)
{
    unsigned v = 0;
    size_t n = 0;
    for (; s[n] >= '0' && s[n] <= '9'; n++) {
        if (n == 5)
            return ARPC_EADDR;
        v = v * 10 + (unsigned)(s[n] - '0');
    }
    if (n == 0 || s[n] != '\0' || v > 65535)
        return ARPC_EADDR;
    *port = v;
    return ARPC_OK;
}

/* Splits "HOST:PORT" or "[V6]:PORT"; host gets the text between the brackets for V6. */
static int tcp_split(const char *rest, char *host, size_t hostcap, unsigned *port, bool *v6)
{
    const char *h = rest, *colon;
    size_t hlen;
    *v6 = rest[0] == '[';
    if (*v6) {
        const char *close = strchr(rest, ']');
        if (close == NULL || close[1] != ':')
            return ARPC_EADDR;
        h = rest + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(rest, ':');
        if (colon == NULL)
            return ARPC_EADDR;
        hlen = (size_t)(colon - rest);
        if (memchr(rest, ':', hlen) != NULL) /* a bare IPv6 address: the port is ambiguous */
            return ARPC_EADDR;
    }
    if (hlen == 0 || hlen >= hostcap)
        return ARPC_EADDR;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    return tcp_parse_port(colon + 1, port);
}

static bool tcp_numeric(const char *host, unsigned port, bool v6, struct tcp_addrs *out)
{
    if (v6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->a_sa[0];
        memset(sin6, 0, sizeof(*sin6));
        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
            return false; /* e.g. a scope id ("fe80::1%lo"): getaddrinfo handles those */
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        out->a_len[0] = sizeof(*sin6);
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)&out->a_sa[0];
        memset(sin, 0, sizeof(*sin));
        if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
            return false;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        out->a_len[0] = sizeof(*sin);
    }
    out->a_count = 1;
    return true;
}

static int tcp_gai_error(int gai)
{
    switch (gai) {
    case EAI_MEMORY:
        return ARPC_ENOMEM;
    case EAI_SYSTEM:
    case EAI_AGAIN: /* resolver unreachable: not the address's fault */
        return ARPC_ESYSTEM;
    default: /* EAI_NONAME, EAI_FAIL, EAI_NODATA, EAI_FAMILY...: no such address */
        return ARPC_EADDR;
    }
}

static int tcp_resolve(const char *host, unsigned port, bool v6, struct tcp_addrs *out)
{
    if (tcp_numeric(host, port, v6, out))
        return ARPC_OK;
    char service[8];
    snprintf(service, sizeof(service), "%u", port);
    struct addrinfo hints = {
        .ai_family = v6 ? AF_INET6 : AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
        .ai_flags = AI_NUMERICSERV | (v6 ? AI_NUMERICHOST : 0),
    };
    struct addrinfo *res;
    int gai = getaddrinfo(host, service, &hints, &res);
    if (gai != 0)
        return tcp_gai_error(gai);
    out->a_count = 0;
    for (struct addrinfo *ai = res; ai != NULL && out->a_count < TCP_MAX_ADDRS; ai = ai->ai_next) {
        if (ai->ai_addrlen > sizeof(out->a_sa[0]))
            continue;
        memcpy(&out->a_sa[out->a_count], ai->ai_addr, ai->ai_addrlen);
        out->a_len[out->a_count++] = ai->ai_addrlen;
    }
    freeaddrinfo(res);
    return out->a_count > 0 ? ARPC_OK : ARPC_EADDR;
}

/* Parses and resolves rest; port 0 is allowed only when listening. */
static int tcp_lookup(const char *rest, bool listening, struct tcp_addrs *out)
{
    char host[ARPC_ADDR_MAX];
    unsigned port;
    bool v6;
    int rv = tcp_split(rest, host, sizeof(host), &port, &v6);
    if (rv != ARPC_OK)
        return rv;
    if (port == 0 && !listening)
        return ARPC_EADDR;
    return tcp_resolve(host, port, v6, out);
}

static int tcp_set_nodelay(int fd)
{
    int one = 1;
    return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == 0 ? ARPC_OK
                                                                             : ARPC_ESYSTEM;
}

/* Writes "tcp://ADDR:PORT" for the address fd is actually bound to (the real port for 0). */
static int tcp_format_bound(int fd, char *bound, size_t boundlen)
{
    if (bound == NULL)
        return ARPC_OK;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return ARPC_ESYSTEM;
    char ip[INET6_ADDRSTRLEN];
    int n;
    if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
        n = snprintf(bound, boundlen, TCP_SCHEME "[%s]:%u", ip, ntohs(sin6->sin6_port));
    } else {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
        n = snprintf(bound, boundlen, TCP_SCHEME "%s:%u", ip, ntohs(sin->sin_port));
    }
    /* A truncated address would be a wrong one: refuse rather than report it. */
    return n >= 0 && (size_t)n < boundlen ? ARPC_OK : ARPC_EADDR;
}

static int tcp_listen_error(int err)
{
    switch (err) {
    case EADDRINUSE:
        return ARPC_EADDRINUSE;
    case EADDRNOTAVAIL: /* not an address of this host */
    case EAFNOSUPPORT:  /* e.g. IPv6 disabled */
        return ARPC_EADDR;
    default:
        return ARPC_ESYSTEM;
    }
}

static int tcp_listen_one(const struct sockaddr *sa, socklen_t len, int *fd_out)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return tcp_listen_error(errno);
    /* A restarted server must be able to rebind while old connections sit in TIME_WAIT. */
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, sa, len) != 0 || listen(fd, TCP_BACKLOG) != 0) {
        int rv = tcp_listen_error(errno);
        close_keep_errno(fd);
        return rv;
    }
    *fd_out = fd;
    return ARPC_OK;
}

static int tcp_listen(const char *rest, int *fd_out, char *bound, size_t boundlen)
{
    struct tcp_addrs addrs;
    int rv = tcp_lookup(rest, true, &addrs);
    if (rv != ARPC_OK)
        return rv;
    for (size_t i = 0; i < addrs.a_count; i++) {
        int fd;
        rv = tcp_listen_one((const struct sockaddr *)&addrs.a_sa[i], addrs.a_len[i], &fd);
        if (rv != ARPC_OK)
            continue; /* try the next address; report the last failure */
        rv = tcp_format_bound(fd, bound, boundlen);
        if (rv != ARPC_OK) {
            close_keep_errno(fd);
            return rv;
        }
        *fd_out = fd;
        return ARPC_OK;
    }
    return rv;
}

static int tcp_accept(int listen_fd, int *fd_out)
{
    for (;;) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            if (tcp_set_nodelay(fd) != ARPC_OK) {
                close_keep_errno(fd);
                return ARPC_ESYSTEM;
            }
            *fd_out = fd;
            return ARPC_OK;
        }
        switch (errno) {
        case EAGAIN:
            return ARPC_EAGAIN;
        case EINTR:
        case ECONNABORTED:
        /* accept(2): Linux reports a pending connection's network error from accept itself;
         * that connection is gone, so skip it as if it had never been queued. */
        case ENETDOWN:
        case EPROTO:
        case ENOPROTOOPT:
        case EHOSTDOWN:
        case ENONET:
        case EHOSTUNREACH:
        case EOPNOTSUPP:
        case ENETUNREACH:
            continue;
        default: /* EMFILE, ENFILE, ENOBUFS...: the caller must back off, not spin */
            return ARPC_ESYSTEM;
        }
    }
}

static void tcp_unlisten(const char *rest, int listen_fd)
{
    (void)rest;
    close(listen_fd);
}

/* Milliseconds left before deadline_ns (CLOCK_MONOTONIC), rounded up so that poll never
 * spins on a zero timeout while time remains; -1 without a deadline. */
static int tcp_remaining_ms(int64_t deadline_ns)
{
    if (deadline_ns < 0)
        return -1;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t left = deadline_ns - ((int64_t)now.tv_sec * 1000000000 + now.tv_nsec);
    if (left <= 0)
        return 0;
    int64_t ms = (left + 999999) / 1000000;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

static int64_t tcp_deadline(int64_t timeout_ms)
{
    if (timeout_ms < 0)
        return -1;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t now_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
    if (timeout_ms > (INT64_MAX - now_ns) / 1000000)
        return -1; /* beyond any real wait: treat as no limit */
    return now_ns + timeout_ms * 1000000;
}

static int tcp_connect_error(int err)
{
    switch (err) {
    case ECONNREFUSED:
    case ECONNRESET:
    case ENETUNREACH:
    case EHOSTUNREACH:
    case ENETDOWN:
    case EHOSTDOWN:
        return ARPC_ECONNREFUSED;
    case ETIMEDOUT:
        return ARPC_ETIMEDOUT;
    case EAFNOSUPPORT:
        return ARPC_EADDR;
    default:
        return ARPC_ESYSTEM;
    }
}

/* Waits for a non-blocking connect to finish and collects its outcome. */
static int tcp_wait_connected(int fd, int64_t deadline_ns)
{
    struct pollfd pfd = {.fd = fd, .events = POLLOUT};
    for (;;) {
        int n = poll(&pfd, 1, tcp_remaining_ms(deadline_ns));
        if (n > 0)
            break;
        if (n == 0)
            return ARPC_ETIMEDOUT;
        if (errno != EINTR)
            return ARPC_ESYSTEM;
    }
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        return ARPC_ESYSTEM;
    if (err == 0)
        return ARPC_OK;
    errno = err;
    return tcp_connect_error(err);
}

static int tcp_connect_one(const struct sockaddr *sa, socklen_t len, int64_t deadline_ns,
                           int *fd_out)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return errno == EAFNOSUPPORT ? ARPC_EADDR : ARPC_ESYSTEM;
    int rv = ARPC_OK;
    if (connect(fd, sa, len) != 0) {
        /* EINTR on a non-blocking connect: the attempt goes on in the background. */
        if (errno == EINPROGRESS || errno == EINTR)
            rv = tcp_wait_connected(fd, deadline_ns);
        else
            rv = tcp_connect_error(errno);
    }
    if (rv == ARPC_OK)
        rv = tcp_set_nodelay(fd);
    if (rv != ARPC_OK) {
        close_keep_errno(fd);
        return rv;
    }
    *fd_out = fd;
    return ARPC_OK;
}

static int tcp_connect(const char *rest, int64_t timeout_ms, int *fd_out)
{
    struct tcp_addrs addrs;
    int rv = tcp_lookup(rest, false, &addrs);
    if (rv != ARPC_OK)
        return rv;
    int64_t deadline_ns = tcp_deadline(timeout_ms);
    for (size_t i = 0; i < addrs.a_count; i++) {
        rv = tcp_connect_one((const struct sockaddr *)&addrs.a_sa[i], addrs.a_len[i],
                             deadline_ns, fd_out);
        /* Success ends the search; so does a timeout, which has spent the whole budget. */
        if (rv == ARPC_OK || rv == ARPC_ETIMEDOUT)
            break;
    }
    return rv;
}

const struct arpc_transport_ops arpc_transport_tcp = {
    .t_scheme = "tcp",
    .t_listen = tcp_listen,
    .t_accept = tcp_accept,
    .t_unlisten = tcp_unlisten,
    .t_connect = tcp_connect,
};
