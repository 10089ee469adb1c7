/*
 * A reconnecting client with no memory to arm the timer of its next attempt: no connection
 * comes by itself, so the calls waiting end at once -- a call sent before the loss
 * ARPC_ECONNLOST (it may have run), one never sent ARPC_EUNREACHABLE (did not run), and
 * arpc_client_last_error says why -- and the client parks: its next call starts an attempt,
 * and once memory is back it connects. Before, it logged "calls end by their deadlines" and a
 * call without a deadline waited for ever.
 *
 * The arming is made to fail by wrapping arpc_deadline_arm at link time
 * (-Wl,--wrap=arpc_deadline_arm, tests/CMakeLists.txt) for the client's connect timer only:
 * the deadline heap grows seldom enough that an allocator fault cannot aim at that arming.
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
#include "core/client_internal.h"
#include "support/cut_proxy.h"
#include "support/log_capture.h"
#include "support/test_util.h"

int __real_arpc_deadline_arm(arpc_loop *loop, struct arpc_deadline *d, uint64_t when_ns);
int __wrap_arpc_deadline_arm(arpc_loop *loop, struct arpc_deadline *d, uint64_t when_ns);

static _Atomic(struct arpc_deadline *) fail_arming_of;
static atomic_int armings_failed;

int __wrap_arpc_deadline_arm(arpc_loop *loop, struct arpc_deadline *d, uint64_t when_ns)
{
    if (d == atomic_load(&fail_arming_of)) {
        atomic_fetch_add(&armings_failed, 1);
        return ARPC_ENOMEM;
    }
    return __real_arpc_deadline_arm(loop, d, when_ns);
}

static _Atomic(arpc_request *) held;

/* Never replies while the test runs: the call is outstanding when its connection is cut. */
static void hold_handler(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_store(&held, req);
}

static void test_no_memory_for_the_back_off_ends_every_call(void **state)
{
    (void)state;
    arpc_server *s;
    char saddr[256], paddr[256];
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.hold", hold_handler, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", saddr, sizeof(saddr)));
    struct cut_proxy *p = cut_proxy_start(saddr, paddr, sizeof(paddr));
    assert_non_null(p);
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, paddr, NULL));
    echo_ping(c, TEST_WAIT_MS);

    /* No deadline: before, nothing but the back-off timer could have ended it. */
    arpc_future *f = arpc_call_async(c, "t.hold", "x", 1, 0);
    assert_non_null(f);
    assert_true(WAIT_UNTIL(atomic_load(&held) != NULL));
    atomic_store(&fail_arming_of, &c->cl_connector.cn_timer);
    log_capture_clear();
    assert_true(cut_proxy_cut(p) >= 1);

    assert_int_equal(ARPC_ECONNLOST, arpc_future_wait_for(f, TEST_WAIT_MS)); /* sent: it may have run */
    arpc_future_release(f);
    assert_true(atomic_load(&armings_failed) >= 1);
    assert_true(LOG_LINES_WITH("out of memory arming the reconnect back-off", paddr, "the next call tries again") >= 1);

    /* A later call starts an attempt, whose own timer finds no memory either: it ends at once
     * (did not run) and says why. */
    size_t len = 0;
    void *out = NULL;
    assert_int_equal(ARPC_EUNREACHABLE, arpc_call(c, "t.echo", "y", 1, &out, &len, TEST_WAIT_MS));
    free(out);
    char why[512];
    arpc_client_last_error(c, why, sizeof(why));
    assert_non_null(strstr(why, "out of memory arming the"));

    /* Memory is back: the next call connects, and runs. */
    atomic_store(&fail_arming_of, NULL);
    echo_ping(c, TEST_WAIT_MS);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    cut_proxy_stop(p);
    assert_int_equal(ARPC_OK, arpc_reply(atomic_load(&held), NULL, 0)); /* its client is gone */
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

static atomic_int notes_run;

static void note_handler(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&notes_run, 1);
    arpc_reply(req, NULL, 0); /* finishes a one-way request */
}

/* A one-way message made while the client is parked (its idle connection closed by the
 * server) is held for the next connection, at most reconnect_give_up_ms: the give-up timer
 * drops it then. With no memory to arm that timer it is dropped at once, counted and said:
 * held without one, it could wait, and go out, long after its bound. */
static void test_no_memory_for_a_held_message_give_up_drops_it(void **state)
{
    (void)state;
    arpc_server_options so = {.idle_timeout_ms = 200};
    arpc_server *s;
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.note", note_handler, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, NULL));
    log_capture_clear();
    echo_ping(c, TEST_WAIT_MS);
    assert_true(WAIT_UNTIL(LOG_LINES_WITH("closed the idle connection; reconnecting at the next call") == 1));
    atomic_store(&fail_arming_of, &c->cl_give_up_timer);
    assert_int_equal(ARPC_OK, arpc_notify(c, "t.note", "n", 1));
    assert_true(WAIT_UNTIL(CLIENT_STAT(c, oneways_dropped) == 1));
    assert_int_equal(1, LOG_LINES_WITH("one-way message dropped unsent"));
    atomic_store(&fail_arming_of, NULL);
    echo_ping(c, TEST_WAIT_MS); /* reconnects: the message was not held for it */
    assert_int_equal(0, atomic_load(&notes_run));
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

int main(void)
{
    log_capture_start(ARPC_LOG_INFO);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_memory_for_the_back_off_ends_every_call),
        cmocka_unit_test(test_no_memory_for_a_held_message_give_up_drops_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
