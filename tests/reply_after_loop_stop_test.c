/*
 * The application stops the loop its server runs on (arpc_loop_stop on the server's options'
 * loop), and only then do handlers reply and the server stop. No loop takes the replies any
 * more; a reply used to be let go of off the loop all the same, freeing its request while the
 * loop's lists (the calls waiting for replies, the connection's call table) still held it: the
 * stop then walked freed blocks (pool memory, which ASan does not see), answered calls that had
 * replied ARPC_EABANDONED or "not run" ARPC_ESHUTDOWN, and counted calls in flight below zero.
 * Now such a reply's job waits for the server's stop, whose steps run it as the loop (on any
 * kind of loop: for a wrapped one, on its owner's thread): each call counts as answered by
 * its handler, once, nothing is left in flight, and the reply is written then, before the
 * connection closes. (A first version ran the job on the replier's thread once the loop
 * looked idle: on a wrapped loop, whose owner's ev_run goes on, that raced the owner: review
 * 244, test_wrapped_loop under TSan.)
 *
 * Cases: the handler returned before its reply (a reply from another thread), the handler
 * replies before it returns (on a pool worker), numbered (at-most-once) calls, and a wrapped
 * loop (arpc_loop_wrap) whose owner goes on running its libev loop.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <string.h>

#include <ev.h>

#include "arpc/arpc.h"
#include "arpc/stats.h"
#include "support/raw_client.h"
#include "support/test_util.h"

#define CALLS 3

static arpc_request *_Atomic kept[CALLS];
static atomic_int kept_n;
static sem_t replies_go;
static atomic_int reply_rcs[CALLS];
static atomic_int reply_started, replied_n;

/* Keeps the request and returns: the test replies later. */
static void h_keep(arpc_request *req, void *ctx)
{
    (void)ctx;
    int i = atomic_fetch_add(&kept_n, 1);
    if (i < CALLS)
        atomic_store(&kept[i], req);
    latch_add();
}

/* Replies on its worker once the test lets it (after the loop's stop). */
static void h_reply_later(arpc_request *req, void *ctx)
{
    (void)ctx;
    latch_add();
    (void)sem_wait_secs(&replies_go, 10);
    int i = atomic_fetch_add(&reply_started, 1);
    atomic_store(&reply_rcs[i % CALLS], arpc_reply(req, "late", 4));
    atomic_fetch_add(&replied_n, 1); /* after its code is stored */
}

static void stop_loop_then_reply(const char *method, uint64_t first_seq)
{
    atomic_store(&kept_n, 0);
    atomic_store(&reply_started, 0);
    atomic_store(&replied_n, 0);
    assert_int_equal(0, sem_init(&replies_go, 0, 0));
    latch_reset();
    arpc_loop *loop;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_start(loop));
    arpc_server *s;
    arpc_server_options o = {.workers = CALLS, .loop = loop};
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &o));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.keep", h_keep, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.reply_later", h_reply_later, NULL, NULL));
    char addr[128];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 77));
    for (uint64_t x = 1; x <= CALLS; x++)
        assert_true(raw_request(&r, x, first_seq != 0 ? first_seq + x - 1 : 0, 0, 0, method, "x", 1));
    assert_true(latch_wait(CALLS, 10000)); /* every handler has started */

    arpc_loop_stop(loop);
    if (strcmp(method, "t.keep") == 0) {
        for (int i = 0; i < CALLS; i++)
            assert_int_equal(ARPC_OK, arpc_reply(atomic_load(&kept[i]), "late", 4));
    } else {
        for (int i = 0; i < CALLS; i++)
            assert_int_equal(0, sem_post(&replies_go));
        int64_t until = now_ms() + 10000;
        while (atomic_load(&replied_n) < CALLS && poll_again(until))
            ;
        assert_int_equal(CALLS, atomic_load(&replied_n));
        for (int i = 0; i < CALLS; i++)
            assert_int_equal(ARPC_OK, atomic_load(&reply_rcs[i]));
    }

    int64_t t0 = now_ms();
    assert_int_equal(ARPC_OK, arpc_server_stop(s, 0));
    assert_true(now_ms() - t0 < 4000); /* no wait for replies that cannot come */
    /* The replies went out as the loop would have written them (their socket had room),
     * then the stop's GOAWAYs, then the close. */
    bool got[CALLS + 1] = {false};
    struct raw_frame f;
    while (raw_read(&r, &f, false)) {
        if (f.f.f_kind == ARPC_FRAME_GOAWAY)
            continue;
        assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
        assert_true(f.f.f_xid >= 1 && f.f.f_xid <= CALLS && !got[f.f.f_xid]);
        got[f.f.f_xid] = true;
        assert_int_equal(4, f.body_len);
        assert_memory_equal("late", f.body, 4);
    }
    for (int x = 1; x <= CALLS; x++)
        assert_true(got[x]);
    /* Each call answered once, by its handler's reply. */
    arpc_method_stats ms;
    assert_int_equal(ARPC_OK, arpc_server_method_stats(s, method, &ms));
    assert_int_equal(CALLS, ms.calls.started);
    assert_int_equal(CALLS, ms.calls.finished);
    assert_int_equal(0, ms.calls.in_flight);
    assert_int_equal(CALLS, ms.calls.by_outcome[ARPC_OK]);
    assert_int_equal(0, ms.calls.by_outcome[ARPC_EABANDONED]);
    assert_int_equal(0, ms.calls.by_outcome[ARPC_ESHUTDOWN]);
    arpc_server_stats ss;
    assert_int_equal(ARPC_OK, arpc_server_stats(s, &ss));
    assert_int_equal(0, ss.handlers_in_flight);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    arpc_loop_destroy(loop);
    raw_close(&r);
    sem_destroy(&replies_go);
}

