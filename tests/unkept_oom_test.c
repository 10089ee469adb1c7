/*
 * A server out of memory for a numbered call refuses it keeping nothing, and says so
 * (ARPC_ERROR_UNKEPT, core/frame.h): no memory for the request (request_dispatch), none for
 * the client's place in the reply cache (dedup_admit). A client that sent the call before
 * on a lost connection then knows that earlier send may have run (core/client_conn.c), and
 * the same call sent again runs, once: nothing of the refused send was kept to answer it.
 *
 * The allocation that fails is told apart by its size: the request's block of the pool's
 * class for its payload (the class never used before on a new server), or the reply cache's
 * record of a client. The allocator is installed before anything runs.
 */
#define _GNU_SOURCE /* memmem */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <string.h>

#include "arpc/arpc.h"
#include "core/block_pool.h"
#include "core/frame.h"
#include "core/reply_cache_store.h"
#include "support/raw_client.h"
#include "support/test_util.h"

/* A payload copied into its request (under ARPC_CONN_PIN_MIN) whose block is of class 2:
 * no other block of the test's calls is. */
#define PAYLOAD 900
#define REQUEST_CLASS 2

static arpc_server *serve(char *addr, size_t len)
{
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, len));
    return s;
}

/* The refusal of call xid: the server had no memory, kept nothing, and says so. */
static void expect_unkept_refusal(struct raw_client *r, uint64_t xid)
{
    struct raw_frame f;
    assert_true(raw_read(r, &f, false));
    assert_int_equal(xid, f.f.f_xid);
    assert_int_equal(ARPC_FRAME_ERROR, f.f.f_kind);
    assert_int_equal(ARPC_EREJECTED, f.f.f_code);
    assert_int_equal(ARPC_ERROR_UNKEPT, f.f.f_err_flags);
    if (memmem(f.f.f_msg, f.f.f_msg_len, "out of memory", 13) == NULL)
        fail_msg("the refusal does not say why: %.*s", (int)f.f.f_msg_len, f.f.f_msg);
}

/* The call sent again (under a new xid, as a re-send on a new connection has) runs: its echo. */
static void expect_runs_when_sent_again(struct raw_client *r, uint64_t xid, uint64_t seq, const uint8_t *payload,
                                        size_t len)
{
    struct raw_frame f;
    assert_true(raw_request(r, xid, seq, 0, 0, "t.echo", payload, len));
    assert_true(raw_read(r, &f, false));
    assert_int_equal(xid, f.f.f_xid);
    assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
    assert_int_equal(len, f.body_len);
    assert_memory_equal(payload, f.body, len);
}

static void test_no_memory_for_the_request(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = serve(addr, sizeof(addr));
    static struct raw_client r;
    static uint8_t payload[PAYLOAD];
    memset(payload, 'q', sizeof(payload));
    assert_true(raw_connect(&r, addr, 81));
    expect_runs_when_sent_again(&r, 1, 1, payload, 16); /* the client is known: only the request fails */
    size_t block = block_pool_block(REQUEST_CLASS);
    test_alloc_fail_next(block, block + 1);
    int failed = test_alloc_sized_failed();
    assert_true(raw_request(&r, 2, 2, 1, 0, "t.echo", payload, sizeof(payload)));
    expect_unkept_refusal(&r, 2);
    assert_int_equal(failed + 1, test_alloc_sized_failed());
    expect_runs_when_sent_again(&r, 3, 2, payload, sizeof(payload));
    raw_close(&r);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

static void test_no_memory_for_the_client(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = serve(addr, sizeof(addr));
    static struct raw_client r;
    static uint8_t payload[16];
    memset(payload, 'c', sizeof(payload));
    assert_true(raw_connect(&r, addr, 82));
    size_t record = sizeof(struct arpc_rc_client);
    test_alloc_fail_next(record, record + 1);
    int failed = test_alloc_sized_failed();
    assert_true(raw_request(&r, 1, 1, 0, 0, "t.echo", payload, sizeof(payload))); /* the client's first */
    expect_unkept_refusal(&r, 1);
    assert_int_equal(failed + 1, test_alloc_sized_failed());
    expect_runs_when_sent_again(&r, 2, 1, payload, sizeof(payload));
    raw_close(&r);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

int main(void)
{
    test_alloc_sized_install(); /* before any thread of arpc's runs */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_memory_for_the_request),
        cmocka_unit_test(test_no_memory_for_the_client),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
