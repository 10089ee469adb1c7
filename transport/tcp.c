/*
 * TCP transport: "tcp://HOST:PORT" with HOST an IPv4 dotted quad, "[IPv6]" or a name.
 *
 * Design notes.
 *
 * Resolution: numeric hosts are converted with inet_pton and never reach getaddrinfo (no
 * allocation, no NSS, never blocks); names go through getaddrinfo, whose answers are copied
 * into the target's fixed array so both paths hand the same thing to listen and connect. A
 * name may yield several addresses: listen binds the first that works, and a connect tries
 * each in turn (so "localhost" works whether the server is on 127.0.0.1 or ::1). An empty
 * HOST is rejected: say "0.0.0.0" or "[::]" to listen on every interface.
 *
 * Latency: TCP_NODELAY on both ends. The core writes whole batches with one writev, so
 * Nagle's algorithm has nothing to coalesce and would only hold back the last small frame.
 * A connecting socket gets it at once: the option outlives the handshake.
 *
 * A tcp listener has no private state: struct arpc_listener is all of it.
 */
#include "transport/transport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "transport/sock.h"

/* Queue length for connections not yet accepted; the kernel caps it at net.core.somaxconn.
 * Large, so that a burst of clients is not refused while the reactor is busy. */
#define TCP_BACKLOG 1024

/* PORT: 1 to 5 decimal digits, at most 65535, nothing after. NULL, or what is wrong. */
static const char *tcp_parse_port(const char *s, unsigned *port)
{
    unsigned v = 0;
    size_t n = 0;
    for (; s[n] >= '0' && s[n] <= '9' && n < 6; n++)
        v = v * 10 + (unsigned)(s[n] - '0');
    if (n == 0 || s[n] != '\0' || v > 65535)
        return "the port must be a number from 0 to 65535";
    *port = v;
    return NULL;
}

/* Splits "HOST:PORT" or "[V6]:PORT"; host gets the text between the brackets for V6.
 * NULL, or what is wrong with rest. */
static const char *tcp_split(const char *rest, char *host, size_t hostcap, unsigned *port,
                             bool *v6)
{
    const char *h = rest, *colon;
    size_t hlen;
    *v6 = rest[0] == '[';
    if (*v6) {
        const char *close = strchr(rest, ']');
        if (close == NULL || close[1] != ':')
            return "expected [IPV6]:PORT";
        h = rest + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(rest, ':');
        if (colon == NULL)
            return "expected HOST:PORT";
        hlen = (size_t)(colon - rest);
        if (memchr(rest, ':', hlen) != NULL) /* a bare IPv6 address: the port is ambiguous */
            return "put an IPv6 address in brackets: [IPV6]:PORT";
    }
    if (hlen == 0)
        return "no host (say 0.0.0.0 or [::] for every interface)";
    /* ZeroMQ's "every interface": no host name, so never handed to a resolver (some answer it). */
    if (hlen == 1 && h[0] == '*')
        return "\"*\" is no host (say 0.0.0.0 or [::] for every interface)";
    if (hlen >= hostcap)
        return "host name too long";
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    return tcp_parse_port(colon + 1, port);
}

static bool tcp_numeric(const char *host, unsigned port, bool v6, struct arpc_target *t)
{
    if (v6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&t->t_sa[0];
        memset(sin6, 0, sizeof(*sin6));
        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
            return false; /* e.g. a scope id ("fe80::1%lo"): getaddrinfo handles those */
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        t->t_salen[0] = sizeof(*sin6);
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)&t->t_sa[0];
        memset(sin, 0, sizeof(*sin));
        if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
            return false;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        t->t_salen[0] = sizeof(*sin);
    }
    t->t_count = 1;
    return true;
}

