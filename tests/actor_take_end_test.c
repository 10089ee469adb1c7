/*
 * An actor's take (async/actor_internal.h): a job knows whether jobs taken with it wait to run
 * after it (arpc_actor_take_continues), and a hook armed in a job runs once the take's last job
 * returned (arpc_actor_at_take_end), before the actor takes again. The server's workers hold the replies of a take and write them together
 * at its end (core/reply_take.c).
 *
 * A take of several jobs is made by posting them while the actor runs a job that waits for
 * the test (the actor takes its whole mailbox once that job returns).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <semaphore.h>
#include <stdatomic.h>
#include <string.h>

#include "arpc/arpc.h"
#include "async/actor_internal.h"
#include "support/test_util.h"

static sem_t entered, go_on;
static char trace[64]; /* the actor's thread writes, the test reads after the stop (joined) */
static size_t trace_len;

static void note(char c)
{
    if (trace_len + 1 < sizeof(trace))
        trace[trace_len++] = c;
}

static void j_gate(arpc_actor *a, void *arg, int status)
{
    (void)a;
    (void)arg;
    (void)status;
    (void)sem_post(&entered);
    (void)sem_wait_secs(&go_on, TEST_WAIT_S);
}

static void on_take_end(void *arg) { note(*(const char *)arg); }

/* Notes its letter, then '+' or '-' (the take goes on after it, or not); arms the hook once. */
static void j_note(arpc_actor *a, void *arg, int status)
{
    (void)a;
    (void)status;
    const char *letter = arg;
    note(*letter);
    note(arpc_actor_take_continues() ? '+' : '-');
    static const char hook = 'H';
    if (*letter == 'b' && !arpc_actor_at_take_end(on_take_end, (void *)&hook))
        note('!'); /* asserted by the test's thread */
}

static void setup_trace(void)
{
    memset(trace, 0, sizeof(trace));
    trace_len = 0;
    assert_int_equal(0, sem_init(&entered, 0, 0));
    assert_int_equal(0, sem_init(&go_on, 0, 0));
}

static void test_hook_runs_after_the_take(void **state)
{
    (void)state;
    setup_trace();
    static const char letters[] = "bcd";
    arpc_actor *a;
    assert_int_equal(ARPC_OK, arpc_actor_create(&a, NULL));
    assert_int_equal(ARPC_OK, arpc_actor_post(a, j_gate, NULL));
    assert_true(sem_wait_secs(&entered, TEST_WAIT_S));
    for (int i = 0; i < 3; i++)
        assert_int_equal(ARPC_OK, arpc_actor_post(a, j_note, (void *)&letters[i]));
    assert_int_equal(0, sem_post(&go_on));
    assert_int_equal(ARPC_OK, arpc_actor_stop(a, ARPC_ACTOR_DRAIN));
    /* One take of three: the hook armed in the first runs after the last, once. */
    assert_string_equal("b+c+d-H", trace);
    arpc_actor_destroy(a);
    sem_destroy(&entered);
    sem_destroy(&go_on);
}

static void test_not_on_an_actor(void **state)
{
    (void)state;
    assert_false(arpc_actor_take_continues());
    assert_false(arpc_actor_at_take_end(on_take_end, NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hook_runs_after_the_take),
        cmocka_unit_test(test_not_on_an_actor),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
