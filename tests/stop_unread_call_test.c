/*
 * A call the server never read before its stop (arpc_server_stop(s, 0)) did not run, and its
 * caller is told so. The stop's last frame on a connection that is owed nothing, a GOAWAY
 * with ARPC_GOAWAY_LAST (docs/PROTOCOL.md), says that every call read there was answered
 * ahead of it: a call still pending when the connection closes was not read. The client
 * counts it as never sent: sent again on the next connection (a server restarted on the
 * address runs it), else ended ARPC_EUNREACHABLE ("did not run") at its deadline or when the
 * client gives up reconnecting (reconnect_give_up_ms). It ended
 * ARPC_ETIMEDOUT ("may have run"), or ARPC_ECONNLOST from a restarted server: a caller could
 * not tell a server that went away from a slow one (a call racing a stop: about 1 in 2 on a
 * loaded machine).
 *
 * The server reads one call at a time on the connection (max_calls_per_conn 1) and its
 * handler keeps the first unanswered, so the second is written and stays unread until the
 * stop closes the connection; no timing decides it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <string.h>

#include "arpc/arpc.h"
#include "support/test_util.h"

static arpc_request *_Atomic kept; /* t.keep's request: answered by the stop */

static void h_keep(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_store(&kept, req);
    latch_add();
}

static arpc_server *start_server(const char *at, char *addr, size_t len)
{
    arpc_server *s;
    arpc_server_options so = {.workers = 1, .max_calls_per_conn = 1};
    assert_int_equal(arpc_server_create(&s, &so), ARPC_OK);
    assert_int_equal(arpc_server_register(s, "t.keep", h_keep, NULL, NULL), ARPC_OK);
    assert_int_equal(arpc_server_register(s, "t.echo", test_echo, NULL, NULL), ARPC_OK);
    assert_int_equal(arpc_server_listen(s, at, addr, len), ARPC_OK);
    return s;
}

/* t.keep is in its handler (the connection's one call), and t.echo, of deadline_ms, is
 * written to the server, unread: *unread. Then the server stops without grace. */
static void stop_with_one_unread(arpc_server *s, arpc_client *c, int64_t deadline_ms, arpc_future **first,
                                 arpc_future **unread)
{
    latch_reset();
    /* Counted from before t.keep: a call its caller wrote counts its bytes only once the loop
     * takes it up (core/client_direct.c), which may be after the next call was made. */
    uint64_t before = CLIENT_STAT(c, bytes_out);
    *first = arpc_call_async(c, "t.keep", "k", 1, TEST_WAIT_MS);
    assert_non_null(*first);
    assert_true(latch_wait(1, TEST_WAIT_MS));
    *unread = arpc_call_async(c, "t.echo", "e", 1, deadline_ms);
    assert_non_null(*unread);
    /* Both frames left whole: 16 (header) + 24 (fixed fields) + 6 (the method) + 1 each. Its
     * deadline brings t.echo to the loop soon (the callers' sweep) with its connection open;
     * client_direct_unread_test has one that comes only with the loss. */
    assert_true(WAIT_UNTIL(CLIENT_STAT(c, bytes_out) >= before + 2 * 47));
    assert_int_equal(arpc_server_stop(s, 0), ARPC_OK);
    assert_int_equal(arpc_future_wait(*first), ARPC_EABANDONED); /* it may have run */
    assert_int_equal(arpc_reply(atomic_exchange(&kept, NULL), NULL, 0), ARPC_ESHUTDOWN); /* frees it */
}

/* No server comes back: the unread call ends ARPC_EUNREACHABLE once the client gives up
 * reconnecting (a sent call would end ARPC_ECONNLOST then). The give-up time counts from the
 * loss; a short deadline instead could pass before a loaded machine's stop closed the
 * connection, and rightly end the call ARPC_ETIMEDOUT. */
static void test_unread_call_did_not_run(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = start_server("tcp://127.0.0.1:0", addr, sizeof(addr));
    arpc_client *c;
    arpc_client_options co = {.reconnect_give_up_ms = 200};
    assert_int_equal(arpc_client_connect(&c, addr, &co), ARPC_OK);
    arpc_future *first, *unread;
    stop_with_one_unread(s, c, TEST_WAIT_MS, &first, &unread);
    int rc = arpc_future_wait(unread);
    if (rc != ARPC_EUNREACHABLE)
        print_message("unread call: %s\n", arpc_errname(rc));
    assert_int_equal(rc, ARPC_EUNREACHABLE);
    arpc_method_stats ms;
    assert_int_equal(arpc_server_method_stats(s, "t.echo", &ms), ARPC_OK);
    assert_int_equal(ms.calls.started, 0);
    arpc_future_release(first);
    arpc_future_release(unread);
    assert_int_equal(arpc_client_close(c), ARPC_OK);
    assert_int_equal(arpc_server_destroy(s), ARPC_OK);
}

/* A server restarted on the address (without a reply log: it knows nothing of the call) runs
 * the unread call: it was never sent. Before, it was a sent call the new server could not
 * know: ARPC_ECONNLOST. */
static void test_unread_call_sent_to_the_next_server(void **state)
{
    (void)state;
    char addr[256], again[256];
    arpc_server *s = start_server("tcp://127.0.0.1:0", addr, sizeof(addr));
    arpc_client *c;
    assert_int_equal(arpc_client_connect(&c, addr, NULL), ARPC_OK);
    arpc_future *first, *unread;
    stop_with_one_unread(s, c, TEST_WAIT_MS, &first, &unread);
    assert_int_equal(arpc_server_destroy(s), ARPC_OK);
    arpc_server *s2 = start_server(addr, again, sizeof(again));
    int rc = arpc_future_wait(unread);
    if (rc != ARPC_OK)
        print_message("unread call: %s\n", arpc_errname(rc));
    assert_int_equal(rc, ARPC_OK);
    size_t len = 0;
    const void *data = arpc_future_data(unread, &len);
    assert_int_equal(len, 1);
    assert_memory_equal(data, "e", 1);
    arpc_future_release(first);
    arpc_future_release(unread);
    assert_int_equal(arpc_client_close(c), ARPC_OK);
    assert_int_equal(arpc_server_destroy(s2), ARPC_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unread_call_did_not_run),
        cmocka_unit_test(test_unread_call_sent_to_the_next_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
