/*
 * Cancelling an at-most-once call through a copy of it (docs/SEMANTICS.md, "A cancelled call
 * after a reconnect"). A client whose connection drops while its numbered call runs re-sends
 * the call on its next connection, under a new xid; the copy waits for the running original
 * (it is attached to it). The client's CANCEL then names the copy's xid: it must reach the
 * original's handler, as a CANCEL on the original's own connection would, or a long poll runs
 * for ever and keeps counting toward its client's limits.
 *
 * The handler here is a long poll (support/long_poll.h): it ends only from its on_cancel
 * callback, which replies an error. Every wait is for an event (a semaphore, the server's
 * counters, a frame), bounded; a wait that runs out only fails the test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <semaphore.h>
#include <string.h>

#include "arpc/arpc.h"
#include "core/frame.h"
#include "support/cut_proxy.h"
#include "support/long_poll.h"
#include "support/raw_client.h"
#include "support/test_util.h"

#define WATCHDOG_S 30
#define CLIENT_ID 0x5eedULL
#define NHOLD 16 /* long polls that hold a connection's input with default options */

struct fixture {
    arpc_server *s;
    char addr[256];
};

static int setup(void **state)
{
    static struct fixture fx;
    long_poll_reset();
    if (arpc_server_create(&fx.s, NULL) != ARPC_OK || /* default options */
        arpc_server_register(fx.s, "park", long_poll, NULL, NULL) != ARPC_OK ||
        arpc_server_register(fx.s, "echo", test_echo, NULL, NULL) != ARPC_OK ||
        arpc_server_listen(fx.s, "tcp://127.0.0.1:0", fx.addr, sizeof(fx.addr)) != ARPC_OK)
        return -1;
    *state = &fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    arpc_server_destroy(fx->s); /* a park left running is answered and cancelled by the stop */
    long_poll_fini();
    return 0;
}

/* The next frame on r is a REPLY to xid. */
static void expect_reply(struct raw_client *r, uint64_t xid)
{
    struct raw_frame f;
    assert_true(raw_read(r, &f, false));
    assert_int_equal(f.f.f_kind, ARPC_FRAME_REPLY);
    assert_int_equal(f.f.f_xid, xid);
}

/* No handler is left running: the cancelled long poll stopped counting. */
static void assert_no_handler_left(struct fixture *fx)
{
    assert_true(server_stat_reaches(fx->s, offsetof(arpc_server_stats, handlers_in_flight), 0, WATCHDOG_S * 1000));
}

/* The defect as found: the original's connection dropped, the copy came on a new one, and the
 * client cancelled the copy. The handler is cancelled; the copy gets what it replied. */
static void test_cancel_copy_after_its_original_connection_dropped(void **state)
{
    struct fixture *fx = *state;
    struct raw_client a, b;
    assert_true(raw_connect(&a, fx->addr, CLIENT_ID));
    assert_true(raw_request(&a, 1, 1, 0, 0, "park", "p", 1));
    assert_true(long_poll_wait_started(WATCHDOG_S)); /* the original runs */
    raw_close(&a);
    /* The server saw the drop before the copy comes. */
    assert_true(server_stat_reaches(fx->s, offsetof(arpc_server_stats, connections_closed), 1, WATCHDOG_S * 1000));
    assert_true(raw_connect(&b, fx->addr, CLIENT_ID));
    assert_true(raw_request(&b, 7, 1, 0, 0, "park", "p", 1)); /* the copy: same seq, new xid */
    assert_true(raw_cancel(&b, 7));                         /* read after it: it is attached */
    assert_true(long_poll_wait_cancelled(WATCHDOG_S));      /* the handler was cancelled */
    assert_true(raw_next_is_error(&b, 7, ARPC_EHANDLER));     /* and the copy got its reply */
    assert_int_equal(long_poll_runs(), 1);
    assert_int_equal(long_poll_cancelled(), 1);
    assert_no_handler_left(fx);
    raw_close(&b);
}

/* The original's connection is still open: the copy's cancel still cancels the call (the same
 * client asked for it), and the original's own request gets the same answer as the copy. */
static void test_cancel_copy_while_its_original_connection_is_open(void **state)
{
    struct fixture *fx = *state;
    struct raw_client a, b;
    assert_true(raw_connect(&a, fx->addr, CLIENT_ID));
    assert_true(raw_request(&a, 1, 1, 0, 0, "park", "p", 1));
    assert_true(long_poll_wait_started(WATCHDOG_S));
    assert_true(raw_connect(&b, fx->addr, CLIENT_ID));
    assert_true(raw_request(&b, 7, 1, 0, 0, "park", "p", 1));
    assert_true(raw_request(&b, 8, 1, 0, 0, "park", "p", 1)); /* a second copy waits too */
    assert_true(raw_cancel(&b, 8));
    assert_true(long_poll_wait_cancelled(WATCHDOG_S));
    assert_true(raw_next_is_error(&a, 1, ARPC_EHANDLER));
    struct raw_frame f;
    for (uint64_t want = 7; want <= 8; want++) { /* in the order they attached */
        assert_true(raw_read(&b, &f, false));
        assert_int_equal(f.f.f_kind, ARPC_FRAME_ERROR);
        assert_int_equal(f.f.f_xid, want);
        assert_int_equal(f.f.f_code, ARPC_EHANDLER);
    }
    assert_int_equal(long_poll_cancelled(), 1);
    assert_no_handler_left(fx);
    raw_close(&a);
    raw_close(&b);
}

