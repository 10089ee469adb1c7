/*
 * A completion queue's consumer inside the loop that completes its calls (a callback on the
 * client's own loop thread) is refused with ARPC_EBUSY when every entry left is such a call:
 * the loop cannot read their replies while its callback waits. When it starts waiting there
 * is still an entry another thread completes, so it sleeps. Then that entry completes and
 * another consumer (the test's thread) takes it before the sleeper wakes, clearing the
 * queue's signal: only the completer's calls are left, and the sleeper must be woken to be
 * refused.
 *
 * On the old code nothing woke it: its wait ran to its timeout (30 s) and returned
 * ARPC_EAGAIN, and the assertion below fails. A round where the sleeper wins the race and
 * takes the entry itself is fine either way, and is played again.
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
#include "support/hold_gate.h"
#include "support/test_util.h"

/* The consumer inside the loop, and what its wait returned. */
struct sleeper {
    arpc_cq *cq;
    _Atomic int tid; /* its thread, once it is about to wait */
    int rc;
    void *tag;
    sem_t done;
};

static void wait_inside(arpc_future *f, void *arg)
{
    (void)f;
    struct sleeper *s = arg;
    atomic_store(&s->tid, thread_id());
    arpc_future *got = NULL;
    s->rc = arpc_cq_next_for(s->cq, TEST_WAIT_MS, &got, &s->tag);
    if (got != NULL)
        arpc_future_release(got);
    sem_post(&s->done);
}

/* One round: true when the test's thread took the other entry and the sleeper was refused,
 * false when the sleeper took it itself (a valid outcome, but not the case under test). */
static bool round_refused(arpc_client *c)
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
    assert_int_equal(arpc_future_then(trigger, wait_inside, &s), ARPC_OK);
    hold_gate_open(); /* the then() runs on the loop's thread */

    /* The sleeper is in its poll: other is still to come, so it was not refused. */
    assert_true(WAIT_UNTIL(atomic_load(&s.tid) != 0 && thread_in_poll(atomic_load(&s.tid))));
    assert_true(arpc_future_complete(other, ARPC_OK, NULL, 0));
    arpc_future *got = NULL;
    void *tag = NULL;
    bool took = arpc_cq_trynext(s.cq, &got, &tag) == ARPC_OK;
    if (took) {
        assert_ptr_equal(got, other);
        assert_ptr_equal(tag, &tag_other);
        arpc_future_release(got);
    }
    assert_true(sem_wait_secs(&s.done, TEST_WAIT_S + 10));
    if (took) {
        assert_int_equal(s.rc, ARPC_EBUSY); /* the old code: ARPC_EAGAIN, after 30 s */
    } else {
        assert_int_equal(s.rc, ARPC_OK);
        assert_ptr_equal(s.tag, &tag_other);
    }
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
    return took;
}

static void test_sleeper_refused_after_other_taken(void **state)
{
    (void)state;
    arpc_client *c;
    assert_int_equal(arpc_client_connect(&c, hold_gate_addr, NULL), ARPC_OK);
    int refused = 0;
    for (int round = 0; round < 50 && refused < 3; round++)
        refused += round_refused(c);
    assert_int_equal(refused, 3); /* the sleeper cannot win 48 races of 50 */
    assert_int_equal(arpc_client_close(c), ARPC_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sleeper_refused_after_other_taken),
    };
    return cmocka_run_group_tests(tests, hold_gate_setup, hold_gate_teardown);
}
