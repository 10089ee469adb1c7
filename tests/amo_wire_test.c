/*
 * At-most-once at the wire: duplicates of one (client id, seq), injected by hand on one
 * connection and on two, while the call runs and after it finished -- the handler runs once
 * and every copy gets the same reply bytes; stale seqs are refused; calls that did not run are
 * not remembered; a retry waits for the running call no longer than its own deadline (then
 * ARPC_ETIMEDOUT, the result kept for the next retry; its connection closed or the server
 * stopped meanwhile); the server's heartbeat closes a silent client; and after kill -9 the reply
 * log still answers a retried call without running it (the server's epoch survives too).
 */
#define _GNU_SOURCE /* memmem */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "support/cut_proxy.h"
#include "support/log_capture.h"
#include "support/raw_client.h"
#include "support/server_proc.h"
#include "support/test_util.h"

static atomic_int runs;
static sem_t gate;

/* Replies with the payload and how many times it has run; holds on "hold". */
static void h_gate(arpc_request *req, void *ctx)
{
    (void)ctx;
    int n = atomic_fetch_add(&runs, 1) + 1;
    size_t len;
    const char *p = arpc_request_data(req, &len);
    latch_add();
    if (len == 4 && memcmp(p, "hold", 4) == 0)
        sem_wait_secs(&gate, 30);
    if (len == 4 && memcmp(p, "fail", 4) == 0) {
        arpc_reply_error(req, "failed on purpose");
        return;
    }
    char out[64];
    int m = snprintf(out, sizeof(out), "%.*s #%d", (int)len, p, n);
    arpc_reply(req, out, (size_t)m);
}

struct fixture {
    arpc_server *s;
    arpc_actor *actor;
    char addr[256];
};

/* The server's heartbeat: the default (15 s) but for the test of it. A raw client answers a
 * PING only while it reads, and these tests keep one silent while they wait for another's
 * calls: a 100 ms heartbeat closed it on a loaded machine, its replies lost. */
static int setup_heartbeat(void **state, uint32_t heartbeat_ms, unsigned misses)
{
    static struct fixture fx;
    atomic_store(&runs, 0);
    latch_reset();
    sem_init(&gate, 0, 0);
    arpc_server_options so = {.workers = 4, .heartbeat_ms = heartbeat_ms, .heartbeat_misses = misses};
    if (arpc_server_create(&fx.s, &so) != ARPC_OK || arpc_actor_create(&fx.actor, NULL) != ARPC_OK)
        return -1;
    arpc_method_options one = {.actor = fx.actor};
    if (arpc_server_register(fx.s, "t.gate", h_gate, NULL, NULL) != ARPC_OK ||
        arpc_server_register(fx.s, "t.serial", h_gate, NULL, &one) != ARPC_OK ||
        arpc_server_listen(fx.s, "tcp://127.0.0.1:0", fx.addr, sizeof(fx.addr)) != ARPC_OK)
        return -1;
    *state = &fx;
    return 0;
}

static int setup(void **state) { return setup_heartbeat(state, 0, 0); }

static int setup_fast_heartbeat(void **state) { return setup_heartbeat(state, 100, 2); }

static int teardown(void **state)
{
    struct fixture *fx = *state;
    for (int i = 0; i < 8; i++)
        sem_post(&gate); /* nothing may stay held */
    arpc_server_destroy(fx->s);
    arpc_actor_destroy(fx->actor);
    sem_destroy(&gate);
    return 0;
}

/* Reads one answer and checks it is for xid; copies its body. */
static void expect_answer(struct raw_client *r, uint64_t xid, uint8_t kind, char *body, size_t *len)
{
    struct raw_frame f;
    assert_true(raw_read(r, &f, false));
    assert_int_equal(kind, f.f.f_kind);
    assert_int_equal(xid, f.f.f_xid);
    assert_true(f.body_len < 256);
    memcpy(body, f.body, f.body_len);
    *len = f.body_len;
}

struct answer {
    uint64_t xid;
    char body[256];
    size_t len;
    bool got;
};

/* Reads one reply per entry of ans, in whatever order they come: replies to different calls
 * leave as their handlers finish (a handler that has started may still be running when
 * another call's reply leaves), so only the set is checked, each xid once. */
static void expect_replies(struct raw_client *r, struct answer *ans, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        struct raw_frame f;
        assert_true(raw_read(r, &f, false));
        assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
        size_t i = 0;
        while (i < n && (ans[i].xid != f.f.f_xid || ans[i].got))
            i++;
        assert_true(i < n); /* one of ours, not seen before */
        assert_true(f.body_len < sizeof(ans[i].body));
        memcpy(ans[i].body, f.body, f.body_len);
        ans[i].len = f.body_len;
        ans[i].got = true;
    }
}

