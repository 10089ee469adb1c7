/*
 * The counters behind arpc/stats.h, and the hooks the call paths use to keep them.
 *
 * Every counter here has one writer: the loop thread that owns the server or client (its
 * connections, its calls, its replies), which adds with plain relaxed loads and stores
 * (base/stat.h): no lock and no contended atomic joins the per-call path. Readers on any
 * thread load them one by one, so a snapshot is a little stale and its fields may disagree by
 * the calls that moved while it was read (e.g. finished briefly ahead of started): readers
 * clamp what they derive. One loop per server and per client means one set of counters each.
 */
#ifndef ARPC_CORE_STATS_H
#define ARPC_CORE_STATS_H

#include <stdbool.h>

#include "arpc/error.h"
#include "arpc/stats.h"
#include "base/histogram.h"
#include "base/stat.h"

_Static_assert(ARPC_ERROR_COUNT_ <= ARPC_STATS_CODES, "ARPC_STATS_CODES must cover every error code");

/* What a connection moves (pointed to by struct arpc_conn; core/conn.c keeps it). */
struct io_stats {
    arpc_stat io_bytes_in;
    arpc_stat io_bytes_out;
    arpc_stat io_queued; /* bytes in output queues, not yet written (a gauge) */
};

/* Calls of one method (server) or of one client. */
struct call_stats {
    arpc_stat cs_started;
    arpc_stat cs_finished;
    arpc_stat cs_outcome[ARPC_STATS_CODES]; /* by ARPC_E* code; a code from the wire past the
                                             * table counts in cs_finished only */
};

/* One registered method (core/registry.c allocates it with the method). */
struct method_stats {
    struct call_stats ms_calls;
    arpc_stat ms_oneway;
    arpc_hist ms_latency; /* ns from the request's dispatch to its answer reaching the loop */
};

struct server_stats {
    struct io_stats ss_io;
    arpc_stat ss_accepted, ss_closed;
    arpc_stat ss_half_closed; /* ends of stream read between frames (sconn_on_eof) */
    arpc_stat ss_accept_pauses;    /* listeners stopped for max_accept_rate (core/accept_rate.c) */
    arpc_stat ss_accept_paused_ns; /* the time they stayed stopped, summed over listeners */
    arpc_stat ss_faulted;          /* connections closed for their peer's fault (core/fault_rate.c) */
    arpc_stat ss_fault_pauses;     /* listeners stopped for max_fault_rate */
    arpc_stat ss_fault_paused_ns;
    arpc_stat ss_expiries_unlogged; /* expiries and goodbyes the reply log lost (journal_forget) */
    arpc_stat ss_log_records;       /* records the reply log took (journal_on_done: its writer
                                     * thread, or the closing one after the writer ended) */
    arpc_stat ss_refused[ARPC_STATS_CODES]; /* answered before reaching a method */
    arpc_stat ss_oneways_dropped;           /* one-way messages to no method of the server's, or
                                             * dropped by a stop before they started */
};

struct client_stats {
    struct io_stats cst_io;
    struct call_stats cst_calls;
    arpc_stat cst_closed; /* connections closed (opened: cl_connections) */
    arpc_stat cst_oneways, cst_oneways_dropped; /* loop thread (core/client_api.c, client_linger.c) */
};

static inline void stats_call_started(struct call_stats *cs) { arpc_stat_inc(&cs->cs_started); }

static inline void stats_call_finished(struct call_stats *cs, int code)
{
    arpc_stat_inc(&cs->cs_finished);
    if (code >= 0 && code < ARPC_STATS_CODES)
        arpc_stat_inc(&cs->cs_outcome[code]);
}

/* Fill the public snapshots (any thread; core/stats.c). */
void stats_read_calls(const struct call_stats *cs, arpc_call_counts *out);
void stats_read_method(const struct method_stats *ms, arpc_method_stats *out);

#endif
