/*
 * A full actor mailbox holds back only the connection that feeds it (core/request.c, flow
 * control), never the server's loop:
 *  - while a single-actor method's handler is blocked and its mailbox is at its bound, another
 *    connection's inline call is answered; the feeding connection is held (its own inline call,
 *    sent behind the queued ones, waits for them to be posted); once the handler goes on, every
 *    call completes OK exactly once, in order;
 *  - the same with a keyed method on a group: per key, in order;
 *  - a server stopped, or a client gone, while a request is parked: every call ends (with an
 *    error where it did not run), nothing runs twice, nothing leaks.
 * The handler blocks on a semaphore and announces itself on the latch: no sleeps.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <sched.h>
#include <semaphore.h>
#include <string.h>

#include "arpc/arpc.h"
#include "core/server_internal.h"
#include "support/test_util.h"

#define MAILBOX 4
#define CALLS 64 /* far more than the actor holds (1 running + MAILBOX queued) */
#define MARK (-1)

static sem_t gate;
static atomic_int order[CALLS + 1]; /* what ran, in the order it ran */
static atomic_int ran;
static atomic_int runs_of[CALLS];

static void record(int v)
{
    int at = atomic_fetch_add(&ran, 1);
    if (at < CALLS + 1)
        atomic_store(&order[at], v);
}

/* Call 0 blocks until the gate opens; every call echoes its index. */
static void h_serial(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len;
    const int *i = arpc_request_data(req, &len);
    CHECK(len == sizeof(int) && *i >= 0 && *i < CALLS);
    atomic_fetch_add(&runs_of[*i], 1);
    record(*i);
    if (*i == 0) {
        latch_add();
        sem_wait_secs(&gate, 60);
    }
    arpc_reply(req, i, len);
}

static void h_mark(arpc_request *req, void *ctx)
{
    (void)ctx;
    record(MARK);
    arpc_reply(req, "", 0);
}

static void h_inline(arpc_request *req, void *ctx)
{
    (void)ctx;
    arpc_reply(req, "", 0);
}

/* Keyed variant: the key is the index's parity, so calls 0, 2, 4... share one actor; the
 * even call past what it holds while call 0 blocks (1 running + MAILBOX queued) is announced. */
#define FIRST_EVEN_PAST_BOUND (2 * (MAILBOX + 1))
static uint64_t parity_keys[2]; /* two keys the group sends to different members */
static uint64_t key_parity(const void *data, size_t len, void *ctx)
{
    (void)ctx;
    int i = len == sizeof(int) ? *(const int *)data : 0;
    if (i == FIRST_EVEN_PAST_BOUND)
        latch_add();
    return parity_keys[i & 1];
}

struct fixture {
    arpc_server *s;
    arpc_actor *actor;
    arpc_actor_group *group;
    arpc_client *a, *b;
    arpc_future *fs[CALLS];
};

