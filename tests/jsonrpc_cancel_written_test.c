/*
 * A JSON-RPC call cancelled after its request was written is let go of at once, as at its
 * deadline: its record and its future are freed, and the server's answer, should one come,
 * is skipped as one to no call. Before, the record stayed until an answer, the deadline or
 * the close: without a deadline (the JSON-RPC default), a server that never answered kept
 * every cancelled call for good (~240 bytes each, a review's trial from the server's side).
 *
 * The handler holds every request without replying until the test has looked, so nothing
 * but the cancel can free a call; the counting allocator shows what was freed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>

#include "arpc/arpc.h"
#include "arpc/jsonrpc.h"
#include "support/test_util.h"

#define CALLS 100

static arpc_request *held[CALLS];
static atomic_int nclaimed, nheld; /* held[0..nheld) are set (published by the increment) */

static void h_hold(arpc_request *req, void *ctx)
{
    (void)ctx;
    held[atomic_fetch_add(&nclaimed, 1)] = req;
    atomic_fetch_add(&nheld, 1);
}

static void test_cancelled_written_calls_are_freed(void **state)
{
    (void)state;
    test_alloc_install();
    arpc_server *s;
    arpc_server_options so = {.workers = 1};
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    arpc_method_options mo = {.reply_bytes_hint = 16}; /* else 16 held calls hold the input */
    assert_int_equal(ARPC_OK, arpc_server_register(s, "T.Hold", h_hold, NULL, &mo));
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    arpc_jsonrpc_client *c;
    assert_int_equal(ARPC_OK, arpc_jsonrpc_connect(&c, addr, NULL));
    arpc_future *f[CALLS];
    for (int i = 0; i < CALLS; i++)
        assert_non_null(f[i] = arpc_jsonrpc_call_async(c, "T.Hold", "[1]", 3, ARPC_FOREVER));
    assert_true(WAIT_UNTIL(atomic_load(&nheld) == CALLS)); /* every request written and read */
    long before = atomic_load(&test_alloc_live);
    for (int i = 0; i < CALLS; i++) {
        assert_true(arpc_future_cancel(f[i]));
        arpc_future_release(f[i]);
    }
    /* Each call's record and future freed (two blocks at least), on the client's loop. */
    bool freed = WAIT_UNTIL(atomic_load(&test_alloc_live) <= before - 2 * CALLS);
    print_message("blocks live: %ld before the cancels, %ld after\n", before, atomic_load(&test_alloc_live));
    assert_true(freed);
    for (int i = 0; i < CALLS; i++) /* answered now: skipped as answers to no call */
        assert_int_equal(ARPC_OK, arpc_reply(held[i], "1", 1));
    assert_int_equal(ARPC_OK, arpc_jsonrpc_close(c));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_cancelled_written_calls_are_freed, test_alloc_check_no_leak),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
