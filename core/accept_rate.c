/*
 * The rate of new connections (max_accept_rate, accept_burst; docs/SECURITY.md), on the loop
 * thread: one token bucket per server (base/token_bucket.h), shared by its listeners.
 *
 * Why a rate and not only max_connections: a peer that opens connections and has them closed
 * at once (a 4 GiB length header answered GOAWAY, a refused token) never holds many, but each
 * costs the server ~30 us of kernel work (accept4, its options, the HELLO and GOAWAY sends,
 * the epoll_ctls, the close), so 20,000 a second take a core. With the bucket empty a listener
 * stops polling its socket (core/listener.c) and the kernel's backlog, then its SYN drops,
 * make the peer wait at no cost to the server; established connections are not touched.
 *
 * Clock: arpc_now_ns, read once per readiness by the listener, the clock its resume deadline
 * is armed on.
 */
#include <stdio.h>

#include "arpc/error.h"
#include "base/clock.h"
#include "base/log.h"
#include "core/server_internal.h"

#define ACCEPT_RATE_LOG_EVERY_NS 1000000000ull /* one line a second at most, per server */

void accept_rate_init(arpc_server *s, const arpc_server_options *o)
{
    s->sv_accept_rate = o->max_accept_rate;
    s->sv_accept_burst = o->accept_burst ? o->accept_burst : o->max_accept_rate;
    if (s->sv_accept_rate != 0)
        arpc_token_bucket_init(&s->sv_accept_bucket, s->sv_accept_rate, s->sv_accept_burst);
}

uint64_t accept_rate_wait_ns(arpc_server *s, uint64_t now_ns, unsigned n)
{
    return s->sv_accept_rate != 0 ? arpc_token_bucket_wait_ns(&s->sv_accept_bucket, now_ns, n) : 0;
}

void accept_rate_took(arpc_server *s, uint64_t now_ns)
{
    if (s->sv_accept_rate != 0)
        (void)arpc_token_bucket_take(&s->sv_accept_bucket, now_ns); /* checked by the caller just before */
}

void accept_rate_paused(arpc_server *s, const char *addr, uint64_t now_ns)
{
    arpc_stat_inc(&s->sv_stats.ss_accept_pauses);
    /* A flood pauses a listener hundreds of times a second: one line a second says it all. */
    uint64_t quiet;
    if (!arpc_log_throttle_due(&s->sv_accept_log, now_ns, ACCEPT_RATE_LOG_EVERY_NS, &quiet))
        return;
    char more[64] = "";
    if (quiet != 0)
        snprintf(more, sizeof(more), " (%llu more pauses since the last such line)", (unsigned long long)quiet);
    arpc_log(ARPC_LOG_WARN,
             "accept on %s: %u connections a second (max_accept_rate, burst %u) reached: not accepting until "
             "tokens are due, new connections wait in the kernel's backlog%s",
             addr, s->sv_accept_rate, s->sv_accept_burst, more);
}

void accept_rate_resumed(arpc_server *s, uint64_t paused_ns)
{
    arpc_stat_add(&s->sv_stats.ss_accept_paused_ns, paused_ns);
}
