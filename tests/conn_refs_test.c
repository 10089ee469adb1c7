/*
 * A server connection's references when its loop takes them ahead (core/server_internal.h,
 * sconn_retain_loop): each request holds one from the loop's stash, given back to the stash
 * when the request is let go of on the loop and dropped for real on any other thread. Every
 * path has to leave the count exact: the connection (and so the server) is freed once its
 * last request is let go, never before. Counted by test_allocator (nothing live after the
 * destroy) and, for a free too early, by ASan.
 *
 * More calls than the stash holds (SCONN_REFS_AHEAD, 64) are out at once, so that the loop
 * takes references more than once; some are let go of on the loop (their reply delivered
 * after their handler returned), some on the worker (their reply delivered first), some after
 * the connection closed (its stash given back by then), some after a stop.
 *
 * The server's count of calls in flight is taken ahead by the loop the same way
 * (SERVER_INFLIGHT_AHEAD): the stats leave the stash out, and a stop gives it back first.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <string.h>

#include "arpc/arpc.h"
#include "core/frame.h"
#include "support/raw_client.h"
#include "support/test_util.h"

#define CALLS 150 /* more than two stashes' worth */

static arpc_request *_Atomic kept[CALLS + 1]; /* by xid */

/* Keeps the request (its payload is its xid's index) and returns without replying. */
static void h_keep(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len;
    const uint8_t *data = arpc_request_data(req, &len);
    unsigned i = len == 1 ? data[0] : len == 2 ? (unsigned)data[0] | (unsigned)data[1] << 8 : 0;
    if (i >= 1 && i <= CALLS) /* else the test waits for its latch in vain, and fails */
        atomic_store(&kept[i], req);
    latch_add();
}

/* Replies, then returns only once the test let it: whether the loop delivered the reply
 * before (the request is let go of on this worker) or after (on the loop) is the race. */
static sem_t go_on;

static void h_reply_then_wait(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len;
    const void *data = arpc_request_data(req, &len);
    (void)arpc_reply(req, data, len); /* the test reads it */
    (void)sem_wait_secs(&go_on, TEST_WAIT_S);
}

static arpc_server *make_server(char *addr, size_t addrlen)
{
    for (unsigned i = 0; i <= CALLS; i++)
        atomic_store(&kept[i], NULL);
    latch_reset();
    test_alloc_install();
    arpc_server_options o = {.workers = 1};
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &o));
    /* Small replies expected: the connection's bytes bound lets all the calls in at once. */
    arpc_method_options mo = {.reply_bytes_hint = 16};
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.keep", h_keep, NULL, &mo));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, &mo));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.reply_wait", h_reply_then_wait, NULL, &mo));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, addrlen));
    return s;
}

static void send_calls(struct raw_client *r, const char *method, uint64_t first_xid, unsigned n)
{
    for (unsigned i = 1; i <= n; i++) {
        uint8_t idx[2] = {(uint8_t)i, (uint8_t)(i >> 8)};
        assert_true(raw_request(r, first_xid + i - 1, 0, 0, 0, method, idx, i < 256 ? 1 : 2));
    }
}

/* n replies, in any order, each for one of the xids sent. */
static void read_replies(struct raw_client *r, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        struct raw_frame f;
        assert_true(raw_read(r, &f, false));
        assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
    }
}

/* Echoes answered (let go of on the loop: the stash fills), then calls kept by their handler
 * while the connection closes: the close gives the stash back, and the replies made after it
 * let go of the connection for real, the last one freeing it. */
static void test_close_with_calls_out(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = make_server(addr, sizeof(addr));
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0));
    send_calls(&r, "t.echo", 1000, CALLS);
    read_replies(&r, CALLS);
    send_calls(&r, "t.keep", 1, CALLS);
    assert_true(latch_wait(CALLS, TEST_WAIT_MS));
    /* Half of them answered while the connection is open (let go of on the loop) */
    for (unsigned i = 1; i <= CALLS / 2; i++)
        assert_int_equal(ARPC_OK, arpc_reply(atomic_load(&kept[i]), "r", 1));
    read_replies(&r, CALLS / 2);
    raw_close(&r);
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, connections_closed), 1, TEST_WAIT_MS));
    /* ... the rest after its close (queued, then dropped with the closed connection). */
    for (unsigned i = CALLS / 2 + 1; i <= CALLS; i++)
        assert_int_equal(ARPC_OK, arpc_reply(atomic_load(&kept[i]), "r", 1));
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, handlers_in_flight), 0, TEST_WAIT_MS));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s)); /* no_leak: the connection was freed */
}