static void test_duplicate_same_connection_while_running(void **state)
{
    struct fixture *fx = *state;
    struct raw_client r;
    assert_true(raw_connect(&r, fx->addr, 77));
    assert_true((r.rc_hello.f_flags & ARPC_HELLO_DEDUP) != 0);
    assert_true(raw_request(&r, 1, 1, 0, 0, "t.gate", "hold", 4));
    assert_true(latch_wait(1, TEST_WAIT_MS)); /* it runs, and holds */
    assert_true(raw_request(&r, 2, 1, 0, 0, "t.gate", "hold", 4)); /* the same call again */
    /* A request behind it on the same connection proves the duplicate was seen first. */
    assert_true(raw_request(&r, 3, 2, 0, 0, "t.gate", "next", 4));
    assert_true(latch_wait(2, TEST_WAIT_MS));
    sem_post(&gate);
    struct answer ans[3] = {{.xid = 1}, {.xid = 2}, {.xid = 3}};
    expect_replies(&r, ans, 3);
    assert_int_equal(ans[0].len, ans[1].len);
    assert_memory_equal(ans[0].body, ans[1].body, ans[0].len); /* byte-identical */
    assert_memory_equal("hold #1", ans[0].body, 7);
    assert_memory_equal("next #2", ans[2].body, 7);
    assert_int_equal(2, atomic_load(&runs)); /* "hold" once, "next" once */
    raw_close(&r);
}

static void test_duplicate_other_connection_while_running(void **state)
{
    struct fixture *fx = *state;
    struct raw_client r1, r2;
    assert_true(raw_connect(&r1, fx->addr, 78));
    assert_true(raw_connect(&r2, fx->addr, 78)); /* the same client, a second connection */
    assert_true(raw_request(&r1, 1, 1, 0, 0, "t.gate", "hold", 4));
    assert_true(latch_wait(1, TEST_WAIT_MS));
    assert_true(raw_request(&r2, 9, 1, 0, 0, "t.gate", "hold", 4));
    assert_true(raw_request(&r2, 10, 2, 0, 0, "t.gate", "next", 4));
    assert_true(latch_wait(2, TEST_WAIT_MS));
    sem_post(&gate);
    struct answer on1[1] = {{.xid = 1}}, on2[2] = {{.xid = 9}, {.xid = 10}};
    expect_replies(&r1, on1, 1);
    expect_replies(&r2, on2, 2);
    assert_int_equal(on1[0].len, on2[0].len);
    assert_memory_equal(on1[0].body, on2[0].body, on1[0].len); /* byte-identical */
    assert_memory_equal("hold #1", on1[0].body, 7);
    assert_memory_equal("next #2", on2[1].body, 7);
    assert_int_equal(2, atomic_load(&runs));
    raw_close(&r1);
    raw_close(&r2);
}

static void test_duplicate_after_completion_and_stale(void **state)
{
    struct fixture *fx = *state;
    struct raw_client r1, r2;
    assert_true(raw_connect(&r1, fx->addr, 79));
    char a[256], b[256], c[256], e1[256], e2[256];
    size_t la, lb, lc, le1, le2;
    assert_true(raw_request(&r1, 1, 1, 0, 0, "t.gate", "once", 4));
    expect_answer(&r1, 1, ARPC_FRAME_REPLY, a, &la);
    assert_true(raw_request(&r1, 2, 1, 0, 0, "t.gate", "once", 4)); /* finished: replayed */
    expect_answer(&r1, 2, ARPC_FRAME_REPLY, b, &lb);
    assert_true(raw_connect(&r2, fx->addr, 79));
    assert_true(raw_request(&r2, 5, 1, 0, 0, "t.gate", "once", 4)); /* and on a new connection */
    expect_answer(&r2, 5, ARPC_FRAME_REPLY, c, &lc);
    assert_int_equal(la, lb);
    assert_int_equal(la, lc);
    assert_memory_equal(a, b, la);
    assert_memory_equal(a, c, la);
    /* A handler's error is a result too: replayed, byte for byte. */
    assert_true(raw_request(&r1, 3, 2, 1, 0, "t.gate", "fail", 4));
    expect_answer(&r1, 3, ARPC_FRAME_ERROR, e1, &le1);
    assert_true(raw_request(&r1, 4, 2, 1, 0, "t.gate", "fail", 4));
    expect_answer(&r1, 4, ARPC_FRAME_ERROR, e2, &le2);
    assert_int_equal(le1, le2);
    assert_memory_equal(e1, e2, le1);
    assert_int_equal(2, atomic_load(&runs));
    /* seq 1 was acknowledged (ack 1 above): it is stale now, refused, never run. */
    assert_true(raw_request(&r1, 6, 1, 1, 0, "t.gate", "once", 4));
    struct raw_frame f;
    assert_true(raw_read(&r1, &f, false));
    assert_int_equal(ARPC_FRAME_ERROR, f.f.f_kind);
    assert_int_equal(6, f.f.f_xid);
    assert_int_equal(ARPC_EREJECTED, f.f.f_code);
    assert_int_equal(2, atomic_load(&runs));
    raw_close(&r1);
    raw_close(&r2);
}

