/*
 * The server posts the requests of one read to their actor in runs (core/request_dispatch.c,
 * "runs of posts"): pipelined calls to a single-actor method with a small mailbox (runs cut
 * short by the bound, requests parked at it) and to the pool all run once, in the order they
 * were sent, inline calls among them; and an actor stopped while runs stream in ends every call once: run
 * (OK) or refused, never both, never lost.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <semaphore.h>
#include <string.h>

#include "arpc/arpc.h"
#include "support/test_util.h"

#define CALLS 3000
#define STOP_AT 400 /* the call whose run lets the test stop the actor */
#define STOP_MID 408 /* a call in the middle of a run of 16, when they are read at once */

static atomic_int order[CALLS];
static atomic_int ran;
static atomic_int runs_of[CALLS];

static void h_echo(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len;
    const int *i = arpc_request_data(req, &len);
    CHECK(len == sizeof(int) && *i >= 0 && *i < CALLS);
    atomic_fetch_add(&runs_of[*i], 1);
    int at = atomic_fetch_add(&ran, 1);
    if (at < CALLS)
        atomic_store(&order[at], *i);
    if (*i == STOP_AT)
        latch_add();
    arpc_reply(req, i, len);
}

static void h_inline(arpc_request *req, void *ctx)
{
    (void)ctx;
    arpc_reply(req, "", 0);
}

struct fixture {
    arpc_server *s;
    arpc_actor *actor;
    arpc_client *c;
    arpc_future *fs[CALLS];
};

/* on_actor: the method runs on an actor of its own with a mailbox of mailbox; else on the
 * server's pool of one worker. */
