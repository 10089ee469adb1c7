/*
 * Requests written by their callers' threads (core/client_direct.c): a call made on another
 * thread than the client loop's, while that loop sleeps, is written by its caller and handed
 * to the loop without waking it.
 *
 * Each test makes the loop idle before a call where it must be (it waits for
 * arpc_loop_idle, a condition, not a time), and checks from the client's counters that the
 * path it is about was taken: calls written by their callers, found by their reply's lookup
 * (the reply overtook the hand-off), partial writes whose rest the loop queued. Then: every
 * call's result is its own (unique payloads, echoed), every future completes once, and
 * deadlines, cancels, a connection cut under callers, the client's close and large partial
 * writes behave as on the loop's path; a TLS connection is never written by a caller. Nothing
 * leaks (ASan) and nothing races (TSan).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "arpc/arpc.h"
#include "async/loop_internal.h"
#include "core/client_internal.h"
#include "support/cut_proxy.h"
#include "support/test_util.h"
#ifdef ARPC_TEST_WITH_TLS
#include "support/tls_certs.h"
#endif

#define HELD_MAX 512

/* Held requests; the teardown swaps each slot for CLOSED and answers what it held, and a
 * handler that finds CLOSED answers at once (handlers may still run during the teardown). */
static _Atomic(arpc_request *) held[HELD_MAX];
static atomic_int nheld;
#define CLOSED ((arpc_request *)&nheld)

/* Never answers until the teardown: for deadlines, cancels and the close. */
static void h_hold(arpc_request *req, void *ctx)
{
    (void)ctx;
    int i = atomic_fetch_add(&nheld, 1);
    if (i >= HELD_MAX || atomic_exchange(&held[i], req) == CLOSED)
        arpc_reply(req, "", 0);
}

static sem_t cancel_seen;

static void on_cancel(arpc_request *req, void *arg)
{
    (void)req;
    (void)arg;
    sem_post(&cancel_seen);
}

/* Held as t.hold, and watching for its cancel. */
static void h_wait_cancel(arpc_request *req, void *ctx)
{
    CHECK(arpc_request_on_cancel(req, on_cancel, NULL) == ARPC_OK);
    latch_add();
    h_hold(req, ctx);
}

static sem_t block_go;

/* Inline on the server's loop: holds that loop (nothing reads its connections) until the test
 * or the teardown posts block_go. */
static void h_block(arpc_request *req, void *ctx)
{
    (void)ctx;
    latch_add();
    sem_wait(&block_go);
    arpc_reply(req, "", 0);
}

struct fixture {
    arpc_server *s;
    arpc_client *c;
    char addr[256];
};

static int setup(void **state)
{
    static struct fixture fx;
    atomic_store(&nheld, 0);
    latch_reset();
    sem_init(&cancel_seen, 0, 0);
    sem_init(&block_go, 0, 0);
    for (int i = 0; i < HELD_MAX; i++)
        atomic_store(&held[i], NULL);
    /* A held call's reply is expected small: the server keeps reading behind many of them. */
    arpc_method_options in = {.inline_on_loop = true}, hold = {.reply_bytes_hint = 1};
    if (arpc_server_create(&fx.s, NULL) != ARPC_OK || arpc_server_register(fx.s, "t.echo", test_echo, NULL, NULL) != ARPC_OK ||
        arpc_server_register(fx.s, "t.inline", test_echo, NULL, &in) != ARPC_OK ||
        arpc_server_register(fx.s, "t.block", h_block, NULL, &in) != ARPC_OK ||
        arpc_server_register(fx.s, "t.hold", h_hold, NULL, &hold) != ARPC_OK ||
        arpc_server_register(fx.s, "t.wait-cancel", h_wait_cancel, NULL, &hold) != ARPC_OK ||
        arpc_server_listen(fx.s, "tcp://127.0.0.1:0", fx.addr, sizeof(fx.addr)) != ARPC_OK)
        return -1;
    fx.c = NULL;
    *state = &fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    sem_post(&block_go); /* a test that failed while the server's loop was held */
    if (fx->c != NULL)
        arpc_client_close(fx->c);
    for (int i = 0; i < HELD_MAX; i++) {
        arpc_request *req = atomic_exchange(&held[i], CLOSED);
        if (req != NULL)
            arpc_reply(req, "", 0);
    }
    arpc_server_destroy(fx->s);
    sem_destroy(&cancel_seen);
    sem_destroy(&block_go);
    return 0;
}

