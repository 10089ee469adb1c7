/*
 * The latency histogram (base/histogram.c: arpc-bench's reports and the server's per-method
 * latencies) against exact percentiles of sorted samples.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "base/histogram.h"
#include "support/test_util.h"

#define SAMPLES 200000

static const double pcts[] = {0.0, 1.0, 10.0, 25.0, 50.0, 75.0, 90.0, 99.0, 99.9, 99.99, 100.0};

static double rng_unit(uint64_t *s) /* in (0, 1) */
{
    return ((double)(rng_next(s) >> 11) + 0.5) / 9007199254740992.0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* No libm here: the test executables do not link it. */
static double dceil(double x)
{
    double t = (double)(uint64_t)x;
    return t < x ? t + 1.0 : t;
}

static double dabs(double x) { return x < 0 ? -x : x; }

/* The exact sample at the rank the histogram promises: ceil(pct/100 * n), at least 1. */
static uint64_t exact_percentile(const uint64_t *sorted, size_t n, double pct)
{
    if (pct <= 0.0)
        return sorted[0];
    double want = dceil(pct / 100.0 * (double)n);
    size_t rank = want < 1.0 ? 1 : (size_t)want;
    return sorted[(rank > n ? n : rank) - 1];
}

/* Within the bucket precision: the midpoint of a bucket at most 1/128 of its value wide. */
static void assert_close(uint64_t exact, uint64_t got)
{
    double tol = (double)exact / 256.0 + 1.0;
    double diff = dabs((double)got - (double)exact);
    if (diff > tol)
        fail_msg("percentile %llu ns, exact %llu ns (tolerance %.1f)", (unsigned long long)got,
                 (unsigned long long)exact, tol);
}

static void check_against_sorted(uint64_t *samples, size_t n)
{
    arpc_hist *h = malloc(sizeof(*h));
    assert_non_null(h);
    arpc_hist_init(h);
    for (size_t i = 0; i < n; i++)
        arpc_hist_record(h, samples[i]);
    qsort(samples, n, sizeof(samples[0]), cmp_u64);
    assert_int_equal(n, arpc_hist_count(h));
    assert_int_equal(samples[0], arpc_hist_percentile(h, 0.0));
    assert_int_equal(samples[n - 1], arpc_hist_percentile(h, 100.0));
    for (size_t i = 0; i < sizeof(pcts) / sizeof(pcts[0]); i++)
        assert_close(exact_percentile(samples, n, pcts[i]), arpc_hist_percentile(h, pcts[i]));
    free(h);
}

static void test_uniform(void **state)
{
    (void)state;
    uint64_t *s = malloc(SAMPLES * sizeof(*s));
    assert_non_null(s);
    uint64_t seed = 0x9e3779b97f4a7c15u;
    for (size_t i = 0; i < SAMPLES; i++) /* 1 us .. 10 ms */
        s[i] = 1000 + rng_next(&seed) % 10000000;
    check_against_sorted(s, SAMPLES);
    free(s);
}

static void test_heavy_tailed(void **state)
{
    (void)state;
    uint64_t *s = malloc(SAMPLES * sizeof(*s));
    assert_non_null(s);
    uint64_t seed = 12345;
    for (size_t i = 0; i < SAMPLES; i++) { /* Pareto, alpha 1, from 100 ns: tail to seconds */
        double v = 100.0 / rng_unit(&seed);
        s[i] = v > 6e10 ? (uint64_t)6e10 : (uint64_t)v;
    }
    check_against_sorted(s, SAMPLES);
    free(s);
}

static void test_small_values_exact(void **state)
{
    (void)state;
    uint64_t s[256];
    for (unsigned i = 0; i < 256; i++)
        s[i] = 255 - i;
    arpc_hist h;
    arpc_hist_init(&h);
    for (unsigned i = 0; i < 256; i++)
        arpc_hist_record(&h, s[i]);
    for (unsigned p = 1; p <= 100; p++) /* value = rank - 1 = ceil(p * 256 / 100) - 1, exactly */
        assert_int_equal((p * 256 + 99) / 100 - 1, arpc_hist_percentile(&h, p));
}

static void test_bucket_layout(void **state)
{
    (void)state;
    /* Buckets tile 0..2^36-1 with no gap or overlap, each at most 1/128 of its low end wide. */
    assert_int_equal(0, arpc_hist_bucket_low(0));
    for (unsigned b = 0; b < ARPC_HIST_BUCKETS; b++) {
        uint64_t lo = arpc_hist_bucket_low(b), hi = arpc_hist_bucket_high(b);
        assert_true(lo <= hi);
        assert_int_equal(b, arpc_hist_bucket_of(lo));
        assert_int_equal(b, arpc_hist_bucket_of(hi));
        if (b + 1 < ARPC_HIST_BUCKETS)
            assert_int_equal(hi + 1, arpc_hist_bucket_low(b + 1));
        if (lo >= ARPC_HIST_LINEAR)
            assert_true((hi - lo + 1) * 128 <= lo);
    }
    assert_int_equal(ARPC_HIST_MAX_TRACKED, arpc_hist_bucket_high(ARPC_HIST_BUCKETS - 1));
    /* 60 s fits; anything larger lands in the top bucket. */
    assert_true(arpc_hist_bucket_of(UINT64_C(60000000000)) < ARPC_HIST_BUCKETS - 1);
    assert_int_equal(ARPC_HIST_BUCKETS - 1, arpc_hist_bucket_of(UINT64_MAX));
}

static void test_clamped_max_stays_exact(void **state)
{
    (void)state;
    arpc_hist h;
    arpc_hist_init(&h);
    arpc_hist_record(&h, 500);
    arpc_hist_record(&h, UINT64_C(100000000000)); /* 100 s, beyond the top bucket */
    assert_int_equal(UINT64_C(100000000000), arpc_hist_percentile(&h, 100.0));
    assert_int_equal(500, arpc_hist_percentile(&h, 50.0));
    uint64_t p99 = arpc_hist_percentile(&h, 99.0);
    assert_true(p99 >= ARPC_HIST_MAX_TRACKED / 2 && p99 <= ARPC_HIST_MAX_TRACKED);
}

static void test_merge(void **state)
{
    (void)state;
    arpc_hist *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b)), *all = malloc(sizeof(*all));
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(all);
    arpc_hist_init(a);
    arpc_hist_init(b);
    arpc_hist_init(all);
    uint64_t seed = 7;
    for (unsigned i = 0; i < 50000; i++) { /* two different distributions */
        uint64_t fast = 2000 + rng_next(&seed) % 3000;
        uint64_t slow = 100000 + rng_next(&seed) % 900000;
        arpc_hist_record(a, fast);
        arpc_hist_record(b, slow);
        arpc_hist_record(all, fast);
        arpc_hist_record(all, slow);
    }
    arpc_hist_merge(a, b);
    assert_int_equal(arpc_hist_count(all), arpc_hist_count(a));
    assert_int_equal(arpc_hist_percentile(all, 0), arpc_hist_percentile(a, 0));
    assert_int_equal(arpc_hist_percentile(all, 100), arpc_hist_percentile(a, 100));
    assert_memory_equal(all->h_counts, a->h_counts, sizeof(all->h_counts));
    for (size_t i = 0; i < sizeof(pcts) / sizeof(pcts[0]); i++)
        assert_int_equal(arpc_hist_percentile(all, pcts[i]), arpc_hist_percentile(a, pcts[i]));
    assert_true(dabs(arpc_hist_mean(all) - arpc_hist_mean(a)) < 1e-6 * arpc_hist_mean(all));
    /* Half the union is fast, half slow: p50 is the slowest fast sample, p51 a slow one. */
    assert_true(arpc_hist_percentile(a, 50.0) < 5000 + 5000 / 128);
    assert_true(arpc_hist_percentile(a, 51.0) > 100000 - 100000 / 128);
    free(a);
    free(b);
    free(all);
}

