/*
 * A thread waiting on a call of a caller-driven client (its loop created and never started:
 * a wait drives it) while another thread closes the client and destroys the loop, as
 * arpc/loop.h allows once the client is closed. The waiter reads the loop to drive from the
 * future (or its completion queue) while the call is pending, and looks at it again after the
 * close completed the call: before, the destroy could have freed it by then (a review's
 * finding under ThreadSanitizer, and AddressSanitizer with the window widened). Now a future
 * or queue that names the loop keeps its memory until it is freed, and the waiter finds it
 * done.
 *  - the waiter's late look, made deterministic: after the close and the destroy, the
 *    internal waits are handed the loop the future (then the queue alone) named;
 *  - the race itself, many times: waiters by arpc_future_wait_for, arpc_future_wait_any and
 *    arpc_cq_next_for in short slices, the close and the destroy on the test's thread
 *    (sanitizer builds report what a plain build may survive).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdatomic.h>

#include "arpc/arpc.h"
#include "async/future_internal.h"
#include "async/loop_internal.h"
#include "base/clock.h"
#include "support/test_util.h"

static void cancel_reply(arpc_request *req, void *arg)
{
    (void)arg;
    arpc_reply_error(req, "gone");
}

/* Holds every call until its caller goes away. */
static void h_hold(arpc_request *req, void *ctx)
{
    (void)ctx;
    arpc_request_on_cancel(req, cancel_reply, NULL);
}

static arpc_server *server;
static char server_addr[256];

static int setup_all(void **state)
{
    (void)state;
    arpc_server_options so = {.workers = 1};
    if (arpc_server_create(&server, &so) != ARPC_OK ||
        arpc_server_register(server, "t.hold", h_hold, NULL, NULL) != ARPC_OK ||
        arpc_server_listen(server, "inproc://driven-destroy-waiter", server_addr, sizeof(server_addr)) != ARPC_OK)
        return -1;
    return 0;
}

static int teardown_all(void **state)
{
    (void)state;
    arpc_server_destroy(server);
    return 0;
}

/* A caller-driven client on a loop of its own, and one call it holds. */
static arpc_client *driven_client(arpc_loop **loop)
{
    assert_int_equal(ARPC_OK, arpc_loop_create(loop, NULL));
    arpc_client *c;
    arpc_client_options co = {.loop = *loop};
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, server_addr, &co));
    return c;
}

static bool always_done(void *arg)
{
    (void)arg;
    return true;
}

static void no_sleep(void *arg, uint64_t deadline_ns)
{
    (void)arg;
    (void)deadline_ns;
}

static void test_a_late_look_finds_the_loop_done(void **state)
{
    (void)state;
    arpc_loop *loop;
    arpc_client *c = driven_client(&loop);
    arpc_cq *cq;
    assert_int_equal(ARPC_OK, arpc_cq_create(&cq));
    arpc_future *f = arpc_call_async(c, "t.hold", "x", 1, ARPC_FOREVER);
    assert_int_equal(ARPC_OK, arpc_cq_attach(cq, f, NULL));
    assert_ptr_equal(loop, arpc_future_loop_to_run(f)); /* what a waiter reads, and keeps */
    assert_int_equal(ARPC_OK, arpc_client_close(c)); /* completes the call */
    arpc_loop_destroy(loop);
    /* The waiter's next look at the loop it read: the future still names its memory. */
    assert_int_equal(ARPC_ECANCELLED, arpc_loop_wait_until(loop, f, arpc_deadline_from_ms(TEST_WAIT_MS)));
    arpc_future *taken;
    assert_int_equal(ARPC_OK, arpc_cq_trynext(cq, &taken, NULL));
    arpc_future_release(taken);
    arpc_future_release(f);
    /* Only the queue names it now (its home): a consumer's late look. */
    assert_int_equal(ARPC_OK, arpc_loop_wait_cond_until(loop, always_done, no_sleep, NULL, ARPC_NEVER, -1, NULL));
    arpc_cq_destroy(cq); /* the last to name it: the memory goes */
}

enum wait_kind { BY_WAIT_FOR, BY_WAIT_ANY, BY_QUEUE };

struct waiter {
    enum wait_kind kind;
    arpc_future *f;
    arpc_cq *cq;
    sem_t started;
    int rc;
};

static void *waiter_main(void *arg)
{
    struct waiter *w = arg;
    sem_post(&w->started);
    int rc;
    size_t index;
    arpc_future *taken;
    switch (w->kind) {
    case BY_WAIT_FOR:
        while ((rc = arpc_future_wait_for(w->f, 1)) == ARPC_EPENDING)
            ;
        break;
    case BY_WAIT_ANY:
        while ((rc = arpc_future_wait_any(&w->f, 1, 1, &index)) == ARPC_EPENDING)
            ;
        rc = rc == ARPC_OK ? arpc_future_poll(w->f) : rc;
        break;
    default:
        while ((rc = arpc_cq_next_for(w->cq, 1, &taken, NULL)) == ARPC_EAGAIN)
            ;
        if (rc == ARPC_OK) {
            rc = arpc_future_poll(taken);
            arpc_future_release(taken);
        }
        break;
    }
    w->rc = rc;
    return NULL;
}

static void race(enum wait_kind kind, int rounds)
{
    for (int i = 0; i < rounds; i++) {
        arpc_loop *loop;
        arpc_client *c = driven_client(&loop);
        struct waiter w = {.kind = kind};
        sem_init(&w.started, 0, 0);
        w.f = arpc_call_async(c, "t.hold", "x", 1, ARPC_FOREVER);
        if (kind == BY_QUEUE) {
            assert_int_equal(ARPC_OK, arpc_cq_create(&w.cq));
            assert_int_equal(ARPC_OK, arpc_cq_attach(w.cq, w.f, NULL));
        }
        pthread_t t;
        assert_int_equal(0, pthread_create(&t, NULL, waiter_main, &w));
        assert_true(sem_wait_secs(&w.started, TEST_WAIT_S));
        if (i % 2 == 1)
            sched_yield(); /* sometimes the waiter is further in */
        assert_int_equal(ARPC_OK, arpc_client_close(c));
        arpc_loop_destroy(loop);
        assert_int_equal(0, pthread_join(t, NULL));
        assert_int_equal(ARPC_ECANCELLED, w.rc);
        arpc_future_release(w.f);
        if (w.cq != NULL)
            arpc_cq_destroy(w.cq);
        sem_destroy(&w.started);
    }
}

static void test_race_wait_for(void **state)
{
    (void)state;
    race(BY_WAIT_FOR, 200);
}

static void test_race_wait_any(void **state)
{
    (void)state;
    race(BY_WAIT_ANY, 200);
}

static void test_race_queue(void **state)
{
    (void)state;
    race(BY_QUEUE, 200);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_late_look_finds_the_loop_done),
        cmocka_unit_test(test_race_wait_for),
        cmocka_unit_test(test_race_wait_any),
        cmocka_unit_test(test_race_queue),
    };
    return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
