/*
 * --rate R and --rate-sweep: latency against offered load (see rate.c for how one rate is
 * measured).
 *
 * The sweep offers 1-2-5 steps from --rate-min up to --rate-max and stops after the first
 * step that is saturated: fewer than 90% of the offered calls per second were achieved, or
 * calls failed. That step is reported too (it is where the curve turns up). Each step makes
 * about rate x --step-ms calls (at least 1,000), the first 10% of them unmeasured.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "arpc_side.h"
#include "json.h"
#include "plot.h"
#include "report.h"

#define SATURATED_BELOW 0.9 /* achieved / offered */

static bool saturated(const struct bench_rate_result *r)
{
    return r->run.errors > 0 || r->run.calls_per_s < SATURATED_BELOW * r->offered_per_s;
}

/* The 1-2-5 step after rate (1000 -> 2000 -> 5000 -> 10000 ...). */
static double next_rate(double rate)
{
    double decade = pow(10.0, floor(log10(rate) + 1e-9));
    double m = rate / decade;
    return m < 1.5 ? 2 * decade : m < 3.5 ? 5 * decade : 10 * decade;
}

static void table_header(const struct bench_config *cfg, const char *addr)
{
    fprintf(stderr, "\narpc-bench latency at a fixed rate: %s (%s), payload %zu B, %s arrivals, %s handlers, "
                    "client loop on its own thread, %s calls\n",
            cfg->transport, addr, cfg->payload, cfg->poisson ? "Poisson" : "constant", bench_handlers(cfg),
            cfg->amo ? "at-most-once" : "at-least-once");
    fprintf(stderr, "latency from each call's intended send time (open loop: no coordinated omission)\n");
    fprintf(stderr, "  %12s %12s %9s %9s %9s %9s %9s %12s %9s\n", "offered/s", "achieved/s", "p50 us", "p99 us",
            "p99.9 us", "max us", "errors", "send lag p99", "ctx/call");
}

static void table_row(const struct bench_rate_result *r)
{
    const arpc_hist *h = r->run.hist;
    fprintf(stderr, "  %12.0f %12.0f %9.1f %9.1f %9.1f %9.1f %9llu %9.1f us %9.2f%s\n", r->offered_per_s,
            r->run.calls_per_s, bench_hist_us(h, 50), bench_hist_us(h, 99), bench_hist_us(h, 99.9),
            bench_hist_us(h, 100), (unsigned long long)r->run.errors, bench_hist_us(r->send_lag, 99),
            r->run.ctx_per_call, saturated(r) ? "  saturated" : "");
    if (r->first_error != ARPC_OK)
        fprintf(stderr, "  %12s the first failed call ended %s\n", "", arpc_errname(r->first_error));
}

static void json_point(struct bench_json *j, const struct bench_rate_result *r)
{
    bench_json_num(j, "offered_per_s", r->offered_per_s);
    bench_json_num(j, "calls_per_s", r->run.calls_per_s);
    bench_json_uint(j, "calls", r->run.calls);
    bench_json_uint(j, "errors", r->run.errors);
    bench_json_str_or_null(j, "first_error", r->first_error != ARPC_OK ? arpc_errname(r->first_error) : NULL);
    bench_json_num(j, "p50_us", bench_hist_us(r->run.hist, 50));
    bench_json_num(j, "p90_us", bench_hist_us(r->run.hist, 90));
    bench_json_num(j, "p99_us", bench_hist_us(r->run.hist, 99));
    bench_json_num(j, "p999_us", bench_hist_us(r->run.hist, 99.9));
    bench_json_num(j, "max_us", bench_hist_us(r->run.hist, 100));
    bench_json_num(j, "send_lag_p50_us", bench_hist_us(r->send_lag, 50));
    bench_json_num(j, "send_lag_p99_us", bench_hist_us(r->send_lag, 99));
    bench_json_num(j, "ctx_switches_per_call", r->run.ctx_per_call);
    bench_json_bool(j, "saturated", saturated(r));
}

