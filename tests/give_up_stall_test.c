/*
 * A client whose loop could not run for longer than reconnect_give_up_ms (the process stopped,
 * a VM paused) while its calls waited for a connection: when the loop runs again, the give-up
 * time is long past and the back-off's next attempt is due as well. The calls used to end at
 * once, ARPC_EUNREACHABLE with the error of the attempt made before the stall, though the
 * server was back and the next call connected at once (a trial of extreme values and time).
 * Now that attempt comes first, and the waiting call is sent on it.
 *
 * A caller-driven loop is the stall here: nothing runs it while the test sleeps (the sleep is
 * the stall under test, not a wait for something). Before it, the loop is driven until the
 * client has failed an attempt (its last error says so), well inside the give-up time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "arpc/arpc.h"
#include "support/test_util.h"

#define GIVE_UP_MS 2000
#define STALL_MS (GIVE_UP_MS + 1500) /* past the give-up by more than the 500 ms that counts as a stall */

static arpc_server *serve(const char *listen, char *addr, size_t len)
{
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, listen, addr, len));
    return s;
}

static void test_stalled_loop_tries_once_before_giving_up(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = serve("tcp://127.0.0.1:0", addr, sizeof(addr));
    arpc_loop *loop;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
    arpc_client_options co = {.loop = loop, .reconnect_give_up_ms = GIVE_UP_MS, .reconnect_min_ms = 50,
                              .reconnect_max_ms = 50};
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &co));
    assert_int_equal(ARPC_OK, arpc_call(c, "t.echo", "x", 1, NULL, NULL, TEST_WAIT_MS));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    arpc_future *f = arpc_call_async(c, "t.echo", "y", 1, 60000);
    assert_non_null(f);
    /* Driven until an attempt to reconnect failed: the call waits, its give-up time ahead. */
    char why[ARPC_ERRBUF_SIZE] = "";
    int64_t until = now_ms() + TEST_WAIT_MS;
    while (strstr(why, "refused") == NULL && now_ms() < until) {
        assert_int_equal(ARPC_EPENDING, arpc_loop_run_until(loop, f, 10));
        arpc_client_last_error(c, why, sizeof(why));
    }
    assert_non_null(strstr(why, "refused"));
    assert_int_equal(ARPC_EPENDING, arpc_future_poll(f));
    sleep_ms(STALL_MS); /* the stall: nothing runs the client's loop */
    char again[256];
    s = serve(addr, again, sizeof(again)); /* back, at the same address */
    assert_int_equal(ARPC_OK, arpc_loop_run_until(loop, f, TEST_WAIT_MS));
    assert_int_equal(ARPC_OK, arpc_future_poll(f));
    arpc_future_release(f);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    arpc_loop_destroy(loop);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stalled_loop_tries_once_before_giving_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
