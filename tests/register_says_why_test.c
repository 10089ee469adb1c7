/*
 * arpc_server_register has no errbuf and answers most mistakes with ARPC_EINVAL: each refusal
 * logs one line naming the method and the rule it broke, so a user need not guess which
 * (a reserved "arpc." name, a handler missing, options that exclude one another, a name
 * taken, registering after listen or after a stop). A good registration logs nothing.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "arpc/arpc.h"
#include "support/log_capture.h"

/* Exactly one line was logged since the last clear, and it holds both words. */
static void assert_one_line_with(const char *a, const char *b)
{
    size_t n = log_capture_count(), has = LOG_LINES_WITH(a, b);
    if (n != 1 || has != 1)
        log_capture_print();
    assert_int_equal(1, n);
    assert_int_equal(1, has);
    log_capture_clear();
}

static void h_ok(arpc_request *req, void *ctx)
{
    (void)ctx;
    arpc_reply(req, NULL, 0);
}

static void test_each_refusal_says_why(void **state)
{
    (void)state;
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL));
    arpc_actor *actor;
    assert_int_equal(ARPC_OK, arpc_actor_create(&actor, NULL));
    arpc_cq *cq;
    assert_int_equal(ARPC_OK, arpc_cq_create(&cq));
    log_capture_clear();

    assert_int_equal(ARPC_EINVAL, arpc_server_register(s, "", h_ok, NULL, NULL));
    assert_one_line_with("cannot register method \"\"", "empty");
    assert_int_equal(ARPC_EINVAL, arpc_server_register(s, "arpc.ping", h_ok, NULL, NULL));
    assert_one_line_with("\"arpc.ping\"", "built-in");
    assert_int_equal(ARPC_EINVAL, arpc_server_register(s, "t.none", NULL, NULL, NULL));
    assert_one_line_with("\"t.none\"", "no handler");
    arpc_method_options both = {.actor = actor, .inline_on_loop = true};
    assert_int_equal(ARPC_EINVAL, arpc_server_register(s, "t.both", h_ok, NULL, &both));
    assert_one_line_with("\"t.both\"", "exclude one another");
    arpc_method_options queue_and_fn = {.queue = cq};
    assert_int_equal(ARPC_EINVAL, arpc_server_register(s, "t.queue", h_ok, NULL, &queue_and_fn));
    assert_one_line_with("\"t.queue\"", "queue takes no fn");

    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.ok", h_ok, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.queued", NULL, NULL, &queue_and_fn));
    assert_int_equal(0, log_capture_count()); /* a good registration is quiet */
    assert_int_equal(ARPC_EBUSY, arpc_server_register(s, "t.ok", h_ok, NULL, NULL));
    assert_one_line_with("\"t.ok\"", "registered already");

    assert_int_equal(ARPC_OK, arpc_server_listen(s, "inproc://register-says-why", NULL, 0));
    log_capture_clear();
    assert_int_equal(ARPC_EBUSY, arpc_server_register(s, "t.late", h_ok, NULL, NULL));
    assert_one_line_with("\"t.late\"", "before the first arpc_server_listen");

    /* Stopped: not "already listens" (a server stopped before any listen never did). */
    assert_int_equal(ARPC_OK, arpc_server_stop(s, 0));
    log_capture_clear();
    assert_int_equal(ARPC_ESHUTDOWN, arpc_server_register(s, "t.stopped", h_ok, NULL, NULL));
    assert_one_line_with("\"t.stopped\"", "the server is stopping or stopped");

    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    arpc_actor_destroy(actor);
    arpc_cq_destroy(cq);
    log_capture_clear();
}

int main(void)
{
    log_capture_start(ARPC_LOG_WARN); /* before other arpc calls */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_refusal_says_why),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
