/*
 * A JSON-RPC client on a loop of the user's counts among the loop's users, as arpc's own
 * clients and servers do (tests/loop_destroy_in_use_test.c): arpc_loop_destroy while it is
 * connected logs an error and leaves the loop (the client still calls and closes cleanly);
 * once it is closed the loop goes. On the old code the loop was freed under the client (the
 * log assertion fails first; ASan would catch the next call).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "arpc/arpc.h"
#include "arpc/jsonrpc.h"
#include "support/log_capture.h"
#include "support/test_util.h"

static void call_once(arpc_jsonrpc_client *c)
{
    char *result = NULL;
    size_t len = 0;
    assert_int_equal(ARPC_OK, arpc_jsonrpc_call(c, "t.echo", "\"ab\"", 4, &result, &len, TEST_WAIT_MS));
    assert_non_null(result);
    arpc_free(result);
}

static void test_jsonrpc_client_on_it(void **state)
{
    (void)state;
    arpc_server *s;
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL)); /* on a loop of its own */
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    arpc_loop *loop;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_start(loop));
    arpc_jsonrpc_options o = {.loop = loop};
    arpc_jsonrpc_client *c;
    assert_int_equal(ARPC_OK, arpc_jsonrpc_connect(&c, addr, &o));
    call_once(c);
    log_capture_start(ARPC_LOG_ERROR);
    log_capture_clear();
    arpc_loop_destroy(loop);
    assert_int_equal(1, LOG_LINES_WITH("arpc_loop_destroy", "still use this loop"));
    arpc_set_logger(NULL, NULL, ARPC_LOG_ERROR);
    call_once(c); /* the loop still runs */
    assert_int_equal(ARPC_OK, arpc_jsonrpc_close(c));
    arpc_loop_destroy(loop); /* nobody left: freed */
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* A connect that fails on a user's loop leaves nothing counted: the loop goes at once. */
static void test_failed_connect_not_counted(void **state)
{
    (void)state;
    arpc_loop *loop;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_start(loop));
    arpc_jsonrpc_options o = {.loop = loop};
    arpc_jsonrpc_client *c = NULL;
    assert_int_not_equal(ARPC_OK, arpc_jsonrpc_connect(&c, "tls://127.0.0.1:1", &o));
    log_capture_start(ARPC_LOG_ERROR);
    log_capture_clear();
    arpc_loop_destroy(loop);
    assert_int_equal(0, LOG_LINES_WITH("arpc_loop_destroy"));
    arpc_set_logger(NULL, NULL, ARPC_LOG_ERROR);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_no_leak(test_jsonrpc_client_on_it),
        cmocka_unit_test_no_leak(test_failed_connect_not_counted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