static arpc_client *connect_to(const char *addr, enum arpc_call_semantics sem)
{
    arpc_client_options o = {.semantics = sem};
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &o));
    return c;
}

/* Until the client's loop sleeps with nothing to do (bounded: a loop that never does fails
 * the counts checked afterwards, not the wait). */
static void wait_idle(arpc_client *c) { (void)loop_idle_within(c->cl_loop, 10000); }

/* Until every call has ended on the loop too (a cancelled future completes at once; its call
 * ends when the cancel reaches the loop). */
static void wait_no_pending(arpc_client *c)
{
    int64_t end = now_ms() + 30000;
    while (arpc_client_pending(c) != 0 && now_ms() < end)
        sched_yield();
    assert_int_equal(0, arpc_client_pending(c));
}

static uint64_t written(arpc_client *c) { return arpc_stat_get(&c->cl_direct.cd_written); }

/* One call, its payload unique to (who, i), echoed back exactly. */
static int echo_call(arpc_client *c, const char *method, unsigned who, unsigned i, size_t pad)
{
    char head[64];
    int n = snprintf(head, sizeof(head), "%s/%u/%u/", method, who, i);
    size_t len = (size_t)n + pad;
    char *req = malloc(len);
    if (req == NULL)
        return ARPC_ENOMEM;
    memcpy(req, head, (size_t)n);
    fill_pattern((uint8_t *)req + n, i, pad);
    void *reply = NULL;
    size_t rlen = 0;
    int rc = arpc_call(c, method, req, len, &reply, &rlen, 0);
    if (rc == ARPC_OK && (rlen != len || memcmp(reply, req, len) != 0))
        rc = ARPC_EPROTO; /* someone else's reply, or a cut one */
    arpc_free(reply);
    free(req);
    return rc;
}

/* ---- one caller ---- */

static void sequential(struct fixture *fx, const char *method)
{
    enum { N = 200 };
    fx->c = connect_to(fx->addr, 0);
    for (unsigned i = 0; i < N; i++) {
        wait_idle(fx->c);
        assert_int_equal(ARPC_OK, echo_call(fx->c, method, 0, i, i % 64));
    }
    assert_true(written(fx->c) >= N / 2);
    /* What callers wrote counts in bytes_out once the loop has the call: every byte sent was
     * read by the server (nothing is in flight now). */
    arpc_client_stats cs;
    arpc_server_stats ss;
    assert_int_equal(ARPC_OK, arpc_client_stats(fx->c, &cs));
    assert_int_equal(ARPC_OK, arpc_server_stats(fx->s, &ss));
    assert_int_equal(cs.bytes_out, ss.bytes_in);
    assert_int_equal(cs.calls.started, N);
    assert_int_equal(cs.calls.finished, N);
}

static void test_written_by_caller(void **state) { sequential(*state, "t.echo"); }

/* An inline method answers on the server's loop at once: the reply is read before the client
 * loop has taken the call from its caller (no wake-up was posted for it), and its lookup must
 * find it there. */
static void test_reply_overtakes_handoff(void **state)
{
    struct fixture *fx = *state;
    sequential(fx, "t.inline");
    assert_true(arpc_stat_get(&fx->c->cl_direct.cd_by_reply) >= 1);
}

/* ---- many callers ---- */

#define THREADS 8
#define PER_THREAD 300

struct caller {
    pthread_t t;
    arpc_client *c;
    unsigned who;
    unsigned ok, lost;
    atomic_uint *done;
};

static void *many_calls(void *arg)
{
    struct caller *k = arg;
    for (unsigned i = 0; i < PER_THREAD; i++) {
        int rc = echo_call(k->c, i % 2 ? "t.inline" : "t.echo", k->who, i, (k->who * 7 + i) % 200);
        if (rc == ARPC_OK)
            k->ok++;
        else if (rc == ARPC_ECONNLOST)
            k->lost++; /* only when the connection is cut (at-most-once: outcome unknown) */
        else
            CHECK(0);
        if (k->done != NULL)
            atomic_fetch_add(k->done, 1);
    }
    return NULL;
}

