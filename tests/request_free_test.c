/*
 * A handler that never replies costs the server nothing but a tombstone once the server has
 * answered in its place (core/request_tomb.c): at the call's deadline (ARPC_ETIMEDOUT) or at
 * stop (ARPC_EABANDONED), as soon as the handler has returned, the request's payload, its
 * counts (handlers in flight, the connection's calls and bytes) and its pins on the
 * connection and the server are let go. What is left is the handle, which the late reply
 * frees (returning ARPC_ETIMEDOUT or ARPC_ESHUTDOWN), and on which the accessors return
 * nothing. A numbered (at-most-once) call keeps its guarantee: its retry waits for the first
 * run's late result and never runs the handler again.
 *
 * The handlers whose requests are counted run inline on the loop, so that "the handler has
 * returned" is settled before the deadline fires: the counts are exact when the answer is
 * read, no waiting involved. Frames go by hand (support/raw_client.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "arpc/arpc.h"
#include "core/frame.h"
#include "support/raw_client.h"
#include "support/test_util.h"

#define SHORT_DEADLINE_MS 50

static arpc_request *_Atomic kept; /* the last request a keeping handler kept */
static atomic_int keep_runs;

/* Keeps the request and returns without replying; the test replies (or not) later. */
static void h_keep(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&keep_runs, 1);
    atomic_store(&kept, req);
    latch_add();
}

/* Lines the server logs about requests it could not free. */
static atomic_int unfreed_lines;

static void count_unfreed(void *ctx, enum arpc_log_level level, const char *line)
{
    (void)ctx;
    (void)level;
    if (strstr(line, "server destroyed with") != NULL)
        atomic_fetch_add(&unfreed_lines, 1);
}

static void h_hand_off(arpc_request *req, void *ctx); /* test_late_replies_race_the_deadline */

/* On the loop: the kept request's late reply, so that it is booked (core/request_tomb.c runs
 * it in place on the loop's thread) before this call's own reply leaves. Answers 'T' when
 * the late reply returned ARPC_ETIMEDOUT. */
static void h_reply_kept(arpc_request *req, void *ctx)
{
    (void)ctx;
    char verdict = arpc_reply(atomic_load(&kept), "first", 5) == ARPC_ETIMEDOUT ? 'T' : '?';
    arpc_reply(req, &verdict, 1);
}
static void h_block(arpc_request *req, void *ctx);    /* test_freed_when_the_handler_returns_after_the_deadline */

/* counting: install the counting allocator (false: the test did, before making the server's
 * loop, whose blocks it counts too). */
static arpc_server *make_server_counting(arpc_server_options *o, char *addr, size_t addrlen, bool counting)
{
    atomic_store(&kept, NULL);
    atomic_store(&keep_runs, 0);
    atomic_store(&unfreed_lines, 0);
    latch_reset();
    if (counting)
        test_alloc_install();
    arpc_set_logger(count_unfreed, NULL, ARPC_LOG_WARN);
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, o));
    arpc_method_options inline_opts = {.inline_on_loop = true};
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.keep_inline", h_keep, NULL, &inline_opts));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.keep", h_keep, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.hand_off", h_hand_off, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.block", h_block, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.reply_kept", h_reply_kept, NULL, &inline_opts));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, addrlen));
    return s;
}

static arpc_server *make_server(arpc_server_options *o, char *addr, size_t addrlen)
{
    return make_server_counting(o, addr, addrlen, true);
}

static void destroy_server(arpc_server *s)
{
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    assert_int_equal(0, atomic_load(&unfreed_lines));
    arpc_set_logger(NULL, NULL, ARPC_LOG_INFO);
}

static uint64_t handlers_in_flight(arpc_server *s)
{
    arpc_server_stats st;
    assert_int_equal(ARPC_OK, arpc_server_stats(s, &st));
    return st.handlers_in_flight;
}

/* Reads frames until the one for xid (at most max of them): a REPLY with len bytes, the
 * first of them first. */
