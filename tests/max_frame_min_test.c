/*
 * max_frame has a floor, ARPC_MAX_FRAME_MIN (1 KiB, arpc/common.h), on the server and the
 * client: each end sends frames of its own that the other must take, whatever its max_frame
 * (a client's goodbye, an error naming an unknown method of up to 255 bytes, the server's
 * refusals). Below it a server refused every client's goodbye (at 1) and a client read "no
 * such method" as ARPC_ETOOLARGE (at 32); now such a max_frame fails create / connect with
 * ARPC_EINVAL, said in errbuf. At the floor: those frames pass; a client's HELLO exchange is
 * bounded by the largest HELLO, not max_frame, and after it max_frame bounds calls (a request
 * whose body, 24 + method + bytes, is over it ends ARPC_ETOOLARGE unsent, the connection
 * goes on).
 *
 * Other options with a floor, refused likewise: a server's max_conn_bytes under max_frame
 * (16 MiB when 0) or ARPC_SERVER_CONN_BYTES_MIN (a bound of 1 MiB closed the connection of a
 * 15 MB reply as "4 x max_conn_bytes" of output the peer did not read, and the client's retry
 * met the same close, for ever; at 9 every HELLO was closed); a reply_cache_bytes under
 * ARPC_SERVER_REPLY_CACHE_MIN (at 1 every numbered call was ARPC_EOVERLOADED); a client's
 * reconnect_min_ms over its reconnect_max_ms (the max was raised to it without a word).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "arpc/arpc.h"
#ifdef ARPC_WITH_JSONRPC
#include "arpc/jsonrpc.h"
#endif
#include "support/log_capture.h"
#include "support/test_util.h"

static arpc_server *start_server(uint32_t max_frame, char *addr, size_t len)
{
    arpc_server *s;
    arpc_server_options so = {.workers = 1, .max_frame = max_frame};
    assert_int_equal(arpc_server_create(&s, &so), ARPC_OK);
    assert_int_equal(arpc_server_register(s, "e", test_echo, NULL, NULL), ARPC_OK);
    assert_int_equal(arpc_server_listen(s, "tcp://127.0.0.1:0", addr, len), ARPC_OK);
    return s;
}

static void test_server_under_the_floor_refused(void **state)
{
    (void)state;
    static const uint32_t bad[] = {1, 32, ARPC_MAX_FRAME_MIN - 1};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char why[256] = "";
        arpc_server *s = NULL;
        arpc_server_options so = {.max_frame = bad[i], .errbuf = why, .errbuf_len = sizeof(why)};
        assert_int_equal(ARPC_EINVAL, arpc_server_create(&s, &so));
        assert_null(s);
        assert_non_null(strstr(why, "ARPC_MAX_FRAME_MIN"));
    }
}

static void test_client_under_the_floor_refused(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = start_server(0, addr, sizeof(addr));
    static const uint32_t bad[] = {1, 32, ARPC_MAX_FRAME_MIN - 1};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char why[ARPC_ERRBUF_SIZE] = "";
        arpc_client_options co = {.max_frame = bad[i], .errbuf = why, .errbuf_len = sizeof(why)};
        arpc_client *c = NULL;
        assert_int_equal(ARPC_EINVAL, arpc_client_connect(&c, addr, &co));
        assert_null(c);
        assert_non_null(strstr(why, "ARPC_MAX_FRAME_MIN"));
    }
    assert_int_equal(arpc_server_destroy(s), ARPC_OK);
}

/* Both ends at the floor: the client's goodbye is taken (no fault, no warning), and an
 * unknown method with the longest name is answered ARPC_ENOMETHOD. */
static void test_control_frames_pass_at_the_floor(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = start_server(ARPC_MAX_FRAME_MIN, addr, sizeof(addr));
    arpc_client_options co = {.max_frame = ARPC_MAX_FRAME_MIN};
    arpc_client *c;
    assert_int_equal(arpc_client_connect(&c, addr, &co), ARPC_OK);
    char name[256];
    memset(name, 'm', 255);
    name[255] = '\0';
    void *reply = NULL;
    size_t len = 0;
    assert_int_equal(arpc_call(c, name, "x", 1, &reply, &len, TEST_WAIT_MS), ARPC_ENOMETHOD);
    arpc_free(reply);
    log_capture_clear();
    assert_int_equal(arpc_client_close(c), ARPC_OK); /* its goodbye is read before the stop */
    assert_int_equal(arpc_server_stop(s, TEST_WAIT_MS), ARPC_OK);
    arpc_server_stats st;
    assert_int_equal(arpc_server_stats(s, &st), ARPC_OK);
    assert_int_equal(st.connections_faulted, 0);
    if (log_capture_count() != 0)
        log_capture_print();
    assert_int_equal(log_capture_count(), 0);
    assert_int_equal(arpc_server_destroy(s), ARPC_OK);
}

