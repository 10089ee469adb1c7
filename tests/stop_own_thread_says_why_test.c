/*
 * arpc_server_stop and arpc_server_destroy from the server's own threads (a pool handler, an
 * inline handler on the loop) would wait for themselves: they return ARPC_EBUSY, doing
 * nothing, and now say so in a WARN line, since a "quit" method that calls destroy and drops
 * its return would otherwise leave the server serving without a word. The server is
 * unharmed: the call is answered, and a destroy from the main thread then works.
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

struct quit {
    arpc_server *server;
    int stop_rc, destroy_rc; /* written by the handler before its reply, read after the call */
};

/* A "quit" method: tries to stop and destroy its own server from inside a handler. */
static void h_quit(arpc_request *req, void *ctx)
{
    struct quit *q = ctx;
    q->stop_rc = arpc_server_stop(q->server, 0);
    q->destroy_rc = arpc_server_destroy(q->server);
    arpc_reply(req, NULL, 0);
}

static void quit_from(bool inline_on_loop, const char *addr)
{
    struct quit q = {.stop_rc = -1, .destroy_rc = -1};
    assert_int_equal(ARPC_OK, arpc_server_create(&q.server, NULL));
    arpc_method_options mo = {.inline_on_loop = inline_on_loop};
    assert_int_equal(ARPC_OK, arpc_server_register(q.server, "t.quit", h_quit, &q, &mo));
    assert_int_equal(ARPC_OK, arpc_server_listen(q.server, addr, NULL, 0));
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, NULL));
    log_capture_clear();
    assert_int_equal(ARPC_OK, arpc_call(c, "t.quit", NULL, 0, NULL, NULL, 10000));
    assert_int_equal(ARPC_EBUSY, q.stop_rc);
    assert_int_equal(ARPC_EBUSY, q.destroy_rc);
    assert_int_equal(1, LOG_LINES_WITH("arpc_server_stop refused: called on the server's own"));
    assert_int_equal(1, LOG_LINES_WITH("arpc_server_destroy refused: called on the server's own"));
    /* Still serving, and destroyed from here. */
    assert_int_equal(ARPC_OK, arpc_call(c, "t.quit", NULL, 0, NULL, NULL, 10000));
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_int_equal(ARPC_OK, arpc_server_destroy(q.server));
    log_capture_clear();
}

static void test_from_a_pool_handler(void **state)
{
    (void)state;
    quit_from(false, "inproc://stop-own-thread-pool");
}

static void test_from_an_inline_handler(void **state)
{
    (void)state;
    quit_from(true, "inproc://stop-own-thread-inline");
}

int main(void)
{
    log_capture_start(ARPC_LOG_WARN); /* before other arpc calls */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_from_a_pool_handler),
        cmocka_unit_test(test_from_an_inline_handler),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
