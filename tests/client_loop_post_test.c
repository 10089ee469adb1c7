/*
 * Calls, cancels and one-way messages started on the client's own loop thread (in a reply's
 * callback) join the client's queue, which one lane job runs (core/client_api.c:
 * client_post). Here:
 *  - they reach the server in the order they were started, calls and one-way messages mixed,
 *    also when a callback started in that queue starts more;
 *  - a call cancelled in the callback that started it ends ARPC_ECANCELLED, one whose future
 *    is released at once still ends, and nothing leaks;
 *  - a close from another thread, and a stop of the client's loop, while callbacks keep
 *    starting calls: every call started ends (its callback runs), nothing leaks;
 *  - a callback that queues thousands of one-way messages, then a call from another thread
 *    made once the callback is done: the server reads them all, the call last.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "arpc/arpc.h"
#include "support/test_util.h"

/* ---- the server: records the 4-byte index each request carries, in arrival order ---- */

enum { MAX_SEEN = 4096 };
static pthread_mutex_t seen_mtx = PTHREAD_MUTEX_INITIALIZER;
static uint32_t seen[MAX_SEEN];
static unsigned nseen;

static void h_rec(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len;
    const void *data = arpc_request_data(req, &len);
    uint32_t idx = 0;
    if (len == sizeof(idx))
        memcpy(&idx, data, sizeof(idx));
    pthread_mutex_lock(&seen_mtx);
    if (nseen < MAX_SEEN)
        seen[nseen++] = idx;
    pthread_mutex_unlock(&seen_mtx);
    arpc_reply(req, NULL, 0); /* dropped for a one-way message */
}

static void h_hold(arpc_request *req, void *ctx)
{
    (void)ctx;
    (void)req; /* never answered: the client's close or cancel ends its call */
}

struct fixture {
    arpc_server *s;
    arpc_client *c;
    arpc_loop *loop; /* the client's, when the test gives it one */
    char addr[256];
};

static int setup(void **state)
{
    test_alloc_install();
    atomic_store(&bad_line, 0);
    nseen = 0;
    latch_reset();
    static struct fixture fx;
    memset(&fx, 0, sizeof(fx));
    arpc_method_options in = {.inline_on_loop = true};
    if (arpc_server_create(&fx.s, NULL) != ARPC_OK || arpc_server_register(fx.s, "t.rec", h_rec, NULL, &in) != ARPC_OK ||
        arpc_server_register(fx.s, "t.hold", h_hold, NULL, &in) != ARPC_OK ||
        arpc_server_listen(fx.s, "tcp://127.0.0.1:0", fx.addr, sizeof(fx.addr)) != ARPC_OK ||
        arpc_client_connect(&fx.c, fx.addr, NULL) != ARPC_OK)
        return -1;
    *state = &fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(0, atomic_load(&bad_line)); /* a CHECK on the loop thread */
    if (fx->c != NULL)
        arpc_client_close(fx->c);
    if (fx->loop != NULL)
        arpc_loop_destroy(fx->loop);
    arpc_server_destroy(fx->s);
    return test_alloc_check_no_leak(state);
}

/* ---- order ---- */

/* A last call carrying index last, made after everything before it: when it is answered the
 * server has read them all, and must have seen indexes 0 to last, each once, in order. */
static void check_all_read_in_order(arpc_client *c, uint32_t last)
{
    assert_int_equal(ARPC_OK, arpc_call(c, "t.rec", &last, sizeof(last), NULL, NULL, ARPC_FOREVER));
    pthread_mutex_lock(&seen_mtx);
    unsigned n = nseen, out_of_order = 0;
    for (unsigned i = 0; i < n; i++)
        out_of_order += seen[i] != i;
    pthread_mutex_unlock(&seen_mtx); /* (before asserting: the server's handler takes it) */
    assert_int_equal(last + 1, n);
    assert_int_equal(0, out_of_order);
}

enum { ROUNDS = 3, PER_ROUND = 200 };
static arpc_client *order_client;
static uint32_t next_idx;

static void order_done(arpc_future *f, void *arg);

