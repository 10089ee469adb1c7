/*
 * Scheme lookup ("scheme://rest" -> the transport that owns scheme), and the blocking
 * connect built on the non-blocking ops.
 *
 * Schemes match exactly (lower case), as every address arpc reports is lower case. Addresses
 * of ARPC_ADDR_MAX bytes or more are rejected here, so a buffer of ARPC_ADDR_MAX bytes
 * always holds what a transport reports for an address found here.
 *
 * The blocking connect waits with poll(2) on the calling thread; it is for tests and tools.
 * A unix listener's full backlog has nothing to poll for (see transport/unix.c), so it is
 * retried after short jittered pauses until the deadline.
 */
#include "transport/transport.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "arpc/error.h"
#include "base/backoff.h"
#include "base/clock.h"
#include "transport/sock.h"

/* Pauses between attempts on a full unix backlog: from 1 ms, growing to 50 ms at most, so a
 * backlog that frees up is used soon without spinning on one that stays full. */
#define RETRY_BASE_MS 1
#define RETRY_MAX_MS 50

static const struct arpc_transport_ops *const transports[] = {
    &arpc_transport_tcp,
    &arpc_transport_unix,
    &arpc_transport_inproc,
    &arpc_transport_tls,
};
#define TRANSPORT_COUNT (sizeof(transports) / sizeof(transports[0]))

const struct arpc_transport_ops *arpc_transport_find(const char *addr, const char **rest)
{
    if (addr == NULL || strnlen(addr, ARPC_ADDR_MAX) == ARPC_ADDR_MAX)
        return NULL;
    const char *sep = strstr(addr, "://");
    if (sep == NULL)
        return NULL;
    size_t n = (size_t)(sep - addr);
    for (size_t i = 0; i < TRANSPORT_COUNT; i++) {
        const char *scheme = transports[i]->t_scheme;
        if (strlen(scheme) == n && memcmp(scheme, addr, n) == 0) {
            if (rest != NULL)
                *rest = sep + 3;
            return transports[i];
        }
    }
    return NULL;
}

int arpc_transport_find_failed(const char *addr, char *why, size_t whylen)
{
    if (addr == NULL)
        return arpc_sock_why(why, whylen, ARPC_EADDR, "no address given");
    if (strnlen(addr, ARPC_ADDR_MAX) == ARPC_ADDR_MAX)
        return arpc_sock_why(why, whylen, ARPC_EADDR,
                             "address too long (at most %d bytes): %.40s...", ARPC_ADDR_MAX - 1,
                             addr);
    char schemes[64] = "";
    for (size_t i = 0, used = 0; i < TRANSPORT_COUNT && used < sizeof(schemes); i++)
        used += (size_t)snprintf(schemes + used, sizeof(schemes) - used, "%s%s://",
                                 i == 0 ? "" : i + 1 < TRANSPORT_COUNT ? ", " : " or ",
                                 transports[i]->t_scheme);
    return arpc_sock_why(why, whylen, ARPC_EADDR, "unknown scheme in \"%s\" (expected %s)", addr,
                         schemes);
}

int arpc_transport_resolve(const char *addr, struct arpc_target *target, char *why,
                           size_t whylen)
{
    const char *rest;
    const struct arpc_transport_ops *ops = arpc_transport_find(addr, &rest);
    if (ops == NULL)
        return arpc_transport_find_failed(addr, why, whylen);
    return ops->t_resolve(rest, target, why, whylen);
}

/* Waits until fd is writable: ARPC_OK, ARPC_ETIMEDOUT at the deadline, or ARPC_ESYSTEM. */
static int wait_writable(int fd, uint64_t deadline)
{
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    for (;;) {
        int n = poll(&p, 1, arpc_ms_left_int(deadline));
        if (n > 0)
            return ARPC_OK;
        /* poll waits at most INT_MAX ms: a later deadline takes several rounds. */
        if (n == 0 && arpc_ms_left(deadline) == 0)
            return ARPC_ETIMEDOUT;
        if (n < 0 && errno != EINTR)
            return ARPC_ESYSTEM;
    }
}

