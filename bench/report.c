#include "report.h"

#include <stdio.h>
#include <string.h>

#include "arpc/server.h"
#include "json.h"

/* a / b, or 0 when there is nothing to compare against. */
static double ratio(double a, double b) { return b > 0 ? a / b : 0.0; }

/* Payload megabytes (10^6 B) per second in each direction: the request's, echoed by the reply. */
static double mb_per_s(const struct bench_config *c, const struct bench_run *run)
{
    return run->calls_per_s * (double)c->payload / 1e6;
}

static void row(const char *name, const struct bench_run *run)
{
    const arpc_hist *h = run->hist;
    fprintf(stderr, "  %-20s %10.2f %10.2f %10.2f %10.2f %10.2f %10.2f %12.0f\n", name, bench_hist_us(h, 50),
            bench_hist_us(h, 90), bench_hist_us(h, 99), bench_hist_us(h, 99.9), bench_hist_us(h, 100),
            arpc_hist_mean(h) / 1e3, run->calls_per_s);
}

static void ratio_row(const struct bench_run *a, const struct bench_run *b)
{
    fprintf(stderr, "  %-20s", "arpc / baseline");
    static const double pcts[] = {50, 90, 99, 99.9, 100};
    for (unsigned i = 0; i < sizeof(pcts) / sizeof(pcts[0]); i++)
        fprintf(stderr, " %9.2fx", ratio(bench_hist_us(a->hist, pcts[i]), bench_hist_us(b->hist, pcts[i])));
    fprintf(stderr, " %9.2fx %11.2fx\n", ratio(arpc_hist_mean(a->hist), arpc_hist_mean(b->hist)),
            ratio(a->calls_per_s, b->calls_per_s));
}

static void header(const struct bench_report *r)
{
    const struct bench_config *c = r->r_cfg;
    bool tp = c->mode == BENCH_THROUGHPUT;
    fprintf(stderr, "\narpc-bench %s: %s, payload %zu B, %llu calls (+%llu warm-up)", tp ? "throughput" : "latency",
            c->transport, c->payload, (unsigned long long)c->calls, (unsigned long long)c->warmup);
    if (tp)
        fprintf(stderr, ", window %u x %u connection%s, %u thread%s, api %s", c->window, c->connections,
                c->connections == 1 ? "" : "s", c->threads, c->threads == 1 ? "" : "s",
                c->api == BENCH_API_CQ ? "cq" : "then");
    fprintf(stderr, "\nserver: %s (%s)", r->r_embedded ? "embedded" : "remote", r->r_addr);
    if (r->r_embedded)
        fprintf(stderr, ", %s handlers", bench_handlers(c));
    if (c->mode == BENCH_LATENCY)
        fprintf(stderr, ", client loop driven by %s", c->caller_loop ? "the caller" : "its own thread");
    fprintf(stderr, "; baseline: %s, %s, no framework\n", r->r_base_kind,
            strcmp(c->transport, "tls") == 0 ? "bare tcp (no TLS)" : "same transport");
    fprintf(stderr, "calls: %s", c->amo ? "at-most-once (numbered, reply cache)" : "at-least-once (not numbered)");
    if (c->deadline_ms != 0)
        fprintf(stderr, ", deadline %lld ms", (long long)c->deadline_ms);
    if (!r->r_embedded)
        fprintf(stderr, "; reply log: the remote server's\n");
    else if (c->log_dir == NULL)
        fprintf(stderr, "; reply log: none\n");
    else
        fprintf(stderr, "; reply log: in %s (a fresh subdirectory), fsync %s\n", c->log_dir,
                bench_fsync_name(c->fsync));
    fprintf(stderr, "  %-20s %10s %10s %10s %10s %10s %10s %12s\n", "", "p50 us", "p90 us", "p99 us",
            "p99.9 us", "max us", "mean us", "calls/s");
}

