/*
 * base/buf_cache: a block given back is handed out again before anything is allocated (if it
 * fits: at least the size asked, at most twice it); fresh blocks are rounded to the granule; the cache never holds more than its slots
 * and its byte bound (the rest is freed); close frees everything held and every later put,
 * trim what is held now only;
 * every block goes through the allocator hook (a failing allocator gives NULL); and under
 * threads getting and putting while another closes, no block is out to two threads at once
 * and none leaks (checked by an owner word in each block and the counting allocator).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/alloc.h"
#include "base/buf_cache.h"
#include "support/test_util.h"

#ifdef ARPC_TSAN
#define SCALE 10
#else
#define SCALE 1
#endif

enum { KIB = 1024 };

static void test_reuse_before_allocating(void **state)
{
    (void)state;
    struct arpc_buf_cache c;
    arpc_buf_cache_init(&c, 1u << 20);
    size_t cap = 0;
    void *a = arpc_buf_get(&c, 64 * KIB, &cap);
    assert_non_null(a);
    assert_int_equal(64 * KIB, cap);
    assert_int_equal(1, atomic_load(&test_alloc_live));
    arpc_buf_put(&c, a, cap);
    assert_int_equal(1, arpc_buf_cache_held(&c));
    atomic_store(&test_alloc_budget, 0); /* from here on nothing may be allocated */
    assert_ptr_equal(a, arpc_buf_get(&c, 64 * KIB, &cap));
    assert_int_equal(64 * KIB, cap);
    arpc_buf_put(&c, a, cap);
    /* Smaller, but more than half: the same block, with its whole capacity. */
    assert_ptr_equal(a, arpc_buf_get(&c, 40 * KIB, &cap));
    assert_int_equal(64 * KIB, cap);
    arpc_buf_put(&c, a, cap);
    /* Not for a request under half its size, nor over its size: those allocate (and fail). */
    assert_null(arpc_buf_get(&c, 20 * KIB, &cap));
    assert_null(arpc_buf_get(&c, 65 * KIB, &cap));
    assert_int_equal(1, arpc_buf_cache_held(&c)); /* still there, untouched */
    atomic_store(&test_alloc_budget, -1);
    arpc_buf_cache_close(&c);
    assert_int_equal(0, arpc_buf_cache_held(&c));
}

static void test_bounds(void **state)
{
    (void)state;
    struct arpc_buf_cache c;
    arpc_buf_cache_init(&c, 1u << 30);
    /* At most ARPC_BUF_CACHE_SLOTS blocks: one more is freed. */
    void *blocks[ARPC_BUF_CACHE_SLOTS + 1];
    size_t cap;
    for (unsigned i = 0; i <= ARPC_BUF_CACHE_SLOTS; i++)
        assert_non_null(blocks[i] = arpc_buf_get(&c, 32 * KIB, &cap));
    for (unsigned i = 0; i <= ARPC_BUF_CACHE_SLOTS; i++)
        arpc_buf_put(&c, blocks[i], 32 * KIB);
    assert_int_equal(ARPC_BUF_CACHE_SLOTS, arpc_buf_cache_held(&c));
    assert_int_equal(ARPC_BUF_CACHE_SLOTS, atomic_load(&test_alloc_live));
    arpc_buf_cache_close(&c);
    assert_int_equal(0, atomic_load(&test_alloc_live));

    /* At most max_bytes of capacity: a block that would pass it is freed. */
    arpc_buf_cache_init(&c, 100 * KIB);
    void *a = arpc_buf_get(&c, 64 * KIB, &cap);
    void *b = arpc_buf_get(&c, 64 * KIB, &cap);
    assert_non_null(a);
    assert_non_null(b);
    arpc_buf_put(&c, a, 64 * KIB);
    arpc_buf_put(&c, b, 64 * KIB);
    assert_int_equal(1, arpc_buf_cache_held(&c));
    assert_int_equal(1, atomic_load(&test_alloc_live));
    assert_int_equal(64 * KIB, atomic_load(&c.bc_bytes));

    /* Small blocks are never kept: the allocator serves them well. */
    void *small = arpc_buf_get(&c, 100, &cap);
    assert_non_null(small);
    assert_int_equal(100, cap);
    arpc_buf_put(&c, small, cap);
    assert_int_equal(1, atomic_load(&test_alloc_live));
    arpc_buf_cache_close(&c);
}