/* After the HELLO the bound is max_frame: a body of exactly ARPC_MAX_FRAME_MIN (24 + "e" +
 * 999 bytes) passes and its reply comes back; one byte more ends ARPC_ETOOLARGE, unsent, and
 * the connection goes on. */
static void test_bound_after_hello_is_max_frame(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = start_server(0, addr, sizeof(addr));
    arpc_client_options co = {.max_frame = ARPC_MAX_FRAME_MIN};
    arpc_client *c;
    assert_int_equal(arpc_client_connect(&c, addr, &co), ARPC_OK);
    static char req[ARPC_MAX_FRAME_MIN];
    memset(req, 'x', sizeof(req));
    size_t fits = ARPC_MAX_FRAME_MIN - 24 - 1;
    void *reply = NULL;
    size_t len = 0;
    assert_int_equal(arpc_call(c, "e", req, fits, &reply, &len, TEST_WAIT_MS), ARPC_OK);
    assert_int_equal(len, fits);
    assert_memory_equal(reply, req, fits);
    arpc_free(reply);
    reply = NULL;
    assert_int_equal(arpc_call(c, "e", req, fits + 1, &reply, &len, TEST_WAIT_MS), ARPC_ETOOLARGE);
    arpc_free(reply);
    assert_int_equal(arpc_client_connections(c), 1);
    assert_int_equal(arpc_call(c, "e", "y", 1, NULL, NULL, TEST_WAIT_MS), ARPC_OK);
    assert_int_equal(arpc_client_close(c), ARPC_OK);
    assert_int_equal(arpc_server_destroy(s), ARPC_OK);
}

/* max_conn_bytes: 0, or at least max_frame (16 MiB when 0) and ARPC_SERVER_CONN_BYTES_MIN. */
static void test_max_conn_bytes_under_a_frame_refused(void **state)
{
    (void)state;
    static const struct {
        size_t conn_bytes;
        uint32_t max_frame;
        const char *said;
    } bad[] = {
        {1u << 20, 0, "max_conn_bytes 1048576: at least 16777216 (max_frame 16777216 by default"},
        {9, 0, "max_conn_bytes 9: at least 16777216"},
        {(1u << 20) - 1, 1u << 20, "max_conn_bytes 1048575: at least 1048576 (max_frame 1048576,"},
        {ARPC_SERVER_CONN_BYTES_MIN - 1, ARPC_MAX_FRAME_MIN, "max_conn_bytes 131071: at least 131072"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char why[512] = "";
        arpc_server *s = NULL;
        arpc_server_options so = {.max_conn_bytes = bad[i].conn_bytes, .max_frame = bad[i].max_frame,
                                  .errbuf = why, .errbuf_len = sizeof(why)};
        assert_int_equal(ARPC_EINVAL, arpc_server_create(&s, &so));
        assert_null(s);
        if (strstr(why, bad[i].said) == NULL)
            print_message("said: %s\n", why);
        assert_non_null(strstr(why, bad[i].said));
        assert_non_null(strstr(why, "ARPC_SERVER_CONN_BYTES_MIN 131072"));
        assert_non_null(strstr(why, "or 0 for the default"));
    }
    /* At the least: taken, as 0 is with any max_frame (then the bound is max_frame if larger). */
    static const struct {
        size_t conn_bytes;
        uint32_t max_frame;
    } good[] = {{0, 0}, {0, 64u << 20}, {16u << 20, 0}, {1u << 20, 1u << 20}, {ARPC_SERVER_CONN_BYTES_MIN, ARPC_MAX_FRAME_MIN}};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        char why[512] = "";
        arpc_server *s = NULL;
        arpc_server_options so = {.workers = 1, .max_conn_bytes = good[i].conn_bytes, .max_frame = good[i].max_frame,
                                  .errbuf = why, .errbuf_len = sizeof(why)};
        assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
        assert_string_equal(why, "");
        assert_int_equal(arpc_server_destroy(s), ARPC_OK);
    }
}

/* At the least bound (max_conn_bytes = max_frame = 1 MiB) calls of nearly a frame each, and
 * their echoes, pass pipelined on one connection: nothing closes it for its output. */
