/*
 * The client's pending table (core/pending_calls.c) against a reference model: the client's
 * pattern (a sliding window of consecutive xids with stragglers), random keys that collide,
 * misses, growth under a burst, drain and
 * iteration, a growth that fails for want of memory, and the ring in front of ck_rhs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdlib.h>

#include "arpc/error.h"
#include "core/client_internal.h"
#include "core/frame.h"
#include "core/pending_calls.h"
#include "support/test_util.h"

/* A call record: its key, the xid, is its cc_xid (call_xid). */
struct test_call {
    struct client_call tc_call;
};

static struct test_call *calls_new(size_t n) { return calloc(n, sizeof(struct test_call)); }

static void set_xid(struct test_call *t, uint64_t xid) { t->tc_call.cc_xid = xid; }

static void put_xid(struct pending_calls *p, struct test_call *t, uint64_t xid)
{
    set_xid(t, xid);
    assert_int_equal(ARPC_OK, pending_put(p, &t->tc_call));
}

/* A window of consecutive xids, the oldest answered first, except one in 97 that is slow:
 * it stays while later xids wrap round to its slot, so homes collide. */
static void test_sliding_window_with_stragglers(void **state)
{
    (void)state;
    enum { WINDOW = 1000, TOTAL = 200000, SLOW = 64 };
    struct pending_calls p;
    assert_int_equal(ARPC_OK, pending_init(&p, 16));
    struct test_call *calls = calls_new(WINDOW), *slow = calls_new(SLOW);
    uint64_t next = 1;
    size_t slow_n = 0;
    for (size_t i = 0; i < WINDOW; i++)
        put_xid(&p, &calls[i], next++);
    for (size_t done = 0; done < TOTAL; done++) {
        size_t i = done % WINDOW;
        uint64_t xid = call_xid(&calls[i].tc_call);
        assert_ptr_equal(&calls[i].tc_call, pending_take(&p, xid));
        if (xid % 97 == 0 && slow_n < SLOW)
            put_xid(&p, &slow[slow_n++], xid); /* its reply is late */
        assert_null(pending_get(&p, xid + 1000000)); /* a reply for nobody */
        put_xid(&p, &calls[i], next++);
        assert_ptr_equal(&calls[i].tc_call, pending_get(&p, call_xid(&calls[i].tc_call)));
    }
    assert_int_equal(WINDOW + slow_n, pending_count(&p));
    for (size_t s = 0; s < slow_n; s++)
        assert_ptr_equal(&slow[s].tc_call, pending_take(&p, call_xid(&slow[s].tc_call)));
    assert_int_equal(WINDOW, pending_count(&p));
    pending_fini(&p);
    pending_fini(&p); /* idempotent */
    free(calls);
    free(slow);
}

/* Keys from a small random range (so homes collide and runs wrap round the table's end)
 * against a dense model. */
static void test_random_against_model(void **state)
{
    (void)state;
    enum { KEYS = 5000, OPS = 300000 };
    struct test_call *calls = calls_new(KEYS + 1);
    bool *in = calloc(KEYS + 1, sizeof(*in));
    struct pending_calls p;
    assert_int_equal(ARPC_OK, pending_init(&p, 8));
    uint64_t seed = 7;
    size_t count = 0;
    for (int op = 0; op < OPS; op++) {
        uint64_t key = 1 + rng_next(&seed) % KEYS;
        if (rng_next(&seed) % 2) {
            if (!in[key]) {
                put_xid(&p, &calls[key], key);
                in[key] = true;
                count++;
            }
        } else {
            assert_ptr_equal(in[key] ? &calls[key].tc_call : NULL, pending_take(&p, key));
            count -= in[key];
            in[key] = false;
        }
        uint64_t probe = 1 + rng_next(&seed) % (KEYS + 100); /* some never put */
        assert_ptr_equal(probe <= KEYS && in[probe] ? &calls[probe].tc_call : NULL, pending_get(&p, probe));
        assert_int_equal(count, pending_count(&p));
    }
    /* Iteration sees every call once. */
    size_t seen = 0;
    struct pending_iter it;
    struct client_call *call;
    pending_iter_init(&it);
    while (pending_next(&p, &it, &call)) {
        uint64_t key = call_xid(call);
        assert_true(key >= 1 && key <= KEYS && in[key] && call == &calls[key].tc_call);
        seen++;
    }
    assert_int_equal(count, seen);
    pending_fini(&p);
    free(in);
    free(calls);
}

