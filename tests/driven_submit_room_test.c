/*
 * A caller-driven loop (created, never started: whoever waits runs it) that nobody runs makes
 * no room in its submit bound by itself. A submit at the bound from a thread other than the
 * loop's used to wait for room for ever: in a single-threaded program, the thread that would
 * have run the loop next. It now runs a non-blocking step of the loop itself, as a wait for
 * one of the loop's futures does (arpc_loop_run_until), and goes on.
 *
 * The submits run on a thread of their own, so that the old hang shows as a failed wait here
 * instead of the test's timeout.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "arpc/error.h"
#include "arpc/future.h"
#include "arpc/loop.h"
#include "support/test_util.h"

#define BOUND 4
#define TASKS (BOUND * 8 + 1)

struct driven {
    arpc_loop *loop;
    int ran;            /* loop thread: tasks run */
    int ran_off_thread; /* loop thread: tasks that did not see themselves on the loop thread */
    int rc[TASKS];
    int ran_before_destroy;
    sem_t done;
};

static void count_task(arpc_loop *loop, void *arg)
{
    struct driven *d = arg;
    d->ran_off_thread += !arpc_loop_on_thread(loop);
    d->ran++;
}

/* A task that stops the loop it runs on: the submitter driving the step must not touch the
 * loop afterwards, and gets ARPC_ESHUTDOWN. */
static void destroy_task(arpc_loop *loop, void *arg)
{
    (void)arg;
    arpc_loop_destroy(loop); /* on the loop thread: the runner (our submitter) frees it */
}

static void *submit_past_bound(void *arg)
{
    struct driven *d = arg;
    for (int i = 0; i < TASKS; i++)
        d->rc[i] = arpc_loop_submit(d->loop, count_task, d);
    d->ran_before_destroy = d->ran;
    arpc_loop_destroy(d->loop); /* its final drain runs what is left */
    sem_post(&d->done);
    return NULL;
}

static void test_submit_at_bound_drives_idle_loop(void **state)
{
    (void)state;
    arpc_loop_options opts = {.submit_ring_size = BOUND};
    struct driven d = {0};
    sem_init(&d.done, 0, 0);
    assert_int_equal(ARPC_OK, arpc_loop_create(&d.loop, &opts));
    pthread_t th;
    assert_int_equal(0, pthread_create(&th, NULL, submit_past_bound, &d));
    assert_true(sem_wait_secs(&d.done, TEST_WAIT_S)); /* the old code waited here for ever */
    pthread_join(th, NULL);
    for (int i = 0; i < TASKS; i++)
        assert_int_equal(ARPC_OK, d.rc[i]);
    assert_int_equal(TASKS, d.ran);
    assert_true(d.ran_before_destroy >= TASKS - BOUND); /* the submits made their room */
    assert_int_equal(0, d.ran_off_thread);
    sem_destroy(&d.done);
}

/* The step a submitter runs may end the loop: a task destroys it from the loop thread, so the
 * runner (the submitter) frees it, and the submit says ARPC_ESHUTDOWN without touching it. */
struct ender {
    arpc_loop *loop;
    int ran;
    int rc_last;
    sem_t done;
};

static void end_count_task(arpc_loop *loop, void *arg)
{
    (void)loop;
    ((struct ender *)arg)->ran++;
}

static void *submit_into_destroy(void *arg)
{
    struct ender *e = arg;
    CHECK(arpc_loop_submit(e->loop, destroy_task, NULL) == ARPC_OK);
    for (int i = 1; i < BOUND; i++)
        CHECK(arpc_loop_submit(e->loop, end_count_task, e) == ARPC_OK);
    e->rc_last = arpc_loop_submit(e->loop, end_count_task, e); /* at the bound: the step */
    sem_post(&e->done);
    return NULL;
}

static void test_step_that_destroys_the_loop(void **state)
{
    (void)state;
    arpc_loop_options opts = {.submit_ring_size = BOUND};
    struct ender e = {0};
    sem_init(&e.done, 0, 0);
    atomic_store(&bad_line, 0);
    assert_int_equal(ARPC_OK, arpc_loop_create(&e.loop, &opts));
    pthread_t th;
    assert_int_equal(0, pthread_create(&th, NULL, submit_into_destroy, &e));
    assert_true(sem_wait_secs(&e.done, TEST_WAIT_S));
    pthread_join(th, NULL);
    assert_int_equal(0, atomic_load(&bad_line));
    assert_int_equal(ARPC_ESHUTDOWN, e.rc_last);
    assert_int_equal(BOUND - 1, e.ran); /* the final drain ran the accepted ones */
    sem_destroy(&e.done);
}

