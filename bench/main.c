/*
 * arpc-bench: latency and throughput of arpc calls, next to the same traffic over raw
 * sockets, on one transport. See usage() for the command line; the results go to stderr as
 * a table and to stdout as one JSON object on the last line.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arpc_side.h"
#include "baseline.h"
#include "cli.h"
#include "handoff.h"
#include "memacct.h"
#include "plot.h"
#include "report.h"
#include "server_side.h"

/* The embedded server's address on the chosen transport. */
static void embedded_addr(const char *transport, char *buf, size_t len)
{
    if (strcmp(transport, "tcp") == 0 || strcmp(transport, "tls") == 0)
        snprintf(buf, len, "%s://127.0.0.1:0", transport);
    else if (strcmp(transport, "unix") == 0)
        snprintf(buf, len, "unix:///tmp/arpc-bench-%d.sock", (int)getpid());
    else
        snprintf(buf, len, "inproc://arpc-bench");
}

struct results {
    struct bench_run arpc, base;
    struct bench_mem mem;
};

/* The arpc side, against addr. Returns 0 or -1. */
static int measure_arpc(const struct bench_config *cfg, const char *addr, struct results *res)
{
    if (cfg->mode == BENCH_LATENCY)
        return bench_arpc_latency(cfg, addr, &res->arpc);
    if (bench_arpc_throughput(cfg, addr, &res->arpc) != 0)
        return -1;
    if (cfg->memory && res->arpc.errors == 0 && bench_arpc_memprobe(cfg, addr, &res->mem) != 0)
        fprintf(stderr, "arpc-bench: memory per outstanding call not measured\n");
    return 0;
}

static int plot(const struct bench_config *cfg, const struct results *res, const char *kind)
{
    char title[256];
    snprintf(title, sizeof(title), "arpc-bench %s: %s, payload %zu B, %llu calls%s",
             cfg->mode == BENCH_LATENCY ? "latency" : "throughput", cfg->transport, cfg->payload,
             (unsigned long long)cfg->calls, cfg->mode == BENCH_LATENCY ? ", one at a time" : "");
    if (cfg->mode == BENCH_THROUGHPUT) {
        size_t n = strlen(title);
        snprintf(title + n, sizeof(title) - n, ", window %u x %u", cfg->window, cfg->connections);
    }
    return bench_plot(cfg->plot_path, title, res->arpc.hist, res->base.hist, kind);
}

static int run(const struct bench_config *cfg)
{
    char addr[256];
    struct bench_server *srv = NULL;
    bool embedded = cfg->connect_addr == NULL;
    struct results res = {0};
    if (!embedded) {
        snprintf(addr, sizeof(addr), "%s", cfg->connect_addr);
    } else {
        char want[256];
        embedded_addr(cfg->transport, want, sizeof(want));
        if (bench_server_start(&srv, want, cfg, addr, sizeof(addr)) != 0)
            return 1;
    }
    if (cfg->rate > 0 || cfg->rate_sweep) { /* open loop: its own report, no baseline */
        int status = bench_rate_main(cfg, addr);
        bench_server_stop(srv);
        return status;
    }
    int rv = measure_arpc(cfg, addr, &res);
    bench_server_stop(srv); /* no arpc thread is left running while the baseline runs */
    if (rv != 0)
        return 1;
    const char *kind = cfg->mode == BENCH_LATENCY ? "raw ping-pong" : "raw pipelined echo";
    rv = cfg->mode == BENCH_LATENCY ? bench_baseline_pingpong(cfg, &res.base)
                                    : bench_baseline_pipelined(cfg, &res.base);
    if (rv == 0) {
        struct bench_report rep = {cfg, addr, embedded, &res.arpc, &res.base, kind,
                                   cfg->mode == BENCH_THROUGHPUT ? &res.mem : NULL};
        bench_report_table(&rep);
        if (cfg->plot_path != NULL && plot(cfg, &res, kind) != 0)
            rv = 1; /* asked for and not drawn (a missing gnuplot is not a failure) */
        bench_report_json(&rep);
    }
    free(res.arpc.hist);
    free(res.base.hist);
    return rv != 0 || res.arpc.errors > 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
    struct bench_config cfg;
    int rv = bench_cli_parse(&cfg, argc, argv);
    if (rv >= 0)
        return rv; /* --help, or a usage error */
    signal(SIGPIPE, SIG_IGN); /* a peer that goes away is an error to report, not a death */
    if (cfg.mode == BENCH_SERVE)
        return bench_serve_main(&cfg);
    if (cfg.mode == BENCH_HANDOFF)
        return bench_handoff_main(&cfg);
    if (cfg.mode == BENCH_THROUGHPUT && cfg.memory) {
        bench_memacct_install(); /* before any other arpc call, as the hook requires */
        bench_memacct_tag_client();
    }
    return run(&cfg);
}