static void json_report(const struct bench_config *cfg, const char *addr, const struct bench_rate_result *pts,
                        size_t n)
{
    struct bench_json j;
    bench_json_begin(&j, stdout);
    bench_json_str(&j, "mode", "latency");
    bench_json_str(&j, "transport", cfg->transport);
    bench_json_str(&j, "address", addr);
    bench_json_uint(&j, "payload", cfg->payload);
    bench_json_inline(&j, cfg);
    bench_json_str(&j, "client_loop", "thread");
    bench_json_bool(&j, "amo", cfg->amo);
    bench_json_uint(&j, "deadline_ms", (uint64_t)cfg->deadline_ms); /* 0: none */
    bench_json_str(&j, "arrivals", cfg->poisson ? "poisson" : "constant");
    if (!cfg->rate_sweep && n == 1) { /* --rate R: the one point's figures at the top level too */
        bench_json_num(&j, "rate", cfg->rate);
        json_point(&j, &pts[0]);
    }
    double saturation = 0; /* the first saturated step's achieved rate; 0: none reached */
    for (size_t i = 0; i < n && saturation == 0; i++)
        if (saturated(&pts[i]))
            saturation = pts[i].run.calls_per_s;
    bench_json_num(&j, "saturation_per_s", saturation);
    bench_json_key(&j, "rate_sweep");
    fputc('[', stdout);
    for (size_t i = 0; i < n; i++) {
        struct bench_json p;
        if (i > 0)
            fputc(',', stdout);
        bench_json_begin(&p, stdout);
        json_point(&p, &pts[i]);
        bench_json_close(&p);
    }
    fputc(']', stdout);
    bench_json_end(&j);
}

static int plot(const struct bench_config *cfg, const struct bench_rate_result *pts, size_t n)
{
    struct bench_plot_point *pp = calloc(n, sizeof(*pp));
    if (pp == NULL)
        return -1;
    for (size_t i = 0; i < n; i++)
        pp[i] = (struct bench_plot_point){pts[i].run.calls_per_s, bench_hist_us(pts[i].run.hist, 50),
                                          bench_hist_us(pts[i].run.hist, 99), bench_hist_us(pts[i].run.hist, 99.9)};
    char title[256];
    snprintf(title, sizeof(title), "arpc latency vs throughput: %s, payload %zu B, %s handlers, %s arrivals",
             cfg->transport, cfg->payload, bench_handlers(cfg), cfg->poisson ? "Poisson" : "constant");
    int rv = bench_plot_sweep(cfg->plot_path, title, pp, n);
    free(pp);
    return rv;
}

int bench_rate_main(const struct bench_config *cfg, const char *addr)
{
    size_t cap = 64, n = 0;
    struct bench_rate_result *pts = calloc(cap, sizeof(*pts));
    if (pts == NULL)
        return 1;
    struct bench_config step = *cfg;
    double rate = cfg->rate_sweep ? cfg->rate_min : cfg->rate;
    int rv = 0;
    table_header(cfg, addr);
    while (n < cap) {
        if (cfg->rate_sweep) {
            double calls = rate * (double)cfg->step_ms / 1000.0;
            step.calls = calls < 1000 ? 1000 : (uint64_t)calls;
            step.warmup = step.calls / 10;
        }
        if (bench_arpc_rate(&step, addr, rate, &pts[n]) != 0) {
            rv = 1;
            break;
        }
        table_row(&pts[n]);
        bool stop = !cfg->rate_sweep || saturated(&pts[n]);
        n++;
        rate = next_rate(rate);
        if (stop || rate > cfg->rate_max)
            break;
    }
    if (n > 0) {
        if (cfg->plot_path != NULL && plot(cfg, pts, n) != 0)
            rv = 1;
        json_report(cfg, addr, pts, n);
    }
    /* One rate whose calls failed is a failed run; a sweep's last step may fail by design. */
    if (!cfg->rate_sweep && n == 1 && pts[0].run.errors > 0)
        rv = 1;
    for (size_t i = 0; i < n; i++)
        bench_rate_result_free(&pts[i]);
    free(pts);
    return rv;
}
