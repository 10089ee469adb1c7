/*
 * A wait, inside a callback on the loop thread that must complete a call, for that call: the
 * loop cannot read the reply or fire the deadline while its own callback waits, so the wait
 * could never end. It used to hang (only a cancel from another thread ended it); every wait
 * now returns ARPC_EBUSY at once, the future still pending, and the call completes as usual
 * once the callback has returned. Checked for the client's own loop thread (the default), a
 * loop started with arpc_loop_start and shared, and a pollable loop's step; a wait there for
 * a call another loop completes still waits and succeeds. The same for a completion queue's
 * consumer (arpc_cq_next, _next_for) whose pending entries are all such calls; one with an
 * entry another loop completes waits for it and takes it.
 *
 * On the old code the callback's wait hung: the test thread, after its bound, cancels the call
 * from outside, which ends the wait with ARPC_ECANCELLED, and the assertions fail.
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

#include "arpc/arpc.h"
#include "support/hold_gate.h"
#include "support/test_util.h"

/* What the callback saw, waiting for the held call from the loop thread. */
struct inside {
    arpc_future *held_call;  /* pending: its reply needs this loop */
    arpc_future *other_call; /* NULL, or a call another loop completes */
    arpc_cq *cq;             /* held_call attached (tag &held_call), and other_call (tag &other) */
    int wait, wait_for, wait_all, wait_any, poll_after, other;
    int cq_other, cq_next, cq_next_for; /* cq_other: ARPC_OK when other_call came out of cq */
    sem_t done;
};

/* Takes cq's next entry: ARPC_OK when it is want with tag (the reference released), else the
 * error, or ARPC_EPROTO for another entry. */
static int cq_take(arpc_cq *cq, arpc_future *want, void *tag, int64_t timeout_ms)
{
    arpc_future *f = NULL;
    void *got = NULL;
    int rc = arpc_cq_next_for(cq, timeout_ms, &f, &got);
    if (rc != ARPC_OK)
        return rc;
    arpc_future_release(f);
    return f == want && got == tag ? ARPC_OK : ARPC_EPROTO;
}

static void wait_inside(arpc_future *f, void *arg)
{
    (void)f;
    struct inside *in = arg;
    arpc_future *one[1] = {in->held_call};
    size_t index = 99;
    in->wait = arpc_future_wait(in->held_call);
    in->wait_for = arpc_future_wait_for(in->held_call, ARPC_FOREVER);
    in->wait_all = arpc_future_wait_all(one, 1, ARPC_FOREVER);
    in->wait_any = arpc_future_wait_any(one, 1, ARPC_FOREVER, &index);
    in->poll_after = arpc_future_poll(in->held_call);
    in->other = in->other_call != NULL ? arpc_future_wait(in->other_call) : ARPC_OK;
    in->cq_other = ARPC_OK;
    if (in->other_call != NULL)
        in->cq_other = cq_take(in->cq, in->other_call, &in->other, ARPC_FOREVER);
    arpc_future *taken = NULL;
    in->cq_next = arpc_cq_next(in->cq, &taken, NULL);
    if (taken != NULL)
        arpc_future_release(taken);
    taken = NULL;
    /* Bounded for the old code, where the test's cancel let the first take the held call and
     * this one waited for nothing; refused at once now. */
    in->cq_next_for = arpc_cq_next_for(in->cq, 1000, &taken, NULL);
    if (taken != NULL)
        arpc_future_release(taken);
    sem_post(&in->done);
}

/* The callback's results: every wait refused, the call still pending. Then the held call is
 * answered and completes. */
static void check_refused_then_answer(struct inside *in)
{
    if (!sem_wait_secs(&in->done, TEST_WAIT_S)) {
        arpc_future_cancel(in->held_call); /* the old code: ends the hung wait, to fail below */
        assert_true(sem_wait_secs(&in->done, TEST_WAIT_S));
    }
    assert_int_equal(in->wait, ARPC_EBUSY);
    assert_int_equal(in->wait_for, ARPC_EBUSY);
    assert_int_equal(in->wait_all, ARPC_EBUSY);
    assert_int_equal(in->wait_any, ARPC_EBUSY);
    assert_int_equal(in->poll_after, ARPC_EPENDING);
    assert_int_equal(in->other, ARPC_OK);
    assert_int_equal(in->cq_other, ARPC_OK);
    assert_int_equal(in->cq_next, ARPC_EBUSY);
    assert_int_equal(in->cq_next_for, ARPC_EBUSY);
    assert_int_equal(arpc_reply(hold_gate_held(), "ok", 2), ARPC_OK);
    /* Its entry was kept, and comes out once the loop has delivered it. */
    assert_int_equal(cq_take(in->cq, in->held_call, &in->held_call, TEST_WAIT_MS), ARPC_OK);
}