/* A call that did not run (its budget ran out in the queue) keeps that as its result: a copy
 * arriving later, with a budget (an earlier send delayed on a half-open connection, or a
 * proxy's replay: an arpc client never sends a seq again once answered), is told the same
 * and does not run. Before, the copy ran, and the caller that had been told "did not run"
 * was wrong (a chaos trial). The server refuses the call at its deadline, while the call
 * ahead of it still holds the actor (core/request_deadline.c). Once the client's ack covers
 * the seq, a copy is stale, refused, and still not run. */
static void test_not_run_is_remembered(void **state)
{
    struct fixture *fx = *state;
    struct raw_client r;
    assert_true(raw_connect(&r, fx->addr, 80));
    assert_true(raw_request(&r, 1, 1, 0, 0, "t.serial", "hold", 4)); /* occupies the actor */
    assert_true(latch_wait(1, TEST_WAIT_MS));
    assert_true(raw_request(&r, 2, 2, 0, 1, "t.serial", "late", 4)); /* 1 ms budget */
    struct raw_frame f;
    char a[256];
    size_t la;
    assert_true(raw_read(&r, &f, false));
    assert_int_equal(2, f.f.f_xid);
    assert_int_equal(ARPC_FRAME_ERROR, f.f.f_kind);
    assert_int_equal(ARPC_EEXPIRED, f.f.f_code);
    assert_int_equal(0, f.f.f_err_flags); /* kept: it speaks for every send (not ARPC_ERROR_UNKEPT) */
    sem_post(&gate);
    expect_answer(&r, 1, ARPC_FRAME_REPLY, a, &la);
    assert_int_equal(1, atomic_load(&runs));
    assert_true(raw_request(&r, 3, 2, 0, 5000, "t.serial", "late", 4)); /* the late copy */
    assert_true(raw_next_is_error(&r, 3, ARPC_EEXPIRED));
    assert_true(raw_request(&r, 4, 3, 2, 5000, "t.serial", "next", 4)); /* acks 1 and 2 */
    expect_answer(&r, 4, ARPC_FRAME_REPLY, a, &la);
    assert_memory_equal("next #2", a, 7);
    assert_true(raw_request(&r, 5, 2, 2, 5000, "t.serial", "late", 4)); /* after the ack: stale */
    assert_true(raw_next_is_error(&r, 5, ARPC_EREJECTED));
    assert_int_equal(2, atomic_load(&runs)); /* "hold" and "next": "late" never ran */
    raw_close(&r);
}


/* One client's replies, never acknowledged, fill at most its share of the reply cache (half
 * of reply_cache_bytes): its next new call is refused ARPC_EOVERLOADED, saying so, while
 * another client's still runs; its own ack makes room for it again. Before, the first client
 * filled the whole cache, and every other client's numbered calls were refused until it
 * expired (client_expiry_s, ten minutes by default). */
