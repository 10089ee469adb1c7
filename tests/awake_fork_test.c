/*
 * The running count (async/awake.h) in the child of a fork: the child has one thread, the
 * one that forked, so its count is that thread's own share -- 0 for a thread of the
 * application, 1 for an actor's inside a job -- not the parent's, which held every busy loop
 * and actor of the parent (threads the child does not have, whose count it could never bring
 * down: its actors would never poll). The child says what it saw by its exit status. Every
 * wait is for a state or an event, with a hang guard.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "arpc/actor.h"
#include "arpc/error.h"
#include "arpc/loop.h"
#include "async/awake.h"
#include "support/test_util.h"

static atomic_bool let_go;   /* the busy loop task and actor job end */
static atomic_int busy;      /* busy ones started */

/* Waits, yielding, until the count is want; false if it is not after TEST_WAIT_MS (a hang). */
static bool count_reaches(int want)
{
    for (int64_t until = now_ms() + TEST_WAIT_MS; arpc_awake_running() != want;)
        if (now_ms() > until)
            return false;
        else
            sched_yield();
    return true;
}

static bool busy_reaches(int want)
{
    for (int64_t until = now_ms() + TEST_WAIT_MS; atomic_load(&busy) != want;)
        if (now_ms() > until)
            return false;
        else
            sched_yield();
    return true;
}

/* Keeps its thread running (counted) until let go. */
static void spin(void)
{
    atomic_fetch_add(&busy, 1);
    int64_t until = now_ms() + TEST_WAIT_MS; /* a failing test ends */
    while (!atomic_load(&let_go) && now_ms() < until)
        sched_yield();
}

static void busy_task(arpc_loop *loop, void *arg)
{
    (void)loop;
    (void)arg;
    spin();
}

static void busy_job(arpc_actor *a, void *arg, int status)
{
    (void)a;
    (void)arg;
    (void)status;
    spin();
}

/* Forks; the child exits 0 if its count is want, 1 otherwise. Returns the child's pid. */
static pid_t fork_expecting(int want)
{
    pid_t pid = fork();
    if (pid == 0)
        _exit(arpc_awake_running() == want ? 0 : 1);
    return pid;
}

static void assert_child_ok(pid_t pid)
{
    assert_true(pid > 0);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

struct busy_pair {
    arpc_loop *loop;
    arpc_actor *actor;
};

/* A loop and an actor, each busy (counted) until let go. */
static void start_busy(struct busy_pair *b)
{
    atomic_store(&let_go, false);
    atomic_store(&busy, 0);
    assert_int_equal(ARPC_OK, arpc_loop_create(&b->loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_start(b->loop));
    assert_int_equal(ARPC_OK, arpc_actor_create(&b->actor, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_submit(b->loop, busy_task, NULL));
    assert_int_equal(ARPC_OK, arpc_actor_post(b->actor, busy_job, NULL));
    assert_true(busy_reaches(2));
    assert_true(count_reaches(2));
}

static void stop_busy(struct busy_pair *b)
{
    atomic_store(&let_go, true);
    assert_int_equal(ARPC_OK, arpc_actor_stop(b->actor, ARPC_ACTOR_DRAIN));
    arpc_actor_destroy(b->actor);
    arpc_loop_destroy(b->loop);
    assert_true(count_reaches(0));
}

/* Forked by a thread of the application (not counted): the child counts none. */
static void test_child_of_an_uncounted_thread_counts_none(void **state)
{
    (void)state;
    struct busy_pair b;
    start_busy(&b);
    pid_t pid = fork_expecting(0);
    stop_busy(&b);
    assert_child_ok(pid);
}

static atomic_int forked_pid;

static void fork_job(arpc_actor *a, void *arg, int status)
{
    (void)a;
    (void)arg;
    (void)status;
    atomic_store(&forked_pid, (int)fork_expecting(1));
}

/* Forked by an actor inside a job (counted), while a loop is busy: the child counts one. */
static void test_child_of_a_counted_thread_counts_itself(void **state)
{
    (void)state;
    atomic_store(&let_go, false);
    atomic_store(&busy, 0);
    atomic_store(&forked_pid, 0);
    arpc_loop *loop;
    arpc_actor *forker;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_start(loop));
    assert_int_equal(ARPC_OK, arpc_actor_create(&forker, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_submit(loop, busy_task, NULL));
    assert_true(busy_reaches(1));
    assert_true(count_reaches(1));
    assert_int_equal(ARPC_OK, arpc_actor_post(forker, fork_job, NULL));
    assert_int_equal(ARPC_OK, arpc_actor_stop(forker, ARPC_ACTOR_DRAIN)); /* the job ran */
    arpc_actor_destroy(forker);
    atomic_store(&let_go, true);
    arpc_loop_destroy(loop);
    assert_true(count_reaches(0));
    assert_child_ok((pid_t)atomic_load(&forked_pid));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_child_of_an_uncounted_thread_counts_none),
        cmocka_unit_test(test_child_of_a_counted_thread_counts_itself),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
