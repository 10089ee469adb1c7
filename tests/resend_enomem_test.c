/*
 * A call sent again after its connection broke, whose re-send finds no memory on the client,
 * ends "may have run" (ARPC_ECONNLOST): its earlier send may have run, and here it did. Before,
 * it ended ARPC_ENOMEM, what a call that could not start ends with (docs/SEMANTICS.md,
 * "Outcomes"). Its result says it found no memory (CALL_LOST_NO_MEMORY), not the generic "its
 * connection was lost".
 *
 * The allocation made to fail is picked by its size (support/test_alloc.c): the new
 * connection's output queue growing past its first 64 frames, as the client re-sends the
 * calls of the one it lost in one burst (core/outq.c); or the waiting calls' array growing
 * past its first 64 slots as the loss puts them back to wait (core/waiting_calls.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <string.h>

#include "arpc/arpc.h"
#include "core/client_resend.h"
#include "core/outq.h"
#include "core/waiting_calls.h"
#include "support/cut_proxy.h"
#include "support/test_util.h"

#define CALLS 100 /* more than the 64 frames an output queue first has room for */
#define OUTQ_GROWN (128 * sizeof(struct arpc_outq_buf))
#define WAITING_GROWN (128 * sizeof(struct waiting_slot)) /* from 64 slots to 128 */

static atomic_int runs;

static void h_count(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&runs, 1);
    arpc_reply(req, "ran", 3);
}

static void test_resend_without_memory_may_have_run(void **state)
{
    (void)state;
    test_alloc_sized_install();
    atomic_store(&runs, 0);
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.count", h_count, NULL, NULL));
    char saddr[256], paddr[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", saddr, sizeof(saddr)));
    struct cut_proxy *proxy = cut_proxy_start(saddr, paddr, sizeof(paddr));
    assert_non_null(proxy);
    arpc_client *c;
    arpc_client_options co = {.reconnect_max_ms = 50};
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, paddr, &co));
    cut_proxy_swallow_replies(proxy, true); /* they run; no reply arrives */
    static arpc_future *fs[CALLS];
    for (int i = 0; i < CALLS; i++)
        fs[i] = arpc_call_async(c, "t.count", "x", 1, 30000); /* at-most-once */
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, calls.finished), CALLS, TEST_WAIT_MS));
    cut_proxy_hold_new(proxy, true);
    cut_proxy_cut(proxy);
    cut_proxy_swallow_replies(proxy, false);
    test_alloc_fail_next(OUTQ_GROWN, OUTQ_GROWN + 1); /* the re-sends' queue, as it grows */
    cut_proxy_hold_new(proxy, false);
    int ok = 0, lost = 0;
    for (int i = 0; i < CALLS; i++) {
        int st = arpc_future_wait_for(fs[i], TEST_WAIT_MS);
        ok += st == ARPC_OK;
        if (st == ARPC_ECONNLOST) { /* its words say why it was not sent again, not "was lost" alone */
            lost++;
            size_t len = 0;
            const char *why = arpc_future_data(fs[i], &len);
            assert_non_null(why);
            assert_int_equal(strlen(CALL_LOST_NO_MEMORY), len);
            assert_memory_equal(CALL_LOST_NO_MEMORY, why, len);
        }
        assert_int_not_equal(ARPC_ENOMEM, st); /* each ran: never "could not start" */
        arpc_future_release(fs[i]);
    }
    test_alloc_fail_next(0, 0);
    assert_int_equal(1, test_alloc_sized_failed());
    assert_int_equal(CALLS, atomic_load(&runs)); /* once each: the re-sends got the cached replies */
    assert_int_equal(1, lost);
    assert_int_equal(CALLS - 1, ok);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    cut_proxy_stop(proxy);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* The same calls, but the memory that fails is the waiting calls' array (core/waiting_calls.c)
 * as the loss puts them back to wait, past its first 64 slots: the call that finds no room ends
 * as one the client has no memory to carry on (sent: ARPC_ECONNLOST, CALL_LOST_NO_MEMORY), the
 * others wait and are sent again. */
static void test_wait_without_memory_may_have_run(void **state)
{
    (void)state;
    test_alloc_sized_install();
    atomic_store(&runs, 0);
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.count", h_count, NULL, NULL));
    char saddr[256], paddr[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", saddr, sizeof(saddr)));
    struct cut_proxy *proxy = cut_proxy_start(saddr, paddr, sizeof(paddr));
    assert_non_null(proxy);
    arpc_client *c;
    arpc_client_options co = {.reconnect_max_ms = 50};
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, paddr, &co));
    cut_proxy_swallow_replies(proxy, true);
    static arpc_future *fs[CALLS];
    for (int i = 0; i < CALLS; i++)
        fs[i] = arpc_call_async(c, "t.count", "x", 1, 30000); /* at-most-once */
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, calls.finished), CALLS, TEST_WAIT_MS));
    cut_proxy_hold_new(proxy, true);
    test_alloc_fail_next(WAITING_GROWN, WAITING_GROWN + 1); /* the waiting array, as it grows */
    cut_proxy_cut(proxy);
    cut_proxy_swallow_replies(proxy, false);
    /* The loss has put the calls back to wait (a failure that went elsewhere fails below). */
    assert_true(WAIT_UNTIL(test_alloc_sized_failed() == 1));
    cut_proxy_hold_new(proxy, false);
    int ok = 0, lost = 0;
    for (int i = 0; i < CALLS; i++) {
        int st = arpc_future_wait_for(fs[i], TEST_WAIT_MS);
        ok += st == ARPC_OK;
        if (st == ARPC_ECONNLOST) {
            lost++;
            size_t len = 0;
            const char *why = arpc_future_data(fs[i], &len);
            assert_non_null(why);
            assert_int_equal(strlen(CALL_LOST_NO_MEMORY), len);
            assert_memory_equal(CALL_LOST_NO_MEMORY, why, len);
        }
        assert_int_not_equal(ARPC_ENOMEM, st);
        arpc_future_release(fs[i]);
    }
    test_alloc_fail_next(0, 0);
    assert_int_equal(1, test_alloc_sized_failed());
    assert_int_equal(CALLS, atomic_load(&runs)); /* once each */
    assert_int_equal(1, lost);
    assert_int_equal(CALLS - 1, ok);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    cut_proxy_stop(proxy);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resend_without_memory_may_have_run),
        cmocka_unit_test(test_wait_without_memory_may_have_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
