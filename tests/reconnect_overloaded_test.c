/*
 * A client that was connected, refused at a reconnect because the server has no room now
 * (GOAWAY ARPC_EOVERLOADED: max_connections, out of descriptors or memory), tries again after
 * its back-off and gets in once there is room: its calls wait meanwhile, within their
 * deadlines. Before, one such refusal ended the client for good (every call refused), so a
 * busy moment of the server (a restart's herd of reconnects) ended its long-lived clients.
 * A first connect is still told at once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <poll.h>

#include "arpc/arpc.h"
#include "base/clock.h"
#include "support/cut_proxy.h"
#include "support/test_util.h"

static void call_ok(arpc_client *c)
{
    void *reply = NULL;
    size_t len = 0;
    assert_int_equal(ARPC_OK, arpc_call(c, "t.echo", "hi", 2, &reply, &len, TEST_WAIT_MS));
    assert_int_equal(2, len);
    arpc_free(reply);
}

/* Until c's latest attempt was refused for want of room (bounded: only a hang reaches it). */
static bool refused_overloaded(arpc_client *c)
{
    uint64_t give_up = arpc_now_ns() + (uint64_t)TEST_WAIT_MS * 1000000u;
    while (arpc_client_last_error(c, NULL, 0) != ARPC_EOVERLOADED) {
        if (arpc_now_ns() > give_up)
            return false;
        (void)poll(NULL, 0, 1);
    }
    return true;
}

static void test_refused_reconnect_tries_again(void **state)
{
    (void)state;
    arpc_server *s = NULL;
    arpc_server_options so = {.workers = 1, .max_connections = 1};
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    char addr[256], paddr[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    struct cut_proxy *p = cut_proxy_start(addr, paddr, sizeof(paddr));
    assert_non_null(p);

    arpc_client_options bo = {.reconnect_min_ms = 5, .reconnect_max_ms = 20};
    arpc_client *b = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&b, paddr, &bo)); /* the server's one place */
    call_ok(b);
    /* b loses its connection, and its reconnects wait in the proxy while c takes the place. */
    cut_proxy_hold_new(p, true);
    assert_true(cut_proxy_cut(p) >= 1);
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, connections_open), 0, TEST_WAIT_MS));
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, NULL));
    /* A first connect is told at once: no room. */
    arpc_client *d = NULL;
    assert_int_equal(ARPC_EOVERLOADED, arpc_client_connect(&d, addr, NULL));
    cut_proxy_hold_new(p, false);
    assert_true(refused_overloaded(b)); /* b's reconnect was refused: no room */

    /* Room again: b gets in at its next attempt, and its call is answered. Before: refused
     * (the client was lost for good). */
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    call_ok(b);
    assert_int_equal(ARPC_OK, arpc_client_close(b));
    cut_proxy_stop(p);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refused_reconnect_tries_again),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