static void test_many_threads(void **state)
{
    struct fixture *fx = *state;
    fx->c = connect_to(fx->addr, 0);
    atomic_store(&bad_line, 0);
    struct caller k[THREADS];
    for (unsigned i = 0; i < THREADS; i++) {
        k[i] = (struct caller){.c = fx->c, .who = i};
        assert_int_equal(0, pthread_create(&k[i].t, NULL, many_calls, &k[i]));
    }
    for (unsigned i = 0; i < THREADS; i++) {
        pthread_join(k[i].t, NULL);
        assert_int_equal(PER_THREAD, k[i].ok);
    }
    assert_int_equal(0, atomic_load(&bad_line));
    arpc_client_stats cs;
    assert_int_equal(ARPC_OK, arpc_client_stats(fx->c, &cs));
    assert_int_equal(cs.calls.started, THREADS * PER_THREAD);
    assert_int_equal(cs.calls.finished, THREADS * PER_THREAD);
    assert_int_equal(0, arpc_client_pending(fx->c));
    printf("many threads: %llu of %u calls written by their callers\n", (unsigned long long)written(fx->c),
           THREADS * PER_THREAD);
}

/* ---- deadlines and cancels of calls nobody answers ---- */

/* Short deadlines come before the sweep: the caller wakes the loop. Long ones after it: the
 * sweep takes the call in time. Each ends at its deadline, by the caller's wait alone (a
 * call the loop never took would never end: the test would hang, ctest's timeout fails it). */
static void test_deadline_without_reply(void **state)
{
    struct fixture *fx = *state;
    fx->c = connect_to(fx->addr, 0);
    static const int64_t deadlines[] = {20, 20, 20, 20, 20, 20, 20, 20, 300, 300, 300, 20, 300};
    const unsigned n = sizeof(deadlines) / sizeof(deadlines[0]);
    uint64_t before = written(fx->c);
    for (unsigned i = 0; i < n; i++) {
        wait_idle(fx->c);
        /* ARPC_EEXPIRED when the pool's worker was later than the deadline to take the call (a
         * loaded machine): the server refuses it then, which may reach the client first. */
        int rc = arpc_call(fx->c, "t.hold", "x", 1, NULL, NULL, deadlines[i]);
        assert_true(rc == ARPC_ETIMEDOUT || rc == ARPC_EEXPIRED);
    }
    assert_true(written(fx->c) - before >= n / 2);
    assert_int_equal(0, arpc_client_pending(fx->c));
    wait_idle(fx->c);
    assert_int_equal(ARPC_OK, echo_call(fx->c, "t.echo", 0, 0, 10)); /* the connection is fine */
}

static void test_cancel_written_call(void **state)
{
    struct fixture *fx = *state;
    enum { N = 20 };
    fx->c = connect_to(fx->addr, 0);
    uint64_t before = written(fx->c);
    for (unsigned i = 0; i < N; i++) {
        wait_idle(fx->c);
        arpc_future *f = arpc_call_async(fx->c, "t.hold", "x", 1, 0);
        assert_non_null(f);
        assert_true(arpc_future_cancel(f));
        assert_int_equal(ARPC_ECANCELLED, arpc_future_wait(f));
        arpc_future_release(f);
    }
    wait_no_pending(fx->c);
    /* Counted as they reached the loop, which the cancels made them do. */
    assert_true(written(fx->c) - before >= N / 2);
    wait_idle(fx->c);
    assert_int_equal(ARPC_OK, echo_call(fx->c, "t.echo", 0, 0, 10));
}

/* A call its caller wrote is running on the server when it is cancelled, before the client's
 * loop has seen it (no deadline: nothing woke the loop for it): the cancel still reaches the
 * server, whose handler is told. */
static void test_cancel_reaches_server(void **state)
{
    struct fixture *fx = *state;
    enum { N = 10 };
    fx->c = connect_to(fx->addr, 0);
    atomic_store(&bad_line, 0);
    uint64_t before = written(fx->c);
    for (unsigned i = 0; i < N; i++) {
        wait_idle(fx->c);
        arpc_future *f = arpc_call_async(fx->c, "t.wait-cancel", "x", 1, 0);
        assert_non_null(f);
        assert_true(latch_wait(i + 1, TEST_WAIT_MS)); /* running, with its cancel callback */
        assert_true(arpc_future_cancel(f));
        assert_int_equal(ARPC_ECANCELLED, arpc_future_wait(f));
        arpc_future_release(f);
        assert_true(sem_wait_secs(&cancel_seen, 30));
    }
    wait_no_pending(fx->c);
    assert_true(written(fx->c) - before >= N / 2);
    assert_int_equal(0, atomic_load(&bad_line));
}

