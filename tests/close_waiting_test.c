/*
 * Calls waiting to be retried (on the client's waiting list: their connection broke, no new one
 * came) end with the codes arpc/client.h promises when the client closes or its loop stops:
 * sent before (at-most-once, at-least-once) ARPC_ECANCELLED ("may run"), never sent
 * ARPC_ESHUTDOWN ("did not run"); a no-retry call ended ARPC_ECONNLOST at the break. And a
 * retry the server had attached to a running call when it stopped is not answered
 * ARPC_EABANDONED: the stop disarms it and closes its connection, so the client's call waits
 * again, and ends by the client's close (ARPC_ECANCELLED) or its give-up (ARPC_ECONNLOST).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <semaphore.h>
#include <sched.h>
#include <signal.h>

#include "arpc/arpc.h"
#include "arpc/stats.h"
#include "support/cut_proxy.h"
#include "support/test_util.h"

static pthread_mutex_t held_mu = PTHREAD_MUTEX_INITIALIZER;
static arpc_request *held[16]; /* answered at teardown */
static size_t nheld;

static void h_echo(arpc_request *req, void *ctx)
{
    (void)ctx;
    arpc_reply(req, "", 0);
}

static size_t held_count(void)
{
    pthread_mutex_lock(&held_mu);
    size_t n = nheld;
    pthread_mutex_unlock(&held_mu);
    return n;
}

static void h_hold(arpc_request *req, void *ctx)
{
    (void)ctx;
    pthread_mutex_lock(&held_mu);
    if (nheld < sizeof(held) / sizeof(held[0]))
        held[nheld++] = req;
    else
        arpc_reply(req, "", 0);
    pthread_mutex_unlock(&held_mu);
    latch_add();
}

struct fixture {
    arpc_server *s;
    struct cut_proxy *proxy; /* the client's way to the server: cut, then stopped */
    char saddr[256], paddr[256];
};

static int setup(void **state)
{
    static struct fixture fx;
    latch_reset();
    nheld = 0;
    arpc_method_options in = {.inline_on_loop = true};
    if (arpc_server_create(&fx.s, NULL) != ARPC_OK || arpc_server_register(fx.s, "t.hold", h_hold, NULL, NULL) != ARPC_OK ||
        arpc_server_register(fx.s, "t.echo", h_echo, NULL, &in) != ARPC_OK ||
        arpc_server_listen(fx.s, "tcp://127.0.0.1:0", fx.saddr, sizeof(fx.saddr)) != ARPC_OK ||
        (fx.proxy = cut_proxy_start(fx.saddr, fx.paddr, sizeof(fx.paddr))) == NULL)
        return -1;
    *state = &fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    if (fx->proxy != NULL)
        cut_proxy_stop(fx->proxy);
    pthread_mutex_lock(&held_mu);
    for (size_t i = 0; i < nheld; i++)
        arpc_reply(held[i], "", 0); /* dropped (ARPC_ESHUTDOWN) after a stop: fine */
    nheld = 0;
    pthread_mutex_unlock(&held_mu);
    arpc_server_destroy(fx->s);
    return 0;
}

enum { AMO, ALO, NORETRY, UNSENT, NCALLS };

/* Three calls sent and held by the server; the path cut and gone for good (reconnecting is
 * refused); then a call started with no connection. Every one but the no-retry call waits. */
static void calls_waiting(struct fixture *fx, arpc_client *c, arpc_future *fs[NCALLS])
{
    static const enum arpc_call_semantics sem[3] = {ARPC_AT_MOST_ONCE, ARPC_AT_LEAST_ONCE, ARPC_NO_RETRY};
    for (int i = 0; i < 3; i++) {
        arpc_call_options o = {.deadline_ms = ARPC_FOREVER, .semantics = sem[i]};
        assert_non_null(fs[i] = arpc_call_async_opts(c, "t.hold", "x", 1, &o));
    }
    assert_true(latch_wait(3, TEST_WAIT_MS)); /* all three reached the server */
    cut_proxy_stop(fx->proxy);         /* cut, and no listener any more */
    fx->proxy = NULL;
    /* The break ends the no-retry call and puts the others back to waiting, in one loop turn. */
    assert_int_equal(ARPC_ECONNLOST, arpc_future_wait_for(fs[NORETRY], 10000));
    assert_non_null(fs[UNSENT] = arpc_call_async(c, "t.hold", "x", 1, ARPC_FOREVER));
    assert_int_equal(ARPC_EPENDING, arpc_future_poll(fs[AMO]));
    assert_int_equal(ARPC_EPENDING, arpc_future_poll(fs[ALO]));
}

