/*
 * The allocation sweep (support/alloc_sweep.h) of a JSON-RPC client's calls to an arpc server:
 * the server is created, registers a method and listens, a JSON-RPC client connects and makes
 * calls (one at a time, or two at once), then both close, each allocation failing in turn
 * (once, or for good from it on). Each run must show:
 *   - a set-up step that fails says ARPC_ENOMEM (a connect: or that the server refused or
 *     closed the connection, which JSON-RPC has no words for), and what was made is closed;
 *   - no call runs twice; a call answered ARPC_OK ran and got its own result; a call that
 *     ended "not sent" (ARPC_ECONNLOST, jsonrpc.h) or with an outcome that did not run never
 *     ran; no call reaches its deadline (the hang bound);
 *   - a call started after the failure succeeds, unless the connection it needed was lost
 *     (JSON-RPC does not reconnect: ARPC_ECONNLOST, every call after it too);
 *   - after close and destroy no block arpc allocated is live.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "arpc/arpc.h"
#include "arpc/jsonrpc.h"
#include "support/alloc_sweep.h"
#include "support/log_capture.h"
#include "support/test_util.h"

#define CALLS 4
#define SWEEP_ROUNDS 3

static atomic_int runs[CALLS];

static struct sweep_runs call_runs = {runs, CALLS, '0'}; /* params "0", "1", ... */

struct sweep_config {
    bool inline_on_loop; /* the handler on the server's loop, else on its pool */
    unsigned window;     /* calls in flight at once: CALLS is a multiple of it */
};

/* Waits for call i and checks what its caller may conclude; *lost: the connection went. */
static int call_end(arpc_future *f, int i, bool started_after, long k, bool *lost)
{
    /* NULL: no memory for the future itself (jsonrpc.h); nothing was sent */
    int st = f == NULL ? ARPC_ENOMEM : arpc_future_wait_for(f, TEST_WAIT_MS + 5000);
    size_t len = 0;
    const char *back = f == NULL ? NULL : arpc_future_data(f, &len);
    bool not_sent = st == ARPC_ECONNLOST && back != NULL && strncmp(back, "not sent", 8) == 0;
    if (st == ARPC_ECONNLOST)
        *lost = true;
    if (started_after && st != ARPC_OK && st != ARPC_ECONNLOST)
        fail_msg("k=%ld: call %d, started after the failure, ended %s: %s", k, i, arpc_errname(st),
                 back != NULL ? back : "");
    if (st == ARPC_ETIMEDOUT)
        fail_msg("k=%ld: call %d reached its deadline", k, i);
    if (st == ARPC_OK && (len != 1 || back[0] != '0' + i || atomic_load(&runs[i]) != 1))
        fail_msg("k=%ld: call %d answered OK with %zu bytes after %d runs", k, i, len, atomic_load(&runs[i]));
    if (f != NULL)
        arpc_future_release(f);
    /* "did not run" outcomes are told apart from "may have run" ones as client.h's */
    return not_sent ? ARPC_EUNREACHABLE : st;
}

static void make_calls(arpc_jsonrpc_client *c, const struct sweep_config *cfg, enum alloc_fault f, long k,
                       int *ends)
{
    bool lost = false;
    for (int first = 0; first < CALLS; first += (int)cfg->window) {
        arpc_future *fut[CALLS];
        bool after[CALLS];
        for (int i = first; i < first + (int)cfg->window; i++) {
            /* one failure: any call started after it, on a connection not lost; memory
             * gone: once it came back */
            after[i] = !lost && (f == ALLOC_FAULT_ONCE ? alloc_fault_reached() : first > 0);
            char param = (char)('0' + i);
            fut[i] = arpc_jsonrpc_call_async(c, "T.Count", &param, 1, TEST_WAIT_MS);
        }
        for (int i = first; i < first + (int)cfg->window; i++)
            ends[i] = call_end(fut[i], i, after[i], k, &lost);
        if (f == ALLOC_FAULT_FROM_THEN_ON)
            alloc_fault_disarm();
    }
}