static void test_empty(void **state)
{
    (void)state;
    arpc_hist e, x;
    arpc_hist_init(&e);
    assert_int_equal(0, arpc_hist_count(&e));
    for (size_t i = 0; i < sizeof(pcts) / sizeof(pcts[0]); i++)
        assert_int_equal(0, arpc_hist_percentile(&e, pcts[i]));
    assert_true(arpc_hist_mean(&e) == 0.0);

    /* empty + empty stays empty; empty merged into a histogram changes nothing. */
    arpc_hist_init(&x);
    arpc_hist_merge(&x, &e);
    assert_int_equal(0, arpc_hist_count(&x));
    assert_int_equal(0, arpc_hist_percentile(&x, 50.0));
    arpc_hist_record(&x, 1234);
    arpc_hist_merge(&x, &e);
    assert_int_equal(1, arpc_hist_count(&x));
    assert_int_equal(1234, arpc_hist_percentile(&x, 0));
    assert_int_equal(1234, arpc_hist_percentile(&x, 100));
    assert_int_equal(1234, arpc_hist_percentile(&x, 50.0));
    /* and a histogram merged into an empty one copies it. */
    arpc_hist_merge(&e, &x);
    assert_int_equal(1, arpc_hist_count(&e));
    assert_int_equal(1234, arpc_hist_percentile(&e, 99.9));
}

/* Cumulative counts at bounds: exact at bucket edges, short by at most the straddling bucket. */
static void test_count_le(void **state)
{
    (void)state;
    arpc_hist *h = malloc(sizeof(*h));
    assert_non_null(h);
    arpc_hist_init(h);
    for (uint64_t v = 0; v < 100000; v += 7)
        arpc_hist_record(h, v);
    assert_int_equal(arpc_hist_count(h), arpc_hist_count_le(h, UINT64_MAX));
    assert_int_equal(1, arpc_hist_count_le(h, 0)); /* the sample 0 */
    uint64_t prev = 0;
    for (uint64_t bound = 1; bound < 200000; bound = bound * 3 + 1) {
        uint64_t exact = bound >= 100000 ? arpc_hist_count(h) : bound / 7 + 1;
        uint64_t got = arpc_hist_count_le(h, bound);
        assert_true(got <= exact);
        assert_true(exact - got <= bound / 128 / 7 + 1); /* one bucket's samples at most */
        assert_true(got >= prev);
        prev = got;
    }
    /* A bucket's high edge counts it whole. */
    unsigned b = arpc_hist_bucket_of(5000);
    assert_int_equal(arpc_hist_count_le(h, arpc_hist_bucket_high(b)),
                     arpc_hist_count_le(h, arpc_hist_bucket_low(b + 1)));
    free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uniform),
        cmocka_unit_test(test_heavy_tailed),
        cmocka_unit_test(test_small_values_exact),
        cmocka_unit_test(test_bucket_layout),
        cmocka_unit_test(test_clamped_max_stays_exact),
        cmocka_unit_test(test_merge),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_count_le),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
