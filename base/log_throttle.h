/*
 * At most one log line per interval for an event that may come thousands of times a second (a
 * listener paused by a flood, a connection held at its limit after every reply): the first
 * is logged, then one per interval, each saying how many went unlogged since the last.
 *
 * Pure: the caller passes the time (nanoseconds on any monotonic clock). One owner, no thread
 * safety.
 */
#ifndef ARPC_BASE_LOG_THROTTLE_H
#define ARPC_BASE_LOG_THROTTLE_H

#include <stdbool.h>
#include <stdint.h>

struct arpc_log_throttle {
    uint64_t lt_events; /* ever */
    uint64_t lt_logged; /* lt_events when the last line was logged; 0: none yet */
    uint64_t lt_at_ns;  /* when */
};

/* Counts an event at now_ns. True if it is to be logged now (the first, or the first every_ns
 * after the last logged), with *unlogged set to the events since that one left unlogged. */
bool arpc_log_throttle_due(struct arpc_log_throttle *t, uint64_t now_ns, uint64_t every_ns, uint64_t *unlogged);

#endif