static void run_once(enum alloc_fault f, long k, void *arg, struct alloc_sweep_tally *tally)
{
    const struct sweep_config *cfg = arg;
    int ends[CALLS];
    for (int i = 0; i < CALLS; i++) {
        atomic_store(&runs[i], 0);
        ends[i] = ARPC_OK;
    }
    arpc_server *s = NULL;
    arpc_jsonrpc_client *c = NULL;
    int setup = ARPC_OK;
    alloc_fault_arm(f, k);
    arpc_server_options so = {.workers = 1};
    arpc_method_options mo = {.inline_on_loop = cfg->inline_on_loop};
    char addr[256];
    if ((setup = arpc_server_create(&s, &so)) != ARPC_OK ||
        (setup = arpc_server_register(s, "T.Count", sweep_count_echo, &call_runs, &mo)) != ARPC_OK ||
        (setup = arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr))) != ARPC_OK) {
        if (setup != ARPC_ENOMEM)
            fail_msg("k=%ld: the server's set-up failed %s", k, arpc_errname(setup));
        goto done;
    }
    char why[ARPC_ERRBUF_SIZE] = "";
    arpc_jsonrpc_options co = {.errbuf = why, .errbuf_len = sizeof(why)};
    setup = arpc_jsonrpc_connect(&c, addr, &co);
    /* A server without memory for the connection closes it (after an arpc GOAWAY, which is
     * no JSON): the connect may fail so, or its first call meet the close. */
    if (setup != ARPC_OK && setup != ARPC_ENOMEM && setup != ARPC_ECONNREFUSED && setup != ARPC_ECONNLOST &&
        setup != ARPC_EPROTO)
        fail_msg("k=%ld: connect failed %s: %s", k, arpc_errname(setup), why);
    if (setup == ARPC_OK)
        make_calls(c, cfg, f, k, ends);
done:
    if (c != NULL)
        assert_int_equal(ARPC_OK, arpc_jsonrpc_close(c));
    if (s != NULL)
        assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    alloc_fault_disarm();
    tally->setup_failed += setup != ARPC_OK;
    for (int i = 0; setup == ARPC_OK && i < CALLS; i++) { /* every run is over now */
        if (atomic_load(&runs[i]) > 1)
            fail_msg("k=%ld: call %d ran %d times", k, i, atomic_load(&runs[i]));
        if (outcome_did_not_run(ends[i]) && atomic_load(&runs[i]) != 0)
            fail_msg("k=%ld: call %d ended %s (did not run) and ran", k, i, arpc_errname(ends[i]));
        tally->calls_failed += ends[i] != ARPC_OK;
    }
    if (atomic_load(&test_alloc_live) != 0)
        fail_msg("k=%ld: %ld blocks live after close and destroy", k, atomic_load(&test_alloc_live));
}

static const struct sweep_config pool_one = {false, 1};
static const struct sweep_config inline_two = {true, 2};

static void test_one_failure_pool(void **state)
{
    (void)state;
    alloc_sweep("JSON-RPC, pool, window 1", ALLOC_FAULT_ONCE, SWEEP_ROUNDS, run_once, (void *)&pool_one);
}

static void test_one_failure_inline_window(void **state)
{
    (void)state;
    alloc_sweep("JSON-RPC, inline, window 2", ALLOC_FAULT_ONCE, SWEEP_ROUNDS, run_once, (void *)&inline_two);
}

static void test_memory_gone_pool(void **state)
{
    (void)state;
    alloc_sweep("JSON-RPC, pool, window 1", ALLOC_FAULT_FROM_THEN_ON, SWEEP_ROUNDS, run_once, (void *)&pool_one);
}

static void test_memory_gone_inline_window(void **state)
{
    (void)state;
    alloc_sweep("JSON-RPC, inline, window 2", ALLOC_FAULT_FROM_THEN_ON, SWEEP_ROUNDS, run_once,
                (void *)&inline_two);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    test_alloc_install();
    log_capture_start(ARPC_LOG_ERROR); /* lines saying memory ran out: kept off the output */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_failure_pool),
        cmocka_unit_test(test_one_failure_inline_window),
        cmocka_unit_test(test_memory_gone_pool),
        cmocka_unit_test(test_memory_gone_inline_window),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