static void fixture_start(struct fixture *fx, bool on_actor, unsigned mailbox)
{
    memset(fx, 0, sizeof(*fx));
    atomic_store(&bad_line, 0);
    latch_reset();
    atomic_store(&ran, 0);
    for (int i = 0; i < CALLS; i++)
        atomic_store(&runs_of[i], 0);
    arpc_method_options mo = {0}, in = {.inline_on_loop = true};
    if (on_actor) {
        arpc_actor_options ao = {.mailbox_size = mailbox};
        assert_int_equal(ARPC_OK, arpc_actor_create(&fx->actor, &ao));
        mo.actor = fx->actor;
    }
    arpc_server_options so = {.workers = 1};
    assert_int_equal(ARPC_OK, arpc_server_create(&fx->s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(fx->s, "t.echo", h_echo, NULL, &mo));
    assert_int_equal(ARPC_OK, arpc_server_register(fx->s, "t.inline", h_inline, NULL, &in));
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(fx->s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    assert_int_equal(ARPC_OK, arpc_client_connect(&fx->c, addr, NULL));
}

static void fixture_end(struct fixture *fx)
{
    arpc_client_close(fx->c);
    arpc_server_destroy(fx->s);
    if (fx->actor != NULL)
        arpc_actor_destroy(fx->actor);
    for (int i = 0; i < CALLS; i++)
        if (fx->fs[i] != NULL)
            arpc_future_release(fx->fs[i]);
    assert_int_equal(0, atomic_load(&bad_line));
}

/* Every call: OK, its own index back, run once, and in the order sent. */
static void check_in_order_once(struct fixture *fx)
{
    for (int i = 0; i < CALLS; i++) {
        assert_int_equal(ARPC_OK, arpc_future_wait_for(fx->fs[i], 60000));
        size_t len;
        const int *echo = arpc_future_data(fx->fs[i], &len);
        assert_int_equal(sizeof(int), len);
        assert_int_equal(i, *echo);
        assert_int_equal(1, atomic_load(&runs_of[i]));
    }
    assert_int_equal(CALLS, atomic_load(&ran));
    for (int at = 0; at < CALLS; at++)
        assert_int_equal(at, atomic_load(&order[at]));
}

static void pipeline(struct fixture *fx, int every_inline)
{
    for (int i = 0; i < CALLS; i++) {
        assert_non_null(fx->fs[i] = arpc_call_async(fx->c, "t.echo", &i, sizeof(i), 60000));
        if (every_inline != 0 && i % every_inline == every_inline - 1) {
            /* An inline call behind them on the same connection: the run before it is posted
             * first (request_batch_flush), and nothing behind it is lost. */
            arpc_future *f = arpc_call_async(fx->c, "t.inline", "", 0, 60000);
            assert_non_null(f);
            arpc_future_release(f);
        }
    }
}

static void test_small_mailbox_in_order_once(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_start(&fx, true, 8); /* runs of 16 cut to what is left; parking at the bound */
    pipeline(&fx, 0);
    check_in_order_once(&fx);
    fixture_end(&fx);
}

static void test_pool_in_order_once_with_inline_calls(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_start(&fx, false, 0);
    pipeline(&fx, 7);
    check_in_order_once(&fx);
    fixture_end(&fx);
}

/* Stopped (DISCARD) once call STOP_AT runs, while later calls stream in: each call ran once
 * and answered OK, or did not run and was answered with an error. */
static void test_actor_stopped_while_runs_stream_in(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_start(&fx, true, 64);
    pipeline(&fx, 0);
    assert_true(latch_wait(1, TEST_WAIT_MS));
    assert_int_equal(ARPC_OK, arpc_actor_stop(fx.actor, ARPC_ACTOR_DISCARD));
    int ok = 0;
    for (int i = 0; i < CALLS; i++) {
        int rc = arpc_future_wait_for(fx.fs[i], 60000);
        assert_int_not_equal(ARPC_ETIMEDOUT, rc);
        assert_int_not_equal(ARPC_EPENDING, rc);
        assert_int_equal(rc == ARPC_OK ? 1 : 0, atomic_load(&runs_of[i]));
        ok += rc == ARPC_OK;
    }
    print_message("%d of %d calls ran before the stop\n", ok, CALLS);
    assert_true(ok > STOP_AT); /* those before the stop ran; how many after did is timing */
    fixture_end(&fx);
}

/* The group's key function (on the loop, between a request's decode and its post) stops the
 * group at call STOP_MID: the calls of that read whose places were reserved but not pushed yet
 * (those of its run before it, it, and the rest of the run) are refused as a post to a stopped actor would be (request_batch_flush), and every call
 * still ends once. A key function that stops its group is a test's way to land a stop exactly
 * there, not something an application does. */
static arpc_actor_group *stop_group;
static sem_t loop_gate;

/* Inline: holds the server's loop until the test has sent every call, so that they are read
 * in large reads, in runs of full length (call STOP_AT then lands inside one). */
static void h_hold_loop(arpc_request *req, void *ctx)
{
    (void)ctx;
    latch_add();
    CHECK(sem_wait_secs(&loop_gate, TEST_WAIT_S));
    arpc_reply(req, "", 0);
}

static uint64_t key_stopper(const void *data, size_t len, void *ctx)
{
    (void)ctx;
    if (len == sizeof(int) && *(const int *)data == STOP_MID)
        CHECK(arpc_actor_group_stop(stop_group, ARPC_ACTOR_DISCARD) == ARPC_OK);
    return 0;
}

static void test_actor_stopped_between_reserve_and_push(void **state)
{
    (void)state;
    struct fixture fx;
    memset(&fx, 0, sizeof(fx));
    atomic_store(&bad_line, 0);
    latch_reset();
    atomic_store(&ran, 0);
    for (int i = 0; i < CALLS; i++)
        atomic_store(&runs_of[i], 0);
    assert_int_equal(ARPC_OK, arpc_actor_group_create(&stop_group, 1, NULL));
    arpc_method_options mo = {.group = stop_group, .key = key_stopper};
    arpc_server_options so = {.workers = 1};
    assert_int_equal(ARPC_OK, arpc_server_create(&fx.s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(fx.s, "t.echo", h_echo, NULL, &mo));
    arpc_method_options in = {.inline_on_loop = true};
    assert_int_equal(ARPC_OK, arpc_server_register(fx.s, "t.hold", h_hold_loop, NULL, &in));
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(fx.s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    assert_int_equal(ARPC_OK, arpc_client_connect(&fx.c, addr, NULL));
    sem_init(&loop_gate, 0, 0);
    arpc_future *hold = arpc_call_async(fx.c, "t.hold", "", 0, 60000);
    assert_non_null(hold);
    assert_true(latch_wait(1, TEST_WAIT_MS));
    pipeline(&fx, 0);
    sem_post(&loop_gate);
    assert_int_equal(ARPC_OK, arpc_future_wait_for(hold, 60000));
    arpc_future_release(hold);
    int ok = 0;
    for (int i = 0; i < CALLS; i++) {
        int rc = arpc_future_wait_for(fx.fs[i], 60000);
        assert_int_not_equal(ARPC_ETIMEDOUT, rc);
        assert_int_not_equal(ARPC_EPENDING, rc);
        assert_int_equal(rc == ARPC_OK ? 1 : 0, atomic_load(&runs_of[i]));
        if (i >= STOP_MID)
            assert_int_not_equal(ARPC_OK, rc); /* refused: reserved before the stop, or after */
        ok += rc == ARPC_OK;
    }
    print_message("%d of %d calls ran before the stop\n", ok, CALLS);
    fixture_end(&fx);
    arpc_actor_group_destroy(stop_group);
    sem_destroy(&loop_gate);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_mailbox_in_order_once),
        cmocka_unit_test(test_pool_in_order_once_with_inline_calls),
        cmocka_unit_test(test_actor_stopped_while_runs_stream_in),
        cmocka_unit_test(test_actor_stopped_between_reserve_and_push),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
