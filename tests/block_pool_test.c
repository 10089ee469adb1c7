/*
 * core/block_pool: a block given back is handed out again before anything is allocated;
 * each size class makes at most its bound of blocks and a burst beyond that is ordinary
 * allocations, freed when done (so the pool holds no more than its bound afterwards); a size
 * goes to the smallest class that holds it, and one over the largest is never the pool's;
 * a failing allocator gives NULL; blocks given back from other threads reach the taker, and
 * blocks taken and given back by several threads at once are never out to two holders (an
 * owner word in each block); fini frees everything (the counting allocator). Then through a
 * server: a burst of more calls alive at once than the bound all complete, the request pool
 * keeps its bound and makes nothing new for the next calls (small and 4 KiB payloads, whose
 * replies come from the reply pool), and requests still held when the server is destroyed
 * are freed by their late replies with the server's pools (ASan, the leak checker).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "arpc/arpc.h"
#include "base/alloc.h"
#include "core/block_pool.h"
#include "core/server_internal.h"
#include "support/test_util.h"

#ifdef ARPC_TSAN
#define SCALE 10
#else
#define SCALE 1
#endif

static void test_reuse_before_allocating(void **state)
{
    (void)state;
    struct block_pool p;
    block_pool_init(&p);
    int cls = BLOCK_POOL_NONE;
    void *a = block_pool_get(&p, 100, &cls);
    assert_non_null(a);
    assert_int_equal(0, cls);
    assert_int_equal(1, atomic_load(&test_alloc_live));
    block_pool_put(&p, a, cls);
    assert_int_equal(1, block_pool_held(&p, 0));
    atomic_store(&test_alloc_budget, 0); /* from here on nothing may be allocated */
    assert_ptr_equal(a, block_pool_get(&p, block_pool_block(0), &cls));
    assert_int_equal(0, cls);
    block_pool_put(&p, a, cls);
    atomic_store(&test_alloc_budget, -1);
    block_pool_fini(&p);
}

static void test_burst_beyond_the_bound(void **state)
{
    (void)state;
    enum { N = BLOCK_POOL_SMALL_MAX + 40 };
    static void *blocks[N];
    static int cls[N];
    struct block_pool p;
    block_pool_init(&p);
    unsigned npooled = 0;
    for (unsigned i = 0; i < N; i++) {
        blocks[i] = block_pool_get(&p, 64, &cls[i]);
        assert_non_null(blocks[i]);
        npooled += cls[i] == 0;
    }
    assert_int_equal(BLOCK_POOL_SMALL_MAX, npooled);
    assert_int_equal(BLOCK_POOL_SMALL_MAX, block_pool_made(&p, 0));
    assert_int_equal(N, atomic_load(&test_alloc_live));
    for (unsigned i = 0; i < N; i++)
        block_pool_put(&p, blocks[i], cls[i]);
    /* The burst's extra blocks went back to the allocator; the pool keeps its bound. */
    assert_int_equal(BLOCK_POOL_SMALL_MAX, atomic_load(&test_alloc_live));
    assert_int_equal(BLOCK_POOL_SMALL_MAX, block_pool_held(&p, 0));
    /* A second burst reuses every block before it makes any. */
    for (unsigned i = 0; i < BLOCK_POOL_SMALL_MAX; i++) {
        blocks[i] = block_pool_get(&p, 64, &cls[i]);
        assert_int_equal(0, cls[i]);
    }
    assert_int_equal(BLOCK_POOL_SMALL_MAX, atomic_load(&test_alloc_live));
    for (unsigned i = 0; i < BLOCK_POOL_SMALL_MAX; i++)
        block_pool_put(&p, blocks[i], cls[i]);
    /* A larger class has its own bound, in bytes: a window of 256 calls of 4 KiB (their
     * replies, class 4) comes wholly from the pool. */
    unsigned max4 = block_pool_class_max(4);
    assert_true(max4 < N - 5);
    for (unsigned i = 0; i < max4 + 5; i++)
        blocks[i] = block_pool_get(&p, 4096 + 200, &cls[i]);
    for (unsigned i = 0; i < 256; i++)
        assert_int_equal(4, cls[i]);
    assert_int_equal(max4, block_pool_made(&p, 4));
    for (unsigned i = 0; i < max4 + 5; i++) {
        assert_int_equal(i < max4 ? 4 : BLOCK_POOL_NONE, cls[i]);
        block_pool_put(&p, blocks[i], cls[i]);
    }
    assert_int_equal(max4, block_pool_held(&p, 4));
    /* ... as many as 2 MiB holds, and never fewer than BLOCK_POOL_LARGE_MAX. */
    for (int k = 1; k < BLOCK_POOL_CLASSES; k++) {
        size_t by_bytes = BLOCK_POOL_CLASS_BYTES / block_pool_block(k);
        assert_int_equal(by_bytes > BLOCK_POOL_LARGE_MAX ? by_bytes : BLOCK_POOL_LARGE_MAX, block_pool_class_max(k));
    }
    block_pool_fini(&p);
}

