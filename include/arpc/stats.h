/*
 * arpc/stats.h: what a server or a client has done, for dashboards and debugging.
 *
 * Counters are kept by the server's (client's) loop thread with plain stores, so keeping them
 * costs the calls no lock and no shared atomic. Every function here may be called from any
 * thread, the loop's and handlers' included, at any time between create (connect) and
 * destroy (close), but not while another thread registers methods (arpc_server_register,
 * before listening). A snapshot reads the counters one by one while calls go on: values may
 * be slightly stale, and two fields may disagree by the calls that moved meanwhile (derived
 * values such as in_flight are clamped at 0). Counts only grow, but for gauges (named so).
 * A reply its worker wrote to the socket itself is counted by the loop at its next turn, so
 * a client can hold a reply a moment before the server's counts include it.
 *
 * Snapshots are structs passed with their size (the macros pass sizeof as the caller's
 * headers had it, like the options structs, docs/ABI.md): fields are only ever appended; a
 * program built against older headers gets the fields it knows, one built against newer
 * headers gets zeros in the fields this library lacks.
 *
 * Outcome arrays are indexed by ARPC_E* code (arpc/error.h): [ARPC_OK] counts calls answered
 * with a reply, [ARPC_EHANDLER] calls whose handler replied with arpc_reply_error, and so on.
 */
#ifndef ARPC_STATS_H
#define ARPC_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "arpc/client.h"
#include "arpc/common.h"
#include "arpc/server.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Room in the outcome arrays: more than the codes there are today, so codes appended later
 * fit without changing the snapshot's layout. */
#define ARPC_STATS_CODES 64

typedef struct arpc_call_counts {
    uint64_t started;   /* calls that reached the loop (client) / were dispatched to a method
                         * (server: a duplicate of an at-most-once call, answered from the reply
                         * cache or attached to the running original, is not counted again) */
    uint64_t finished;  /* calls answered, by any outcome */
    uint64_t in_flight; /* gauge: started - finished */
    uint64_t by_outcome[ARPC_STATS_CODES];
} arpc_call_counts;

typedef struct arpc_server_stats {
    arpc_call_counts calls;             /* summed over every method, built-ins included */
    uint64_t refused[ARPC_STATS_CODES]; /* calls answered before reaching a method, by code:
                                         * ENOMETHOD, ESHUTDOWN (stopping), ETOOLARGE (over
                                         * max_frame), EREJECTED / EOVERLOADED / ESYSTEM
                                         * (at-most-once refusals, no memory) */
    uint64_t oneway;                    /* one-way requests dispatched to a method */
    uint64_t bytes_in, bytes_out;       /* read from / written to sockets, frames of every kind */
    uint64_t connections_accepted, connections_closed;
    uint64_t connections_open;          /* gauge */
    uint64_t queued_bytes;              /* gauge: replies and other frames waiting for their sockets */
    uint64_t handlers_in_flight;        /* gauge: requests queued for or running in handlers; a
                                         * reply its worker wrote itself is counted off by the
                                         * server's loop, up to a turn of it later */
    uint64_t methods;                   /* registered methods, built-ins included */
    uint64_t connections_half_closed;   /* connections whose client ended its sending (a
                                         * half-close, shutdown(SHUT_WR), or a close: the end of
                                         * stream cannot tell them apart) between frames, as
                                         * the server read it; their calls are still answered,
                                         * unless the probe then finds the peer gone */
    uint64_t log_expiries_lost;         /* with a reply log: clients forgotten (idle expiry,
                                         * goodbye) whose record the log could not take (no
                                         * memory); a restart then replays their replies as
                                         * alive until they expire again (docs/SEMANTICS.md) */
    uint64_t accept_rate_pauses;        /* times a listener stopped accepting (polling its
                                         * socket) because max_accept_rate was reached */
    uint64_t accept_rate_paused_ns;     /* how long they stayed stopped, summed over listeners
                                         * (a pause still going on counts once it ends) */
    uint64_t connections_faulted;       /* connections closed for their peer's fault (see
                                         * arpc_server_options.max_fault_rate) */
    uint64_t fault_rate_pauses;         /* times a listener stopped accepting while the faults
                                         * were over max_fault_rate */
    uint64_t fault_rate_paused_ns;      /* how long, as accept_rate_paused_ns */
    /* With a reply log (appended after 0.2.0): */
    uint64_t log_records;               /* records the log wrote (and synced, per the fsync
                                         * policy): finished at-most-once calls, effects,
                                         * checkpoints, acks, expiries, goodbyes */
    uint64_t log_failed;                /* gauge, 0 or 1: a record could not be made durable
                                         * (a full disk, an I/O error, no memory): the server
                                         * runs no at-most-once call until it is restarted
                                         * (fail-stop; docs/SEMANTICS.md) */
    /* The at-most-once reply cache, gauges (appended after 0.2.0): when reply_cache_bytes
     * nears arpc_server_options.reply_cache_bytes, new numbered calls are refused
     * ARPC_EOVERLOADED until clients acknowledge their replies or expire (docs/SECURITY.md). */
    uint64_t reply_cache_bytes;         /* kept replies and their books, as counted against the
                                         * option */
    uint64_t reply_cache_clients;       /* client ids remembered */
    uint64_t reply_cache_calls;         /* calls remembered: running, or answered and not yet
                                         * acknowledged */
    uint64_t oneways_dropped;           /* one-way messages to a method the server does not
                                         * have: dropped (nothing answers a one-way), and said
                                         * in a WARN line as the log's rate allows; and those
                                         * a stop dropped before their handlers started */
} arpc_server_stats;

