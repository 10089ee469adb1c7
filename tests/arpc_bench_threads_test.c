/*
 * arpc-bench throughput splits its CPU time and context switches per call by thread
 * (bench/util.c, bench_threads_read): the server's loop, its workers and the client's loops
 * each show their part in the JSON, the parts add up to the whole process's figure, and with
 * --inline the workers have none (the handlers run on the loop).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/call_run.h"

#ifndef ARPC_BENCH_BIN
#error "tests/CMakeLists.txt defines ARPC_BENCH_BIN, the arpc-bench program's path"
#endif

/* The number after "key": in the JSON line; the test fails if it is not there. */
static double json_num(const char *json, const char *key)
{
    char pat[80];
    snprintf(pat, sizeof(pat), "\"%s\":", key);
    const char *p = strstr(json, pat);
    if (p == NULL)
        fail_msg("no %s in the bench's JSON", key);
    return strtod(p + strlen(pat), NULL);
}

static void run(struct call_run *r, const char *mode_flag)
{
    call_run(r, ARPC_BENCH_BIN, NULL, 0,
             (const char *const[]){"throughput", "--calls", "20000", "--window", "16", "--payload", "64",
                                   "--no-memory", "--quiet", mode_flag, NULL});
    assert_int_equal(0, r->status);
}

static void test_pool_split_by_thread(void **state)
{
    (void)state;
    struct call_run r;
    run(&r, NULL);
    double total = json_num(r.out, "cpu_us_per_call");
    double loop = json_num(r.out, "server_loop_cpu_us_per_call");
    double workers = json_num(r.out, "workers_cpu_us_per_call");
    double clients = json_num(r.out, "client_loops_cpu_us_per_call");
    double other = json_num(r.out, "other_cpu_us_per_call");
    assert_true(loop > 0 && workers > 0 && clients > 0);
    /* Two clocks of the same threads over the same phase (schedstat, getrusage). */
    double sum = loop + workers + clients + other;
    if (sum < 0.7 * total || sum > 1.3 * total)
        fail_msg("the threads' parts add up to %.3f us per call, the process's is %.3f", sum, total);
    double ctx = json_num(r.out, "server_loop_ctx_per_call") + json_num(r.out, "workers_ctx_per_call") +
                 json_num(r.out, "client_loops_ctx_per_call") + json_num(r.out, "other_ctx_per_call");
    assert_true(ctx <= json_num(r.out, "ctx_switches_per_call") * 1.3 + 0.01);
}

static void test_inline_workers_idle(void **state)
{
    (void)state;
    struct call_run r;
    run(&r, "--inline");
    double loop = json_num(r.out, "server_loop_cpu_us_per_call");
    assert_true(loop > 0);
    assert_true(json_num(r.out, "workers_cpu_us_per_call") < loop / 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_split_by_thread),
        cmocka_unit_test(test_inline_workers_idle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
