/*
 * Cancelling an at-most-once call while the client has no connection (docs/SEMANTICS.md, "A
 * call cancelled while disconnected"; docs/PROTOCOL.md, CANCEL). The call was sent, its
 * connection broke, and its caller cancelled it before the client reconnected: the client
 * never sends it again, and no xid can name it any more (the original's died with its
 * connection). A lost connection does not cancel a numbered call on the server (a re-send
 * would attach to it), so a long poll ran on until the server stopped. Now the client names
 * the call by its seq in a CANCEL on its next connection, and the server cancels it wherever
 * it runs: a running handler hears it, a call that has not started never runs, and a late
 * copy of that seq gets the call's result, never a second run. Only the client's own calls:
 * the seq is looked up under the connection's client.
 *
 * The handlers: "park", a long poll that ends only from its on_cancel callback (which replies
 * an error: support/long_poll.h); "block", on an actor of its own, which holds that actor until the test lets it
 * go, so that a call behind it waits in the mailbox, not started. Every wait is for an event
 * (a semaphore, a counter, a frame), bounded; a wait that runs out only fails the test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <string.h>

#include "arpc/arpc.h"
#include "support/block_server.h"
#include "support/cut_proxy.h"
#include "support/long_poll.h"
#include "support/raw_client.h"
#include "support/test_util.h"

#define CLIENT_ID 0x5eedULL
#define INCARNATION 0x1ca7ULL
#define NHOLD 16 /* long polls that hold a connection's input with default options */

static int setup(void **state)
{
    static struct block_server bs;
    long_poll_reset();
    if (block_server_setup(&bs, 0) != 0 ||
        arpc_server_register(bs.bs_server, "park", long_poll, NULL, NULL) != ARPC_OK || block_server_listen(&bs) != 0)
        return -1;
    *state = &bs;
    return 0;
}

static int teardown(void **state)
{
    block_server_teardown(*state); /* a park left running is answered and cancelled by the stop */
    long_poll_fini();
    return 0;
}

static bool send_cancel_seq(struct raw_client *r, uint64_t seq)
{
    uint8_t frame[ARPC_FRAME_HEADER_SIZE + ARPC_CANCEL_SEQ_SIZE];
    size_t n = arpc_frame_encode_cancel_seq(frame, seq);
    return raw_send(r, frame, n);
}

/* An echo on r, answered: the server has read (and acted on) everything r sent before it. */
static void sync_raw(struct raw_client *r, uint64_t xid)
{
    assert_true(raw_request(r, xid, 0, 0, 0, "echo", "e", 1));
    struct raw_frame f;
    assert_true(raw_read(r, &f, false));
    assert_int_equal(f.f.f_kind, ARPC_FRAME_REPLY);
    assert_int_equal(f.f.f_xid, xid);
}

/* This client's connection a (which ran numbered calls) is dropped without a goodbye, and the
 * server has seen it go; b is the same client's next connection. */
static void reconnect_raw(struct block_server *fx, struct raw_client *a, struct raw_client *b)
{
    arpc_server_stats st;
    assert_int_equal(arpc_server_stats(fx->bs_server, &st), ARPC_OK);
    raw_close(a);
    assert_true(server_stat_reaches(fx->bs_server, offsetof(arpc_server_stats, connections_closed),
                                    st.connections_closed + 1, TEST_WAIT_MS));
    assert_true(raw_connect_with(b, fx->bs_addr, CLIENT_ID, NULL, INCARNATION));
}

static void assert_no_handler_left(struct block_server *fx)
{
    assert_true(server_stat_reaches(fx->bs_server, offsetof(arpc_server_stats, handlers_in_flight), 0, TEST_WAIT_MS));
}

/* A client of fx's server through a cut proxy of its own, reconnecting at once. */
static arpc_client *client_through_proxy(struct block_server *fx, struct cut_proxy **proxy)
{
    char paddr[256];
    *proxy = cut_proxy_start(fx->bs_addr, paddr, sizeof(paddr));
    assert_non_null(*proxy);
    arpc_client *c = NULL;
    arpc_client_options co = {.reconnect_min_ms = 1, .reconnect_max_ms = 20};
    assert_int_equal(arpc_client_connect(&c, paddr, &co), ARPC_OK);
    return c;
}

