/*
 * "Wait without limit" at every public timeout: ARPC_FOREVER, INT64_MAX, INT64_MAX - 1 and a
 * huge value that does not saturate (INT64_MAX / 10^6 ms, about 292 years) must wait for the
 * thing awaited, never overflow into "already expired". For each entry point the wait starts
 * on one thread, the test checks it has not returned after a short pause (the pause only makes
 * a wrong early return visible: the right outcome does not depend on it), then completes the
 * awaited thing and expects success. A 20 ms timeout still expires at each, so none of this
 * is vacuous.
 *
 * Entry points: arpc_future_wait_for / wait_all / wait_any, arpc_cq_next_for,
 * arpc_loop_run_until, arpc_server_stop (the grace period), arpc_client_options'
 * connect_timeout_ms and default_deadline_ms, and the deadline of arpc_call, arpc_call_async
 * and arpc_go.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "core/server_internal.h"
#include "transport/transport.h"
#include "support/test_util.h"

static const int64_t unlimited[] = {ARPC_FOREVER, INT64_MAX, INT64_MAX - 1, INT64_MAX / 1000000};
#define N_UNLIMITED (sizeof(unlimited) / sizeof(unlimited[0]))
#define SHORT_MS 20 /* a timeout that must expire */
#define PAUSE_MS 30 /* only to let a wrong early return show; never needed for the right one */

/* ---- a wait on its own thread ---- */

struct waiter {
    int (*fn)(struct waiter *w);
    int64_t timeout;
    arpc_future *fs[2];
    arpc_cq *cq;
    arpc_loop *loop;
    arpc_server *server;
    size_t index;      /* wait_any */
    arpc_future *got;  /* cq_next_for */
    void *tag;
    int rc;
    atomic_int returned;
    sem_t started, done;
    pthread_t th;
};

static void *waiter_main(void *p)
{
    struct waiter *w = p;
    sem_post(&w->started);
    w->rc = w->fn(w);
    atomic_store(&w->returned, 1);
    sem_post(&w->done);
    return NULL;
}

static void waiter_spawn(struct waiter *w)
{
    w->rc = -1;
    atomic_init(&w->returned, 0);
    sem_init(&w->started, 0, 0);
    sem_init(&w->done, 0, 0);
    assert_int_equal(0, pthread_create(&w->th, NULL, waiter_main, w));
}

/* Starts w->fn on a thread, and checks it is still waiting after a pause. */
static void waiter_start(struct waiter *w)
{
    waiter_spawn(w);
    assert_true(sem_wait_secs(&w->started, TEST_WAIT_S));
    sleep_ms(PAUSE_MS);
    assert_false(atomic_load(&w->returned)); /* an "unlimited" wait that gave up at once */
}

static int waiter_join(struct waiter *w)
{
    assert_true(sem_wait_secs(&w->done, TEST_WAIT_S));
    pthread_join(w->th, NULL);
    sem_destroy(&w->started);
    sem_destroy(&w->done);
    return w->rc;
}

/* ---- futures and completion queues ---- */

static int wait_for(struct waiter *w) { return arpc_future_wait_for(w->fs[0], w->timeout); }
static int wait_all(struct waiter *w) { return arpc_future_wait_all(w->fs, 2, w->timeout); }
static int wait_any(struct waiter *w) { return arpc_future_wait_any(w->fs, 2, w->timeout, &w->index); }
static int cq_next_for(struct waiter *w) { return arpc_cq_next_for(w->cq, w->timeout, &w->got, &w->tag); }

static void make_futures(struct waiter *w)
{
    assert_int_equal(ARPC_OK, arpc_future_create(&w->fs[0]));
    assert_int_equal(ARPC_OK, arpc_future_create(&w->fs[1]));
}

static void release_futures(struct waiter *w)
{
    arpc_future_release(w->fs[0]);
    arpc_future_release(w->fs[1]);
}

