/*
 * A pool worker's replies of one take wake the loop once (core/reply_batch.c).
 *
 * How the take is arranged, whatever the machine's speed: the pool's one worker is kept busy
 * by a job of the test's own while a raw client's calls are dispatched to its mailbox (the
 * server's handlers_in_flight says when all are), and the loop is held in an inline handler
 * (tests/support/loop_hold.h), so nothing the loop does can change its lane or its wake-up
 * flag. The worker then takes every call at once. Each handler notes whether a wake-up of the
 * loop is pending as it starts: none is, until REPLY_BATCH_MAX (64) replies wait, where one
 * is paid; the old code posted the take's first reply with a wake-up (the loop, running, was
 * not idle), so every handler after the first saw one pending. Once the loop goes on, every
 * reply arrives, once, with its own bytes, and none was written by the worker.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <semaphore.h>
#include <stdatomic.h>
#include <string.h>

#include "arpc/arpc.h"
#include "async/actor_internal.h"
#include "async/loop_impl.h"
#include "base/le.h"
#include "core/server_internal.h"
#include "support/loop_hold.h"
#include "support/raw_client.h"
#include "support/test_util.h"

#define CALLS 100     /* past REPLY_BATCH_MAX: one wake-up is paid mid-take */
#define BATCH_MAX 64u /* core/reply_batch.c */

static arpc_server *srv;
static atomic_int pending_at[CALLS]; /* l_wake_pending as handler i started; -1: not run */

static void note_and_echo(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len = 0;
    const uint8_t *p = arpc_request_data(req, &len);
    uint32_t i = len == 4 ? le_ld32(p) : CALLS; /* (no cmocka asserts off the test's thread) */
    if (i < CALLS)
        atomic_store(&pending_at[i], (int)atomic_load(&srv->sv_loop->l_wake_pending));
    arpc_reply(req, p, len);
}

static sem_t worker_in, worker_go;

static void keep_worker(arpc_actor *a, void *arg, int status)
{
    (void)a;
    (void)arg;
    (void)status;
    sem_post(&worker_in);
    (void)sem_wait_secs(&worker_go, TEST_WAIT_MS / 1000); /* the test fails on its own wait */
}

/* calls requests in one take of the pool's worker, the loop held meanwhile; returns once all
 * are answered. */
static void run_take(unsigned calls)
{
    char addr[ARPC_ADDR_MAX];
    arpc_server_options o = {.workers = 1};
    assert_int_equal(ARPC_OK, arpc_server_create(&srv, &o));
    assert_int_equal(ARPC_OK, arpc_server_register(srv, "t.note", note_and_echo, NULL,
                                                   &(arpc_method_options){.reply_bytes_hint = 4}));
    assert_int_equal(ARPC_OK, arpc_server_register(srv, "t.hold", loop_hold_handler, NULL,
                                                   &(arpc_method_options){.inline_on_loop = true}));
    assert_int_equal(ARPC_OK, arpc_server_listen(srv, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    for (unsigned i = 0; i < CALLS; i++)
        atomic_store(&pending_at[i], -1);
    sem_init(&worker_in, 0, 0);
    sem_init(&worker_go, 0, 0);
    assert_int_equal(ARPC_OK, arpc_actor_post(arpc_actor_group_member(srv->sv_pool, 0), keep_worker, NULL));
    assert_true(sem_wait_secs(&worker_in, TEST_WAIT_MS / 1000));

    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0xba7c));
    for (uint32_t i = 0; i < calls; i++) {
        uint8_t body[4];
        le_st32(body, i);
        assert_true(raw_request(&r, 1000 + i, 0, 0, 0, "t.note", body, sizeof(body)));
    }
    assert_true(server_stat_reaches(srv, offsetof(arpc_server_stats, handlers_in_flight), calls, TEST_WAIT_MS));
    struct raw_client *holder = loop_hold_begin(addr, "t.hold");
    assert_non_null(holder);
    assert_int_equal(0, atomic_load(&srv->sv_loop->l_wake_pending));
    sem_post(&worker_go); /* the worker takes the calls at once */
    /* The take's end (or a hand-over before it) leaves a wake-up pending for the held loop. */
    assert_true(WAIT_UNTIL(atomic_load(&pending_at[calls - 1]) >= 0 && atomic_load(&srv->sv_loop->l_wake_pending) != 0));
    /* Handler i ran after i replies were handed over: none announced before the 64th. */
    for (unsigned i = 0; i < calls; i++) {
        int seen = atomic_load(&pending_at[i]);
        if (seen != (i >= BATCH_MAX))
            fail_msg("handler %u of %u saw a wake-up %s", i, calls, seen ? "pending" : "not pending");
    }
    loop_hold_end(holder);

    bool seen[CALLS] = {false};
    for (unsigned n = 0; n < calls; n++) {
        struct raw_frame f;
        assert_true(raw_read(&r, &f, false));
        assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
        uint64_t i = f.f.f_xid - 1000;
        assert_true(i < calls && !seen[i]);
        seen[i] = true;
        assert_int_equal(4, f.body_len);
        assert_int_equal(i, le_ld32(f.body));
    }
    assert_int_equal(0, arpc_stat_get(&srv->sv_direct_replies)); /* the loop wrote them all */
    raw_close(&r);
    arpc_server_destroy(srv);
    sem_destroy(&worker_in);
    sem_destroy(&worker_go);
}

/* Fewer than REPLY_BATCH_MAX: the take's end pays the one wake-up. */
static void test_take_end_wakes_once(void **state)
{
    (void)state;
    run_take(10);
}

/* More: the 64th reply held pays it, and the rest follow on the same. */
static void test_batch_bound_wakes_mid_take(void **state)
{
    (void)state;
    run_take(CALLS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_take_end_wakes_once),
        cmocka_unit_test(test_batch_bound_wakes_mid_take),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
