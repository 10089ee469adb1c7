/*
 * The JSON-RPC client takes back a request still waiting, unwritten, in its output queue when
 * its call's deadline comes (the server stopped reading): the call ends ARPC_EUNREACHABLE,
 * "did not run", and the server never reads it, however late it catches up. Before, such a
 * call ended ARPC_ETIMEDOUT ("may have run") and its request was written once the server read
 * again, so a server that had fallen behind ran calls whose callers had long given up. (The
 * arpc client does the same: client_unwritten_deadline_test.)
 *
 * The server stops reading: its one worker is held by the first call, and two calls in flight
 * a connection at most hold its input, so the socket fills with large requests, and small ones
 * queue behind them. Every call ends ETIMEDOUT or EUNREACHABLE, some of each; once the worker
 * goes on, the server reads exactly the requests of the calls that did not end EUNREACHABLE,
 * and nothing more before the client has closed.
 *
 * And closed with requests still queued, the client tells the calls whose requests were
 * written (ARPC_ECANCELLED: may run) from those not wholly written (ARPC_ESHUTDOWN: did not).
 * And a cancel takes back a request still queued whole, as a deadline does.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arpc/arpc.h"
#include "arpc/jsonrpc.h"
#include "support/test_util.h"

#define LARGE_CALLS 320u /* 20 MiB: more than loopback's socket buffers take */
#define LARGE_SIZE (64u * 1024u)
#define SMALL_CALLS 200u
#define CALLS (LARGE_CALLS + SMALL_CALLS)
#define DEADLINE_MS 1500

static sem_t gate;       /* the held handler goes on */
static atomic_bool held; /* the first call holds the worker */

static void h_hold(arpc_request *req, void *ctx)
{
    (void)ctx;
    if (!atomic_exchange(&held, true))
        (void)sem_wait_secs(&gate, TEST_WAIT_S);
    arpc_reply(req, "0", 1);
}

/* T.Done: answers at once. */
static void h_done(arpc_request *req, void *ctx)
{
    (void)ctx;
    arpc_reply(req, "0", 1);
}

/* A server whose first call of `method` (handled by h, which holds as h_hold) will hold its
 * one worker, and two calls in flight a connection at most (and T.Done); and a JSON-RPC client
 * of it. */
static void start_held(arpc_server **s, arpc_jsonrpc_client **c, const char *method, arpc_handler_fn h)
{
    atomic_store(&held, false);
    assert_int_equal(0, sem_init(&gate, 0, 0));
    arpc_server_options so = {.workers = 1, .max_calls_per_conn = 2};
    assert_int_equal(ARPC_OK, arpc_server_create(s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(*s, method, h, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(*s, "T.Done", h_done, NULL, NULL));
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(*s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    char why[ARPC_ERRBUF_SIZE] = "";
    arpc_jsonrpc_options o = {.errbuf = why, .errbuf_len = sizeof(why)};
    assert_int_equal(ARPC_OK, arpc_jsonrpc_connect(c, addr, &o));
}

static void test_unwritten_json_request_is_taken_back(void **state)
{
    (void)state;
    arpc_server *s = NULL;
    arpc_jsonrpc_client *c = NULL;
    start_held(&s, &c, "T.Hold", h_hold);
    /* ["xxx...x"]: a large request is a 64 KiB string. */
    char *large = malloc(LARGE_SIZE + 5);
    assert_non_null(large);
    memset(large, 'x', LARGE_SIZE + 4);
    memcpy(large, "[\"", 2);
    memcpy(large + LARGE_SIZE + 2, "\"]", 2);
    large[LARGE_SIZE + 4] = '\0';
    static arpc_future *f[CALLS];
    for (uint32_t i = 0; i < CALLS; i++) {
        const char *params = i < LARGE_CALLS ? large : "[1]";
        f[i] = arpc_jsonrpc_call_async(c, "T.Hold", params, strlen(params), DEADLINE_MS);
        assert_non_null(f[i]);
    }
    free(large);
    unsigned unreachable = 0, timed_out = 0;
    for (uint32_t i = 0; i < CALLS; i++) {
        int code = arpc_future_wait_for(f[i], TEST_WAIT_MS);
        if (code == ARPC_EUNREACHABLE) {
            unreachable++;
            size_t len = 0;
            const char *words = arpc_future_data(f[i], &len);
            if (words == NULL || strstr(words, "not sent") == NULL)
                fail_msg("call %u: EUNREACHABLE without saying its request was not sent", i);
        } else if (code == ARPC_ETIMEDOUT) {
            timed_out++;
        } else {
            fail_msg("call %u ended %s", i, arpc_errname(code));
        }
        arpc_future_release(f[i]);
    }
    print_message("%u taken back, %u timed out\n", unreachable, timed_out);
    assert_true(unreachable > 0);
    assert_true(timed_out > 0); /* what the socket took, at least */
    /* The worker goes on: the server reads what the client wrote, which is all it will. */
    assert_int_equal(0, sem_post(&gate));
    uint64_t want = CALLS - unreachable;
    assert_true(WAIT_UNTIL(server_requests_read(s) >= want));
    assert_int_equal(want, server_requests_read(s));
    assert_int_equal(ARPC_OK, arpc_jsonrpc_close(c));
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, connections_closed), 1, TEST_WAIT_MS));
    assert_int_equal(want, server_requests_read(s));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    sem_destroy(&gate);
}