static void test_future_waits_unlimited(void **state)
{
    (void)state;
    int (*const fns[])(struct waiter *) = {wait_for, wait_all, wait_any};
    for (size_t v = 0; v < N_UNLIMITED; v++) {
        for (size_t k = 0; k < sizeof(fns) / sizeof(fns[0]); k++) {
            struct waiter w = {.fn = fns[k], .timeout = unlimited[v]};
            make_futures(&w);
            waiter_start(&w);
            arpc_future_complete(w.fs[1], ARPC_OK, NULL, 0);
            if (fns[k] != wait_any)
                arpc_future_complete(w.fs[0], ARPC_OK, NULL, 0);
            assert_int_equal(ARPC_OK, waiter_join(&w));
            if (fns[k] == wait_any)
                assert_int_equal(1, w.index);
            release_futures(&w);
        }
    }
}

static void test_future_waits_short_timeout_expires(void **state)
{
    (void)state;
    struct waiter w = {.timeout = SHORT_MS};
    make_futures(&w);
    assert_int_equal(ARPC_EPENDING, wait_for(&w));
    assert_int_equal(ARPC_EPENDING, wait_all(&w));
    assert_int_equal(ARPC_EPENDING, wait_any(&w));
    arpc_future_complete(w.fs[0], ARPC_OK, NULL, 0);
    assert_int_equal(ARPC_EPENDING, wait_all(&w)); /* one of two is not all */
    release_futures(&w);
}

static void test_cq_next_for_unlimited(void **state)
{
    (void)state;
    for (size_t v = 0; v < N_UNLIMITED; v++) {
        struct waiter w = {.fn = cq_next_for, .timeout = unlimited[v]};
        assert_int_equal(ARPC_OK, arpc_cq_create(&w.cq));
        make_futures(&w);
        assert_int_equal(ARPC_OK, arpc_cq_attach(w.cq, w.fs[0], &w));
        waiter_start(&w);
        arpc_future_complete(w.fs[0], ARPC_OK, NULL, 0);
        assert_int_equal(ARPC_OK, waiter_join(&w));
        assert_ptr_equal(w.fs[0], w.got);
        assert_ptr_equal(&w, w.tag);
        arpc_future_release(w.got);
        release_futures(&w);
        arpc_cq_destroy(w.cq);
    }
    /* 20 ms: empty, and says so. */
    arpc_cq *cq;
    assert_int_equal(ARPC_OK, arpc_cq_create(&cq));
    arpc_future *f = NULL;
    assert_int_equal(ARPC_EAGAIN, arpc_cq_next_for(cq, SHORT_MS, &f, NULL));
    arpc_cq_destroy(cq);
}

/* ---- arpc_loop_run_until ---- */

static int run_until(struct waiter *w) { return arpc_loop_run_until(w->loop, w->fs[0], w->timeout); }

static void complete_task(arpc_loop *loop, void *f)
{
    (void)loop;
    arpc_future_complete(f, ARPC_OK, NULL, 0);
}

/* The waiter drives a loop nobody else runs; a task completes the future on it. */
static void test_loop_run_until_unlimited(void **state)
{
    (void)state;
    for (size_t v = 0; v < N_UNLIMITED; v++) {
        struct waiter w = {.fn = run_until, .timeout = unlimited[v]};
        assert_int_equal(ARPC_OK, arpc_loop_create(&w.loop, NULL));
        make_futures(&w);
        waiter_start(&w);
        assert_int_equal(ARPC_OK, arpc_loop_submit(w.loop, complete_task, w.fs[0]));
        assert_int_equal(ARPC_OK, waiter_join(&w));
        arpc_loop_destroy(w.loop);
        release_futures(&w);
    }
    struct waiter w = {.timeout = SHORT_MS};
    assert_int_equal(ARPC_OK, arpc_loop_create(&w.loop, NULL));
    make_futures(&w);
    assert_int_equal(ARPC_EPENDING, run_until(&w));
    arpc_loop_destroy(w.loop);
    release_futures(&w);
}

/* ---- a server whose handlers the test holds ---- */

static arpc_request *_Atomic kept; /* t.keep: the request, replied to by the test */
static sem_t block_gate;           /* t.block: waits here */