static int tcp_gai_failed(int gai, const char *rest, const char *host, bool v6, char *why,
                          size_t whylen)
{
    switch (gai) {
    case EAI_MEMORY:
        return arpc_sock_why(why, whylen, ARPC_ENOMEM, "out of memory resolving %s", host);
    case EAI_SYSTEM:
        return arpc_sock_why_errno(why, whylen, ARPC_ESYSTEM, errno,
                                   "name resolution failed for %s", host);
    case EAI_AGAIN: /* resolver unreachable: not the address's fault */
        return arpc_sock_why(why, whylen, ARPC_ESYSTEM, "name resolution failed for %s: %s",
                             host, gai_strerror(gai));
    default: /* EAI_NONAME, EAI_FAIL, EAI_NODATA, EAI_FAMILY...: no such address */
        if (v6) /* AI_NUMERICHOST: a name in brackets, never looked up */
            return arpc_sock_why(why, whylen, ARPC_EADDR,
                                 "malformed tcp address \"%s\": not an IPv6 address", rest);
        return arpc_sock_why(why, whylen, ARPC_EADDR, "name resolution failed for %s: %s",
                             host, gai_strerror(gai));
    }
}

static int tcp_getaddrinfo(const char *rest, const char *host, unsigned port, bool v6,
                           struct arpc_target *t, char *why, size_t whylen)
{
    char service[sizeof("65535")];
    snprintf(service, sizeof(service), "%u", port);
    struct addrinfo hints = {
        .ai_family = v6 ? AF_INET6 : AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
        .ai_flags = AI_NUMERICSERV | (v6 ? AI_NUMERICHOST : 0),
    };
    struct addrinfo *res;
    int gai = getaddrinfo(host, service, &hints, &res);
    if (gai != 0)
        return tcp_gai_failed(gai, rest, host, v6, why, whylen);
    t->t_count = 0;
    for (struct addrinfo *ai = res; ai != NULL && t->t_count < ARPC_TARGET_MAX_ADDRS;
         ai = ai->ai_next) {
        if (ai->ai_addrlen > sizeof(t->t_sa[0]))
            continue;
        memcpy(&t->t_sa[t->t_count], ai->ai_addr, ai->ai_addrlen);
        t->t_salen[t->t_count++] = ai->ai_addrlen;
    }
    freeaddrinfo(res);
    if (t->t_count == 0)
        return arpc_sock_why(why, whylen, ARPC_EADDR, "no usable address for %s", host);
    t->t_named = !v6; /* a bracketed IPv6 address is never looked up (AI_NUMERICHOST) */
    return ARPC_OK;
}

/* Parses and resolves rest into t; port 0 is allowed only when listening. */
static int tcp_lookup(const char *rest, bool listening, struct arpc_target *t, char *why,
                      size_t whylen)
{
    int rv = arpc_sock_target_init(t, &arpc_transport_tcp, rest, why, whylen);
    if (rv != ARPC_OK)
        return rv;
    char host[ARPC_ADDR_MAX];
    unsigned port;
    bool v6;
    const char *wrong = tcp_split(rest, host, sizeof(host), &port, &v6);
    if (wrong == NULL && port == 0 && !listening)
        wrong = "port 0 is only for listening";
    if (wrong != NULL)
        return arpc_sock_why(why, whylen, ARPC_EADDR, "malformed tcp address \"%s\": %s", rest,
                             wrong);
    if (tcp_numeric(host, port, v6, t))
        return ARPC_OK;
    return tcp_getaddrinfo(rest, host, port, v6, t, why, whylen);
}

static int tcp_resolve(const char *rest, struct arpc_target *target, char *why, size_t whylen)
{
    return tcp_lookup(rest, false, target, why, whylen);
}