typedef struct arpc_method_stats {
    arpc_call_counts calls;
    uint64_t oneway;
    /* Latency: from the request's dispatch (its frame handed up after reading, the clock read
     * that also starts its budget; the at-most-once check included) to its answer being made:
     * the handler's reply, timed on the thread that replies, or the server's own at a deadline
     * or stop, timed on the loop. The wait of a reply for the loop that writes it is not in it
     * (it was in 0.2.0: compare no figures across that change). In ns;
     * percentiles from a log-linear histogram (within 0.4%). */
    uint64_t latency_count, latency_sum_ns;
    uint64_t latency_p50_ns, latency_p90_ns, latency_p99_ns, latency_p999_ns, latency_max_ns;
} arpc_method_stats;

typedef struct arpc_client_stats {
    arpc_call_counts calls;         /* by the outcome each call's future completed with */
    uint64_t bytes_in, bytes_out;
    uint64_t connections_opened, connections_closed; /* opened: HELLO exchanged */
    uint64_t queued_bytes;          /* gauge: requests waiting for the socket */
    /* One-way messages (arpc_notify) that reached the client's loop, and of them those dropped
     * unwritten: no connection when they reached it, or the connection broke (or
     * arpc_client_close's linger ended) before they were written whole. A message written
     * whole but lost with its connection (in the sockets' buffers) is not counted: nothing
     * tells the client. The server's method stats count those that ran. (Appended after 0.2.0.) */
    uint64_t oneways, oneways_dropped;
    /* Lookups of the server's name started since arpc_client_connect's, when reconnecting
     * to the addresses it had kept failing (re_resolve_ms, arpc/client.h). (Appended after
     * 0.2.0.) */
    uint64_t name_lookups;
} arpc_client_stats;

/* The server's counters, read from any thread. Errors: ARPC_EINVAL (NULL, or a destroyed server: see arpc/common.h).
 * arpc_server_stats and arpc_client_stats are both a struct type and a function-like macro
 * (docs/ABI.md: the size passed for the caller): a type followed by '(' is taken for the
 * macro, so C++ value-initialises with braces, arpc_server_stats st{}, not
 * arpc_server_stats(). */
ARPC_API int arpc_server_stats_v(const arpc_server *s, arpc_server_stats *st, size_t st_size);
#define arpc_server_stats(s, st) arpc_server_stats_v((s), (st), sizeof(arpc_server_stats))

/* One method's counters and latency, read from any thread. Errors: ARPC_EINVAL, ARPC_ENOMETHOD (not registered). */
ARPC_API int arpc_server_method_stats_v(const arpc_server *s, const char *method, arpc_method_stats *st,
                                        size_t st_size);
#define arpc_server_method_stats(s, method, st) \
    arpc_server_method_stats_v((s), (method), (st), sizeof(arpc_method_stats))