static void h_keep(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_store(&kept, req);
    latch_add();
}

static void h_block(arpc_request *req, void *ctx)
{
    (void)ctx;
    latch_add();
    sem_wait(&block_gate);
    arpc_reply(req, "blocked", 7);
}

static arpc_server *make_server(const arpc_server_options *o, const char *listen, char *addr, size_t addrlen)
{
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, o));
    arpc_method_options inl = {.inline_on_loop = true};
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.keep", h_keep, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.block", h_block, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.inline", test_echo, NULL, &inl));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, listen, addr, addrlen));
    return s;
}

/* Waits until the kept request arrived, and takes it. */
static arpc_request *take_kept(void)
{
    assert_true(latch_wait(1, TEST_WAIT_MS));
    return atomic_exchange(&kept, NULL);
}

/* ---- call deadlines ---- */

enum call_kind { BY_CALL, BY_ASYNC, BY_GO, BY_DEFAULT };

struct call_waiter {
    struct waiter w;
    arpc_client *c;
    enum call_kind kind;
    void *reply;
    size_t reply_len;
};

static int do_call(struct waiter *w)
{
    struct call_waiter *cw = (struct call_waiter *)w;
    return arpc_call(cw->c, "t.keep", "x", 1, &cw->reply, &cw->reply_len, w->timeout);
}

/* Starts a t.keep call with deadline `deadline` the way kind says; returns its future (or
 * NULL for BY_CALL, whose outcome waiter_join gives). */
static arpc_future *start_call(struct call_waiter *cw, arpc_cq *cq, int64_t deadline)
{
    arpc_future *f = NULL;
    switch (cw->kind) {
    case BY_CALL:
        cw->w.fn = do_call;
        cw->w.timeout = deadline;
        waiter_spawn(&cw->w);
        break;
    case BY_ASYNC:
        f = arpc_call_async(cw->c, "t.keep", "x", 1, deadline);
        break;
    case BY_DEFAULT:
        f = arpc_call_async(cw->c, "t.keep", "x", 1, 0);
        break;
    case BY_GO:
        assert_int_equal(ARPC_OK, arpc_go(cw->c, "t.keep", "x", 1, deadline, cq, cw));
        break;
    }
    return f;
}

/* The call's outcome; for BY_GO, through the queue. */
static int finish_call(struct call_waiter *cw, arpc_cq *cq, arpc_future *f)
{
    int rc;
    if (cw->kind == BY_CALL) {
        rc = waiter_join(&cw->w);
        arpc_free(cw->reply);
        return rc;
    }
    if (cw->kind == BY_GO) {
        void *tag = NULL;
        assert_int_equal(ARPC_OK, arpc_cq_next_for(cq, TEST_WAIT_MS, &f, &tag));
        assert_ptr_equal(cw, tag);
    }
    rc = arpc_future_wait_for(f, TEST_WAIT_MS);
    arpc_future_release(f);
    return rc;
}

/* Still in flight: not finished, whichever way it was started. */
static bool call_pending(struct call_waiter *cw, arpc_cq *cq, arpc_future *f)
{
    if (cw->kind == BY_CALL)
        return !atomic_load(&cw->w.returned);
    if (cw->kind == BY_GO)
        return arpc_cq_size(cq) == 0;
    return arpc_future_poll(f) == ARPC_EPENDING;
}

/* The 20 ms call expires. Whether its handler ran is up to the scheduler: a worker that takes
 * the call up after its budget is spent refuses it ARPC_EEXPIRED without running it (on a
 * loaded machine it does), so the handler is not waited for. The caller's own deadline ends
 * the call ARPC_ETIMEDOUT; only if the client's loop was held up past both does it take the
 * server's ARPC_EEXPIRED first, which is the same 20 ms expiring (sent on the wire); and a
 * client loop that took the call up only after its 20 ms ends it ARPC_EUNREACHABLE, never
 * sent (a call made right after the connect goes through the loop, which may be busy). */