/* ---- the client's close ---- */

static atomic_bool seen[CALLS]; /* a request with this number ran */
static atomic_uint misread;      /* requests whose number h_note could not read */

/* Holds the worker as h_hold; notes the request's number, the start of its string. */
static void h_note(arpc_request *req, void *ctx)
{
    size_t len = 0;
    const char *p = arpc_request_data(req, &len); /* "\"N:...\"" */
    unsigned n = len > 2 && p[0] == '"' && p[1] >= '0' && p[1] <= '9' ? (unsigned)strtoul(p + 1, NULL, 10) : CALLS;
    if (n < CALLS)
        atomic_store(&seen[n], true);
    else
        atomic_fetch_add(&misread, 1);
    h_hold(req, ctx);
}

static void notes_clear(void)
{
    for (unsigned i = 0; i < CALLS; i++)
        atomic_store(&seen[i], false);
    atomic_store(&misread, 0);
}

/* The large calls, then the small ones, to T.Note, without a deadline: each params[0] (the
 * handler's data) a string beginning with the call's number. */
static void start_noted_calls(arpc_jsonrpc_client *c, arpc_future **f)
{
    char *params = malloc(LARGE_SIZE + 16);
    assert_non_null(params);
    for (uint32_t i = 0; i < CALLS; i++) {
        int n = snprintf(params, 16, "\"%u:", i);
        size_t pad = i < LARGE_CALLS ? LARGE_SIZE : 1;
        memset(params + n, 'x', pad);
        memcpy(params + n + pad, "\"", 2);
        f[i] = arpc_jsonrpc_call_async(c, "T.Note", params, strlen(params), ARPC_FOREVER);
        assert_non_null(f[i]);
    }
    free(params);
}

/* Closed with requests still queued, whole or in part: each call ends ARPC_ECANCELLED (its
 * request was written: the server may run it) or ARPC_ESHUTDOWN (not wholly written: none
 * can run it, half a JSON object being no request), some of each, and no call that ended
 * ESHUTDOWN runs. Before, every call pending at the close ended ECANCELLED. */
static void test_close_tells_unwritten_from_written(void **state)
{
    (void)state;
    notes_clear();
    arpc_server *s = NULL;
    arpc_jsonrpc_client *c = NULL;
    start_held(&s, &c, "T.Note", h_note);
    static arpc_future *f[CALLS];
    start_noted_calls(c, f);
    /* The server has read the first (the close's job follows every call on the loop's FIFO
     * lane anyway): some requests are written by the close. */
    assert_true(WAIT_UNTIL(atomic_load(&held)));
    assert_int_equal(ARPC_OK, arpc_jsonrpc_close(c));
    unsigned cancelled = 0, unsent = 0;
    static int code[CALLS];
    for (uint32_t i = 0; i < CALLS; i++) {
        code[i] = arpc_future_wait_for(f[i], TEST_WAIT_MS);
        if (code[i] == ARPC_ECANCELLED)
            cancelled++;
        else if (code[i] == ARPC_ESHUTDOWN)
            unsent++;
        else
            fail_msg("call %u ended %s", i, arpc_errname(code[i]));
        arpc_future_release(f[i]);
    }
    print_message("%u written, %u not at the close\n", cancelled, unsent);
    assert_true(cancelled > 0);
    assert_true(unsent > 0);
    assert_int_equal(0, sem_post(&gate));
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, connections_closed), 1, TEST_WAIT_MS));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s)); /* every handler has run */
    /* The notes are read (the first call ran; the others the server had read may not have:
     * JSON-RPC calls not started are cancelled when their connection closes). */
    assert_int_equal(0, atomic_load(&misread));
    assert_true(atomic_load(&seen[0]));
    for (uint32_t i = 0; i < CALLS; i++)
        if (code[i] == ARPC_ESHUTDOWN && atomic_load(&seen[i]))
            fail_msg("call %u ended ESHUTDOWN, but it ran", i);
    sem_destroy(&gate);
}

