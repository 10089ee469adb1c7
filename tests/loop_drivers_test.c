/*
 * A loop nobody starts is driven by whoever waits on it (async/loop_wait.c): waiters claim it
 * in turn with an atomic state word, those that find it claimed sleep, and a destroy from
 * another thread sleeps on the same word until the driver's run has ended. These tests run
 * that hand-over hard (many waiters, one loop) and a destroy against a driver in epoll; under
 * TSan and ASan they also check that the word orders what each driver did before it.
 */
#define _GNU_SOURCE
#include <pthread.h>
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
#include "async/loop_internal.h"

#define DRIVERS 3
#define WAITS_PER_DRIVER 3000

struct turns {
    arpc_loop *loop;
    uint64_t ran;          /* tasks run: loop thread only, whoever drives it */
    pthread_t last_driver; /* who ran the last task */
    _Atomic unsigned switches; /* tasks run by a different thread than the one before */
    _Atomic unsigned failures;
};

struct turn_task {
    struct turns *t;
    arpc_future *f;
};

static void complete_task(arpc_loop *loop, void *arg)
{
    (void)loop;
    struct turn_task *tt = arg;
    /* Plain fields: only the driver touches them, and the state word hands them over. */
    tt->t->ran++;
    if (!pthread_equal(tt->t->last_driver, pthread_self()))
        atomic_fetch_add(&tt->t->switches, 1);
    tt->t->last_driver = pthread_self();
    arpc_future *f = tt->f; /* tt lives on the waiter's stack: gone once the wait ends */
    arpc_future_complete(f, ARPC_OK, NULL, 0);
    arpc_future_release(f); /* the completer's reference (a woken waiter releases its own) */
}

static void *waiter(void *arg)
{
    struct turns *t = arg;
    for (int i = 0; i < WAITS_PER_DRIVER; i++) {
        struct turn_task tt = {.t = t};
        if (arpc_future_create(&tt.f) != ARPC_OK) {
            atomic_fetch_add(&t->failures, 1);
            return NULL;
        }
        arpc_future_retain(tt.f); /* the task's */
        if (arpc_loop_submit(t->loop, complete_task, &tt) != ARPC_OK) {
            atomic_fetch_add(&t->failures, 1);
            return NULL;
        }
        if (arpc_loop_wait(t->loop, tt.f) != ARPC_OK) /* drives the loop, or sleeps while another does */
            atomic_fetch_add(&t->failures, 1);
        arpc_future_release(tt.f);
    }
    return NULL;
}

/* Every wait ends with its own task run, whichever waiter drove the loop for it. */
static void test_waiters_take_turns_driving(void **state)
{
    (void)state;
    struct turns t = {0};
    assert_int_equal(ARPC_OK, arpc_loop_create(&t.loop, NULL));
    t.last_driver = pthread_self();
    pthread_t th[DRIVERS];
    for (int i = 0; i < DRIVERS; i++)
        assert_int_equal(0, pthread_create(&th[i], NULL, waiter, &t));
    for (int i = 0; i < DRIVERS; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(0, atomic_load(&t.failures));
    arpc_loop_destroy(t.loop); /* never started: waits for no one, drains nothing */
    assert_int_equal(DRIVERS * WAITS_PER_DRIVER, t.ran);
    print_message("tasks run by another driver than the one before: %u\n", atomic_load(&t.switches));
}

struct destroy_ctx {
    arpc_loop *loop;
    sem_t driving;
    int wait_rc;
};

static void driving_task(arpc_loop *loop, void *arg)
{
    (void)loop;
    sem_post(&((struct destroy_ctx *)arg)->driving);
}

static void *driver(void *arg)
{
    struct destroy_ctx *d = arg;
    arpc_future *never;
    if (arpc_future_create(&never) != ARPC_OK) {
        d->wait_rc = ARPC_ENOMEM;
        sem_post(&d->driving);
        return NULL;
    }
    if (arpc_loop_submit(d->loop, driving_task, d) != ARPC_OK)
        sem_post(&d->driving);
    /* Nothing completes it: the run ends only because the loop is destroyed. */
    d->wait_rc = arpc_loop_run_until(d->loop, never, ARPC_FOREVER);
    arpc_future_release(never);
    return NULL;
}

/* A destroy from another thread while a waiter drives the loop (asleep in epoll) stops it,
 * sleeps until that driver's run has ended, and only then frees the loop (ASan: no use after
 * free by the driver; no hang). The driver's wait ends ARPC_ESHUTDOWN. */
static void test_destroy_waits_for_the_driver(void **state)
{
    (void)state;
    for (int round = 0; round < 50; round++) {
        struct destroy_ctx d = {0};
        sem_init(&d.driving, 0, 0);
        assert_int_equal(ARPC_OK, arpc_loop_create(&d.loop, NULL));
        pthread_t th;
        assert_int_equal(0, pthread_create(&th, NULL, driver, &d));
        sem_wait(&d.driving); /* its task ran: it drives the loop now */
        arpc_loop_destroy(d.loop);
        pthread_join(th, NULL);
        assert_int_equal(ARPC_ESHUTDOWN, d.wait_rc);
        sem_destroy(&d.driving);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_waiters_take_turns_driving),
        cmocka_unit_test(test_destroy_waits_for_the_driver),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
