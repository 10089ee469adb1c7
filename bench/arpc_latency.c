/* Latency through arpc: one blocking arpc_call outstanding at a time, timed around the call. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arpc_side.h"
#include "progress.h"

/* One call; returns its status, with a wrong-sized or (on the first call) wrong echo as
 * ARPC_EPROTO. */
static int one_call(arpc_client *c, const void *tx, size_t len, bool check_bytes)
{
    void *reply = NULL;
    size_t rlen = 0;
    int rv = arpc_call(c, BENCH_METHOD_ECHO, tx, len, &reply, &rlen, 0);
    if (rv == ARPC_OK && (rlen != len || (check_bytes && memcmp(reply, tx, len) != 0)))
        rv = ARPC_EPROTO;
    arpc_free(reply);
    return rv;
}

static void latency_loop(const struct bench_config *cfg, arpc_client *c, const void *tx,
                         struct bench_run *out)
{
    struct bench_progress prog;
    uint64_t total = cfg->warmup + cfg->calls, t_first = 0, t_last = 0, ctx0 = 0;
    bench_progress_start(&prog, "arpc latency", total, !cfg->quiet);
    for (uint64_t i = 0; i < total; i++) {
        if (i == cfg->warmup)
            ctx0 = bench_ctx_switches();
        uint64_t t0 = bench_now_ns();
        int rv = one_call(c, tx, cfg->payload, i == 0);
        t_last = bench_now_ns();
        if (i == cfg->warmup)
            t_first = t0;
        if (rv != ARPC_OK) {
            bench_progress_end(&prog);
            fprintf(stderr, "arpc-bench: call %llu: %s\n", (unsigned long long)i,
                    rv == ARPC_EPROTO ? "reply differs from request" : arpc_strerror(rv));
            out->errors++;
            return; /* one failure invalidates the run: stop rather than flood the screen */
        }
        if (i >= cfg->warmup) {
            arpc_hist_record(out->hist, t_last - t0);
            out->calls++;
        }
        bench_progress_update(&prog, i + 1, t_last);
    }
    bench_progress_end(&prog);
    out->ctx_per_call = (double)(bench_ctx_switches() - ctx0) / (double)cfg->calls;
    out->elapsed_s = (double)(t_last - t_first) / 1e9;
}

int bench_arpc_latency(const struct bench_config *cfg, const char *addr, struct bench_run *out)
{
    memset(out, 0, sizeof(*out));
    struct bench_clients bc;
    void *tx = malloc(cfg->payload);
    out->hist = bench_hist_new();
    if (tx == NULL || out->hist == NULL) {
        fprintf(stderr, "arpc-bench: out of memory\n");
    } else if (bench_clients_open(&bc, addr, 1, 1, cfg->caller_loop, cfg) == 0) {
        bench_fill_pattern(tx, cfg->payload);
        latency_loop(cfg, bc.bc_clients[0], tx, out);
        bench_clients_close(&bc);
        free(tx);
        out->calls_per_s = out->elapsed_s > 0 ? (double)out->calls / out->elapsed_s : 0;
        return 0;
    }
    free(tx);
    free(out->hist);
    out->hist = NULL;
    return -1;
}