/* The next frame on r is ERROR ARPC_ECANCELLED to xid, flagged UNKEPT. */
static void expect_unkept_cancel(struct raw_client *r, uint64_t xid)
{
    struct raw_frame f;
    assert_true(raw_read(r, &f, false));
    assert_int_equal(f.f.f_kind, ARPC_FRAME_ERROR);
    assert_int_equal(f.f.f_xid, xid);
    assert_int_equal(f.f.f_code, ARPC_ECANCELLED);
    assert_true(f.f.f_err_flags & ARPC_ERROR_UNKEPT);
}

static void h_inline_ack(arpc_request *req, void *ctx)
{
    (void)ctx;
    arpc_reply(req, "", 0);
}

static sem_t block_started, block_release;

/* Keeps its worker until the test lets it go. */
static void h_block(arpc_request *req, void *ctx)
{
    (void)ctx;
    sem_post(&block_started);
    (void)sem_wait_secs(&block_release, WATCHDOG_S);
    arpc_reply(req, "", 0);
}

/* A numbered call cancelled by its xid before it started is dropped, and its "did not run" is
 * not kept (docs/PROTOCOL.md, "CANCEL"): a later copy of its seq is a new call. The answer to
 * it and to the copy waiting for it says so (UNKEPT: for these sends only); before, it came
 * unflagged, as a kept refusal that "covers every earlier send" would (a review's probe). */
static void test_cancel_of_a_queued_call_is_unkept(void **state)
{
    (void)state;
    assert_int_equal(0, sem_init(&block_started, 0, 0));
    assert_int_equal(0, sem_init(&block_release, 0, 0));
    arpc_server *s;
    char addr[256];
    arpc_server_options so = {.workers = 1}; /* "block" below holds it: the call waits */
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    arpc_method_options inl = {.inline_on_loop = true};
    assert_int_equal(ARPC_OK, arpc_server_register(s, "block", h_block, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "ack", h_inline_ack, NULL, &inl));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    struct raw_client x, a, b, d;
    assert_true(raw_connect(&x, addr, 0x77));
    assert_true(raw_request(&x, 1, 0, 0, 0, "block", "", 0));
    assert_true(sem_wait_secs(&block_started, WATCHDOG_S)); /* the one worker is busy */
    assert_true(raw_connect(&a, addr, CLIENT_ID));
    assert_true(raw_connect(&b, addr, CLIENT_ID));
    assert_true(raw_request(&a, 1, 1, 0, 0, "echo", "e", 1)); /* queued */
    assert_true(raw_request(&a, 2, 0, 0, 0, "ack", "", 0));
    expect_reply(&a, 2); /* (inline: the call above was read and queued) */
    assert_true(raw_request(&b, 7, 1, 0, 0, "echo", "e", 1)); /* a copy: waits for it */
    assert_true(raw_request(&b, 8, 0, 0, 0, "ack", "", 0));
    expect_reply(&b, 8);
    assert_true(raw_cancel(&a, 1));
    assert_true(raw_request(&a, 3, 0, 0, 0, "ack", "", 0));
    expect_reply(&a, 3); /* the CANCEL was read */
    sem_post(&block_release); /* the worker takes the cancelled call next */
    expect_reply(&x, 1);
    expect_unkept_cancel(&a, 1);
    expect_unkept_cancel(&b, 7);
    assert_true(raw_connect(&d, addr, CLIENT_ID));
    assert_true(raw_request(&d, 9, 1, 0, 0, "echo", "e", 1)); /* a later copy: a new call, as said */
    expect_reply(&d, 9);
    raw_close(&a);
    raw_close(&b);
    raw_close(&d);
    raw_close(&x);
    arpc_server_destroy(s);
    sem_destroy(&block_started);
    sem_destroy(&block_release);
}

/* A cancel for a copy whose call has finished (its reply came first): nothing is left to
 * cancel, nothing happens, and the connection goes on. */
