/*
 * A numbered call that ran but whose reply could not be made (no memory for it) ends with the
 * server's ARPC_EABANDONED ("may have run") for its caller and for every retry, and never runs
 * again: before, its reply-cache entry stayed RUNNING for good, so its caller and its retries
 * waited for their deadlines (or for ever), and the entry was never discarded. An unnumbered
 * call in the same plight is answered ARPC_EABANDONED at once too.
 *
 * The failure is made by an allocator that fails once on the thread that asks for it, just
 * before arpc_reply: on the loop (an inline handler) for a reply made in time, on the test
 * thread for a late reply after the server answered the call at its deadline. Frames go by
 * hand (support/raw_client.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "arpc/arpc.h"
#include "base/alloc.h"
#include "core/frame.h"
#include "support/raw_client.h"
#include "support/test_util.h"

static _Thread_local bool fail_next; /* this thread's next allocation fails */

static void *failing_malloc(size_t size, void *ctx)
{
    (void)ctx;
    if (fail_next) {
        fail_next = false;
        return NULL;
    }
    return malloc(size);
}

static void *failing_realloc(void *ptr, size_t size, void *ctx)
{
    (void)ctx;
    if (fail_next) {
        fail_next = false;
        return NULL;
    }
    return realloc(ptr, size);
}

static void plain_free(void *ptr, void *ctx)
{
    (void)ctx;
    free(ptr);
}

static const arpc_allocator failing_allocator = {failing_malloc, failing_realloc, plain_free, NULL};

static atomic_int runs;
static atomic_int reply_rc;
static arpc_request *_Atomic kept;

/* Runs on the loop; its reply finds no memory. */
static void h_lost(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&runs, 1);
    fail_next = true;
    atomic_store(&reply_rc, arpc_reply(req, "never seen", 10));
    fail_next = false;
}

/* Keeps the request; the test replies late. */
static void h_keep(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&runs, 1);
    atomic_store(&kept, req);
    latch_add();
}

static void h_ok(arpc_request *req, void *ctx)
{
    (void)ctx;
    arpc_reply(req, "ok", 2);
}

static arpc_server *make_server(char *addr, size_t addrlen)
{
    arpc_alloc_replace(&failing_allocator);
    atomic_store(&runs, 0);
    atomic_store(&reply_rc, ARPC_OK);
    atomic_store(&kept, NULL);
    latch_reset();
    arpc_server_options o = {.workers = 1};
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &o));
    arpc_method_options inline_opts = {.inline_on_loop = true};
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.lost", h_lost, NULL, &inline_opts));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.keep", h_keep, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.ok", h_ok, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, addrlen));
    return s;
}

static int teardown(void **state)
{
    (void)state;
    arpc_alloc_replace(NULL);
    return 0;
}


static void expect_ok(struct raw_client *r, uint64_t xid)
{
    struct raw_frame f;
    assert_true(raw_read(r, &f, false));
    assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
    assert_int_equal(xid, f.f.f_xid);
}

static void test_reply_lost_in_time(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = make_server(addr, sizeof(addr));
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0x10ad));
    assert_true(raw_request(&r, 1, 1, 0, 0, "t.lost", "", 0));
    assert_true(raw_next_is_error(&r, 1, ARPC_EABANDONED)); /* the caller itself, not at a deadline */
    assert_int_equal(ARPC_ENOMEM, atomic_load(&reply_rc));
    assert_true(raw_request(&r, 2, 1, 0, 0, "t.lost", "", 0)); /* a retry: answered, not run */
    assert_true(raw_next_is_error(&r, 2, ARPC_EABANDONED));
    assert_int_equal(1, atomic_load(&runs));
    /* The ack discards it like any other result (then the seq is stale). */
    assert_true(raw_request(&r, 3, 2, 1, 0, "t.ok", "", 0));
    expect_ok(&r, 3);
    assert_true(raw_request(&r, 4, 1, 1, 0, "t.lost", "", 0));
    assert_true(raw_next_is_error(&r, 4, ARPC_EREJECTED));
    assert_int_equal(1, atomic_load(&runs));
    raw_close(&r);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* The late reply of a call the server answered at its deadline finds no memory: the retry
 * that waited for it gets ARPC_EABANDONED, and so does the next one. */
static void test_late_reply_lost(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = make_server(addr, sizeof(addr));
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0x10ad));
    uint64_t xid = 1;
    assert_int_equal(ARPC_ETIMEDOUT, raw_call_taken_in_time(&r, &xid, 1, 0, 50, "t.keep", "", 0));
    assert_true(latch_wait(1, RAW_WAIT_MS));
    assert_true(xid < 100);
    assert_true(raw_request(&r, 200, 1, 0, 0, "t.keep", "", 0)); /* waits for the first run */
    /* Frames of a connection are taken in order: once this unnumbered call is answered, the
     * retry is attached to the running call (not yet answered from the cache). */
    assert_true(raw_request(&r, 201, 0, 0, 0, "t.ok", "", 0));
    expect_ok(&r, 201);
    arpc_request *req = atomic_load(&kept);
    fail_next = true;
    int rc = arpc_reply(req, "never seen", 10);
    fail_next = false;
    assert_int_equal(ARPC_ENOMEM, rc);
    assert_true(raw_next_is_error(&r, 200, ARPC_EABANDONED));
    assert_true(raw_request(&r, 202, 1, 0, 0, "t.keep", "", 0));
    assert_true(raw_next_is_error(&r, 202, ARPC_EABANDONED));
    assert_int_equal(1, atomic_load(&runs));
    raw_close(&r);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* An unnumbered call (no seq: not at-most-once) whose reply finds no memory: its caller is
 * answered ARPC_EABANDONED at once, and counted so. Before, nothing was sent: it waited for
 * its deadline (here none: for ever). */
static void test_unnumbered_reply_lost(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = make_server(addr, sizeof(addr));
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0x10ad));
    assert_true(raw_request(&r, 1, 0, 0, 0, "t.lost", "", 0));
    assert_true(raw_next_is_error(&r, 1, ARPC_EABANDONED));
    assert_int_equal(ARPC_ENOMEM, atomic_load(&reply_rc));
    assert_true(raw_request(&r, 2, 0, 0, 0, "t.ok", "", 0)); /* the connection goes on */
    expect_ok(&r, 2);
    arpc_method_stats ms;
    assert_true(server_stats_caught_up(s, "t.lost", ARPC_EABANDONED, 1, &ms));
    assert_int_equal(1, atomic_load(&runs));
    raw_close(&r);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_reply_lost_in_time, teardown),
        cmocka_unit_test_teardown(test_late_reply_lost, teardown),
        cmocka_unit_test_teardown(test_unnumbered_reply_lost, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