static void expect_reply(struct raw_client *r, uint64_t xid, const void *body, size_t len, int max)
{
    struct raw_frame f;
    for (int i = 0; i < max; i++) {
        assert_true(raw_read(r, &f, false));
        if (f.f.f_xid != xid)
            continue;
        assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
        assert_int_equal(len, f.body_len);
        assert_memory_equal(body, f.body, len);
        return;
    }
    fail_msg("no reply for xid %llu", (unsigned long long)xid);
}

/* What is left of a request the server answered and let go of answers nothing. */
static void expect_tombstone(arpc_request *req)
{
    size_t len = 99;
    assert_null(arpc_request_data(req, &len));
    assert_int_equal(0, len);
    assert_null(arpc_request_method(req));
    assert_null(arpc_request_peer(req));
    assert_null(arpc_request_peer_subject(req));
    assert_int_equal(0, arpc_request_client_id(req));
    assert_int_equal(0, arpc_request_budget_ms(req));
}

/* Deadline: with one call allowed per connection, the next call on the connection is read
 * only once the silent one no longer counts. */
static void test_deadline_frees_the_request(void **state)
{
    (void)state;
    char addr[256];
    arpc_server_options o = {.workers = 1, .max_calls_per_conn = 1};
    arpc_server *s = make_server(&o, addr, sizeof(addr));
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0));
    assert_true(raw_request(&r, 1, 0, 0, SHORT_DEADLINE_MS, "t.keep_inline", "payload", 7));
    raw_expect_error(&r, 1, ARPC_ETIMEDOUT);
    /* Freed as the deadline fired, before the answer was written. */
    assert_int_equal(0, handlers_in_flight(s));
    arpc_request *req = atomic_load(&kept);
    expect_tombstone(req);
    assert_int_equal(0, arpc_request_seq(req));
    assert_false(arpc_request_is_oneway(req));
    assert_true(raw_request(&r, 2, 0, 0, 0, "t.echo", "next", 4));
    expect_reply(&r, 2, "next", 4, 1);
    /* Needs no memory: nothing is encoded for a call the server answered. */
    atomic_store(&test_alloc_budget, 0);
    assert_int_equal(ARPC_ETIMEDOUT, arpc_reply(req, "late", 4));
    atomic_store(&test_alloc_budget, -1);
    raw_close(&r);
    destroy_server(s);
}

/* The same on a worker, for bytes: a call of 100 KiB waits for the room a silent call of
 * 100 KiB holds (160 KiB a connection), and gets it once the silent call's handler has
 * returned and its deadline passed. Its body was read apart (core/conn_body.c): that buffer
 * goes back too. */
#define BIG (100u * 1024)

static void test_deadline_gives_back_the_connections_bytes(void **state)
{
    (void)state;
    char addr[256];
    arpc_server_options o = {.workers = 1, .max_frame = 160 * 1024, .max_conn_bytes = 160 * 1024};
    arpc_server *s = make_server(&o, addr, sizeof(addr));
    static uint8_t big[BIG];
    fill_pattern(big, 0, sizeof(big));
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0));
    uint64_t xid = 1;
    assert_int_equal(ARPC_ETIMEDOUT, raw_call_taken_in_time(&r, &xid, 0, 0, SHORT_DEADLINE_MS, "t.keep", big, sizeof(big)));
    assert_true(latch_wait(1, RAW_WAIT_MS));
    assert_true(raw_request(&r, xid + 1, 0, 0, 0, "t.echo", big, sizeof(big)));
    expect_reply(&r, xid + 1, big, sizeof(big), 1);
    assert_int_equal(ARPC_ETIMEDOUT, arpc_reply(atomic_load(&kept), "late", 4));
    raw_close(&r);
    destroy_server(s);
}

/* A handler still running when the deadline passes: the call still counts until it returns
 * (the server still spends on it), and no longer once it has. */
static sem_t unblock;

static void h_block(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_store(&kept, req);
    latch_add();
    (void)sem_wait_secs(&unblock, 30);
}

