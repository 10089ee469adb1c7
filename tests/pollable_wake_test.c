/*
 * A pollable loop's fd (arpc_loop_fd) from the application's side, with nothing but tasks:
 * readable when work waits (a submit from another thread, a stop), never lost (a ping-pong of
 * submits, each waited for through the fd alone), and not readable once a step found nothing
 * left, so an application's poll loop neither sleeps through work nor spins.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "arpc/error.h"
#include "arpc/loop.h"
#include "support/test_util.h"

#define ROUNDS 20000

static bool fd_readable(arpc_loop *loop, int timeout_ms)
{
    struct pollfd p = {.fd = arpc_loop_fd(loop), .events = POLLIN};
    return poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN);
}

struct pong {
    arpc_loop *loop;
    atomic_int ran;
    sem_t ran_sem;
    int submit_rc;
};

static void pong_task(arpc_loop *loop, void *arg)
{
    struct pong *p = arg;
    CHECK(arpc_loop_on_thread(loop));
    atomic_fetch_add(&p->ran, 1);
    sem_post(&p->ran_sem);
}

/* One submit at a time, each waited for: its wake-up is the only thing that makes the fd
 * readable, so a lost one shows as a poll that times out. */
static void *pinger(void *arg)
{
    struct pong *p = arg;
    for (int i = 0; i < ROUNDS; i++) {
        int rc = arpc_loop_submit(p->loop, pong_task, p);
        if (rc != ARPC_OK) {
            p->submit_rc = rc;
            break;
        }
        if (!sem_wait_secs(&p->ran_sem, TEST_WAIT_S)) {
            p->submit_rc = ARPC_ETIMEDOUT;
            break;
        }
    }
    arpc_loop_stop(p->loop); /* the last wake-up: the owner sees ARPC_ESHUTDOWN */
    return NULL;
}

static void test_submits_wake_the_fd_and_idle_clears_it(void **state)
{
    (void)state;
    arpc_loop_options opts = {.pollable = true};
    struct pong p = {0};
    atomic_init(&p.ran, 0);
    sem_init(&p.ran_sem, 0, 0);
    atomic_store(&bad_line, 0);
    assert_int_equal(ARPC_OK, arpc_loop_create(&p.loop, &opts));
    int timeout = 0;
    assert_int_equal(ARPC_OK, arpc_loop_run_nowait(p.loop, &timeout));
    assert_int_equal(-1, timeout);
    assert_false(fd_readable(p.loop, 0)); /* idle: an application's poll would sleep */

    pthread_t th;
    assert_int_equal(0, pthread_create(&th, NULL, pinger, &p));
    int steps = 0, rc = ARPC_OK;
    while (rc == ARPC_OK) {
        assert_true(fd_readable(p.loop, TEST_WAIT_MS)); /* a lost wake-up times out here */
        rc = arpc_loop_run_nowait(p.loop, &timeout);
        steps++;
    }
    pthread_join(th, NULL);
    assert_int_equal(ARPC_ESHUTDOWN, rc);
    assert_int_equal(0, p.submit_rc);
    assert_int_equal(ROUNDS, atomic_load(&p.ran));
    assert_int_equal(0, atomic_load(&bad_line));
    assert_true(steps >= 2);
    arpc_loop_destroy(p.loop);
    sem_destroy(&p.ran_sem);
}

/* After each step that left nothing to do, the fd does not stay readable: a burst of submits
 * from another thread, stepped until the loop says it may sleep, leaves the fd clear. */
static void test_fd_clear_after_burst(void **state)
{
    (void)state;
    arpc_loop_options opts = {.pollable = true, .submit_ring_size = 64};
    struct pong p = {0};
    atomic_init(&p.ran, 0);
    sem_init(&p.ran_sem, 0, 0);
    assert_int_equal(ARPC_OK, arpc_loop_create(&p.loop, &opts));
    for (int round = 0; round < 200; round++) {
        for (int i = 0; i < 50; i++)
            assert_int_equal(ARPC_OK, arpc_loop_submit(p.loop, pong_task, &p));
        int timeout = 0;
        int guard = 0;
        do {
            assert_int_equal(ARPC_OK, arpc_loop_run_nowait(p.loop, &timeout));
            assert_true(++guard < 1000);
        } while (timeout == 0);
        assert_int_equal(-1, timeout);
        assert_false(fd_readable(p.loop, 0));
    }
    assert_int_equal(200 * 50, atomic_load(&p.ran));
    arpc_loop_destroy(p.loop);
    sem_destroy(&p.ran_sem);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_submits_wake_the_fd_and_idle_clears_it),
        cmocka_unit_test(test_fd_clear_after_burst),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
