/*
 * A copy of an at-most-once call the server knows (it runs, or ran) is never answered "did not
 * run": a caller told so may make the call again as a new one, and run it twice.
 *
 * - The server has no memory for the copy's request, or for the copy's place among the running
 *   call's waiters: before, the copy was refused ARPC_EREJECTED ("server out of memory: call
 *   not run") while the call ran. Now a copy that finds its call's result gets it, one that
 *   finds room to wait gets the result when it comes, and one that cannot wait is answered
 *   ARPC_EABANDONED ("may have run").
 * - The server restarted on its reply log without the method the call named (an upgrade that
 *   renamed or dropped it): before, the copy was refused ARPC_ENOMETHOD ("did not run") though
 *   the log holds its result. Now the result is replayed, as for any copy.
 *
 * The allocations made to fail are picked by their size (one the test names, once), while the
 * server is otherwise quiet: the one call it runs is held on a semaphore.
 */
#define _GNU_SOURCE /* mkdtemp */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arpc/arpc.h"
#include "core/block_pool.h"
#include "core/reply_cache.h"
#include "core/request_internal.h"
#include "support/raw_client.h"
#include "support/test_util.h"

#define BIG_PAYLOAD 600 /* a request of its own block class: nothing else here is that size */

static atomic_int runs;
static sem_t gate;

/* Replies "<first byte> #<run>"; holds first while the payload starts with 'h'. */
static void h_run(arpc_request *req, void *ctx)
{
    (void)ctx;
    int n = atomic_fetch_add(&runs, 1) + 1;
    size_t len;
    const char *p = arpc_request_data(req, &len);
    latch_add();
    if (len > 0 && p[0] == 'h')
        sem_wait_secs(&gate, TEST_WAIT_S);
    char out[32];
    int m = snprintf(out, sizeof(out), "%c #%d", len > 0 ? p[0] : '-', n);
    arpc_reply(req, out, (size_t)m);
}

struct fixture {
    arpc_server *s;
    char addr[256];
};

static int setup(void **state)
{
    static struct fixture fx;
    test_alloc_sized_install();
    atomic_store(&runs, 0);
    latch_reset();
    sem_init(&gate, 0, 0);
    arpc_server_options so = {.workers = 2};
    if (arpc_server_create(&fx.s, &so) != ARPC_OK || arpc_server_register(fx.s, "t.run", h_run, NULL, NULL) != ARPC_OK ||
        arpc_server_listen(fx.s, "tcp://127.0.0.1:0", fx.addr, sizeof(fx.addr)) != ARPC_OK)
        return -1;
    *state = &fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    test_alloc_fail_next(0, 0);
    for (int i = 0; i < 4; i++)
        sem_post(&gate); /* nothing may stay held */
    arpc_server_destroy(fx->s);
    sem_destroy(&gate);
    return 0;
}

/* Reads one REPLY for xid and checks its body. */
static void expect_reply(struct raw_client *r, uint64_t xid, const char *body)
{
    struct raw_frame f;
    assert_true(raw_read(r, &f, false));
    assert_int_equal(xid, f.f.f_xid);
    if (f.f.f_kind == ARPC_FRAME_ERROR)
        fail_msg("call %llu answered error %u: %.*s", (unsigned long long)xid, f.f.f_code, (int)f.body_len,
                 (const char *)f.body);
    assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
    assert_int_equal(strlen(body), f.body_len);
    assert_memory_equal(body, f.body, f.body_len);
}

/* The copy has no room to wait among the running call's waiters: it may have run. */
static void test_copy_without_memory_to_wait(void **state)
{
    struct fixture *fx = *state;
    struct raw_client r1, r2;
    assert_true(raw_connect(&r1, fx->addr, 0xa1));
    assert_true(raw_connect(&r2, fx->addr, 0xa1)); /* the same client after a reconnect */
    assert_true(raw_request(&r1, 1, 1, 0, 0, "t.run", "h", 1));
    assert_true(latch_wait(1, TEST_WAIT_MS)); /* it runs, and holds */
    test_alloc_fail_next(sizeof(struct arpc_rc_waiter), sizeof(struct arpc_rc_waiter) + 1); /* the copy's waiter */
    assert_true(raw_request(&r2, 9, 1, 0, 0, "t.run", "h", 1));
    assert_true(raw_next_is_error(&r2, 9, ARPC_EABANDONED)); /* not ARPC_EREJECTED */
    assert_int_equal(1, test_alloc_sized_failed());
    sem_post(&gate);
    expect_reply(&r1, 1, "h #1");
    assert_true(raw_request(&r2, 10, 1, 0, 0, "t.run", "h", 1)); /* a later copy: replayed */
    expect_reply(&r2, 10, "h #1");
    assert_int_equal(1, atomic_load(&runs));
    raw_close(&r1);
    raw_close(&r2);
}

/* The size of the block a request with BIG_PAYLOAD bytes is read into. */
static size_t big_request_block(void)
{
    int k = block_pool_class_of(sizeof(struct request_state) + BIG_PAYLOAD);
    assert_true(k != BLOCK_POOL_NONE);
    return block_pool_block(k);
}

/* The copy finds no memory for its request: it is answered from the cache all the same (it
 * needs no request to wait or to be replayed). */