/* The defect as found, through the public client: a long poll runs, the network is cut, the
 * caller cancels while the client cannot reconnect, then the client reconnects. The server's
 * handler hears the cancel, and the call is never sent (nor run) again. */
static void test_cancel_while_disconnected_reaches_the_handler(void **state)
{
    struct block_server *fx = *state;
    struct cut_proxy *proxy = NULL;
    arpc_client *c = client_through_proxy(fx, &proxy);
    arpc_future *f = arpc_call_async(c, "park", "p", 1, ARPC_FOREVER); /* at-most-once, no deadline */
    assert_non_null(f);
    assert_true(long_poll_wait_started(TEST_WAIT_S)); /* the long poll runs */

    cut_proxy_hold_new(proxy, true); /* no connection comes back until the test says so */
    assert_int_equal(cut_proxy_cut(proxy), 1);
    /* The client saw the loss: its call waits to be sent again (it went back to waiting in the
     * same turn of the client's loop, before the cancel's job below can run there). */
    assert_true(client_stat_reaches(c, offsetof(arpc_client_stats, connections_closed), 1, TEST_WAIT_MS));
    assert_true(arpc_future_cancel(f));
    assert_int_equal(arpc_future_wait_for(f, TEST_WAIT_MS), ARPC_ECANCELLED);
    arpc_future_release(f);
    /* The cancel reached the client's loop (it ended the call there) while still disconnected. */
    assert_true(WAIT_UNTIL(arpc_client_pending(c) == 0));
    assert_int_equal(long_poll_cancelled(), 0); /* nothing reached the server yet */

    cut_proxy_hold_new(proxy, false); /* the client reconnects */
    assert_true(long_poll_wait_cancelled(TEST_WAIT_S)); /* the handler heard the cancel */
    void *out = NULL;
    size_t outlen = 0;
    assert_int_equal(arpc_call(c, "echo", "e", 1, &out, &outlen, TEST_WAIT_MS), ARPC_OK);
    arpc_free(out);
    assert_true(arpc_client_connections(c) >= 2);
    assert_int_equal(long_poll_runs(), 1); /* never run again */
    assert_int_equal(long_poll_cancelled(), 1);
    assert_no_handler_left(fx); /* it stopped counting toward the client's limits */
    arpc_client_close(c);
    cut_proxy_stop(proxy);
}

/* Waits until the client's loop has ended every call (a cancel's job ran there). */
static void wait_no_pending(arpc_client *c)
{
    assert_true(WAIT_UNTIL(arpc_client_pending(c) == 0));
}

/* Through proxy: c's long poll runs, then its connection breaks silently (the server sees it go;
 * the client does not notice: no end of stream, the heartbeat not due), new connections are
 * held at the proxy, and the poll is cancelled: its CANCEL by xid goes nowhere. */
static void park_then_cancel_after_a_silent_break(struct block_server *fx, struct cut_proxy *proxy, arpc_client *c)
{
    arpc_future *f = arpc_call_async(c, "park", "p", 1, ARPC_FOREVER); /* at-most-once, no deadline */
    assert_non_null(f);
    assert_true(long_poll_wait_started(TEST_WAIT_S));
    void *out = NULL;
    size_t outlen = 0;
    assert_int_equal(arpc_call(c, "echo", "e", 1, &out, &outlen, TEST_WAIT_MS), ARPC_OK); /* the first answer is in */
    arpc_free(out);
    arpc_server_stats st;
    assert_int_equal(arpc_server_stats(fx->bs_server, &st), ARPC_OK);
    cut_proxy_hold_new(proxy, true);
    assert_int_equal(cut_proxy_cut_silently(proxy), 1);
    assert_true(server_stat_reaches(fx->bs_server, offsetof(arpc_server_stats, connections_closed),
                                    st.connections_closed + 1, TEST_WAIT_MS));
    assert_true(arpc_future_cancel(f));
    assert_int_equal(arpc_future_wait_for(f, TEST_WAIT_MS), ARPC_ECANCELLED);
    arpc_future_release(f);
    wait_no_pending(c);
}

/* The connection broke silently (the server saw it go; the client has not noticed yet: no end
 * of stream, its heartbeat not due) when the caller cancelled: the client sent a CANCEL by xid
 * on a connection that carried nothing any more. Once it noticed and reconnected, it must name
 * the call by its seq, as for a call cancelled while disconnected; before, nothing did, and the
 * long poll ran on until the server stopped. And a call cancelled on a connection that works is
 * answered there, so a later break names nothing (the handler hears one cancel). */
