/*
 * A gate on a server's listeners (core/listener_gate.h): the part max_accept_rate and
 * max_fault_rate share.
 */
#include "core/listener_gate.h"

#include <stdio.h>

#include "base/log.h"

#define LISTENER_GATE_LOG_EVERY_NS 1000000000ull /* one line a second at most, per gate */

void listener_gate_init(struct listener_gate *g, uint32_t rate, uint32_t burst, arpc_stat *pauses,
                        arpc_stat *paused_ns, const char *why)
{
    g->lg_rate = rate;
    g->lg_burst = burst;
    if (rate != 0)
        arpc_token_bucket_init(&g->lg_bucket, rate, burst);
    g->lg_log = (struct arpc_log_throttle){0};
    g->lg_pauses = pauses;
    g->lg_paused_ns = paused_ns;
    snprintf(g->lg_why, sizeof(g->lg_why), "%s", why);
}

uint64_t listener_gate_wait_ns(struct listener_gate *g, uint64_t now_ns, unsigned n)
{
    return g->lg_rate != 0 ? arpc_token_bucket_wait_ns(&g->lg_bucket, now_ns, n) : 0;
}

void listener_gate_paused(struct listener_gate *g, const char *addr, uint64_t now_ns)
{
    arpc_stat_inc(g->lg_pauses);
    /* A flood pauses a listener hundreds of times a second: one line a second says it all. */
    uint64_t quiet;
    if (!arpc_log_throttle_due(&g->lg_log, now_ns, LISTENER_GATE_LOG_EVERY_NS, 1, &quiet))
        return;
    char more[64];
    arpc_log(ARPC_LOG_WARN, "accept on %s: %s, new connections wait in the kernel's backlog%s", addr, g->lg_why,
             arpc_log_throttle_more(more, sizeof(more), quiet, "pauses"));
}

void listener_gate_resumed(struct listener_gate *g, uint64_t paused_ns) { arpc_stat_add(g->lg_paused_ns, paused_ns); }
