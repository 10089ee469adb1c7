/*
 * arpc-bench latency at the largest payload --help allows: the raw ping-pong baseline ends. It
 * wrote the whole payload before reading its echo, and a payload larger than the two sockets'
 * buffers together left it and its echo thread both blocked in send, for ever (a user's trial:
 * 11 MB and up, on some runs). A hang here is the ctest timeout.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <string.h>

#include "support/call_run.h"

#ifndef ARPC_BENCH_BIN
#error "tests/CMakeLists.txt defines ARPC_BENCH_BIN, the arpc-bench program's path"
#endif

static void test_largest_payload_ends(void **state)
{
    (void)state;
    static const char *const transports[] = {"tcp", "unix"};
    for (size_t i = 0; i < sizeof(transports) / sizeof(transports[0]); i++) {
        struct call_run r;
        call_run(&r, ARPC_BENCH_BIN, NULL, 0,
                 (const char *const[]){"latency", "--calls", "3", "--warmup", "0", "--payload", "16776192",
                                       "--transport", transports[i], "--quiet", NULL});
        assert_int_equal(0, r.status);
        assert_non_null(strstr(r.out, "\"baseline_p50_us\":"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_largest_payload_ends),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