static void test_freed_when_the_handler_returns_after_the_deadline(void **state)
{
    (void)state;
    char addr[256];
    arpc_server_options o = {.workers = 1, .max_calls_per_conn = 1};
    arpc_server *s = make_server(&o, addr, sizeof(addr));
    assert_int_equal(0, sem_init(&unblock, 0, 0));
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0));
    uint64_t xid = 1;
    assert_int_equal(ARPC_ETIMEDOUT, raw_call_taken_in_time(&r, &xid, 0, 0, SHORT_DEADLINE_MS, "t.block", "x", 1));
    assert_true(latch_wait(1, RAW_WAIT_MS));
    assert_int_equal(1, handlers_in_flight(s)); /* blocked in its handler */
    arpc_request *req = atomic_load(&kept);
    size_t len;
    assert_non_null(arpc_request_data(req, &len)); /* intact while the handler runs */
    assert_int_equal(1, len);
    assert_true(raw_request(&r, xid + 1, 0, 0, 0, "t.echo", "next", 4)); /* held: one call a connection */
    sem_post(&unblock);
    expect_reply(&r, xid + 1, "next", 4, 1); /* read once the handler returned */
    assert_int_equal(ARPC_ETIMEDOUT, arpc_reply(req, "late", 4));
    raw_close(&r);
    destroy_server(s);
    sem_destroy(&unblock);
}

/* The late result of a numbered call needs no connection: the caller's connection closed
 * meanwhile, and its retry from a new connection is answered from the reply cache. */
static void test_numbered_late_result_outlives_the_connection(void **state)
{
    (void)state;
    char addr[256];
    arpc_server_options o = {.workers = 1};
    arpc_server *s = make_server(&o, addr, sizeof(addr));
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0x5eed));
    assert_true(raw_request(&r, 1, 1, 0, SHORT_DEADLINE_MS, "t.keep_inline", "x", 1));
    raw_expect_error(&r, 1, ARPC_ETIMEDOUT);
    raw_close(&r);
    assert_int_equal(ARPC_ETIMEDOUT, arpc_reply(atomic_load(&kept), "first", 5));
    assert_true(raw_connect(&r, addr, 0x5eed));
    assert_true(raw_request(&r, 7, 1, 0, 0, "t.keep_inline", "x", 1)); /* the retry */
    expect_reply(&r, 7, "first", 5, 1);
    assert_int_equal(1, atomic_load(&keep_runs));
    raw_close(&r);
    destroy_server(s);
}

/* A client's goodbye (GOAWAY) that finds its numbered call answered at its deadline but
 * still running takes effect once the late result is booked: the reply cache drops the
 * client's replies then, not at its idle expiry. Seen from outside, for a client with an
 * incarnation: the same client id and seq from a new connection (a late copy, as a half-open
 * connection or a replaying proxy would deliver) is refused as acknowledged, neither answered
 * with the reply nor run again. For an older client (no incarnation: its id may come back in
 * its next process, numbering from 1) the same call runs anew. */
static void goodbye_takes_effect_at_the_late_result(uint64_t incarnation)
{
    char addr[256];
    arpc_server_options o = {.workers = 1};
    arpc_server *s = make_server(&o, addr, sizeof(addr));
    struct raw_client r;
    assert_true(raw_connect_with(&r, addr, 0x600d, NULL, incarnation));
    assert_true(raw_request(&r, 1, 1, 0, SHORT_DEADLINE_MS, "t.keep_inline", "x", 1));
    raw_expect_error(&r, 1, ARPC_ETIMEDOUT);
    assert_true(raw_goodbye(&r));
    /* Frames of one connection are taken in order: the goodbye is heard first. */
    assert_true(raw_request(&r, 2, 0, 0, 0, "t.reply_kept", "", 0));
    expect_reply(&r, 2, "T", 1, 1);
    raw_close(&r);
    assert_true(raw_connect_with(&r, addr, 0x600d, NULL, incarnation));
    assert_true(raw_request(&r, 3, 1, 0, 0, "t.keep_inline", "x", 1));
    if (incarnation != 0) {
        raw_expect_error(&r, 3, ARPC_EREJECTED);
        assert_int_equal(1, atomic_load(&keep_runs));
    } else {
        assert_true(latch_wait(2, RAW_WAIT_MS)); /* ran again: forgotten */
        assert_int_equal(2, atomic_load(&keep_runs));
        assert_int_equal(ARPC_OK, arpc_reply(atomic_load(&kept), "second", 6));
        expect_reply(&r, 3, "second", 6, 1);
    }
    raw_close(&r);
    destroy_server(s);
}

