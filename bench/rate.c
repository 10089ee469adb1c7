/*
 * Latency at a fixed offered rate, from an open loop (--rate R, and each step of --rate-sweep).
 *
 * The sender (the calling thread) starts call i at its intended time t0 + offset(i), whatever
 * happened to the calls before it: offsets are i/R (constant arrivals) or sums of exponential
 * gaps of mean 1/R (Poisson arrivals). Each call's latency is measured from its *intended*
 * start, not from when the sender got round to it, so a stall anywhere (the sender's own
 * wake-up included) shows in the figures instead of being hidden by a sender that waited
 * (coordinated omission, as wrk2 and HdrHistogram avoid it). How late the sender itself was
 * is reported apart (send lag), so a reader can tell the two apart.
 *
 * The client is the default one (its loop on a thread of its own): an open loop cannot drive
 * the client's loop while it sleeps until the next send. Replies are matched on that loop
 * thread, whose then-callback writes the call's latency into its own slot of an array; the
 * sender reads the array after the last completion (a semaphore posted by the last one).
 * The sender sleeps between sends (clock_nanosleep to the absolute time, timer slack 1 ns):
 * it does not spin, so it takes no core from the client and server threads on 2 cores.
 */
#include <math.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

#include "arpc_side.h"
#include "progress.h"

#define RATE_FAILED UINT64_MAX /* a call that did not end OK with the right reply size */

struct rate_run;

struct rate_call {
    struct rate_run *rc_run;
    uint64_t rc_intended_ns;
};

struct rate_run {
    struct rate_call *r_calls;
    uint64_t *r_latency_ns; /* one per call, written once by the completing thread */
    uint64_t r_total;
    size_t r_len;
    _Atomic uint64_t r_done;
    _Atomic uint64_t r_last_ns; /* the latest completion */
    _Atomic int r_first_error;  /* the first failure's outcome (ARPC_OK: none yet) */
    sem_t r_all_done;
};

static void note_failure(struct rate_run *r, int status)
{
    int none = ARPC_OK;
    atomic_compare_exchange_strong(&r->r_first_error, &none, status);
}

static void on_reply(arpc_future *f, void *arg)
{
    struct rate_call *c = arg;
    struct rate_run *r = c->rc_run;
    uint64_t now = bench_now_ns();
    size_t len = 0;
    int status = arpc_future_poll(f);
    bool ok = status == ARPC_OK && (arpc_future_data(f, &len), len == r->r_len);
    r->r_latency_ns[c - r->r_calls] = ok ? now - c->rc_intended_ns : RATE_FAILED;
    if (!ok)
        note_failure(r, status != ARPC_OK ? status : ARPC_EPROTO);
    arpc_future_release(f);
    uint64_t last = atomic_load_explicit(&r->r_last_ns, memory_order_relaxed);
    while (now > last && !atomic_compare_exchange_weak(&r->r_last_ns, &last, now))
        ;
    if (atomic_fetch_add(&r->r_done, 1) + 1 == r->r_total)
        sem_post(&r->r_all_done);
}

/* xorshift64*: a cheap generator for the arrival gaps (not for anything secret). */
static double uniform01(uint64_t *state)
{
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    uint64_t x = *state * UINT64_C(2685821657736338717);
    return ((double)(x >> 11) + 0.5) / 9007199254740992.0; /* (0, 1): log() stays finite */
}

static void sleep_until(uint64_t t_ns)
{
    struct timespec ts = {(time_t)(t_ns / 1000000000u), (long)(t_ns % 1000000000u)};
    while (bench_now_ns() < t_ns && clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0)
        ;
}

