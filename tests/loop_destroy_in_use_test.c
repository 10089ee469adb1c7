/*
 * arpc_loop_destroy on a loop that a server or client the user put on it still uses (API
 * misuse: arpc/loop.h says to destroy and close them first) logs an error and leaves the loop
 * as it is, instead of freeing it under them: the server still serves and the client still
 * calls, and both go away cleanly after, then the loop (no leak, nothing used after free under
 * ASan). On the old code the loop was freed: the next call or the server's destroy used it
 * (the log assertion fails first).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "arpc/arpc.h"
#include "support/log_capture.h"
#include "support/test_util.h"

static void expect_refused(arpc_loop *loop)
{
    log_capture_start(ARPC_LOG_ERROR);
    log_capture_clear();
    arpc_loop_destroy(loop);
    assert_int_equal(1, LOG_LINES_WITH("arpc_loop_destroy", "still use this loop"));
    arpc_set_logger(NULL, NULL, ARPC_LOG_ERROR);
}

/* One echo call from c: the loop still runs. */
static void call_once(arpc_client *c)
{
    void *reply = NULL;
    size_t len = 0;
    assert_int_equal(ARPC_OK, arpc_call(c, "t.echo", "ab", 2, &reply, &len, TEST_WAIT_MS));
    assert_int_equal(2, len);
    assert_memory_equal(reply, "ab", 2);
    arpc_free(reply);
}

static void test_server_and_client_on_it(void **state)
{
    (void)state;
    arpc_loop *loop;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_start(loop));
    arpc_server_options so = {.loop = loop};
    arpc_server *s;
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    arpc_client_options co = {.loop = loop};
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &co));
    call_once(c);
    expect_refused(loop); /* two users */
    call_once(c);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    expect_refused(loop); /* the server still */
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    arpc_loop_destroy(loop); /* nobody left: freed */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_no_leak(test_server_and_client_on_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
