/*
 * The allocation sweep (support/alloc_sweep.h) of the paths where the server answers in a
 * handler's place: a handler that holds its requests (replying only later, from the test's
 * thread), a call whose deadline passes while it is held (the server answers ARPC_ETIMEDOUT),
 * a call held until the server's stop (which answers it), the late replies to both (after the
 * server answered, before its destroy), and an ordinary call beside them. Each allocation
 * fails in turn (once, or for good from it on, memory coming back before the stop). Each run
 * must show:
 *   - a set-up step that fails says ARPC_ENOMEM (a connect: or ARPC_EOVERLOADED);
 *   - no call runs twice; no held call ends ARPC_OK (nothing answered it before it ended); a
 *     call ended with an outcome that did not run never ran; the ordinary call never reaches
 *     its deadline (a message lost for good);
 *   - the ordinary call, started after the failure, succeeds;
 *   - the late replies are taken (ARPC_OK, ARPC_ETIMEDOUT or ARPC_ESHUTDOWN: never a crash),
 *     and after close and destroy no block arpc allocated is live (every held request freed).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "arpc/arpc.h"
#include "support/alloc_sweep.h"
#include "support/log_capture.h"
#include "support/test_util.h"

#define SWEEP_ROUNDS 3
#define HELD_DEADLINE_MS 20 /* the held call's budget: the server answers it ARPC_ETIMEDOUT */
/* The call held until the stop: the stop answers it, unless its answer finds no memory (the
 * connection is closed instead, and the client, finding no server any more, waits until the
 * deadline: ARPC_ETIMEDOUT, "may have run", as for any server gone); this bounds that wait. */
#define UNTIL_STOP_DEADLINE_MS 1000

enum { CALL_TIMED, CALL_UNTIL_STOP, CALL_ORDINARY, CALLS };

static atomic_int runs[CALLS];
static _Atomic(arpc_request *) held[CALLS];

/* Holds its request for the test to answer later. */
static void h_hold(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len;
    const unsigned char *p = arpc_request_data(req, &len);
    if (len == 1 && p[0] < CALLS) {
        atomic_fetch_add(&runs[p[0]], 1);
        atomic_store(&held[p[0]], req);
        return;
    }
    arpc_reply(req, NULL, 0);
}

static struct sweep_runs call_runs = {runs, CALLS, 0};

static arpc_future *start(arpc_client *c, const char *method, unsigned char i, int64_t deadline_ms)
{
    arpc_call_options o = {.deadline_ms = deadline_ms, .semantics = ARPC_AT_MOST_ONCE};
    return arpc_call_async_opts(c, method, &i, 1, &o);
}

/* Call i's outcome (NULL future: no memory for it, nothing sent). */
static int end_of(arpc_future *f, long k, int i)
{
    int st = f == NULL ? ARPC_ENOMEM : arpc_future_wait_for(f, TEST_WAIT_MS + 5000);
    if (st == ARPC_EPENDING)
        fail_msg("k=%ld: call %d did not end", k, i);
    if (f != NULL)
        arpc_future_release(f);
    return st;
}

/* The late reply to a held request, if its handler got it. */
static void reply_late(int i, long k)
{
    arpc_request *req = atomic_exchange(&held[i], NULL);
    if (req == NULL)
        return;
    unsigned char b = (unsigned char)i;
    int rc = arpc_reply(req, &b, 1);
    if (rc != ARPC_OK && rc != ARPC_ETIMEDOUT && rc != ARPC_ESHUTDOWN && rc != ARPC_ENOMEM)
        fail_msg("k=%ld: the late reply to call %d: %s", k, i, arpc_errname(rc));
}

