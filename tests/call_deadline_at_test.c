/*
 * A call's deadline given as a time (arpc_call_options.deadline_at_ns) and a handler's
 * caller's deadline passed on with it (arpc_request_deadline_ns):
 *  - a time already past ends the call at once ARPC_EUNREACHABLE (not sent, did not run),
 *    where the same budget computed by subtraction and passed as deadline_ms (0, or negative)
 *    meant the client's default or none, and the call waited without limit (a new user's
 *    trial: a 1,500 ms handler answered a call whose budget was spent);
 *  - a time ahead is the call's deadline, on the wire as the budget left;
 *  - a handler that passes its caller's deadline on to a call of its own: that call ends with
 *    the caller's deadline, and at once once it has passed;
 *  - set with deadline_ms too: ARPC_EINVAL.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <semaphore.h>
#include <stdatomic.h>
#include <string.h>

#include "arpc/arpc.h"
#include "support/test_util.h"

#define MS 1000000ull

static atomic_int slow_runs;
static atomic_llong seen_budget_ms;
static sem_t slow_gate;

/* Holds until the test opens the gate (or 30 s), then echoes. */
static void h_slow(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&slow_runs, 1);
    atomic_store(&seen_budget_ms, arpc_request_budget_ms(req));
    latch_add();
    (void)sem_wait_secs(&slow_gate, 30);
    arpc_reply(req, "slow", 4);
}

static arpc_client *downstream; /* the forwarding handler's client */
static atomic_int forwarded_code;
static atomic_ullong forwarded_deadline;
static sem_t forwarded;

/* Calls t.slow with its own caller's deadline, records how that call ended, and replies. With
 * "spent", first waits until that deadline has passed (a wait for the clock). */
static void h_forward(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len;
    const char *p = arpc_request_data(req, &len);
    uint64_t at = arpc_request_deadline_ns(req);
    atomic_store(&forwarded_deadline, at);
    if (len == 5 && memcmp(p, "spent", 5) == 0)
        while (arpc_now_ns() <= at)
            sleep_ms(1);
    arpc_call_options o = {.deadline_at_ns = at};
    int rc = arpc_call_opts(downstream, "t.slow", "f", 1, NULL, NULL, &o);
    atomic_store(&forwarded_code, rc);
    sem_post(&forwarded);
    arpc_reply(req, "", 0);
}

struct fixture {
    arpc_server *s;
    arpc_client *c;
};