static void test_close_frees_now_and_later(void **state)
{
    (void)state;
    struct arpc_buf_cache c;
    arpc_buf_cache_init(&c, 1u << 20);
    size_t cap;
    void *held[3], *out;
    for (unsigned i = 0; i < 3; i++)
        assert_non_null(held[i] = arpc_buf_get(&c, 32 * KIB, &cap));
    assert_non_null(out = arpc_buf_get(&c, 32 * KIB, &cap));
    for (unsigned i = 0; i < 3; i++)
        arpc_buf_put(&c, held[i], 32 * KIB);
    assert_int_equal(4, atomic_load(&test_alloc_live));
    arpc_buf_cache_close(&c);
    assert_int_equal(1, atomic_load(&test_alloc_live)); /* only the one still out */
    assert_int_equal(0, atomic_load(&c.bc_bytes));
    arpc_buf_put(&c, out, cap); /* given back after the close: freed */
    assert_int_equal(0, arpc_buf_cache_held(&c));
    arpc_buf_cache_close(&c); /* idempotent */
}

/* Trim frees what is held now and leaves the cache open: the next give-back is kept. */
static void test_trim_frees_held_and_stays_open(void **state)
{
    (void)state;
    struct arpc_buf_cache c;
    arpc_buf_cache_init(&c, 1u << 20);
    size_t cap;
    void *held[3];
    for (unsigned i = 0; i < 3; i++)
        assert_non_null(held[i] = arpc_buf_get(&c, 32 * KIB, &cap));
    for (unsigned i = 0; i < 3; i++)
        arpc_buf_put(&c, held[i], cap);
    assert_int_equal(3, arpc_buf_cache_held(&c));
    arpc_buf_cache_trim(&c);
    assert_int_equal(0, arpc_buf_cache_held(&c));
    assert_int_equal(0, atomic_load(&test_alloc_live));
    assert_int_equal(0, atomic_load(&c.bc_bytes));
    void *again = arpc_buf_get(&c, 32 * KIB, &cap);
    assert_non_null(again);
    arpc_buf_put(&c, again, cap);
    assert_int_equal(1, arpc_buf_cache_held(&c)); /* still open: kept */
    arpc_buf_cache_close(&c);
}

/* Fresh blocks are rounded up to the granule (so a request's body and its reply's frame fit
 * each other's blocks); small ones are not. */
static void test_fresh_blocks_rounded(void **state)
{
    (void)state;
    struct arpc_buf_cache c;
    arpc_buf_cache_init(&c, 1u << 20);
    size_t cap = 0;
    void *a = arpc_buf_get(&c, 40 * KIB + 1, &cap);
    assert_non_null(a);
    assert_int_equal(40 * KIB + ARPC_BUF_CACHE_GRANULE, cap);
    arpc_buf_put(&c, a, cap);
    /* A slightly larger request of the same payload takes the same block. */
    atomic_store(&test_alloc_budget, 0);
    assert_ptr_equal(a, arpc_buf_get(&c, 40 * KIB + 100, &cap));
    atomic_store(&test_alloc_budget, -1);
    arpc_free(a);
    void *small = arpc_buf_get(&c, 1001, &cap);
    assert_non_null(small);
    assert_int_equal(1001, cap);
    arpc_free(small);
    arpc_buf_cache_close(&c);
}

static void test_failing_allocator(void **state)
{
    (void)state;
    struct arpc_buf_cache c;
    arpc_buf_cache_init(&c, 1u << 20);
    size_t cap = 7;
    atomic_store(&test_alloc_budget, 0);
    assert_null(arpc_buf_get(&c, 64 * KIB, &cap));
    assert_int_equal(7, cap); /* untouched on failure */
    atomic_store(&test_alloc_budget, -1);
    arpc_buf_put(&c, NULL, 0); /* ignored */
    arpc_buf_cache_close(&c);
}