/* Replies delivered before their handler returned are let go of on the worker, the others on
 * the loop: both kinds interleave with the loop taking and getting back references. */
static void test_let_go_on_either_thread(void **state)
{
    (void)state;
    char addr[256];
    assert_int_equal(0, sem_init(&go_on, 0, 0));
    arpc_server *s = make_server(addr, sizeof(addr));
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0));
    for (int round = 0; round < 3; round++) {
        send_calls(&r, "t.reply_wait", 1 + (uint64_t)round * CALLS, CALLS);
        for (unsigned i = 0; i < CALLS; i++) {
            read_replies(&r, 1);
            assert_int_equal(0, sem_post(&go_on));
        }
    }
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, handlers_in_flight), 0, TEST_WAIT_MS));
    raw_close(&r);
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, connections_closed), 1, TEST_WAIT_MS));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    assert_int_equal(0, sem_destroy(&go_on));
}

/* A stop with calls out on the open connection: the stop answers them and closes it (its
 * stash given back), and the late replies, refused, free the handles that are left. */
static void test_stop_with_calls_out(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = make_server(addr, sizeof(addr));
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0));
    send_calls(&r, "t.keep", 1, CALLS);
    assert_true(latch_wait(CALLS, TEST_WAIT_MS));
    assert_int_equal(ARPC_OK, arpc_server_stop(s, 0)); /* no grace: the server answers them */
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    raw_close(&r);
    assert_int_equal(CALLS, atomic_load(&test_alloc_live)); /* the handles, nothing else */
    for (unsigned i = 1; i <= CALLS; i++)
        assert_int_equal(ARPC_ESHUTDOWN, arpc_reply(atomic_load(&kept[i]), "late", 4));
}

/* The server's count of calls in flight comes from a stash the loop takes ahead too
 * (SERVER_INFLIGHT_AHEAD, 64): the stats' gauge leaves the stash out, and a stop's first step
 * gives it back, so a stop with no bound on its grace ends once the last call is answered,
 * whether that call was let go of before the stop (into the stash) or during it. */
static void *reply_rest(void *arg)
{
    (void)arg;
    for (unsigned i = CALLS / 2 + 1; i <= CALLS; i++)
        assert_int_equal(ARPC_OK, arpc_reply(atomic_load(&kept[i]), "r", 1));
    return NULL;
}

static void stop_forever(void *arg) { assert_int_equal(ARPC_OK, arpc_server_stop(arg, ARPC_FOREVER)); }

static void test_stop_waits_for_calls_out(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = make_server(addr, sizeof(addr));
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0));
    send_calls(&r, "t.echo", 1000, CALLS); /* let go of on the loop: the stash fills */
    read_replies(&r, CALLS);
    send_calls(&r, "t.keep", 1, CALLS);
    assert_true(latch_wait(CALLS, TEST_WAIT_MS));
    /* The stash is not counted. (A reply its worker wrote, read above, is counted off by the
     * loop up to a turn later: include/arpc/stats.h.) */
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, handlers_in_flight), CALLS, TEST_WAIT_MS));
    for (unsigned i = 1; i <= CALLS / 2; i++)
        assert_int_equal(ARPC_OK, arpc_reply(atomic_load(&kept[i]), "r", 1));
    read_replies(&r, CALLS / 2);
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, handlers_in_flight), CALLS / 2, TEST_WAIT_MS));
    pthread_t t; /* the rest answered while the stop begins, before or after its first step */
    assert_int_equal(0, pthread_create(&t, NULL, reply_rest, NULL));
    assert_true(thread_ends_within(stop_forever, s, TEST_WAIT_S));
    assert_int_equal(0, pthread_join(t, NULL));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    raw_close(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_no_leak(test_close_with_calls_out),
        cmocka_unit_test_no_leak(test_let_go_on_either_thread),
        cmocka_unit_test_no_leak(test_stop_with_calls_out),
        cmocka_unit_test_no_leak(test_stop_waits_for_calls_out),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
