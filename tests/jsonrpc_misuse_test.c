/*
 * A pending JSON-RPC call's future released twice (issue #10): the call holds the future until
 * it completes, so the second release must be caught instead of dropping the call's reference.
 * Debug builds abort with the misuse line (in a child that must die by SIGABRT, having tripped
 * no sanitizer); with NDEBUG the second release does nothing and the call's later completion
 * frees the future. Ordinary use in every build: released once while pending, the call goes
 * on and its callback runs when the server answers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "arpc/arpc.h"
#include "arpc/jsonrpc.h"
#include "arpc/log.h"
#include "base/alloc.h"
#include "support/death.h"
#include "support/test_util.h"

#ifdef NDEBUG
static const bool aborts_on_misuse = false;
#else
static const bool aborts_on_misuse = true;
#endif

/* Keeps its request unanswered (the call stays pending) until the test replies to g_held. */
static arpc_request *g_held; /* written before latch_add, read after latch_wait */

static void hold(arpc_request *req, void *ctx)
{
    (void)ctx;
    g_held = req;
    latch_add();
}

/* A server with T.Hold and a JSON-RPC client connected to it (NULL on failure). */
static arpc_jsonrpc_client *jsonrpc_pair(arpc_server **s)
{
    char addr[128];
    if (arpc_server_create(s, NULL) != ARPC_OK || arpc_server_register(*s, "T.Hold", hold, NULL, NULL) != ARPC_OK ||
        arpc_server_listen(*s, "tcp://127.0.0.1:0", addr, sizeof(addr)) != ARPC_OK)
        return NULL;
    arpc_jsonrpc_client *c = NULL;
    return arpc_jsonrpc_connect(&c, addr, NULL) == ARPC_OK ? c : NULL;
}

/* A call the server's handler holds: pending until g_held is answered (NULL on failure). */
static arpc_future *held_call(arpc_jsonrpc_client *c)
{
    latch_reset();
    arpc_future *f = arpc_jsonrpc_call_async(c, "T.Hold", "[1]", 3, 0);
    if (f != NULL && latch_wait(1, TEST_WAIT_MS) && arpc_future_poll(f) == ARPC_EPENDING)
        return f;
    return NULL;
}

static void pending_call_released_twice(void *arg)
{
    (void)arg;
    arpc_server *s;
    arpc_jsonrpc_client *c = jsonrpc_pair(&s);
    arpc_future *f = c != NULL ? held_call(c) : NULL;
    if (f == NULL)
        return; /* not the misuse under test: the child exits 0 and the test fails */
    arpc_future_release(f);
    arpc_future_release(f);
}

static void count_done(arpc_future *f, void *arg)
{
    (void)arg;
    CHECK(arpc_future_poll(f) == ARPC_OK); /* a callback borrows f, though no user holds it */
    size_t len = 0;
    const char *d = arpc_future_data(f, &len);
    CHECK(d != NULL && len == 4 && memcmp(d, "true", 4) == 0);
    latch_add();
}

static void test_pending_released_twice(void **state)
{
    (void)state;
    bool twice = !aborts_on_misuse;
    if (aborts_on_misuse)
        assert_true(dies_with_abort(pending_call_released_twice, NULL, "arpc_future_release on 0x"));
    else
        arpc_set_logger(NULL, NULL, ARPC_LOG_NONE); /* the report is expected */
    arpc_server *s;
    arpc_jsonrpc_client *c = jsonrpc_pair(&s);
    assert_non_null(c);
    arpc_future *f = held_call(c);
    assert_non_null(f);
    assert_int_equal(ARPC_OK, arpc_future_then(f, count_done, NULL));
    arpc_future_release(f);
    if (twice)
        arpc_future_release(f);
    assert_int_equal(ARPC_OK, arpc_reply(g_held, "true", 4));
    assert_true(latch_wait(2, TEST_WAIT_MS)); /* the hold, then the callback */
    assert_int_equal(ARPC_OK, arpc_jsonrpc_close(c));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    arpc_set_logger(NULL, NULL, ARPC_LOG_INFO);
    assert_int_equal(0, atomic_load(&bad_line));
}

/* A then-callback that the close's completions run calls again (a retry): refused
 * ARPC_ESHUTDOWN while the close runs, as the arpc client's (it aborted: "not a live JSON-RPC
 * client"; a review of re-entrant calls). */
struct retry {
    arpc_jsonrpc_client *c;
    atomic_int async_rc; /* the retry's future's status */
    atomic_int call_rc;  /* the blocking retry's */
};

static void retry_when_ended(arpc_future *f, void *arg)
{
    struct retry *r = arg;
    (void)f;
    arpc_future *again = arpc_jsonrpc_call_async(r->c, "T.Hold", "[2]", 3, 0);
    atomic_store(&r->async_rc, again != NULL ? arpc_future_poll(again) : ARPC_ENOMEM);
    arpc_future_release(again);
    atomic_store(&r->call_rc, arpc_jsonrpc_call(r->c, "T.Hold", "[3]", 3, NULL, NULL, 0));
}

