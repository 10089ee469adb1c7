/*
 * A reply that comes after its server was destroyed, on the loops request_lifetime_test does
 * not cover: a server on the application's libev loop (arpc_loop_wrap), on a pollable loop
 * driven by arpc_loop_run_nowait, and a method whose requests go to a completion queue
 * (arpc_method_options.queue), one taken before the destroy and one still in the queue. In
 * every case the reply returns ARPC_ESHUTDOWN (even with no memory: it encodes nothing),
 * touches nothing freed (ASan) and frees the request and what is left of the server (the
 * counting allocator); with the loop still alive, running it afterwards touches nothing freed
 * either.
 *
 * The loop cases drive their loop from the test thread, as the application would; the client
 * shares the loop, so its calls are carried by the same steps.
 *
 * And a stop from the owner of such a loop (wrapped, pollable, or caller-driven: created and
 * never started), between its steps, while a pool handler still works on a call: the stop runs
 * the loop itself while it waits out its grace, so the reply is delivered and the stop returns
 * then (not at the grace's end, nor never with ARPC_FOREVER), and a call made while it stops is
 * told so (did not run) instead of going unread until its deadline. And a stop from another
 * thread while the owner goes on stepping its loop and answers a kept request itself.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <ev.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "core/server_internal.h"
#include "support/test_util.h"

#define WAIT_MS TEST_WAIT_MS /* a bound for waits that should end soon: only a hang reaches it */

static arpc_request *_Atomic kept_first, *_Atomic kept_last;
static atomic_int keep_runs;

/* Keeps the request and returns without replying; the test replies later. */
static void h_keep(arpc_request *req, void *ctx)
{
    (void)ctx;
    if (atomic_fetch_add(&keep_runs, 1) == 0)
        atomic_store(&kept_first, req);
    atomic_store(&kept_last, req);
    latch_add();
}

static void *reply_late(void *arg)
{
    return (void *)(intptr_t)arpc_reply(arg, "late", 4);
}

/* Larger than the reply pool's largest block (core/block_pool.h): its encoding allocates. */
static void *reply_late_large(void *arg)
{
    static const char large[64 * 1024];
    return (void *)(intptr_t)arpc_reply(arg, large, sizeof(large));
}

/* Replies from a thread of its own (not the loop's owner, not a worker): the reply path that
 * has to reach the loop from outside. */
static int reply_from_thread_with(arpc_request *req, void *(*reply)(void *))
{
    pthread_t t;
    void *rc;
    assert_int_equal(0, pthread_create(&t, NULL, reply, req));
    assert_int_equal(0, pthread_join(t, &rc));
    return (int)(intptr_t)rc;
}

static int reply_from_thread(arpc_request *req) { return reply_from_thread_with(req, reply_late); }

/* ---- a loop the test drives: the application's libev loop, a pollable one, or one run by
 * its caller (never started) ---- */

enum app_loop_kind { APP_WRAPPED, APP_POLLABLE, APP_CALLER_DRIVEN };

struct app_loop {
    enum app_loop_kind kind;
    struct ev_loop *ev;  /* wrapped: the application's ev */
    arpc_loop *loop;
    arpc_future *never;  /* caller-driven: what a step runs the loop "until" */
};

static void app_loop_open(struct app_loop *a, enum app_loop_kind kind)
{
    a->kind = kind;
    a->ev = NULL;
    a->never = NULL;
    if (kind == APP_WRAPPED) {
        a->ev = ev_loop_new(EVFLAG_AUTO);
        assert_non_null(a->ev);
        assert_int_equal(ARPC_OK, arpc_loop_wrap(&a->loop, a->ev, NULL));
    } else if (kind == APP_POLLABLE) {
        arpc_loop_options lo = {.pollable = true};
        assert_int_equal(ARPC_OK, arpc_loop_create(&a->loop, &lo));
    } else {
        assert_int_equal(ARPC_OK, arpc_loop_create(&a->loop, NULL));
        assert_int_equal(ARPC_OK, arpc_future_create(&a->never));
    }
}