/* A burst of 65,536 calls grows the table; each is found and taken once, and nothing is left
 * (ck_rhs does not shrink: the grown table stays until the client closes, 16 B a slot). */
static void test_burst(void **state)
{
    (void)state;
    enum { BURST = 65536 };
    test_alloc_install();
    struct pending_calls p;
    assert_int_equal(ARPC_OK, pending_init(&p, 1024));
    struct test_call *calls = calls_new(BURST);
    for (size_t i = 0; i < BURST; i++)
        put_xid(&p, &calls[i], 5 + i);
    assert_int_equal(BURST, pending_count(&p));
    for (size_t i = 0; i < BURST; i++)
        assert_ptr_equal(&calls[i].tc_call, pending_take(&p, 5 + i));
    assert_int_equal(0, pending_count(&p));
    assert_null(pending_get(&p, 5));
    pending_fini(&p);
    assert_int_equal(0, atomic_load(&test_alloc_live));
    free(calls);
}

/* A growth without memory: ARPC_ENOMEM, the call is not in, and the others are intact. */
static void test_growth_without_memory(void **state)
{
    (void)state;
    test_alloc_install();
    struct pending_calls p;
    assert_int_equal(ARPC_OK, pending_init(&p, 1));
    enum { MAX = 4096 };
    struct test_call *calls = calls_new(MAX);
    size_t n = 0;
    atomic_store(&test_alloc_budget, 0);
    for (;; n++) {
        assert_true(n + 1 < MAX); /* the table must need to grow long before */
        set_xid(&calls[n], 1 + n);
        if (pending_put(&p, &calls[n].tc_call) != ARPC_OK)
            break;
    }
    assert_int_equal(n, pending_count(&p));
    assert_null(pending_get(&p, 1 + n));
    for (size_t i = 0; i < n; i++)
        assert_ptr_equal(&calls[i].tc_call, pending_get(&p, 1 + i));
    atomic_store(&test_alloc_budget, -1);
    assert_int_equal(ARPC_OK, pending_put(&p, &calls[n].tc_call));
    pending_fini(&p);
    free(calls);
}

static void count_drained(struct client_call *call, void *arg)
{
    (void)call;
    ++*(size_t *)arg;
}

static void test_drain(void **state)
{
    (void)state;
    struct pending_calls p;
    assert_int_equal(ARPC_OK, pending_init(&p, 16));
    struct test_call *calls = calls_new(100);
    for (size_t i = 0; i < 100; i++)
        put_xid(&p, &calls[i], 1 + i * 16); /* every one homes on the same slot of a small table */
    size_t drained = 0;
    pending_drain(&p, count_drained, &drained);
    assert_int_equal(100, drained);
    assert_int_equal(0, pending_count(&p));
    assert_null(pending_get(&p, 1));
    pending_fini(&p);
    free(calls);
}

/* The two levels (core/pending_calls.h): xids a ring's size apart share a ring slot, and in a
 * ring far from half full the older goes to ck_rhs; each is found, taken, iterated and drained
 * from where it is, and a slot freed in the ring does not hide a call that is in ck_rhs. */
