/*
 * arpc-bench --connect to a server that is not there (bench/clients.c): the one line on
 * stderr names the error and says what is in the way, in the library's words (errbuf), not
 * only the code's generic text ("could not connect to the server"), which leaves a user
 * guessing whether the path, the port or the host is wrong. The embedded server's options
 * (--inline, --workers, --worker-poll-us) are refused with --connect: the run recorded them in
 * its JSON as if they had applied to the server there. And serve refuses the calling side's
 * options, which it ignored without a word (--transport, --calls, --plot: a trial of the tools).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "support/call_run.h"

#ifndef ARPC_BENCH_BIN
#error "tests/CMakeLists.txt defines ARPC_BENCH_BIN, the arpc-bench program's path"
#endif

#define BENCH(r, addr) \
    call_run((r), ARPC_BENCH_BIN, NULL, 0, \
             (const char *const[]){"throughput", "--connect", (addr), "--calls", "10", "--no-memory", "--quiet", NULL})

static void test_missing_unix_socket_says_why(void **state)
{
    (void)state;
    char addr[128];
    snprintf(addr, sizeof(addr), "unix:///tmp/arpc-bench-connect-%d-nowhere/bench.sock", (int)getpid());
    struct call_run r;
    BENCH(&r, addr);
    assert_int_not_equal(0, r.status);
    assert_non_null(strstr(r.err, "ARPC_ECONNREFUSED"));
    assert_non_null(strstr(r.err, "no such directory for unix path"));
}

static void test_refused_tcp_port_says_why(void **state)
{
    (void)state;
    struct call_run r;
    BENCH(&r, "tcp://127.0.0.1:1"); /* a privileged port nothing listens on */
    assert_int_not_equal(0, r.status);
    assert_non_null(strstr(r.err, "ARPC_ECONNREFUSED"));
    assert_non_null(strstr(r.err, "connection refused by 127.0.0.1:1"));
}

static void test_server_options_refused_with_connect(void **state)
{
    (void)state;
    static const char *const opts[][2] = {{"--inline", NULL}, {"--workers", "3"}, {"--worker-poll-us", "0"}};
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
        struct call_run r;
        call_run(&r, ARPC_BENCH_BIN, NULL, 0,
                 (const char *const[]){"latency", "--connect", "tcp://127.0.0.1:1", "--calls", "10", opts[i][0],
                                       opts[i][1], NULL});
        assert_int_equal(2, r.status);
        char want[128];
        snprintf(want, sizeof(want), "arpc-bench: %s configures the embedded server, not the one at --connect",
                 opts[i][0]);
        if (strstr(r.err, want) == NULL)
            fail_msg("%s", r.err);
    }
}

static void test_serve_refuses_calling_side_options(void **state)
{
    (void)state;
    static const char *const opts[][2] = {
        {"--transport", "unix"}, {"--calls", "10"}, {"--plot", "x.png"}, {"--payload", "100"}, {"--tls-ca", "ca.pem"}};
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
        struct call_run r;
        /* An address no server can take: a serve that took the option would fail otherwise. */
        call_run(&r, ARPC_BENCH_BIN, NULL, 0,
                 (const char *const[]){"serve", "--listen", "tcp://256.0.0.1:1", opts[i][0], opts[i][1], NULL});
        assert_int_equal(2, r.status);
        char want[128];
        snprintf(want, sizeof(want), "arpc-bench: %s applies to latency and throughput, not serve", opts[i][0]);
        if (strstr(r.err, want) == NULL)
            fail_msg("%s", r.err);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing_unix_socket_says_why),
        cmocka_unit_test(test_refused_tcp_port_says_why),
        cmocka_unit_test(test_server_options_refused_with_connect),
        cmocka_unit_test(test_serve_refuses_calling_side_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
