/*
 * A completion queue's consumer inside the loop that completes its calls (a callback on the
 * client's own loop thread) is refused with ARPC_EBUSY when every entry left is such a call:
 * the loop cannot read their replies while its callback waits. When it starts waiting there
 * is still an entry another thread completes, so it sleeps. Then that entry completes and
 * another consumer (the test's thread) takes it before the sleeper wakes, clearing the
 * queue's signal: only the completer's calls are left, and the sleeper must be woken to be
 * refused.
 *
 * On the old code nothing woke it: its wait ran on to its timeout, longer than the test waits
 * for it, and the assertion below fails.
 *
 * The race is made to come out that way every time: the sleeper is held just before its
 * poll (async/cq_internal.h: cq_before_sleep) while the entry completes and the test's thread
 * takes it. (It was played by chance before, 50 rounds for 3 such outcomes; on a loaded CI
 * machine under TSan the sleeper won 49 of 50, the woken thread running first.)
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

#include "arpc/arpc.h"
#include "async/cq_internal.h"
#include "support/hold_gate.h"
#include "support/test_util.h"

/* The consumer inside the loop, and what its wait returned. */
struct sleeper {
    arpc_cq *cq;
    int rc;
    void *tag;
    sem_t done;
};

/* The sleeper's first sleep waits here until the test's thread took the other entry. */
static _Atomic int hold_next_sleep;
static sem_t about_to_sleep, may_sleep;

static void hold_before_sleep(arpc_cq *cq)
{
    (void)cq;
    if (atomic_exchange(&hold_next_sleep, 0)) {
        sem_post(&about_to_sleep);
        sem_wait(&may_sleep);
    }
}

static void wait_inside(arpc_future *f, void *arg)
{
    (void)f;
    struct sleeper *s = arg;
    arpc_future *got = NULL;
    s->rc = arpc_cq_next_for(s->cq, 2 * TEST_WAIT_MS, &got, &s->tag); /* longer than the test waits */
    if (got != NULL)
        arpc_future_release(got);
    sem_post(&s->done);
}

/* One round: the sleeper, held before its poll, must be refused once the test's thread has
 * taken the other entry. */
static void round_refused(arpc_client *c)
{
    int tag_held, tag_other;
    struct sleeper s = {.rc = -1};
    sem_init(&s.done, 0, 0);
    arpc_future *held_call = arpc_call_async(c, "t.hold", "h", 1, TEST_WAIT_MS);
    assert_non_null(held_call);
    arpc_future *other;
    assert_int_equal(arpc_future_create(&other), ARPC_OK);
    assert_int_equal(arpc_cq_create(&s.cq), ARPC_OK);
    assert_int_equal(arpc_cq_attach(s.cq, held_call, &tag_held), ARPC_OK); /* names the completer */
    assert_int_equal(arpc_cq_attach(s.cq, other, &tag_other), ARPC_OK);
    arpc_future *trigger = arpc_call_async(c, "t.gate", "e", 1, TEST_WAIT_MS);
    assert_non_null(trigger);
    atomic_store(&hold_next_sleep, 1);
    assert_int_equal(arpc_future_then(trigger, wait_inside, &s), ARPC_OK);
    hold_gate_open(); /* the then() runs on the loop's thread */

    /* The sleeper is about to sleep: other is still to come, so it was not refused. Other
     * completes and the test's thread takes it (the queue's signal with it) before the
     * sleeper polls. */
    assert_true(sem_wait_secs(&about_to_sleep, TEST_WAIT_S));
    assert_true(arpc_future_complete(other, ARPC_OK, NULL, 0));
    arpc_future *got = NULL;
    void *tag = NULL;
    assert_int_equal(arpc_cq_trynext(s.cq, &got, &tag), ARPC_OK);
    assert_ptr_equal(got, other);
    assert_ptr_equal(tag, &tag_other);
    arpc_future_release(got);
    sem_post(&may_sleep);
    assert_true(sem_wait_secs(&s.done, TEST_WAIT_S)); /* the old code: not woken, it sleeps on */
    assert_int_equal(s.rc, ARPC_EBUSY);
    arpc_future_release(other);

    /* The held call is answered and its entry comes out as usual. */
    assert_int_equal(arpc_reply(hold_gate_held(), "ok", 2), ARPC_OK);
    assert_int_equal(arpc_cq_next_for(s.cq, TEST_WAIT_MS, &got, &tag), ARPC_OK);
    assert_ptr_equal(got, held_call);
    assert_ptr_equal(tag, &tag_held);
    arpc_future_release(got);
    assert_int_equal(arpc_future_wait_for(trigger, TEST_WAIT_MS), ARPC_OK);
    arpc_future_release(held_call);
    arpc_future_release(trigger);
    arpc_cq_destroy(s.cq);
    sem_destroy(&s.done);
}

static void test_sleeper_refused_after_other_taken(void **state)
{
    (void)state;
    arpc_client *c;
    assert_int_equal(arpc_client_connect(&c, hold_gate_addr, NULL), ARPC_OK);
    sem_init(&about_to_sleep, 0, 0);
    sem_init(&may_sleep, 0, 0);
    cq_before_sleep = hold_before_sleep;
    for (int round = 0; round < 3; round++)
        round_refused(c);
    cq_before_sleep = NULL;
    sem_destroy(&about_to_sleep);
    sem_destroy(&may_sleep);
    assert_int_equal(arpc_client_close(c), ARPC_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sleeper_refused_after_other_taken),
    };
    return cmocka_run_group_tests(tests, hold_gate_setup, hold_gate_teardown);
}