/* ---- threads getting and putting while the owner closes ---- */

enum { STRESS_THREADS = 4, STRESS_ROUNDS = 20000 / SCALE, WARM_ROUNDS = 100 };

struct block_head { /* past the first word, which the cache writes while a block is held */
    size_t bh_cap_word;
    uint64_t bh_magic;    /* MAGIC_PUT: given back; MAGIC_OUT: out; anything else: fresh */
    atomic_uint bh_owner; /* 0 while given back; the taking thread's number while out */
    unsigned bh_stamp;
};

#define MAGIC_PUT UINT64_C(0x9E3779B97F4A7C15)
#define MAGIC_OUT UINT64_C(0xC2B2AE3D27D4EB4F)

struct stress {
    struct arpc_buf_cache *cache;
    unsigned id; /* 1.. */
};

static void *stress_main(void *arg)
{
    struct stress *s = arg;
    for (unsigned r = 0; r < STRESS_ROUNDS; r++) {
        size_t size = (32 + (r + s->id) % 32) * KIB; /* sizes that fit each other's blocks */
        size_t cap = 0;
        struct block_head *b = arpc_buf_get(s->cache, size, &cap);
        CHECK(b != NULL && cap >= size);
        if (b == NULL)
            return NULL;
        if (b->bh_magic != MAGIC_PUT && b->bh_magic != MAGIC_OUT)
            atomic_init(&b->bh_owner, 0); /* fresh from the allocator: nobody owns it yet */
        unsigned prev = atomic_exchange(&b->bh_owner, s->id);
        CHECK(prev == 0); /* out to nobody else (a block out twice says MAGIC_OUT and an owner) */
        b->bh_magic = MAGIC_OUT;
        b->bh_stamp = s->id * 1000003u + r;
        ((uint8_t *)b)[cap - 1] = (uint8_t)r; /* the whole capacity is ours */
        CHECK(b->bh_stamp == s->id * 1000003u + r);
        b->bh_magic = MAGIC_PUT;
        atomic_store(&b->bh_owner, 0);
        arpc_buf_put(s->cache, b, cap);
        if (r == WARM_ROUNDS)
            latch_add(); /* the owner may close now: puts go on racing with it */
    }
    return NULL;
}

static void test_threads_and_close(void **state)
{
    (void)state;
    atomic_store(&bad_line, 0);
    latch_reset();
    struct arpc_buf_cache c;
    arpc_buf_cache_init(&c, 1u << 20);
    pthread_t th[STRESS_THREADS];
    struct stress s[STRESS_THREADS];
    for (unsigned t = 0; t < STRESS_THREADS; t++) {
        s[t] = (struct stress){&c, t + 1};
        assert_int_equal(0, pthread_create(&th[t], NULL, stress_main, &s[t]));
    }
    assert_true(latch_wait(STRESS_THREADS, 60000));
    arpc_buf_cache_close(&c);
    for (unsigned t = 0; t < STRESS_THREADS; t++)
        pthread_join(th[t], NULL);
    assert_int_equal(0, atomic_load(&bad_line));
    assert_int_equal(0, arpc_buf_cache_held(&c));
    assert_int_equal(0, atomic_load(&test_alloc_live)); /* every block freed once */
}

int main(void)
{
    test_alloc_install();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_no_leak(test_reuse_before_allocating),
        cmocka_unit_test_no_leak(test_bounds),
        cmocka_unit_test_no_leak(test_close_frees_now_and_later),
        cmocka_unit_test_no_leak(test_trim_frees_held_and_stays_open),
        cmocka_unit_test_no_leak(test_fresh_blocks_rounded),
        cmocka_unit_test_no_leak(test_failing_allocator),
        cmocka_unit_test_no_leak(test_threads_and_close),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
