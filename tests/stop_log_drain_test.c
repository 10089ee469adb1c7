/*
 * A server with a reply log stopped (and destroyed) while a numbered call's record is being
 * made durable: once arpc_server_stop returns, nothing touches the reply cache or the log,
 * whichever loop the server runs on (its own, an application's loop it runs on a thread of its
 * own, one its owner drives between steps; the application's loop destroyed after the server).
 * Before, the record came back through a job queued behind the stop's last step, which ran on
 * the reply cache arpc_server_destroy had freed (a NULL table: SEGV), or, on a loop driven by
 * its owner, when the owner next ran it.
 *
 * And a reply whose record becomes durable while the stop waits out its grace reaches its
 * caller: the stop keeps the connections open for it. Before, the grace ended with the
 * handler's reply and the connection closed under the record; the caller never got it.
 *
 * The test holds the log's fdatasync (this file's fdatasync stands in for libc's) until the
 * stop is where each case needs it: closing the log, or waiting in its grace.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <sched.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "core/reply_log_internal.h"
#include "core/server_internal.h"
#include "support/server_proc.h"
#include "support/test_util.h"

#define WAIT_MS TEST_WAIT_MS /* a bound for waits that should end soon: only a hang reaches it */

enum hold_until { HOLD_NONE, HOLD_UNTIL_LOG_CLOSES, HOLD_UNTIL_STOPPING };

static atomic_int hold_next_sync;             /* enum hold_until: the next fdatasync waits */
static arpc_server *_Atomic held_server;      /* whose state the held sync watches */
static struct arpc_reply_log *_Atomic held_log; /* and whose log (the stop takes it off the server
                                                 * before closing it: alive until its writer is joined) */
static atomic_int syncs_held;

static bool hold_released(enum hold_until until)
{
    arpc_server *s = atomic_load(&held_server);
    if (until == HOLD_UNTIL_LOG_CLOSES)
        return atomic_load(&atomic_load(&held_log)->lg_closing); /* the close: the writer is being joined */
    return atomic_load(&s->sv_state) != SV_RUNNING;
}

/* The log's writer syncs through here. One sync, once asked, waits until its condition holds
 * (bounded: a hang fails the test instead). */
int fdatasync(int fd)
{
    int until = atomic_exchange(&hold_next_sync, HOLD_NONE);
    if (until != HOLD_NONE) {
        atomic_fetch_add(&syncs_held, 1);
        latch_add();
        int64_t end = now_ms() + WAIT_MS;
        while (!hold_released(until)) {
            CHECK(now_ms() < end);
            if (now_ms() >= end)
                break;
            sched_yield();
        }
    }
    return (int)syscall(SYS_fdatasync, fd);
}

enum loop_kind { OWN_LOOP, THREADED_USER_LOOP, DRIVEN_USER_LOOP };

struct fixture {
    char dir[256];
    enum loop_kind kind;
    arpc_loop *user_loop;
    arpc_future *never; /* a driven loop's steps run "until" this */
    arpc_server *s;
    arpc_client *c;
    char addr[256];
};

/* One step of a loop its owner drives (the client shares it: its calls need the steps too). */
static void drive(struct fixture *fx)
{
    if (fx->kind == DRIVEN_USER_LOOP)
        assert_int_equal(ARPC_EPENDING, arpc_loop_run_until(fx->user_loop, fx->never, 1));
}

