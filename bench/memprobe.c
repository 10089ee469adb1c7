/*
 * Client memory per outstanding call.
 *
 * A fresh connection (so the pending table's growth to the window is part of the figure)
 * starts `window` calls of bench.hold, which the server answers only on bench.release. Once
 * the server holds them all, every call is outstanding at the client: its future, its entry
 * in the pending table, nothing else of ours. The client-side arpc heap grown since the
 * connection was idle, divided by the window, is the cost of one outstanding call.
 *
 * The calls are started from this (tagged) thread, released at once, and counted done by a
 * then-callback on the loop thread. The server's count is asked through a second client (on
 * the same loop), so that the measured one has exactly the window outstanding: a 65,537th
 * call of its own (the poll) would double its pending ring or not, depending on whether its
 * caller or its loop wrote it (core/pending_calls.h: the two rings), which made the figure
 * bimodal (+8 B a call at window 65,536).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arpc_side.h"
#include "memacct.h"

#define PROBE_WAIT_MS 60000 /* for the server to hold, then to answer, the whole window */
#define PROBE_MAX_HELD (UINT64_C(1) << 30) /* request bytes the server would hold at once */

struct probe {
    pthread_mutex_t p_lock; /* guards p_done, p_errors */
    pthread_cond_t p_cond;
    unsigned p_want;        /* set before the first call starts */
    unsigned p_done;
    unsigned p_errors;
};

static void on_hold_done(arpc_future *f, void *arg)
{
    struct probe *p = arg;
    pthread_mutex_lock(&p->p_lock);
    p->p_errors += arpc_future_poll(f) != ARPC_OK;
    if (++p->p_done == p->p_want || p->p_errors > 0)
        pthread_cond_signal(&p->p_cond);
    pthread_mutex_unlock(&p->p_lock);
}

/* The number of calls the server holds, or -1. */
static int64_t server_held(arpc_client *c)
{
    void *reply = NULL;
    size_t len = 0;
    int rv = arpc_call(c, BENCH_METHOD_HELD, NULL, 0, &reply, &len, 10000);
    int64_t n = -1;
    if (rv == ARPC_OK && len == 8) {
        n = 0;
        for (int i = 7; i >= 0; i--)
            n = n << 8 | ((const uint8_t *)reply)[i];
    } else {
        fprintf(stderr, "arpc-bench: memory probe: %s: %s\n", BENCH_METHOD_HELD,
                rv == ARPC_OK ? "bad reply" : arpc_strerror(rv));
    }
    arpc_free(reply);
    return n;
}

/* Polls the server (through poller) until it holds all n calls of c. The server's count is only
 * visible through a call, so this polls (every millisecond) rather than waits on an event. */
static int wait_held(arpc_client *poller, arpc_client *c, int64_t n)
{
    for (int waited = 0; waited < PROBE_WAIT_MS; waited++) {
        int64_t held = server_held(poller);
        if (held < 0)
            return -1;
        if (held >= n && arpc_client_pending(c) >= (size_t)n)
            return 0;
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    fprintf(stderr, "arpc-bench: memory probe: the server did not receive the whole window\n");
    return -1;
}

static int start_holds(arpc_client *c, struct probe *p, unsigned n, const void *tx, size_t len)
{
    for (unsigned i = 0; i < n; i++) {
        arpc_future *f = arpc_call_async(c, BENCH_METHOD_HOLD, tx, len, 0);
        if (f == NULL || arpc_future_then(f, on_hold_done, p) != ARPC_OK) {
            fprintf(stderr, "arpc-bench: memory probe: cannot start call %u\n", i);
            if (f != NULL)
                arpc_future_release(f); /* cancels the call: nothing waits for it */
            return -1;
        }
        arpc_future_release(f);
    }
    return 0;
}

/* Waits until all n calls completed (after bench.release, or a failure). */
static int wait_done(struct probe *p, unsigned n)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += PROBE_WAIT_MS / 1000;
    pthread_mutex_lock(&p->p_lock);
    int rv = 0;
    while (p->p_done < n && rv == 0)
        rv = pthread_cond_timedwait(&p->p_cond, &p->p_lock, &ts);
    bool ok = p->p_done == n && p->p_errors == 0;
    pthread_mutex_unlock(&p->p_lock);
    if (!ok)
        fprintf(stderr, "arpc-bench: memory probe: held calls did not all complete\n");
    return ok ? 0 : -1;
}

static int measure(const struct bench_config *cfg, arpc_client *c, arpc_client *poller, struct probe *p,
                   void *tx, struct bench_mem *out)
{
    unsigned w = cfg->window;
    /* One call first on each, so buffers a connection allocates on first use are not counted
     * as per-call memory. */
    int rv = arpc_call(c, BENCH_METHOD_ECHO, tx, cfg->payload, NULL, NULL, PROBE_WAIT_MS);
    if (rv != ARPC_OK) {
        fprintf(stderr, "arpc-bench: memory probe: %s: %s\n", BENCH_METHOD_ECHO, arpc_strerror(rv));
        return -1;
    }
    if (server_held(poller) < 0)
        return -1;
    int64_t c0 = bench_memacct_client_bytes(), p0 = bench_memacct_process_bytes();
    if (start_holds(c, p, w, tx, cfg->payload) != 0 || wait_held(poller, c, w) != 0)
        return -1;
    int64_t c1 = bench_memacct_client_bytes(), p1 = bench_memacct_process_bytes();
    rv = arpc_call(c, BENCH_METHOD_RELEASE, NULL, 0, NULL, NULL, PROBE_WAIT_MS);
    if (rv != ARPC_OK) {
        fprintf(stderr, "arpc-bench: memory probe: %s: %s\n", BENCH_METHOD_RELEASE, arpc_strerror(rv));
        return -1;
    }
    if (wait_done(p, w) != 0)
        return -1;
    int64_t c2 = bench_memacct_client_bytes();
    out->valid = true;
    out->window = w;
    out->client_bytes = (double)(c1 - c0) / w;
    out->process_valid = p0 != 0 || p1 != 0;
    out->process_bytes = (double)(p1 - p0) / w;
    out->residual_bytes = (double)(c2 - c0) / w;
    return 0;
}

int bench_arpc_memprobe(const struct bench_config *cfg, const char *addr, struct bench_mem *out)
{
    memset(out, 0, sizeof(*out));
    struct probe p = {.p_want = cfg->window};
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p.p_cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&p.p_lock, NULL);
    void *tx = malloc(cfg->payload);
    struct bench_clients bc;
    int rv = -1;
    if ((uint64_t)cfg->window * cfg->payload > PROBE_MAX_HELD) {
        fprintf(stderr, "arpc-bench: memory probe skipped: window x payload is over %u MiB\n",
                (unsigned)(PROBE_MAX_HELD >> 20));
    } else if (tx == NULL) {
        fprintf(stderr, "arpc-bench: out of memory\n");
    } else if (bench_clients_open(&bc, addr, 2, 1, false, cfg) == 0) { /* the measured one, its poller */
        bench_fill_pattern(tx, cfg->payload);
        rv = measure(cfg, bc.bc_clients[0], bc.bc_clients[1], &p, tx, out);
        if (rv != 0) /* answer whatever is held so close does not wait on the server */
            (void)arpc_call(bc.bc_clients[0], BENCH_METHOD_RELEASE, NULL, 0, NULL, NULL, 1000);
        bench_clients_close(&bc); /* completes anything still pending: then-callbacks run */
    }
    free(tx);
    pthread_cond_destroy(&p.p_cond);
    pthread_mutex_destroy(&p.p_lock);
    return rv;
}