/* One step, as the application's own loop would make it: waits a little for arpc's fd (or
 * ev's events) so a step that has nothing to do does not spin. */
static void app_loop_step(struct app_loop *a)
{
    if (a->kind == APP_WRAPPED) {
        ev_run(a->ev, EVRUN_NOWAIT);
        return;
    }
    if (a->kind == APP_CALLER_DRIVEN) {
        assert_int_equal(ARPC_EPENDING, arpc_loop_run_until(a->loop, a->never, 10));
        return;
    }
    int timeout;
    assert_int_equal(ARPC_OK, arpc_loop_run_nowait(a->loop, &timeout));
    struct pollfd p = {.fd = arpc_loop_fd(a->loop), .events = POLLIN};
    (void)poll(&p, 1, timeout < 0 || timeout > 10 ? 10 : timeout);
}

static void app_loop_close(struct app_loop *a)
{
    arpc_loop_destroy(a->loop);
    if (a->ev != NULL)
        ev_loop_destroy(a->ev);
    if (a->never != NULL)
        arpc_future_release(a->never);
}

/* Steps the loop until h_keep has run n times (a worker runs it: nothing wakes the loop). */
static void steps_until_kept(struct app_loop *a, unsigned n)
{
    int64_t end = now_ms() + WAIT_MS;
    while (!latch_wait(n, 1)) {
        assert_true(now_ms() < end);
        app_loop_step(a);
    }
}

static void steps_until_done(struct app_loop *a, arpc_future *f)
{
    int64_t end = now_ms() + WAIT_MS;
    while (arpc_future_poll(f) == ARPC_EPENDING) {
        assert_true(now_ms() < end);
        app_loop_step(a);
    }
}

/* Two calls whose handler kept its request; the server is stopped (both answered
 * ARPC_EABANDONED: they ran) and destroyed. One reply comes while the loop still lives (and
 * runs afterwards), the other after the loop is gone too, and cannot even be encoded. */
static void reply_after_destroy_on(enum app_loop_kind kind)
{
    test_alloc_install();
    latch_reset();
    atomic_store(&keep_runs, 0);
    struct app_loop a;
    app_loop_open(&a, kind);
    arpc_server *s;
    arpc_server_options so = {.loop = a.loop, .workers = 2};
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.keep", h_keep, NULL, NULL));
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    arpc_client *c;
    arpc_client_options co = {.loop = a.loop};
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &co)); /* drives the loop itself */
    arpc_future *f1 = arpc_call_async(c, "t.keep", "x", 1, ARPC_FOREVER);
    assert_non_null(f1);
    steps_until_kept(&a, 1);
    arpc_future *f2 = arpc_call_async(c, "t.keep", "y", 1, ARPC_FOREVER);
    assert_non_null(f2);
    steps_until_kept(&a, 2);

    assert_int_equal(ARPC_OK, arpc_server_stop(s, 0)); /* from the owner, outside a step */
    steps_until_done(&a, f1);
    steps_until_done(&a, f2);
    assert_int_equal(ARPC_EABANDONED, arpc_future_poll(f1));
    assert_int_equal(ARPC_EABANDONED, arpc_future_poll(f2));
    arpc_future_release(f1);
    arpc_future_release(f2);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));

    assert_int_equal(ARPC_ESHUTDOWN, reply_from_thread(atomic_load(&kept_first)));
    for (int i = 0; i < 10; i++) /* whatever the reply left for the loop runs on no freed server */
        app_loop_step(&a);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    app_loop_close(&a);

    atomic_store(&test_alloc_budget, 0); /* answered by the stop: the reply encodes nothing */
    assert_int_equal(ARPC_ESHUTDOWN, reply_from_thread_with(atomic_load(&kept_last), reply_late_large));
    atomic_store(&test_alloc_budget, -1);
}

static void test_reply_after_destroy_wrapped_loop(void **state)
{
    (void)state;
    reply_after_destroy_on(APP_WRAPPED);
}

static void test_reply_after_destroy_pollable_loop(void **state)
{
    (void)state;
    reply_after_destroy_on(APP_POLLABLE);
}

/* ---- a stop from the loop's owner, between its steps ---- */

