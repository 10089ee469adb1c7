/*
 * A handler that does not reply, and replies that come too late: the server answers the caller
 * itself at the call's deadline (ARPC_ETIMEDOUT) or at stop (ARPC_EABANDONED); the handler's
 * late reply is dropped and returns ARPC_ETIMEDOUT or ARPC_ESHUTDOWN; a reply after arpc_server_destroy, with
 * the server's own loop or a user loop destroyed too, touches no freed memory (ASan) and frees
 * the request (the leak checker); an at-most-once retry of a call the server answered at its
 * deadline waits for the first run instead of running the handler again. A handler that
 * finishes only from its cancel callback (a long poll) hears of the server's answer through
 * it, and the callback runs once however many CANCEL frames come.
 *
 * Frames go by hand (support/raw_client.h) so the test sees exactly what the server sends,
 * not what the client library makes of it at its own deadline.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "arpc/arpc.h"
#include "support/raw_client.h"
#include "support/test_util.h"

#define CALL_DEADLINE_MS 100

static arpc_request *_Atomic kept;      /* the last request h_keep kept */
static arpc_request *_Atomic kept_first; /* the first */
static atomic_int keep_runs;

/* Keeps the request and returns without replying; the test replies (or not) later. */
static void h_keep(arpc_request *req, void *ctx)
{
    (void)ctx;
    if (atomic_fetch_add(&keep_runs, 1) == 0)
        atomic_store(&kept_first, req);
    atomic_store(&kept, req);
    latch_add();
}

/* A long poll: finishes only from its cancel callback, which replies (late, or not). */
static _Atomic int poll_cancel_runs;
static _Atomic int poll_reply_rc;
static atomic_bool poll_cancel_replies;

static void on_poll_cancel(arpc_request *req, void *arg)
{
    (void)arg;
    atomic_fetch_add(&poll_cancel_runs, 1);
    if (atomic_load(&poll_cancel_replies))
        atomic_store(&poll_reply_rc, arpc_reply(req, "gone", 4));
    latch_add();
}

static void h_poll(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_store(&kept, req);
    int rc = arpc_request_on_cancel(req, on_poll_cancel, NULL);
    latch_add(); /* started (after the callback is set: a cancel now finds it) */
    if (rc != ARPC_OK)
        atomic_store(&poll_reply_rc, rc);
}

/* Inline on the loop: holds the loop thread until the test posts loop_go, so that what the
 * test does meanwhile (a reply from another thread) waits for the loop behind the frames it
 * read with this request. */
static sem_t loop_go;

static void h_hold_loop(arpc_request *req, void *ctx)
{
    (void)ctx;
    latch_add();
    (void)sem_wait_secs(&loop_go, 10); /* the test fails by its own waits if this runs out */
    arpc_reply(req, "held", 4);
}

static arpc_server *make_server(arpc_loop *loop, char *addr, size_t addrlen)
{
    atomic_store(&kept, NULL);
    atomic_store(&kept_first, NULL);
    atomic_store(&keep_runs, 0);
    atomic_store(&poll_cancel_runs, 0);
    atomic_store(&poll_reply_rc, -1);
    atomic_store(&poll_cancel_replies, true);
    latch_reset();
    arpc_server *s;
    arpc_server_options o = {.workers = 2, .loop = loop};
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &o));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.keep", h_keep, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.poll", h_poll, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    arpc_method_options on_loop = {.inline_on_loop = true};
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.hold_loop", h_hold_loop, NULL, &on_loop));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, addrlen));
    return s;
}

/* Reads the next frame but a stop's GOAWAY; checks it is an ERROR with code; returns its xid. */
static uint64_t read_error(struct raw_client *r, int code)
{
    struct raw_frame f;
    do
        assert_true(raw_read(r, &f, false));
    while (f.f.f_kind == ARPC_FRAME_GOAWAY);
    assert_int_equal(ARPC_FRAME_ERROR, f.f.f_kind);
    assert_int_equal(code, f.f.f_code);
    return f.f.f_xid;
}

/* Sends t.keep (xid *xid, at-most-once seq or 0, the 100 ms deadline) until its handler has
 * started, and reads the server's ARPC_ETIMEDOUT for it; *xid is left at the call answered so.
 * A worker that takes the call up only after its budget is spent (on a loaded machine it may)
 * refuses it ARPC_EEXPIRED without running it, and a numbered call's entry is dropped: that
 * call is sent again under the next xid, as this file is about handlers that started. The
 * server answers ARPC_ETIMEDOUT only for a started call. Returns the ms from send to answer. */