static void expect_short_deadline_expired(struct call_waiter *cw, arpc_cq *cq, arpc_future *f)
{
    int rc = finish_call(cw, cq, f);
    if (rc != ARPC_ETIMEDOUT && rc != ARPC_EEXPIRED && rc != ARPC_EUNREACHABLE)
        fail_msg("a 20 ms call ended %s", arpc_errname(rc));
    /* The only worker takes one connection's calls in order: once this one is answered, the
     * expired call has run (and its request is kept) or has been refused. */
    assert_int_equal(ARPC_OK, arpc_call(cw->c, "t.echo", "e", 1, NULL, NULL, 10000));
    arpc_request *req = atomic_exchange(&kept, NULL);
    if (req != NULL)
        arpc_reply(req, "late", 4); /* dropped by the client */
}

static void test_call_deadlines(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server_options so = {.workers = 1};
    arpc_server *s = make_server(&so, "tcp://127.0.0.1:0", addr, sizeof(addr));
    arpc_cq *cq;
    assert_int_equal(ARPC_OK, arpc_cq_create(&cq));
    for (int kind = BY_CALL; kind <= BY_DEFAULT; kind++) {
        for (size_t v = 0; v <= N_UNLIMITED; v++) {
            bool expire = v == N_UNLIMITED;
            int64_t deadline = expire ? SHORT_MS : unlimited[v];
            arpc_client_options co = {.default_deadline_ms = kind == BY_DEFAULT ? deadline : 0};
            struct call_waiter cw = {.kind = kind};
            assert_int_equal(ARPC_OK, arpc_client_connect(&cw.c, addr, &co));
            latch_reset();
            arpc_future *f = start_call(&cw, cq, deadline);
            if (expire) {
                expect_short_deadline_expired(&cw, cq, f);
            } else {
                /* The call reached the handler: its deadline did not expire before it was sent. */
                arpc_request *req = take_kept();
                assert_non_null(req);
                sleep_ms(PAUSE_MS);
                assert_true(call_pending(&cw, cq, f));
                assert_int_equal(ARPC_OK, arpc_reply(req, "ok", 2));
                assert_int_equal(ARPC_OK, finish_call(&cw, cq, f));
            }
            assert_int_equal(ARPC_OK, arpc_client_close(cw.c));
        }
    }
    arpc_cq_destroy(cq);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* ---- connect timeout ---- */

/* Holds the server's loop so its HELLO answer waits until the test opens the gate. */
static sem_t loop_gate;
static void hold_loop(arpc_loop *loop, void *arg)
{
    (void)loop;
    (void)arg;
    sem_wait(&loop_gate);
}

struct connect_waiter {
    struct waiter w;
    const char *addr;
    arpc_client *c;
};

static int do_connect(struct waiter *w)
{
    struct connect_waiter *cw = (struct connect_waiter *)w;
    arpc_client_options o = {.connect_timeout_ms = w->timeout};
    return arpc_client_connect(&cw->c, cw->addr, &o);
}

static void test_connect_timeout(void **state)
{
    (void)state;
    static int seq;
    for (int transport = 0; transport < 2; transport++) {
        char listen[ARPC_ADDR_MAX], addr[ARPC_ADDR_MAX];
        if (transport == 0)
            snprintf(listen, sizeof(listen), "tcp://127.0.0.1:0");
        else
            snprintf(listen, sizeof(listen), "unix:///tmp/arpc-timeouts-%d-%d.sock", (int)getpid(), seq++);
        arpc_loop *loop;
        assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
        assert_int_equal(ARPC_OK, arpc_loop_start(loop));
        arpc_server_options so = {.loop = loop, .workers = 1};
        arpc_server *s = make_server(&so, listen, addr, sizeof(addr));
        sem_init(&loop_gate, 0, 0);
        for (size_t v = 0; v <= N_UNLIMITED; v++) {
            bool expire = v == N_UNLIMITED;
            struct connect_waiter cw = {.w = {.fn = do_connect, .timeout = expire ? SHORT_MS : unlimited[v]},
                                        .addr = addr};
            assert_int_equal(ARPC_OK, arpc_loop_submit(loop, hold_loop, NULL));
            if (expire) {
                assert_int_equal(ARPC_ETIMEDOUT, do_connect(&cw.w));
                sem_post(&loop_gate);
                continue;
            }
            waiter_start(&cw.w); /* still connecting: the server has not answered */
            sem_post(&loop_gate);
            assert_int_equal(ARPC_OK, waiter_join(&cw.w));
            assert_int_equal(ARPC_OK, arpc_call(cw.c, "t.echo", "x", 1, NULL, NULL, 10000));
            assert_int_equal(ARPC_OK, arpc_client_close(cw.c));
        }
        assert_int_equal(ARPC_OK, arpc_server_destroy(s));
        arpc_loop_destroy(loop);
        sem_destroy(&loop_gate);
    }
}

/* A listener nobody accepts from: the connect succeeds, the HELLO never comes. The wait is
 * connect_timeout_ms's, however short the heartbeat (armed at the connect, it ended the wait at
 * heartbeat_ms x (misses + 1) as ARPC_ECONNREFUSED, "closed the connection before its HELLO":
 * a trial of extreme values). */
static void test_connect_timeout_outlasts_the_heartbeat(void **state)
{
    (void)state;
    uint16_t port;
    int lfd = fd_listen_loopback(0, 4, 0, &port);
    assert_true(lfd >= 0);
    char addr[ARPC_ADDR_MAX];
    snprintf(addr, sizeof(addr), "tcp://127.0.0.1:%u", port);
    arpc_client_options o = {.connect_timeout_ms = 1500, .heartbeat_ms = 100, .heartbeat_misses = 1};
    arpc_client *c = NULL;
    int64_t t0 = now_ms();
    assert_int_equal(ARPC_ETIMEDOUT, arpc_client_connect(&c, addr, &o));
    assert_true(now_ms() - t0 >= 1400);
    /* With no connect timeout the heartbeat still ends it (it waited for ever): said so. */
    char why[ARPC_ERRBUF_SIZE] = "";
    arpc_client_options forever = {.connect_timeout_ms = ARPC_FOREVER, .heartbeat_ms = 100, .heartbeat_misses = 1,
                                   .errbuf = why, .errbuf_len = sizeof(why)};
    assert_int_equal(ARPC_ETIMEDOUT, arpc_client_connect(&c, addr, &forever));
    assert_non_null(strstr(why, "accepted the connection but sent no HELLO"));
    close(lfd);
}

/* ---- server stop: the grace period ---- */

static int do_stop(struct waiter *w) { return arpc_server_stop(w->server, w->timeout); }

static void noop_message(arpc_actor *actor, void *arg, int status)
{
    (void)actor;
    (void)arg;
    (void)status;
}

/* Whether the grace period is over: stop has closed the worker's mailbox (after marking it
 * to discard what is queued), so a post is refused. A post that is accepted is a no-op. */
static bool pool_closed(arpc_server *s)
{
    return arpc_actor_post(arpc_actor_group_member(s->sv_pool, 0), noop_message, NULL) == ARPC_ESHUTDOWN;
}

/* One worker: call A runs (held by the test), call B waits behind it. An unlimited grace lets
 * B run once A is released, and stop returns only then; a 20 ms grace ends with the worker
 * told to discard what waits, so B is answered ESHUTDOWN (it did not run) once A returns. */
static void run_stop_case(int64_t grace, bool expire)
{
    char addr[ARPC_ADDR_MAX];
    arpc_server_options so = {.workers = 1};
    arpc_server *s = make_server(&so, "tcp://127.0.0.1:0", addr, sizeof(addr));
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, NULL));
    sem_init(&block_gate, 0, 0);
    latch_reset();
    arpc_future *fa = arpc_call_async(c, "t.block", "a", 1, ARPC_FOREVER);
    assert_true(latch_wait(1, TEST_WAIT_MS)); /* A runs, the only worker is taken */
    arpc_future *fb = arpc_call_async(c, "t.echo", "b", 1, ARPC_FOREVER);
    /* Frames of one connection are handled in order: once this inline call is answered, B
     * has been handed to the worker's queue. */
    assert_int_equal(ARPC_OK, arpc_call(c, "t.inline", "i", 1, NULL, NULL, 10000));

    struct waiter stopper = {.fn = do_stop, .server = s, .timeout = grace};
    waiter_spawn(&stopper);
    /* The stop has begun once new calls are refused: answered ESHUTDOWN by the stopping
     * server, or, after its GOAWAY, kept waiting for a server to come back until their
     * deadline (EUNREACHABLE: they never left). The 200 ms deadline only bounds that wait: a
     * call it ends unanswered (ETIMEDOUT: a loaded machine kept the server's loop off the CPU
     * that long) says nothing either way, and is made again. */
    int rc = ARPC_OK;
    int64_t give_up = now_ms() + 20000; /* a ceiling: the stop begins within milliseconds */
    while ((rc == ARPC_OK || rc == ARPC_ETIMEDOUT) && now_ms() < give_up)
        rc = arpc_call(c, "t.inline", "i", 1, NULL, NULL, 200);
    if (rc != ARPC_ESHUTDOWN && rc != ARPC_EUNREACHABLE)
        fail_msg("a call made while the server stops ended %s", arpc_errname(rc));
    if (expire) {
        assert_true(WAIT_UNTIL(pool_closed(s))); /* the grace's end, a state that stays once reached */
        assert_false(atomic_load(&stopper.returned)); /* A still runs: stop waits for it */
        sem_post(&block_gate);
        assert_int_equal(ARPC_ESHUTDOWN, arpc_future_wait_for(fb, TEST_WAIT_MS)); /* did not run */
    } else {
        sleep_ms(PAUSE_MS);
        assert_false(atomic_load(&stopper.returned)); /* not while calls are in flight */
        assert_false(pool_closed(s));                /* the grace goes on */
        assert_int_equal(ARPC_EPENDING, arpc_future_poll(fb));
        sem_post(&block_gate);
        assert_int_equal(ARPC_OK, arpc_future_wait_for(fa, TEST_WAIT_MS));
        assert_int_equal(ARPC_OK, arpc_future_wait_for(fb, TEST_WAIT_MS)); /* ran within the grace */
    }
    assert_int_equal(ARPC_OK, waiter_join(&stopper)); /* returned once the calls were done */
    arpc_future_wait_for(fa, TEST_WAIT_MS);
    arpc_future_release(fa);
    arpc_future_release(fb);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    sem_destroy(&block_gate);
}