static void test_copy_without_memory_for_its_request(void **state)
{
    struct fixture *fx = *state;
    static char big[BIG_PAYLOAD];
    memset(big, 'h', sizeof(big));
    struct raw_client r1, r2;
    assert_true(raw_connect(&r1, fx->addr, 0xa2));
    assert_true(raw_connect(&r2, fx->addr, 0xa2));
    assert_true(raw_request(&r1, 1, 1, 0, 0, "t.run", big, sizeof(big)));
    assert_true(latch_wait(1, TEST_WAIT_MS)); /* it runs, holding its request's block */
    test_alloc_fail_next(big_request_block(), big_request_block() + 1); /* the copy's */
    assert_true(raw_request(&r2, 9, 1, 0, 0, "t.run", big, sizeof(big)));
    /* A call behind it on r2 is answered after it was dealt with: then let the first go. */
    assert_true(raw_request(&r2, 10, 2, 0, 0, "t.run", "n", 1));
    expect_reply(&r2, 10, "n #2");
    assert_int_equal(1, test_alloc_sized_failed());
    sem_post(&gate);
    expect_reply(&r1, 1, "h #1");
    expect_reply(&r2, 9, "h #1"); /* it waited for the running call: not ARPC_EREJECTED */
    /* The same once the call is finished: its block went back to the pool (the server's
     * part of a request is freed before it stops counting), seq 3 takes it, and the copy's
     * request needs another. */
    assert_true(server_stat_reaches(fx->s, offsetof(arpc_server_stats, handlers_in_flight), 0, TEST_WAIT_MS));
    assert_true(raw_request(&r1, 2, 3, 0, 0, "t.run", big, sizeof(big)));
    assert_true(latch_wait(3, TEST_WAIT_MS)); /* seq 3 holds the pool's block */
    test_alloc_fail_next(big_request_block(), big_request_block() + 1);
    assert_true(raw_request(&r2, 11, 1, 0, 0, "t.run", big, sizeof(big)));
    expect_reply(&r2, 11, "h #1"); /* replayed */
    assert_int_equal(2, test_alloc_sized_failed());
    sem_post(&gate);
    expect_reply(&r1, 2, "h #3");
    assert_int_equal(3, atomic_load(&runs)); /* seq 1 once, 2 once, 3 once */
    raw_close(&r1);
    raw_close(&r2);
}

static void h_other(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&runs, 1);
    arpc_reply(req, "other", 5);
}

/* A server restarted on its log without the method a re-sent call names replays the call's
 * result: the call ran (the log says so), whatever the server serves now. */
static void test_copy_of_a_method_gone_after_restart(void **state)
{
    (void)state;
    char dir[] = "/tmp/arpc-amo-answers-XXXXXX";
    assert_non_null(mkdtemp(dir));
    arpc_server *s;
    arpc_server_options so = {.workers = 1, .log_dir = dir};
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.old", h_run, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    struct raw_client r;
    assert_true(raw_connect_with(&r, addr, 0xa3, NULL, 0x1ca4));
    assert_true(raw_request(&r, 1, 1, 0, 0, "t.old", "x", 1));
    expect_reply(&r, 1, "x #1");
    raw_close(&r); /* lost before the client read it, say */
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));

    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.new", h_other, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    assert_true(raw_connect_with(&r, addr, 0xa3, NULL, 0x1ca4));
    assert_true(raw_request(&r, 2, 1, 0, 0, "t.old", "x", 1)); /* the copy */
    expect_reply(&r, 2, "x #1"); /* not ARPC_ENOMETHOD: it ran */
    assert_true(raw_request(&r, 3, 2, 1, 0, "t.old", "y", 1)); /* a new call to it: no such method */
    assert_true(raw_next_is_error(&r, 3, ARPC_ENOMETHOD));
    raw_close(&r);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    assert_int_equal(1, atomic_load(&runs));
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(0, system(cmd));
}

/* A server restarted on its log with a smaller max_frame: a copy of a call that ran there with a
 * request now over the limit gets its result, not ARPC_ETOOLARGE ("did not run"). */
static void test_oversized_copy_after_restart(void **state)
{
    (void)state;
    char dir[] = "/tmp/arpc-amo-answers-XXXXXX";
    assert_non_null(mkdtemp(dir));
    static char big[4000];
    memset(big, 'b', sizeof(big));
    arpc_server *s;
    arpc_server_options so = {.workers = 1, .log_dir = dir};
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.big", h_run, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    struct raw_client r;
    assert_true(raw_connect_with(&r, addr, 0xa4, NULL, 0x1ca5));
    assert_true(raw_request(&r, 1, 1, 0, 0, "t.big", big, sizeof(big)));
    expect_reply(&r, 1, "b #1");
    raw_close(&r); /* lost before the client read it, say */
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));

    so.max_frame = 1024;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.big", h_run, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    assert_true(raw_connect_with(&r, addr, 0xa4, NULL, 0x1ca5));
    assert_true(raw_request(&r, 2, 1, 0, 0, "t.big", big, sizeof(big))); /* the copy */
    expect_reply(&r, 2, "b #1"); /* not ARPC_ETOOLARGE: it ran */
    assert_true(raw_request(&r, 3, 2, 1, 0, "t.big", big, sizeof(big))); /* a new one: too large */
    assert_true(raw_next_is_error(&r, 3, ARPC_ETOOLARGE));
    assert_true(raw_request(&r, 4, 3, 1, 0, "t.big", "s", 1)); /* and the connection goes on */
    expect_reply(&r, 4, "s #2");
    raw_close(&r);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    assert_int_equal(2, atomic_load(&runs));
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(0, system(cmd));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_copy_without_memory_to_wait, setup, teardown),
        cmocka_unit_test_setup_teardown(test_copy_without_memory_for_its_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_copy_of_a_method_gone_after_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversized_copy_after_restart, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
