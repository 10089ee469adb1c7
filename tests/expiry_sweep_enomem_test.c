/*
 * A server with no memory to arm its reply cache's expiry sweep when it starts listening arms
 * it at the next client's HELLO, so idle clients are still forgotten (arpc_server_options
 * .client_expiry_s). Before, one failed allocation at the listen left the sweep off for the
 * server's life: every client it ever saw stayed in the cache until its goodbye (an allocation
 * sweep found it: alloc_sweep_test).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "arpc/arpc.h"
#include "support/log_capture.h"
#include "support/test_util.h"

/* The loop's deadline heap, empty until the listen, grows to 16 entries first
 * (async/deadline.c, HEAP_MIN_CAP): the sweep's arming is that growth. */
#define HEAP_FIRST_BYTES (16 * sizeof(void *))

static void test_sweep_armed_at_the_next_hello(void **state)
{
    (void)state;
    arpc_server_options so = {.client_expiry_s = 1};
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    char addr[256];
    test_alloc_fail_next_growth(HEAP_FIRST_BYTES, HEAP_FIRST_BYTES + 1);
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    test_alloc_fail_next(0, 0);
    assert_int_equal(1, test_alloc_sized_failed()); /* the growth the listen made failed */
    assert_int_equal(1, LOG_LINES_WITH("out of memory arming the reply cache's expiry sweep"));
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, NULL));
    echo_ping(c, TEST_WAIT_MS); /* an at-most-once call: its client is in the cache */
    assert_int_equal(1, SERVER_STAT(s, reply_cache_clients));
    /* Idle for a second, it is forgotten (the sweep looks every tenth of it). */
    assert_true(WAIT_UNTIL(SERVER_STAT(s, reply_cache_clients) == 0));
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

int main(void)
{
    test_alloc_sized_install();
    log_capture_start(ARPC_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sweep_armed_at_the_next_hello),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
