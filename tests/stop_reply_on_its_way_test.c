/*
 * A reply on its way when the server stops reaches its caller. A handler on an application's
 * actor (which the stop does not wait for) claims its request with arpc_reply just before the
 * stop answers the calls whose handlers have not replied: the stop leaves that call to its
 * reply, which must then be delivered before the connections close. Before, the stop went on
 * and closed them, and the reply was lost (or refused ARPC_ESHUTDOWN, the stop being done by
 * then) with nothing said to the caller, whose call ended at its deadline (review 239: 6 calls
 * in 750 stops under load).
 *
 * With a reply log such a reply leaves once its record is durable: the stop waits for that
 * too, past its grace (review 240: it waited only for the grace, and the reply was lost).
 *
 * The window is held open on purpose: the reply's allocation (a large reply's buffer is an
 * ordinary allocation, through the allocator hook) waits, on the replier's thread, until the
 * stop says it waits for replies on their way (DEBUG line), or, without that wait, until the
 * stop is done.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arpc/arpc.h"
#include "core/server_internal.h"
#include "support/log_capture.h"
#include "support/server_proc.h"
#include "support/test_util.h"

#define BIG (256u << 10) /* a large reply (ARPC_CONN_BODY_MIN and over): its buffer is malloc'd */

static atomic_bool gate_armed, gate_reached;
static _Atomic(arpc_server *) gate_server;

/* The stop has passed its look at replies on their way: it waits for them (said), or it
 * finished without them. */
static bool stop_past_its_look(void)
{
    arpc_server *s = atomic_load(&gate_server);
    return LOG_LINES_WITH("server stop:", "on the way from handlers") > 0 || atomic_load(&s->sv_state) == SV_STOPPED;
}

static void *gated_malloc(size_t n, void *ctx)
{
    (void)ctx;
    if (n >= BIG && n < 2 * BIG && atomic_exchange(&gate_armed, false)) {
        atomic_store(&gate_reached, true);
        while (!stop_past_its_look()) {
            struct timespec ms = {0, 1000000};
            nanosleep(&ms, NULL);
        }
    }
    return malloc(n);
}

static void *plain_realloc(void *p, size_t n, void *ctx)
{
    (void)ctx;
    return realloc(p, n);
}

static void plain_free(void *p, void *ctx)
{
    (void)ctx;
    free(p);
}

static atomic_int reply_rc = 99;

static void big_reply(arpc_request *req, void *ctx)
{
    (void)ctx;
    char *big = malloc(BIG);
    memset(big, 'r', BIG);
    atomic_store(&reply_rc, arpc_reply(req, big, BIG));
    free(big);
}

static void reply_on_its_way(bool with_log)
{
    char dir[256];
    if (with_log)
        server_proc_mkdir(dir, sizeof(dir));
    atomic_store(&gate_reached, false);
    atomic_store(&reply_rc, 99);
    arpc_actor *a;
    assert_int_equal(ARPC_OK, arpc_actor_create(&a, NULL));
    arpc_server_options so = {.workers = 1, .log_dir = with_log ? dir : NULL, .fsync = ARPC_FSYNC_ALWAYS};
    arpc_server *s;
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    arpc_method_options mo = {.actor = a};
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.big", big_reply, NULL, &mo));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    arpc_client_options co = {.max_frame = BIG + 4096};
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &co));
    atomic_store(&gate_server, s);
    log_capture_clear();
    atomic_store(&gate_armed, true);
    arpc_future *f = arpc_call_async(c, "t.big", "x", 1, 5000); /* at-most-once, the default */
    assert_non_null(f);
    assert_true(WAIT_UNTIL(atomic_load(&gate_reached))); /* its handler replied: held in the window */
    assert_int_equal(ARPC_OK, arpc_server_stop(s, 0));

    int st = arpc_future_wait_for(f, TEST_WAIT_MS);
    if (st != ARPC_OK)
        log_capture_print();
    assert_int_equal(ARPC_OK, st);
    size_t len = 0;
    const char *data = arpc_future_data(f, &len);
    assert_int_equal(BIG, len);
    assert_true(data[0] == 'r' && data[BIG - 1] == 'r');
    assert_int_equal(ARPC_OK, atomic_load(&reply_rc));
    assert_int_equal(0, LOG_LINES_WITH("answered ARPC_EABANDONED")); /* it was answered by its reply */
    arpc_future_release(f);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    arpc_actor_destroy(a);
    if (with_log)
        server_proc_rmdir(dir);
}

static void test_a_reply_on_its_way_at_the_stop_reaches_its_caller(void **state)
{
    (void)state;
    reply_on_its_way(false);
}

static void test_with_a_reply_log_too(void **state)
{
    (void)state;
    reply_on_its_way(true);
}

int main(void)
{
    static const arpc_allocator gated = {gated_malloc, plain_realloc, plain_free, NULL};
    arpc_set_allocator(&gated); /* before any other arpc call */
    log_capture_start(ARPC_LOG_DEBUG);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_reply_on_its_way_at_the_stop_reaches_its_caller),
        cmocka_unit_test(test_with_a_reply_log_too),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