/* A submitter's step holds the loop for a moment: a driver's arpc_loop_run_until meanwhile
 * waits it out instead of saying ARPC_EBUSY ("another thread runs the loop"), which before
 * the steps no submitter ever caused. */
#define RACE_TASKS 20000

struct racer {
    arpc_loop *loop;
    atomic_bool done;
    int ran; /* the loop thread's: whichever thread runs it, one at a time */
    int submit_failed;
};

static void race_task(arpc_loop *loop, void *arg)
{
    (void)loop;
    ((struct racer *)arg)->ran++;
}

static void *submit_many(void *arg)
{
    struct racer *r = arg;
    for (int i = 0; i < RACE_TASKS; i++)
        r->submit_failed += arpc_loop_submit(r->loop, race_task, r) != ARPC_OK;
    atomic_store(&r->done, true);
    return NULL;
}

static void test_driver_never_busy_because_of_a_step(void **state)
{
    (void)state;
    arpc_loop_options opts = {.submit_ring_size = BOUND};
    struct racer r = {0};
    atomic_init(&r.done, false);
    assert_int_equal(ARPC_OK, arpc_loop_create(&r.loop, &opts));
    arpc_future *f;
    assert_int_equal(ARPC_OK, arpc_future_create(&f)); /* never completes: each run is one step */
    pthread_t th;
    assert_int_equal(0, pthread_create(&th, NULL, submit_many, &r));
    long busy = 0, runs = 0;
    while (!atomic_load(&r.done)) {
        int rc = arpc_loop_run_until(r.loop, f, 0);
        busy += rc == ARPC_EBUSY;
        runs++;
        CHECK(rc == ARPC_EPENDING || rc == ARPC_EBUSY);
    }
    pthread_join(th, NULL);
    print_message("%ld runs, %ld busy\n", runs, busy);
    assert_int_equal(0, busy);
    assert_int_equal(0, r.submit_failed);
    arpc_loop_destroy(r.loop); /* its final drain runs what is left */
    assert_int_equal(RACE_TASKS, r.ran);
    arpc_future_release(f); /* pending, never handed to anyone: cancelled */
}

/* Nor do arpc_loop_start and arpc_loop_run say ARPC_EBUSY ("already running") because a
 * submitter is in the middle of a step: the loop's thread, or its lender, takes over. */
struct taker {
    arpc_loop *loop;
    atomic_int ran;
    int submit_failed;
    bool stop_after;
};

static void take_task(arpc_loop *loop, void *arg)
{
    (void)loop;
    atomic_fetch_add(&((struct taker *)arg)->ran, 1);
}

static void *submit_then_stop(void *arg)
{
    struct taker *t = arg;
    for (int i = 0; i < RACE_TASKS; i++)
        t->submit_failed += arpc_loop_submit(t->loop, take_task, t) != ARPC_OK;
    if (t->stop_after)
        arpc_loop_stop(t->loop);
    return NULL;
}

static void test_start_and_run_while_a_submitter_steps(void **state)
{
    (void)state;
    for (int run = 0; run < 2; run++) {
        arpc_loop_options opts = {.submit_ring_size = BOUND};
        struct taker t = {.stop_after = run};
        atomic_init(&t.ran, 0);
        assert_int_equal(ARPC_OK, arpc_loop_create(&t.loop, &opts));
        pthread_t th;
        assert_int_equal(0, pthread_create(&th, NULL, submit_then_stop, &t));
        while (atomic_load(&t.ran) < 100) /* the submitter steps the loop by now */
            sched_yield();
        if (run)
            assert_int_equal(ARPC_OK, arpc_loop_run(t.loop)); /* until the submitter stops it */
        else
            assert_int_equal(ARPC_OK, arpc_loop_start(t.loop));
        pthread_join(th, NULL);
        arpc_loop_destroy(t.loop);
        assert_int_equal(0, t.submit_failed);
        assert_int_equal(RACE_TASKS, atomic_load(&t.ran));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_submit_at_bound_drives_idle_loop),
        cmocka_unit_test(test_step_that_destroys_the_loop),
        cmocka_unit_test(test_driver_never_busy_because_of_a_step),
        cmocka_unit_test(test_start_and_run_while_a_submitter_steps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
