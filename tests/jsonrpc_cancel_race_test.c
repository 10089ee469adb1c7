/*
 * JSON-RPC cancels racing with everything that ends a call: its answer, the client's close,
 * the user loop's stop. A cancel reaches the client's loop in a job of its own, which owns a
 * share of the call's record (core/jsonrpc_client.c, "Lifetimes"): the record must outlive
 * the cancel's job whichever comes first, and be freed once whatever the order. Run under
 * ASan (a record freed under the cancel's job), TSan (the shares' ordering) and the counting
 * allocator (a record never freed: every test ends with no block live).
 *
 * One thread starts calls and publishes each future; another cancels every other one as soon
 * as it is published, so cancels land on calls on their way to the loop, queued, written,
 * answered, and (in the close rounds) ending at the close. Each future ends ARPC_OK or
 * ARPC_ECANCELLED (ARPC_ESHUTDOWN too when the client closes or its loop stops under it), a
 * cancelled one ARPC_ECANCELLED.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "arpc/arpc.h"
#include "arpc/jsonrpc.h"
#include "support/test_util.h"

#define CALLS 3000u
#define ROUNDS 20u

static arpc_future *futures[CALLS];
static atomic_uint published; /* futures[0..published) are set */
static atomic_bool cancelled_ok[CALLS];
static atomic_uint looked_at; /* the canceller is done with futures[0..looked_at) */

static void h_echo(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len = 0;
    const void *p = arpc_request_data(req, &len);
    /* Each round's first call is answered only once the canceller has cancelled it, so at
     * least one cancel lands on a call not yet answered however the threads are scheduled (on
     * a loaded machine every other cancel could come after its answer: 20 failures in 30 runs
     * at load 10). A counter read with a watchdog, not a timed wait. */
    if (len == 3 && memcmp(p, "[0]", 3) == 0) {
        int64_t t0 = now_ms();
        while (atomic_load(&looked_at) == 0 && now_ms() - t0 < TEST_WAIT_MS)
            sched_yield();
    }
    arpc_reply(req, p, len);
}

static void *canceller(void *arg)
{
    (void)arg;
    for (unsigned i = 0; i < CALLS; i++) {
        while (atomic_load_explicit(&published, memory_order_acquire) <= i)
            sched_yield(); /* the caller publishes the next: a counter read, not a timed wait */
        if (i % 2 == 0)
            atomic_store(&cancelled_ok[i], arpc_future_cancel(futures[i]));
        atomic_store(&looked_at, i + 1);
    }
    return NULL;
}

enum end { END_WAIT, END_CLOSE, END_STOP };

/* One round on a client of addr, on loop (NULL: its own). Once every call is started,
 * END_CLOSE closes the client while the cancels run, END_STOP stops loop (a user loop). */
static void one_round(const char *addr, arpc_loop *loop, enum end end)
{
    arpc_jsonrpc_client *c = NULL;
    arpc_jsonrpc_options o = {.loop = loop};
    assert_int_equal(ARPC_OK, arpc_jsonrpc_connect(&c, addr, &o));
    atomic_store(&published, 0);
    atomic_store(&looked_at, 0);
    pthread_t th;
    assert_int_equal(0, pthread_create(&th, NULL, canceller, NULL));
    for (unsigned i = 0; i < CALLS; i++) {
        char params[32];
        int n = snprintf(params, sizeof(params), "[%u]", i);
        futures[i] = arpc_jsonrpc_call_async(c, "T.Echo", params, (size_t)n, ARPC_FOREVER);
        assert_non_null(futures[i]);
        atomic_store_explicit(&published, i + 1, memory_order_release);
    }
    /* Halfway through, the canceller goes on with the close or the stop. */
    if (end != END_WAIT)
        while (atomic_load(&looked_at) < CALLS / 2)
            sched_yield();
    if (end == END_CLOSE) {
        assert_int_equal(ARPC_OK, arpc_jsonrpc_close(c));
        c = NULL;
    } else if (end == END_STOP) {
        arpc_loop_stop(loop);
    }
    assert_int_equal(0, pthread_join(th, NULL));
    unsigned ok = 0, cancels = 0;
    for (unsigned i = 0; i < CALLS; i++) {
        int code = arpc_future_wait_for(futures[i], TEST_WAIT_MS);
        if (atomic_load(&cancelled_ok[i]))
            assert_int_equal(ARPC_ECANCELLED, code);
        else if (code != ARPC_OK && !(end != END_WAIT && (code == ARPC_ECANCELLED || code == ARPC_ESHUTDOWN)))
            fail_msg("call %u ended %s", i, arpc_errname(code));
        ok += code == ARPC_OK;
        cancels += atomic_load(&cancelled_ok[i]);
        arpc_future_release(futures[i]);
        atomic_store(&cancelled_ok[i], false);
    }
    if (c != NULL)
        assert_int_equal(ARPC_OK, arpc_jsonrpc_close(c));
    assert_true(ok > 0 || end != END_WAIT);
    assert_true(cancels > 0);
}

/* ROUNDS rounds against one server; END_STOP's on a user loop of their own (a loop runs
 * once). */
static void run_rounds(enum end end)
{
    arpc_server *s = NULL;
    arpc_server_options so = {.workers = 2};
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "T.Echo", h_echo, NULL, NULL));
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    for (unsigned r = 0; r < ROUNDS; r++) {
        arpc_loop *loop = NULL;
        if (end == END_STOP) {
            assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
            assert_int_equal(ARPC_OK, arpc_loop_start(loop));
        }
        one_round(addr, loop, end);
        if (loop != NULL)
            arpc_loop_destroy(loop);
    }
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

static int setup(void **state)
{
    (void)state;
    test_alloc_install();
    return 0;
}

static void test_cancels_race_answers(void **state)
{
    (void)state;
    run_rounds(END_WAIT);
}

static void test_cancels_race_the_close(void **state)
{
    (void)state;
    run_rounds(END_CLOSE);
}

static void test_cancels_race_the_loops_stop(void **state)
{
    (void)state;
    run_rounds(END_STOP);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cancels_race_answers, setup, test_alloc_check_no_leak),
        cmocka_unit_test_setup_teardown(test_cancels_race_the_close, setup, test_alloc_check_no_leak),
        cmocka_unit_test_setup_teardown(test_cancels_race_the_loops_stop, setup, test_alloc_check_no_leak),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