static void test_large_and_failing(void **state)
{
    (void)state;
    struct block_pool p;
    block_pool_init(&p);
    int cls = 0;
    size_t largest = block_pool_block(BLOCK_POOL_CLASSES - 1);
    void *big = block_pool_get(&p, largest + 1, &cls);
    assert_non_null(big);
    assert_int_equal(BLOCK_POOL_NONE, cls);
    memset(big, 0xab, largest + 1); /* ASan: the whole size is there */
    block_pool_put(&p, big, cls);
    /* Each class's exact size is that class, one byte more the next; the whole block is
     * there (ASan), and it comes back to its own class. */
    for (int k = 0; k < BLOCK_POOL_CLASSES; k++) {
        void *b = block_pool_get(&p, block_pool_block(k), &cls);
        assert_int_equal(k, cls);
        memset(b, 0xcd, block_pool_block(k));
        block_pool_put(&p, b, cls);
        assert_int_equal(1, block_pool_held(&p, k));
        if (k + 1 < BLOCK_POOL_CLASSES) {
            b = block_pool_get(&p, block_pool_block(k) + 1, &cls);
            assert_int_equal(k + 1, cls);
            block_pool_put(&p, b, cls);
        }
    }
    block_pool_fini(&p);
    atomic_store(&test_alloc_budget, 0);
    cls = 0;
    assert_null(block_pool_get(&p, 8, &cls));
    assert_int_equal(BLOCK_POOL_NONE, cls);
    assert_int_equal(0, block_pool_made(&p, 0)); /* a failed block is not counted as made */
    atomic_store(&test_alloc_budget, -1);
    block_pool_fini(&p);
}

/* The owner hands blocks to putters through a ring of slots; each block carries an owner word
 * (past the pool's link word) that the taker claims (0 -> 1) and the putter clears (1 -> 0):
 * a block out to two holders at once fails one of the two. */
enum { PUTTERS = 3, SLOTS = 64 };
struct shared {
    struct block_pool pool;
    void *_Atomic slots[SLOTS];
    atomic_bool done;
};

static atomic_uint *owner_of(void *block) { return (atomic_uint *)((char *)block + 16); }

static void *putter(void *arg)
{
    struct shared *sh = arg;
    for (;;) {
        /* Read before the scan: once done, every block the owner handed over is in a slot the
         * scan sees. (Read after it, a block handed over between the scan and the read was
         * left in its slot: made but never given back, 1 run in 3 under TSan.) */
        bool done = atomic_load(&sh->done);
        bool idle = true;
        for (unsigned i = 0; i < SLOTS; i++) {
            void *b = atomic_exchange(&sh->slots[i], NULL);
            if (b == NULL)
                continue;
            idle = false;
            unsigned one = 1;
            assert_true(atomic_compare_exchange_strong(owner_of(b), &one, 0));
            block_pool_put(&sh->pool, b, 0);
        }
        if (idle && done)
            return NULL;
    }
}