void bench_report_table(const struct bench_report *r)
{
    header(r);
    row("arpc", r->r_arpc);
    row(r->r_base_kind, r->r_base);
    ratio_row(r->r_arpc, r->r_base);
    if (r->r_cfg->mode == BENCH_THROUGHPUT)
        fprintf(stderr, "payload bytes/s: arpc %.1f MB/s, %s %.1f MB/s (%.2fx; each way, 1 MB = 10^6 B)\n",
                mb_per_s(r->r_cfg, r->r_arpc), r->r_base_kind, mb_per_s(r->r_cfg, r->r_base),
                ratio(r->r_arpc->calls_per_s, r->r_base->calls_per_s));
    if (r->r_arpc->cpu_us_per_call > 0 && r->r_base->cpu_us_per_call > 0)
        fprintf(stderr, "CPU per call: arpc %.2f us, %s %.2f us (%.2fx; user + system, every thread of the process%s)\n",
                r->r_arpc->cpu_us_per_call, r->r_base_kind, r->r_base->cpu_us_per_call,
                ratio(r->r_arpc->cpu_us_per_call, r->r_base->cpu_us_per_call),
                r->r_embedded ? ", the embedded server's too" : ": the server's is not counted");
    fprintf(stderr, "context switches per call: %.2f (every thread of the process%s; voluntary + involuntary)\n",
            r->r_arpc->ctx_per_call, r->r_embedded ? ", the embedded server's too" : "");
    if (r->r_arpc->roles_valid) {
        const struct bench_run *a = r->r_arpc;
        fprintf(stderr, "by thread, per call (CPU us / context switches): server loop %.2f / %.3f, workers %.2f / %.3f, "
                "client loops %.2f / %.3f, other %.2f / %.3f\n",
                a->role_cpu_us[BENCH_ROLE_SERVER_LOOP], a->role_ctx[BENCH_ROLE_SERVER_LOOP],
                a->role_cpu_us[BENCH_ROLE_WORKERS], a->role_ctx[BENCH_ROLE_WORKERS],
                a->role_cpu_us[BENCH_ROLE_CLIENT_LOOPS], a->role_ctx[BENCH_ROLE_CLIENT_LOOPS],
                a->role_cpu_us[BENCH_ROLE_OTHER], a->role_ctx[BENCH_ROLE_OTHER]);
    }
    const struct bench_mem *m = r->r_mem;
    if (m != NULL && m->valid) {
        fprintf(stderr, "memory: %.1f B of client heap per outstanding call at window %u (", m->client_bytes,
                m->window);
        if (m->process_valid)
            fprintf(stderr, "process heap %+.1f B/call%s; ", m->process_bytes,
                    r->r_embedded ? ", includes the embedded server's held requests" : "");
        fprintf(stderr, "left after completion %.1f B/call)\n", m->residual_bytes);
    } else if (m != NULL) {
        fprintf(stderr, "memory: not measured%s\n", r->r_cfg->memory ? "" : " (--no-memory)");
    }
    if (r->r_arpc->errors > 0)
        fprintf(stderr, "ERRORS: %llu calls failed; the figures above are not valid\n",
                (unsigned long long)r->r_arpc->errors);
}

static void json_hist(struct bench_json *j, const char *prefix, const arpc_hist *h)
{
    static const struct {
        const char *key;
        double pct;
    } keys[] = {{"p50_us", 50}, {"p90_us", 90}, {"p99_us", 99}, {"p999_us", 99.9}, {"max_us", 100}};
    char name[64];
    for (unsigned i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        snprintf(name, sizeof(name), "%s%s", prefix, keys[i].key);
        bench_json_num(j, name, bench_hist_us(h, keys[i].pct));
    }
    snprintf(name, sizeof(name), "%smean_us", prefix);
    bench_json_num(j, name, arpc_hist_mean(h) / 1e3);
}

const char *bench_handlers(const struct bench_config *c)
{
    return c->connect_addr != NULL ? "the remote server's" : c->inline_handler ? "inline" : "pool";
}

void bench_json_inline(struct bench_json *j, const struct bench_config *c)
{
    if (c->connect_addr == NULL)
        bench_json_bool(j, "inline", c->inline_handler);
    else
        bench_json_str_or_null(j, "inline", NULL);
}

