/*
 * The client's ack (the seqs below which every numbered call has finished) goes on after the
 * client had no memory to note a call finished out of order. Before, that seq was never
 * noted, the ack stopped below it for good, and the server kept every later reply of the
 * client (nothing unacknowledged is dropped): its reply cache filled, and new numbered calls
 * were refused ARPC_EOVERLOADED, though every earlier call had finished.
 *
 * The allocation made to fail is picked by its size (support/test_alloc.c): the client's table
 * of seqs finished above the ack, growing at its 49th.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdatomic.h>

#include "arpc/arpc.h"
#include "base/u64_map.h"
#include "support/test_util.h"

#define KEPT 50                                          /* seq 1 held; 2..50 finish before it */
#define DONE_GROWN (128 * sizeof(struct arpc_u64_slot)) /* the table past 48 of its 64 slots */
#define BIG 2048                                        /* the later replies, each cached */

static arpc_request *_Atomic kept[KEPT];

/* Keeps the request; the test replies. */
static void h_keep(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len;
    const int *i = arpc_request_data(req, &len);
    atomic_store(&kept[*i], req);
    latch_add();
}

static void h_big(arpc_request *req, void *ctx)
{
    (void)ctx;
    static char reply[BIG];
    arpc_reply(req, reply, sizeof(reply));
}

static void test_ack_goes_on_after_no_memory(void **state)
{
    (void)state;
    test_alloc_sized_install();
    latch_reset();
    arpc_server *s;
    arpc_server_options so = {.reply_cache_bytes = 64 * 1024};
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    /* Small replies: the 50 unanswered calls do not hold the connection's input. */
    arpc_method_options inl = {.inline_on_loop = true, .reply_bytes_hint = 16};
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.keep", h_keep, NULL, &inl));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.big", h_big, NULL, &inl));
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, NULL));

    static int idx[KEPT];
    arpc_future *fs[KEPT];
    for (int i = 0; i < KEPT; i++) {
        idx[i] = i;
        fs[i] = arpc_call_async(c, "t.keep", &idx[i], sizeof(idx[i]), ARPC_FOREVER);
        if (i == 0)
            assert_true(latch_wait(1, TEST_WAIT_MS)); /* the first is seq 1 */
    }
    assert_true(latch_wait(KEPT, TEST_WAIT_MS));
    /* Every call but the first finishes: their seqs wait above the ack, and the table noting
     * them finds no memory to grow. */
    test_alloc_fail_next(DONE_GROWN, DONE_GROWN + 1);
    for (int i = 1; i < KEPT; i++) {
        assert_int_equal(ARPC_OK, arpc_reply(atomic_load(&kept[i]), "k", 1));
        assert_int_equal(ARPC_OK, arpc_future_wait_for(fs[i], TEST_WAIT_MS));
    }
    test_alloc_fail_next(0, 0);
    assert_int_equal(1, test_alloc_sized_failed());
    assert_int_equal(ARPC_OK, arpc_reply(atomic_load(&kept[0]), "k", 1));
    assert_int_equal(ARPC_OK, arpc_future_wait_for(fs[0], TEST_WAIT_MS));
    for (int i = 0; i < KEPT; i++)
        arpc_future_release(fs[i]);

    /* Every call has finished: the ack covers them, and the server drops each reply once the
     * next call's ack covers it. Far more than its cache holds go through. */
    for (int i = 0; i < 200; i++) {
        arpc_future *f = arpc_call_async(c, "t.big", "x", 1, ARPC_FOREVER);
        assert_int_equal(ARPC_OK, arpc_future_wait_for(f, TEST_WAIT_MS));
        arpc_future_release(f);
    }
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ack_goes_on_after_no_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