/* Pauses before the next attempt on a full backlog; false when the deadline has passed. */
static bool pause_for_retry(struct arpc_backoff *b, uint64_t deadline)
{
    int64_t left = arpc_ms_left(deadline);
    if (left == 0)
        return false;
    int64_t ms = arpc_backoff_next_ms(b);
    poll(NULL, 0, (int)(left > 0 && left < ms ? left : ms));
    return true;
}

/* Our deadline passed while connecting to address i; last: the last attempt's why line. */
static int timed_out(const struct arpc_target *t, size_t i, int64_t timeout_ms,
                     const char *last, char *why, size_t whylen)
{
    char name[ARPC_WHY_MAX];
    arpc_sock_target_name(t, i, name, sizeof(name));
    errno = ETIMEDOUT;
    return arpc_sock_why(why, whylen, ARPC_ETIMEDOUT, "connecting to %s timed out after %lld ms%s%s",
                         name, (long long)timeout_ms, last[0] != '\0' ? ": " : "", last);
}

/* Connects to address i of t, retrying a full backlog, until it connects, fails or the
 * deadline passes. */
static int connect_one(const struct arpc_target *t, size_t i, int64_t timeout_ms,
                       uint64_t deadline, int *fd_out, char *why, size_t whylen)
{
    struct arpc_backoff b;
    arpc_backoff_init(&b, RETRY_BASE_MS, RETRY_MAX_MS, arpc_now_ns());
    char last[ARPC_WHY_MAX]; /* why the last attempt failed */
    for (;;) {
        int fd = -1;
        last[0] = '\0';
        int rv = t->t_ops->t_connect_start(t, i, &fd, last, sizeof(last));
        if (rv == ARPC_EAGAIN) {
            rv = wait_writable(fd, deadline);
            if (rv == ARPC_OK)
                rv = t->t_ops->t_connect_done(t, i, fd, last, sizeof(last));
            else if (rv == ARPC_ESYSTEM)
                arpc_sock_why_errno(last, sizeof(last), rv, errno, "poll failed");
            if (rv != ARPC_OK)
                arpc_sock_close_keep_errno(fd);
            if (rv == ARPC_ETIMEDOUT && last[0] == '\0') /* ours, not the kernel's */
                return timed_out(t, i, timeout_ms, last, why, whylen);
        }
        if (rv == ARPC_OK) {
            *fd_out = fd;
            return ARPC_OK;
        }
        if (rv != ARPC_ECONNREFUSED || errno != EAGAIN)
            return arpc_sock_why(why, whylen, rv, "%s", last);
        /* The server is there but has no room (a full unix backlog): try again. */
        if (!pause_for_retry(&b, deadline))
            return timed_out(t, i, timeout_ms, last, why, whylen);
    }
}

int arpc_transport_connect(const char *addr, int64_t timeout_ms, int *fd_out, char *why,
                           size_t whylen)
{
    struct arpc_target t;
    int rv = arpc_transport_resolve(addr, &t, why, whylen);
    if (rv != ARPC_OK)
        return rv;
    uint64_t deadline = arpc_deadline_from_ms(timeout_ms);
    char cause[ARPC_WHY_MAX]; /* written to why only on failure */
    /* Success ends the search; so does a timeout, which has spent the whole budget. Any
     * other failure moves on to the next address; why tells the last one's cause. */
    for (size_t i = 0; i < t.t_count; i++) {
        rv = connect_one(&t, i, timeout_ms, deadline, fd_out, cause, sizeof(cause));
        if (rv == ARPC_OK || rv == ARPC_ETIMEDOUT)
            break;
    }
    if (rv != ARPC_OK)
        arpc_sock_why(why, whylen, rv, "%s", cause);
    return rv;
}