static void test_ring_and_table(void **state)
{
    (void)state;
    test_alloc_install();
    struct pending_calls p;
    assert_int_equal(ARPC_OK, pending_init(&p, 4));
    struct test_call *calls = calls_new(4);
    const uint64_t base = 5, apart = PENDING_RING_SLOTS;
    put_xid(&p, &calls[0], base);             /* the ring */
    put_xid(&p, &calls[1], base + apart);     /* its slot is taken: calls[0] moves to ck_rhs */
    assert_int_equal(1, ck_rhs_count(&p.pc_table));
    assert_ptr_equal(&calls[1].tc_call, p.pc_rings[0].pr_slots[base & p.pc_rings[0].pr_mask]);
    assert_int_equal(2, pending_count(&p));
    assert_ptr_equal(&calls[1].tc_call, pending_get(&p, base + apart));
    assert_null(pending_get(&p, base + 2 * apart)); /* the slot's call has another xid */
    assert_ptr_equal(&calls[0].tc_call, pending_take(&p, base));
    assert_null(pending_take(&p, base));
    assert_ptr_equal(&calls[1].tc_call, pending_get(&p, base + apart)); /* still in the ring */
    put_xid(&p, &calls[2], base + 2 * apart); /* calls[1] moves to ck_rhs */
    put_xid(&p, &calls[3], base + 1);
    size_t seen = 0;
    bool found[4] = {false};
    struct pending_iter it;
    struct client_call *call;
    pending_iter_init(&it);
    while (pending_next(&p, &it, &call)) {
        size_t i = (size_t)((struct test_call *)call - calls);
        assert_true(i >= 1 && i < 4 && !found[i]);
        found[i] = true;
        seen++;
    }
    assert_int_equal(3, seen);
    assert_ptr_equal(&calls[1].tc_call, pending_take(&p, base + apart));
    assert_null(pending_take(&p, base + apart));
    size_t drained = 0;
    pending_drain(&p, count_drained, &drained);
    assert_int_equal(2, drained);
    assert_int_equal(0, pending_count(&p));
    assert_null(pending_get(&p, base + 2 * apart));
    pending_fini(&p);
    assert_int_equal(0, atomic_load(&test_alloc_live));
    free(calls);
}

/* The slots of a ring: its size, and each call in the slot its xid names. */
static void check_ring(const struct pending_ring *r, size_t size, size_t count)
{
    assert_int_equal(size - 1, r->pr_mask);
    assert_int_equal(count, r->pr_count);
    size_t seen = 0;
    for (size_t i = 0; i < size; i++) {
        if (r->pr_slots[i] != NULL) {
            assert_int_equal(i, call_xid(r->pr_slots[i]) & r->pr_mask);
            seen++;
        }
    }
    assert_int_equal(count, seen);
}

/* A window of consecutive xids larger than the ring: the ring doubles as it fills, to the
 * window's power of 2 and no further (8 B a slot, one call a slot), nothing goes to ck_rhs,
 * and every call is found after each growth. */
static void test_ring_grows_with_window(void **state)
{
    (void)state;
    enum { WINDOW = 16384 };
    test_alloc_install();
    struct pending_calls p;
    assert_int_equal(ARPC_OK, pending_init(&p, 4));
    struct test_call *calls = calls_new(WINDOW);
    const uint64_t base = 3;
    for (size_t i = 0; i < WINDOW; i++) {
        put_xid(&p, &calls[i], base + i);
        if (((i + 1) & i) == 0 && i + 1 >= PENDING_RING_SLOTS) { /* just filled a power of 2 */
            check_ring(&p.pc_rings[0], i + 1, i + 1);
            for (size_t j = 0; j <= i; j++)
                assert_ptr_equal(&calls[j].tc_call, pending_get(&p, base + j));
        }
    }
    check_ring(&p.pc_rings[0], WINDOW, WINDOW);
    assert_int_equal(0, ck_rhs_count(&p.pc_table));
    /* Slides on, answered in order: the ring stays at the window's size. */
    for (size_t k = 0; k < 4 * WINDOW; k++) {
        size_t i = k % WINDOW;
        assert_ptr_equal(&calls[i].tc_call, pending_take(&p, call_xid(&calls[i].tc_call)));
        put_xid(&p, &calls[i], base + WINDOW + k);
    }
    check_ring(&p.pc_rings[0], WINDOW, WINDOW);
    assert_int_equal(0, ck_rhs_count(&p.pc_table));
    assert_null(pending_get(&p, base + 4 * WINDOW - 1)); /* answered */
    /* Answered all: the ring goes back to its first size (one block: the ring's), and grows
     * again with the next window. */
    for (size_t i = 0; i < WINDOW; i++) {
        assert_ptr_equal(&calls[i].tc_call, pending_take(&p, call_xid(&calls[i].tc_call)));
        if (i + 1 < WINDOW)
            check_ring(&p.pc_rings[0], WINDOW, WINDOW - 1 - i);
    }
    check_ring(&p.pc_rings[0], PENDING_RING_SLOTS, 0);
    assert_int_equal(PENDING_RINGS + 1, atomic_load(&test_alloc_live)); /* the rings, ck_rhs's empty array */
    for (size_t i = 0; i < 2 * PENDING_RING_SLOTS; i++)
        put_xid(&p, &calls[i], base + 5 * WINDOW + i);
    check_ring(&p.pc_rings[0], 2 * PENDING_RING_SLOTS, 2 * PENDING_RING_SLOTS);
    for (size_t i = 0; i < 2 * PENDING_RING_SLOTS; i++)
        assert_ptr_equal(&calls[i].tc_call, pending_get(&p, base + 5 * WINDOW + i));
    pending_fini(&p);
    free(calls);
}