static void test_goodbye_takes_effect_at_the_late_result(void **state)
{
    (void)state;
    goodbye_takes_effect_at_the_late_result(0x1ca2);
}

static void test_goodbye_of_an_older_client(void **state)
{
    (void)state;
    goodbye_takes_effect_at_the_late_result(0);
}

/* Stop: the calls are answered ARPC_EABANDONED and freed; after the destroy only their
 * handles are left (two blocks), which their late replies free. */
static void test_stop_frees_the_requests(void **state)
{
    (void)state;
    char addr[256];
    arpc_server_options o = {.workers = 1};
    arpc_server *s = make_server(&o, addr, sizeof(addr));
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0));
    assert_true(raw_request(&r, 1, 0, 0, 0, "t.keep", "x", 1)); /* no deadline */
    assert_true(latch_wait(1, RAW_WAIT_MS));
    arpc_request *first = atomic_load(&kept);
    assert_true(raw_request(&r, 2, 0, 0, 0, "t.keep_inline", "y", 1));
    assert_true(latch_wait(2, RAW_WAIT_MS));
    arpc_request *second = atomic_load(&kept);
    assert_int_equal(ARPC_OK, arpc_server_stop(s, 0));
    assert_int_equal(0, handlers_in_flight(s));
    expect_tombstone(first);
    expect_tombstone(second);
    destroy_server(s);
    raw_close(&r);
    assert_int_equal(2, atomic_load(&test_alloc_live)); /* the two handles, nothing else */
    assert_int_equal(ARPC_ESHUTDOWN, arpc_reply(first, "late", 4));
    assert_int_equal(ARPC_ESHUTDOWN, arpc_reply_error(second, "late"));
}

/* A one-way message whose handler kept it and never finished it: the stop lets go of it like
 * an unanswered call (nothing is sent for it), so after the destroy only its handle is left,
 * which its late finish frees (ARPC_ESHUTDOWN). Before, its payload, counts and pins on the
 * connection and the server stayed for as long as the handler held it. */
static void test_stop_lets_go_of_an_unfinished_oneway(void **state)
{
    (void)state;
    char addr[256];
    arpc_server_options o = {.workers = 1};
    arpc_server *s = make_server(&o, addr, sizeof(addr));
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0));
    uint8_t frame[128];
    size_t n = arpc_frame_encode_request(frame, ARPC_FRAME_ONEWAY, 1, 0, 0, 0, "t.keep_inline", 13, "x", 1);
    assert_true(raw_send(&r, frame, n));
    assert_true(latch_wait(1, RAW_WAIT_MS));
    arpc_request *req = atomic_load(&kept);
    assert_true(arpc_request_is_oneway(req));
    assert_int_equal(1, handlers_in_flight(s));
    assert_int_equal(ARPC_OK, arpc_server_stop(s, 0));
    assert_int_equal(0, handlers_in_flight(s));
    expect_tombstone(req);
    destroy_server(s); /* and no "destroyed with ... not finished" line */
    raw_close(&r);
    assert_int_equal(1, atomic_load(&test_alloc_live)); /* the handle, nothing else */
    assert_int_equal(ARPC_ESHUTDOWN, arpc_reply(req, NULL, 0));
}

/* At most once: the first run of a numbered call is answered at its deadline and freed; its
 * retry waits for that run without running the handler again, and gets its late result. */
