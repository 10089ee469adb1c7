/*
 * A call cancelled while it waits for a connection, whose cancel found no memory for its job
 * to the loop, is not sent when the connection comes: a call that had not started does not
 * run (docs/SEMANTICS.md, "A cancelled call"). Before, the loop, never told, sent it at the
 * next HELLO and it ran, though its caller had its ARPC_ECANCELLED long before.
 *
 * The allocation made to fail is picked by its size (support/test_alloc.c): the cancel's job
 * (core/client_api.c), while nothing else of arpc allocates (the client waits for a HELLO).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdatomic.h>

#include "arpc/arpc.h"
#include "async/loop_internal.h"
#include "support/cut_proxy.h"
#include "support/test_util.h"

#define CANCEL_JOB_BYTES (sizeof(struct arpc_loop_job) + sizeof(void *))

static atomic_int runs;

static void h_count(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&runs, 1);
    arpc_reply(req, "ran", 3);
}

static void noop(arpc_loop *loop, void *arg)
{
    (void)loop;
    (void)arg;
}

static void test_cancelled_waiting_call_is_not_sent(void **state)
{
    (void)state;
    test_alloc_sized_install();
    atomic_store(&runs, 0);
    arpc_loop *loop;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_start(loop));
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL));
    arpc_method_options inl = {.inline_on_loop = true}; /* calls run in the order they come */
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.count", h_count, NULL, &inl));
    char saddr[256], paddr[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", saddr, sizeof(saddr)));
    struct cut_proxy *proxy = cut_proxy_start(saddr, paddr, sizeof(paddr));
    assert_non_null(proxy);
    arpc_client *c;
    arpc_client_options co = {.loop = loop, .reconnect_max_ms = 50};
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, paddr, &co));
    cut_proxy_hold_new(proxy, true); /* the client stays without a connection */
    cut_proxy_cut(proxy);

    arpc_future *f = arpc_call_async(c, "t.count", "f", 1, ARPC_FOREVER);
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(loop, noop, NULL)); /* f waits on the loop (FIFO) */
    test_alloc_fail_next(CANCEL_JOB_BYTES, CANCEL_JOB_BYTES + 1);
    assert_true(arpc_future_cancel(f));
    test_alloc_fail_next(0, 0);
    assert_int_equal(1, test_alloc_sized_failed()); /* the loop was not told */
    assert_int_equal(ARPC_ECANCELLED, arpc_future_poll(f));

    cut_proxy_hold_new(proxy, false);
    /* A call after it goes out after it, on the same connection, and runs after it. */
    arpc_future *g = arpc_call_async(c, "t.count", "g", 1, ARPC_FOREVER);
    assert_int_equal(ARPC_OK, arpc_future_wait_for(g, TEST_WAIT_MS));
    assert_int_equal(1, atomic_load(&runs)); /* g's run only: f was never sent */
    arpc_future_release(g);
    arpc_future_release(f);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    cut_proxy_stop(proxy);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    arpc_loop_destroy(loop);
}

static void on_hold_cancelled(arpc_request *req, void *arg)
{
    (void)arg;
    latch_add();
    arpc_reply(req, NULL, 0); /* frees it: nobody waits */
}

/* Keeps the call until its client cancels it. */
static void h_hold(arpc_request *req, void *ctx)
{
    (void)ctx;
    if (arpc_request_on_cancel(req, on_hold_cancelled, NULL) != ARPC_OK)
        arpc_reply(req, NULL, 0);
    latch_add();
}

/* A call already sent, cancelled when there is no memory for the cancel's job, is settled on
 * the loop at once all the same: its slot freed (the client counts it finished, ECANCELLED)
 * and the server told (its handler's cancel callback runs). Before, it kept its slot and its
 * run on the server until its reply or deadline: here, none and none, for ever. */
static void test_cancelled_sent_call_is_settled(void **state)
{
    (void)state;
    test_alloc_sized_install();
    latch_reset();
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.hold", h_hold, NULL, NULL));
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, NULL));
    arpc_future *f = arpc_call_async(c, "t.hold", "f", 1, ARPC_FOREVER);
    assert_non_null(f);
    assert_true(latch_wait(1, TEST_WAIT_MS)); /* sent, and in its handler */
    test_alloc_fail_next(CANCEL_JOB_BYTES, CANCEL_JOB_BYTES + 1);
    assert_true(arpc_future_cancel(f));
    test_alloc_fail_next(0, 0);
    assert_int_equal(1, test_alloc_sized_failed()); /* no job of its own */
    assert_true(client_stat_reaches(c, offsetof(arpc_client_stats, calls.by_outcome[ARPC_ECANCELLED]), 1,
                                    TEST_WAIT_MS));
    assert_true(latch_wait(2, TEST_WAIT_MS)); /* the server heard the CANCEL */
    arpc_future_release(f);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cancelled_waiting_call_is_not_sent),
        cmocka_unit_test(test_cancelled_sent_call_is_settled),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
