/*
 * bench/arpc_side.h: the measurements that go through arpc.
 *
 * Every function here returns 0, or -1 after printing why on stderr. Runs that completed
 * with call errors return 0 with out->errors > 0 (the caller reports them and fails).
 */
#ifndef ARPC_BENCH_ARPC_SIDE_H
#define ARPC_BENCH_ARPC_SIDE_H

#include "arpc/arpc.h"
#include "bench.h"

/* Client connections spread over client loop threads (connection i on loop i % nloops).
 * The loop threads are tagged as client side for the memory accounting (memacct.h). */
struct bench_clients {
    unsigned bc_nloops;
    unsigned bc_nclients;
    arpc_loop **bc_loops;
    arpc_client **bc_clients;
};

/* Every client calls with cfg's semantics (bench_semantics) and, over tls, trusts cfg's CA. */
int bench_clients_open(struct bench_clients *bc, const char *addr, unsigned nclients,
                       unsigned nloops, bool caller_driven, const struct bench_config *cfg);
void bench_clients_close(struct bench_clients *bc);

/* The semantics of the bench's calls (--amo). */
static inline enum arpc_call_semantics bench_semantics(const struct bench_config *cfg)
{
    return cfg->amo ? ARPC_AT_MOST_ONCE : ARPC_AT_LEAST_ONCE;
}

/* One blocking arpc_call at a time on one connection. */
int bench_arpc_latency(const struct bench_config *cfg, const char *addr, struct bench_run *out);

/* cfg->window calls outstanding per connection, cfg->calls in all. */
int bench_arpc_throughput(const struct bench_config *cfg, const char *addr, struct bench_run *out);

/* One run at a fixed offered rate (rate.c). */
struct bench_rate_result {
    double offered_per_s;
    struct bench_run run; /* latency from each call's intended start; calls_per_s achieved */
    arpc_hist *send_lag; /* how late the sender started each call (owned) */
    int first_error;     /* the outcome of the first call that failed (ARPC_EPROTO: a reply of
                          * the wrong size), or ARPC_OK */
};

/* cfg->warmup + cfg->calls calls started at `rate` per second (cfg->poisson: Poisson
 * arrivals) on the default client (its own loop thread), whatever the replies do. */
int bench_arpc_rate(const struct bench_config *cfg, const char *addr, double rate,
                    struct bench_rate_result *out);
void bench_rate_result_free(struct bench_rate_result *res);

/* --rate R or --rate-sweep: runs, reports (table on stderr, JSON last on stdout) and plots.
 * Returns the process's exit status. */
int bench_rate_main(const struct bench_config *cfg, const char *addr);

/* Holds cfg->window calls outstanding on a fresh connection (bench.hold) and measures the
 * client's heap growth per call. */
int bench_arpc_memprobe(const struct bench_config *cfg, const char *addr, struct bench_mem *out);

#endif