static int64_t call_until_started(struct raw_client *r, uint64_t *xid, uint64_t seq, const char *method)
{
    for (int attempt = 0; attempt < 100; attempt++, (*xid)++) {
        int64_t t0 = now_ms();
        assert_true(raw_request(r, *xid, seq, 0, CALL_DEADLINE_MS, method, "x", 1));
        struct raw_frame f;
        do
            assert_true(raw_read(r, &f, false));
        while (f.f.f_kind == ARPC_FRAME_GOAWAY);
        assert_int_equal(ARPC_FRAME_ERROR, f.f.f_kind);
        assert_int_equal(*xid, f.f.f_xid);
        if (f.f.f_code == ARPC_EEXPIRED)
            continue;
        assert_int_equal(ARPC_ETIMEDOUT, f.f.f_code);
        assert_true(latch_wait(1, TEST_WAIT_MS)); /* it started: its handler kept it */
        return now_ms() - t0;
    }
    fail_msg("%s never started within its %d ms in 100 attempts", method, CALL_DEADLINE_MS);
    return -1;
}

static int64_t keep_until_started(struct raw_client *r, uint64_t *xid, uint64_t seq)
{
    return call_until_started(r, xid, seq, "t.keep");
}

/* Reads frames until the one for xid (at most max of them); checks it is a REPLY with body. */
static void expect_reply_among(struct raw_client *r, uint64_t xid, const char *body, int max)
{
    struct raw_frame f;
    for (int i = 0; i < max; i++) {
        assert_true(raw_read(r, &f, false));
        if (f.f.f_xid != xid)
            continue;
        assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
        assert_int_equal(strlen(body), f.body_len);
        assert_memory_equal(body, f.body, f.body_len);
        return;
    }
    fail_msg("no reply for xid %llu", (unsigned long long)xid);
}

/* The handler never replies by the call's 100 ms deadline: the caller is answered
 * ARPC_ETIMEDOUT then, not when the connection or server goes; the handler's reply after
 * that returns ARPC_ETIMEDOUT, is not sent, and frees the request (the leak checker). */
static void test_deadline_answers_a_silent_handler(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = make_server(NULL, addr, sizeof(addr));
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0));
    uint64_t xid = 1;
    int64_t took = keep_until_started(&r, &xid, 0);
    assert_true(took >= CALL_DEADLINE_MS - 5); /* the budget counts from arrival, after the send */
    print_message("deadline answer after %lld ms (deadline %d ms)\n", (long long)took, CALL_DEADLINE_MS);
    assert_int_equal(ARPC_ETIMEDOUT, arpc_reply(atomic_load(&kept), "late", 4));
    /* The late reply was handed to the loop before this call was sent: had it been sent, it
     * would come first. */
    assert_true(raw_request(&r, xid + 1, 0, 0, 0, "t.echo", "next", 4));
    expect_reply_among(&r, xid + 1, "next", 1);
    raw_close(&r);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* Replies that race the deadline: the handler replies as its budget runs out, while the
 * server's deadline fires. Each call gets exactly one answer, and arpc_reply says which:
 * ARPC_OK for the REPLY, ARPC_ETIMEDOUT for the server's ERROR. */
#define RACE_CALLS 64

static _Atomic int race_rc[RACE_CALLS + 1];

static void h_reply_at_deadline(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len;
    const uint8_t *p = arpc_request_data(req, &len);
    while (arpc_request_budget_ms(req) > 0)
        ; /* spin: reply as close to the deadline as the clock allows */
    atomic_store(&race_rc[p[0]], arpc_reply(req, "mine", 4));
    latch_add();
}