static void test_reply_after_handler_returned(void **state)
{
    (void)state;
    stop_loop_then_reply("t.keep", 0);
}

static void test_reply_from_running_handler(void **state)
{
    (void)state;
    stop_loop_then_reply("t.reply_later", 0);
}

static void test_numbered_calls(void **state)
{
    (void)state;
    stop_loop_then_reply("t.keep", 1);
}

/* ---- a wrapped loop: the application's own ev_run goes on after arpc_loop_stop ---- */

static arpc_loop *wrapped;
static arpc_server *wrapped_server;
static char wrapped_addr[128];
static atomic_int owner_ready, owner_quit;
static arpc_method_stats owner_ms;
static int owner_stop_rc = -1;

static void owner_tick(struct ev_loop *ev, ev_timer *w, int revents)
{
    (void)ev;
    (void)w;
    (void)revents;
}

/* The application's thread: its libev loop runs the server until told to quit, then it stops
 * the server from here, outside ev_run (a wrapped loop's stop belongs to its owner). */
static void *owner_main(void *arg)
{
    (void)arg;
    struct ev_loop *ev = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(ev);
    assert_int_equal(ARPC_OK, arpc_loop_wrap(&wrapped, ev, NULL));
    arpc_server_options o = {.workers = CALLS, .loop = wrapped};
    assert_int_equal(ARPC_OK, arpc_server_create(&wrapped_server, &o));
    assert_int_equal(ARPC_OK, arpc_server_register(wrapped_server, "t.keep", h_keep, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(wrapped_server, "tcp://127.0.0.1:0", wrapped_addr, sizeof(wrapped_addr)));
    ev_timer tick;
    ev_timer_init(&tick, owner_tick, 0.001, 0.001); /* the loop turns while the test replies */
    ev_timer_start(ev, &tick);
    atomic_store(&owner_ready, 1);
    while (!atomic_load(&owner_quit))
        ev_run(ev, EVRUN_ONCE);
    ev_timer_stop(ev, &tick);
    owner_stop_rc = arpc_server_stop(wrapped_server, 0);
    assert_int_equal(ARPC_OK, arpc_server_method_stats(wrapped_server, "t.keep", &owner_ms));
    assert_int_equal(ARPC_OK, arpc_server_destroy(wrapped_server));
    arpc_loop_destroy(wrapped);
    ev_loop_destroy(ev);
    return NULL;
}

/* The replies come from this thread while the owner's ev_run still turns: under TSan, a
 * reply that did the loop's part here (a version of this fix did) races the owner's thread. */
static void test_wrapped_loop(void **state)
{
    (void)state;
    atomic_store(&kept_n, 0);
    atomic_store(&owner_ready, 0);
    atomic_store(&owner_quit, 0);
    latch_reset();
    pthread_t owner;
    assert_int_equal(0, pthread_create(&owner, NULL, owner_main, NULL));
    int64_t until = now_ms() + 10000;
    while (!atomic_load(&owner_ready) && poll_again(until))
        ;
    assert_true(atomic_load(&owner_ready));
    struct raw_client r;
    assert_true(raw_connect(&r, wrapped_addr, 78));
    for (uint64_t x = 1; x <= CALLS; x++)
        assert_true(raw_request(&r, x, 0, 0, 0, "t.keep", "x", 1));
    assert_true(latch_wait(CALLS, 10000));
    arpc_loop_stop(wrapped);
    for (int i = 0; i < CALLS; i++)
        assert_int_equal(ARPC_OK, arpc_reply(atomic_load(&kept[i]), "late", 4));
    atomic_store(&owner_quit, 1);
    assert_int_equal(0, pthread_join(owner, NULL));
    assert_int_equal(ARPC_OK, owner_stop_rc);
    assert_int_equal(CALLS, owner_ms.calls.finished);
    assert_int_equal(0, owner_ms.calls.in_flight);
    assert_int_equal(CALLS, owner_ms.calls.by_outcome[ARPC_OK]);
    raw_close(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reply_after_handler_returned),
        cmocka_unit_test(test_reply_from_running_handler),
        cmocka_unit_test(test_numbered_calls),
        cmocka_unit_test(test_wrapped_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