static void test_numbered_call_freed_and_run_once(void **state)
{
    (void)state;
    char addr[256];
    arpc_server_options o = {.workers = 1};
    arpc_server *s = make_server(&o, addr, sizeof(addr));
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0x5eed));
    assert_true((r.rc_hello.f_flags & ARPC_HELLO_DEDUP) != 0);
    assert_true(raw_request(&r, 1, 1, 0, SHORT_DEADLINE_MS, "t.keep_inline", "x", 1));
    raw_expect_error(&r, 1, ARPC_ETIMEDOUT);
    assert_int_equal(0, handlers_in_flight(s));
    arpc_request *req = atomic_load(&kept);
    expect_tombstone(req);
    assert_int_equal(1, arpc_request_seq(req)); /* the handle keeps what its late reply needs */
    assert_true(raw_request(&r, 2, 1, 0, 0, "t.keep_inline", "x", 1)); /* the retry */
    assert_true(raw_request(&r, 3, 2, 0, 0, "t.echo", "next", 4));     /* behind it */
    expect_reply(&r, 3, "next", 4, 1);
    assert_int_equal(1, atomic_load(&keep_runs));
    assert_int_equal(ARPC_ETIMEDOUT, arpc_reply(req, "first", 5));
    expect_reply(&r, 2, "first", 5, 1); /* and nothing for xid 1: it had its answer */
    assert_int_equal(1, atomic_load(&keep_runs));
    raw_close(&r);
    destroy_server(s);
}

/* A numbered call answered at its deadline keeps a reference on its server for its late
 * reply; a stop lets go of it: after the destroy only the handle is left, and its late reply
 * is dropped (ARPC_ESHUTDOWN). */
static void test_numbered_tombstone_lets_go_of_its_server_at_stop(void **state)
{
    (void)state;
    char addr[256];
    arpc_server_options o = {.workers = 1};
    arpc_server *s = make_server(&o, addr, sizeof(addr));
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0x5eed));
    assert_true(raw_request(&r, 1, 1, 0, SHORT_DEADLINE_MS, "t.keep_inline", "x", 1));
    raw_expect_error(&r, 1, ARPC_ETIMEDOUT);
    arpc_request *req = atomic_load(&kept);
    destroy_server(s);
    raw_close(&r);
    assert_int_equal(1, atomic_load(&test_alloc_live)); /* the handle: not the server's shell */
    assert_int_equal(ARPC_ESHUTDOWN, arpc_reply(req, "late", 4));
}

/* A late reply when the server runs on the application's loop and that loop was stopped
 * before the server: the reply cannot reach the loop, and the handle stays listed; the
 * server's stop (on the destroying thread) lets go of it and of its reference, once. Before,
 * the reply freed the handle still listed and the stop walked freed memory (a review, under
 * valgrind). Numbered (seq) and not; the leak check sees the handle go. */
static void late_reply_after_its_loop_stopped(uint64_t seq)
{
    char addr[256];
    test_alloc_install();
    arpc_loop *loop;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_start(loop));
    arpc_server_options o = {.workers = 1, .loop = loop};
    arpc_server *s = make_server_counting(&o, addr, sizeof(addr), false);
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0x5eed));
    assert_true(raw_request(&r, 1, seq, 0, SHORT_DEADLINE_MS, "t.keep_inline", "x", 1));
    raw_expect_error(&r, 1, ARPC_ETIMEDOUT);
    arpc_request *req = atomic_load(&kept);
    arpc_loop_stop(loop);
    /* Unnumbered: what the caller was told; numbered: its result could not be kept. */
    assert_int_equal(seq == 0 ? ARPC_ETIMEDOUT : ARPC_ESHUTDOWN, arpc_reply(req, "late", 4));
    raw_close(&r);
    destroy_server(s);
    arpc_loop_destroy(loop);
}

static void test_late_reply_after_its_loop_stopped(void **state)
{
    (void)state;
    late_reply_after_its_loop_stopped(0);
}

static void test_numbered_late_reply_after_its_loop_stopped(void **state)
{
    (void)state;
    late_reply_after_its_loop_stopped(1);
}

/* Late replies from a thread of their own racing the deadline while the handlers return:
 * each call gets exactly one answer, and arpc_reply says which (ARPC_OK: the handler's,
 * ARPC_ETIMEDOUT: the server's); every request is freed (the leak check), whichever of the
 * three (handler's return, deadline, reply) comes last. */
#define RACE_CALLS 48

struct race_call {
    arpc_request *req;
    int64_t reply_at_ms; /* copied while the handler ran: the request may be let go after */
    _Atomic int rc;
};

