/*
 * What a caller's deadline, cancel and choice of semantics do on the server:
 *  - the handler sees what is left of the budget; a call whose budget ran out while queued
 *    does not run (ARPC_EEXPIRED reaches nobody: the caller timed out first);
 *  - a cancelled call that has not started does not run; a running one sees
 *    arpc_request_cancelled() and its on_cancel callback;
 *  - over a connection cut under running calls: at-most-once runs once, at-least-once may run
 *    again (and ends OK), no-retry ends with ARPC_ECONNLOST;
 *  - calls routed by key (arpc_method_options.key) run on one actor per key, in order.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "arpc/arpc.h"
#include "core/frame.h"
#include "support/cut_proxy.h"
#include "support/raw_client.h"
#include "support/test_util.h"

static atomic_int runs;
static atomic_llong seen_budget;
static atomic_int seen_cancelled, cancel_callbacks;
static sem_t gate, cancelled_sem;

static void on_cancel(arpc_request *req, void *arg)
{
    (void)req;
    (void)arg;
    atomic_fetch_add(&cancel_callbacks, 1);
    sem_post(&cancelled_sem);
}

/* "hold": waits for the gate; "wait-cancel": waits for its cancel; anything else: at once. */
static void h_serial(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&runs, 1);
    atomic_store(&seen_budget, arpc_request_budget_ms(req));
    size_t len;
    const char *p = arpc_request_data(req, &len);
    latch_add();
    if (len == 4 && memcmp(p, "hold", 4) == 0)
        sem_wait_secs(&gate, 30);
    if (len == 11 && memcmp(p, "wait-cancel", 11) == 0) {
        assert_int_equal(ARPC_OK, arpc_request_on_cancel(req, on_cancel, NULL));
        sem_wait_secs(&cancelled_sem, 30);
        atomic_store(&seen_cancelled, arpc_request_cancelled(req));
    }
    arpc_reply(req, p, len);
}

static void h_inline(arpc_request *req, void *ctx)
{
    (void)ctx;
    arpc_reply(req, "", 0);
}

struct fixture {
    arpc_server *s;
    arpc_actor *actor;
    arpc_client *c;
    char addr[256];
};

static int setup(void **state)
{
    static struct fixture fx;
    atomic_store(&runs, 0);
    atomic_store(&cancel_callbacks, 0);
    atomic_store(&seen_cancelled, 0);
    latch_reset();
    sem_init(&gate, 0, 0);
    sem_init(&cancelled_sem, 0, 0);
    arpc_method_options one = {.actor = NULL}, in = {.inline_on_loop = true};
    if (arpc_server_create(&fx.s, NULL) != ARPC_OK || arpc_actor_create(&fx.actor, NULL) != ARPC_OK)
        return -1;
    one.actor = fx.actor;
    if (arpc_server_register(fx.s, "t.serial", h_serial, NULL, &one) != ARPC_OK ||
        arpc_server_register(fx.s, "t.inline", h_inline, NULL, &in) != ARPC_OK ||
        arpc_server_listen(fx.s, "tcp://127.0.0.1:0", fx.addr, sizeof(fx.addr)) != ARPC_OK ||
        arpc_client_connect(&fx.c, fx.addr, NULL) != ARPC_OK)
        return -1;
    *state = &fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    for (int i = 0; i < 8; i++) {
        sem_post(&gate);
        sem_post(&cancelled_sem);
    }
    arpc_client_close(fx->c);
    arpc_server_destroy(fx->s);
    arpc_actor_destroy(fx->actor);
    sem_destroy(&gate);
    sem_destroy(&cancelled_sem);
    return 0;
}

/* The in-order stream of one connection: once the inline call behind it is answered, the
 * server has seen everything sent before it. */
static void sync_connection(struct fixture *fx)
{
    assert_int_equal(ARPC_OK, arpc_call(fx->c, "t.inline", "", 0, NULL, NULL, 10000));
}