static void test_cancel_after_a_silent_break_reaches_the_handler(void **state)
{
    struct block_server *fx = *state;
    struct cut_proxy *proxy = NULL;
    arpc_client *c = client_through_proxy(fx, &proxy);
    arpc_future *answered = arpc_call_async(c, "park", "p", 1, ARPC_FOREVER);
    assert_true(long_poll_wait_started(TEST_WAIT_S));
    assert_true(arpc_future_cancel(answered)); /* on a working connection: its handler hears it */
    assert_true(long_poll_wait_cancelled(TEST_WAIT_S));
    arpc_future_release(answered);
    park_then_cancel_after_a_silent_break(fx, proxy, c);
    void *out = NULL;
    size_t outlen = 0;
    arpc_client_stats cs;
    assert_int_equal(arpc_client_stats(c, &cs), ARPC_OK);
    assert_int_equal(cs.connections_closed, 0); /* the client has not noticed the break */
    assert_int_equal(long_poll_cancelled(), 1);

    cut_proxy_hold_new(proxy, false);
    assert_int_equal(cut_proxy_cut(proxy), 1); /* now it notices, and reconnects */
    assert_true(long_poll_wait_cancelled(TEST_WAIT_S)); /* the handler heard the cancel */
    assert_int_equal(arpc_call(c, "echo", "e", 1, &out, &outlen, TEST_WAIT_MS), ARPC_OK);
    arpc_free(out);
    assert_int_equal(arpc_client_connections(c), 2);
    assert_int_equal(long_poll_runs(), 2); /* never run again */
    assert_int_equal(long_poll_cancelled(), 2);
    assert_no_handler_left(fx);
    arpc_client_close(c);
    cut_proxy_stop(proxy);
}

/* Told is not heard: the call cancelled after a silent break is named by seq on the next
 * connection, and that one dies too before the server reads it (its path carries the HELLO
 * and nothing more). The connection after names the seq again, and the handler hears it.
 * Found in review: the seqs were forgotten once told, and the long poll ran on. */
static void test_cancel_seq_told_on_a_dying_connection_is_told_again(void **state)
{
    struct block_server *fx = *state;
    struct cut_proxy *proxy = NULL;
    arpc_client *c = client_through_proxy(fx, &proxy);
    park_then_cancel_after_a_silent_break(fx, proxy, c);
    void *out = NULL;
    size_t outlen = 0;

    /* The next connection carries the client's HELLO only: the CANCEL by seq told right after
     * it never reaches the server. */
    uint8_t hello[ARPC_FRAME_HEADER_SIZE + ARPC_HELLO_BODY_SIZE_EXT];
    cut_proxy_forward_first(proxy, (long)arpc_frame_encode_hello(hello, 0, 0, 0, 0));
    cut_proxy_hold_new(proxy, false);
    assert_int_equal(cut_proxy_cut(proxy), 1); /* the client notices, and reconnects */
    assert_true(WAIT_UNTIL(arpc_client_connections(c) >= 2)); /* its HELLO, then at once the tell */
    assert_int_equal(arpc_client_connections(c), 2);
    assert_int_equal(long_poll_cancelled(), 0);

    cut_proxy_forward_first(proxy, 0);
    assert_int_equal(cut_proxy_cut(proxy), 1); /* that one dies: the one after says it again */
    assert_true(long_poll_wait_cancelled(TEST_WAIT_S)); /* the handler heard the cancel */
    assert_int_equal(arpc_call(c, "echo", "e", 1, &out, &outlen, TEST_WAIT_MS), ARPC_OK);
    arpc_free(out);
    assert_int_equal(arpc_client_connections(c), 3);
    assert_int_equal(long_poll_runs(), 1); /* never run again */
    assert_int_equal(long_poll_cancelled(), 1);
    assert_no_handler_left(fx);
    arpc_client_close(c);
    cut_proxy_stop(proxy);
}

/* The same on the wire: the running original's connection is gone, the CANCEL naming its seq
 * comes on the client's next connection. The handler hears it, and a late copy of the seq
 * gets the call's result (what the cancel callback replied), never a second run. */
