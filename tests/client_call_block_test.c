/*
 * A client call is one allocation (core/client_call.c): the caller's future, the call record
 * and its request share a block that goes when the last of them lets go. Here:
 *  - starting a call allocates exactly one block on the caller's thread for a request of up
 *    to 1 KiB (and the first call of a method one more, its name kept), two for a larger one
 *    (its request apart, so a completed future the caller keeps does not pin it); once the calls are done their requests' blocks are reused, so the
 *    next calls of that size allocate one block each;
 *  - futures outlive their client as arpc/future.h promises: a completed one keeps its reply,
 *    a pending one ends ARPC_ESHUTDOWN, and each may be read, taken from and released after
 *    arpc_client_close; nothing leaks (ASan: nothing is read after it was freed);
 *  - a call whose future the caller released before the reply still ends cleanly;
 *  - semantics outside the enum are refused (the record keeps them in two bits);
 *  - a call whose completion queue cannot take it does not start and leaves nothing behind.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <sched.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "arpc/arpc.h"
#include "base/alloc.h"
#include "core/client_internal.h"
#include "support/test_util.h"

/* ---- an allocator that counts the blocks this thread asks for (over the leak checker) ---- */

static _Thread_local bool counting;
static atomic_long counted;

static void *count_malloc(size_t size, void *ctx)
{
    if (counting)
        atomic_fetch_add(&counted, 1);
    return test_allocator.malloc_fn(size, ctx);
}

static void *count_realloc(void *p, size_t size, void *ctx)
{
    if (counting)
        atomic_fetch_add(&counted, 1);
    return test_allocator.realloc_fn(p, size, ctx);
}

static void count_free(void *p, void *ctx) { test_allocator.free_fn(p, ctx); }

static const arpc_allocator counting_allocator = {count_malloc, count_realloc, count_free, NULL};

/* ---- a server: echo at once, or hold until released ---- */

static sem_t held_sem;
static arpc_request *held;

static void h_hold(arpc_request *req, void *ctx)
{
    (void)ctx;
    held = req;
    sem_post(&held_sem);
}

struct fixture {
    arpc_server *s;
    arpc_client *c;
    char addr[256];
};

static int setup(void **state)
{
    test_alloc_install();
    arpc_alloc_replace(&counting_allocator);
    sem_init(&held_sem, 0, 0);
    held = NULL;
    static struct fixture fx;
    memset(&fx, 0, sizeof(fx));
    arpc_method_options in = {.inline_on_loop = true};
    if (arpc_server_create(&fx.s, NULL) != ARPC_OK || arpc_server_register(fx.s, "t.echo", test_echo, NULL, &in) != ARPC_OK ||
        arpc_server_register(fx.s, "t.hold", h_hold, NULL, &in) != ARPC_OK ||
        arpc_server_listen(fx.s, "tcp://127.0.0.1:0", fx.addr, sizeof(fx.addr)) != ARPC_OK ||
        arpc_client_connect(&fx.c, fx.addr, NULL) != ARPC_OK)
        return -1;
    *state = &fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    if (fx->c != NULL) /* the tests close it themselves, to check what outlives it */
        arpc_client_close(fx->c);
    arpc_server_destroy(fx->s);
    sem_destroy(&held_sem);
    return test_alloc_check_no_leak(state);
}

/* The number of arpc allocations this thread makes to start n calls of size bytes, with
 * deadline_ms (ARPC_FOREVER: none; a call with one keeps it in its block too). */
static long allocs_to_start(arpc_client *c, size_t n, size_t size, arpc_future **fs, int64_t deadline_ms)
{
    uint8_t *req = malloc(size + 1);
    for (size_t i = 0; i < size; i++)
        req[i] = pattern_byte(size + i); /* echoed: the kept request's lengths and bytes, inline
                                          * up to 978 B and apart above, checked in the reply */
    atomic_store(&counted, 0);
    counting = true;
    for (size_t i = 0; i < n; i++)
        fs[i] = arpc_call_async(c, "t.echo", req, size, deadline_ms);
    counting = false;
    free(req);
    return atomic_load(&counted);
}