/* Makes the held call and, on the same client, a call whose then() waits for it. */
static void start_calls(arpc_client *c, struct inside *in, arpc_future **trigger)
{
    sem_init(&in->done, 0, 0);
    in->held_call = arpc_call_async(c, "t.hold", "h", 1, TEST_WAIT_MS);
    assert_non_null(in->held_call);
    assert_int_equal(arpc_cq_create(&in->cq), ARPC_OK);
    assert_int_equal(arpc_cq_attach(in->cq, in->held_call, &in->held_call), ARPC_OK);
    if (in->other_call != NULL)
        assert_int_equal(arpc_cq_attach(in->cq, in->other_call, &in->other), ARPC_OK);
    *trigger = arpc_call_async(c, "t.gate", "e", 1, TEST_WAIT_MS);
    assert_non_null(*trigger);
    assert_int_equal(arpc_future_then(*trigger, wait_inside, in), ARPC_OK);
    hold_gate_open(); /* now it may complete: on the loop's thread */
}

static void finish_calls(struct inside *in, arpc_future *trigger)
{
    assert_int_equal(arpc_future_wait_for(in->held_call, TEST_WAIT_MS), ARPC_OK);
    assert_int_equal(arpc_future_wait_for(trigger, TEST_WAIT_MS), ARPC_OK);
    arpc_future_release(in->held_call);
    arpc_future_release(trigger);
    arpc_cq_destroy(in->cq);
    sem_destroy(&in->done);
}

/* A client on loop (run by a thread of its own): the callback's waits are refused. */
static void refused_on_loop(arpc_loop *loop)
{
    arpc_client_options co = {.loop = loop};
    arpc_client *c;
    assert_int_equal(arpc_client_connect(&c, hold_gate_addr, &co), ARPC_OK);
    struct inside in = {0};
    arpc_future *trigger;
    start_calls(c, &in, &trigger);
    check_refused_then_answer(&in);
    finish_calls(&in, trigger);
    assert_int_equal(arpc_client_close(c), ARPC_OK);
}

/* The default client: a loop thread of its own. The callback also waits for a call of another
 * client (its own loop thread completes it): that wait is not refused. */
static void test_own_loop_thread(void **state)
{
    (void)state;
    arpc_client *c, *other;
    assert_int_equal(arpc_client_connect(&c, hold_gate_addr, NULL), ARPC_OK);
    assert_int_equal(arpc_client_connect(&other, hold_gate_addr, NULL), ARPC_OK);
    struct inside in = {0};
    in.other_call = arpc_call_async(other, "t.echo", "o", 1, TEST_WAIT_MS);
    assert_non_null(in.other_call);
    arpc_future *trigger;
    start_calls(c, &in, &trigger);
    check_refused_then_answer(&in);
    finish_calls(&in, trigger);
    arpc_future_release(in.other_call);
    assert_int_equal(arpc_client_close(other), ARPC_OK);
    assert_int_equal(arpc_client_close(c), ARPC_OK);
}

/* A loop started before the client and lent to it. */
static void test_shared_started_loop(void **state)
{
    (void)state;
    arpc_loop *loop;
    assert_int_equal(arpc_loop_create(&loop, NULL), ARPC_OK);
    assert_int_equal(arpc_loop_start(loop), ARPC_OK);
    refused_on_loop(loop);
    arpc_loop_destroy(loop);
}

/* A pollable loop, made and stepped by a thread of its own (an application's event loop): a
 * pollable loop is run by the thread that made it. */
struct stepper {
    arpc_loop *loop;
    sem_t made;
    _Atomic bool stop;
};

static void *step_loop(void *arg)
{
    struct stepper *st = arg;
    arpc_loop_options lo = {.pollable = true};
    if (arpc_loop_create(&st->loop, &lo) != ARPC_OK)
        st->loop = NULL;
    sem_post(&st->made);
    while (st->loop != NULL && !atomic_load(&st->stop)) {
        int timeout = -1;
        (void)arpc_loop_run_nowait(st->loop, &timeout);
        struct pollfd p = {.fd = arpc_loop_fd(st->loop), .events = POLLIN};
        (void)poll(&p, 1, timeout < 0 || timeout > 50 ? 50 : timeout); /* 50 ms: to see stop */
    }
    if (st->loop != NULL)
        arpc_loop_destroy(st->loop);
    return NULL;
}

static void test_pollable_loop_step(void **state)
{
    (void)state;
    struct stepper st = {0};
    sem_init(&st.made, 0, 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, step_loop, &st), 0);
    assert_true(sem_wait_secs(&st.made, TEST_WAIT_S));
    assert_non_null(st.loop);
    refused_on_loop(st.loop);
    atomic_store(&st.stop, true);
    pthread_join(th, NULL);
    sem_destroy(&st.made);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_own_loop_thread),
        cmocka_unit_test(test_shared_started_loop),
        cmocka_unit_test(test_pollable_loop_step),
    };
    return cmocka_run_group_tests(tests, hold_gate_setup, hold_gate_teardown);
}
