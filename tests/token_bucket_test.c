/*
 * base/token_bucket.h on a clock of the test's own (plain numbers, no waiting): a full bucket
 * gives its burst at once, then one token per interval; over any window at most burst +
 * window / interval are taken; the wait it names is exact; refused takes change nothing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/token_bucket.h"

#define MS 1000000ull
#define T0 (5000 * MS) /* any start: the clock is the caller's */

static void test_burst_at_once_then_empty(void **state)
{
    (void)state;
    struct arpc_token_bucket b;
    arpc_token_bucket_init(&b, 100, 8); /* 10 ms a token */
    assert_int_equal(0, arpc_token_bucket_wait_ns(&b, T0, 8));
    for (int i = 0; i < 8; i++)
        assert_true(arpc_token_bucket_take(&b, T0));
    assert_false(arpc_token_bucket_take(&b, T0));
    assert_int_equal(10 * MS, arpc_token_bucket_wait_ns(&b, T0, 1));
    assert_int_equal(40 * MS, arpc_token_bucket_wait_ns(&b, T0, 4));
    assert_int_equal(80 * MS, arpc_token_bucket_wait_ns(&b, T0, 100)); /* capped at the burst */
    assert_false(arpc_token_bucket_take(&b, T0 + 10 * MS - 1));
    assert_true(arpc_token_bucket_take(&b, T0 + 10 * MS));
    assert_false(arpc_token_bucket_take(&b, T0 + 10 * MS));
}

/* Charges past an empty bucket are a debt the wait covers, up to one burst more. */
static void test_charge_goes_into_debt_up_to_a_burst(void **state)
{
    (void)state;
    struct arpc_token_bucket b;
    arpc_token_bucket_init(&b, 100, 8); /* 10 ms a token */
    for (int i = 0; i < 8; i++)
        arpc_token_bucket_charge(&b, T0, 1); /* as takes while there are tokens */
    assert_false(arpc_token_bucket_take(&b, T0));
    assert_int_equal(10 * MS, arpc_token_bucket_wait_ns(&b, T0, 1));
    arpc_token_bucket_charge(&b, T0, 1); /* one owed */
    assert_int_equal(20 * MS, arpc_token_bucket_wait_ns(&b, T0, 1));
    for (int i = 0; i < 100; i++)
        arpc_token_bucket_charge(&b, T0, 1); /* at most 8 more owed */
    assert_int_equal(90 * MS, arpc_token_bucket_wait_ns(&b, T0, 1));
    assert_false(arpc_token_bucket_take(&b, T0 + 90 * MS - 1));
    assert_true(arpc_token_bucket_take(&b, T0 + 90 * MS));
}

/* A charge of n is n charges of one, and is capped the same way (however large n is). */
static void test_charge_of_n_tokens(void **state)
{
    (void)state;
    struct arpc_token_bucket b;
    arpc_token_bucket_init(&b, 100, 8); /* 10 ms a token */
    arpc_token_bucket_charge(&b, T0, 5);
    assert_int_equal(0, arpc_token_bucket_wait_ns(&b, T0, 3));
    assert_int_equal(10 * MS, arpc_token_bucket_wait_ns(&b, T0, 4));
    arpc_token_bucket_charge(&b, T0, 4); /* one owed */
    assert_int_equal(20 * MS, arpc_token_bucket_wait_ns(&b, T0, 1));
    arpc_token_bucket_charge(&b, T0, UINT32_MAX); /* at most 8 more owed */
    assert_int_equal(90 * MS, arpc_token_bucket_wait_ns(&b, T0, 1));
    arpc_token_bucket_init(&b, 1, 1); /* 1 s a token: UINT32_MAX of them must not wrap */
    arpc_token_bucket_charge(&b, T0, UINT32_MAX);
    assert_int_equal(2000 * MS, arpc_token_bucket_wait_ns(&b, T0, 1));
}

/* Taking whenever a token is there, for 10 s of the fake clock in 1 ms steps: in every window
 * of W ms, at most burst + W / 10 tokens; and the rate is reached (the bucket never idles). */
static void test_rate_holds_over_every_window(void **state)
{
    (void)state;
    struct arpc_token_bucket b;
    arpc_token_bucket_init(&b, 100, 5);
    enum { STEPS = 10000 };
    static unsigned taken[STEPS + 1]; /* taken[i]: tokens taken at steps < i */
    taken[0] = 0;
    for (unsigned i = 0; i < STEPS; i++) {
        unsigned n = 0;
        while (arpc_token_bucket_take(&b, T0 + i * MS))
            n++;
        taken[i + 1] = taken[i] + n;
    }
    assert_int_equal(5 + (STEPS - 1) / 10, taken[STEPS]);
    for (unsigned w = 1; w <= 2000; w += 37)
        for (unsigned i = 0; i + w <= STEPS; i += 13)
            assert_true(taken[i + w] - taken[i] <= 5 + (w + 9) / 10);
}

/* Idle time refills up to the burst, never past it. */
static void test_refill_stops_at_burst(void **state)
{
    (void)state;
    struct arpc_token_bucket b;
    arpc_token_bucket_init(&b, 1000, 3);
    for (int i = 0; i < 3; i++)
        assert_true(arpc_token_bucket_take(&b, T0));
    uint64_t later = T0 + 3600 * 1000 * MS; /* an hour */
    for (int i = 0; i < 3; i++)
        assert_true(arpc_token_bucket_take(&b, later));
    assert_false(arpc_token_bucket_take(&b, later));
    assert_int_equal(MS, arpc_token_bucket_wait_ns(&b, later, 1));
}

/* A burst of 1 is a strict interval; extreme settings do not overflow. */
static void test_edges(void **state)
{
    (void)state;
    struct arpc_token_bucket b;
    arpc_token_bucket_init(&b, 1, 1);
    assert_true(arpc_token_bucket_take(&b, T0));
    assert_int_equal(1000 * MS, arpc_token_bucket_wait_ns(&b, T0, 1));
    arpc_token_bucket_init(&b, UINT32_MAX, UINT32_MAX); /* under 1 ns a token: 1 ns */
    assert_int_equal(1, b.tb_interval);
    assert_true(arpc_token_bucket_take(&b, 0));
    arpc_token_bucket_init(&b, 1, UINT32_MAX); /* depth ~4.3e18 ns: no wrap */
    for (int i = 0; i < 1000; i++)
        assert_true(arpc_token_bucket_take(&b, T0));
    assert_int_equal(0, arpc_token_bucket_wait_ns(&b, T0, 1000));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_at_once_then_empty),
        cmocka_unit_test(test_charge_goes_into_debt_up_to_a_burst),
        cmocka_unit_test(test_charge_of_n_tokens),
        cmocka_unit_test(test_rate_holds_over_every_window),
        cmocka_unit_test(test_refill_stops_at_burst),
        cmocka_unit_test(test_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