static void test_retry_from_a_callback_of_close(void **state)
{
    (void)state;
    arpc_server *s;
    arpc_jsonrpc_client *c = jsonrpc_pair(&s);
    assert_non_null(c);
    arpc_future *f = held_call(c);
    assert_non_null(f);
    struct retry r = {.c = c, .async_rc = -1, .call_rc = -1};
    assert_int_equal(ARPC_OK, arpc_future_then(f, retry_when_ended, &r));
    assert_int_equal(ARPC_OK, arpc_jsonrpc_close(c));
    assert_int_equal(ARPC_ECANCELLED, arpc_future_wait(f));
    assert_int_equal(ARPC_ESHUTDOWN, atomic_load(&r.async_rc));
    assert_int_equal(ARPC_ESHUTDOWN, atomic_load(&r.call_rc));
    arpc_future_release(f);
    assert_int_equal(ARPC_OK, arpc_reply(g_held, "true", 4)); /* to a caller gone: dropped */
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* A call started after close: the handle check reports it before the call counts itself in
 * (core/jsonrpc_client.c, client_enter), so nothing is written into the freed client. */
static void called_after_close(void *arg)
{
    bool async = arg != NULL;
    arpc_server *s;
    arpc_jsonrpc_client *c = jsonrpc_pair(&s);
    if (c == NULL || arpc_jsonrpc_close(c) != ARPC_OK)
        return; /* not the misuse under test: the child exits 0 and the test fails */
    if (async)
        arpc_future_release(arpc_jsonrpc_call_async(c, "T.Hold", "[1]", 3, 0));
    else
        arpc_jsonrpc_call(c, "T.Hold", "[1]", 3, NULL, NULL, 0);
}

static void test_called_after_close(void **state)
{
    (void)state;
    if (!aborts_on_misuse)
        skip(); /* the client is freed: only a debug build's abort makes this defined */
#if defined(__SANITIZE_THREAD__)
    skip(); /* the check reads the freed block's first word: TSan may report that read */
#endif
    assert_true(dies_with_abort(called_after_close, NULL, "arpc_jsonrpc_call on 0x"));
    assert_true(dies_with_abort(called_after_close, "async", "arpc_jsonrpc_call_async on 0x"));
}

/* The producer's side of a future on a call's future: the client alone completes it and
 * hears of its cancel (as misuse_call_future_test checks for the arpc client). A call's
 * record counts on its cancel hook running whenever its own completion loses; a completion by
 * hand, or another hook, left the record and the close waiting for ever. */
static void complete_call_future(void *arg)
{
    (void)arg;
    arpc_server *s;
    arpc_jsonrpc_client *c = jsonrpc_pair(&s);
    arpc_future *f = c != NULL ? held_call(c) : NULL;
    if (f == NULL)
        return; /* not the misuse under test: the child exits 0 and the test fails */
    arpc_future_complete(f, ARPC_OK, NULL, 0);
}

static void close_jsonrpc(void *arg) { CHECK(arpc_jsonrpc_close(arg) == ARPC_OK); }

static void test_complete_by_hand(void **state)
{
    (void)state;
    if (aborts_on_misuse) {
        assert_true(dies_with_abort(complete_call_future, NULL, "arpc_future_complete on 0x"));
        return;
    }
    arpc_set_logger(NULL, NULL, ARPC_LOG_NONE); /* the report is expected */
    arpc_server *s;
    arpc_jsonrpc_client *c = jsonrpc_pair(&s);
    assert_non_null(c);
    arpc_future *f = held_call(c);
    assert_non_null(f);
    char *data = arpc_malloc(4);
    assert_non_null(data);
    assert_false(arpc_future_complete(f, ARPC_EHANDLER, data, 4)); /* refused, data freed */
    assert_int_equal(ARPC_OK, arpc_reply(g_held, "true", 4));
    assert_int_equal(ARPC_OK, arpc_future_wait_for(f, TEST_WAIT_MS)); /* the server's answer */
    arpc_future_release(f);
    assert_true(thread_ends_within(close_jsonrpc, c, TEST_WAIT_S));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    arpc_set_logger(NULL, NULL, ARPC_LOG_INFO);
    assert_int_equal(0, atomic_load(&bad_line));
}

static int hooked;

static void foreign_hook(arpc_future *f, void *arg)
{
    (void)f;
    (void)arg;
    hooked++;
}

/* Another cancel hook is logged and ignored: the client's still runs, so the close ends. */
static void test_foreign_cancel_hook(void **state)
{
    (void)state;
    arpc_set_logger(NULL, NULL, ARPC_LOG_NONE); /* the report is expected */
    arpc_server *s;
    arpc_jsonrpc_client *c = jsonrpc_pair(&s);
    assert_non_null(c);
    arpc_future *f = held_call(c);
    assert_non_null(f);
    arpc_future_on_cancel(f, foreign_hook, NULL);
    assert_true(arpc_future_cancel(f));
    assert_int_equal(0, hooked);
    arpc_future_release(f);
    assert_int_equal(ARPC_OK, arpc_reply(g_held, "true", 4)); /* its answer finds it cancelled */
    assert_true(thread_ends_within(close_jsonrpc, c, TEST_WAIT_S));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    arpc_set_logger(NULL, NULL, ARPC_LOG_INFO);
}

int main(void)
{
    test_alloc_install();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_no_leak(test_pending_released_twice),
        cmocka_unit_test_no_leak(test_called_after_close),
        cmocka_unit_test_no_leak(test_retry_from_a_callback_of_close),
        cmocka_unit_test_no_leak(test_complete_by_hand),
        cmocka_unit_test_no_leak(test_foreign_cancel_hook),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