/* One call never answered while a window of 1,000 slides past it for 100,000 xids: the ring
 * grows once (it was half full when the straggler's slot came round), then the straggler
 * moves to ck_rhs instead of doubling the ring again; it is found, and taken, all along. */
static void test_ring_straggler(void **state)
{
    (void)state;
    enum { WINDOW = 1000, TOTAL = 100000 };
    test_alloc_install();
    struct pending_calls p;
    assert_int_equal(ARPC_OK, pending_init(&p, 4));
    struct test_call *calls = calls_new(WINDOW), straggler;
    put_xid(&p, &straggler, 1);
    for (size_t i = 0; i < WINDOW; i++)
        put_xid(&p, &calls[i], 2 + i);
    for (size_t k = 0; k < TOTAL; k++) {
        size_t i = k % WINDOW;
        assert_ptr_equal(&calls[i].tc_call, pending_take(&p, call_xid(&calls[i].tc_call)));
        put_xid(&p, &calls[i], 2 + WINDOW + k);
        assert_ptr_equal(&straggler.tc_call, pending_get(&p, 1));
    }
    check_ring(&p.pc_rings[0], 2048, WINDOW);
    assert_int_equal(1, ck_rhs_count(&p.pc_table));
    assert_ptr_not_equal(&straggler.tc_call, p.pc_rings[0].pr_slots[1 & p.pc_rings[0].pr_mask]); /* the one moved */
    assert_int_equal(WINDOW + 1, pending_count(&p));
    assert_ptr_equal(&straggler.tc_call, pending_take(&p, 1));
    assert_null(pending_get(&p, 1));
    for (size_t i = 0; i < WINDOW; i++)
        assert_ptr_equal(&calls[i].tc_call, pending_take(&p, call_xid(&calls[i].tc_call)));
    assert_int_equal(0, pending_count(&p));
    pending_fini(&p);
    free(calls);
}

/* The loop's xids, the numbered calls' (their seqs, ARPC_XID_SEQ_BIT) and the callers'
 * (ARPC_XID_CALLER_BIT) are three sequences with the same low bits: each has a ring of its
 * own, so interleaved windows of all three stay out of ck_rhs. */
static void test_ring_per_sequence(void **state)
{
    (void)state;
    enum { WINDOW = 4096 };
    test_alloc_install();
    struct pending_calls p;
    assert_int_equal(ARPC_OK, pending_init(&p, 4));
    struct test_call *loop = calls_new(WINDOW), *seq = calls_new(WINDOW), *caller = calls_new(WINDOW);
    for (size_t i = 0; i < WINDOW; i++) {
        put_xid(&p, &loop[i], 1 + i);
        put_xid(&p, &seq[i], ARPC_XID_SEQ_BIT | (1 + i));
        put_xid(&p, &caller[i], ARPC_XID_CALLER_BIT | (1 + i));
    }
    assert_int_equal(0, ck_rhs_count(&p.pc_table));
    check_ring(&p.pc_rings[0], WINDOW, WINDOW);
    check_ring(&p.pc_rings[1], WINDOW, WINDOW);
    check_ring(&p.pc_rings[2], WINDOW, WINDOW);
    for (size_t i = 0; i < WINDOW; i++) {
        assert_ptr_equal(&caller[i].tc_call, pending_take(&p, ARPC_XID_CALLER_BIT | (1 + i)));
        assert_ptr_equal(&loop[i].tc_call, pending_get(&p, 1 + i));
        assert_ptr_equal(&seq[i].tc_call, pending_get(&p, ARPC_XID_SEQ_BIT | (1 + i)));
    }
    assert_int_equal(2 * WINDOW, pending_count(&p));
    size_t drained = 0;
    pending_drain(&p, count_drained, &drained);
    assert_int_equal(2 * WINDOW, drained);
    pending_fini(&p);
    free(loop);
    free(seq);
    free(caller);
}

