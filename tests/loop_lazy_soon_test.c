/*
 * arpc_loop_lazy_soon (async/loop_internal.h): lazy jobs posted from another thread, then
 * flagged as not to wait while an owner says it needs that (arpc_loop_lazy_urgent, counted on
 * the loop's thread), run although nothing else wakes the loop. The server's workers
 * rely on it for the bookkeeping of the replies they wrote themselves (core/reply_take.c): it
 * frees calls that a flow limit may be holding a connection's input for, and that connection
 * is not read meanwhile, so no other event would come.
 * - An idle loop (asleep in its poll): the job runs. Without the flag it would wait for the
 *   next event, which this loop never gets (the bounded wait fails).
 * - Posted while the loop goes to its poll, 20,000 times (the flag against the loop's last
 *   prepare watcher, Dekker's pattern): every job runs. A loop that could miss the flag would
 *   sleep through one of them for good.
 * - A pollable loop, which is never marked asleep between the application's steps: its fd
 *   becomes readable for the job (the first fix looked at l_asleep alone: the poll below timed
 *   out).
 * - arpc_loop_post_lazy_within (0): the same without any owner's need (a take's first reply waiting
 *   for the loop's first look, core/reply_take.c), idle and as the loop goes to its poll.
 * - arpc_loop_post_lazy_within with room: a loop asleep until a deadline of its own that comes
 *   in time is not woken (no wake-up sent: the job waits for that turn); one with no deadline,
 *   or a later one, is.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <poll.h>
#include <semaphore.h>

#include "arpc/error.h"
#include "arpc/loop.h"
#include "async/loop_impl.h"
#include "async/loop_internal.h"
#include "base/clock.h"
#include "support/test_util.h"

struct counted_job {
    struct arpc_loop_job job;
    sem_t ran;
};

static void count_run(struct arpc_loop *loop, struct arpc_loop_job *job)
{
    (void)loop;
    sem_post(&((struct counted_job *)job)->ran);
}

static void urgent(arpc_loop *loop, void *arg)
{
    (void)arg;
    arpc_loop_lazy_urgent(loop, 1);
}

/* A started loop with an owner that needs its flagged lazy jobs run. */
static arpc_loop *urgent_loop(void)
{
    arpc_loop *loop;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_start(loop));
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(loop, urgent, NULL));
    return loop;
}

static void test_idle_loop_runs_it(void **state)
{
    (void)state;
    arpc_loop *loop = urgent_loop();
    assert_true(loop_idle_within(loop, TEST_WAIT_MS));
    struct counted_job cj;
    sem_init(&cj.ran, 0, 0);
    arpc_loop_job_init(&cj.job, count_run);
    assert_int_equal(ARPC_OK, arpc_loop_post_lazy(loop, &cj.job));
    arpc_loop_lazy_soon(loop);
    assert_true(sem_wait_secs(&cj.ran, TEST_WAIT_S));
    arpc_loop_destroy(loop);
    sem_destroy(&cj.ran);
}

static void test_posted_as_the_loop_sleeps(void **state)
{
    (void)state;
    arpc_loop *loop = urgent_loop();
    struct counted_job cj;
    sem_init(&cj.ran, 0, 0);
    for (int i = 0; i < 20000; i++) {
        arpc_loop_job_init(&cj.job, count_run);
        assert_int_equal(ARPC_OK, arpc_loop_post_lazy(loop, &cj.job));
        arpc_loop_lazy_soon(loop);
        assert_true(sem_wait_secs(&cj.ran, TEST_WAIT_S)); /* then the loop heads for its poll */
    }
    arpc_loop_destroy(loop);
    sem_destroy(&cj.ran);
}

static void test_pollable_loop_woken(void **state)
{
    (void)state;
    arpc_loop *loop;
    arpc_loop_options o = {.pollable = true};
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, &o));
    int timeout = 0;
    assert_int_equal(ARPC_OK, arpc_loop_run_nowait(loop, &timeout));
    arpc_loop_lazy_urgent(loop, 1); /* the owner's thread: a step's own */
    struct counted_job cj;
    sem_init(&cj.ran, 0, 0);
    arpc_loop_job_init(&cj.job, count_run);
    assert_int_equal(ARPC_OK, arpc_loop_post_lazy(loop, &cj.job));
    arpc_loop_lazy_soon(loop);
    struct pollfd p = {.fd = arpc_loop_fd(loop), .events = POLLIN};
    assert_int_equal(1, poll(&p, 1, TEST_WAIT_MS)); /* woken, not left for its next event */
    for (;;) {
        assert_int_equal(ARPC_OK, arpc_loop_run_nowait(loop, &timeout));
        if (sem_trywait(&cj.ran) == 0)
            break;
        if (timeout != 0)
            assert_int_equal(1, poll(&p, 1, TEST_WAIT_MS));
    }
    arpc_loop_lazy_urgent(loop, -1);
    arpc_loop_destroy(loop);
    sem_destroy(&cj.ran);
}

