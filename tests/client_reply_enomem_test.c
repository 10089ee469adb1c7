/*
 * A client without memory for what the server answered still tells its caller the right
 * outcome (docs/SEMANTICS.md, "Outcomes"): the words are what may go, never the meaning.
 *   - An at-least-once call sent again after a lost connection, refused by the server
 *     (ARPC_ENOMETHOD): an earlier send may have run, so ARPC_ECONNLOST, even when the words
 *     saying so find no memory. Before, the server's "did not run" code reached the caller.
 *   - A reply that ran: "may have run" (ARPC_EABANDONED), never ARPC_ENOMEM, which a call that
 *     could not start ends with. An error that ran (ARPC_EHANDLER): its code, without words.
 *
 * The allocation made to fail is picked by its size (support/test_alloc.c): one the client
 * makes for that answer alone.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <string.h>

#include "arpc/arpc.h"
#include "support/cut_proxy.h"
#include "support/test_util.h"

#define REPLY_BYTES 3001u   /* the reply the client copies: an allocation of this size */
#define MESSAGE_BYTES 1499u /* an error's message: the client's copy is one byte more */

static atomic_int runs;
static char message[MESSAGE_BYTES + 1];

/* Runs once per call; the client's copy of its answer finds no memory. */
static void h_reply(arpc_request *req, void *ctx)
{
    (void)ctx;
    static char reply[REPLY_BYTES];
    atomic_fetch_add(&runs, 1);
    test_alloc_fail_next(REPLY_BYTES, REPLY_BYTES + 1);
    arpc_reply(req, reply, sizeof(reply));
}

static void h_error(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&runs, 1);
    test_alloc_fail_next(MESSAGE_BYTES + 1, MESSAGE_BYTES + 2);
    arpc_reply_error(req, message);
}

static void call_once(arpc_handler_fn h, int *status, const void **data)
{
    atomic_store(&runs, 0);
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.h", h, NULL, NULL));
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, NULL));
    arpc_future *f = arpc_call_async(c, "t.h", "x", 1, ARPC_FOREVER);
    *status = arpc_future_wait_for(f, TEST_WAIT_MS);
    *data = arpc_future_data(f, NULL);
    test_alloc_fail_next(0, 0);
    assert_int_equal(1, test_alloc_sized_failed()); /* the copy was the one that failed */
    assert_int_equal(1, atomic_load(&runs));
    arpc_future_release(f);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

static void test_reply_without_memory_may_have_run(void **state)
{
    (void)state;
    test_alloc_sized_install();
    int st;
    const void *data;
    call_once(h_reply, &st, &data);
    assert_int_equal(ARPC_EABANDONED, st); /* it ran: not ARPC_ENOMEM */
}

static void test_error_without_memory_keeps_its_code(void **state)
{
    (void)state;
    test_alloc_sized_install();
    memset(message, 'm', MESSAGE_BYTES);
    int st;
    const void *data;
    call_once(h_error, &st, &data);
    assert_int_equal(ARPC_EHANDLER, st); /* the handler ran and said so */
}

/* ---- a refused re-send (as call_control_test: test_refused_resend_after_a_run_may_have_run) ---- */

static void h_count(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&runs, 1);
    arpc_reply(req, "ran", 3);
}

/* An at-least-once call runs, its reply is lost with its connection, and its re-send reaches
 * a server without the method. fail_size: the client allocation to fail as the refusal comes
 * (0: none). Returns the call's outcome; *why_len: the length of its words (0: none). */
static int refused_resend(size_t fail_size, size_t *why_len)
{
    atomic_store(&runs, 0);
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.count", h_count, NULL, NULL));
    char saddr[256], paddr[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", saddr, sizeof(saddr)));
    struct cut_proxy *proxy = cut_proxy_start(saddr, paddr, sizeof(paddr));
    assert_non_null(proxy);
    arpc_client *c;
    arpc_client_options co = {.reconnect_max_ms = 50};
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, paddr, &co));
    cut_proxy_swallow_replies(proxy, true); /* its reply will not arrive */
    arpc_call_options o = {.deadline_ms = 30000, .semantics = ARPC_AT_LEAST_ONCE};
    arpc_future *f = arpc_call_async_opts(c, "t.count", "x", 1, &o);
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, calls.finished), 1, TEST_WAIT_MS));
    cut_proxy_hold_new(proxy, true); /* the client stays away while the server changes */
    cut_proxy_cut(proxy);
    arpc_server_destroy(s);
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL)); /* the next version: no t.count */
    assert_int_equal(ARPC_OK, arpc_server_listen(s, saddr, NULL, 0));
    cut_proxy_swallow_replies(proxy, false);
    if (fail_size != 0)
        test_alloc_fail_next(fail_size, fail_size + 1);
    cut_proxy_hold_new(proxy, false);
    int st = arpc_future_wait_for(f, TEST_WAIT_MS);
    test_alloc_fail_next(0, 0);
    assert_int_equal(1, atomic_load(&runs));
    const char *why = arpc_future_data(f, NULL);
    *why_len = why != NULL ? strlen(why) : 0;
    arpc_future_release(f);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    cut_proxy_stop(proxy);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    return st;
}

static void test_refused_resend_without_memory_may_have_run(void **state)
{
    (void)state;
    test_alloc_sized_install();
    size_t len;
    assert_int_equal(ARPC_ECONNLOST, refused_resend(0, &len)); /* with memory: its words */
    assert_true(len > 0);
    /* Again, and the words (their copy: one byte more) find no memory. */
    assert_int_equal(ARPC_ECONNLOST, refused_resend(len + 1, &len));
    assert_int_equal(1, test_alloc_sized_failed());
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reply_without_memory_may_have_run),
        cmocka_unit_test(test_error_without_memory_keeps_its_code),
        cmocka_unit_test(test_refused_resend_without_memory_may_have_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