/* A reply's xid is the peer's: one with both top bits set (no call of ours has it) is simply
 * not found, in an empty table and in a full one. Before, its ring index (3) read past the
 * three rings (client_stream_fuzz found it: an ASan SEGV in pending_take). */
static void test_peer_xid_with_both_bits(void **state)
{
    (void)state;
    struct pending_calls p;
    assert_int_equal(ARPC_OK, pending_init(&p, 4));
    const uint64_t both = ARPC_XID_SEQ_BIT | ARPC_XID_CALLER_BIT;
    assert_null(pending_get(&p, both | 1));
    assert_null(pending_take(&p, both | 1));
    struct test_call *t = calls_new(3);
    put_xid(&p, &t[0], 1);
    put_xid(&p, &t[1], ARPC_XID_SEQ_BIT | 1);
    put_xid(&p, &t[2], ARPC_XID_CALLER_BIT | 1);
    assert_null(pending_get(&p, both | 1));
    assert_null(pending_take(&p, both | 1));
    assert_null(pending_take(&p, UINT64_MAX));
    assert_int_equal(3, pending_count(&p));
    assert_ptr_equal(&t[1].tc_call, pending_take(&p, ARPC_XID_SEQ_BIT | 1));
    assert_ptr_equal(&t[2].tc_call, pending_take(&p, ARPC_XID_CALLER_BIT | 1));
    assert_ptr_equal(&t[0].tc_call, pending_take(&p, 1));
    pending_fini(&p);
    free(t);
}

/* A ring that cannot grow for want of memory: the older call of a shared slot goes to ck_rhs;
 * when that fails too, the put fails and nothing has moved. */
static void test_ring_growth_without_memory(void **state)
{
    (void)state;
    test_alloc_install();
    struct pending_calls p;
    assert_int_equal(ARPC_OK, pending_init(&p, 1024));
    struct test_call *calls = calls_new(PENDING_RING_SLOTS + 2);
    for (size_t i = 0; i < PENDING_RING_SLOTS; i++)
        put_xid(&p, &calls[i], 1 + i);
    atomic_store(&test_alloc_budget, 0);
    put_xid(&p, &calls[PENDING_RING_SLOTS], 1 + PENDING_RING_SLOTS); /* xid 1 to ck_rhs */
    check_ring(&p.pc_rings[0], PENDING_RING_SLOTS, PENDING_RING_SLOTS);
    assert_int_equal(1, ck_rhs_count(&p.pc_table));
    for (size_t i = 0; i <= PENDING_RING_SLOTS; i++)
        assert_ptr_equal(&calls[i].tc_call, pending_get(&p, 1 + i));
    atomic_store(&test_alloc_budget, -1);
    put_xid(&p, &calls[PENDING_RING_SLOTS + 1], 2 + PENDING_RING_SLOTS); /* grows now */
    check_ring(&p.pc_rings[0], 2 * PENDING_RING_SLOTS, PENDING_RING_SLOTS + 1);
    for (size_t i = 0; i <= PENDING_RING_SLOTS + 1; i++)
        assert_ptr_equal(&calls[i].tc_call, pending_take(&p, 1 + i));
    assert_int_equal(0, pending_count(&p));
    pending_fini(&p);
    free(calls);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sliding_window_with_stragglers),
        cmocka_unit_test(test_random_against_model),
        cmocka_unit_test_no_leak(test_burst),
        cmocka_unit_test_no_leak(test_growth_without_memory),
        cmocka_unit_test(test_drain),
        cmocka_unit_test_no_leak(test_ring_and_table),
        cmocka_unit_test_no_leak(test_ring_grows_with_window),
        cmocka_unit_test_no_leak(test_ring_straggler),
        cmocka_unit_test_no_leak(test_ring_per_sequence),
        cmocka_unit_test_no_leak(test_ring_growth_without_memory),
        cmocka_unit_test(test_peer_xid_with_both_bits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