static void expect_ended_as_at_close(arpc_future *fs[NCALLS])
{
    /* Bounded waits as a watchdog only: each must already be complete, or complete soon. */
    assert_int_equal(ARPC_ECANCELLED, arpc_future_wait_for(fs[AMO], 10000));
    assert_int_equal(ARPC_ECANCELLED, arpc_future_wait_for(fs[ALO], 10000));
    assert_int_equal(ARPC_ECONNLOST, arpc_future_wait_for(fs[NORETRY], 10000));
    assert_int_equal(ARPC_ESHUTDOWN, arpc_future_wait_for(fs[UNSENT], 10000));
    for (int i = 0; i < NCALLS; i++)
        arpc_future_release(fs[i]);
}

static const arpc_client_options waiting_opts = {
    .reconnect_min_ms = 5, .reconnect_max_ms = 20, .reconnect_give_up_ms = ARPC_FOREVER,
};

static void test_close_ends_waiting_calls(void **state)
{
    struct fixture *fx = *state;
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, fx->paddr, &waiting_opts));
    arpc_future *fs[NCALLS];
    calls_waiting(fx, c, fs);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    expect_ended_as_at_close(fs);
}

/* The client's loop (the application's, started) stops: as at close. */
static void test_loop_stop_ends_waiting_calls(void **state)
{
    struct fixture *fx = *state;
    arpc_loop *loop;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_start(loop));
    arpc_client_options o = waiting_opts;
    o.loop = loop;
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, fx->paddr, &o));
    arpc_future *fs[NCALLS];
    calls_waiting(fx, c, fs);
    arpc_loop_stop(loop); /* its stop hook ends the client's calls */
    expect_ended_as_at_close(fs);
    arpc_future *late = arpc_call_async(c, "t.hold", "x", 1, ARPC_FOREVER);
    assert_int_equal(ARPC_ESHUTDOWN, arpc_future_wait_for(late, 10000)); /* and any later one */
    arpc_future_release(late);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    arpc_loop_destroy(loop);
}

/* A retry attached to a running call when the server stops: the stop answers the first copy
 * ARPC_EABANDONED on its (closed) connection, and that answer is the call's result: the retry
 * gets it too, before its connection closes (it used to be left waiting, its call held by the
 * client until a server that knows it came back, or its close ended it ARPC_ECANCELLED). */
static void test_server_stop_with_retry_attached(void **state)
{
    struct fixture *fx = *state;
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, fx->paddr, &waiting_opts));
    arpc_future *f = arpc_call_async(c, "t.hold", "x", 1, ARPC_FOREVER); /* at-most-once */
    assert_true(latch_wait(1, TEST_WAIT_MS));
    cut_proxy_cut(fx->proxy);
    /* The client reconnects and sends the call again, before any newer call (oldest first):
     * once the newer one is answered, the server has attached the copy to the running call. */
    assert_int_equal(ARPC_OK, arpc_call(c, "t.echo", "", 0, NULL, NULL, 10000));
    assert_int_equal(1, held_count()); /* attached, not run again */
    assert_int_equal(ARPC_EPENDING, arpc_future_poll(f));
    assert_int_equal(ARPC_OK, arpc_server_stop(fx->s, 0));
    assert_int_equal(ARPC_EABANDONED, arpc_future_wait_for(f, 10000)); /* may have run */
    arpc_future_release(f);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_close_ends_waiting_calls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_loop_stop_ends_waiting_calls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_stop_with_retry_attached, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
