/*
 * Bulk payloads end to end (large frames read into buffers of their own, core/conn_body.c):
 * pipelined echo calls of 1 MiB and of 16 MiB less some headroom, over tcp and unix, on the
 * worker pool and inline on the loop, at-most-once (replies kept in the reply cache, whose large
 * ones come from and go back to their connection's buffer cache) and at-least-once, each reply checked byte for byte against what its call
 * sent (every call's bytes differ, so a reply given to the wrong call or a buffer reused while
 * still in use shows). Every block goes through the counting allocator, and each test ends
 * with none live: the connections' buffer caches are emptied when they close.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "core/client_internal.h"
#include "core/frame.h"
#include "transport/transport.h"
#include "support/test_util.h"

#ifdef ARPC_TSAN
#define SCALE 4 /* TSan checks every byte the test fills and compares */
#else
#define SCALE 1
#endif

#define MIB (1024u * 1024u)
/* The largest payload a default client and server pass both ways: the request's body also
 * holds its fixed fields and method name. */
#define NEAR_MAX_PAYLOAD (ARPC_DEFAULT_MAX_FRAME - 4096u)

struct bulk_fx {
    arpc_server *server;
    arpc_client *client;
    char addr[ARPC_ADDR_MAX];
};

/* The server (both echo methods) and a client with options co. */
static void fx_start_with(struct bulk_fx *fx, const char *scheme, const arpc_client_options *co)
{
    static int counter;
    char listen_addr[ARPC_ADDR_MAX];
    if (strcmp(scheme, "tcp") == 0)
        snprintf(listen_addr, sizeof(listen_addr), "tcp://127.0.0.1:0");
    else
        snprintf(listen_addr, sizeof(listen_addr), "unix:///tmp/arpc-bulk-test-%d-%d.sock", getpid(), counter++);
    arpc_server_options so = {.workers = 2};
    assert_int_equal(ARPC_OK, arpc_server_create(&fx->server, &so));
    arpc_method_options inl = {.inline_on_loop = true};
    assert_int_equal(ARPC_OK, arpc_server_register(fx->server, "bulk.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(fx->server, "bulk.echo_inline", test_echo, NULL, &inl));
    assert_int_equal(ARPC_OK, arpc_server_listen(fx->server, listen_addr, fx->addr, sizeof(fx->addr)));
    assert_int_equal(ARPC_OK, arpc_client_connect(&fx->client, fx->addr, co));
}

static void fx_start(struct bulk_fx *fx, const char *scheme, enum arpc_call_semantics semantics)
{
    arpc_client_options co = {.semantics = semantics};
    fx_start_with(fx, scheme, &co);
}

static void fx_stop(struct bulk_fx *fx)
{
    arpc_client_close(fx->client);
    assert_int_equal(ARPC_OK, arpc_server_stop(fx->server, 1000));
    arpc_server_destroy(fx->server);
}

/* Call i's payload: the test stream from a position of its own. */
static uint64_t call_pos(unsigned i) { return (uint64_t)i * 7919u + 1; }

/* `calls` echo calls of len bytes, at most `window` outstanding, each reply checked. */
static void pipelined_echo_as(enum arpc_call_semantics semantics, const char *scheme, const char *method, size_t len,
                              unsigned calls, unsigned window)
{
    struct bulk_fx fx = {0};
    fx_start(&fx, scheme, semantics);
    uint8_t *sent = malloc(len);   /* the call's bytes, built again to check its reply */
    assert_non_null(sent);
    arpc_future **win = calloc(window, sizeof(*win));
    unsigned *win_call = calloc(window, sizeof(*win_call));
    assert_non_null(win);
    assert_non_null(win_call);
    unsigned started = 0, done = 0;
    while (done < calls) {
        for (unsigned slot = 0; slot < window && started < calls; slot++) {
            if (win[slot] != NULL)
                continue;
            fill_pattern(sent, call_pos(started), len);
            win[slot] = arpc_call_async(fx.client, method, sent, len, 60000);
            assert_non_null(win[slot]);
            win_call[slot] = started++;
        }
        /* The oldest outstanding call: replies may come in any order, the check does not care. */
        unsigned slot = 0;
        for (unsigned s = 0; s < window; s++)
            if (win[s] != NULL && (win[slot] == NULL || win_call[s] < win_call[slot]))
                slot = s;
        assert_int_equal(ARPC_OK, arpc_future_wait(win[slot]));
        size_t got_len = 0;
        uint8_t *got = arpc_future_take(win[slot], &got_len);
        assert_int_equal(len, got_len);
        fill_pattern(sent, call_pos(win_call[slot]), len);
        assert_memory_equal(sent, got, len);
        arpc_free(got);
        arpc_future_release(win[slot]);
        win[slot] = NULL;
        done++;
    }
    free(win);
    free(win_call);
    free(sent);
    fx_stop(&fx);
}

/* At-most-once (the default): each reply is also kept in the server's reply cache until acked. */
static void pipelined_echo(const char *scheme, const char *method, size_t len, unsigned calls, unsigned window)
{
    pipelined_echo_as(ARPC_AT_MOST_ONCE, scheme, method, len, calls, window);
}

static void test_1mib_pool_tcp(void **state)
{
    (void)state;
    pipelined_echo("tcp", "bulk.echo", 1 * MIB, 48 / SCALE, 8);
}

static void test_1mib_inline_unix(void **state)
{
    (void)state;
    pipelined_echo("unix", "bulk.echo_inline", 1 * MIB, 48 / SCALE, 8);
}

/* Sizes around the read-apart threshold, and odd ones: each path, and the switch between them. */
static void test_sizes_around_threshold(void **state)
{
    (void)state;
    static const size_t sizes[] = {32 * 1024 - 64, 32 * 1024, 32 * 1024 + 1, 100001, 2 * MIB + 3};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        pipelined_echo("tcp", "bulk.echo", sizes[i], 12, 4);
}

/* At-least-once: a reply is written and freed, never cached. */
static void test_1mib_at_least_once(void **state)
{
    (void)state;
    pipelined_echo_as(ARPC_AT_LEAST_ONCE, "tcp", "bulk.echo", 1 * MIB, 48 / SCALE, 8);
}

static void test_near_max_pool_tcp(void **state)
{
    (void)state;
    pipelined_echo("tcp", "bulk.echo", NEAR_MAX_PAYLOAD, 6 / SCALE + 2, 2);
}

/* Steady bulk traffic reuses its server's blocks: a request's body goes back to its
 * connection's buffer cache when the call is done, and so does its reply once the client's
 * ack lets the reply cache discard it, for the next call's body and reply. (A reply the cache
 * kept used to be freed instead, so the server allocated a fresh block for every call, which
 * the allocator trimmed and faulted in again: docs/PERFORMANCE.md.) The client still
 * allocates one block a call, the reply it hands to its caller: at most that is allowed.
 * Inline, so that every reply is in the cache before the next call's ack discards it (on a
 * worker, a reply written by the worker may reach the cache after that ack, and then goes
 * back as an unkept one does: the test would not see the kept path every time). */
static void test_steady_calls_reuse_server_blocks(void **state)
{
    (void)state;
    enum { LEN = 64 * 1024, WARMUP = 16, CALLS = 200 };
    struct bulk_fx fx = {0};
    fx_start(&fx, "tcp", ARPC_AT_MOST_ONCE);
    uint8_t *sent = malloc(LEN);
    assert_non_null(sent);
    long large_before = 0;
    for (unsigned i = 0; i < WARMUP + CALLS; i++) {
        if (i == WARMUP)
            large_before = atomic_load(&test_alloc_large);
        fill_pattern(sent, call_pos(i), LEN);
        void *reply = NULL;
        size_t reply_len = 0;
        assert_int_equal(ARPC_OK, arpc_call(fx.client, "bulk.echo_inline", sent, LEN, &reply, &reply_len, 60000));
        assert_int_equal(LEN, reply_len);
        assert_memory_equal(sent, reply, LEN);
        arpc_free(reply);
    }
    long large = atomic_load(&test_alloc_large) - large_before;
    print_message("large allocations in %d calls: %ld\n", CALLS, large);
    assert_true(large <= CALLS + CALLS / 10);
    free(sent);
    fx_stop(&fx);
}

/* A client that goes quiet lets go of the blocks it kept for large requests. A burst of
 * pipelined 64 KiB calls leaves up to a window of them in the client's buffer cache, for the
 * next burst; they used to stay there until the client closed. Now the first heartbeat PING
 * of a silence frees them (core/conn_heartbeat.c), and the cache keeps blocks again for the
 * next burst. The heartbeat's interval is long enough that the burst's blocks are seen held
 * first (a look a few microseconds after the burst, against two seconds of silence: only a
 * stall of the test's thread that long would miss them). */
static void test_quiet_client_frees_its_large_blocks(void **state)
{
    (void)state;
    enum { LEN = 64 * 1024, WINDOW = 8 };
    struct bulk_fx fx = {0};
    arpc_client_options co = {.heartbeat_ms = 2000};
    fx_start_with(&fx, "tcp", &co);
    struct arpc_buf_cache *bufs = &fx.client->cl_bufs;
    uint8_t *sent = malloc(LEN);
    assert_non_null(sent);
    for (int round = 0; round < 2; round++) {
        arpc_future *f[WINDOW];
        for (unsigned i = 0; i < WINDOW; i++) {
            fill_pattern(sent, call_pos(i), LEN);
            assert_non_null(f[i] = arpc_call_async(fx.client, "bulk.echo", sent, LEN, 60000));
        }
        for (unsigned i = 0; i < WINDOW; i++) {
            assert_int_equal(ARPC_OK, arpc_future_wait(f[i]));
            arpc_future_release(f[i]);
        }
        /* The requests' blocks are back in the cache as their calls end... */
        assert_true(WAIT_UNTIL(arpc_buf_cache_held(bufs) >= 1));
        /* ...and leave it once the connection has been quiet for a heartbeat interval. */
        assert_true(WAIT_UNTIL(arpc_buf_cache_held(bufs) == 0));
    }
    free(sent);
    fx_stop(&fx);
}

int main(void)
{
    test_alloc_install();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_no_leak(test_1mib_pool_tcp),
        cmocka_unit_test_no_leak(test_1mib_inline_unix),
        cmocka_unit_test_no_leak(test_sizes_around_threshold),
        cmocka_unit_test_no_leak(test_1mib_at_least_once),
        cmocka_unit_test_no_leak(test_near_max_pool_tcp),
        cmocka_unit_test_no_leak(test_steady_calls_reuse_server_blocks),
        cmocka_unit_test_no_leak(test_quiet_client_frees_its_large_blocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