static void test_expired_in_queue_does_not_run(void **state)
{
    struct fixture *fx = *state;
    arpc_future *held = arpc_call_async(fx->c, "t.serial", "hold", 4, 20000);
    assert_true(latch_wait(1, TEST_WAIT_MS)); /* the actor is busy */
    /* Queued behind it with 50 ms: the caller times out, or gets the server's ARPC_EEXPIRED
     * when it comes before the client's own timer (the server refuses it at its deadline, which
     * its arrival puts a fraction of a ms after the client's); the server must not run it later.
     * A call the client's loop takes up after its 50 ms (a loaded machine) ends EUNREACHABLE
     * there, never sent: nothing reached the queue, so it is made again. */
    int late = call_until_sent(fx->c, "t.serial", "late", 4, NULL, NULL, 50);
    assert_true(late == ARPC_ETIMEDOUT || late == ARPC_EEXPIRED);
    sync_connection(fx); /* it has arrived; its budget counts from then: let it pass for sure */
    sleep_ms(60); /* the budget running out is the subject, not a wait */
    sem_post(&gate);
    assert_int_equal(ARPC_OK, arpc_future_wait_for(held, 10000));
    arpc_future_release(held);
    assert_int_equal(ARPC_OK, arpc_call(fx->c, "t.serial", "after", 5, NULL, NULL, 10000)); /* FIFO */
    assert_int_equal(2, atomic_load(&runs)); /* "hold" and "after"; never "late" */
}

/* A call whose budget runs out while it waits in its actor's mailbox, behind a handler that
 * holds the actor, is refused ARPC_EEXPIRED at its deadline, while that handler still runs:
 * not when the actor comes to it, long after its caller gave up not knowing whether it ran.
 * And it never runs. A raw client: no timer of its own ends its wait, so what it reads is the
 * server's answer and when it came. */
static void test_expired_in_queue_is_answered_at_its_deadline(void **state)
{
    struct fixture *fx = *state;
    struct raw_client r;
    struct raw_frame f;
    assert_true(raw_connect(&r, fx->addr, 0));
    assert_true(raw_request(&r, 1, 0, 0, 0, "t.serial", "hold", 4));
    assert_true(latch_wait(1, TEST_WAIT_MS)); /* the actor is busy */
    assert_true(raw_request(&r, 2, 0, 0, 50, "t.serial", "late", 4));
    assert_true(raw_read(&r, &f, false)); /* before: nothing until the gate opened */
    assert_int_equal(ARPC_FRAME_ERROR, f.f.f_kind);
    assert_int_equal(2, f.f.f_xid);
    assert_int_equal(ARPC_EEXPIRED, f.f.f_code);
    assert_int_equal(1, atomic_load(&runs)); /* "hold" still runs */
    sem_post(&gate);
    assert_true(raw_read(&r, &f, false));
    assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
    assert_int_equal(1, f.f.f_xid);
    /* The actor came to "late" after "hold" and let it go unrun; "after" runs. */
    assert_true(raw_request(&r, 3, 0, 0, 0, "t.serial", "after", 5));
    assert_true(raw_read(&r, &f, false));
    assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
    assert_int_equal(3, f.f.f_xid);
    assert_int_equal(2, atomic_load(&runs));
    raw_close(&r);
}

/* Calls the loop refuses while they wait in their actor's mailbox keep counting against their
 * connection's limits until the actor lets them go: their payloads are still in the mailbox. A
 * connection limited to LIMIT calls in flight, whose first call holds the pool's one worker,
 * sends CALLS more with a short budget: the LIMIT - 1 that fit are refused ARPC_EEXPIRED at
 * their start-by time, and no other is read (so none is refused) while the worker is held.
 * (With each refusal the connection used to read one call more: a review's program had 709
 * payloads in a mailbox behind a limit of 16.) Then the worker is let go and every call is
 * answered once. */