static void test_reply_racing_the_deadline(void **state)
{
    (void)state;
    char addr[256];
    atomic_store(&kept, NULL);
    latch_reset();
    arpc_server *s;
    arpc_server_options o = {.workers = 2};
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &o));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.race", h_reply_at_deadline, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0));
    for (uint8_t i = 1; i <= RACE_CALLS; i++) {
        atomic_store(&race_rc[i], -1);
        /* i ms: each ends as the next but one falls due, so two workers start nearly all */
        assert_true(raw_request(&r, i, 0, 0, i, "t.race", &i, 1));
    }
    int got[RACE_CALLS + 1] = {0}, replies = 0, timeouts = 0;
    bool seen[RACE_CALLS + 1] = {false};
    for (int n = 0; n < RACE_CALLS; n++) {
        struct raw_frame f;
        assert_true(raw_read(&r, &f, false));
        assert_true(f.f.f_xid >= 1 && f.f.f_xid <= RACE_CALLS);
        assert_false(seen[f.f.f_xid]); /* one answer per call */
        seen[f.f.f_xid] = true;
        if (f.f.f_kind == ARPC_FRAME_REPLY) {
            got[f.f.f_xid] = ARPC_OK;
            replies++;
        } else {
            assert_int_equal(ARPC_FRAME_ERROR, f.f.f_kind);
            got[f.f.f_xid] = (int)f.f.f_code;
            timeouts += got[f.f.f_xid] == ARPC_ETIMEDOUT;
        }
    }
    /* Nothing more for them: the next frame is the answer to a call sent now. */
    assert_true(raw_request(&r, 1000, 0, 0, 0, "t.echo", "next", 4));
    expect_reply_among(&r, 1000, "next", 1);
    /* Every call has left the workers (its handler returned, or it was refused): each handler
     * that ran has its arpc_reply's result. One that never ran was refused ARPC_EEXPIRED,
     * taken up after its budget; or its worker had begun to take it up when the deadline came:
     * the server answered ARPC_ETIMEDOUT ("may have run") and the refusal that followed was
     * dropped (core/request_dispatch.c marks it started before it looks at the budget, so that
     * the deadline answers a call that may run). */
    assert_true(WAIT_UNTIL(SERVER_STAT(s, handlers_in_flight) == 0));
    for (int i = 1; i <= RACE_CALLS; i++) {
        int rc = atomic_load(&race_rc[i]);
        if (rc != -1)
            assert_int_equal(got[i], rc);
        else
            assert_true(got[i] == ARPC_EEXPIRED || got[i] == ARPC_ETIMEDOUT);
    }
    print_message("%d of %d racing calls got the handler's reply, %d the server's ARPC_ETIMEDOUT\n", replies,
                  RACE_CALLS, timeouts);
    raw_close(&r);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* A stop answers a call whose handler kept its request ARPC_EABANDONED (it ran, so not
 * ARPC_ESHUTDOWN's "did not run"), before the connection closes; the handler's reply from another thread after arpc_server_destroy returns
 * ARPC_ESHUTDOWN and frees the request and what is left of the server. With a user loop,
 * destroyed after the server and before the reply, nothing freed is touched either. */
static void *reply_late(void *arg)
{
    return (void *)(intptr_t)arpc_reply(atomic_load((arpc_request *_Atomic *)arg), "late", 4);
}

static int reply_late_from_thread(arpc_request *_Atomic *req)
{
    pthread_t t;
    void *rc;
    assert_int_equal(0, pthread_create(&t, NULL, reply_late, req));
    assert_int_equal(0, pthread_join(t, &rc));
    return (int)(intptr_t)rc;
}

/* Two kept requests, replied to after the destroy, one with no memory to be had. The
 * counting allocator checks that both are freed, and the server with them. */
static void stop_then_reply_after_destroy(arpc_loop *loop)
{
    char addr[256];
    arpc_server *s = make_server(loop, addr, sizeof(addr));
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0));
    assert_true(raw_request(&r, 1, 0, 0, 0, "t.keep", "x", 1)); /* no deadline */
    assert_true(latch_wait(1, TEST_WAIT_MS));
    assert_true(raw_request(&r, 2, 0, 0, 0, "t.keep", "y", 1));
    assert_true(latch_wait(2, TEST_WAIT_MS));
    assert_int_equal(ARPC_OK, arpc_server_stop(s, 0));
    /* Answered in one step, in no promised order. */
    uint64_t first = read_error(&r, ARPC_EABANDONED);
    assert_true(first == 1 || first == 2);
    assert_int_equal(3 - first, read_error(&r, ARPC_EABANDONED));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    if (loop != NULL) {
        arpc_loop_stop(loop);
        arpc_loop_destroy(loop);
    }
    /* The server answered both calls: a late reply encodes nothing (core/request_tomb.c), so
     * it needs no memory, and frees what is left of its request, the handle. */
    atomic_store(&test_alloc_budget, 0);
    assert_int_equal(ARPC_ESHUTDOWN, reply_late_from_thread(&kept));
    atomic_store(&test_alloc_budget, -1);
    assert_int_equal(ARPC_ESHUTDOWN, reply_late_from_thread(&kept_first));
    raw_close(&r);
}

