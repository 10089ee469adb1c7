/*
 * At most burst log lines per interval for an event that may come thousands of times a second
 * (a listener paused by a flood, a connection held at its limit after every reply, a peer's
 * faults): the first are logged, then burst per interval, each saying how many went unlogged
 * since the last.
 *
 * Pure: the caller passes the time (nanoseconds on any monotonic clock). One owner, no thread
 * safety.
 */
#ifndef ARPC_BASE_LOG_THROTTLE_H
#define ARPC_BASE_LOG_THROTTLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct arpc_log_throttle {
    uint64_t lt_events;    /* ever */
    uint64_t lt_logged;    /* lt_events when the last line was logged; 0: none yet */
    uint64_t lt_at_ns;     /* when the interval of the last logged line began (its first line) */
    uint32_t lt_in_window; /* lines logged in that interval */
};

/* Counts an event at now_ns. True if it is to be logged now (one of the first burst, or of
 * the first burst every_ns or more after the interval of the last logged began), with
 * *unlogged set to the events since the last logged one left unlogged. burst >= 1. */
bool arpc_log_throttle_due(struct arpc_log_throttle *t, uint64_t now_ns, uint64_t every_ns, uint32_t burst,
                           uint64_t *unlogged);

/* The end of a logged line: " (N more <what> since the last such line)", or "" when none
 * went unlogged. Written into buf (size bytes); returns buf. */
const char *arpc_log_throttle_more(char *buf, size_t size, uint64_t unlogged, const char *what);

#endif