static void test_post_lazy_within_zero(void **state)
{
    (void)state;
    arpc_loop *loop; /* no owner needs anything: only the job's own flag wakes it */
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_start(loop));
    assert_true(loop_idle_within(loop, TEST_WAIT_MS));
    struct counted_job cj;
    sem_init(&cj.ran, 0, 0);
    for (int i = 0; i < 20000; i++) {
        arpc_loop_job_init(&cj.job, count_run);
        assert_int_equal(ARPC_OK, arpc_loop_post_lazy_within(loop, &cj.job, 0));
        assert_true(sem_wait_secs(&cj.ran, TEST_WAIT_S));
    }
    arpc_loop_destroy(loop);
    sem_destroy(&cj.ran);
}

static struct arpc_deadline far_turn;

static void noop_deadline(struct arpc_deadline *d, void *arg)
{
    (void)d;
    (void)arg;
}

static void arm_far_turn(arpc_loop *loop, void *arg)
{
    arpc_deadline_init(&far_turn, noop_deadline, NULL);
    assert_int_equal(ARPC_OK, arpc_deadline_arm(loop, &far_turn, arpc_now_ns() + *(uint64_t *)arg));
}

static void cancel_far_turn(arpc_loop *loop, void *arg)
{
    (void)arg;
    arpc_deadline_cancel(loop, &far_turn);
}

/* Posts a job with room within_ns to a loop asleep until its deadline in turn_ns (far off:
 * nothing else comes before it). Woken (expected): the job runs now. Not woken: no wake-up was
 * sent (none is pending: the loop's own prepare had run already) and the job waits; a job of
 * the lane's then cancels the deadline, and its wake-up runs the job. */
static void post_to_sleeping(uint64_t turn_ns, uint64_t within_ns, bool woken)
{
    arpc_loop *loop;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_start(loop));
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(loop, arm_far_turn, &turn_ns));
    assert_true(loop_idle_within(loop, TEST_WAIT_MS));
    struct counted_job cj;
    sem_init(&cj.ran, 0, 0);
    arpc_loop_job_init(&cj.job, count_run);
    assert_int_equal(ARPC_OK, arpc_loop_post_lazy_within(loop, &cj.job, within_ns));
    if (woken) {
        assert_true(sem_wait_secs(&cj.ran, TEST_WAIT_S));
    } else {
        assert_int_equal(0, atomic_load(&loop->l_wake_pending));
        assert_int_equal(-1, sem_trywait(&cj.ran));
    }
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(loop, cancel_far_turn, NULL));
    if (!woken)
        assert_true(sem_wait_secs(&cj.ran, TEST_WAIT_S));
    arpc_loop_destroy(loop);
    sem_destroy(&cj.ran);
}

/* The time a sleeping loop publishes counts what the kernel adds to its poll's timeout, not
 * only libev's 1 ms: 4 s ahead, a poll may wake 20 ms late (a niced thread's slack is 1/200
 * of the timeout), so a poster asking for 4 s + 2 ms must still wake it (before, the loop
 * published its deadline + 1 ms and that poster sent no wake-up). At most 100 ms is added, at
 * least 50 us. */
static void next_deadline_check(arpc_loop *loop, void *arg)
{
    uint64_t ahead = *(uint64_t *)arg;
    uint64_t now = arpc_now_ns();
    arpc_deadline_init(&far_turn, noop_deadline, NULL);
    assert_int_equal(ARPC_OK, arpc_deadline_arm(loop, &far_turn, now + ahead));
    uint64_t until = loop_next_deadline_ns(loop);
    uint64_t later = arpc_now_ns() - now; /* the slack shrinks by 1/200 of what passed meanwhile */
    assert_true(until >= now + ahead + loop_poll_slack_ns(ahead) - later / 200 - 1);
    assert_true(until <= now + ahead + loop_poll_slack_ns(ahead));
    arpc_deadline_cancel(loop, &far_turn);
}

static void test_sleep_until_counts_the_kernels_slack(void **state)
{
    (void)state;
    const uint64_t ms = 1000000u;
    assert_int_equal(1 * ms + 20 * ms, loop_poll_slack_ns(4000 * ms));
    assert_int_equal(1 * ms + 100 * ms, loop_poll_slack_ns(3600000 * ms)); /* at most 100 ms */
    assert_int_equal(1 * ms + 50000u, loop_poll_slack_ns(1 * ms));        /* at least 50 us */
    arpc_loop *loop;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_start(loop));
    const uint64_t aheads[] = {1 * ms, 4000 * ms, 3600000 * ms};
    for (size_t i = 0; i < sizeof(aheads) / sizeof(aheads[0]); i++)
        assert_int_equal(ARPC_OK, arpc_loop_run_sync(loop, next_deadline_check, (void *)&aheads[i]));
    arpc_loop_destroy(loop);
}

static void test_post_lazy_within_a_turn_to_come(void **state)
{
    (void)state;
    const uint64_t s = 1000000000u;
    post_to_sleeping(600 * s, 3600 * s, false); /* its deadline turns it in time */
    post_to_sleeping(3600 * s, 600 * s, true);  /* too late */
    post_to_sleeping(600 * s, 0, true);         /* 0: whenever it sleeps */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idle_loop_runs_it),
        cmocka_unit_test(test_posted_as_the_loop_sleeps),
        cmocka_unit_test(test_pollable_loop_woken),
        cmocka_unit_test(test_post_lazy_within_zero),
        cmocka_unit_test(test_post_lazy_within_a_turn_to_come),
        cmocka_unit_test(test_sleep_until_counts_the_kernels_slack),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
