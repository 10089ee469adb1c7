/*
 * Bad input behind valid requests on a JSON-RPC connection (core/jsonrpc_server.c:
 * jsonrpc_end): the calls read before it are answered, then the error for it (id null), then
 * the server closes, as Go's ServeCodec answers what it read before a request it cannot
 * decode. Before, the error went out at once and the connection closed once it was written,
 * dropping the answers of calls still running; and an end of stream inside a request closed
 * the connection at once. Each case holds its slow call until the server has read the bad
 * input (its log line says so), so the answer can only come after it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "support/test_util.h"

#define WAIT_MS 30000 /* bounds a hang, never a timing check */

static arpc_server *server;
static arpc_actor *slow_actor;
static char addr[128];
static sem_t slow_go, bad_input_read;

/* On its own actor: answers once the test posts slow_go. */
static void slow(arpc_request *req, void *ctx)
{
    (void)ctx;
    sem_wait_secs(&slow_go, WAIT_MS / 1000);
    arpc_reply(req, "\"slow\"", 6);
}

static void on_log(void *ctx, enum arpc_log_level level, const char *line)
{
    (void)ctx;
    (void)level;
    if (strstr(line, "closing the JSON-RPC connection from") != NULL)
        sem_post(&bad_input_read);
}

static int setup(void **state)
{
    (void)state;
    sem_init(&slow_go, 0, 0);
    sem_init(&bad_input_read, 0, 0);
    arpc_set_logger(on_log, NULL, ARPC_LOG_DEBUG);
    assert_int_equal(ARPC_OK, arpc_server_create(&server, NULL));
    assert_int_equal(ARPC_OK, arpc_actor_create(&slow_actor, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(server, "T.Fast", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(server, "T.Slow", slow, NULL,
                                                   &(arpc_method_options){.actor = slow_actor}));
    assert_int_equal(ARPC_OK, arpc_server_listen(server, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    assert_int_equal(ARPC_OK, arpc_server_destroy(server));
    arpc_actor_destroy(slow_actor);
    arpc_set_logger(NULL, NULL, ARPC_LOG_WARN);
    sem_destroy(&slow_go);
    sem_destroy(&bad_input_read);
    return 0;
}

static const char calls[] = "{\"method\":\"T.Fast\",\"params\":[1],\"id\":\"a\"}"
                            "{\"method\":\"T.Slow\",\"params\":[1],\"id\":\"b\"}";

/* Sends both calls then tail (half-closing after it if asked), lets the slow call answer once
 * the server read the bad input, and returns all the server wrote up to its close. */
static const char *exchange(const char *tail, bool half_close)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(0, fd_connect_loopback(fd, addr));
    struct timeval tv = {.tv_sec = WAIT_MS / 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    static char out[8192];
    int len = snprintf(out, sizeof(out), "%s%s", calls, tail);
    assert_true(len < (int)sizeof(out));
    assert_int_equal(len, write(fd, out, (size_t)len));
    if (half_close)
        assert_int_equal(0, shutdown(fd, SHUT_WR));
    bool read_it = sem_wait_secs(&bad_input_read, WAIT_MS / 1000);
    sem_post(&slow_go);
    static char got[4096];
    size_t have = 0;
    ssize_t n;
    while (have < sizeof(got) - 1 && (n = read(fd, got + have, sizeof(got) - 1 - have)) > 0)
        have += (size_t)n;
    got[have] = '\0';
    close(fd);
    assert_true(read_it);     /* the server said it read the bad input */
    assert_int_equal(0, n);   /* it closed, not timed out */
    assert_true(server_stat_reaches(server, offsetof(arpc_server_stats, handlers_in_flight), 0, WAIT_MS));
    return got;
}

/* Both answers, in any order, then the error for the bad input, last. */
static void expect_answered_then(const char *got, const char *error)
{
    const char *a = strstr(got, "{\"id\":\"a\",\"result\":1,\"error\":null}\n");
    const char *b = strstr(got, "{\"id\":\"b\",\"result\":\"slow\",\"error\":null}\n");
    static const char null_error[] = "{\"id\":null,\"result\":null,\"error\":\"";
    const char *e = strstr(got, null_error);
    if (a == NULL || b == NULL || e == NULL || e < a || e < b || strstr(e, error) != e + sizeof(null_error) - 1 ||
        strchr(e, '\n')[1] != '\0')
        fail_msg("expected the answers to a and b, then \"%s\" last; got:\n%s", error, got);
}

static void test_garbage_after_calls(void **state)
{
    (void)state;
    expect_answered_then(exchange(" xx", false), "jsonrpc: expected a JSON object");
}

static void test_garbage_after_calls_half_closed(void **state)
{
    (void)state;
    expect_answered_then(exchange(" xx", true), "jsonrpc: expected a JSON object");
}

static void test_malformed_object_after_calls(void **state)
{
    (void)state;
    expect_answered_then(exchange("{\"method\":]}", false), "jsonrpc: malformed request");
}

/* Said as what it is, not as "expected a JSON object". */
static void test_nested_too_deep_after_calls(void **state)
{
    (void)state;
    static char deep[2200];
    int n = snprintf(deep, sizeof(deep), "{\"params\":");
    memset(deep + n, '[', sizeof(deep) - 1 - (size_t)n);
    expect_answered_then(exchange(deep, false), "jsonrpc: request nested deeper than 2048 levels");
}

static void test_stream_ends_inside_a_request(void **state)
{
    (void)state;
    expect_answered_then(exchange("{\"method\":", true), "jsonrpc: the stream ended inside a request");
    /* A token cut at the end ("tr" of true) may be whole JSON's start: not called malformed. */
    expect_answered_then(exchange("{\"method\":tr", true), "jsonrpc: the stream ended inside a request");
}

/* The part of a request before the end of stream is malformed already: said as malformed (with
 * jansson's words), not as cut short. */
static void test_stream_ends_inside_a_malformed_request(void **state)
{
    (void)state;
    expect_answered_then(exchange("{garbage\n", true), "jsonrpc: malformed request at byte 8: ");
}

/* A handler that does not reply holds the close (JSON-RPC calls carry no deadline) until the
 * server's stop, which answers its call ARPC_EABANDONED and closes the connection. */
static void test_unanswered_call_bounded_by_stop(void **state)
{
    (void)state;
    arpc_server *s;
    arpc_actor *a;
    char to[128];
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL));
    assert_int_equal(ARPC_OK, arpc_actor_create(&a, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "T.Fast", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "T.Slow", slow, NULL, &(arpc_method_options){.actor = a}));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", to, sizeof(to)));
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(0, fd_connect_loopback(fd, to));
    struct timeval tv = {.tv_sec = WAIT_MS / 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char out[256];
    int len = snprintf(out, sizeof(out), "%s xx", calls);
    assert_int_equal(len, write(fd, out, (size_t)len));
    assert_true(sem_wait_secs(&bad_input_read, WAIT_MS / 1000));
    assert_int_equal(ARPC_OK, arpc_server_stop(s, 100)); /* the slow handler is still in */
    static char got[4096];
    size_t have = 0;
    ssize_t n;
    while (have < sizeof(got) - 1 && (n = read(fd, got + have, sizeof(got) - 1 - have)) > 0)
        have += (size_t)n;
    got[have] = '\0';
    close(fd);
    sem_post(&slow_go); /* its late reply is dropped */
    assert_int_equal(0, n);
    if (strstr(got, "{\"id\":\"a\",\"result\":1,\"error\":null}") == NULL ||
        strstr(got, "{\"id\":\"b\",\"result\":null,\"error\":\"ARPC_EABANDONED: ") == NULL)
        fail_msg("expected a's answer and b abandoned at the stop; got:\n%s", got);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    arpc_actor_destroy(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_garbage_after_calls),
        cmocka_unit_test(test_garbage_after_calls_half_closed),
        cmocka_unit_test(test_malformed_object_after_calls),
        cmocka_unit_test(test_nested_too_deep_after_calls),
        cmocka_unit_test(test_stream_ends_inside_a_request),
        cmocka_unit_test(test_stream_ends_inside_a_malformed_request),
        cmocka_unit_test(test_unanswered_call_bounded_by_stop),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