/* Sends every call at its intended time; returns the first intended time measured. */
static uint64_t send_all(const struct bench_config *cfg, arpc_client *client, const void *tx,
                         double rate, struct rate_run *r, arpc_hist *lag)
{
    uint64_t seed = 0x9e3779b97f4a7c15u ^ (uint64_t)rate, t_first = 0;
    uint64_t t0 = bench_now_ns() + 1000000; /* 1 ms to get going */
    double offset_ns = 0, gap_ns = 1e9 / rate;
    struct bench_progress prog;
    bench_progress_start(&prog, "arpc latency at a fixed rate", r->r_total, !cfg->quiet);
    for (uint64_t i = 0; i < r->r_total; i++) {
        struct rate_call *c = &r->r_calls[i];
        c->rc_run = r;
        c->rc_intended_ns = t0 + (uint64_t)offset_ns;
        offset_ns += cfg->poisson ? -log(uniform01(&seed)) * gap_ns : gap_ns;
        sleep_until(c->rc_intended_ns);
        uint64_t now = bench_now_ns();
        if (i == cfg->warmup)
            t_first = c->rc_intended_ns;
        if (i >= cfg->warmup)
            arpc_hist_record(lag, now - c->rc_intended_ns);
        arpc_future *f = arpc_call_async(client, BENCH_METHOD_ECHO, tx, r->r_len, 0);
        if (f == NULL || arpc_future_then(f, on_reply, c) != ARPC_OK) { /* counted as failed */
            r->r_latency_ns[i] = RATE_FAILED;
            note_failure(r, ARPC_ENOMEM); /* neither the call nor its callback could be made */
            if (f != NULL)
                arpc_future_release(f);
            if (atomic_fetch_add(&r->r_done, 1) + 1 == r->r_total)
                sem_post(&r->r_all_done);
        }
        bench_progress_update(&prog, i + 1, now);
    }
    bench_progress_end(&prog);
    return t_first;
}

static void collect(const struct bench_config *cfg, struct rate_run *r, uint64_t t_first,
                    struct bench_rate_result *out)
{
    for (uint64_t i = cfg->warmup; i < r->r_total; i++) {
        if (r->r_latency_ns[i] == RATE_FAILED) {
            out->run.errors++;
        } else {
            arpc_hist_record(out->run.hist, r->r_latency_ns[i]);
            out->run.calls++;
        }
    }
    uint64_t last = atomic_load(&r->r_last_ns);
    out->run.elapsed_s = last > t_first ? (double)(last - t_first) / 1e9 : 0;
    out->run.calls_per_s = out->run.elapsed_s > 0 ? (double)out->run.calls / out->run.elapsed_s : 0;
    out->first_error = atomic_load(&r->r_first_error);
}

int bench_arpc_rate(const struct bench_config *cfg, const char *addr, double rate,
                    struct bench_rate_result *out)
{
    memset(out, 0, sizeof(*out));
    out->offered_per_s = rate;
    out->run.hist = bench_hist_new();
    out->send_lag = bench_hist_new();
    struct rate_run r = {.r_total = cfg->warmup + cfg->calls, .r_len = cfg->payload};
    r.r_calls = calloc(r.r_total, sizeof(*r.r_calls));
    r.r_latency_ns = calloc(r.r_total, sizeof(*r.r_latency_ns));
    void *tx = malloc(cfg->payload);
    struct bench_clients bc;
    int rv = -1;
    if (out->run.hist == NULL || out->send_lag == NULL || r.r_calls == NULL || r.r_latency_ns == NULL ||
        tx == NULL) {
        fprintf(stderr, "arpc-bench: out of memory\n");
    } else if (bench_clients_open(&bc, addr, 1, 1, false, cfg) == 0) {
        prctl(PR_SET_TIMERSLACK, 1UL); /* wake at the intended time, not up to 50 us after it */
        bench_fill_pattern(tx, cfg->payload);
        sem_init(&r.r_all_done, 0, 0);
        uint64_t ctx0 = bench_ctx_switches();
        uint64_t t_first = send_all(cfg, bc.bc_clients[0], tx, rate, &r, out->send_lag);
        while (sem_wait(&r.r_all_done) != 0)
            ;
        uint64_t ctx = bench_ctx_switches() - ctx0;
        sem_destroy(&r.r_all_done);
        bench_clients_close(&bc);
        collect(cfg, &r, t_first, out);
        out->run.ctx_per_call = (double)ctx / (double)r.r_total;
        rv = 0;
    }
    free(tx);
    free(r.r_calls);
    free(r.r_latency_ns);
    if (rv != 0)
        bench_rate_result_free(out);
    return rv;
}

void bench_rate_result_free(struct bench_rate_result *res)
{
    free(res->run.hist);
    free(res->send_lag);
    res->run.hist = res->send_lag = NULL;
}