static void test_server_stop_grace_unlimited(void **state)
{
    (void)state;
    for (size_t v = 0; v < N_UNLIMITED; v++) {
        if (unlimited[v] == ARPC_FOREVER)
            continue; /* see test_server_stop_grace_forever */
        run_stop_case(unlimited[v], false);
    }
    run_stop_case(SHORT_MS, true);
}

/* Regression: ARPC_FOREVER as the stop grace means "until every call finished", as every
 * other arpc timeout reads it, not "no grace" (it did, discarding queued calls). */
static void test_server_stop_grace_forever(void **state)
{
    (void)state;
    run_stop_case(ARPC_FOREVER, false);
}

int main(void)
{
    test_alloc_install();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_no_leak(test_future_waits_unlimited),
        cmocka_unit_test_no_leak(test_future_waits_short_timeout_expires),
        cmocka_unit_test_no_leak(test_cq_next_for_unlimited),
        cmocka_unit_test_no_leak(test_loop_run_until_unlimited),
        cmocka_unit_test_no_leak(test_call_deadlines),
        cmocka_unit_test_no_leak(test_connect_timeout),
        cmocka_unit_test_no_leak(test_connect_timeout_outlasts_the_heartbeat),
        cmocka_unit_test_no_leak(test_server_stop_grace_unlimited),
        cmocka_unit_test(test_server_stop_grace_forever),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