static void test_frames_pass_at_the_least_conn_bytes(void **state)
{
    (void)state;
    enum { N = 4, SIZE = (1u << 20) - 64 };
    char addr[256];
    arpc_server *s;
    arpc_server_options so = {.workers = 1, .max_frame = 1u << 20, .max_conn_bytes = 1u << 20};
    assert_int_equal(arpc_server_create(&s, &so), ARPC_OK);
    assert_int_equal(arpc_server_register(s, "e", test_echo, NULL, NULL), ARPC_OK);
    assert_int_equal(arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)), ARPC_OK);
    arpc_client *c;
    assert_int_equal(arpc_client_connect(&c, addr, NULL), ARPC_OK);
    static uint8_t req[SIZE];
    memset(req, 'q', sizeof(req));
    arpc_future *f[N];
    for (int i = 0; i < N; i++)
        assert_non_null(f[i] = arpc_call_async(c, "e", req, sizeof(req), TEST_WAIT_MS));
    for (int i = 0; i < N; i++) {
        assert_int_equal(arpc_future_wait(f[i]), ARPC_OK);
        arpc_future_release(f[i]);
    }
    assert_int_equal(arpc_client_connections(c), 1);
    assert_int_equal(LOG_LINES_WITH("x max_conn_bytes"), 0);
    assert_int_equal(arpc_client_close(c), ARPC_OK);
    assert_int_equal(arpc_server_destroy(s), ARPC_OK);
}

/* A reply larger than a connection may hold (3 x max_conn_bytes, with the rest of its output
 * under the hard cap's fourth), to a client whose max_frame takes it: answered ARPC_ETOOLARGE
 * (it ran), the connection kept. It was queued whole, the connection closed for output over 4 x
 * max_conn_bytes in the same turn, and the client's retry met the same close until its
 * deadline (a review of extreme values). */
enum { BIG_REPLY = 5u << 20 };

/* Replies BIG_REPLY bytes: a JSON string, for either codec. */
static void h_big_reply(arpc_request *req, void *ctx)
{
    (void)ctx;
    static char big[BIG_REPLY];
    if (big[0] != '"') { /* one worker: one thread writes it */
        memset(big, 'a', sizeof(big));
        big[0] = big[sizeof(big) - 1] = '"';
    }
    arpc_reply(req, big, sizeof(big));
}

/* A server whose connections may hold 1 MiB, with T.Big (h_big_reply) and T.Echo. */
static arpc_server *big_reply_server(char *addr, size_t len)
{
    arpc_server *s;
    arpc_server_options so = {.workers = 1, .max_frame = 1u << 20, .max_conn_bytes = 1u << 20};
    assert_int_equal(arpc_server_create(&s, &so), ARPC_OK);
    assert_int_equal(arpc_server_register(s, "T.Big", h_big_reply, NULL, NULL), ARPC_OK);
    assert_int_equal(arpc_server_register(s, "T.Echo", test_echo, NULL, NULL), ARPC_OK);
    assert_int_equal(arpc_server_listen(s, "tcp://127.0.0.1:0", addr, len), ARPC_OK);
    return s;
}

static void test_reply_over_what_a_connection_holds(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = big_reply_server(addr, sizeof(addr));
    arpc_client *c;
    arpc_client_options co = {.max_frame = 64u << 20};
    assert_int_equal(arpc_client_connect(&c, addr, &co), ARPC_OK);
    void *rep = NULL;
    size_t len = 0;
    assert_int_equal(arpc_call(c, "T.Big", "", 0, &rep, &len, TEST_WAIT_MS), ARPC_ETOOLARGE);
    assert_non_null(strstr(rep, "than its connection may hold"));
    arpc_free(rep);
    assert_int_equal(arpc_client_connections(c), 1);
    assert_int_equal(LOG_LINES_WITH("x max_conn_bytes"), 0);
    assert_int_equal(arpc_client_close(c), ARPC_OK);
    assert_int_equal(arpc_server_destroy(s), ARPC_OK);
}

#ifdef ARPC_WITH_JSONRPC
/* The same bound for a JSON-RPC connection, whose client's limit is 16 MiB: the reply is
 * refused, the connection kept (it was closed for its output, every call on it lost). */
static void test_jsonrpc_reply_over_what_a_connection_holds(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = big_reply_server(addr, sizeof(addr));
    arpc_jsonrpc_client *c;
    assert_int_equal(arpc_jsonrpc_connect(&c, addr, NULL), ARPC_OK);
    char *rep = NULL;
    size_t len = 0;
    int rc = arpc_jsonrpc_call(c, "T.Big", "[]", 2, &rep, &len, TEST_WAIT_MS);
    arpc_free(rep);
    assert_int_not_equal(rc, ARPC_OK);
    assert_int_not_equal(rc, ARPC_ECONNLOST);
    assert_int_equal(arpc_jsonrpc_call(c, "T.Echo", "[1]", 3, NULL, NULL, TEST_WAIT_MS), ARPC_OK);
    assert_int_equal(LOG_LINES_WITH("x max_conn_bytes"), 0);
    assert_int_equal(arpc_jsonrpc_close(c), ARPC_OK);
    assert_int_equal(arpc_server_destroy(s), ARPC_OK);
}
#endif

/* An fsync policy outside the enum is refused with or without a log_dir (without one it
 * passed unread, a review's sweep). */