/* A call carrying the next index; its callback, for the last of a round, starts the next. */
static void start_rec_call(bool last_of_round)
{
    uint32_t idx = next_idx++;
    arpc_future *f = arpc_call_async(order_client, "t.rec", &idx, sizeof(idx), ARPC_FOREVER);
    CHECK(f != NULL);
    CHECK(arpc_future_then(f, order_done, (void *)(uintptr_t)last_of_round) == ARPC_OK);
    arpc_future_release(f);
}

/* On the client's loop thread: a round of calls and one-way messages, alternating. */
static void order_done(arpc_future *f, void *arg)
{
    CHECK(arpc_future_poll(f) == ARPC_OK);
    latch_add();
    if (arg == NULL || next_idx >= 1 + ROUNDS * PER_ROUND)
        return;
    for (unsigned i = 0; i + 1 < PER_ROUND; i++) {
        if (i % 2) {
            uint32_t idx = next_idx++;
            CHECK(arpc_notify(order_client, "t.rec", &idx, sizeof(idx)) == ARPC_OK);
        } else
            start_rec_call(false);
    }
    start_rec_call(true);
}

static void test_loop_thread_posts_keep_order(void **state)
{
    struct fixture *fx = *state;
    order_client = fx->c;
    next_idx = 0;
    start_rec_call(true); /* from this thread: its callback starts the first round */
    /* Calls: the first, then per round PER_ROUND / 2 (the even i) and the last. */
    unsigned calls = 1 + ROUNDS * (PER_ROUND / 2 + 1);
    assert_true(latch_wait(calls, TEST_WAIT_MS));
    check_all_read_in_order(fx->c, next_idx);
}

/* ---- cancel and release in the callback ---- */

static atomic_int cancel_status = -1, released_status = -1;

static void note_status(arpc_future *f, void *arg)
{
    atomic_store((atomic_int *)arg, arpc_future_poll(f));
    latch_add();
}

static void cancel_in_callback(arpc_future *f, void *arg)
{
    (void)f;
    arpc_client *c = arg;
    arpc_future *held = arpc_call_async(c, "t.hold", NULL, 0, ARPC_FOREVER);
    CHECK(held != NULL);
    CHECK(arpc_future_then(held, note_status, &cancel_status) == ARPC_OK);
    CHECK(arpc_future_cancel(held)); /* before the call has reached the loop's queue run */
    arpc_future_release(held);
    arpc_future *gone = arpc_call_async(c, "t.rec", NULL, 0, ARPC_FOREVER);
    CHECK(gone != NULL);
    CHECK(arpc_future_then(gone, note_status, &released_status) == ARPC_OK);
    arpc_future_release(gone); /* the call goes on without its caller */
    latch_add();
}

static void test_cancel_and_release_in_callback(void **state)
{
    struct fixture *fx = *state;
    arpc_future *f = arpc_call_async(fx->c, "t.rec", NULL, 0, ARPC_FOREVER);
    assert_non_null(f);
    assert_int_equal(ARPC_OK, arpc_future_then(f, cancel_in_callback, fx->c));
    assert_true(latch_wait(3, TEST_WAIT_MS));
    assert_int_equal(ARPC_ECANCELLED, atomic_load(&cancel_status));
    assert_int_equal(ARPC_OK, atomic_load(&released_status));
    arpc_future_release(f);
}

/* ---- close and stop while callbacks start calls ---- */

static atomic_uint chain_started, chain_ended;
/* Set under chain_mtx, which callbacks hold while they start calls: once the test has set it,
 * no callback starts another (none may once the close has begun). */
static pthread_mutex_t chain_mtx = PTHREAD_MUTEX_INITIALIZER;
static bool chain_stop;
/* A call refused at once (the loop stopped) runs its callback inside arpc_future_then, which
 * holds chain_mtx already. */
static _Thread_local int chain_depth;

static void chain_done(arpc_future *f, void *arg);