/* ---- the connection cut, the client closed ---- */

static void test_connection_cut_while_callers_write(void **state)
{
    struct fixture *fx = *state;
    char paddr[256];
    struct cut_proxy *p = cut_proxy_start(fx->addr, paddr, sizeof(paddr));
    assert_non_null(p);
    fx->c = connect_to(paddr, ARPC_AT_LEAST_ONCE); /* a cut call is sent again: all end OK */
    atomic_store(&bad_line, 0);
    atomic_uint done;
    atomic_init(&done, 0);
    struct caller k[4];
    for (unsigned i = 0; i < 4; i++) {
        k[i] = (struct caller){.c = fx->c, .who = i, .done = &done};
        assert_int_equal(0, pthread_create(&k[i].t, NULL, many_calls, &k[i]));
    }
    /* A cut after every 150 calls done, while the callers go on. */
    int cuts = 0;
    for (unsigned next = 150; next < 4 * PER_THREAD - 150; next += 150) {
        int64_t end = now_ms() + 60000;
        while (atomic_load(&done) < next && now_ms() < end)
            sched_yield();
        cuts += cut_proxy_cut(p);
    }
    unsigned ok = 0;
    for (unsigned i = 0; i < 4; i++) {
        pthread_join(k[i].t, NULL);
        ok += k[i].ok;
        assert_int_equal(0, k[i].lost);
    }
    assert_int_equal(0, atomic_load(&bad_line));
    assert_int_equal(4 * PER_THREAD, ok);
    assert_true(cuts >= 1);
    assert_int_equal(0, arpc_client_pending(fx->c));
    printf("cut %d times: %llu calls written by their callers, %d connections\n", cuts,
           (unsigned long long)written(fx->c), cut_proxy_accepted(p));
    arpc_client_close(fx->c);
    fx->c = NULL;
    cut_proxy_stop(p);
}

struct async_caller {
    pthread_t t;
    arpc_client *c;
    arpc_future *f[50];
};

static void *async_calls(void *arg)
{
    struct async_caller *k = arg;
    for (unsigned i = 0; i < 50; i++)
        k->f[i] = arpc_call_async(k->c, "t.hold", "x", 1, 0);
    return NULL;
}

/* Calls written and never taken by the loop (no reply, no deadline: nothing woke it for
 * them) end at the close, each once, as calls the loop had would. */
static void test_close_with_written_calls(void **state)
{
    struct fixture *fx = *state;
    enum { N = 20 };
    fx->c = connect_to(fx->addr, 0);
    arpc_future *f[N];
    for (unsigned i = 0; i < N; i++) {
        wait_idle(fx->c);
        f[i] = arpc_call_async(fx->c, "t.hold", "x", 1, 0);
        assert_non_null(f[i]);
    }
    assert_non_null(ck_pr_load_ptr(&fx->c->cl_direct.cd_calls.head)); /* some still wait there */
    struct async_caller k[4];
    for (unsigned i = 0; i < 4; i++) {
        k[i].c = fx->c;
        assert_int_equal(0, pthread_create(&k[i].t, NULL, async_calls, &k[i]));
    }
    for (unsigned i = 0; i < 4; i++)
        pthread_join(k[i].t, NULL);
    assert_int_equal(ARPC_OK, arpc_client_close(fx->c));
    fx->c = NULL;
    for (unsigned i = 0; i < N; i++) {
        int st = arpc_future_poll(f[i]);
        assert_true(st == ARPC_ECANCELLED || st == ARPC_ESHUTDOWN); /* sent, or not yet */
        arpc_future_release(f[i]);
    }
    for (unsigned i = 0; i < 4; i++)
        for (unsigned j = 0; j < 50; j++) {
            assert_non_null(k[i].f[j]);
            int st = arpc_future_poll(k[i].f[j]);
            assert_true(st == ARPC_ECANCELLED || st == ARPC_ESHUTDOWN); /* sent, or not yet */
            arpc_future_release(k[i].f[j]);
        }
}

/* ---- partial writes ---- */