static void run_once(enum alloc_fault f, long k, void *arg, struct alloc_sweep_tally *tally)
{
    (void)arg;
    int ends[CALLS];
    for (int i = 0; i < CALLS; i++) {
        atomic_store(&runs[i], 0);
        atomic_store(&held[i], NULL);
        ends[i] = ARPC_OK;
    }
    arpc_server *s = NULL;
    arpc_client *c = NULL;
    int setup = ARPC_OK;
    alloc_fault_arm(f, k);
    arpc_server_options so = {.workers = 1};
    char addr[256];
    if ((setup = arpc_server_create(&s, &so)) != ARPC_OK ||
        (setup = arpc_server_register(s, "t.hold", h_hold, NULL, NULL)) != ARPC_OK ||
        (setup = arpc_server_register(s, "t.count", sweep_count_echo, &call_runs, NULL)) != ARPC_OK ||
        (setup = arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr))) != ARPC_OK) {
        if (setup != ARPC_ENOMEM)
            fail_msg("k=%ld: the server's set-up failed %s", k, arpc_errname(setup));
        goto done;
    }
    arpc_client_options co = {.reconnect_min_ms = 1, .reconnect_max_ms = 20};
    setup = arpc_client_connect(&c, addr, &co);
    if (setup != ARPC_OK && setup != ARPC_ENOMEM && setup != ARPC_EOVERLOADED)
        fail_msg("k=%ld: connect failed %s", k, arpc_errname(setup));
    if (setup != ARPC_OK)
        goto done;
    arpc_future *timed = start(c, "t.hold", CALL_TIMED, HELD_DEADLINE_MS);
    arpc_future *until_stop = start(c, "t.hold", CALL_UNTIL_STOP, UNTIL_STOP_DEADLINE_MS);
    ends[CALL_TIMED] = end_of(timed, k, CALL_TIMED);
    reply_late(CALL_TIMED, k); /* after the server answered it at its deadline */
    if (f == ALLOC_FAULT_FROM_THEN_ON)
        alloc_fault_disarm(); /* memory comes back: the ordinary call starts after the failures */
    bool after = alloc_fault_reached();
    ends[CALL_ORDINARY] = end_of(start(c, "t.count", CALL_ORDINARY, TEST_WAIT_MS), k, CALL_ORDINARY);
    if (after && ends[CALL_ORDINARY] != ARPC_OK)
        fail_msg("k=%ld: the call started after the failure ended %s", k, arpc_errname(ends[CALL_ORDINARY]));
    if (ends[CALL_ORDINARY] == ARPC_ETIMEDOUT)
        fail_msg("k=%ld: the ordinary call reached its deadline", k);
    assert_int_equal(ARPC_OK, arpc_server_stop(s, 0)); /* answers the call still held */
    ends[CALL_UNTIL_STOP] = end_of(until_stop, k, CALL_UNTIL_STOP);
    reply_late(CALL_UNTIL_STOP, k);
done:
    if (c != NULL)
        assert_int_equal(ARPC_OK, arpc_client_close(c));
    if (s != NULL)
        assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    alloc_fault_disarm();
    for (int i = 0; i < CALLS; i++) /* a request taken after the stop's answer, its reply late too */
        reply_late(i, k);
    tally->setup_failed += setup != ARPC_OK;
    for (int i = 0; setup == ARPC_OK && i < CALLS; i++) {
        if (atomic_load(&runs[i]) > 1)
            fail_msg("k=%ld: call %d ran %d times", k, i, atomic_load(&runs[i]));
        if (outcome_did_not_run(ends[i]) && atomic_load(&runs[i]) != 0)
            fail_msg("k=%ld: call %d ended %s (did not run) and ran", k, i, arpc_errname(ends[i]));
        if (i != CALL_ORDINARY && ends[i] == ARPC_OK)
            fail_msg("k=%ld: held call %d ended ARPC_OK before its reply", k, i);
        tally->calls_failed += ends[i] != ARPC_OK;
    }
    if (atomic_load(&test_alloc_live) != 0)
        fail_msg("k=%ld: %ld blocks live after close and destroy", k, atomic_load(&test_alloc_live));
}

static void test_one_failure(void **state)
{
    (void)state;
    alloc_sweep("held calls, a deadline, a stop", ALLOC_FAULT_ONCE, SWEEP_ROUNDS, run_once, NULL);
}

static void test_memory_gone(void **state)
{
    (void)state;
    alloc_sweep("held calls, a deadline, a stop", ALLOC_FAULT_FROM_THEN_ON, SWEEP_ROUNDS, run_once, NULL);
}

int main(void)
{
    test_alloc_install();
    log_capture_start(ARPC_LOG_ERROR); /* lines saying memory ran out: kept off the output */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_failure),
        cmocka_unit_test(test_memory_gone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
