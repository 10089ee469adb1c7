/*
 * Waits on the thread that owns a pollable loop, between its steps, for calls that loop
 * completes: arpc_call runs the loop there until done (arpc/loop.h), and so do
 * arpc_future_wait, _wait_for, _wait_all, _wait_any and a completion queue's next and
 * next_for now, while such calls are attached. They used to sleep while nobody
 * ran the loop, so neither the reply nor the call's deadline could end them (a new user's
 * trial: a wait with a 1 s deadline never returned). Each wait here is bounded: on the old
 * code it ends ARPC_EPENDING and the test fails instead of hanging.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "arpc/arpc.h"
#include "support/test_util.h"

#define BOUND_MS 10000 /* a wait that does not run the loop ends here, EPENDING */

static void give_up(arpc_request *req, void *arg)
{
    (void)arg;
    arpc_reply_error(req, "given up"); /* frees the request (a handle left unanswered stays) */
}

static void h_never(arpc_request *req, void *ctx)
{
    (void)ctx; /* replies only once nobody waits: the call's deadline, a cancel or the stop */
    arpc_request_on_cancel(req, give_up, NULL);
}

struct fixture {
    arpc_server *s;
    char addr[256];
    arpc_loop *loop; /* pollable, owned by the test's thread */
    arpc_client *c;
};

static int setup(void **state)
{
    static struct fixture fx;
    char *addr = fx.addr;
    if (arpc_server_create(&fx.s, NULL) != ARPC_OK ||
        arpc_server_register(fx.s, "t.echo", test_echo, NULL, NULL) != ARPC_OK ||
        arpc_server_register(fx.s, "t.never", h_never, NULL, NULL) != ARPC_OK ||
        arpc_server_listen(fx.s, "tcp://127.0.0.1:0", addr, sizeof(fx.addr)) != ARPC_OK ||
        arpc_loop_create(&fx.loop, &(arpc_loop_options){.pollable = true, .submit_ring_size = 0}) != ARPC_OK)
        return -1;
    /* Options as compound literals of several fields: the macros take them whole. */
    if (arpc_client_connect(&fx.c, addr, &(arpc_client_options){.loop = fx.loop, .connect_timeout_ms = BOUND_MS}) !=
        ARPC_OK) /* runs the loop: we own it */
        return -1;
    *state = &fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    arpc_client_close(fx->c);
    arpc_loop_destroy(fx->loop);
    arpc_server_destroy(fx->s);
    return 0;
}

static void expect_echo(arpc_future *f, const char *want)
{
    size_t len;
    const char *got = arpc_future_data(f, &len);
    assert_int_equal(strlen(want), len);
    assert_memory_equal(want, got, len);
}

/* Waits for any of (never, echo): it must be the echo, index 1, answered want; then cancels
 * the other and releases both. */
static void expect_any_is_the_echo(arpc_future *never, arpc_future *echo, const char *want)
{
    assert_non_null(never);
    assert_non_null(echo);
    arpc_future *fs[2] = {never, echo};
    size_t index = 9;
    assert_int_equal(ARPC_OK, arpc_future_wait_any(fs, 2, BOUND_MS, &index));
    assert_int_equal(1, index);
    expect_echo(echo, want);
    assert_true(arpc_future_cancel(never));
    arpc_future_release(never);
    arpc_future_release(echo);
}

static void test_wait_runs_the_loop(void **state)
{
    struct fixture *fx = *state;
    arpc_future *f = arpc_call_async(fx->c, "t.echo", "one", 3, BOUND_MS);
    assert_non_null(f);
    assert_int_equal(ARPC_OK, arpc_future_wait_for(f, BOUND_MS));
    expect_echo(f, "one");
    arpc_future_release(f);
    f = arpc_call_async(fx->c, "t.echo", "two", 3, BOUND_MS);
    assert_non_null(f);
    assert_int_equal(ARPC_OK, arpc_future_wait(f)); /* no bound of its own: as arpc_call */
    expect_echo(f, "two");
    arpc_future_release(f);
}