#define BIG (6u << 20) /* more than a loopback socket takes at once */

static void *small_calls(void *arg)
{
    struct caller *k = arg;
    for (unsigned i = 0; i < 100; i++)
        CHECK(echo_call(k->c, "t.echo", k->who, i, i % 300) == ARPC_OK);
    return NULL;
}

/* A large request the socket takes only part of: the loop queues the rest first, and the
 * small calls of other threads meanwhile wait behind it (a frame cut by another would make
 * the server close the connection: every call would fail). */
static void test_partial_write(void **state)
{
    struct fixture *fx = *state;
    fx->c = connect_to(fx->addr, 0);
    atomic_store(&bad_line, 0);
    for (unsigned round = 0; round < 3; round++) {
        wait_idle(fx->c);
        struct caller k[2];
        for (unsigned i = 0; i < 2; i++) {
            k[i] = (struct caller){.c = fx->c, .who = 10 + i};
            assert_int_equal(0, pthread_create(&k[i].t, NULL, small_calls, &k[i]));
        }
        assert_int_equal(ARPC_OK, echo_call(fx->c, "t.echo", 0, round, BIG));
        for (unsigned i = 0; i < 2; i++)
            pthread_join(k[i].t, NULL);
    }
    assert_int_equal(0, atomic_load(&bad_line));
}

/* Written in part by its caller for sure: the server's loop is held by an inline handler, so
 * nothing reads the connection, and a fresh socket takes at most its send buffer (set to
 * 64 KiB here, whatever the host's tcp_wmem) and the server's first receive buffer, far less
 * than BIG. (With the server reading, loopback can take all of BIG in one send once the
 * buffers have grown: the CI failure this test replaced.) */
static void test_partial_write_server_not_reading(void **state)
{
    struct fixture *fx = *state;
    fx->c = connect_to(fx->addr, 0);
    int small = 64 * 1024;
    assert_int_equal(0, setsockopt(fx->c->cl_conn.c_fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)));
    arpc_future *blocked = arpc_call_async(fx->c, "t.block", "x", 1, 0);
    assert_non_null(blocked);
    assert_true(latch_wait(1, TEST_WAIT_MS)); /* the server's loop is in h_block */
    char head[64];
    int n = snprintf(head, sizeof(head), "t.echo/1/0/");
    size_t len = (size_t)n + BIG;
    char *req = malloc(len);
    assert_non_null(req);
    memcpy(req, head, (size_t)n);
    fill_pattern((uint8_t *)req + n, 7, BIG);
    uint64_t parts = arpc_stat_get(&fx->c->cl_direct.cd_partial);
    assert_true(loop_idle_within(fx->c->cl_loop, TEST_WAIT_MS));
    arpc_future *big = arpc_call_async(fx->c, "t.echo", req, len, 0);
    assert_non_null(big);
    sem_post(&block_go);
    assert_int_equal(ARPC_OK, arpc_future_wait(blocked));
    assert_int_equal(ARPC_OK, arpc_future_wait(big));
    size_t rlen = 0;
    void *reply = arpc_future_take(big, &rlen);
    assert_int_equal(len, rlen);
    assert_memory_equal(req, reply, len);
    arpc_free(reply);
    arpc_future_release(big);
    arpc_future_release(blocked);
    free(req);
    assert_int_equal(1, arpc_stat_get(&fx->c->cl_direct.cd_partial) - parts);
}

/* A call its caller wrote and the server runs, which the loop has not taken up yet (no
 * deadline, no reply: nothing woke it), ends ARPC_ECANCELLED at the close, as a sent call does:
 * not ARPC_ESHUTDOWN, which says it did not run. */
static void test_close_ends_written_running_call_cancelled(void **state)
{
    struct fixture *fx = *state;
    fx->c = connect_to(fx->addr, 0);
    wait_idle(fx->c);
    arpc_future *f = arpc_call_async(fx->c, "t.hold", "x", 1, 0);
    assert_non_null(f);
    int64_t end = now_ms() + 10000;
    while (atomic_load(&nheld) == 0 && now_ms() < end)
        sched_yield();
    assert_int_equal(1, atomic_load(&nheld)); /* the server runs it */
    if (ck_pr_load_ptr(&fx->c->cl_direct.cd_calls.head) == NULL)
        skip(); /* the loop took it up (a wake-up of its own): not the path this is about */
    assert_int_equal(ARPC_OK, arpc_client_close(fx->c));
    fx->c = NULL;
    assert_int_equal(ARPC_ECANCELLED, arpc_future_poll(f));
    arpc_future_release(f);
}