static void test_given_back_from_other_threads(void **state)
{
    (void)state;
    static struct shared sh;
    memset(&sh, 0, sizeof(sh));
    block_pool_init(&sh.pool);
    pthread_t t[PUTTERS];
    for (int i = 0; i < PUTTERS; i++)
        assert_int_equal(0, pthread_create(&t[i], NULL, putter, &sh));
    unsigned rounds = 200000 / SCALE, reused = 0;
    for (unsigned r = 0; r < rounds; r++) {
        unsigned made = block_pool_made(&sh.pool, 0);
        int cls;
        void *b = block_pool_get(&sh.pool, 64, &cls);
        assert_non_null(b);
        if (cls != 0) { /* every block of the class is out (putters are slow): not the pool's */
            block_pool_put(&sh.pool, b, cls);
            continue;
        }
        if (block_pool_made(&sh.pool, 0) != made) {
            atomic_store(owner_of(b), 1); /* fresh: nobody held it yet */
        } else {
            unsigned zero = 0;
            assert_true(atomic_compare_exchange_strong(owner_of(b), &zero, 1)); /* not out elsewhere */
            reused++;
        }
        for (unsigned i = r % SLOTS;; i = (i + 1) % SLOTS) { /* a free slot: putters drain them */
            void *expect = NULL;
            if (atomic_compare_exchange_weak(&sh.slots[i], &expect, b))
                break;
        }
    }
    atomic_store(&sh.done, true);
    for (int i = 0; i < PUTTERS; i++)
        pthread_join(t[i], NULL);
    assert_true(block_pool_made(&sh.pool, 0) <= BLOCK_POOL_SMALL_MAX);
    assert_int_equal(block_pool_made(&sh.pool, 0), block_pool_held(&sh.pool, 0)); /* every block came back */
    assert_true(reused > 0);
    block_pool_fini(&sh.pool);
}

/* Several threads each take a block, claim its owner word, give it back, and again: a block
 * handed to two of them at once fails a claim (an ABA in the pop would do that). */
enum { TAKERS = 4 };
static struct block_pool mpmc_pool;

static void *taker(void *arg)
{
    (void)arg;
    for (unsigned r = 0; r < 100000 / SCALE; r++) {
        unsigned made = block_pool_made(&mpmc_pool, 1);
        int cls;
        void *b = block_pool_get(&mpmc_pool, 600, &cls);
        assert_non_null(b);
        if (cls == 1 && block_pool_made(&mpmc_pool, 1) == made) { /* likely reused: claim it */
            unsigned zero = 0;
            assert_true(atomic_compare_exchange_strong(owner_of(b), &zero, 1));
        } else {
            atomic_store(owner_of(b), 1); /* fresh, or another taker made one meanwhile */
        }
        unsigned one = 1;
        assert_true(atomic_compare_exchange_strong(owner_of(b), &one, 0));
        block_pool_put(&mpmc_pool, b, cls);
    }
    return NULL;
}

static void test_taken_and_given_back_by_many(void **state)
{
    (void)state;
    block_pool_init(&mpmc_pool);
    pthread_t t[TAKERS];
    for (int i = 0; i < TAKERS; i++)
        assert_int_equal(0, pthread_create(&t[i], NULL, taker, NULL));
    for (int i = 0; i < TAKERS; i++)
        pthread_join(t[i], NULL);
    assert_true(block_pool_made(&mpmc_pool, 1) <= TAKERS);
    assert_int_equal(block_pool_made(&mpmc_pool, 1), block_pool_held(&mpmc_pool, 1));
    block_pool_fini(&mpmc_pool);
}

/* ---- through a server ---- */

enum { BURST = BLOCK_POOL_SMALL_MAX + 88, LATE = 3, BULK = 4096 };
static arpc_request *_Atomic held_reqs[BURST];
static atomic_uint held_n;

/* Inline: keeps the request without replying; the test replies from its own thread. */
static void h_hold(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_store(&held_reqs[atomic_fetch_add(&held_n, 1)], req);
    latch_add();
}

struct pool_count {
    arpc_server *s;
    int k;
    unsigned held, made;
};

static void count_on_loop(arpc_loop *loop, void *arg)
{
    (void)loop;
    struct pool_count *pc = arg;
    pc->held = block_pool_held(&pc->s->sv_requests, pc->k);
    if (pc->k == 0) /* and those the loop keeps for itself (core/request.c) */
        for (void *b = pc->s->sv_states_free; b != NULL; b = *(void **)b)
            pc->held++;
    pc->made = block_pool_made(&pc->s->sv_requests, pc->k);
}

static struct pool_count pool_count(arpc_server *s, int k)
{
    struct pool_count pc = {.s = s, .k = k};
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(s->sv_loop, count_on_loop, &pc));
    return pc;
}

/* Sends n calls of h_hold with a payload of len bytes (i at the start), waits until all are
 * held, replies to each from here with its payload and checks every caller got its own back. */