static void json_config(struct bench_json *j, const struct bench_report *r)
{
    const struct bench_config *c = r->r_cfg;
    bench_json_str(j, "mode", c->mode == BENCH_THROUGHPUT ? "throughput" : "latency");
    bench_json_str(j, "transport", c->transport);
    bench_json_uint(j, "calls", c->calls);
    bench_json_uint(j, "warmup", c->warmup);
    bench_json_uint(j, "window", c->mode == BENCH_THROUGHPUT ? c->window : 1);
    bench_json_uint(j, "payload", c->payload);
    bench_json_uint(j, "connections", c->mode == BENCH_THROUGHPUT ? c->connections : 1);
    bench_json_uint(j, "threads", c->mode == BENCH_THROUGHPUT ? c->threads : 1);
    bench_json_str(j, "api", c->mode != BENCH_THROUGHPUT ? "call" : c->api == BENCH_API_CQ ? "cq" : "then");
    bench_json_str(j, "server", r->r_embedded ? "embedded" : "remote");
    bench_json_str(j, "address", r->r_addr);
    bench_json_inline(j, c);
    /* the embedded server's poll in effect: its default (50) when not given, 0 for none; a
     * remote server's is its own (absent here) */
    if (r->r_embedded)
        bench_json_uint(j, "worker_poll_us",
                        c->worker_poll_us == 0   ? ARPC_WORKER_POLL_US_DEFAULT
                        : c->worker_poll_us < 0 ? 0
                                                : (uint64_t)c->worker_poll_us);
    if (c->mode == BENCH_LATENCY)
        bench_json_str(j, "client_loop", c->caller_loop ? "caller" : "thread");
    bench_json_bool(j, "amo", c->amo);
    bench_json_uint(j, "deadline_ms", (uint64_t)c->deadline_ms); /* 0: none */
    /* log: the --log DIR (the run logged in a fresh subdirectory of it, removed since);
     * null: no log, or a remote server's (unknown here) */
    bool logged = r->r_embedded && c->log_dir != NULL;
    bench_json_str_or_null(j, "log", logged ? c->log_dir : NULL);
    bench_json_str_or_null(j, "fsync", logged ? bench_fsync_name(c->fsync) : NULL);
}

void bench_report_json(const struct bench_report *r)
{
    struct bench_json j;
    const struct bench_run *a = r->r_arpc, *b = r->r_base;
    bench_json_begin(&j, stdout);
    json_config(&j, r);
    json_hist(&j, "", a->hist);
    bench_json_num(&j, "calls_per_s", a->calls_per_s);
    bench_json_uint(&j, "errors", a->errors);
    bench_json_num(&j, "ctx_switches_per_call", a->ctx_per_call);
    bench_json_num(&j, "elapsed_s", a->elapsed_s);
    bench_json_str(&j, "baseline", r->r_base_kind);
    json_hist(&j, "baseline_", b->hist);
    bench_json_num(&j, "baseline_calls_per_s", b->calls_per_s);
    bench_json_num(&j, "p50_ratio", ratio(bench_hist_us(a->hist, 50), bench_hist_us(b->hist, 50)));
    bench_json_num(&j, "p99_ratio", ratio(bench_hist_us(a->hist, 99), bench_hist_us(b->hist, 99)));
    bench_json_num(&j, "throughput_ratio", ratio(a->calls_per_s, b->calls_per_s));
    bench_json_num(&j, "mb_per_s", mb_per_s(r->r_cfg, a));
    if (a->cpu_us_per_call > 0 && b->cpu_us_per_call > 0) {
        bench_json_num(&j, "cpu_us_per_call", a->cpu_us_per_call);
        bench_json_num(&j, "baseline_cpu_us_per_call", b->cpu_us_per_call);
    }
    bench_json_num(&j, "baseline_mb_per_s", mb_per_s(r->r_cfg, b));
    if (a->roles_valid) { /* the split of cpu_us_per_call and ctx_switches_per_call by thread */
        static const char *const names[BENCH_ROLES] = {"server_loop", "workers", "client_loops", "other"};
        char key[64];
        for (int i = 0; i < BENCH_ROLES; i++) {
            snprintf(key, sizeof(key), "%s_cpu_us_per_call", names[i]);
            bench_json_num(&j, key, a->role_cpu_us[i]);
            snprintf(key, sizeof(key), "%s_ctx_per_call", names[i]);
            bench_json_num(&j, key, a->role_ctx[i]);
        }
    }
    if (r->r_mem != NULL) { /* -1: not measured (--no-memory, or the probe failed) */
        const struct bench_mem *m = r->r_mem;
        bench_json_num(&j, "bytes_per_outstanding_call", m->valid ? m->client_bytes : -1.0);
        bench_json_num(&j, "process_bytes_per_outstanding_call",
                       m->valid && m->process_valid ? m->process_bytes : -1.0);
        bench_json_num(&j, "residual_bytes_per_call", m->valid ? m->residual_bytes : -1.0);
        bench_json_uint(&j, "memory_window", m->valid ? m->window : 0);
    }
    bench_json_end(&j);
}