static void test_deadline_ends_the_wait(void **state)
{
    struct fixture *fx = *state;
    arpc_future *f = arpc_call_async(fx->c, "t.never", "", 0, 200);
    assert_non_null(f);
    assert_int_equal(ARPC_ETIMEDOUT, arpc_future_wait_for(f, BOUND_MS));
    arpc_future_release(f);
}

static void test_wait_all_and_any(void **state)
{
    struct fixture *fx = *state;
    arpc_future *fs[2] = {arpc_call_async(fx->c, "t.echo", "a", 1, BOUND_MS),
                          arpc_call_async(fx->c, "t.echo", "b", 1, BOUND_MS)};
    assert_non_null(fs[0]);
    assert_non_null(fs[1]);
    assert_int_equal(ARPC_OK, arpc_future_wait_all(fs, 2, BOUND_MS));
    expect_echo(fs[0], "a");
    expect_echo(fs[1], "b");
    arpc_future_release(fs[0]);
    arpc_future_release(fs[1]);

    /* One that never ends, one that does: any returns the second. */
    expect_any_is_the_echo(arpc_call_async(fx->c, "t.never", "", 0, BOUND_MS * 2),
                           arpc_call_async(fx->c, "t.echo", "c", 1, BOUND_MS), "c");
}

/* A caller-driven loop's call beside the pollable loop's: the caller-driven one is run (nobody
 * else would run it), whichever place its future has in the array (a review found the first
 * version running the pollable loop when its future came first). */
static void test_wait_any_runs_a_caller_driven_home_first(void **state)
{
    struct fixture *fx = *state;
    arpc_loop *driven;
    arpc_client *c2;
    assert_int_equal(ARPC_OK, arpc_loop_create(&driven, NULL)); /* never started: caller-driven */
    assert_int_equal(ARPC_OK, arpc_client_connect(&c2, fx->addr, &(arpc_client_options){.loop = driven}));
    expect_any_is_the_echo(arpc_call_async(fx->c, "t.never", "", 0, BOUND_MS * 2),
                           arpc_call_async(c2, "t.echo", "d", 1, BOUND_MS), "d");
    assert_int_equal(ARPC_OK, arpc_client_close(c2));
    arpc_loop_destroy(driven);
}

static void test_cq_next_runs_the_loop(void **state)
{
    struct fixture *fx = *state;
    arpc_cq *cq;
    assert_int_equal(ARPC_OK, arpc_cq_create(&cq));
    arpc_future *f = arpc_call_async(fx->c, "t.echo", "q", 1, BOUND_MS);
    assert_non_null(f);
    assert_int_equal(ARPC_OK, arpc_cq_attach(cq, f, (void *)7));
    arpc_future_release(f); /* the queue keeps its own */
    assert_int_equal(ARPC_OK, arpc_go(fx->c, "t.echo", "g", 1, BOUND_MS, cq, (void *)8));
    int tags = 0;
    for (int i = 0; i < 2; i++) {
        arpc_future *got = NULL;
        void *tag = NULL;
        assert_int_equal(ARPC_OK, i == 0 ? arpc_cq_next_for(cq, BOUND_MS, &got, &tag) : arpc_cq_next(cq, &got, &tag));
        assert_int_equal(ARPC_OK, arpc_future_poll(got));
        expect_echo(got, tag == (void *)7 ? "q" : "g");
        tags += (int)(intptr_t)tag;
        arpc_future_release(got);
    }
    assert_int_equal(15, tags);
    /* Nothing attached: next_for only waits out its time. */
    arpc_future *none = NULL;
    assert_int_equal(ARPC_EAGAIN, arpc_cq_next_for(cq, 50, &none, NULL));
    arpc_cq_destroy(cq);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wait_runs_the_loop),
        cmocka_unit_test(test_deadline_ends_the_wait),
        cmocka_unit_test(test_wait_all_and_any),
        cmocka_unit_test(test_cq_next_runs_the_loop),
        cmocka_unit_test(test_wait_any_runs_a_caller_driven_home_first),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