#define STOP_WATCHDOG_S 30 /* a stop that never returns fails the test (SIGALRM) instead of CI */
#define LATE_CALL_MS 300   /* the deadline of the call made while the server stops */
/* How long that call is made again while it ends unanswered (see call_while_stopping): well
 * within the watchdog and half the finite grace, which the stop's time is checked against. */
#define LATE_CALL_AGAIN_MS (STOP_GRACE_MS / 4)
/* A finite grace, under the watchdog: a stop that does not run the loop returns at its end,
 * and half of it tells that from "once the reply is delivered" however loaded the machine. */
#define STOP_GRACE_MS 20000

static sem_t gate; /* the test lets h_gated reply */

/* Replies once the test opens the gate: a pool handler still working when the stop begins. */
static void h_gated(arpc_request *req, void *ctx)
{
    (void)ctx;
    latch_add();
    CHECK(sem_wait_secs(&gate, WAIT_MS / 1000));
    CHECK(arpc_reply(req, "done", 4) == ARPC_OK);
}

static sem_t gate_return; /* the test lets h_gated_return return */

/* As h_gated, then returns only once the test opens the second gate: its request is freed on
 * the worker, after the loop delivered its reply, so the last call in flight ends there. */
static void h_gated_return(arpc_request *req, void *ctx)
{
    h_gated(req, ctx);
    CHECK(sem_wait_secs(&gate_return, WAIT_MS / 1000));
}

struct first_caller {
    const char *addr;
    const char *method;
    arpc_client *client; /* on a loop of its own */
    arpc_future *call;
};

/* Connects and starts a call to h_gated: off the test's thread, which runs the server's loop. */
static void *connect_and_call(void *arg)
{
    struct first_caller *fc = arg;
    CHECK(arpc_client_connect(&fc->client, fc->addr, NULL) == ARPC_OK);
    if (fc->client != NULL)
        fc->call = arpc_call_async(fc->client, fc->method, "x", 1, WAIT_MS);
    return NULL;
}

struct late_caller {
    arpc_server *server;
    arpc_client *client;
    int code; /* how the call made while the server stops ended */
};

/* Waits for the stop to begin, makes a call then, waits for its end, and opens the gate.
 * The call is told ESHUTDOWN by the stopping server that reads it, or, sent after the client
 * had the stop's GOAWAY, waits for a next server until its deadline (EUNREACHABLE: it never
 * left). A call its deadline ends unanswered (ETIMEDOUT: a loaded machine kept the stopping
 * server's loop off the CPU that long) must still be read and refused, counted in the
 * server's refusals (a call left unread is what this checks); it is then made again, as the
 * held gate keeps the stop from ending meanwhile. */
static void *call_while_stopping(void *arg)
{
    struct late_caller *lc = arg;
    int64_t end = now_ms() + WAIT_MS;
    while (atomic_load(&lc->server->sv_state) != SV_STOPPING && now_ms() < end)
        sched_yield(); /* a wait for the stop's first store, a few instructions in */
    uint64_t unanswered = 0;
    int64_t again_until = now_ms() + LATE_CALL_AGAIN_MS;
    do {
        arpc_future *f = arpc_call_async(lc->client, "t.gated", "late", 4, LATE_CALL_MS);
        CHECK(f != NULL);
        if (f == NULL)
            break;
        lc->code = arpc_future_wait_for(f, WAIT_MS);
        arpc_future_release(f);
        if (lc->code == ARPC_ETIMEDOUT)
            CHECK(server_stat_reaches(lc->server, offsetof(arpc_server_stats, refused[ARPC_ESHUTDOWN]),
                                      ++unanswered, WAIT_MS));
    } while (lc->code == ARPC_ETIMEDOUT && now_ms() < again_until);
    sem_post(&gate);
    return NULL;
}

/* What the stop tests share: a server with a pool of 2 on the test's loop of the given kind,
 * its method held at gate (h), and a first call from a client on its own loop, kept in the
 * handler. */
struct stop_fixture {
    struct app_loop a;
    arpc_server *s;
    char addr[256];
    struct first_caller fc;
};