static void fixture_start(struct fixture *fx, bool keyed)
{
    memset(fx, 0, sizeof(*fx));
    latch_reset();
    sem_init(&gate, 0, 0);
    atomic_store(&ran, 0);
    for (int i = 0; i < CALLS; i++)
        atomic_store(&runs_of[i], 0);
    arpc_actor_options ao = {.mailbox_size = MAILBOX};
    arpc_method_options serial = {.actor = NULL}, in = {.inline_on_loop = true};
    if (keyed) {
        assert_int_equal(ARPC_OK, arpc_actor_group_create(&fx->group, 2, &ao));
        serial.group = fx->group;
        serial.key = key_parity;
        parity_keys[0] = 0;
        parity_keys[1] = 1;
        while (arpc_actor_group_pick_key(fx->group, parity_keys[1]) ==
               arpc_actor_group_pick_key(fx->group, parity_keys[0]))
            parity_keys[1]++;
    } else {
        assert_int_equal(ARPC_OK, arpc_actor_create(&fx->actor, &ao));
        serial.actor = fx->actor;
    }
    arpc_server_options so = {.workers = 1};
    assert_int_equal(ARPC_OK, arpc_server_create(&fx->s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(fx->s, "t.serial", h_serial, NULL, &serial));
    assert_int_equal(ARPC_OK, arpc_server_register(fx->s, "t.mark", h_mark, NULL, &in));
    assert_int_equal(ARPC_OK, arpc_server_register(fx->s, "t.inline", h_inline, NULL, &in));
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(fx->s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    assert_int_equal(ARPC_OK, arpc_client_connect(&fx->a, addr, NULL));
    assert_int_equal(ARPC_OK, arpc_client_connect(&fx->b, addr, NULL));
}

/* Client A pipelines every call; returns once call 0 runs (and blocks) and the loop has
 * dispatched the first call past what the blocked actor holds, so that B's call comes after
 * the loop met the full mailbox. Call 0 goes alone first: the actor's take is then call 0
 * only, whose place it gives back as it starts it, so the mailbox holds exactly the next
 * MAILBOX calls (of its key) and the one after them finds it full. Single actor: the server's
 * count of calls in flight says that one was dispatched (it counts a call before posting it,
 * and none finishes while call 0 blocks). Keyed: the key function, run on the loop before the
 * post, says so. */
static void pipeline_and_block(struct fixture *fx)
{
    for (int i = 0; i < CALLS; i++) {
        fx->fs[i] = arpc_call_async(fx->a, "t.serial", &i, sizeof(i), 60000);
        assert_non_null(fx->fs[i]);
        if (i == 0)
            assert_true(latch_wait(1, 30000));
    }
    if (fx->group != NULL) {
        assert_true(latch_wait(2, 30000));
        return;
    }
    int64_t give_up = now_ms() + 30000;
    while (atomic_load(&fx->s->sv_inflight) < 1 + MAILBOX + 1 && now_ms() < give_up)
        sched_yield();
    assert_true(atomic_load(&fx->s->sv_inflight) >= 1 + MAILBOX + 1);
}

static void fixture_end(struct fixture *fx)
{
    for (int i = 0; i < 8; i++)
        sem_post(&gate);
    if (fx->a != NULL)
        arpc_client_close(fx->a);
    if (fx->b != NULL)
        arpc_client_close(fx->b);
    if (fx->s != NULL)
        arpc_server_destroy(fx->s);
    if (fx->actor != NULL)
        arpc_actor_destroy(fx->actor);
    if (fx->group != NULL)
        arpc_actor_group_destroy(fx->group);
    for (int i = 0; i < CALLS; i++)
        if (fx->fs[i] != NULL)
            arpc_future_release(fx->fs[i]);
    sem_destroy(&gate);
    assert_int_equal(0, atomic_load(&bad_line));
}

static void check_all_ok_once(struct fixture *fx)
{
    for (int i = 0; i < CALLS; i++) {
        assert_int_equal(ARPC_OK, arpc_future_wait_for(fx->fs[i], 60000));
        size_t len;
        const int *echo = arpc_future_data(fx->fs[i], &len);
        assert_int_equal(sizeof(int), len);
        assert_int_equal(i, *echo);
        assert_int_equal(1, atomic_load(&runs_of[i]));
    }
}

static void test_full_mailbox_holds_only_its_connection(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_start(&fx, false);
    pipeline_and_block(&fx);
    arpc_future *mark = arpc_call_async(fx.a, "t.mark", "", 0, 60000);
    assert_non_null(mark);
    /* The loop is not stuck behind the full mailbox: another connection is served. */
    assert_int_equal(ARPC_OK, arpc_call(fx.b, "t.inline", "", 0, NULL, NULL, 20000));
    /* A's connection is held: its inline call, behind the queued ones, has not run. */
    assert_int_equal(ARPC_EPENDING, arpc_future_poll(mark));
    assert_int_equal(1, atomic_load(&ran)); /* call 0 only */
    sem_post(&gate);
    check_all_ok_once(&fx);
    assert_int_equal(ARPC_OK, arpc_future_wait_for(mark, 60000));
    arpc_future_release(mark);
    assert_int_equal(CALLS + 1, atomic_load(&ran));
    /* The actor ran the calls in the order they were sent. The mark ran (on the loop) once
     * every call before it was posted: all but the one running and MAILBOX queued had started. */
    int next = 0, mark_at = -1;
    for (int at = 0; at < CALLS + 1; at++) {
        int v = atomic_load(&order[at]);
        if (v == MARK)
            mark_at = at;
        else
            assert_int_equal(next++, v);
    }
    assert_true(mark_at >= CALLS - MAILBOX - 1);
    fixture_end(&fx);
}

static void test_keyed_group_keeps_order_per_key(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_start(&fx, true);
    pipeline_and_block(&fx);
    assert_int_equal(ARPC_OK, arpc_call(fx.b, "t.inline", "", 0, NULL, NULL, 20000));
    sem_post(&gate);
    check_all_ok_once(&fx);
    assert_int_equal(CALLS, atomic_load(&ran));
    int last[2] = {-1, -1};
    for (int at = 0; at < CALLS; at++) {
        int v = atomic_load(&order[at]);
        assert_true(v > last[v & 1]); /* each key's calls ran in the order they were sent */
        last[v & 1] = v;
    }
    fixture_end(&fx);
}

/* Every call ended; the ones that ran, ran once; the parked and unread ones did not run. */
static void check_all_ended(struct fixture *fx)
{
    int ok = 0;
    for (int i = 0; i < CALLS; i++) {
        int rc = arpc_future_wait_for(fx->fs[i], 60000);
        assert_int_not_equal(ARPC_ETIMEDOUT, rc);
        assert_int_not_equal(ARPC_EPENDING, rc);
        assert_true(atomic_load(&runs_of[i]) <= 1);
        ok += rc == ARPC_OK;
    }
    assert_int_equal(0, ok);
}

static void test_server_stopped_with_a_parked_request(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_start(&fx, false);
    pipeline_and_block(&fx);
    assert_int_equal(ARPC_OK, arpc_call(fx.b, "t.inline", "", 0, NULL, NULL, 20000));
    /* No grace: the parked call is refused and the connections close while call 0 blocks. */
    assert_int_equal(ARPC_OK, arpc_server_stop(fx.s, 0));
    sem_post(&gate);
    arpc_client_close(fx.a); /* the calls its server never answered end here */
    fx.a = NULL;
    check_all_ended(&fx);
    arpc_actor_destroy(fx.actor); /* the queued calls run (their replies are dropped) */
    fx.actor = NULL;
    assert_true(atomic_load(&ran) <= 1 + MAILBOX + 1);
    fixture_end(&fx);
}

static void test_client_gone_with_a_parked_request(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_start(&fx, false);
    pipeline_and_block(&fx);
    arpc_client_close(fx.a); /* every call of A ends now: cancelled if sent, else ESHUTDOWN */
    fx.a = NULL;
    for (int i = 0; i < CALLS; i++) {
        int st = arpc_future_wait_for(fx.fs[i], 60000);
        assert_true(st == ARPC_ECANCELLED || st == ARPC_ESHUTDOWN);
    }
    /* The server learns it once it reads again: the parked and buffered calls are let go. */
    sem_post(&gate);
    assert_int_equal(ARPC_OK, arpc_call(fx.b, "t.inline", "", 0, NULL, NULL, 20000));
    arpc_server_destroy(fx.s);
    fx.s = NULL;
    arpc_actor_destroy(fx.actor);
    fx.actor = NULL;
    for (int i = 0; i < CALLS; i++)
        assert_true(atomic_load(&runs_of[i]) <= 1);
    arpc_client_close(fx.b);
    fx.b = NULL;
    fixture_end(&fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_mailbox_holds_only_its_connection),
        cmocka_unit_test(test_keyed_group_keeps_order_per_key),
        cmocka_unit_test(test_server_stopped_with_a_parked_request),
        cmocka_unit_test(test_client_gone_with_a_parked_request),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
