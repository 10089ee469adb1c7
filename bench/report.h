/*
 * bench/report.h: the results, as a table on stderr and as one JSON object on the last line
 * of stdout.
 */
#ifndef ARPC_BENCH_REPORT_H
#define ARPC_BENCH_REPORT_H

#include "bench.h"

struct bench_report {
    const struct bench_config *r_cfg;
    const char *r_addr;            /* the address the client used */
    bool r_embedded;               /* the server ran in this process */
    const struct bench_run *r_arpc;
    const struct bench_run *r_base;
    const char *r_base_kind;       /* "raw ping-pong" or "raw pipelined echo" */
    const struct bench_mem *r_mem; /* throughput mode only; NULL otherwise */
};

void bench_report_table(const struct bench_report *r);
void bench_report_json(const struct bench_report *r);

struct bench_json;
/* The run's server's handlers in words: "inline" or "pool", or with --connect "the remote
 * server's" (its own: serve's --inline, not known here). */
const char *bench_handlers(const struct bench_config *c);
/* The JSON's "inline": the embedded server's, or null with --connect (not known here). */
void bench_json_inline(struct bench_json *j, const struct bench_config *c);

#endif