static void test_refused_in_queue_still_counts(void **state)
{
    (void)state;
    enum { LIMIT = 4, CALLS = 40, BUDGET_MS = 100 };
    arpc_server *s;
    arpc_server_options so = {.workers = 1, .max_calls_per_conn = LIMIT};
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.serial", h_serial, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    struct raw_client r;
    struct raw_frame f;
    assert_true(raw_connect(&r, addr, 0));
    assert_true(raw_request(&r, 1, 0, 0, 0, "t.serial", "hold", 4));
    assert_true(latch_wait(1, TEST_WAIT_MS)); /* the worker is held */
    for (uint64_t xid = 2; xid <= CALLS + 1; xid++)
        assert_true(raw_request(&r, xid, 0, 0, BUDGET_MS, "t.serial", "x", 1));
    bool answered[CALLS + 2] = {0};
    for (int i = 0; i < LIMIT - 1; i++) {
        assert_true(raw_read(&r, &f, false));
        assert_int_equal(ARPC_FRAME_ERROR, f.f.f_kind);
        assert_int_equal(ARPC_EEXPIRED, f.f.f_code);
        assert_true(f.f.f_xid >= 2 && f.f.f_xid <= LIMIT);
        answered[f.f.f_xid] = true;
    }
    /* Nothing more while the worker is held: no call was read after those. What is tested is
     * that nothing happens, so this waits three budgets, in which a call read after the
     * refusals would have been refused too. */
    assert_int_equal(r.rc_consumed, r.rc_len);
    struct pollfd pfd = {.fd = r.rc_fd, .events = POLLIN};
    assert_int_equal(0, poll(&pfd, 1, 3 * BUDGET_MS));
    assert_int_equal(1, atomic_load(&runs)); /* "hold" only */
    sem_post(&gate);
    for (int i = 0; i < CALLS + 1 - (LIMIT - 1); i++) { /* "hold", then every call read since */
        assert_true(raw_read(&r, &f, false));
        assert_true(f.f.f_xid >= 1 && f.f.f_xid <= CALLS + 1);
        assert_false(answered[f.f.f_xid]);
        answered[f.f.f_xid] = true;
        /* A reply, or on a loaded machine its own budget's answer: refused before it started
         * (ARPC_EEXPIRED), or, started late, answered at its deadline before its reply reached
         * the loop (ARPC_ETIMEDOUT, docs/SEMANTICS.md) */
        assert_true(f.f.f_kind == ARPC_FRAME_REPLY ||
                    (f.f.f_kind == ARPC_FRAME_ERROR && (f.f.f_code == ARPC_EEXPIRED || f.f.f_code == ARPC_ETIMEDOUT)));
    }
    raw_close(&r);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

static void test_budget_reaches_handler(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(ARPC_OK, arpc_call(fx->c, "t.serial", "x", 1, NULL, NULL, 5000));
    long long b = atomic_load(&seen_budget);
    assert_true(b > 0 && b <= 5000);
    assert_int_equal(ARPC_OK, arpc_call(fx->c, "t.serial", "x", 1, NULL, NULL, ARPC_FOREVER));
    assert_int_equal(ARPC_FOREVER, atomic_load(&seen_budget));
}

static void test_cancel_before_start_does_not_run(void **state)
{
    struct fixture *fx = *state;
    arpc_future *held = arpc_call_async(fx->c, "t.serial", "hold", 4, 20000);
    assert_true(latch_wait(1, TEST_WAIT_MS));
    arpc_future *f = arpc_call_async(fx->c, "t.serial", "doomed", 6, 20000);
    sync_connection(fx); /* the server has it queued */
    assert_true(arpc_future_cancel(f));
    assert_int_equal(ARPC_ECANCELLED, arpc_future_wait_for(f, 1000));
    arpc_future_release(f);
    sync_connection(fx); /* and the CANCEL reached it */
    sem_post(&gate);
    assert_int_equal(ARPC_OK, arpc_future_wait_for(held, 10000));
    arpc_future_release(held);
    assert_int_equal(ARPC_OK, arpc_call(fx->c, "t.serial", "after", 5, NULL, NULL, 10000));
    assert_int_equal(2, atomic_load(&runs));
}

static void test_cancel_reaches_running_handler(void **state)
{
    struct fixture *fx = *state;
    arpc_future *f = arpc_call_async(fx->c, "t.serial", "wait-cancel", 11, 20000);
    assert_true(latch_wait(1, TEST_WAIT_MS)); /* running */
    assert_true(arpc_future_cancel(f));
    arpc_future_release(f);
    /* The handler's callback fires when the CANCEL arrives, and the handler sees it. */
    assert_int_equal(ARPC_OK, arpc_call(fx->c, "t.serial", "after", 5, NULL, NULL, 10000));
    assert_int_equal(1, atomic_load(&cancel_callbacks));
    assert_int_equal(1, atomic_load(&seen_cancelled));
}

/* ---- a server with one method, a cut proxy before it, a client through the proxy ---- */

struct proxied {
    arpc_server *s;
    struct cut_proxy *proxy;
    arpc_client *c;
    char saddr[256];
};

static void proxied_start(struct proxied *px, unsigned workers, const char *method, arpc_handler_fn fn)
{
    arpc_server_options so = {.workers = workers};
    assert_int_equal(ARPC_OK, arpc_server_create(&px->s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(px->s, method, fn, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(px->s, "tcp://127.0.0.1:0", px->saddr, sizeof(px->saddr)));
    char paddr[256];
    px->proxy = cut_proxy_start(px->saddr, paddr, sizeof(paddr));
    assert_non_null(px->proxy);
    arpc_client_options co = {.reconnect_max_ms = 50};
    assert_int_equal(ARPC_OK, arpc_client_connect(&px->c, paddr, &co));
}

static void proxied_stop(struct proxied *px)
{
    arpc_client_close(px->c);
    cut_proxy_stop(px->proxy);
    arpc_server_destroy(px->s);
}

/* ---- semantics over a cut ---- */

static atomic_int cut_runs[3];
static sem_t cut_gate;

static void h_cut(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len;
    const int *which = arpc_request_data(req, &len);
    atomic_fetch_add(&cut_runs[*which], 1);
    latch_add();
    sem_wait_secs(&cut_gate, 30);
    arpc_reply(req, which, len);
}

static void test_semantics_over_a_cut(void **state)
{
    (void)state;
    latch_reset();
    sem_init(&cut_gate, 0, 0);
    for (int i = 0; i < 3; i++)
        atomic_store(&cut_runs[i], 0);
    struct proxied px;
    proxied_start(&px, 4, "t.cut", h_cut);
    arpc_client *c = px.c;
    static const enum arpc_call_semantics sem[3] = {ARPC_AT_MOST_ONCE, ARPC_AT_LEAST_ONCE, ARPC_NO_RETRY};
    arpc_future *fs[3];
    for (int i = 0; i < 3; i++) {
        arpc_call_options o = {.deadline_ms = 30000, .semantics = sem[i]};
        fs[i] = arpc_call_async_opts(c, "t.cut", &i, sizeof(i), &o);
    }
    assert_true(latch_wait(3, TEST_WAIT_MS)); /* all three run, and hold */
    cut_proxy_cut(px.proxy);
    /* The no-retry call's outcome is unknown at once; the others are sent again. */
    assert_int_equal(ARPC_ECONNLOST, arpc_future_wait_for(fs[2], 10000));
    const char *why = arpc_future_data(fs[2], NULL);
    assert_non_null(why);
    assert_non_null(strstr(why, "ARPC_NO_RETRY"));
    assert_non_null(strstr(why, "(connection to "));
    /* At-least-once runs a second time (not numbered); at-most-once attaches. */
    assert_true(latch_wait(4, TEST_WAIT_MS));
    for (int i = 0; i < 8; i++)
        sem_post(&cut_gate);
    assert_int_equal(ARPC_OK, arpc_future_wait_for(fs[0], 10000));
    assert_int_equal(ARPC_OK, arpc_future_wait_for(fs[1], 10000));
    assert_int_equal(1, atomic_load(&cut_runs[0]));
    assert_int_equal(2, atomic_load(&cut_runs[1]));
    assert_int_equal(1, atomic_load(&cut_runs[2]));
    for (int i = 0; i < 3; i++)
        arpc_future_release(fs[i]);
    proxied_stop(&px);
    sem_destroy(&cut_gate);
}

/* An at-least-once call that ran, whose reply was lost with its connection, is sent again;
 * the server now there (a new version, without the method) refuses the copy without running
 * it (ARPC_ENOMETHOD, "did not run"). That holds for the copy only: the first send ran, so the
 * caller must hear "may have run". */
static atomic_int resend_runs;

static void h_count(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&resend_runs, 1);
    arpc_reply(req, "ran", 3);
}

static void test_refused_resend_after_a_run_may_have_run(void **state)
{
    (void)state;
    atomic_store(&resend_runs, 0);
    struct proxied px;
    proxied_start(&px, 0, "t.count", h_count);
    cut_proxy_swallow_replies(px.proxy, true); /* its reply will not arrive */
    arpc_call_options o = {.deadline_ms = 30000, .semantics = ARPC_AT_LEAST_ONCE};
    arpc_future *f = arpc_call_async_opts(px.c, "t.count", "x", 1, &o);
    /* It ran and was answered (into the proxy's drain). */
    assert_true(server_stat_reaches(px.s, offsetof(arpc_server_stats, calls.finished), 1, TEST_WAIT_MS));
    cut_proxy_hold_new(px.proxy, true); /* the client stays away while the server changes */
    cut_proxy_cut(px.proxy);
    arpc_server_destroy(px.s);
    assert_int_equal(ARPC_OK, arpc_server_create(&px.s, NULL)); /* the next version: no t.count */
    assert_int_equal(ARPC_OK, arpc_server_listen(px.s, px.saddr, NULL, 0));
    cut_proxy_swallow_replies(px.proxy, false);
    cut_proxy_hold_new(px.proxy, false);
    int st = arpc_future_wait_for(f, TEST_WAIT_MS);
    assert_int_equal(1, atomic_load(&resend_runs));
    assert_int_equal(ARPC_ECONNLOST, st); /* it ran once: not "did not run" */
    const char *why = arpc_future_data(f, NULL);
    assert_non_null(strstr(why, "ARPC_ENOMETHOD"));
    assert_non_null(strstr(why, "may have run"));
    arpc_future_release(f);
    proxied_stop(&px);
}

/* ---- calls routed by key ---- */

enum { KEYS = 8, PER_KEY = 200 };
static arpc_actor_group *keyed_group;
static atomic_int keyed_actor[KEYS];  /* the member that ran the key's calls, +1 */
static atomic_int keyed_next[KEYS];   /* the next sequence number expected for the key */
static atomic_int keyed_bad;

static uint64_t key_of(const void *data, size_t len, void *ctx)
{
    (void)ctx;
    (void)len;
    return ((const uint32_t *)data)[0];
}

static void h_keyed(arpc_request *req, void *ctx)
{
    (void)ctx;
    const uint32_t *kv = arpc_request_data(req, NULL); /* key, sequence */
    int me = -1;
    for (unsigned i = 0; i < arpc_actor_group_size(keyed_group); i++)
        if (arpc_actor_on_thread(arpc_actor_group_member(keyed_group, i)))
            me = (int)i;
    int expected = 0;
    if (!atomic_compare_exchange_strong(&keyed_actor[kv[0]], &expected, me + 1) && expected != me + 1)
        atomic_fetch_add(&keyed_bad, 1); /* a key on two actors */
    if (atomic_fetch_add(&keyed_next[kv[0]], 1) != (int)kv[1])
        atomic_fetch_add(&keyed_bad, 1); /* out of order */
    arpc_reply(req, "", 0);
}

static void test_calls_routed_by_key(void **state)
{
    (void)state;
    for (int k = 0; k < KEYS; k++) {
        atomic_store(&keyed_actor[k], 0);
        atomic_store(&keyed_next[k], 0);
    }
    atomic_store(&keyed_bad, 0);
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL));
    assert_int_equal(ARPC_OK, arpc_actor_group_create(&keyed_group, 4, NULL));
    arpc_method_options mo = {.group = keyed_group, .key = key_of};
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.keyed", h_keyed, NULL, &mo));
    arpc_method_options bad = {.inline_on_loop = true, .key = key_of};
    assert_int_equal(ARPC_EINVAL, arpc_server_register(s, "t.bad", h_keyed, NULL, &bad));
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, NULL));
    static arpc_future *fs[KEYS * PER_KEY];
    for (int i = 0; i < KEYS * PER_KEY; i++) {
        uint32_t kv[2] = {(uint32_t)(i % KEYS), (uint32_t)(i / KEYS)};
        fs[i] = arpc_call_async(c, "t.keyed", kv, sizeof(kv), 30000);
    }
    for (int i = 0; i < KEYS * PER_KEY; i++) {
        assert_int_equal(ARPC_OK, arpc_future_wait_for(fs[i], 30000));
        arpc_future_release(fs[i]);
    }
    assert_int_equal(0, atomic_load(&keyed_bad));
    int used[4] = {0};
    for (int k = 0; k < KEYS; k++)
        used[atomic_load(&keyed_actor[k]) - 1] = 1;
    assert_true(used[0] + used[1] + used[2] + used[3] >= 2); /* keys spread over the group */
    arpc_client_close(c);
    arpc_server_destroy(s);
    arpc_actor_group_destroy(keyed_group);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_budget_reaches_handler, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expired_in_queue_does_not_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expired_in_queue_is_answered_at_its_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_in_queue_still_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_before_start_does_not_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_reaches_running_handler, setup, teardown),
        cmocka_unit_test(test_semantics_over_a_cut),
        cmocka_unit_test(test_refused_resend_after_a_run_may_have_run),
        cmocka_unit_test(test_calls_routed_by_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