static void test_reply_after_destroy_own_loop(void **state)
{
    (void)state;
    test_alloc_install();
    stop_then_reply_after_destroy(NULL);
}

static void test_reply_after_destroy_user_loop_destroyed(void **state)
{
    (void)state;
    test_alloc_install();
    arpc_loop *loop;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_start(loop));
    stop_then_reply_after_destroy(loop);
}

/* At most once: the first run of call 1 overran its deadline and was answered ARPC_ETIMEDOUT;
 * its retry (same seq, new xid) waits for that run instead of running the handler again, and
 * gets the first run's reply once the handler gives it. */
static void test_retry_after_deadline_does_not_rerun(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = make_server(NULL, addr, sizeof(addr));
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0x5eed));
    assert_true((r.rc_hello.f_flags & ARPC_HELLO_DEDUP) != 0);
    uint64_t first = 1;
    (void)keep_until_started(&r, &first, 1);
    assert_true(raw_request(&r, first + 1, 1, 0, 0, "t.keep", "x", 1)); /* the retry */
    /* A call behind it on the same connection: once it is answered, the retry was seen. */
    assert_true(raw_request(&r, first + 2, 2, 0, 0, "t.echo", "next", 4));
    expect_reply_among(&r, first + 2, "next", 1);
    assert_int_equal(1, atomic_load(&keep_runs));
    /* The first run replies at last: late for its own caller, the result for the retry. */
    assert_int_equal(ARPC_ETIMEDOUT, arpc_reply(atomic_load(&kept), "first", 5));
    expect_reply_among(&r, first + 1, "first", 1); /* nothing for the first xid: it had its answer */
    assert_int_equal(1, atomic_load(&keep_runs));
    raw_close(&r);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* The server answers a long poll ARPC_ETIMEDOUT at its deadline: the handler's cancel
 * callback runs then (the caller no longer waits), its reply is dropped as late, and the
 * request is freed (the leak checker). Before, the callback never ran and the request was
 * kept for ever. */
static void test_deadline_cancels_a_waiting_handler(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = make_server(NULL, addr, sizeof(addr));
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0));
    uint64_t xid = 1;
    (void)call_until_started(&r, &xid, 0, "t.poll");
    assert_true(latch_wait(2, TEST_WAIT_MS)); /* started, then cancelled */
    assert_int_equal(1, atomic_load(&poll_cancel_runs));
    assert_int_equal(ARPC_ETIMEDOUT, atomic_load(&poll_reply_rc));
    assert_true(raw_request(&r, xid + 1, 0, 0, 0, "t.echo", "next", 4)); /* nothing more for xid */
    expect_reply_among(&r, xid + 1, "next", 1);
    raw_close(&r);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* A stop's answer (ARPC_EABANDONED) cancels a long poll too: its reply returns ARPC_ESHUTDOWN. */
static void test_stop_cancels_a_waiting_handler(void **state)
{
    (void)state;
    test_alloc_install();
    char addr[256];
    arpc_server *s = make_server(NULL, addr, sizeof(addr));
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0));
    assert_true(raw_request(&r, 1, 0, 0, 0, "t.poll", "x", 1)); /* no deadline */
    assert_true(latch_wait(1, TEST_WAIT_MS));
    assert_int_equal(ARPC_OK, arpc_server_stop(s, 0));
    read_error(&r, ARPC_EABANDONED);
    assert_true(latch_wait(2, TEST_WAIT_MS));
    assert_int_equal(1, atomic_load(&poll_cancel_runs));
    assert_int_equal(ARPC_ESHUTDOWN, atomic_load(&poll_reply_rc));
    raw_close(&r);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* A callback set after the server answered (the handler returned, kept its request, and set
 * it later from another thread) runs at once: the call was cancelled already. */