static void stop_fixture_open(struct stop_fixture *x, enum app_loop_kind kind, const char *method,
                              arpc_handler_fn h)
{
    test_alloc_install();
    latch_reset();
    atomic_store(&bad_line, 0);
    assert_int_equal(0, sem_init(&gate, 0, 0));
    app_loop_open(&x->a, kind);
    arpc_server_options so = {.loop = x->a.loop, .workers = 2};
    assert_int_equal(ARPC_OK, arpc_server_create(&x->s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(x->s, method, h, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(x->s, "tcp://127.0.0.1:0", x->addr, sizeof(x->addr)));
    x->fc = (struct first_caller){.addr = x->addr, .method = method};
    pthread_t t;
    assert_int_equal(0, pthread_create(&t, NULL, connect_and_call, &x->fc));
    steps_until_kept(&x->a, 1);
    assert_int_equal(0, pthread_join(t, NULL));
    assert_non_null(x->fc.call);
}

/* A server on the test's loop of the given kind, a client on a loop of its own: a call is in a
 * pool handler when the owner stops the server, between its steps, with grace_ms. The stop
 * must run the loop: it returns once the reply is delivered, long before a finite grace ends,
 * and the call ends ARPC_OK; a call made while it stops is refused (did not run). */
static void stop_runs_the_owners_loop(enum app_loop_kind kind, int64_t grace_ms)
{
    struct stop_fixture x;
    stop_fixture_open(&x, kind, "t.gated", h_gated);
    pthread_t t;
    arpc_client *c = x.fc.client;
    arpc_future *f = x.fc.call;
    assert_non_null(f);

    struct late_caller lc = {.server = x.s, .client = c, .code = ARPC_EPENDING};
    assert_int_equal(0, pthread_create(&t, NULL, call_while_stopping, &lc));
    alarm(STOP_WATCHDOG_S);
    int64_t start = now_ms();
    assert_int_equal(ARPC_OK, arpc_server_stop(x.s, grace_ms)); /* from the owner, outside a step */
    int64_t took = now_ms() - start;
    alarm(0);
    assert_int_equal(0, pthread_join(t, NULL));
    assert_int_equal(0, atomic_load(&bad_line));

    assert_true(took < STOP_GRACE_MS / 2); /* the reply came once the late call ended: not the grace's end */
    assert_int_equal(ARPC_OK, arpc_future_wait_for(f, WAIT_MS));
    assert_true(lc.code == ARPC_ESHUTDOWN || lc.code == ARPC_EUNREACHABLE); /* did not run */
    arpc_future_release(f);
    assert_int_equal(ARPC_OK, arpc_server_destroy(x.s));
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    app_loop_close(&x.a);
    sem_destroy(&gate);
}

static void test_stop_forever_runs_wrapped_loop(void **state)
{
    (void)state;
    stop_runs_the_owners_loop(APP_WRAPPED, ARPC_FOREVER);
}

static void test_stop_forever_runs_pollable_loop(void **state)
{
    (void)state;
    stop_runs_the_owners_loop(APP_POLLABLE, ARPC_FOREVER);
}

static void test_stop_forever_runs_caller_driven_loop(void **state)
{
    (void)state;
    stop_runs_the_owners_loop(APP_CALLER_DRIVEN, ARPC_FOREVER);
}

static void test_stop_grace_ends_early_wrapped_loop(void **state)
{
    (void)state;
    stop_runs_the_owners_loop(APP_WRAPPED, STOP_GRACE_MS);
}

static void test_stop_grace_ends_early_pollable_loop(void **state)
{
    (void)state;
    stop_runs_the_owners_loop(APP_POLLABLE, STOP_GRACE_MS);
}

static void test_stop_grace_ends_early_caller_driven_loop(void **state)
{
    (void)state;
    stop_runs_the_owners_loop(APP_CALLER_DRIVEN, STOP_GRACE_MS);
}

struct other_stopper {
    arpc_server *server;
    int rc;
};

static void *stop_from_another_thread(void *arg)
{
    struct other_stopper *os = arg;
    os->rc = arpc_server_stop(os->server, ARPC_FOREVER);
    return NULL;
}

/* Another thread stops the server first, and waits for the owner's steps; the owner then stops
 * it too, between its steps: the second stop runs the loop for the first until it is done
 * (before, it waited for the first on a lock while the first waited for it). */
static void second_stop_from_the_owner_runs_the_loop(enum app_loop_kind kind)
{
    struct stop_fixture x;
    stop_fixture_open(&x, kind, "t.gated", h_gated);
    pthread_t t;
    assert_non_null(x.fc.call);

    struct other_stopper os = {.server = x.s, .rc = ARPC_EPENDING};
    assert_int_equal(0, pthread_create(&t, NULL, stop_from_another_thread, &os));
    int64_t end = now_ms() + WAIT_MS;
    while (atomic_load(&x.s->sv_state) != SV_STOPPING && now_ms() < end)
        sched_yield(); /* a wait for the first stop's first store */
    sem_post(&gate); /* the reply the first stop waits for needs the loop */
    alarm(STOP_WATCHDOG_S);
    assert_int_equal(ARPC_OK, arpc_server_stop(x.s, ARPC_FOREVER));
    alarm(0);
    assert_int_equal(0, pthread_join(t, NULL));
    assert_int_equal(ARPC_OK, os.rc);
    assert_int_equal(0, atomic_load(&bad_line));
    assert_int_equal(ARPC_OK, arpc_future_wait_for(x.fc.call, WAIT_MS));
    arpc_future_release(x.fc.call);
    assert_int_equal(ARPC_OK, arpc_server_destroy(x.s));
    assert_int_equal(ARPC_OK, arpc_client_close(x.fc.client));
    app_loop_close(&x.a);
    sem_destroy(&gate);
}

/* Opens the gates once the stop began: the reply first, the handler's return once the caller
 * has the reply (the loop delivered it). */
static void *reply_then_return(void *arg)
{
    struct first_caller *fc = arg;
    sem_post(&gate);
    CHECK(arpc_future_wait_for(fc->call, WAIT_MS) == ARPC_OK);
    /* A delay, not a wait for anything (the right outcome needs none): past the lazy replies' deadline's last turn of the loop
     * (at most 64 ms after the delivery, core/reply_direct.c), so that only the call's end
     * can wake it. */
    sleep_ms(300);
    sem_post(&gate_return);
    return NULL;
}

/* The last call in flight ends on its worker, after the loop delivered its reply: nothing on
 * the loop marks the end, so the owner's stop, running the loop, must be woken by it. */
static void stop_woken_by_a_call_ending_on_its_worker(enum app_loop_kind kind)
{
    assert_int_equal(0, sem_init(&gate_return, 0, 0)); /* before the call its handler waits on */
    struct stop_fixture x;
    stop_fixture_open(&x, kind, "t.gated_return", h_gated_return);
    pthread_t t;

    assert_int_equal(0, pthread_create(&t, NULL, reply_then_return, &x.fc));
    alarm(STOP_WATCHDOG_S);
    assert_int_equal(ARPC_OK, arpc_server_stop(x.s, ARPC_FOREVER));
    alarm(0);
    assert_int_equal(0, pthread_join(t, NULL));
    assert_int_equal(0, atomic_load(&bad_line));
    assert_int_equal(ARPC_OK, arpc_future_poll(x.fc.call));
    arpc_future_release(x.fc.call);
    assert_int_equal(ARPC_OK, arpc_server_destroy(x.s));
    assert_int_equal(ARPC_OK, arpc_client_close(x.fc.client));
    app_loop_close(&x.a);
    sem_destroy(&gate_return);
    sem_destroy(&gate);
}

static void test_stop_woken_by_worker_end_pollable_loop(void **state)
{
    (void)state;
    stop_woken_by_a_call_ending_on_its_worker(APP_POLLABLE);
}

static void test_stop_woken_by_worker_end_caller_driven_loop(void **state)
{
    (void)state;
    stop_woken_by_a_call_ending_on_its_worker(APP_CALLER_DRIVEN);
}

static void test_second_stop_from_owner_runs_wrapped_loop(void **state)
{
    (void)state;
    second_stop_from_the_owner_runs_the_loop(APP_WRAPPED);
}

static void test_second_stop_from_owner_runs_pollable_loop(void **state)
{
    (void)state;
    second_stop_from_the_owner_runs_the_loop(APP_POLLABLE);
}

struct grace_stopper {
    arpc_server *server;
    int rc;
    atomic_bool done;
    int64_t took_ms;
};

static void *stop_with_grace(void *arg)
{
    struct grace_stopper *gs = arg;
    int64_t start = now_ms();
    gs->rc = arpc_server_stop(gs->server, STOP_GRACE_MS);
    gs->took_ms = now_ms() - start;
    atomic_store(&gs->done, true);
    return NULL;
}

/* An application whose loop thread must not block: another thread stops the server, and the
 * owner goes on stepping its loop and answers, from that thread, a request it kept (as one
 * its own events answer would be). The reply goes out within the stop's grace (the call ends
 * ARPC_OK, not ARPC_EABANDONED) and the stop returns once it has, not at the grace's end. */
static void stop_from_another_thread_while_the_owner_steps(enum app_loop_kind kind)
{
    struct stop_fixture x;
    stop_fixture_open(&x, kind, "t.keep", h_keep);
    arpc_request *kept = atomic_load(&kept_last);
    struct grace_stopper gs = {.server = x.s, .rc = ARPC_EPENDING};
    pthread_t t;
    assert_int_equal(0, pthread_create(&t, NULL, stop_with_grace, &gs));
    int64_t end = now_ms() + WAIT_MS;
    while (atomic_load(&x.s->sv_state) != SV_STOPPING) { /* the stop's first store */
        assert_true(now_ms() < end);
        sched_yield(); /* (a step could meet the stop's own run of a caller-driven loop) */
    }
    assert_int_equal(ARPC_OK, arpc_reply(kept, "done", 4)); /* the owner's own answer */
    alarm(STOP_WATCHDOG_S);
    while (!atomic_load(&gs.done)) {
        if (kind != APP_CALLER_DRIVEN) {
            app_loop_step(&x.a);
            continue;
        }
        /* Any thread may run such a loop: the stop runs it while it waits (the owner's step
         * is then ARPC_EBUSY at once, and it tries again). */
        int rc = arpc_loop_run_until(x.a.loop, x.a.never, 10);
        assert_true(rc == ARPC_EPENDING || rc == ARPC_EBUSY);
        if (rc == ARPC_EBUSY)
            sched_yield();
    }
    alarm(0);
    assert_int_equal(0, pthread_join(t, NULL));
    assert_int_equal(ARPC_OK, gs.rc);
    assert_true(gs.took_ms < STOP_GRACE_MS / 2);
    assert_int_equal(ARPC_OK, arpc_future_wait_for(x.fc.call, WAIT_MS));
    size_t len;
    const void *data = arpc_future_data(x.fc.call, &len);
    assert_int_equal(4, len);
    assert_memory_equal("done", data, 4);
    arpc_future_release(x.fc.call);
    assert_int_equal(ARPC_OK, arpc_server_destroy(x.s));
    assert_int_equal(ARPC_OK, arpc_client_close(x.fc.client));
    app_loop_close(&x.a);
    sem_destroy(&gate);
}

static void test_stop_from_another_thread_wrapped_loop(void **state)
{
    (void)state;
    stop_from_another_thread_while_the_owner_steps(APP_WRAPPED);
}

static void test_stop_from_another_thread_pollable_loop(void **state)
{
    (void)state;
    stop_from_another_thread_while_the_owner_steps(APP_POLLABLE);
}

static void test_stop_from_another_thread_caller_driven_loop(void **state)
{
    (void)state;
    stop_from_another_thread_while_the_owner_steps(APP_CALLER_DRIVEN);
}

/* ---- requests delivered to a completion queue ---- */

/* A server whose method "t.q" delivers to a new queue, and a client of it (counting allocator
 * installed first). */
static void start_queued(arpc_cq **q, arpc_server **s, arpc_client **c)
{
    test_alloc_install();
    assert_int_equal(ARPC_OK, arpc_cq_create(q));
    arpc_server_options so = {.workers = 1};
    assert_int_equal(ARPC_OK, arpc_server_create(s, &so));
    arpc_method_options mo = {.queue = *q};
    assert_int_equal(ARPC_OK, arpc_server_register(*s, "t.q", NULL, NULL, &mo));
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(*s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    assert_int_equal(ARPC_OK, arpc_client_connect(c, addr, NULL));
}

#define QUEUED_ATTEMPTS 20 /* a bound on calls that miss the queue: only a hang reaches it */

/* Calls t.q with deadline_ms until its request is in q: *held is the request, *call the call.
 * A call with a short deadline can miss the queue on a loaded machine, which is not what the
 * tests are about: its deadline passed before the client's loop took it up (EUNREACHABLE:
 * never sent), or before the server's worker did (refused EEXPIRED, booked in the method's
 * stats); then it is made again. The states polled have nothing that announces them all. */
static void queued_call_held(arpc_cq *q, arpc_server *s, arpc_client *c, const char *req, int64_t deadline_ms,
                             arpc_future **call, void **held)
{
    for (int attempt = 0; attempt < QUEUED_ATTEMPTS; attempt++) {
        uint64_t expired = METHOD_STAT(s, "t.q", calls.by_outcome[ARPC_EEXPIRED]);
        arpc_future *f = arpc_call_async(c, "t.q", req, strlen(req), deadline_ms);
        assert_non_null(f);
        int64_t until = now_ms() + WAIT_MS;
        for (;;) {
            arpc_future *delivered;
            if (arpc_cq_trynext(q, &delivered, held) == ARPC_OK) {
                arpc_future_release(delivered);
                *call = f;
                return;
            }
            if (arpc_future_poll(f) == ARPC_EUNREACHABLE)
                break;
            if (METHOD_STAT(s, "t.q", calls.by_outcome[ARPC_EEXPIRED]) != expired)
                break;
            assert_true(poll_again(until));
        }
        arpc_future_release(f);
    }
    fail_msg("%d calls with a %lld ms deadline all missed the queue", QUEUED_ATTEMPTS, (long long)deadline_ms);
}

/* Two requests of a queued method reach the queue; the first is taken before the server goes,
 * the second stays in the queue through stop and destroy and is taken after. Both calls are
 * answered ARPC_EABANDONED at stop (delivered means running); both late replies return
 * ARPC_ESHUTDOWN and free their requests. */
static void test_reply_after_destroy_queued_requests(void **state)
{
    (void)state;
    arpc_cq *q;
    arpc_server *s;
    arpc_client *c;
    start_queued(&q, &s, &c);
    arpc_future *f1 = arpc_call_async(c, "t.q", "x", 1, ARPC_FOREVER);
    arpc_future *f2 = arpc_call_async(c, "t.q", "y", 1, ARPC_FOREVER);
    assert_non_null(f1);
    assert_non_null(f2);

    arpc_future *delivered;
    void *first;
    assert_int_equal(ARPC_OK, arpc_cq_next_for(q, WAIT_MS, &delivered, &first));
    arpc_future_release(delivered);
    struct pollfd p = {.fd = arpc_cq_fd(q), .events = POLLIN}; /* readable: the second is in */
    assert_int_equal(1, poll(&p, 1, WAIT_MS));

    assert_int_equal(ARPC_OK, arpc_server_stop(s, 0));
    assert_int_equal(ARPC_EABANDONED, arpc_future_wait_for(f1, WAIT_MS));
    assert_int_equal(ARPC_EABANDONED, arpc_future_wait_for(f2, WAIT_MS));
    arpc_future_release(f1);
    arpc_future_release(f2);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));

    assert_int_equal(ARPC_ESHUTDOWN, reply_from_thread(first));
    void *second;
    assert_int_equal(ARPC_OK, arpc_cq_trynext(q, &delivered, &second));
    arpc_future_release(delivered);
    assert_int_equal(ARPC_ESHUTDOWN, arpc_reply(second, "late", 4)); /* from the queue's own thread */
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    arpc_cq_destroy(q);
}

/* The application is a queued request's handler until it replies: what it read of the request
 * stays valid after the server answered the call in its place, at the call's deadline and at
 * stop, and after destroy; the late replies return what the callers were told and free it all.
 * (Before, the server's answer freed the data while the application could be reading it.) */
static void test_queued_request_data_outlives_the_servers_answer(void **state)
{
    (void)state;
    arpc_cq *q;
    arpc_server *s;
    arpc_client *c;
    start_queued(&q, &s, &c);

    /* Answered at its deadline while the application holds it. */
    arpc_future *timed = NULL;
    void *held_timed = NULL;
    queued_call_held(q, s, c, "deadline", 50, &timed, &held_timed);
    arpc_future *delivered;
    size_t len;
    const char *data = arpc_request_data(held_timed, &len);
    assert_non_null(data);
    arpc_method_stats ms; /* the server's own answer, not only the client's deadline */
    assert_true(server_stats_caught_up(s, "t.q", ARPC_ETIMEDOUT, 1, &ms));
    assert_int_equal(ARPC_ETIMEDOUT, arpc_future_wait_for(timed, WAIT_MS));
    arpc_future_release(timed);
    assert_ptr_equal(data, arpc_request_data(held_timed, &len));
    assert_memory_equal("deadline", data, len);

    /* Answered at stop, then the server destroyed, while the application holds it. */
    arpc_future *stopped = arpc_call_async(c, "t.q", "stop", 4, ARPC_FOREVER);
    assert_non_null(stopped);
    void *held_stopped;
    assert_int_equal(ARPC_OK, arpc_cq_next_for(q, WAIT_MS, &delivered, &held_stopped));
    arpc_future_release(delivered);
    data = arpc_request_data(held_stopped, &len);
    assert_int_equal(ARPC_OK, arpc_server_stop(s, 0));
    assert_int_equal(ARPC_EABANDONED, arpc_future_wait_for(stopped, WAIT_MS));
    arpc_future_release(stopped);
    assert_ptr_equal(data, arpc_request_data(held_stopped, &len));
    assert_memory_equal("stop", data, len);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    assert_memory_equal("stop", arpc_request_data(held_stopped, NULL), 4);
    assert_string_equal("t.q", arpc_request_method(held_stopped));

    assert_int_equal(ARPC_ESHUTDOWN, reply_from_thread(held_timed));
    assert_int_equal(ARPC_ESHUTDOWN, arpc_reply(held_stopped, "late", 4));
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    arpc_cq_destroy(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_no_leak(test_reply_after_destroy_wrapped_loop),
        cmocka_unit_test_no_leak(test_reply_after_destroy_pollable_loop),
        cmocka_unit_test_no_leak(test_stop_forever_runs_wrapped_loop),
        cmocka_unit_test_no_leak(test_stop_forever_runs_pollable_loop),
        cmocka_unit_test_no_leak(test_stop_forever_runs_caller_driven_loop),
        cmocka_unit_test_no_leak(test_stop_grace_ends_early_wrapped_loop),
        cmocka_unit_test_no_leak(test_stop_grace_ends_early_pollable_loop),
        cmocka_unit_test_no_leak(test_stop_grace_ends_early_caller_driven_loop),
        cmocka_unit_test_no_leak(test_stop_woken_by_worker_end_pollable_loop),
        cmocka_unit_test_no_leak(test_stop_woken_by_worker_end_caller_driven_loop),
        cmocka_unit_test_no_leak(test_second_stop_from_owner_runs_wrapped_loop),
        cmocka_unit_test_no_leak(test_second_stop_from_owner_runs_pollable_loop),
        cmocka_unit_test_no_leak(test_stop_from_another_thread_wrapped_loop),
        cmocka_unit_test_no_leak(test_stop_from_another_thread_pollable_loop),
        cmocka_unit_test_no_leak(test_stop_from_another_thread_caller_driven_loop),
        cmocka_unit_test_no_leak(test_reply_after_destroy_queued_requests),
        cmocka_unit_test_no_leak(test_queued_request_data_outlives_the_servers_answer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