/* ---- cancels ---- */

/* Cancelled while its request waits, whole, in the output queue, a call's request is never
 * written: once the worker goes on, the server runs exactly the calls whose requests were
 * written before the cancels (a last call, sent after them, is answered after every request
 * written before it: the connection is FIFO). Before, the client was not told of a cancel,
 * and the server ran every call. */
static void test_cancelled_unwritten_json_request_is_taken_back(void **state)
{
    (void)state;
    notes_clear();
    arpc_server *s = NULL;
    arpc_jsonrpc_client *c = NULL;
    start_held(&s, &c, "T.Note", h_note);
    static arpc_future *f[CALLS];
    start_noted_calls(c, f);
    assert_true(WAIT_UNTIL(atomic_load(&held)));
    /* Every call but the one holding the worker: the socket holds a few MiB of the 20 queued. */
    for (uint32_t i = 1; i < CALLS; i++) {
        assert_true(arpc_future_cancel(f[i]));
        assert_int_equal(ARPC_ECANCELLED, arpc_future_poll(f[i]));
    }
    assert_int_equal(0, sem_post(&gate));
    char *result = NULL;
    size_t len = 0;
    assert_int_equal(ARPC_OK, arpc_jsonrpc_call(c, "T.Done", "[]", 2, &result, &len, ARPC_FOREVER));
    arpc_free(result);
    assert_int_equal(ARPC_OK, arpc_future_wait_for(f[0], TEST_WAIT_MS));
    unsigned ran = 0;
    for (uint32_t i = 0; i < CALLS; i++) {
        ran += atomic_load(&seen[i]);
        arpc_future_release(f[i]);
    }
    print_message("%u of %u calls ran, %u taken back\n", ran, CALLS, CALLS - ran);
    assert_int_equal(0, atomic_load(&misread));
    assert_true(atomic_load(&seen[0]));
    assert_true(ran < LARGE_CALLS); /* at least the small ones and the large ones behind the socket's */
    uint64_t read_before_close = server_requests_read(s);
    assert_int_equal(ran + 1, read_before_close); /* and T.Done */
    assert_int_equal(ARPC_OK, arpc_jsonrpc_close(c));
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, connections_closed), 1, TEST_WAIT_MS));
    assert_int_equal(read_before_close, server_requests_read(s)); /* nothing more came */
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    sem_destroy(&gate);
}

/* Cancelled before the client's loop took it up (a caller-driven loop nobody runs yet), a
 * call's request is never sent: the loop finds its future done when it gets to it. The next
 * call, which runs the loop, is the only one the server reads. */
static void test_cancelled_before_the_loop_is_never_sent(void **state)
{
    (void)state;
    notes_clear();
    atomic_store(&held, true); /* h_note holds nothing */
    arpc_server *s = NULL;
    arpc_server_options so = {.workers = 1};
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "T.Note", h_note, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "T.Done", h_done, NULL, NULL));
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    arpc_loop *loop = NULL;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL)); /* never started: the callers drive it */
    arpc_jsonrpc_options o = {.loop = loop};
    arpc_jsonrpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_jsonrpc_connect(&c, addr, &o));
    arpc_future *f = arpc_jsonrpc_call_async(c, "T.Note", "\"5:x\"", 5, ARPC_FOREVER);
    assert_non_null(f);
    assert_true(arpc_future_cancel(f));
    char *result = NULL;
    size_t len = 0;
    assert_int_equal(ARPC_OK, arpc_jsonrpc_call(c, "T.Done", "[]", 2, &result, &len, TEST_WAIT_MS));
    arpc_free(result);
    assert_int_equal(ARPC_ECANCELLED, arpc_future_poll(f));
    arpc_future_release(f);
    assert_int_equal(ARPC_OK, arpc_jsonrpc_close(c));
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, connections_closed), 1, TEST_WAIT_MS));
    assert_int_equal(1, server_requests_read(s)); /* T.Done */
    assert_false(atomic_load(&seen[5]));
    assert_int_equal(0, atomic_load(&misread));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    arpc_loop_destroy(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unwritten_json_request_is_taken_back),
        cmocka_unit_test(test_close_tells_unwritten_from_written),
        cmocka_unit_test(test_cancelled_unwritten_json_request_is_taken_back),
        cmocka_unit_test(test_cancelled_before_the_loop_is_never_sent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