/* The client's counters, read from any thread. Errors: ARPC_EINVAL (NULL, or a closed client). */
ARPC_API int arpc_client_stats_v(const arpc_client *c, arpc_client_stats *st, size_t st_size);
#define arpc_client_stats(c, st) arpc_client_stats_v((c), (st), sizeof(arpc_client_stats))

/* The server's counters and every method's as one JSON object (what the built-in method
 * arpc.stats answers):
 *   {"server": {"calls_started": N, "calls_finished": N, "calls_in_flight": N,
 *               "outcomes": {"ARPC_OK": N, ...}, "refused": {"ARPC_ENOMETHOD": N, ...},
 *               "oneway": N, "bytes_in": N, "bytes_out": N, "connections_accepted": N,
 *               "connections_closed": N, "connections_open": N, "queued_bytes": N,
 *               "handlers_in_flight": N, "connections_half_closed": N,
 *               "log_expiries_lost": N, "accept_rate_pauses": N, "accept_rate_paused_ns": N,
 *               "connections_faulted": N, "fault_rate_pauses": N, "fault_rate_paused_ns": N,
 *               "log_records": N, "log_failed": 0 or 1, "reply_cache_bytes": N,
 *               "reply_cache_clients": N, "reply_cache_calls": N, "oneways_dropped": N},
 *    "methods": {"NAME": {"started": N, "finished": N, "in_flight": N, "oneway": N,
 *               "outcomes": {...}, "latency_us": {"count": N, "sum": X, "p50": X, "p90": X,
 *               "p99": X, "p999": X, "max": X}}, ...}}
 * Outcome objects list the codes counted at least once, by arpc_errname. Method names are
 * escaped as JSON strings (UTF-8 characters as they are; other bytes outside printable ASCII
 * each as \u00XX, e.g. "\xff" as \u00ff). *out is NUL-terminated,
 * allocated (free it with arpc_free); *len (may be NULL) its length without the NUL.
 * Errors: ARPC_EINVAL, ARPC_ENOMEM. */
ARPC_API int arpc_server_stats_json(const arpc_server *s, char **out, size_t *len);

/* The same in the Prometheus text exposition format (version 0.0.4), for an application to
 * serve from its own HTTP endpoint (Content-Type: text/plain; version=0.0.4):
 *   arpc_server_calls_total{method="M",outcome="ARPC_OK"}   counter: ARPC_OK always (0 before
 *                                                           the first), other codes once counted
 *   arpc_server_calls_started_total{method="M"}             counter
 *   arpc_server_calls_in_flight{method="M"}                 gauge
 *   arpc_server_oneway_total{method="M"}                    counter
 *   arpc_server_call_duration_seconds{method="M"}           histogram: _bucket{le="..."} at
 *       fixed bounds from 50 us to 10 s and +Inf, _sum, _count (a bucket counts whole
 *       histogram buckets at or below its bound: within 0.8% of the bound)
 *   arpc_server_refused_total{outcome="..."}, arpc_server_received_bytes_total,
 *   arpc_server_sent_bytes_total, arpc_server_connections_accepted_total,
 *   arpc_server_connections_closed_total, arpc_server_connections_open,
 *   arpc_server_queued_bytes, arpc_server_handlers_in_flight,
 *   arpc_server_connections_half_closed_total, arpc_server_log_expiries_lost_total,
 *   arpc_server_accept_rate_pauses_total, arpc_server_accept_rate_paused_seconds_total,
 *   arpc_server_connections_faulted_total, arpc_server_fault_rate_pauses_total,
 *   arpc_server_fault_rate_paused_seconds_total, arpc_server_log_records_total,
 *   arpc_server_log_failed (gauge, 0 or 1), arpc_server_reply_cache_bytes,
 *   arpc_server_reply_cache_clients, arpc_server_reply_cache_calls (gauges),
 *   arpc_server_oneways_dropped_total
 * Label values are escaped as the format asks (\\, \", \n); a byte of a method name that is
 * not UTF-8 is written as the text \xHH (the format is UTF-8). Memory and errors as
 * arpc_server_stats_json. */
ARPC_API int arpc_server_stats_prometheus(const arpc_server *s, char **out, size_t *len);

#ifdef __cplusplus
}
#endif

#endif
