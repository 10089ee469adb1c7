/*
 * A gate on a server's listeners: a token bucket (max_accept_rate, max_fault_rate) whose wait
 * stops them accepting, with the pauses it causes counted and timed in the server's stats and
 * logged one line a second at most. core/accept_rate.c and core/fault_rate.c each own one and
 * say what fills or drains it; core/listener.c pauses for whichever waits longer.
 *
 * Loop thread; clock arpc_now_ns (the listener's).
 */
#ifndef ARPC_CORE_LISTENER_GATE_H
#define ARPC_CORE_LISTENER_GATE_H

#include <stdint.h>

#include "base/log_throttle.h"
#include "base/stat.h"
#include "base/token_bucket.h"

#define LISTENER_GATE_WHY_MAX 200

struct listener_gate {
    uint32_t lg_rate; /* a second; 0: no limit (the gate never waits) */
    uint32_t lg_burst;
    struct arpc_token_bucket lg_bucket;
    struct arpc_log_throttle lg_log;
    arpc_stat *lg_pauses, *lg_paused_ns; /* the server's stats */
    char lg_why[LISTENER_GATE_WHY_MAX];  /* the log line's reason, e.g. "... reached: not accepting until ..." */
};

/* rate 0: no limit. why is copied (truncated at LISTENER_GATE_WHY_MAX). */
void listener_gate_init(struct listener_gate *g, uint32_t rate, uint32_t burst, arpc_stat *pauses,
                        arpc_stat *paused_ns, const char *why);
/* Nanoseconds until n tokens are there (0: now; always 0 without a limit). */
uint64_t listener_gate_wait_ns(struct listener_gate *g, uint64_t now_ns, unsigned n);
/* A listener (addr) stopped accepting for this gate at now_ns: counted, logged (throttled). */
void listener_gate_paused(struct listener_gate *g, const char *addr, uint64_t now_ns);
/* ... and accepts again (or closed), after paused_ns: its time counted. */
void listener_gate_resumed(struct listener_gate *g, uint64_t paused_ns);

#endif
