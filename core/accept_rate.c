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
#include "core/server_internal.h"

void accept_rate_init(arpc_server *s, const arpc_server_options *o)
{
    uint32_t rate = o->max_accept_rate, burst = o->accept_burst ? o->accept_burst : o->max_accept_rate;
    char why[LISTENER_GATE_WHY_MAX];
    snprintf(why, sizeof(why), "%u connections a second (max_accept_rate, burst %u) reached: not accepting until "
             "tokens are due", rate, burst);
    listener_gate_init(&s->sv_accept_gate, rate, burst, &s->sv_stats.ss_accept_pauses,
                       &s->sv_stats.ss_accept_paused_ns, why);
}

void accept_rate_took(arpc_server *s, uint64_t now_ns)
{
    if (s->sv_accept_gate.lg_rate != 0) /* checked by the caller just before */
        (void)arpc_token_bucket_take(&s->sv_accept_gate.lg_bucket, now_ns);
}
