/*
 * A then-callback that close's completions run may start a call on the closing client (a
 * retry is the natural thing for it to do): the call is refused ARPC_ESHUTDOWN ("the client is
 * closing"), not sent, and nothing aborts. Before, the client's handle was dead from the
 * moment close began, so the callback's arpc_call_async was misuse: an ERROR line saying the
 * client was "already closed", then abort() in debug builds (a new user's trial); and so did
 * arpc_client_last_error, which a failure callback may well ask. After close returns, any use
 * of the handle is still misuse (misuse_handles_test).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "arpc/arpc.h"
#include "support/test_util.h"

static arpc_request *_Atomic never_answered;

static void h_never(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_store(&never_answered, req); /* answered by the server's stop (ARPC_EABANDONED) */
    latch_add();
}

struct retry {
    arpc_client *r_client;
    arpc_cq *r_cq;
    atomic_int r_first;   /* the held call's outcome */
    atomic_int r_retried; /* the retry's, as its future said at once */
    atomic_int r_notify;
    atomic_int r_go;
    char r_why[128];
};

static void retry_cb(arpc_future *f, void *arg)
{
    struct retry *r = arg;
    atomic_store(&r->r_first, arpc_future_poll(f));
    /* What a failure callback asks of its client answers while the close runs. */
    char err[256];
    (void)arpc_client_last_error(r->r_client, err, sizeof(err));
    (void)arpc_client_pending(r->r_client);
    (void)arpc_client_id(r->r_client);
    arpc_future *again = arpc_call_async(r->r_client, "t.never", "x", 1, TEST_WAIT_MS);
    assert_non_null(again);
    atomic_store(&r->r_retried, arpc_future_poll(again));
    size_t len = 0;
    const char *why = arpc_future_data(again, &len);
    snprintf(r->r_why, sizeof(r->r_why), "%.*s", (int)len, why != NULL ? why : "");
    arpc_future_release(again);
    atomic_store(&r->r_notify, arpc_notify(r->r_client, "t.never", "x", 1));
    atomic_store(&r->r_go, arpc_go(r->r_client, "t.never", "x", 1, TEST_WAIT_MS, r->r_cq, r));
}

static void test_a_callback_retrying_during_close_is_refused(void **state)
{
    (void)state;
    arpc_server *s = NULL;
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.never", h_never, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    static struct retry r;
    latch_reset();
    atomic_init(&r.r_first, ARPC_EPENDING);
    atomic_init(&r.r_retried, ARPC_EPENDING);
    assert_int_equal(ARPC_OK, arpc_client_connect(&r.r_client, addr, NULL));
    assert_int_equal(ARPC_OK, arpc_cq_create(&r.r_cq));
    arpc_future *f = arpc_call_async(r.r_client, "t.never", "x", 1, 0);
    assert_non_null(f);
    assert_int_equal(ARPC_OK, arpc_future_then(f, retry_cb, &r));
    assert_true(latch_wait(1, TEST_WAIT_MS)); /* the call runs: it was sent */
    assert_int_equal(ARPC_OK, arpc_client_close(r.r_client));
    assert_int_equal(ARPC_ECANCELLED, atomic_load(&r.r_first)); /* sent: it may run */
    assert_int_equal(ARPC_ESHUTDOWN, atomic_load(&r.r_retried)); /* not sent, refused at once */
    if (strstr(r.r_why, "closing") == NULL)
        fail_msg("the refusal does not say why: \"%s\"", r.r_why);
    assert_int_equal(ARPC_ESHUTDOWN, atomic_load(&r.r_notify));
    assert_int_equal(ARPC_OK, atomic_load(&r.r_go)); /* its outcome through the queue: */
    arpc_future *done = NULL;
    void *tag = NULL;
    assert_int_equal(ARPC_OK, arpc_cq_next_for(r.r_cq, TEST_WAIT_MS, &done, &tag));
    assert_ptr_equal(&r, tag);
    assert_int_equal(ARPC_ESHUTDOWN, arpc_future_poll(done));
    arpc_future_release(done);
    arpc_future_release(f);
    arpc_cq_destroy(r.r_cq);
    assert_int_equal(ARPC_OK, arpc_server_stop(s, 0));
    arpc_reply(atomic_load(&never_answered), NULL, 0); /* late, dropped: the handle is let go */
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_callback_retrying_during_close_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
