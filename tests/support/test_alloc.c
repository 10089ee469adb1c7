/* The counting, failable allocator. Thread-safe: arpc allocates on its own threads too. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>

#include <cmocka.h>

#include "base/alloc.h"
#include "support/test_util.h"

atomic_long test_alloc_live;
atomic_long test_alloc_budget = -1;
atomic_long test_alloc_large;
atomic_long test_alloc_fail_in = -1;
atomic_long test_alloc_refused;

/* Counts one down from fail_in unless none is armed; the one that finds it at 0 fails. */
static bool single_failure_due(void)
{
    long left = atomic_load(&test_alloc_fail_in);
    while (left >= 0) {
        if (atomic_compare_exchange_weak(&test_alloc_fail_in, &left, left - 1))
            return left == 0;
    }
    return false;
}

/* Takes one from the budget unless it is unlimited; an exhausted budget stays at 0. */
static bool budget_allows(void)
{
    long left = atomic_load(&test_alloc_budget);
    while (left >= 0) {
        if (left == 0)
            return false;
        if (atomic_compare_exchange_weak(&test_alloc_budget, &left, left - 1))
            return true;
    }
    return true;
}

static bool alloc_allowed(void)
{
    if (budget_allows() && !single_failure_due())
        return true;
    atomic_fetch_add(&test_alloc_refused, 1);
    return false;
}

static void *counted_malloc(size_t size, void *ctx)
{
    (void)ctx;
    void *p = alloc_allowed() ? malloc(size) : NULL;
    if (p != NULL)
        atomic_fetch_add(&test_alloc_live, 1);
    if (p != NULL && size >= TEST_ALLOC_LARGE)
        atomic_fetch_add(&test_alloc_large, 1);
    return p;
}

static void *counted_realloc(void *ptr, size_t size, void *ctx)
{
    (void)ctx;
    void *p = alloc_allowed() ? realloc(ptr, size) : NULL;
    if (p != NULL && ptr == NULL) /* a resize keeps the count; a fresh block adds one */
        atomic_fetch_add(&test_alloc_live, 1);
    if (p != NULL && size >= TEST_ALLOC_LARGE)
        atomic_fetch_add(&test_alloc_large, 1);
    return p;
}

static void counted_free(void *ptr, void *ctx)
{
    (void)ctx;
    if (ptr != NULL)
        atomic_fetch_sub(&test_alloc_live, 1);
    free(ptr);
}

const arpc_allocator test_allocator = {counted_malloc, counted_realloc, counted_free, NULL};

void test_alloc_install(void)
{
    atomic_store(&test_alloc_live, 0);
    atomic_store(&test_alloc_budget, -1);
    atomic_store(&test_alloc_fail_in, -1);
    atomic_store(&test_alloc_refused, 0);
    arpc_alloc_replace(&test_allocator);
}

int test_alloc_check_no_leak(void **state)
{
    (void)state;
    assert_int_equal(0, atomic_load(&test_alloc_live));
    return 0;
}

/* ---- the allocator that fails one allocation picked by its size ---- */

static atomic_size_t fail_lo, fail_hi;
static atomic_bool fail_armed;
static atomic_bool fail_growth; /* armed for a realloc, not a malloc */
static atomic_int fail_count;

/* Whether this allocation of n bytes is the one armed (and disarms it). */
static bool sized_due(size_t n, bool growth)
{
    if (atomic_load(&fail_armed) && atomic_load(&fail_growth) == growth && n >= atomic_load(&fail_lo) &&
        n < atomic_load(&fail_hi) && atomic_exchange(&fail_armed, false)) {
        atomic_fetch_add(&fail_count, 1);
        return true;
    }
    return false;
}

static void *sized_malloc(size_t n, void *ctx)
{
    (void)ctx;
    return sized_due(n, false) ? NULL : malloc(n);
}

static void *sized_realloc(void *p, size_t n, void *ctx)
{
    (void)ctx;
    return sized_due(n, true) ? NULL : realloc(p, n);
}

static void plain_free(void *p, void *ctx)
{
    (void)ctx;
    free(p);
}

void test_alloc_sized_install(void)
{
    static const arpc_allocator sized = {sized_malloc, sized_realloc, plain_free, NULL};
    test_alloc_fail_next(0, 0);
    atomic_store(&fail_count, 0);
    arpc_alloc_replace(&sized);
}

static void sized_arm(size_t lo, size_t hi, bool growth)
{
    atomic_store(&fail_armed, false);
    atomic_store(&fail_lo, lo);
    atomic_store(&fail_hi, hi);
    atomic_store(&fail_growth, growth);
    atomic_store(&fail_armed, lo < hi); /* after the bounds: an allocation seeing it armed sees them */
}

void test_alloc_fail_next(size_t lo, size_t hi) { sized_arm(lo, hi, false); }

void test_alloc_fail_next_growth(size_t lo, size_t hi) { sized_arm(lo, hi, true); }

int test_alloc_sized_failed(void) { return atomic_load(&fail_count); }