static int tcp_set_nodelay(int fd)
{
    int one = 1;
    return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int tcp_connect_start(const struct arpc_target *t, size_t i, int *fd_out, char *why,
                             size_t whylen)
{
    int fd;
    int rv = arpc_sock_connect_start((const struct sockaddr *)&t->t_sa[i], t->t_salen[i], &fd);
    if (rv != ARPC_OK && rv != ARPC_EAGAIN)
        return arpc_sock_connect_failed(t, i, errno, why, whylen);
    if (tcp_set_nodelay(fd) != 0) {
        arpc_sock_close_keep_errno(fd);
        return arpc_sock_why_errno(why, whylen, ARPC_ESYSTEM, errno,
                                   "setting TCP_NODELAY for %s failed", t->t_addr);
    }
    *fd_out = fd;
    return rv;
}

/* Binds and listens on one address; ARPC_ESYSTEM with errno on failure. */
static int tcp_listen_one(const struct sockaddr *sa, socklen_t len, int *fd_out)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return ARPC_ESYSTEM;
    /* A restarted server must be able to rebind while old connections sit in TIME_WAIT. */
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, sa, len) != 0 || listen(fd, TCP_BACKLOG) != 0) {
        arpc_sock_close_keep_errno(fd);
        return ARPC_ESYSTEM;
    }
    *fd_out = fd;
    return ARPC_OK;
}

/* Writes "tcp://ADDR:PORT" for the address fd is actually bound to (the real port for 0). */
static int tcp_bound_name(int fd, char *out, char *why, size_t whylen)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return arpc_sock_why_errno(why, whylen, ARPC_ESYSTEM, errno, "getsockname failed");
    if (arpc_sock_inet_name((const struct sockaddr *)&ss, arpc_transport_tcp.t_scheme, out,
                            ARPC_ADDR_MAX) != ARPC_OK)
        return arpc_sock_why(why, whylen, ARPC_EADDR, "bound address does not fit");
    return ARPC_OK;
}

static int tcp_listen(const char *rest, struct arpc_listener **out, char *why, size_t whylen)
{
    struct arpc_target t;
    int rv = tcp_lookup(rest, true, &t, why, whylen);
    if (rv != ARPC_OK)
        return rv;
    struct arpc_listener *l = arpc_calloc(1, sizeof(*l));
    if (l == NULL)
        return arpc_sock_why(why, whylen, ARPC_ENOMEM, "out of memory listening on %s",
                             t.t_addr);
    l->l_ops = &arpc_transport_tcp;
    l->l_fd = -1;
    int err = 0;
    for (size_t i = 0; i < t.t_count && l->l_fd < 0; i++) {
        if (tcp_listen_one((const struct sockaddr *)&t.t_sa[i], t.t_salen[i], &l->l_fd) != ARPC_OK)
            err = errno; /* try the next address; report the last failure */
    }
    if (l->l_fd < 0) {
        arpc_free(l);
        return arpc_sock_listen_failed(err, t.t_addr, why, whylen);
    }
    rv = tcp_bound_name(l->l_fd, l->l_addr, why, whylen);
    if (rv != ARPC_OK) {
        arpc_sock_close_keep_errno(l->l_fd);
        arpc_free(l);
        return rv;
    }
    *out = l;
    return ARPC_OK;
}

static int tcp_accept(struct arpc_listener *l, int *fd_out, char *peer, size_t peerlen,
                      char *why, size_t whylen)
{
    int fd;
    int rv = arpc_sock_accept(l, &fd, peer, peerlen, why, whylen);
    if (rv != ARPC_OK)
        return rv;
    if (tcp_set_nodelay(fd) != 0) {
        arpc_sock_close_keep_errno(fd);
        return arpc_sock_why_errno(why, whylen, ARPC_ESYSTEM, errno,
                                   "setting TCP_NODELAY on a connection accepted on %s failed",
                                   l->l_addr);
    }
    *fd_out = fd;
    return ARPC_OK;
}

static void tcp_unlisten(struct arpc_listener *l)
{
    close(l->l_fd);
    arpc_free(l);
}

const struct arpc_transport_ops arpc_transport_tcp = {
    .t_scheme = "tcp",
    .t_resolve = tcp_resolve,
    .t_connect_start = tcp_connect_start,
    .t_connect_done = arpc_sock_connect_done,
    .t_listen = tcp_listen,
    .t_accept = tcp_accept,
    .t_unlisten = tcp_unlisten,
};