static void chain_start(arpc_client *c)
{
    arpc_future *f = arpc_call_async(c, "t.rec", NULL, 0, ARPC_FOREVER);
    CHECK(f != NULL);
    atomic_fetch_add(&chain_started, 1);
    CHECK(arpc_future_then(f, chain_done, c) == ARPC_OK);
    arpc_future_release(f);
}

/* Each answer starts two calls (a few hundred in flight), until told to stop; a call that
 * fails (the close, the stop) starts none. */
static void chain_done(arpc_future *f, void *arg)
{
    if (chain_depth++ == 0)
        pthread_mutex_lock(&chain_mtx);
    if (arpc_future_poll(f) == ARPC_OK && !chain_stop) {
        chain_start(arg);
        if (atomic_load(&chain_started) < 300)
            chain_start(arg);
    }
    if (--chain_depth == 0)
        pthread_mutex_unlock(&chain_mtx);
    atomic_fetch_add(&chain_ended, 1);
    latch_add();
}

static void chain_stop_now(void)
{
    pthread_mutex_lock(&chain_mtx);
    chain_stop = true;
    pthread_mutex_unlock(&chain_mtx);
}

static void chain_run(arpc_client *c)
{
    atomic_store(&chain_started, 0);
    atomic_store(&chain_ended, 0);
    chain_stop = false;
    for (int i = 0; i < 8; i++)
        chain_start(c);
    assert_true(latch_wait(2000, TEST_WAIT_MS)); /* well under way */
}

static void test_close_while_callbacks_start_calls(void **state)
{
    struct fixture *fx = *state;
    chain_run(fx->c);
    chain_stop_now(); /* calls in flight and queued: the close ends them */
    arpc_client_close(fx->c);
    fx->c = NULL;
    assert_int_equal(atomic_load(&chain_started), atomic_load(&chain_ended));
}

static void test_loop_stop_while_callbacks_start_calls(void **state)
{
    struct fixture *fx = *state;
    arpc_client_close(fx->c);
    fx->c = NULL;
    assert_int_equal(ARPC_OK, arpc_loop_create(&fx->loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_start(fx->loop));
    arpc_client_options o = {.loop = fx->loop};
    assert_int_equal(ARPC_OK, arpc_client_connect(&fx->c, fx->addr, &o));
    chain_run(fx->c);
    arpc_loop_stop(fx->loop); /* the loop's final drain ends what was accepted; later ones are refused */
    assert_true(WAIT_UNTIL(atomic_load(&chain_started) == atomic_load(&chain_ended)));
    chain_stop_now();
    arpc_client_close(fx->c);
    fx->c = NULL;
    assert_int_equal(atomic_load(&chain_started), atomic_load(&chain_ended));
}

/* ---- another thread's call after a callback's flood ---- */

enum { FLOOD = 3000 }; /* one-way messages queued by one callback: many runs' worth of a lane */
static arpc_client *flood_client;

static void flood_in_callback(arpc_future *f, void *arg)
{
    (void)arg;
    CHECK(arpc_future_poll(f) == ARPC_OK);
    for (uint32_t i = 0; i < FLOOD; i++) {
        uint32_t idx = 1 + i; /* the first call carried 0 */
        CHECK(arpc_notify(flood_client, "t.rec", &idx, sizeof(idx)) == ARPC_OK);
    }
    latch_add(); /* "sent": the test thread's call comes after, and must not overtake them */
}

static void test_flood_then_call_from_another_thread_in_order(void **state)
{
    struct fixture *fx = *state;
    flood_client = fx->c;
    uint32_t first = 0;
    arpc_future *f = arpc_call_async(fx->c, "t.rec", &first, sizeof(first), ARPC_FOREVER);
    assert_non_null(f);
    assert_int_equal(ARPC_OK, arpc_future_then(f, flood_in_callback, NULL));
    arpc_future_release(f);
    assert_true(latch_wait(1, TEST_WAIT_MS));
    check_all_read_in_order(fx->c, FLOOD + 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_loop_thread_posts_keep_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_and_release_in_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_while_callbacks_start_calls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_loop_stop_while_callbacks_start_calls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flood_then_call_from_another_thread_in_order, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