static void wait_calls(arpc_client *c, size_t n, size_t size, arpc_future **fs)
{
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(ARPC_OK, arpc_future_wait(fs[i]));
        size_t len;
        const uint8_t *data = arpc_future_data(fs[i], &len);
        assert_int_equal(size, len);
        for (size_t k = 0; k < len; k++)
            assert_int_equal(pattern_byte(size + k), data[k]);
        arpc_future_release(fs[i]);
    }
    /* The loop frees a call (and gives its request's block back) just after its future
     * completes: wait for that, so the next calls find the blocks. */
    int64_t until = now_ms() + 10000;
    while (atomic_load(&c->cl_live) != 0 && now_ms() < until)
        sched_yield();
    assert_int_equal(0, atomic_load(&c->cl_live));
}

static void one_allocation_per_call(struct fixture *fx, int64_t deadline_ms)
{
    enum { N = 64 };
    arpc_future *fs[N];
    /* The frame adds 46 B for "t.echo", a request apart 24 B of its block's own: 978 B is the
     * largest request in the call's block, 979 B the smallest apart; 32,697 B the largest
     * from the client's pool (core/block_pool.h), 32,698 B the smallest from its cache of
     * large buffers (ARPC_CONN_BODY_MIN), which keeps only a few. */
    size_t sizes[] = {0, 16, 900, 978, 979, 2000, 4096, 30000, 32697, 32698, 1u << 20};
    /* The first call of a method keeps its name in the client (core/method_names.h), once:
     * a block more for that call only. */
    assert_int_equal(2, allocs_to_start(fx->c, 1, 16, fs, deadline_ms));
    wait_calls(fx->c, 1, 16, fs);
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        bool apart = sizes[k] > 978, pooled = apart && sizes[k] <= 32697;
        long first = allocs_to_start(fx->c, N, sizes[k], fs, deadline_ms);
        wait_calls(fx->c, N, sizes[k], fs);
        /* Again: a pooled request's block comes from those the first calls gave back (calls
         * end while others start, so the first ones may have shared theirs, and an earlier
         * size may have left some: classes are powers of two). */
        int cls = pooled ? block_pool_class_of(sizes[k] + 46 + 24) : BLOCK_POOL_NONE;
        unsigned kept = cls != BLOCK_POOL_NONE ? block_pool_held(&fx->c->cl_blocks, cls) : 0;
        long again = allocs_to_start(fx->c, N, sizes[k], fs, deadline_ms);
        wait_calls(fx->c, N, sizes[k], fs);
        if (!apart) {
            assert_int_equal(N, first);
            assert_int_equal(N, again);
        } else if (pooled) {
            assert_true(first >= N && first <= 2 * N);
            assert_true(kept > 0);
            assert_true(again >= N && again <= 2 * N - (long)kept);
        } else {
            assert_true(first >= N && first <= 2 * N);
            assert_true(again >= N && again <= 2 * N);
        }
    }
    arpc_client_close(fx->c);
    fx->c = NULL;
}

static void test_one_allocation_per_call(void **state) { one_allocation_per_call(*state, ARPC_FOREVER); }

/* A call with a deadline keeps it (and its timing-wheel node) in front of its record, in the
 * same block: still one allocation, the request's bytes intact at every size. */
static void test_one_allocation_per_call_with_deadline(void **state) { one_allocation_per_call(*state, 60000); }

/* A then() on a call takes the future's embedded callback slot, no allocation, on a client's
 * own loop and on a shared loop started before the client was made (on a caller-driven loop
 * the slot names the loop for waiters, and a then() takes a node: arpc/future.h). */
static void noop_cb(arpc_future *f, void *arg)
{
    (void)f;
    (void)arg;
}

static long allocs_for_then(arpc_client *c)
{
    arpc_future *f = arpc_call_async(c, "t.echo", "x", 1, ARPC_FOREVER);
    assert_non_null(f);
    atomic_store(&counted, 0);
    counting = true;
    assert_int_equal(ARPC_OK, arpc_future_then(f, noop_cb, NULL));
    counting = false;
    long n = atomic_load(&counted);
    assert_int_equal(ARPC_OK, arpc_future_wait(f));
    arpc_future_release(f);
    return n;
}

static void test_then_allocates_nothing(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(0, allocs_for_then(fx->c));
    arpc_loop *loop;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_start(loop));
    arpc_client_options co = {.loop = loop};
    arpc_client *shared;
    assert_int_equal(ARPC_OK, arpc_client_connect(&shared, fx->addr, &co));
    assert_int_equal(0, allocs_for_then(shared)); /* a node (+32 B a call) when it named its loop */
    assert_int_equal(ARPC_OK, arpc_client_close(shared));
    arpc_loop_destroy(loop);
}

