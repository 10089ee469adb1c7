/*
 * A connection is not used without the timers that guard it. Without memory to arm its
 * heartbeat (the loop's deadline heap must grow), a client's connection would never notice a
 * path gone silent, and a call without a deadline on it would wait for ever (review 236: it
 * logged "it runs without one" and went on); a server's would keep a silent client's place
 * for ever; and without the server's limits' sweep, a stranger that says nothing would hold
 * its connection past every timeout. Now such a connection is closed: the client's attempt
 * fails "out of memory for the connection" (its calls wait for the next attempt, as after any
 * failed one), and the server refuses with GOAWAY(ARPC_EOVERLOADED).
 *
 * The arming is made to fail by wrapping arpc_deadline_arm_after_s at link time
 * (-Wl,--wrap=arpc_deadline_arm_after_s, tests/CMakeLists.txt) for the deadlines named only:
 * the heap grows too seldom for an allocator fault to aim at them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "arpc/arpc.h"
#include "async/loop_internal.h"
#include "core/conn.h"
#include "core/server_internal.h"
#include "support/cut_proxy.h"
#include "support/log_capture.h"
#include "support/test_util.h"

int __real_arpc_deadline_arm_after_s(arpc_loop *loop, struct arpc_deadline *d, double seconds);
int __wrap_arpc_deadline_arm_after_s(arpc_loop *loop, struct arpc_deadline *d, double seconds);

enum fail_what { FAIL_NONE, FAIL_CLIENT_HEARTBEATS, FAIL_SERVER_HEARTBEATS, FAIL_SERVER_LIMITS };
static atomic_int failing = FAIL_NONE;
static _Atomic(arpc_loop *) server_loop;
static atomic_int armings_failed;

/* A connection's heartbeat deadline: the one whose argument is the connection holding it. */
static bool is_heartbeat(const struct arpc_deadline *d)
{
    return (const char *)d - offsetof(struct arpc_conn, c_hb) == (const char *)d->d_arg;
}

static bool fails(arpc_loop *loop, const struct arpc_deadline *d)
{
    arpc_loop *sl = atomic_load(&server_loop);
    switch (atomic_load(&failing)) {
    case FAIL_CLIENT_HEARTBEATS:
        return loop != sl && is_heartbeat(d);
    case FAIL_SERVER_HEARTBEATS:
        return loop == sl && is_heartbeat(d);
    case FAIL_SERVER_LIMITS:
        return loop == sl && d->d_arg != NULL &&
               d == &((arpc_server *)d->d_arg)->sv_limits; /* (its argument is the server) */
    default:
        return false;
    }
}

int __wrap_arpc_deadline_arm_after_s(arpc_loop *loop, struct arpc_deadline *d, double seconds)
{
    if (fails(loop, d)) {
        atomic_fetch_add(&armings_failed, 1);
        return ARPC_ENOMEM;
    }
    return __real_arpc_deadline_arm_after_s(loop, d, seconds);
}

static arpc_server *server_start(const arpc_server_options *so, char *addr, size_t addrlen)
{
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, addrlen));
    atomic_store(&server_loop, s->sv_loop);
    return s;
}

static void fail_start(enum fail_what what)
{
    atomic_store(&armings_failed, 0);
    atomic_store(&failing, what);
}

/* The client's connection has no heartbeat: the attempt fails, said, with a connect timeout
 * (armed at the HELLO) and without one (armed at the connect); once memory is back, a
 * connect works. */
static void test_client_connection_without_heartbeat_is_not_used(void **state)
{
    (void)state;
    char addr[256], why[512];
    arpc_server *s = server_start(NULL, addr, sizeof(addr));
    int64_t timeouts[] = {0, ARPC_FOREVER};
    for (size_t i = 0; i < 2; i++) {
        arpc_client_options co = {.connect_timeout_ms = timeouts[i], .errbuf = why, .errbuf_len = sizeof(why)};
        arpc_client *c = NULL;
        fail_start(FAIL_CLIENT_HEARTBEATS);
        assert_int_equal(ARPC_ENOMEM, arpc_client_connect(&c, addr, &co));
        assert_null(c);
        assert_non_null(strstr(why, "out of memory for the connection"));
        assert_true(atomic_load(&armings_failed) >= 1);
        fail_start(FAIL_NONE);
        assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &co));
        echo_ping(c, TEST_WAIT_MS);
        assert_int_equal(ARPC_OK, arpc_client_close(c));
    }
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* A call without a deadline, its connection cut while reconnects find no memory for their
 * heartbeat: it waits for a usable connection (it does not go out on an unguarded one), and
 * ends OK once memory is back. */
static void test_call_waits_for_a_guarded_connection(void **state)
{
    (void)state;
    char saddr[256], paddr[256];
    arpc_server *s = server_start(NULL, saddr, sizeof(saddr));
    struct cut_proxy *p = cut_proxy_start(saddr, paddr, sizeof(paddr));
    assert_non_null(p);
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, paddr, NULL));
    echo_ping(c, TEST_WAIT_MS);
    fail_start(FAIL_CLIENT_HEARTBEATS);
    assert_true(cut_proxy_cut(p) >= 1);
    arpc_future *f = arpc_call_async(c, "t.echo", "ping", 4, 0);
    assert_non_null(f);
    assert_true(WAIT_UNTIL(atomic_load(&armings_failed) >= 2)); /* two attempts refused */
    assert_int_equal(ARPC_EPENDING, arpc_future_poll(f));
    char why[512];
    arpc_client_last_error(c, why, sizeof(why));
    assert_non_null(strstr(why, "out of memory for the connection"));
    fail_start(FAIL_NONE);
    assert_int_equal(ARPC_OK, arpc_future_wait_for(f, TEST_WAIT_MS));
    size_t len = 0;
    const void *data = arpc_future_data(f, &len);
    assert_int_equal(4, len);
    assert_memory_equal("ping", data, 4);
    arpc_future_release(f);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    cut_proxy_stop(p);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* The server's side: no heartbeat for the connection, or no limits' sweep at all: refused,
 * GOAWAY(ARPC_EOVERLOADED) with its words; once memory is back, connects work. */
static void test_server_refuses_an_unguarded_connection(void **state)
{
    (void)state;
    enum fail_what cases[] = {FAIL_SERVER_HEARTBEATS, FAIL_SERVER_LIMITS};
    for (size_t i = 0; i < 2; i++) {
        char addr[256], why[512];
        arpc_server_options so = {.handshake_timeout_ms = 2000};
        arpc_server *s = server_start(&so, addr, sizeof(addr));
        arpc_client_options co = {.no_reconnect = true, .errbuf = why, .errbuf_len = sizeof(why)};
        arpc_client *c = NULL;
        fail_start(cases[i]);
        assert_int_equal(ARPC_EOVERLOADED, arpc_client_connect(&c, addr, &co));
        assert_non_null(strstr(why, "server out of memory for the connection"));
        assert_true(atomic_load(&armings_failed) >= 1);
        assert_true(WAIT_UNTIL(SERVER_STAT(s, connections_open) == 0));
        fail_start(FAIL_NONE);
        assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &co));
        echo_ping(c, TEST_WAIT_MS);
        assert_int_equal(ARPC_OK, arpc_client_close(c));
        assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    }
}

int main(void)
{
    log_capture_start(ARPC_LOG_INFO);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_client_connection_without_heartbeat_is_not_used),
        cmocka_unit_test(test_call_waits_for_a_guarded_connection),
        cmocka_unit_test(test_server_refuses_an_unguarded_connection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
