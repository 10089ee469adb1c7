/*
 * A cancel from another thread, seen by an application that drives a pollable loop itself
 * (include/arpc/loop.h: arpc_loop_run_nowait, a look at the future, then poll on
 * arpc_loop_fd). arpc_future_cancel runs the producer's hook, which posts the cancel's job to
 * the loop (waking its fd), before it publishes ARPC_ECANCELLED. The driver could run that
 * job in between, find the future still pending and go back to sleep, with nothing left to
 * wake it: a JSON-RPC driver waited for the server's answer in about one run in four (found
 * by a new user's trial). The cancel's job now has the loop turn again until the future is
 * done, so the driver's look after a turn finds it.
 *
 * The server holds every call unanswered until the end, so no answer wakes the driver. Each
 * round starts a call, and a thread cancels it a moment later while the driver sleeps in
 * poll; a driver whose poll runs out (TEST_WAIT_MS) with the future done missed the cancel.
 * Both clients, the arpc client and the JSON-RPC client.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "arpc/arpc.h"
#ifdef ARPC_WITH_JSONRPC
#include "arpc/jsonrpc.h"
#endif
#include "support/test_util.h"

#define ROUNDS 100
#define HELD_MAX (2 * ROUNDS + 8)

static pthread_mutex_t held_mtx = PTHREAD_MUTEX_INITIALIZER;
static arpc_request *held[HELD_MAX]; /* under held_mtx */
static unsigned nheld;

/* Keeps every request unanswered until answer_held. */
static void h_hold(arpc_request *req, void *ctx)
{
    (void)ctx;
    pthread_mutex_lock(&held_mtx);
    if (nheld < HELD_MAX)
        held[nheld++] = req;
    else
        arpc_reply(req, "1", 1);
    pthread_mutex_unlock(&held_mtx);
}

static void answer_held(void)
{
    pthread_mutex_lock(&held_mtx);
    for (unsigned i = 0; i < nheld; i++)
        arpc_reply(held[i], "1", 1);
    nheld = 0;
    pthread_mutex_unlock(&held_mtx);
}

static _Atomic int64_t cancelled_at_ms; /* when the round's cancel returned (published) */

static void *cancel_soon(void *f)
{
    sleep_ms(10 + rand() % 10); /* so that the driver is asleep in poll: the case under test */
    arpc_future_cancel(f);
    atomic_store(&cancelled_at_ms, now_ms());
    return NULL;
}

/* Drives loop until f is done; fails if a poll ran out a second or more after the cancel was
 * published (the driver slept through it: a client's timer, seconds away, or the cap woke it;
 * a timer that fires just as the cancel publishes is no miss). */
static void drive_until_done(arpc_loop *loop, arpc_future *f, unsigned round)
{
    while (arpc_future_poll(f) == ARPC_EPENDING) {
        int timeout = 0;
        assert_int_equal(ARPC_OK, arpc_loop_run_nowait(loop, &timeout));
        if (arpc_future_poll(f) != ARPC_EPENDING)
            break;
        struct pollfd p = {.fd = arpc_loop_fd(loop), .events = POLLIN};
        int n = poll(&p, 1, timeout < 0 || timeout > TEST_WAIT_MS ? TEST_WAIT_MS : timeout);
        if (n == 0 && arpc_future_poll(f) != ARPC_EPENDING && now_ms() - atomic_load(&cancelled_at_ms) >= 1000)
            fail_msg("round %u: the driver slept through the cancel", round);
    }
}

/* One round: start (the call), cancel it from another thread, drive until it is done. */
static void cancel_round(arpc_loop *loop, arpc_future *f, unsigned round)
{
    assert_non_null(f);
    atomic_store(&cancelled_at_ms, INT64_MAX);
    pthread_t th;
    assert_int_equal(0, pthread_create(&th, NULL, cancel_soon, f));
    drive_until_done(loop, f, round);
    assert_int_equal(0, pthread_join(th, NULL));
    assert_int_equal(ARPC_ECANCELLED, arpc_future_poll(f));
    arpc_future_release(f);
}

static arpc_server *server;
static char addr[256];

static int setup(void **state)
{
    (void)state;
    srand(7);
    arpc_server_options so = {.workers = 1};
    if (arpc_server_create(&server, &so) != ARPC_OK ||
        arpc_server_register(server, "T.Hold", h_hold, NULL, NULL) != ARPC_OK)
        return -1;
    return arpc_server_listen(server, "tcp://127.0.0.1:0", addr, sizeof(addr)) == ARPC_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    answer_held();
    arpc_server_destroy(server);
    return 0;
}

static arpc_loop *pollable_loop(void)
{
    arpc_loop_options lo = {.pollable = true};
    arpc_loop *loop = NULL;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, &lo));
    return loop;
}

static void test_arpc_client(void **state)
{
    (void)state;
    arpc_loop *loop = pollable_loop();
    arpc_client_options co = {.loop = loop};
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &co));
    for (unsigned r = 0; r < ROUNDS; r++)
        cancel_round(loop, arpc_call_async(c, "T.Hold", "x", 1, ARPC_FOREVER), r);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    arpc_loop_destroy(loop);
}

#ifdef ARPC_WITH_JSONRPC
static void test_jsonrpc_client(void **state)
{
    (void)state;
    arpc_loop *loop = pollable_loop();
    arpc_jsonrpc_options o = {.loop = loop};
    arpc_jsonrpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_jsonrpc_connect(&c, addr, &o));
    for (unsigned r = 0; r < ROUNDS; r++)
        cancel_round(loop, arpc_jsonrpc_call_async(c, "T.Hold", "[1]", 3, ARPC_FOREVER), r);
    assert_int_equal(ARPC_OK, arpc_jsonrpc_close(c));
    arpc_loop_destroy(loop);
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arpc_client),
#ifdef ARPC_WITH_JSONRPC
        cmocka_unit_test(test_jsonrpc_client),
#endif
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