/* ---- the age of a written call ---- */

static atomic_uint count_runs;
static atomic_bool forgot_client;

static void h_count(arpc_request *req, void *ctx)
{
    atomic_fetch_add(&count_runs, 1);
    test_echo(req, ctx);
}

#define AGED_CLIENT_ID 0x5eed0001ull

static void on_log_forgot(void *ctx, enum arpc_log_level level, const char *line)
{
    (void)ctx;
    (void)level;
    if (strstr(line, "idle: its cached replies are forgotten") != NULL) /* its only client */
        atomic_store(&forgot_client, true);
}

/* A call its caller wrote is as old as that write, not as the moment the loop took it up,
 * which for a call with no deadline and no reply is the connection's loss. Here the reply is
 * lost on the way, the server forgets the idle client (expiry 1 s), then the connection is
 * cut: sending the call again would run it a second time on a server that no longer knows
 * it, so the call ends ARPC_ECONNLOST, having run once. (Before, its send was dated at the
 * loss: the re-send looked safe, and the handler ran twice for one at-most-once call.) */
static void test_written_call_ages_from_its_write(void **state)
{
    (void)state;
    atomic_store(&count_runs, 0);
    atomic_store(&forgot_client, false);
    arpc_set_logger(on_log_forgot, NULL, ARPC_LOG_DEBUG);
    arpc_server_options so = {.client_expiry_s = 1};
    arpc_server *s;
    char addr[ARPC_ADDR_MAX], paddr[256];
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.count", h_count, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    struct cut_proxy *p = cut_proxy_start(addr, paddr, sizeof(paddr));
    assert_non_null(p);
    arpc_client_options co = {.client_id = AGED_CLIENT_ID};
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, paddr, &co));
    wait_idle(c);
    uint64_t before = written(c);
    cut_proxy_swallow_replies(p, true);
    arpc_future *f = arpc_call_async(c, "t.count", "x", 1, 0);
    assert_non_null(f);
    assert_true(WAIT_UNTIL(atomic_load(&count_runs) != 0 && atomic_load(&forgot_client)));
    assert_int_equal(1, atomic_load(&count_runs));
    assert_true(atomic_load(&forgot_client));
    cut_proxy_swallow_replies(p, false);
    cut_proxy_cut(p);
    assert_int_equal(ARPC_ECONNLOST, arpc_future_wait(f));
    arpc_future_release(f);
    assert_true(written(c) > before); /* the path this is about: its caller wrote it */
    assert_int_equal(1, atomic_load(&count_runs));
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    cut_proxy_stop(p);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    arpc_set_logger(NULL, NULL, ARPC_LOG_INFO);
}

#ifdef ARPC_TEST_WITH_TLS
/* A TLS stream is the loop thread's: its callers' calls, idle loop or not, take the loop's path. */
static void test_tls_takes_the_loop_path(void **state)
{
    (void)state;
    static struct tls_certs certs;
    assert_true(tls_certs_make(&certs));
    static struct tls_certs_pair tls;
    tls_certs_pair(&certs, &tls);
    arpc_server_options so = {.tls = &tls.tp_server};
    arpc_server *s;
    char addr[ARPC_ADDR_MAX];
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tls://127.0.0.1:0", addr, sizeof(addr)));
    arpc_client_options co = {.tls = &tls.tp_client};
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &co));
    for (unsigned i = 0; i < 50; i++) {
        wait_idle(c);
        assert_int_equal(ARPC_OK, echo_call(c, "t.echo", 0, i, i * 100));
    }
    assert_int_equal(0, written(c));
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    tls_certs_remove(&certs);
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_written_by_caller, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reply_overtakes_handoff, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline_without_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_written_call, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_reaches_server, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_cut_while_callers_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_with_written_calls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_partial_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_partial_write_server_not_reading, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_ends_written_running_call_cancelled, setup, teardown),
        cmocka_unit_test(test_written_call_ages_from_its_write),
#ifdef ARPC_TEST_WITH_TLS
        cmocka_unit_test(test_tls_takes_the_loop_path),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