static void burst(arpc_client *c, unsigned n, size_t len)
{
    static arpc_future *fs[BURST];
    static unsigned char payload[BULK];
    atomic_store(&held_n, 0);
    latch_reset();
    for (unsigned i = 0; i < n; i++) {
        memcpy(payload, &i, sizeof(i));
        assert_non_null(fs[i] = arpc_call_async(c, "t.hold", payload, len, 120000));
    }
    assert_true(latch_wait(n, 120000));
    for (unsigned i = 0; i < n; i++) {
        arpc_request *req = atomic_load(&held_reqs[i]);
        size_t req_len;
        const void *data = arpc_request_data(req, &req_len);
        assert_int_equal(ARPC_OK, arpc_reply(req, data, req_len));
    }
    for (unsigned i = 0; i < n; i++) {
        assert_int_equal(ARPC_OK, arpc_future_wait(fs[i]));
        size_t got;
        const void *data = arpc_future_data(fs[i], &got);
        assert_int_equal(len, got);
        assert_memory_equal(&i, data, sizeof(i));
        arpc_future_release(fs[i]);
    }
}

static void test_server_burst_and_late_replies(void **state)
{
    (void)state;
    arpc_server *s;
    /* Every call of the burst is read at once: the bytes bound knows the reply's size. */
    arpc_server_options o = {.workers = 1, .max_calls_per_conn = 2 * BURST};
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &o));
    arpc_method_options mo = {.inline_on_loop = true, .reply_bytes_hint = BULK};
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.hold", h_hold, NULL, &mo));
    char addr[128];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, NULL));

    burst(c, BURST, sizeof(unsigned));
    /* The requests are freed on the loop once their replies are delivered, before the
     * callers can see them: what the pool holds now is final. */
    struct pool_count pc = pool_count(s, 0);
    assert_int_equal(BLOCK_POOL_SMALL_MAX, pc.made);
    assert_int_equal(BLOCK_POOL_SMALL_MAX, pc.held); /* the burst's extra requests were freed */
    burst(c, 100, sizeof(unsigned));
    pc = pool_count(s, 0);
    assert_int_equal(BLOCK_POOL_SMALL_MAX, pc.made); /* nothing new was made */
    /* 4 KiB payloads stay in the connection's read buffer, which lends them (core/conn.h;
     * 100 x 4 KiB fill fewer than ARPC_CONN_RBUF_RETIRED_MAX buffers): their requests take
     * small blocks, none of class 4 (4 KiB + the headroom). */
    burst(c, 100, BULK);
    assert_int_equal(BLOCK_POOL_SMALL_MAX, pool_count(s, 0).made);
    assert_int_equal(0, pool_count(s, 4).made);
    /* Their replies came from the reply pool's class 4, within its bound (those the
     * reply cache still keeps are not back yet). */
    unsigned replies_made = block_pool_made(&s->sv_replies, 4);
    assert_true(replies_made > 0 && replies_made <= block_pool_class_max(4));

    /* Requests alive at destroy: their late replies free them, and the last frees the server
     * and its pool. */
    atomic_store(&held_n, 0);
    latch_reset();
    arpc_future *late[LATE];
    for (unsigned i = 0; i < LATE; i++)
        assert_non_null(late[i] = arpc_call_async(c, "t.hold", &i, sizeof(i), 120000));
    assert_true(latch_wait(LATE, 120000));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    for (unsigned i = 0; i < LATE; i++) {
        assert_int_equal(ARPC_EABANDONED, arpc_future_wait(late[i]));
        arpc_future_release(late[i]);
        arpc_request *req = atomic_load(&held_reqs[i]);
        assert_int_equal(ARPC_ESHUTDOWN, arpc_reply(req, "x", 1));
    }
    arpc_client_close(c);
}

int main(void)
{
    test_alloc_install();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_no_leak(test_reuse_before_allocating),
        cmocka_unit_test_no_leak(test_burst_beyond_the_bound),
        cmocka_unit_test_no_leak(test_large_and_failing),
        cmocka_unit_test_no_leak(test_given_back_from_other_threads),
        cmocka_unit_test_no_leak(test_taken_and_given_back_by_many),
        cmocka_unit_test_no_leak(test_server_burst_and_late_replies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