static void test_unknown_fsync_refused(void **state)
{
    (void)state;
    for (int with_log = 0; with_log < 2; with_log++) {
        char why[512] = "";
        arpc_server *s = NULL;
        arpc_server_options so = {.fsync = (enum arpc_fsync)7, .errbuf = why, .errbuf_len = sizeof(why)};
        if (with_log)
            so.log_dir = "/nonexistent-arpc-log-dir"; /* refused before the directory is looked at */
        assert_int_equal(ARPC_EINVAL, arpc_server_create(&s, &so));
        assert_null(s);
        assert_non_null(strstr(why, "unknown fsync policy 7"));
    }
}

/* reply_cache_bytes: 0, or at least ARPC_SERVER_REPLY_CACHE_MIN. */
static void test_reply_cache_too_small_refused(void **state)
{
    (void)state;
    static const size_t bad[] = {1, 4096, ARPC_SERVER_REPLY_CACHE_MIN - 1};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char why[512] = "";
        char said[64];
        snprintf(said, sizeof(said), "reply_cache_bytes %zu: at least 65536", bad[i]);
        arpc_server *s = NULL;
        arpc_server_options so = {.reply_cache_bytes = bad[i], .errbuf = why, .errbuf_len = sizeof(why)};
        assert_int_equal(ARPC_EINVAL, arpc_server_create(&s, &so));
        assert_null(s);
        assert_non_null(strstr(why, said));
        assert_non_null(strstr(why, "ARPC_SERVER_REPLY_CACHE_MIN"));
    }
    /* At the least: a numbered call is remembered and answered. */
    char addr[256];
    arpc_server *s;
    arpc_server_options so = {.workers = 1, .reply_cache_bytes = ARPC_SERVER_REPLY_CACHE_MIN};
    assert_int_equal(arpc_server_create(&s, &so), ARPC_OK);
    assert_int_equal(arpc_server_register(s, "e", test_echo, NULL, NULL), ARPC_OK);
    assert_int_equal(arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)), ARPC_OK);
    arpc_client *c;
    assert_int_equal(arpc_client_connect(&c, addr, NULL), ARPC_OK);
    for (int i = 0; i < 8; i++)
        assert_int_equal(arpc_call(c, "e", "abc", 3, NULL, NULL, TEST_WAIT_MS), ARPC_OK);
    assert_int_equal(arpc_client_close(c), ARPC_OK);
    assert_int_equal(arpc_server_destroy(s), ARPC_OK);
}

/* reconnect_min_ms over reconnect_max_ms, both set: refused (the max is the longest delay).
 * Either left 0 bends to the other: taken. */
static void test_reconnect_min_over_max_refused(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = start_server(0, addr, sizeof(addr));
    char why[ARPC_ERRBUF_SIZE] = "";
    arpc_client_options co = {.reconnect_min_ms = 5000, .reconnect_max_ms = 100, .errbuf = why, .errbuf_len = sizeof(why)};
    arpc_client *c = NULL;
    assert_int_equal(ARPC_EINVAL, arpc_client_connect(&c, addr, &co));
    assert_null(c);
    assert_non_null(strstr(why, "reconnect_min_ms 5000 above reconnect_max_ms 100"));
    assert_non_null(strstr(why, "at most 100, or 0 for the default"));
    static const uint32_t good[][2] = {{5000, 0}, {0, 5}, {100, 100}, {0, 0}};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        why[0] = '\0';
        arpc_client_options ok = {.reconnect_min_ms = good[i][0], .reconnect_max_ms = good[i][1], .errbuf = why,
                                  .errbuf_len = sizeof(why)};
        assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &ok));
        assert_int_equal(arpc_call(c, "e", "y", 1, NULL, NULL, TEST_WAIT_MS), ARPC_OK);
        assert_int_equal(arpc_client_close(c), ARPC_OK);
    }
    assert_int_equal(arpc_server_destroy(s), ARPC_OK);
}

int main(void)
{
    log_capture_start(ARPC_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_under_the_floor_refused),
        cmocka_unit_test(test_client_under_the_floor_refused),
        cmocka_unit_test(test_control_frames_pass_at_the_floor),
        cmocka_unit_test(test_bound_after_hello_is_max_frame),
        cmocka_unit_test(test_max_conn_bytes_under_a_frame_refused),
        cmocka_unit_test(test_frames_pass_at_the_least_conn_bytes),
        cmocka_unit_test(test_reply_over_what_a_connection_holds),
#ifdef ARPC_WITH_JSONRPC
        cmocka_unit_test(test_jsonrpc_reply_over_what_a_connection_holds),
#endif
        cmocka_unit_test(test_reply_cache_too_small_refused),
        cmocka_unit_test(test_unknown_fsync_refused),
        cmocka_unit_test(test_reconnect_min_over_max_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