static void test_one_client_cannot_fill_the_cache(void **state)
{
    (void)state;
    enum { PAYLOAD = 4096, MAX_CALLS = 64 };
    arpc_server *s;
    arpc_server_options so = {.reply_cache_bytes = 64 * 1024};
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    static struct raw_client a, b;
    assert_true(raw_connect(&a, addr, 71));
    assert_true(raw_connect(&b, addr, 72));
    static uint8_t payload[PAYLOAD];
    memset(payload, 'p', sizeof(payload));
    struct raw_frame f;
    uint64_t seq;
    for (seq = 1; seq <= MAX_CALLS; seq++) { /* ack 0: nothing is ever acknowledged */
        assert_true(raw_request(&a, seq, seq, 0, 0, "t.echo", payload, sizeof(payload)));
        assert_true(raw_read(&a, &f, false));
        assert_int_equal(seq, f.f.f_xid);
        if (f.f.f_kind != ARPC_FRAME_REPLY)
            break;
    }
    /* It had its half, 32 KiB: a few replies of 4 KiB, each counted with its allocation (an
     * 8 KiB block), the one that would have gone past the share answered but not kept. */
    assert_true(seq > 2 && seq < 16);
    assert_int_equal(ARPC_FRAME_ERROR, f.f.f_kind);
    assert_int_equal(ARPC_EOVERLOADED, f.f.f_code);
    assert_int_equal(ARPC_ERROR_UNKEPT, f.f.f_err_flags); /* nothing kept: it speaks for this send */
    if (memmem(f.f.f_msg, f.f.f_msg_len, "share", 5) == NULL)
        fail_msg("the refusal does not say why: %.*s", (int)f.f.f_msg_len, f.f.f_msg);
    assert_true(raw_request(&b, 1, 1, 0, 0, "t.echo", payload, sizeof(payload))); /* another client */
    assert_true(raw_read(&b, &f, false));
    assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
    assert_true(raw_request(&a, 1000, seq, seq - 1, 0, "t.echo", payload, 16)); /* acks all it had */
    assert_true(raw_read(&a, &f, false));
    assert_int_equal(1000, f.f.f_xid);
    assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
    raw_close(&a);
    raw_close(&b);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* Connects r as client id and calls with 4 KiB replies, never acknowledged, until a call is
 * refused: code and words are the refusal's. Such a refusal keeps nothing (the cache has no
 * room): it says so (ARPC_ERROR_UNKEPT, core/frame.h). */
static void fill_share(const char *addr, struct raw_client *r, uint64_t id, int *code, char *words, size_t len)
{
    static uint8_t payload[4096];
    memset(payload, 'p', sizeof(payload));
    assert_true(raw_connect(r, addr, id));
    struct raw_frame f;
    for (uint64_t seq = 1; seq <= 64; seq++) {
        assert_true(raw_request(r, seq, seq, 0, 0, "t.echo", payload, sizeof(payload)));
        assert_true(raw_read(r, &f, false));
        if (f.f.f_kind != ARPC_FRAME_REPLY) {
            assert_int_equal(ARPC_ERROR_UNKEPT, f.f.f_err_flags);
            *code = (int)f.f.f_code;
            snprintf(words, len, "%.*s", (int)f.f.f_msg_len, f.f.f_msg);
            return;
        }
    }
    fail_msg("client %llu was never refused", (unsigned long long)id);
}

/* An ack rides on any request, one to a method the server lacks included: the replies it
 * acknowledges go (before, the ENOMETHOD path dropped it, and they waited for the next call). */