static void test_cancel_callback_set_after_the_answer(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = make_server(NULL, addr, sizeof(addr));
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0));
    uint64_t xid = 1;
    (void)keep_until_started(&r, &xid, 0);
    assert_true(arpc_request_cancelled(atomic_load(&kept)));
    assert_int_equal(ARPC_OK, arpc_request_on_cancel(atomic_load(&kept), on_poll_cancel, NULL));
    assert_int_equal(1, atomic_load(&poll_cancel_runs)); /* at once, here */
    assert_int_equal(ARPC_ETIMEDOUT, atomic_load(&poll_reply_rc));
    raw_close(&r);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* Two CANCEL frames for one call (a client's retry, or a hostile peer): the callback runs
 * once. The handler then replies itself. */
static void test_cancel_callback_runs_once(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = make_server(NULL, addr, sizeof(addr));
    atomic_store(&poll_cancel_replies, false);
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0));
    assert_true(raw_request(&r, 1, 0, 0, 0, "t.poll", "x", 1));
    assert_true(latch_wait(1, TEST_WAIT_MS));
    uint8_t cancel[2 * ARPC_FRAME_HEADER_SIZE];
    size_t n = arpc_frame_encode_header(cancel, ARPC_FRAME_CANCEL, 1, 0);
    n += arpc_frame_encode_header(cancel + n, ARPC_FRAME_CANCEL, 1, 0);
    assert_true(raw_send(&r, cancel, n));
    /* An echo behind them on the same connection: once it is answered, both were read. */
    assert_true(raw_request(&r, 2, 0, 0, 0, "t.echo", "next", 4));
    expect_reply_among(&r, 2, "next", 1);
    assert_true(latch_wait(2, TEST_WAIT_MS));
    assert_int_equal(1, atomic_load(&poll_cancel_runs));
    assert_int_equal(ARPC_OK, arpc_reply(atomic_load(&kept), "done", 4));
    expect_reply_among(&r, 1, "done", 1);
    raw_close(&r);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* A CANCEL read after the handler replied, while its reply is still on its way to the loop
 * (the request is in the cancel table until the reply lands there), does not call back the
 * handler that is done (server.h: "not called once the handler has replied"). The loop is
 * held by an inline call read in the same bytes as the CANCEL, and the reply is made
 * meanwhile, so the loop reads the CANCEL before the reply reaches it. */
static void test_cancel_after_the_reply_calls_nothing(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = make_server(NULL, addr, sizeof(addr));
    assert_int_equal(0, sem_init(&loop_go, 0, 0));
    atomic_store(&poll_cancel_replies, false);
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0));
    assert_true(raw_request(&r, 1, 0, 0, 0, "t.poll", "x", 1));
    assert_true(latch_wait(1, TEST_WAIT_MS)); /* its callback is set */
    /* One write: the loop reads both, runs the inline call and holds there. */
    uint8_t bytes[256];
    size_t n = arpc_frame_encode_request(bytes, ARPC_FRAME_REQUEST, 2, 0, 0, 0, "t.hold_loop", 11, "h", 1);
    n += arpc_frame_encode_header(bytes + n, ARPC_FRAME_CANCEL, 1, 0);
    assert_true(raw_send(&r, bytes, n));
    assert_true(latch_wait(2, TEST_WAIT_MS)); /* the loop is in t.hold_loop */
    assert_int_equal(ARPC_OK, arpc_reply(atomic_load(&kept), "done", 4));
    sem_post(&loop_go);
    expect_reply_among(&r, 2, "held", 2);
    /* An echo behind them: once it is answered, the CANCEL was read and the reply landed. */
    assert_true(raw_request(&r, 3, 0, 0, 0, "t.echo", "next", 4));
    expect_reply_among(&r, 3, "next", 2);
    assert_int_equal(0, atomic_load(&poll_cancel_runs));
    raw_close(&r);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    sem_destroy(&loop_go);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deadline_answers_a_silent_handler),
        cmocka_unit_test(test_reply_racing_the_deadline),
        cmocka_unit_test_no_leak(test_reply_after_destroy_own_loop),
        cmocka_unit_test_no_leak(test_reply_after_destroy_user_loop_destroyed),
        cmocka_unit_test(test_retry_after_deadline_does_not_rerun),
        cmocka_unit_test(test_deadline_cancels_a_waiting_handler),
        cmocka_unit_test_no_leak(test_stop_cancels_a_waiting_handler),
        cmocka_unit_test(test_cancel_callback_set_after_the_answer),
        cmocka_unit_test(test_cancel_callback_runs_once),
        cmocka_unit_test(test_cancel_after_the_reply_calls_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