static void fixture_open(struct fixture *fx, enum loop_kind kind)
{
    latch_reset();
    atomic_store(&syncs_held, 0);
    atomic_store(&bad_line, 0);
    fx->kind = kind;
    fx->user_loop = NULL;
    fx->never = NULL;
    server_proc_mkdir(fx->dir, sizeof(fx->dir));
    arpc_server_options so = {.log_dir = fx->dir, .workers = 1};
    if (kind != OWN_LOOP) {
        assert_int_equal(ARPC_OK, arpc_loop_create(&fx->user_loop, NULL));
        so.loop = fx->user_loop;
    }
    if (kind == THREADED_USER_LOOP)
        assert_int_equal(ARPC_OK, arpc_loop_start(fx->user_loop));
    if (kind == DRIVEN_USER_LOOP)
        assert_int_equal(ARPC_OK, arpc_future_create(&fx->never));
    assert_int_equal(ARPC_OK, arpc_server_create(&fx->s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(fx->s, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(fx->s, "tcp://127.0.0.1:0", fx->addr, sizeof(fx->addr)));
    arpc_client_options co = {.loop = kind == DRIVEN_USER_LOOP ? fx->user_loop : NULL};
    assert_int_equal(ARPC_OK, arpc_client_connect(&fx->c, fx->addr, &co)); /* drives a driven loop itself */
    atomic_store(&held_server, fx->s);
    atomic_store(&held_log, fx->s->sv_log);
}

/* Calls t.echo (numbered: at-most-once, the client's default) and returns once its record's
 * fdatasync is held. */
static arpc_future *call_until_sync_held(struct fixture *fx, enum hold_until until)
{
    atomic_store(&hold_next_sync, until);
    arpc_future *f = arpc_call_async(fx->c, "t.echo", "x", 1, ARPC_FOREVER);
    assert_non_null(f);
    int64_t end = now_ms() + WAIT_MS;
    while (!latch_wait(1, 1)) {
        assert_true(now_ms() < end);
        drive(fx);
    }
    return f;
}

static void fixture_close(struct fixture *fx, arpc_future *f)
{
    assert_int_equal(ARPC_OK, arpc_client_close(fx->c)); /* the call ends, if it had not */
    assert_int_not_equal(ARPC_EPENDING, arpc_future_poll(f));
    arpc_future_release(f);
    if (fx->user_loop != NULL)
        arpc_loop_destroy(fx->user_loop); /* after the server: its final drain runs nothing of it */
    if (fx->never != NULL)
        arpc_future_release(fx->never);
    server_proc_rmdir(fx->dir);
    assert_int_equal(0, atomic_load(&bad_line));
}

/* A stop with no grace as the call's record is being synced: it closes the connections, then
 * the log, before the record is durable; the record comes back as the log closes. On a loop
 * its own thread runs, the record's job used to run on that thread while the destroy freed
 * the cache, most of the time after it: each case tries ROUNDS times. (A driven loop never
 * lost it: the stop's step drained the lane, the job with it.) */
#define ROUNDS 10

static void destroy_while_syncing(enum loop_kind kind)
{
    /* The sync ends only as the log closes: a stop that waited past its grace for the record
     * (5 s: core/server.c) would wait it out every round. */
    unsigned logged_ms = server_stop_logged_ms;
    server_stop_logged_ms = 0;
    for (int round = 0; round < ROUNDS; round++) {
        struct fixture fx;
        fixture_open(&fx, kind);
        arpc_future *f = call_until_sync_held(&fx, HOLD_UNTIL_LOG_CLOSES);
        assert_int_equal(ARPC_OK, arpc_server_stop(fx.s, 0)); /* from the owner of a driven loop, outside a step */
        assert_int_equal(ARPC_OK, arpc_server_destroy(fx.s));
        assert_int_equal(1, atomic_load(&syncs_held));
        for (int i = 0; i < 10; i++) /* a driven loop's next steps run nothing of the server's */
            drive(&fx);
        fixture_close(&fx, f);
    }
    server_stop_logged_ms = logged_ms;
}

static void test_destroy_while_syncing_own_loop(void **state)
{
    (void)state;
    destroy_while_syncing(OWN_LOOP);
}

static void test_destroy_while_syncing_threaded_user_loop(void **state)
{
    (void)state;
    destroy_while_syncing(THREADED_USER_LOOP);
}

static void test_destroy_while_syncing_driven_user_loop(void **state)
{
    (void)state;
    destroy_while_syncing(DRIVEN_USER_LOOP);
}

/* The handler replied before the stop; its record becomes durable once the stop has begun:
 * the stop waits for it within its grace, and the caller gets its reply. */
static void reply_durable_during_grace(enum loop_kind kind)
{
    struct fixture fx;
    fixture_open(&fx, kind);
    arpc_future *f = call_until_sync_held(&fx, HOLD_UNTIL_STOPPING);
    assert_int_equal(ARPC_OK, arpc_server_stop(fx.s, WAIT_MS));
    assert_int_equal(ARPC_OK, arpc_future_wait_for(f, WAIT_MS)); /* before: the connection closed under it */
    assert_int_equal(ARPC_OK, arpc_server_destroy(fx.s));
    fixture_close(&fx, f);
}

static void test_reply_durable_during_grace_own_loop(void **state)
{
    (void)state;
    reply_durable_during_grace(OWN_LOOP);
}

static void test_reply_durable_during_grace_threaded_user_loop(void **state)
{
    (void)state;
    reply_durable_during_grace(THREADED_USER_LOOP);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]); /* one case: e.g. "*driven*" */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_destroy_while_syncing_driven_user_loop),
        cmocka_unit_test(test_destroy_while_syncing_threaded_user_loop),
        cmocka_unit_test(test_destroy_while_syncing_own_loop),
        cmocka_unit_test(test_reply_durable_during_grace_own_loop),
        cmocka_unit_test(test_reply_durable_during_grace_threaded_user_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
