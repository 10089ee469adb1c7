/*
 * The producer's side of a future used on a call's future (one arpc made): its client alone
 * completes it and hears of its cancel.
 * - arpc_future_complete by hand: misuse, reported (abort in debug builds, in a child here;
 *   with NDEBUG false, the call untouched: it completes with the server's reply).
 * - arpc_future_on_cancel: logged and ignored; a cancel still reaches the client.
 * Either way the client still closes. On the old code a hand-completed call's future left
 * its slot and its share of the client held, and arpc_client_close waited for ever (the
 * bounded close below fails); a foreign cancel hook replaced the client's, with the same end.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "arpc/arpc.h"
#include "arpc/log.h"
#include "base/alloc.h"
#include "support/death.h"
#include "support/test_util.h"

#ifdef NDEBUG
static const bool aborts_on_misuse = false;
#else
static const bool aborts_on_misuse = true;
#endif

static char addr[256];

/* A server with t.echo (NULL on failure). Each test, and the death test's child, makes its
 * own: a fork must find no thread running (support/death.h), and one that found a server's
 * hung once under ASan before its client's HELLO (a lock held across the fork). */
static arpc_server *server_up(void)
{
    arpc_server *s;
    if (arpc_server_create(&s, NULL) != ARPC_OK)
        return NULL;
    if (arpc_server_register(s, "t.echo", test_echo, NULL, NULL) != ARPC_OK ||
        arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)) != ARPC_OK) {
        arpc_server_destroy(s);
        return NULL;
    }
    return s;
}

static void close_client(void *arg) { CHECK(arpc_client_close(arg) == ARPC_OK); }

/* In the child of the death test: completes a call's future by hand. */
static void complete_call_future(void *arg)
{
    (void)arg;
    arpc_client *c;
    if (server_up() == NULL || arpc_client_connect(&c, addr, NULL) != ARPC_OK)
        return; /* not the misuse under test: the child exits 0 and the test fails */
    arpc_future *f = arpc_call_async(c, "t.echo", "xy", 2, TEST_WAIT_MS);
    arpc_future_complete(f, ARPC_OK, NULL, 0);
}

static void test_complete_by_hand(void **state)
{
    (void)state;
    if (aborts_on_misuse) {
        assert_true(dies_with_abort(complete_call_future, NULL, "arpc_future_complete on 0x"));
        return;
    }
    arpc_set_logger(NULL, NULL, ARPC_LOG_NONE); /* the report is expected */
    arpc_server *s = server_up();
    assert_non_null(s);
    arpc_client *c;
    assert_int_equal(arpc_client_connect(&c, addr, NULL), ARPC_OK);
    arpc_future *f = arpc_call_async(c, "t.echo", "xy", 2, TEST_WAIT_MS);
    assert_non_null(f);
    char *data = arpc_malloc(4);
    assert_non_null(data);
    assert_false(arpc_future_complete(f, ARPC_EHANDLER, data, 4)); /* refused, data freed */
    assert_int_equal(arpc_future_wait_for(f, TEST_WAIT_MS), ARPC_OK); /* the server's reply */
    size_t len = 0;
    const void *got = arpc_future_data(f, &len);
    assert_int_equal(len, 2);
    assert_memory_equal(got, "xy", 2);
    arpc_future_release(f);
    assert_true(thread_ends_within(close_client, c, TEST_WAIT_S));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    arpc_set_logger(NULL, NULL, ARPC_LOG_ERROR);
}

static int hooked;

static void foreign_hook(arpc_future *f, void *arg)
{
    (void)f;
    (void)arg;
    hooked++;
}

static void test_foreign_cancel_hook(void **state)
{
    (void)state;
    arpc_set_logger(NULL, NULL, ARPC_LOG_NONE); /* the report is expected */
    arpc_server *s = server_up();
    assert_non_null(s);
    arpc_client *c;
    assert_int_equal(arpc_client_connect(&c, addr, NULL), ARPC_OK);
    arpc_future *f = arpc_call_async(c, "t.echo", "xy", 2, TEST_WAIT_MS);
    assert_non_null(f);
    arpc_future_on_cancel(f, foreign_hook, NULL);
    if (arpc_future_cancel(f)) /* (false: the reply came first) */
        assert_int_equal(arpc_future_poll(f), ARPC_ECANCELLED);
    assert_int_equal(hooked, 0);
    arpc_future_release(f);
    assert_true(thread_ends_within(close_client, c, TEST_WAIT_S));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    arpc_set_logger(NULL, NULL, ARPC_LOG_ERROR);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_complete_by_hand),
        cmocka_unit_test(test_foreign_cancel_hook),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
