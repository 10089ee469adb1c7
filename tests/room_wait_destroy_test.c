/*
 * A destroy while another thread waits for room (a loop's submit, an actor's post, each at its
 * bound): the waiter began before the destroy, so it comes back with ARPC_ESHUTDOWN and never
 * touches the freed object.
 *
 * How the race is pinned: arpc's back-off yields through sched_yield, which this file
 * provides. The waiter's first yield holds it in its wait until the object is freed (the old
 * bug: it then read the freed block) or until the destroyer itself yields, waiting for it
 * (the fix). Freed blocks are unreadable (support/guard_alloc.h), so a touch after the free
 * faults in any build.
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
#include <sys/syscall.h>
#include <unistd.h>

#include <cmocka.h>

#include "arpc/actor.h"
#include "arpc/error.h"
#include "arpc/loop.h"
#include "support/guard_alloc.h"
#include "support/test_util.h"

/* ---- holding the waiter in its wait ---- */

static _Thread_local bool hold_next_yield; /* set by the waiter just before it waits */
static sem_t held;                         /* the waiter is in its wait */
static sem_t released;                     /* the waiter may go on */
static atomic_bool release_armed;          /* released not posted yet */
static atomic_bool destroying;             /* the test thread is in the destroy */
static void *_Atomic watched;              /* the object whose free releases the waiter */

static void release_waiter(void)
{
    if (atomic_exchange(&release_armed, false))
        sem_post(&released);
}

int sched_yield(void)
{
    if (hold_next_yield) {
        hold_next_yield = false;
        sem_post(&held);
        while (sem_wait(&released) != 0)
            ;
    } else if (atomic_load(&destroying)) {
        release_waiter(); /* the destroyer waits for the waiter: let it see the close */
    }
    return (int)syscall(SYS_sched_yield);
}

static void on_free(void *block)
{
    if (block == atomic_load(&watched))
        release_waiter();
}

static void hold_reset(void *object)
{
    sem_init(&held, 0, 0);
    sem_init(&released, 0, 0);
    atomic_store(&release_armed, true);
    atomic_store(&destroying, false);
    atomic_store(&watched, object);
}

/* ---- a loop's submitter at the bound ---- */

struct submitter {
    arpc_loop *loop;
    sem_t in_first, go_first;
    int ran; /* the loop thread's */
    int rc[3];
};

static void count_task(arpc_loop *loop, void *arg)
{
    (void)loop;
    ((struct submitter *)arg)->ran++;
}

static void blocking_task(arpc_loop *loop, void *arg)
{
    struct submitter *s = arg;
    sem_post(&s->in_first);
    while (sem_wait(&s->go_first) != 0)
        ;
    count_task(loop, arg);
}

static void *submit_three(void *arg)
{
    struct submitter *s = arg;
    s->rc[0] = arpc_loop_submit(s->loop, blocking_task, s);
    CHECK(sem_wait_secs(&s->in_first, TEST_WAIT_S)); /* started: its place is back */
    s->rc[1] = arpc_loop_submit(s->loop, count_task, s); /* fills the bound of 1 */
    hold_next_yield = true;
    s->rc[2] = arpc_loop_submit(s->loop, count_task, s);
    return NULL;
}

static void test_loop_destroy_while_submitter_waits_for_room(void **state)
{
    (void)state;
    arpc_loop_options opts = {.submit_ring_size = 1};
    struct submitter s = {0};
    sem_init(&s.in_first, 0, 0);
    sem_init(&s.go_first, 0, 0);
    atomic_store(&bad_line, 0);
    assert_int_equal(ARPC_OK, arpc_loop_create(&s.loop, &opts));
    assert_int_equal(ARPC_OK, arpc_loop_start(s.loop));
    hold_reset(s.loop);
    pthread_t th;
    assert_int_equal(0, pthread_create(&th, NULL, submit_three, &s));
    assert_true(sem_wait_secs(&held, TEST_WAIT_S));
    atomic_store(&destroying, true);
    sem_post(&s.go_first);
    arpc_loop_destroy(s.loop); /* its final drain runs the second task, then it frees */
    atomic_store(&destroying, false);
    release_waiter(); /* in case nothing did (the test then fails below) */
    pthread_join(th, NULL);
    assert_int_equal(0, atomic_load(&bad_line));
    assert_int_equal(ARPC_OK, s.rc[0]);
    assert_int_equal(ARPC_OK, s.rc[1]);
    assert_int_equal(ARPC_ESHUTDOWN, s.rc[2]);
    assert_int_equal(2, s.ran);
    sem_destroy(&s.in_first);
    sem_destroy(&s.go_first);
}

/* ---- an actor's poster at the bound ---- */

struct poster {
    arpc_actor *actor;
    sem_t in_first, go_first;
    atomic_int ok, cancelled;
    int rc[3];
};

static void count_msg(arpc_actor *actor, void *arg, int status)
{
    (void)actor;
    struct poster *p = arg;
    atomic_fetch_add(status == ARPC_OK ? &p->ok : &p->cancelled, 1);
}

static void blocking_msg(arpc_actor *actor, void *arg, int status)
{
    struct poster *p = arg;
    if (status == ARPC_OK) {
        sem_post(&p->in_first);
        while (sem_wait(&p->go_first) != 0)
            ;
    }
    count_msg(actor, arg, status);
}

static void *post_three(void *arg)
{
    struct poster *p = arg;
    p->rc[0] = arpc_actor_post(p->actor, blocking_msg, p);
    CHECK(sem_wait_secs(&p->in_first, TEST_WAIT_S)); /* started: its place is back */
    p->rc[1] = arpc_actor_post(p->actor, count_msg, p); /* fills the bound of 1 */
    hold_next_yield = true;
    p->rc[2] = arpc_actor_post(p->actor, count_msg, p);
    return NULL;
}

static void test_actor_destroy_while_poster_waits_for_room(void **state)
{
    (void)state;
    arpc_actor_options opts = {.mailbox_size = 1};
    struct poster p = {0};
    sem_init(&p.in_first, 0, 0);
    sem_init(&p.go_first, 0, 0);
    atomic_init(&p.ok, 0);
    atomic_init(&p.cancelled, 0);
    atomic_store(&bad_line, 0);
    assert_int_equal(ARPC_OK, arpc_actor_create(&p.actor, &opts));
    hold_reset(p.actor);
    pthread_t th;
    assert_int_equal(0, pthread_create(&th, NULL, post_three, &p));
    assert_true(sem_wait_secs(&held, TEST_WAIT_S));
    atomic_store(&destroying, true);
    sem_post(&p.go_first);
    arpc_actor_destroy(p.actor); /* drains the second message, then frees */
    atomic_store(&destroying, false);
    release_waiter();
    pthread_join(th, NULL);
    assert_int_equal(0, atomic_load(&bad_line));
    assert_int_equal(ARPC_OK, p.rc[0]);
    assert_int_equal(ARPC_OK, p.rc[1]);
    assert_int_equal(ARPC_ESHUTDOWN, p.rc[2]);
    assert_int_equal(2, atomic_load(&p.ok));
    assert_int_equal(0, atomic_load(&p.cancelled));
    sem_destroy(&p.in_first);
    sem_destroy(&p.go_first);
}

int main(void)
{
    guard_alloc_install(on_free);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loop_destroy_while_submitter_waits_for_room),
        cmocka_unit_test(test_actor_destroy_while_poster_waits_for_room),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