static void test_cancel_copy_after_the_call_finished(void **state)
{
    struct fixture *fx = *state;
    struct raw_client a, b;
    assert_true(raw_connect(&a, fx->addr, CLIENT_ID));
    assert_true(raw_request(&a, 1, 1, 0, 0, "park", "p", 1));
    assert_true(long_poll_wait_started(WATCHDOG_S));
    assert_true(raw_connect(&b, fx->addr, CLIENT_ID));
    assert_true(raw_request(&b, 7, 1, 0, 0, "park", "p", 1));
    assert_true(raw_request(&b, 8, 0, 0, 0, "echo", "e", 1));
    expect_reply(&b, 8); /* read after the copy: it is attached */
    assert_true(raw_cancel(&a, 1));                           /* the original's own cancel */
    assert_true(long_poll_wait_cancelled(WATCHDOG_S));
    assert_true(raw_next_is_error(&a, 1, ARPC_EHANDLER));
    assert_true(raw_next_is_error(&b, 7, ARPC_EHANDLER));
    assert_true(raw_cancel(&b, 7)); /* too late: answered */
    assert_true(raw_request(&b, 9, 0, 0, 0, "echo", "e", 1));
    expect_reply(&b, 9); /* the cancel was read before it, and did nothing */
    assert_int_equal(long_poll_cancelled(), 1);
    assert_int_equal(long_poll_runs(), 1);
    raw_close(&a);
    raw_close(&b);
}

/* The copy's connection holds its input (NHOLD long polls of its own run there): the copy's
 * cancel still passes the hold, as a cancel for a call running on that connection does. */
static void test_cancel_copy_passes_a_held_connection(void **state)
{
    struct fixture *fx = *state;
    struct raw_client a, b;
    assert_true(raw_connect(&a, fx->addr, CLIENT_ID));
    assert_true(raw_request(&a, 1, 1, 0, 0, "park", "p", 1));
    assert_true(long_poll_wait_started(WATCHDOG_S));
    raw_close(&a);
    assert_true(server_stat_reaches(fx->s, offsetof(arpc_server_stats, connections_closed), 1, WATCHDOG_S * 1000));
    assert_true(raw_connect(&b, fx->addr, CLIENT_ID));
    assert_true(raw_request(&b, 100, 1, 0, 0, "park", "p", 1));
    for (uint64_t i = 0; i < NHOLD; i++)
        assert_true(raw_request(&b, 200 + i, 2 + i, 0, 0, "park", "p", 1));
    for (int i = 0; i < NHOLD; i++)
        assert_true(long_poll_wait_started(WATCHDOG_S)); /* they run: b's input is held */
    assert_true(raw_cancel(&b, 100));
    assert_true(long_poll_wait_cancelled(WATCHDOG_S));
    assert_true(raw_next_is_error(&b, 100, ARPC_EHANDLER));
    for (uint64_t i = 0; i < NHOLD; i++) /* the connection's own calls, cancelled as ever */
        assert_true(raw_cancel(&b, 200 + i));
    for (int i = 0; i < NHOLD; i++)
        assert_true(long_poll_wait_cancelled(WATCHDOG_S));
    assert_int_equal(long_poll_cancelled(), NHOLD + 1);
    assert_no_handler_left(fx);
    raw_close(&b);
}

/* The same through the public client: a network cut while the call runs, the client's own
 * re-send after its reconnect, and arpc_future_cancel. */
static void test_future_cancel_after_a_reconnect(void **state)
{
    struct fixture *fx = *state;
    char paddr[256];
    struct cut_proxy *proxy = cut_proxy_start(fx->addr, paddr, sizeof(paddr));
    assert_non_null(proxy);
    arpc_client *c = NULL;
    arpc_client_options co = {.reconnect_min_ms = 1, .reconnect_max_ms = 20};
    assert_int_equal(arpc_client_connect(&c, paddr, &co), ARPC_OK);
    arpc_future *f = arpc_call_async(c, "park", "p", 1, ARPC_FOREVER); /* at-most-once */
    assert_non_null(f);
    assert_true(long_poll_wait_started(WATCHDOG_S));
    assert_int_equal(cut_proxy_cut(proxy), 1);
    /* A call made after the cut leaves on the new connection after the re-sent one (the
     * client re-sends oldest first): its reply means the copy was read and attached. */
    void *out = NULL;
    size_t outlen = 0;
    assert_int_equal(arpc_call(c, "echo", "e", 1, &out, &outlen, WATCHDOG_S * 1000), ARPC_OK);
    arpc_free(out);
    assert_true(arpc_client_connections(c) >= 2);
    assert_true(arpc_future_cancel(f));
    assert_int_equal(arpc_future_wait_for(f, WATCHDOG_S * 1000), ARPC_ECANCELLED);
    arpc_future_release(f);
    assert_true(long_poll_wait_cancelled(WATCHDOG_S)); /* the server's handler heard it */
    assert_int_equal(long_poll_runs(), 1);
    assert_no_handler_left(fx);
    arpc_client_close(c);
    cut_proxy_stop(proxy);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cancel_copy_after_its_original_connection_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_copy_while_its_original_connection_is_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_copy_after_the_call_finished, setup, teardown),
        cmocka_unit_test(test_cancel_of_a_queued_call_is_unkept),
        cmocka_unit_test_setup_teardown(test_cancel_copy_passes_a_held_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_future_cancel_after_a_reconnect, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
