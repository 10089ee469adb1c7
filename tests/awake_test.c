/*
 * The count of arpc's running threads (async/awake.h) and the idle actor's poll before it
 * sleeps (async/actor.c): a loop thread and an actor count while they run and not while
 * they sleep, so the count comes back to zero once they are idle and once they are gone (a
 * count that drifts up would keep actors from polling, one that drifts down would let them
 * poll on a full machine); and an idle actor stops polling and sleeps (a poll that never
 * ended would burn a CPU for ever). Each wait is for a state, with a hang guard.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "arpc/actor.h"
#include "arpc/error.h"
#include "arpc/future.h"
#include "arpc/loop.h"
#include "async/actor_internal.h"
#include "async/awake.h"
#include "support/test_util.h"

/* Waits, yielding, until pred(arg) holds; false if it has not after TEST_WAIT_MS (a hang). */
static bool holds_soon(bool (*pred)(const void *), const void *arg)
{
    int64_t until = now_ms() + TEST_WAIT_MS;
    while (!pred(arg))
        if (now_ms() > until)
            return false;
        else
            sched_yield();
    return true;
}

static bool count_is(const void *want) { return arpc_awake_running() == *(const int *)want; }
static bool count_reaches(int want) { return holds_soon(count_is, &want); }

static bool asleep(const void *a) { return arpc_actor_asleep(a); }
static bool actor_sleeps(arpc_actor *a) { return holds_soon(asleep, a); }

struct ran_count {
    atomic_int *ran;
    int want;
};

static bool ran_is(const void *arg)
{
    const struct ran_count *r = arg;
    return atomic_load(r->ran) == r->want;
}

static bool ran_reaches(atomic_int *ran, int want) { return holds_soon(ran_is, &(struct ran_count){ran, want}); }

static void count_run(arpc_actor *a, void *arg, int status)
{
    (void)a;
    if (status == ARPC_OK)
        atomic_fetch_add((atomic_int *)arg, 1);
}

static void loop_count_run(arpc_loop *loop, void *arg)
{
    (void)loop;
    atomic_fetch_add((atomic_int *)arg, 1);
}

/* An actor with poll_us polls after its jobs, then sleeps, uncounted; it wakes for the next
 * post. */
static void test_idle_actor_sleeps_uncounted(void **state)
{
    (void)state;
    assert_int_equal(0, arpc_awake_running());
    arpc_actor *a;
    const arpc_actor_options polling = {.poll_us = 50};
    assert_int_equal(ARPC_OK, arpc_actor_create(&a, &polling));
    atomic_int ran = 0;
    for (int round = 1; round <= 50; round++) {
        assert_int_equal(ARPC_OK, arpc_actor_post(a, count_run, &ran));
        assert_true(ran_reaches(&ran, round));
        assert_true(actor_sleeps(a));
        assert_true(count_reaches(0));
    }
    assert_int_equal(ARPC_OK, arpc_actor_stop(a, ARPC_ACTOR_DRAIN));
    arpc_actor_destroy(a);
    assert_int_equal(0, arpc_awake_running());
}

/* A loop thread counts between its poll's end and the next poll's start only, and not once
 * it is gone. */
static void test_idle_loop_uncounted(void **state)
{
    (void)state;
    assert_int_equal(0, arpc_awake_running());
    arpc_loop *loop;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_start(loop));
    atomic_int ran = 0;
    for (int round = 1; round <= 50; round++) {
        assert_int_equal(ARPC_OK, arpc_loop_submit(loop, loop_count_run, &ran));
        assert_true(ran_reaches(&ran, round));
        assert_true(count_reaches(0));
    }
    arpc_loop_destroy(loop);
    assert_int_equal(0, arpc_awake_running());
}

/* Many actors and loops busy at once, then idle, then destroyed: the count balances. */
enum { MANY = 4, POSTS = 2000 };

static void test_busy_then_idle_balances(void **state)
{
    (void)state;
    arpc_actor *actors[MANY];
    arpc_loop *loops[MANY];
    for (int i = 0; i < MANY; i++) {
        const arpc_actor_options polling = {.poll_us = i % 2 ? 1000 : 0};
        assert_int_equal(ARPC_OK, arpc_actor_create(&actors[i], &polling));
        assert_int_equal(ARPC_OK, arpc_loop_create(&loops[i], NULL));
        assert_int_equal(ARPC_OK, arpc_loop_start(loops[i]));
    }
    atomic_int ran = 0;
    for (int n = 0; n < POSTS; n++)
        for (int i = 0; i < MANY; i++) {
            assert_int_equal(ARPC_OK, arpc_actor_post(actors[i], count_run, &ran));
            assert_int_equal(ARPC_OK, arpc_loop_submit(loops[i], loop_count_run, &ran));
        }
    assert_true(ran_reaches(&ran, 2 * MANY * POSTS));
    assert_true(count_reaches(0));
    for (int i = 0; i < MANY; i++) {
        assert_true(actor_sleeps(actors[i]));
        assert_int_equal(ARPC_OK, arpc_actor_stop(actors[i], ARPC_ACTOR_DRAIN));
        arpc_actor_destroy(actors[i]);
        arpc_loop_destroy(loops[i]);
    }
    assert_int_equal(0, arpc_awake_running());
}

/* A loop the caller drives (arpc_loop_run_until on a loop never started, a pollable loop's
 * arpc_loop_run_nowait) runs ev_run one iteration at a time, which ends after the check
 * watcher that counts it: once the call returns, the caller's thread may sleep anywhere, so
 * it must not be left counted (a count stuck at one per such loop keeps actors from polling). */
static void test_driven_loop_uncounted_after_return(void **state)
{
    (void)state;
    assert_int_equal(0, arpc_awake_running());
    arpc_loop *loop;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
    arpc_future *f;
    assert_int_equal(ARPC_OK, arpc_future_create(&f));
    atomic_int ran = 0;
    assert_int_equal(ARPC_OK, arpc_loop_submit(loop, loop_count_run, &ran));
    (void)arpc_loop_run_until(loop, f, 5); /* not completed: it runs ev until its timeout */
    assert_int_equal(1, atomic_load(&ran));
    assert_int_equal(0, arpc_awake_running());
    arpc_future_release(f);
    arpc_loop_destroy(loop);
    assert_int_equal(0, arpc_awake_running());

    const arpc_loop_options pollable = {.pollable = true};
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, &pollable));
    assert_int_equal(ARPC_OK, arpc_loop_submit(loop, loop_count_run, &ran));
    int timeout_ms;
    assert_int_equal(ARPC_OK, arpc_loop_run_nowait(loop, &timeout_ms));
    assert_int_equal(2, atomic_load(&ran));
    assert_int_equal(0, arpc_awake_running());
    arpc_loop_destroy(loop);
    assert_int_equal(0, arpc_awake_running());
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idle_actor_sleeps_uncounted),
        cmocka_unit_test(test_idle_loop_uncounted),
        cmocka_unit_test(test_busy_then_idle_balances),
        cmocka_unit_test(test_driven_loop_uncounted_after_return),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