static void test_cancel_seq_reaches_a_running_call(void **state)
{
    struct block_server *fx = *state;
    struct raw_client a, b;
    assert_true(raw_connect_with(&a, fx->bs_addr, CLIENT_ID, NULL, INCARNATION));
    assert_true(raw_request(&a, 1, 1, 0, 0, "park", "p", 1));
    assert_true(long_poll_wait_started(TEST_WAIT_S));
    reconnect_raw(fx, &a, &b);
    assert_true(send_cancel_seq(&b, 1));
    assert_true(long_poll_wait_cancelled(TEST_WAIT_S));
    assert_no_handler_left(fx);
    assert_true(raw_request(&b, 7, 1, 0, 0, "park", "p", 1)); /* a late copy */
    assert_true(raw_next_is_error(&b, 7, ARPC_EHANDLER));     /* the call's result */
    assert_int_equal(long_poll_runs(), 1);
    assert_int_equal(long_poll_cancelled(), 1);
    raw_close(&b);
}

/* A call that had not started (queued behind a busy actor) when the CANCEL naming its seq
 * came never runs, and "cancelled" is kept as its result: a late copy gets ARPC_ECANCELLED. */
static void test_cancel_seq_of_a_queued_call_keeps_it_from_running(void **state)
{
    struct block_server *fx = *state;
    struct raw_client a, b;
    assert_true(raw_connect_with(&a, fx->bs_addr, CLIENT_ID, NULL, INCARNATION));
    assert_true(raw_request(&a, 1, 1, 0, 0, "block", "1", 1));
    assert_true(block_wait_started()); /* the actor is busy */
    assert_true(raw_request(&a, 2, 2, 0, 0, "block", "2", 1)); /* queued behind it */
    sync_raw(&a, 3);                                           /* it was read, and waits */
    reconnect_raw(fx, &a, &b);
    assert_true(send_cancel_seq(&b, 2));
    sync_raw(&b, 4); /* the CANCEL was read */
    block_release(1); /* the first call ends; the second comes out of the mailbox */
    assert_no_handler_left(fx);
    assert_int_equal(block_runs(), 1);
    assert_true(raw_request(&b, 8, 2, 0, 0, "block", "2", 1)); /* a late copy */
    assert_true(raw_next_is_error(&b, 8, ARPC_ECANCELLED));
    assert_true(raw_request(&b, 9, 1, 0, 0, "block", "1", 1)); /* the first ran: its reply */
    struct raw_frame f;
    assert_true(raw_read(&b, &f, false));
    assert_int_equal(f.f.f_kind, ARPC_FRAME_REPLY);
    assert_int_equal(f.f.f_xid, 9);
    assert_int_equal(block_runs(), 1);
    raw_close(&b);
}

/* The contrast: a CANCEL naming a queued call's xid, on its own connection, is answered
 * ARPC_ECANCELLED and the result is not kept (docs/PROTOCOL.md, CANCEL): the client may still
 * send that seq, and a copy of it is a new call, which runs. */
static void test_cancel_by_xid_of_a_queued_call_is_not_kept(void **state)
{
    struct block_server *fx = *state;
    struct raw_client a;
    assert_true(raw_connect_with(&a, fx->bs_addr, CLIENT_ID, NULL, INCARNATION));
    assert_true(raw_request(&a, 1, 1, 0, 0, "block", "1", 1));
    assert_true(block_wait_started()); /* the actor is busy */
    assert_true(raw_request(&a, 2, 2, 0, 0, "block", "2", 1)); /* queued behind it */
    sync_raw(&a, 3);                                           /* it was read, and waits */
    assert_true(raw_cancel(&a, 2));
    sync_raw(&a, 4); /* the CANCEL was read */
    block_release(1); /* the first call ends; the second comes out of the mailbox, cancelled */
    struct raw_frame f;
    bool replied = false, cancelled = false;
    for (int i = 0; i < 2; i++) { /* two threads answer them: in either order */
        assert_true(raw_read(&a, &f, false));
        if (f.f.f_xid == 1) {
            assert_int_equal(f.f.f_kind, ARPC_FRAME_REPLY);
            replied = true;
        } else {
            assert_int_equal(f.f.f_xid, 2);
            assert_int_equal(f.f.f_kind, ARPC_FRAME_ERROR);
            assert_int_equal(f.f.f_code, ARPC_ECANCELLED);
            cancelled = true;
        }
    }
    assert_true(replied && cancelled);
    assert_true(raw_request(&a, 5, 2, 0, 0, "block", "2", 1)); /* the seq again: a new call */
    assert_true(block_wait_started()); /* it runs (it is not answered "cancelled") */
    block_release(1);
    assert_true(raw_read(&a, &f, false));
    assert_int_equal(f.f.f_kind, ARPC_FRAME_REPLY);
    assert_int_equal(f.f.f_xid, 5);
    assert_int_equal(block_runs(), 2);
    raw_close(&a);
}

