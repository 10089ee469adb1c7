/*
 * A client whose connection the server closed for being idle (idle_timeout_ms: a GOAWAY
 * marked ARPC_GOAWAY_IDLE) does not reconnect at once: it parks until a call or a one-way
 * message needs a connection (core/client_park.c). Before, it reconnected as after a server's
 * stop, and took its connection (and, under descriptor pressure, the descriptor the server
 * had shed it for) right back, every idle period.
 *
 * Each park is seen in the client's log line; with no attempt under way there, the counts of
 * connections opened are exact. A one-way message sent while parked is held, starts the
 * attempt and reaches the server; a call does the same and succeeds. A message sent just
 * before the close reaches the server or is named dropped in a WARN line, never lost unsaid.
 * Calls and messages made while parked reach the server in the order they were made.
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

#include "arpc/arpc.h"
#include "support/test_util.h"

#define IDLE_MS 150

static sem_t parked;          /* one post per "reconnecting at the next call" line */
static atomic_int named_dropped; /* one-way messages a WARN line named dropped */

static void logger(void *ctx, enum arpc_log_level level, const char *line)
{
    (void)ctx;
    (void)level;
    int n;
    if (strstr(line, "reconnecting at the next call") != NULL)
        sem_post(&parked);
    else if (strstr(line, "dropped unsent") != NULL && sscanf(strstr(line, ": ") + 2, "%d one-way", &n) == 1)
        atomic_fetch_add(&named_dropped, n);
}

static void h_note(arpc_request *req, void *ctx)
{
    (void)ctx;
    latch_add();
    arpc_reply(req, NULL, 0); /* finishes a one-way request */
}

static uint64_t opened(arpc_client *c) { return client_stat_now(c, offsetof(arpc_client_stats, connections_opened)); }

/* A server with idle_timeout_ms IDLE_MS, t.echo and `method` (handled by h), and a client
 * of it that made one call and was then parked. */
static void start_parked(arpc_server **s, arpc_client **c, unsigned workers, const char *method, arpc_handler_fn h)
{
    latch_reset();
    assert_int_equal(0, sem_init(&parked, 0, 0));
    arpc_set_logger(logger, NULL, ARPC_LOG_INFO);
    arpc_server_options so = {.idle_timeout_ms = IDLE_MS, .workers = workers};
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_create(s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(*s, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(*s, method, h, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(*s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    assert_int_equal(ARPC_OK, arpc_client_connect(c, addr, NULL));
    assert_int_equal(ARPC_OK, call_until_sent(*c, "t.echo", "x", 1, NULL, NULL, TEST_WAIT_MS));
    /* Idle: closed by the server, parked by the client; no attempt, so the count is exact. */
    assert_true(sem_wait_secs(&parked, TEST_WAIT_S));
}

static void test_idle_client_reconnects_when_next_needed(void **state)
{
    (void)state;
    arpc_server *s;
    arpc_client *c;
    start_parked(&s, &c, 0, "t.note", h_note);
    assert_int_equal(1, opened(c));
    /* A one-way message is held, starts the attempt, and reaches the server. */
    assert_int_equal(ARPC_OK, arpc_notify(c, "t.note", "n", 1));
    assert_true(latch_wait(1, TEST_WAIT_MS));
    assert_int_equal(2, opened(c));
    assert_int_equal(0, client_stat_now(c, offsetof(arpc_client_stats, oneways_dropped)));
    /* Idle again; then a call. */
    assert_true(sem_wait_secs(&parked, TEST_WAIT_S));
    assert_int_equal(2, opened(c));
    void *reply = NULL;
    size_t len = 0;
    assert_int_equal(ARPC_OK, arpc_call(c, "t.echo", "y", 1, &reply, &len, TEST_WAIT_MS));
    assert_int_equal(1, len);
    arpc_free(reply);
    assert_int_equal(3, opened(c));
    /* Idle again; a one-way message, then the close at once: the message reaches the server
     * (the connection it started came in time) or a WARN line names it dropped. */
    assert_true(sem_wait_secs(&parked, TEST_WAIT_S));
    atomic_store(&named_dropped, 0);
    assert_int_equal(ARPC_OK, arpc_notify(c, "t.note", "m", 1));
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    if (atomic_load(&named_dropped) == 0)
        assert_true(latch_wait(2, TEST_WAIT_MS));
    else
        assert_int_equal(1, atomic_load(&named_dropped));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    arpc_set_logger(NULL, NULL, ARPC_LOG_INFO);
    sem_destroy(&parked);
}

/* The order handlers ran in: one worker, so the order the server read the requests in. */
#define ORDER_N 8
static char order_seen[ORDER_N + 1];
static atomic_int order_n;

static void h_record(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len = 0;
    const char *p = arpc_request_data(req, &len);
    int i = atomic_fetch_add(&order_n, 1);
    if (len == 1 && i < ORDER_N)
        order_seen[i] = p[0];
    latch_add();
    arpc_reply(req, NULL, 0); /* a reply, or the end of a one-way request */
}

/* Calls and one-way messages made while parked reach the server in the order they were made:
 * the held messages go out among the calls that waited with them, not all before. */
static void test_parked_calls_and_messages_keep_their_order(void **state)
{
    (void)state;
    atomic_store(&order_n, 0);
    memset(order_seen, 0, sizeof(order_seen));
    arpc_server *s;
    arpc_client *c;
    start_parked(&s, &c, 1, "t.rec", h_record); /* one worker: handlers run in the order read */
    /* Parked: a call, a message, a call, ... (the first call starts the attempt). */
    arpc_future *f[ORDER_N];
    char want[ORDER_N + 1] = {0};
    for (int i = 0; i < ORDER_N; i++) {
        want[i] = (char)('a' + i);
        f[i] = NULL;
        if (i % 2 == 0)
            assert_non_null(f[i] = arpc_call_async(c, "t.rec", &want[i], 1, TEST_WAIT_MS));
        else
            assert_int_equal(ARPC_OK, arpc_notify(c, "t.rec", &want[i], 1));
    }
    for (int i = 0; i < ORDER_N; i += 2) {
        assert_int_equal(ARPC_OK, arpc_future_wait_for(f[i], TEST_WAIT_MS));
        arpc_future_release(f[i]);
    }
    assert_true(latch_wait(ORDER_N, TEST_WAIT_MS));
    assert_string_equal(want, order_seen);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    arpc_set_logger(NULL, NULL, ARPC_LOG_INFO);
    sem_destroy(&parked);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idle_client_reconnects_when_next_needed),
        cmocka_unit_test(test_parked_calls_and_messages_keep_their_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