static void test_ack_on_an_unknown_method(void **state)
{
    (void)state;
    arpc_server *s;
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    static struct raw_client r;
    assert_true(raw_connect(&r, addr, 81));
    struct raw_frame f;
    assert_true(raw_request(&r, 1, 1, 0, 0, "t.echo", "x", 1));
    assert_true(raw_read(&r, &f, false));
    assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
    /* (A reply its worker wrote itself is booked at the loop's next turn.) */
    assert_true(WAIT_UNTIL(SERVER_STAT(s, reply_cache_calls) == 1));
    assert_true(raw_request(&r, 2, 0, 1, 0, "t.none", "x", 1));
    raw_expect_error(&r, 2, ARPC_ENOMETHOD);
    assert_int_equal(0, SERVER_STAT(s, reply_cache_calls));
    raw_close(&r);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* Clients that never acknowledge (killed ones, a soak trial's) fill the whole cache: every
 * numbered call is then refused, and the server says so in a WARN line, once per 10 s, with
 * what fills it (before, it refused every client for the ten minutes of their expiry in
 * silence). */
static void test_full_cache_is_logged(void **state)
{
    (void)state;
    arpc_server *s;
    arpc_server_options so = {.reply_cache_bytes = 64 * 1024};
    char addr[256], words[256];
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    log_capture_start(ARPC_LOG_WARN);
    log_capture_clear();
    static struct raw_client r[4];
    int code = 0;
    fill_share(addr, &r[0], 91, &code, words, sizeof(words)); /* its share: half */
    assert_int_equal(ARPC_EOVERLOADED, code);
    assert_int_equal(0, LOG_LINES_WITH("reply cache is full"));
    fill_share(addr, &r[1], 92, &code, words, sizeof(words)); /* the other half, and more */
    fill_share(addr, &r[2], 93, &code, words, sizeof(words));
    fill_share(addr, &r[3], 94, &code, words, sizeof(words));
    assert_int_equal(ARPC_EOVERLOADED, code);
    assert_non_null(strstr(words, "reply cache is full"));
    if (LOG_LINES_WITH("the reply cache is full", "reply_cache_bytes 65536", "client_expiry_s 600") != 1) {
        log_capture_print();
        fail_msg("expected one WARN line for the full cache");
    }
    /* The stats show it (gauges the loop keeps as it books), in the three views: full, and
     * never past the bound (a reply that would have gone past it was not kept). */
    arpc_server_stats st;
    assert_int_equal(ARPC_OK, arpc_server_stats(s, &st));
    assert_true(st.reply_cache_bytes > 32 * 1024 && st.reply_cache_bytes <= 64 * 1024);
    assert_true(st.reply_cache_clients >= 2);
    assert_true(st.reply_cache_calls >= 8);
    char *text = NULL;
    assert_int_equal(ARPC_OK, arpc_server_stats_json(s, &text, NULL));
    assert_non_null(strstr(text, "\"reply_cache_bytes\": "));
    arpc_free(text);
    assert_int_equal(ARPC_OK, arpc_server_stats_prometheus(s, &text, NULL));
    assert_non_null(strstr(text, "\narpc_server_reply_cache_calls "));
    arpc_free(text);
    /* Client 91 acknowledges what it has: its replies go, and the gauges fall. */
    struct raw_frame f;
    assert_true(raw_request(&r[0], 1000, 100, 99, 0, "t.echo", "x", 1));
    assert_true(raw_read(&r[0], &f, false));
    assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
    arpc_server_stats after;
    assert_int_equal(ARPC_OK, arpc_server_stats(s, &after));
    assert_true(after.reply_cache_bytes < st.reply_cache_bytes);
    assert_true(after.reply_cache_calls < st.reply_cache_calls);
    for (int i = 0; i < 4; i++)
        raw_close(&r[i]);
    arpc_set_logger(NULL, NULL, ARPC_LOG_INFO);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* End to end (arpc's client, a path that fails): a call sent on a connection whose server side
 * died silently (the proxy drops what the client writes), sent again on the next connection
 * to a server whose reply cache is full, is refused there keeping nothing (ARPC_ERROR_UNKEPT):
 * the first send may still reach the server (a half-open path's bytes, a proxy's replay), so
 * its caller hears ARPC_ECONNLOST, "may have run", with the server's words. Before, it heard
 * ARPC_EOVERLOADED, "did not run". */
static void test_unkept_refusal_of_a_resend_end_to_end(void **state)
{
    (void)state;
    arpc_server *s;
    arpc_server_options so = {.reply_cache_bytes = 64 * 1024};
    char addr[256], paddr[256], words[256] = "";
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    struct cut_proxy *proxy = cut_proxy_start(addr, paddr, sizeof(paddr));
    assert_non_null(proxy);
    arpc_client *c;
    arpc_client_options co = {.reconnect_min_ms = 1, .reconnect_max_ms = 20};
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, paddr, &co));
    static struct raw_client fill[4];
    int code = 0;
    for (int i = 0; i < 4 && strstr(words, "reply cache is full") == NULL; i++)
        fill_share(addr, &fill[i], 191 + (uint64_t)i, &code, words, sizeof(words));
    if (strstr(words, "reply cache is full") == NULL)
        fail_msg("the cache did not fill: %s", words);
    assert_int_equal(1, cut_proxy_cut_silently(proxy));
    arpc_client_stats before, now;
    assert_int_equal(ARPC_OK, arpc_client_stats(c, &before));
    arpc_future *f = arpc_call_async(c, "t.echo", "x", 1, ARPC_FOREVER);
    assert_true(WAIT_UNTIL(arpc_client_stats(c, &now) == ARPC_OK && now.bytes_out > before.bytes_out)); /* sent */
    assert_int_equal(1, cut_proxy_cut(proxy)); /* the client reconnects and sends it again */
    assert_int_equal(ARPC_ECONNLOST, arpc_future_wait_for(f, TEST_WAIT_MS));
    const char *why = arpc_future_data(f, NULL);
    assert_non_null(why);
    if (strstr(why, "ARPC_EOVERLOADED") == NULL || strstr(why, "may have run") == NULL)
        fail_msg("the outcome does not say why: \"%s\"", why);
    arpc_future_release(f);
    arpc_client_close(c);
    for (int i = 0; i < 4; i++)
        raw_close(&fill[i]); /* (one never opened: fd 0, left alone) */
    cut_proxy_stop(proxy);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* Nor can one identity by making up client ids: the clients of one token share one share.
 * Clients 81 and 82 (token "alpha") fill it together, each with half; then 81 and a new id of
 * "alpha" are refused, while a client of "beta" gets in. */
static void test_one_identity_cannot_fill_the_cache(void **state)
{
    (void)state;
    enum { PAYLOAD = 4096 };
    static const arpc_auth_token tokens[] = {{"alpha", 5, 0}, {"beta", 4, 0}, {NULL, 0, 0}};
    arpc_server *s;
    arpc_server_options so = {.reply_cache_bytes = 64 * 1024, .authenticate = arpc_auth_fixed_tokens,
                              .authenticate_ctx = (void *)tokens};
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    static struct raw_client a1, a2, a3, b;
    assert_true(raw_connect_with(&a1, addr, 81, "alpha", 0));
    assert_true(raw_connect_with(&a2, addr, 82, "alpha", 0));
    static uint8_t payload[PAYLOAD];
    memset(payload, 'p', sizeof(payload));
    struct raw_frame f;
    uint64_t seq;
    for (seq = 1; seq <= 64; seq++) { /* in turns, ack 0: nothing is ever acknowledged */
        struct raw_client *r = seq % 2 != 0 ? &a1 : &a2;
        assert_true(raw_request(r, seq, (seq + 1) / 2, 0, 0, "t.echo", payload, sizeof(payload)));
        assert_true(raw_read(r, &f, false));
        assert_int_equal(seq, f.f.f_xid);
        if (f.f.f_kind != ARPC_FRAME_REPLY)
            break;
    }
    assert_true(seq > 2 && seq < 16); /* the two had one share between them (as above) */
    assert_int_equal(ARPC_FRAME_ERROR, f.f.f_kind);
    assert_int_equal(ARPC_EOVERLOADED, f.f.f_code);
    if (memmem(f.f.f_msg, f.f.f_msg_len, "identity", 8) == NULL)
        fail_msg("the refusal does not say why: %.*s", (int)f.f.f_msg_len, f.f.f_msg);
    assert_true(raw_connect_with(&a3, addr, 83, "alpha", 0)); /* a new id of it: the same share */
    assert_true(raw_request(&a3, 1, 1, 0, 0, "t.echo", payload, sizeof(payload)));
    assert_true(raw_next_is_error(&a3, 1, ARPC_EOVERLOADED));
    assert_true(raw_connect_with(&b, addr, 81, "beta", 0)); /* another identity, even as id 81 */
    assert_true(raw_request(&b, 1, 1, 0, 0, "t.echo", payload, sizeof(payload)));
    assert_true(raw_read(&b, &f, false));
    assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
    raw_close(&a1);
    raw_close(&a2);
    raw_close(&a3);
    raw_close(&b);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* r sends seq 1 of its client again with a deadline (ms), and a new call (seq 2) behind it,
 * whose reply proves the retry was admitted (attached) before it. */
static void send_retry_attached(struct raw_client *r, const char *method, uint64_t xid, uint32_t deadline_ms)
{
    assert_true(raw_request(r, xid, 1, 0, deadline_ms, method, "hold", 4));
    assert_true(raw_request(r, xid + 1, 2, 0, 0, "t.gate", "next", 4));
    char a[256];
    size_t la;
    expect_answer(r, xid + 1, ARPC_FRAME_REPLY, a, &la);
    assert_memory_equal("next #2", a, 7);
}

/* Lets the held original finish; a third copy of seq 1 on r (no deadline: it attaches if the
 * original's reply is not made yet, else it is replayed) gets its result. The original's
 * reply is not read on r1. */
static void expect_third_copy(struct raw_client *r, uint64_t xid, int runs_before)
{
    sem_post(&gate);
    char a[256];
    size_t la;
    assert_true(raw_request(r, xid, 1, 0, 0, "t.gate", "hold", 4));
    expect_answer(r, xid, ARPC_FRAME_REPLY, a, &la);
    assert_int_equal(7, la);
    assert_memory_equal("hold #1", a, 7); /* the first run's */
    assert_int_equal(runs_before, atomic_load(&runs));
}

/* A retry waits for the running original no longer than its own deadline: it is answered
 * ARPC_ETIMEDOUT while the handler still runs; the handler's result is kept, and a later
 * retry gets it without a second run. */
static void test_retry_deadline_while_running(void **state)
{
    struct fixture *fx = *state;
    struct raw_client r1, r2;
    assert_true(raw_connect(&r1, fx->addr, 82));
    assert_true(raw_connect(&r2, fx->addr, 82));
    assert_true(raw_request(&r1, 1, 1, 0, 0, "t.gate", "hold", 4));
    assert_true(latch_wait(1, TEST_WAIT_MS)); /* it runs, and holds */
    assert_true(raw_request(&r2, 9, 1, 0, 50, "t.gate", "hold", 4)); /* a retry with 50 ms */
    assert_true(raw_next_is_error(&r2, 9, ARPC_ETIMEDOUT));
    assert_int_equal(1, atomic_load(&runs)); /* still the first run, still held */
    expect_third_copy(&r2, 10, 1);
    raw_close(&r1);
    raw_close(&r2);
}

/* A retry's connection closes while its deadline is armed: the deadline still fires (the
 * waiter holds the connection's record), answers nobody, and frees it once. */
static void test_retry_deadline_after_close(void **state)
{
    struct fixture *fx = *state;
    struct raw_client r1, r2, r3;
    assert_true(raw_connect(&r1, fx->addr, 83));
    assert_true(raw_connect(&r2, fx->addr, 83));
    assert_true(raw_connect(&r3, fx->addr, 83));
    assert_true(raw_request(&r1, 1, 1, 0, 0, "t.gate", "hold", 4));
    assert_true(latch_wait(1, TEST_WAIT_MS));
    send_retry_attached(&r2, "t.gate", 9, 300);
    raw_close(&r2);
    /* Armed after r2's with the same budget: r2's has fired once this one has. */
    assert_true(raw_request(&r3, 20, 1, 0, 300, "t.gate", "hold", 4));
    assert_true(raw_next_is_error(&r3, 20, ARPC_ETIMEDOUT));
    expect_third_copy(&r3, 21, 2); /* "hold" once, "next" once */
    raw_close(&r1);
    raw_close(&r3);
}

/* The server stops while a retry waits with its deadline armed: the stop disarms it (after
 * the stop the loop may be destroyed first), and the teardown frees the waiter once. The
 * original runs on the application's actor, which a stop does not wait for: it still holds
 * when the stop closes the connections. */
static void test_retry_deadline_at_stop(void **state)
{
    struct fixture *fx = *state;
    struct raw_client r1, r2;
    assert_true(raw_connect(&r1, fx->addr, 84));
    assert_true(raw_connect(&r2, fx->addr, 84));
    assert_true(raw_request(&r1, 1, 1, 0, 0, "t.serial", "hold", 4));
    assert_true(latch_wait(1, TEST_WAIT_MS));
    send_retry_attached(&r2, "t.serial", 9, 60000);
    assert_int_equal(ARPC_OK, arpc_server_stop(fx->s, 0));
    sem_post(&gate); /* the handler's late reply is dropped */
    raw_close(&r1);
    raw_close(&r2);
}

static void *stop_forever(void *arg)
{
    arpc_server *s = arg;
    assert_int_equal(ARPC_OK, arpc_server_stop(s, ARPC_FOREVER));
    return NULL;
}

/* Reads up to the server's GOAWAY: from then on the server starts no call. */
static void expect_goaway(struct raw_client *r)
{
    struct raw_frame f;
    do
        assert_true(raw_read(r, &f, false));
    while (f.f.f_kind != ARPC_FRAME_GOAWAY);
}

/* A stopping server starts no call, but copies of calls it has seen (re-sent by a client that
 * lost its connection) are answered as copies are: a finished one's result replayed, a running
 * one's when it ends. Only a call it never saw is refused ARPC_ESHUTDOWN ("did not run"). Before,
 * every copy was refused ESHUTDOWN too: a call that ran was reported as not run, and a caller
 * acting on that would run it twice. */
static void test_copies_answered_while_stopping(void **state)
{
    struct fixture *fx = *state;
    struct raw_client r1, r2;
    char body[256];
    size_t len;
    assert_true(raw_connect(&r1, fx->addr, 85));
    assert_true(raw_request(&r1, 1, 1, 0, 0, "t.gate", "done", 4));
    expect_answer(&r1, 1, ARPC_FRAME_REPLY, body, &len);
    assert_true(raw_request(&r1, 2, 2, 0, 0, "t.gate", "hold", 4));
    assert_true(latch_wait(2, TEST_WAIT_MS)); /* seq 2 runs, and holds */
    assert_true(raw_connect(&r2, fx->addr, 85)); /* the same client, as after a reconnect */
    pthread_t stopper;
    assert_int_equal(0, pthread_create(&stopper, NULL, stop_forever, fx->s)); /* waits for seq 2 */
    expect_goaway(&r2);
    assert_true(raw_request(&r2, 11, 1, 0, 0, "t.gate", "done", 4)); /* finished: replayed */
    expect_answer(&r2, 11, ARPC_FRAME_REPLY, body, &len);
    assert_memory_equal("done #1", body, 7);
    assert_true(raw_request(&r2, 12, 2, 0, 0, "t.gate", "hold", 4)); /* running: attached */
    assert_true(raw_request(&r2, 13, 3, 0, 0, "t.gate", "new!", 4)); /* never seen: not run */
    assert_true(raw_next_is_error(&r2, 13, ARPC_ESHUTDOWN)); /* behind the attached copy */
    sem_post(&gate);
    expect_answer(&r2, 12, ARPC_FRAME_REPLY, body, &len);
    assert_memory_equal("hold #2", body, 7);
    assert_int_equal(0, pthread_join(stopper, NULL));
    assert_int_equal(2, atomic_load(&runs)); /* each call once; the refused one not at all */
    raw_close(&r1);
    raw_close(&r2);
}

/* A client that says HELLO and then nothing, answering no PING: the server closes it. */
static void test_server_heartbeat_closes_silent_client(void **state)
{
    struct fixture *fx = *state;
    struct raw_client r;
    assert_true(raw_connect(&r, fx->addr, 81));
    int pings = 0;
    assert_true(raw_wait_eof(&r, &pings));
    assert_int_equal(2, pings); /* heartbeat_misses PINGs, then the close */
    raw_close(&r);
}

/* ---- durability: kill -9 ---- */

static void test_reply_survives_kill(void **state)
{
    (void)state;
    char dir[256];
    server_proc_mkdir(dir, sizeof(dir));
    struct server_proc sp;
    assert_true(server_proc_start(&sp, "tcp://127.0.0.1:0", dir, SERVER_PROC_POOL));
    struct raw_client r;
    assert_true(raw_connect(&r, sp.sp_addr, 91));
    assert_true((r.rc_hello.f_flags & ARPC_HELLO_DURABLE) != 0);
    uint64_t epoch = r.rc_hello.f_client_id;
    uint64_t token = 4242;
    char a[256], b[256];
    size_t la, lb;
    /* The reply came, so its record was written before it left: kill -9, and ask again. */
    assert_true(raw_request(&r, 1, 1, 0, 0, "t.apply", &token, sizeof(token)));
    expect_answer(&r, 1, ARPC_FRAME_REPLY, a, &la);
    raw_close(&r);
    char addr[256];
    snprintf(addr, sizeof(addr), "%s", sp.sp_addr);
    server_proc_kill(&sp);
    assert_true(server_proc_start(&sp, addr, dir, SERVER_PROC_POOL));
    assert_true(raw_connect(&r, sp.sp_addr, 91));
    assert_int_equal(epoch, r.rc_hello.f_client_id); /* the same server, to a client */
    assert_true(raw_request(&r, 2, 1, 0, 0, "t.apply", &token, sizeof(token)));
    expect_answer(&r, 2, ARPC_FRAME_REPLY, b, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(a, b, la); /* the logged reply, not a second run */
    /* Between a reply and its ack: seq 2 carries ack 1; kill -9 again; seq 1 is stale now. */
    token = 4343;
    assert_true(raw_request(&r, 3, 2, 1, 0, "t.apply", &token, sizeof(token)));
    expect_answer(&r, 3, ARPC_FRAME_REPLY, b, &lb);
    raw_close(&r);
    server_proc_kill(&sp);
    assert_true(server_proc_start(&sp, addr, dir, SERVER_PROC_POOL));
    assert_true(raw_connect(&r, sp.sp_addr, 91));
    token = 4242;
    assert_true(raw_request(&r, 4, 1, 1, 0, "t.apply", &token, sizeof(token)));
    struct raw_frame f;
    assert_true(raw_read(&r, &f, false));
    assert_int_equal(ARPC_FRAME_ERROR, f.f.f_kind);
    assert_int_equal(ARPC_EREJECTED, f.f.f_code);
    raw_close(&r);
    uint64_t applied, dups;
    assert_true(server_proc_stats(sp.sp_addr, &applied, &dups));
    assert_int_equal(2, applied);
    assert_int_equal(0, dups);
    server_proc_stop(&sp);
    server_proc_rmdir(dir);
}

int main(int argc, char **argv)
{
    server_proc_main(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_duplicate_same_connection_while_running, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_other_connection_while_running, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_after_completion_and_stale, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_run_is_remembered, setup, teardown),
        cmocka_unit_test(test_ack_on_an_unknown_method),
        cmocka_unit_test(test_full_cache_is_logged),
        cmocka_unit_test(test_one_client_cannot_fill_the_cache),
        cmocka_unit_test(test_one_identity_cannot_fill_the_cache),
        cmocka_unit_test(test_unkept_refusal_of_a_resend_end_to_end),
        cmocka_unit_test_setup_teardown(test_retry_deadline_while_running, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_deadline_after_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_deadline_at_stop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_copies_answered_while_stopping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_heartbeat_closes_silent_client, setup_fast_heartbeat, teardown),
        cmocka_unit_test_teardown(test_reply_survives_kill, server_proc_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
