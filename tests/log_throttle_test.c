/*
 * The log throttle (base/log_throttle.h) on a clock of the test's own: burst lines per
 * interval, each later one saying how many went unlogged; with a burst of 1, one line per
 * interval from the last logged, as the listener gate and the flow limits use it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/log_throttle.h"

#define S 1000000000ull

static void test_one_per_interval(void **state)
{
    (void)state;
    struct arpc_log_throttle t = {0};
    uint64_t unlogged = 99;
    assert_true(arpc_log_throttle_due(&t, 5 * S, S, 1, &unlogged));
    assert_int_equal(0, unlogged);
    assert_false(arpc_log_throttle_due(&t, 5 * S + 1, S, 1, &unlogged));
    assert_false(arpc_log_throttle_due(&t, 6 * S - 1, S, 1, &unlogged));
    assert_true(arpc_log_throttle_due(&t, 6 * S, S, 1, &unlogged));
    assert_int_equal(2, unlogged);
    assert_true(arpc_log_throttle_due(&t, 9 * S, S, 1, &unlogged)); /* a quiet stretch: at once */
    assert_int_equal(0, unlogged);
}

static void test_burst_per_interval(void **state)
{
    (void)state;
    struct arpc_log_throttle t = {0};
    uint64_t unlogged = 99;
    for (int i = 0; i < 3; i++) { /* the first three of a flood at 0..2 ns */
        assert_true(arpc_log_throttle_due(&t, (uint64_t)i, S, 3, &unlogged));
        assert_int_equal(0, unlogged);
    }
    for (int i = 0; i < 1000; i++) /* the rest of the first second */
        assert_false(arpc_log_throttle_due(&t, 3 + (uint64_t)i * 1000000u, S, 3, &unlogged));
    /* The interval began at its first line (0): at 1 s the next three. */
    assert_true(arpc_log_throttle_due(&t, S, S, 3, &unlogged));
    assert_int_equal(1000, unlogged);
    assert_true(arpc_log_throttle_due(&t, S + 1, S, 3, &unlogged));
    assert_int_equal(0, unlogged);
    assert_true(arpc_log_throttle_due(&t, S + 2, S, 3, &unlogged));
    assert_false(arpc_log_throttle_due(&t, 2 * S - 1, S, 3, &unlogged));
    assert_true(arpc_log_throttle_due(&t, 2 * S + 7, S, 3, &unlogged));
    assert_int_equal(1, unlogged);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_per_interval),
        cmocka_unit_test(test_burst_per_interval),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