static void test_futures_outlive_client(void **state)
{
    struct fixture *fx = *state;
    arpc_future *small = arpc_call_async(fx->c, "t.echo", "hello", 5, ARPC_FOREVER);
    char *big = calloc(1, 100000);
    big[99999] = 'z';
    arpc_future *large = arpc_call_async(fx->c, "t.echo", big, 100000, ARPC_FOREVER);
    arpc_future *pending = arpc_call_async(fx->c, "t.hold", "h", 1, ARPC_FOREVER);
    arpc_future *timed = arpc_call_async(fx->c, "t.echo", "timed", 5, 60000); /* a deadline's block */
    assert_true(sem_wait_secs(&held_sem, 30));
    assert_int_equal(ARPC_OK, arpc_future_wait(small));
    assert_int_equal(ARPC_OK, arpc_future_wait(large));
    assert_int_equal(ARPC_OK, arpc_future_wait(timed));
    arpc_client_close(fx->c);
    fx->c = NULL;
    /* The client is gone; its futures are not. (The held call was sent: cancelled.) */
    assert_int_equal(ARPC_ECANCELLED, arpc_future_wait(pending));
    size_t len;
    assert_memory_equal("hello", arpc_future_data(small, &len), 5);
    assert_int_equal(5, len);
    char *taken = arpc_future_take(large, &len);
    assert_int_equal(100000, len);
    assert_int_equal('z', taken[99999]);
    arpc_free(taken);
    arpc_future_retain(small);
    arpc_future_release(small);
    arpc_future_release(small);
    arpc_future_release(large);
    arpc_future_release(pending);
    assert_memory_equal("timed", arpc_future_data(timed, &len), 5);
    arpc_future_release(timed);
    arpc_reply(held, "late", 4); /* to a client that left: dropped */
    free(big);
}

/* The caller lets go of a pending call's future: the call is cancelled, its block goes once
 * the loop has finished with it, and the client closes without waiting for anything. */
static void test_released_before_reply(void **state)
{
    struct fixture *fx = *state;
    arpc_future *f = arpc_call_async(fx->c, "t.hold", "h", 1, ARPC_FOREVER);
    assert_true(sem_wait_secs(&held_sem, 30));
    arpc_future_release(f);
    arpc_reply(held, "late", 4);
    assert_int_equal(ARPC_OK, arpc_call(fx->c, "t.echo", "x", 1, NULL, NULL, ARPC_FOREVER));
    arpc_client_close(fx->c);
    fx->c = NULL;
}

/* The record keeps a call's semantics in two bits: a value outside the enum is refused, not
 * folded into another. */
static void test_semantics_outside_the_enum(void **state)
{
    struct fixture *fx = *state;
    arpc_call_options o = {.semantics = (enum arpc_call_semantics)5};
    assert_int_equal(ARPC_EINVAL, arpc_call_opts(fx->c, "t.echo", "x", 1, NULL, NULL, &o));
    o.semantics = ARPC_NO_RETRY;
    assert_int_equal(ARPC_OK, arpc_call_opts(fx->c, "t.echo", "x", 1, NULL, NULL, &o));
    arpc_client_close(fx->c);
    fx->c = NULL;
}

/* A call that cannot start because its completion queue has no memory for its entry: the
 * call's block goes with the caller's future (the call's hold on it was dropped), nothing
 * leaks and nothing reaches the server. */
static void test_attach_without_memory(void **state)
{
    struct fixture *fx = *state;
    arpc_cq *cq;
    assert_int_equal(ARPC_OK, arpc_cq_create(&cq));
    atomic_store(&test_alloc_budget, 1); /* the call's block; not the queue's entry */
    int rc = arpc_go(fx->c, "t.echo", "x", 1, ARPC_FOREVER, cq, NULL);
    atomic_store(&test_alloc_budget, -1);
    assert_int_equal(ARPC_ENOMEM, rc);
    assert_int_equal(0, atomic_load(&fx->c->cl_npending));
    arpc_cq_destroy(cq);
    arpc_client_close(fx->c); /* teardown: the call's block is not live */
    fx->c = NULL;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_one_allocation_per_call, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_allocation_per_call_with_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_then_allocates_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_futures_outlive_client, setup, teardown),
        cmocka_unit_test_setup_teardown(test_released_before_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_semantics_outside_the_enum, setup, teardown),
        cmocka_unit_test_setup_teardown(test_attach_without_memory, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