/* A CANCEL naming a seq reaches only its own client's calls: another client (another id, the
 * same id in another process: another incarnation, a client that numbers nothing) naming the
 * same seq, and the client itself naming a seq it never used, cancel nothing. Then the client's
 * own CANCEL does. */
static void test_cancel_seq_of_unknown_or_other_client_does_nothing(void **state)
{
    struct block_server *fx = *state;
    struct raw_client a, other_id, other_incarnation, unnumbered;
    assert_true(raw_connect_with(&a, fx->bs_addr, CLIENT_ID, NULL, INCARNATION));
    assert_true(raw_request(&a, 1, 1, 0, 0, "park", "p", 1));
    assert_true(long_poll_wait_started(TEST_WAIT_S));
    assert_true(raw_connect_with(&other_id, fx->bs_addr, CLIENT_ID + 1, NULL, INCARNATION));
    assert_true(raw_connect_with(&other_incarnation, fx->bs_addr, CLIENT_ID, NULL, INCARNATION + 1));
    assert_true(raw_connect(&unnumbered, fx->bs_addr, 0));
    struct raw_client *others[] = {&other_id, &other_incarnation, &unnumbered};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        assert_true(send_cancel_seq(others[i], 1));
        sync_raw(others[i], 10 + i); /* read, and done with */
    }
    assert_true(send_cancel_seq(&a, 2)); /* a seq it never used */
    sync_raw(&a, 20);
    assert_int_equal(long_poll_cancelled(), 0);
    assert_true(send_cancel_seq(&a, 1)); /* its own: the call is cancelled */
    assert_true(long_poll_wait_cancelled(TEST_WAIT_S));
    assert_true(raw_next_is_error(&a, 1, ARPC_EHANDLER));
    assert_int_equal(long_poll_cancelled(), 1);
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++)
        raw_close(others[i]);
    raw_close(&a);
}

/* The next connection holds its input (NHOLD long polls of its own run there): the CANCEL
 * naming the original's seq passes the hold, as a CANCEL for a running call does. */
static void test_cancel_seq_passes_a_held_connection(void **state)
{
    struct block_server *fx = *state;
    struct raw_client a, b;
    assert_true(raw_connect_with(&a, fx->bs_addr, CLIENT_ID, NULL, INCARNATION));
    assert_true(raw_request(&a, 1, 1, 0, 0, "park", "p", 1));
    assert_true(long_poll_wait_started(TEST_WAIT_S));
    reconnect_raw(fx, &a, &b);
    for (uint64_t i = 0; i < NHOLD; i++)
        assert_true(raw_request(&b, 200 + i, 2 + i, 0, 0, "park", "p", 1));
    for (int i = 0; i < NHOLD; i++)
        assert_true(long_poll_wait_started(TEST_WAIT_S)); /* they run: b's input is held */
    assert_true(send_cancel_seq(&b, 1));
    assert_true(long_poll_wait_cancelled(TEST_WAIT_S));
    assert_int_equal(long_poll_cancelled(), 1);
    for (uint64_t i = 0; i < NHOLD; i++) /* the connection's own calls, by seq too */
        assert_true(send_cancel_seq(&b, 2 + i));
    for (int i = 0; i < NHOLD; i++)
        assert_true(long_poll_wait_cancelled(TEST_WAIT_S));
    assert_int_equal(long_poll_cancelled(), NHOLD + 1);
    assert_no_handler_left(fx);
    raw_close(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cancel_while_disconnected_reaches_the_handler, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_after_a_silent_break_reaches_the_handler, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_seq_told_on_a_dying_connection_is_told_again, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_seq_reaches_a_running_call, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_seq_of_a_queued_call_keeps_it_from_running, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_by_xid_of_a_queued_call_is_not_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_seq_of_unknown_or_other_client_does_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_seq_passes_a_held_connection, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