static int setup(void **state)
{
    static struct fixture fx;
    atomic_store(&slow_runs, 0);
    atomic_store(&forwarded_code, -1);
    latch_reset();
    assert_int_equal(0, sem_init(&slow_gate, 0, 0));
    assert_int_equal(0, sem_init(&forwarded, 0, 0));
    arpc_server_options so = {.workers = 2};
    assert_int_equal(ARPC_OK, arpc_server_create(&fx.s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(fx.s, "t.slow", h_slow, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(fx.s, "t.forward", h_forward, NULL, NULL));
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(fx.s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    assert_int_equal(ARPC_OK, arpc_client_connect(&fx.c, addr, NULL));
    assert_int_equal(ARPC_OK, arpc_client_connect(&downstream, addr, NULL));
    *state = &fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    for (int i = 0; i < 8; i++)
        sem_post(&slow_gate); /* anything still held */
    assert_int_equal(ARPC_OK, arpc_client_close(fx->c));
    assert_int_equal(ARPC_OK, arpc_client_close(downstream));
    assert_int_equal(ARPC_OK, arpc_server_destroy(fx->s));
    sem_destroy(&slow_gate);
    sem_destroy(&forwarded);
    return 0;
}

/* A time already past: the call ends at once, not sent, whichever way it was started. */
static void test_deadline_already_past(void **state)
{
    struct fixture *fx = *state;
    arpc_call_options o = {.deadline_at_ns = arpc_now_ns() - 1};
    void *reply = NULL;
    size_t len = 0;
    assert_int_equal(ARPC_EUNREACHABLE, arpc_call_opts(fx->c, "t.slow", "x", 1, &reply, &len, &o));
    assert_non_null(reply);
    assert_non_null(strstr(reply, "deadline_at_ns"));
    arpc_free(reply);
    arpc_future *f = arpc_call_async_opts(fx->c, "t.slow", "x", 1, &o);
    assert_non_null(f);
    assert_int_equal(ARPC_EUNREACHABLE, arpc_future_wait(f));
    arpc_future_release(f);
    arpc_cq *q;
    assert_int_equal(ARPC_OK, arpc_cq_create(&q));
    assert_int_equal(ARPC_OK, arpc_go_opts(fx->c, "t.slow", "x", 1, (&o), q, NULL));
    void *tag;
    assert_int_equal(ARPC_OK, arpc_cq_next_for(q, TEST_WAIT_MS, &f, &tag));
    assert_int_equal(ARPC_EUNREACHABLE, arpc_future_poll(f));
    arpc_future_release(f);
    arpc_cq_destroy(q);
    /* A call that went through shows nothing of them ran. */
    o.deadline_at_ns = 0;
    sem_post(&slow_gate);
    assert_int_equal(ARPC_OK, arpc_call_opts(fx->c, "t.slow", "x", 1, NULL, NULL, &o));
    assert_int_equal(1, atomic_load(&slow_runs));
}

/* A time ahead is the deadline: the handler sees what is left of it as its budget. (That a
 * call ends at such a deadline: test_handler_passes_its_callers_deadline_on.) */
static void test_deadline_ahead(void **state)
{
    struct fixture *fx = *state;
    enum { AHEAD_MS = 5000 };
    arpc_call_options o = {.deadline_at_ns = arpc_now_ns() + AHEAD_MS * MS};
    arpc_future *f = arpc_call_async_opts(fx->c, "t.slow", "x", 1, &o);
    assert_non_null(f);
    assert_true(latch_wait(1, TEST_WAIT_MS));
    assert_in_range(atomic_load(&seen_budget_ms), 1, AHEAD_MS);
    sem_post(&slow_gate);
    assert_int_equal(ARPC_OK, arpc_future_wait(f));
    arpc_future_release(f);
}

static void test_both_deadlines_refused(void **state)
{
    struct fixture *fx = *state;
    arpc_call_options o = {.deadline_ms = 1000, .deadline_at_ns = arpc_now_ns() + 1000 * MS};
    void *reply = NULL;
    assert_int_equal(ARPC_EINVAL, arpc_call_opts(fx->c, "t.slow", "x", 1, &reply, NULL, &o));
    assert_non_null(strstr(reply, "both deadline_ms and deadline_at_ns"));
    arpc_free(reply);
    assert_int_equal(0, atomic_load(&slow_runs));
}

/* A handler passes its caller's deadline on: its own call to a held method ends at that
 * deadline (ETIMEDOUT), and once the deadline has passed it ends at once (EUNREACHABLE), never
 * waiting without limit. */
static void test_handler_passes_its_callers_deadline_on(void **state)
{
    struct fixture *fx = *state;
    enum { BUDGET_MS = 1000 }; /* the forwarding handler starts well within it */
    uint64_t before = arpc_now_ns();
    int rc = arpc_call(fx->c, "t.forward", "live", 4, NULL, NULL, BUDGET_MS);
    assert_true(rc == ARPC_ETIMEDOUT || rc == ARPC_OK); /* the handler's reply races the deadline */
    assert_true(sem_wait_secs(&forwarded, TEST_WAIT_MS / 1000));
    assert_int_equal(ARPC_ETIMEDOUT, atomic_load(&forwarded_code));
    uint64_t at = atomic_load(&forwarded_deadline);
    assert_true(at > before && at <= before + BUDGET_MS * MS + 50 * MS);
    sem_post(&slow_gate); /* the held t.slow gives its worker back */
    rc = arpc_call(fx->c, "t.forward", "spent", 5, NULL, NULL, BUDGET_MS);
    assert_true(rc == ARPC_ETIMEDOUT || rc == ARPC_OK);
    assert_true(sem_wait_secs(&forwarded, TEST_WAIT_MS / 1000));
    assert_int_equal(ARPC_EUNREACHABLE, atomic_load(&forwarded_code));
    /* A call without a deadline has none to pass on. */
    sem_post(&slow_gate);
    assert_int_equal(ARPC_OK, arpc_call(fx->c, "t.forward", "none", 4, NULL, NULL, ARPC_FOREVER));
    assert_int_equal(0, atomic_load(&forwarded_deadline));
    assert_int_equal(ARPC_OK, atomic_load(&forwarded_code));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_deadline_already_past, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline_ahead, setup, teardown),
        cmocka_unit_test_setup_teardown(test_both_deadlines_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handler_passes_its_callers_deadline_on, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