static struct race_call race[RACE_CALLS + 1];
static sem_t race_ready;

static void h_hand_off(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len;
    const uint8_t *p = arpc_request_data(req, &len);
    struct race_call *c = &race[p[0]];
    c->req = req;
    c->reply_at_ms = now_ms() + arpc_request_budget_ms(req) + p[0] % 3; /* at it, or 1-2 ms after */
    sem_post(&race_ready); /* the replier may reply before we return: both orders are tried */
}

static void *race_replier(void *arg)
{
    (void)arg;
    for (int n = 0; n < RACE_CALLS; n++) {
        if (!sem_wait_secs(&race_ready, 30))
            return NULL;
        for (int i = 1; i <= RACE_CALLS; i++) {
            struct race_call *c = &race[i];
            if (c->req == NULL || atomic_load(&c->rc) != -1)
                continue;
            while (now_ms() < c->reply_at_ms)
                ; /* reply as the deadline passes */
            atomic_store(&c->rc, arpc_reply(c->req, "mine", 4));
            latch_add();
            break;
        }
    }
    return NULL;
}

static void test_late_replies_race_the_deadline(void **state)
{
    (void)state;
    char addr[256];
    arpc_server_options o = {.workers = 1};
    arpc_server *s = make_server(&o, addr, sizeof(addr));
    assert_int_equal(0, sem_init(&race_ready, 0, 0));
    for (int i = 0; i <= RACE_CALLS; i++) {
        race[i].req = NULL;
        atomic_store(&race[i].rc, -1);
    }
    pthread_t t;
    assert_int_equal(0, pthread_create(&t, NULL, race_replier, NULL));
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0));
    int ran = 0, replies = 0;
    for (uint8_t i = 1; i <= RACE_CALLS; i++) {
        assert_true(raw_request(&r, i, 0, 0, 5, "t.hand_off", &i, 1));
        struct raw_frame f;
        assert_true(raw_read(&r, &f, false));
        assert_int_equal(i, f.f.f_xid);
        int got = f.f.f_kind == ARPC_FRAME_REPLY ? ARPC_OK : (int)f.f.f_code;
        if (got == ARPC_EEXPIRED)
            continue; /* taken up after its budget: never ran, nothing to reply to */
        ran++;
        assert_true(latch_wait((unsigned)ran, RAW_WAIT_MS));
        assert_int_equal(got, atomic_load(&race[i].rc));
        replies += got == ARPC_OK;
    }
    print_message("%d of %d calls ran, %d got the handler's reply, %d the server's ARPC_ETIMEDOUT\n", ran,
                  RACE_CALLS, replies, ran - replies);
    raw_close(&r);
    destroy_server(s);
    for (int n = ran; n < RACE_CALLS; n++)
        sem_post(&race_ready); /* the replier waits for as many calls as were sent */
    assert_int_equal(0, pthread_join(t, NULL));
    sem_destroy(&race_ready);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_no_leak(test_deadline_frees_the_request),
        cmocka_unit_test_no_leak(test_deadline_gives_back_the_connections_bytes),
        cmocka_unit_test_no_leak(test_freed_when_the_handler_returns_after_the_deadline),
        cmocka_unit_test_no_leak(test_stop_frees_the_requests),
        cmocka_unit_test_no_leak(test_stop_lets_go_of_an_unfinished_oneway),
        cmocka_unit_test_no_leak(test_numbered_call_freed_and_run_once),
        cmocka_unit_test_no_leak(test_numbered_late_result_outlives_the_connection),
        cmocka_unit_test_no_leak(test_numbered_tombstone_lets_go_of_its_server_at_stop),
        cmocka_unit_test_no_leak(test_late_reply_after_its_loop_stopped),
        cmocka_unit_test_no_leak(test_numbered_late_reply_after_its_loop_stopped),
        cmocka_unit_test_no_leak(test_late_replies_race_the_deadline),
        cmocka_unit_test_no_leak(test_goodbye_takes_effect_at_the_late_result),
        cmocka_unit_test_no_leak(test_goodbye_of_an_older_client),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
