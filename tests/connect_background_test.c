/*
 * arpc_client_options.connect_in_background: arpc_client_connect returns once the first
 * attempt has started; a server that is not there yet is retried as a reconnect is, and calls
 * wait for it within their deadlines. For an application whose own loop drives the client's
 * (a pollable loop), connect no longer blocks that loop while a server is slow to answer.
 * One-way messages sent before the first connection wait for it too (they were dropped,
 * counted but unsaid: an integrator lost a third of them).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "support/cut_proxy.h"
#include "support/log_capture.h"
#include "support/test_util.h"

static void unix_addr(char *addr, size_t len, const char *what)
{
    snprintf(addr, len, "unix:///tmp/arpc-bg-%s-%d.sock", what, (int)getpid());
    unlink(addr + strlen("unix://"));
}

/* The server starts listening after the client "connected": a call made before it waits and
 * succeeds on the connection made in the background. */
static void test_server_that_comes_later(void **state)
{
    (void)state;
    char addr[128];
    unix_addr(addr, sizeof(addr), "later");
    arpc_client *c;
    arpc_client_options co = {.connect_in_background = true, .reconnect_max_ms = 50};
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &co));
    assert_int_equal(0, arpc_client_connections(c));
    arpc_future *f = arpc_call_async(c, "t.echo", "hi", 2, 20000);
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, addr, NULL, 0));
    assert_int_equal(ARPC_OK, arpc_future_wait_for(f, 20000));
    size_t len;
    const void *d = arpc_future_data(f, &len);
    assert_int_equal(2, len);
    assert_memory_equal("hi", d, 2);
    arpc_future_release(f);
    assert_int_equal(1, arpc_client_connections(c));
    assert_int_equal(ARPC_OK, arpc_client_last_error(c, NULL, 0)); /* the first success cleared it */
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* Nobody ever listens: a call with a deadline ends ARPC_EUNREACHABLE (never sent), and
 * last_error names what is in the way. */
static void test_server_never_there(void **state)
{
    (void)state;
    char addr[128];
    unix_addr(addr, sizeof(addr), "never");
    arpc_client *c;
    arpc_client_options co = {.connect_in_background = true, .reconnect_max_ms = 20};
    char why[ARPC_ERRBUF_SIZE];
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &co));
    /* The first attempt failed before connect returned (no such socket file): it says so. */
    assert_int_equal(ARPC_ECONNREFUSED, arpc_client_last_error(c, why, sizeof(why)));
    assert_null(strstr(why, "loop the client runs on"));
    assert_int_equal(ARPC_EUNREACHABLE, arpc_call(c, "t.echo", "x", 1, NULL, NULL, 300));
    assert_int_not_equal(ARPC_OK, arpc_client_last_error(c, NULL, 0));
    assert_int_equal(ARPC_OK, arpc_client_close(c));
}

/* With no_reconnect, the failed first attempt ends the client: calls end ARPC_EUNREACHABLE
 * without waiting for their deadlines (an hour here: the ctest timeout would catch a wait). */
static void test_no_reconnect_ends_the_client(void **state)
{
    (void)state;
    char addr[128];
    unix_addr(addr, sizeof(addr), "norecon");
    arpc_client *c;
    arpc_client_options co = {.connect_in_background = true, .no_reconnect = true};
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &co));
    assert_int_equal(ARPC_EUNREACHABLE, arpc_call(c, "t.echo", "x", 1, NULL, NULL, 3600 * 1000));
    assert_int_equal(ARPC_EUNREACHABLE, arpc_call(c, "t.echo", "x", 1, NULL, NULL, 3600 * 1000));
    assert_int_equal(ARPC_OK, arpc_client_close(c));
}

/* Checks a call that ended ARPC_EUNREACHABLE without a connection: its result says why the
 * last attempt failed (client.h), as arpc_client_last_error does. */
static void expect_unreachable_saying_why(arpc_client *c, int rc, const char *reply, size_t len)
{
    char why[ARPC_ERRBUF_SIZE];
    assert_int_not_equal(ARPC_OK, arpc_client_last_error(c, why, sizeof(why)));
    if (rc != ARPC_EUNREACHABLE || reply == NULL || strncmp(reply, "no connection to the server: ", 29) != 0 ||
        strstr(reply, why) == NULL)
        fail_msg("expected ARPC_EUNREACHABLE saying \"%s\", got %s: %s", why, arpc_errname(rc),
                 reply != NULL ? reply : "(no result)");
    assert_int_equal(strlen(reply), len);
}

/* With no_reconnect, the calls a failed first attempt ends carry why, as any call ending
 * ARPC_EUNREACHABLE without a connection does: one waiting when the attempt failed (a proxy
 * holds the connection until the call is in, then finds no server behind it), and one made
 * after. (Before, only calls ended by their deadline or give-up time did; these had the code
 * alone.) */
static void test_no_reconnect_calls_say_why(void **state)
{
    (void)state;
    int probe = socket(AF_INET, SOCK_STREAM, 0); /* a port nobody listens on: the proxy's target */
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t slen = sizeof(sin);
    assert_int_equal(0, bind(probe, (struct sockaddr *)&sin, sizeof(sin)));
    assert_int_equal(0, getsockname(probe, (struct sockaddr *)&sin, &slen));
    char target[64], via[128];
    snprintf(target, sizeof(target), "tcp://127.0.0.1:%u", (unsigned)ntohs(sin.sin_port));
    struct cut_proxy *px = cut_proxy_start(target, via, sizeof(via));
    assert_non_null(px);
    cut_proxy_hold_new(px, true); /* the client's connect completes in the backlog; no HELLO */
    arpc_client *c;
    arpc_client_options co = {.connect_in_background = true, .no_reconnect = true};
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, via, &co));
    arpc_future *f = arpc_call_async(c, "t.echo", "x", 1, 3600 * 1000);
    assert_true(client_stat_reaches(c, offsetof(arpc_client_stats, calls.started), 1, 30000)); /* it waits */
    cut_proxy_hold_new(px, false); /* accepted, no server behind: the attempt fails */
    int rc = arpc_future_wait_for(f, 30000);
    size_t len = 0;
    const char *reply = arpc_future_data(f, &len);
    expect_unreachable_saying_why(c, rc, reply, len);
    arpc_future_release(f);
    void *again = NULL;
    rc = arpc_call(c, "t.echo", "x", 1, &again, &len, 3600 * 1000); /* the client is lost by now */
    expect_unreachable_saying_why(c, rc, again, len);
    arpc_free(again);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    cut_proxy_stop(px);
    close(probe);
}

/* A call that ends while the first attempt is still under way (a peer that accepts and never
 * says HELLO) says so, as arpc_client_last_error does: before, it had no words at all, and
 * last_error said ARPC_OK for a client that had never connected. */
static void test_call_during_first_attempt_says_why(void **state)
{
    (void)state;
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t slen = sizeof(sin);
    assert_int_equal(0, bind(lfd, (struct sockaddr *)&sin, sizeof(sin)));
    assert_int_equal(0, listen(lfd, 4)); /* the connect completes in the backlog: no HELLO */
    assert_int_equal(0, getsockname(lfd, (struct sockaddr *)&sin, &slen));
    char addr[64];
    snprintf(addr, sizeof(addr), "tcp://127.0.0.1:%u", (unsigned)ntohs(sin.sin_port));
    arpc_client *c;
    arpc_client_options co = {.connect_in_background = true, .connect_timeout_ms = ARPC_FOREVER};
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &co));
    char why[ARPC_ERRBUF_SIZE];
    assert_int_equal(ARPC_EUNREACHABLE, arpc_client_last_error(c, why, sizeof(why)));
    assert_non_null(strstr(why, "has not finished"));
    void *reply = NULL;
    size_t len = 0;
    int rc = arpc_call(c, "t.echo", "x", 1, &reply, &len, 100);
    expect_unreachable_saying_why(c, rc, reply, len);
    arpc_free(reply);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    close(lfd);
}

/* A pollable loop the application drives: a peer that accepts (in its backlog) but never
 * says HELLO would hold a waiting connect for connect_timeout_ms (an hour here); in the
 * background connect returns at once, and the application's steps make the attempt. */
static void test_pollable_loop_not_blocked(void **state)
{
    (void)state;
    int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(lfd >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "/tmp/arpc-bg-silent-%d.sock", (int)getpid());
    unlink(sa.sun_path);
    assert_int_equal(0, bind(lfd, (struct sockaddr *)&sa, sizeof(sa)));
    assert_int_equal(0, listen(lfd, 4));
    char addr[160];
    snprintf(addr, sizeof(addr), "unix://%s", sa.sun_path);
    arpc_loop *loop;
    arpc_loop_options lo = {.pollable = true};
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, &lo));
    arpc_client *c;
    arpc_client_options co = {.loop = loop, .connect_in_background = true, .connect_timeout_ms = 3600 * 1000};
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &co));
    int timeout_ms = 0;
    assert_int_equal(ARPC_OK, arpc_loop_run_nowait(loop, &timeout_ms)); /* a step: the attempt goes on */
    assert_int_equal(0, arpc_client_connections(c));
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    arpc_loop_destroy(loop);
    close(lfd);
    unlink(sa.sun_path);
}

static atomic_int notes;

static void h_note(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&notes, 1);
    arpc_reply(req, NULL, 0); /* finishes a one-way request */
}

static arpc_client_stats client_stats_of(arpc_client *c)
{
    arpc_client_stats st;
    assert_int_equal(ARPC_OK, arpc_client_stats(c, &st));
    return st;
}

/* A server on addr with t.note (counted in notes) and t.echo. */
static arpc_server *serve_notes(const char *addr)
{
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.note", h_note, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, addr, NULL, 0));
    return s;
}

/* One-way messages sent while the first connection is still being made wait for it, through
 * failed attempts, and reach the server in order before the call made after them. */
static void test_oneways_wait_for_the_first_connection(void **state)
{
    (void)state;
    log_capture_start(ARPC_LOG_DEBUG);
    char addr[128];
    unix_addr(addr, sizeof(addr), "notes");
    atomic_store(&notes, 0);
    arpc_client *c;
    arpc_client_options co = {.connect_in_background = true, .reconnect_max_ms = 20};
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &co));
    for (int i = 0; i < 3; i++)
        assert_int_equal(ARPC_OK, arpc_notify(c, "t.note", "n", 1));
    assert_true(WAIT_UNTIL(client_stats_of(c).oneways == 3)); /* the loop has them */
    log_capture_clear();
    assert_true(WAIT_UNTIL(LOG_LINES_WITH("reconnecting to", addr) > 0)); /* an attempt failed since */
    arpc_server *s = serve_notes(addr);
    assert_int_equal(ARPC_OK, arpc_call(c, "t.echo", "x", 1, NULL, NULL, 20000));
    assert_true(WAIT_UNTIL(atomic_load(&notes) == 3));
    assert_int_equal(0, client_stats_of(c).oneways_dropped);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    arpc_set_logger(NULL, NULL, ARPC_LOG_INFO);
}

/* Messages held for a first connection that never comes are dropped when the client closes,
 * and said; one sent on a client reconnecting after its server went away is dropped (no
 * connection, no message: arpc/client.h), and said in a WARN line, not only counted. */
static void test_oneways_dropped_are_said(void **state)
{
    (void)state;
    log_capture_start(ARPC_LOG_WARN);
    char addr[128];
    unix_addr(addr, sizeof(addr), "dropped");
    arpc_client *c;
    arpc_client_options co = {.connect_in_background = true, .reconnect_max_ms = 20};
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &co));
    assert_int_equal(ARPC_OK, arpc_notify(c, "t.note", "n", 1));
    assert_true(WAIT_UNTIL(client_stats_of(c).oneways == 1));
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_int_equal(1, LOG_LINES_WITH("1 one-way message dropped unsent", "the client closed"));

    log_capture_clear();
    arpc_server *s = serve_notes(addr);
    co.connect_in_background = false;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &co));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    assert_true(WAIT_UNTIL(arpc_client_last_error(c, NULL, 0) != ARPC_OK)); /* it knows */
    assert_int_equal(ARPC_OK, arpc_notify(c, "t.note", "n", 1));
    assert_true(WAIT_UNTIL(client_stats_of(c).oneways_dropped == 1));
    assert_int_equal(1, LOG_LINES_WITH("one-way message dropped unsent: no connection", addr));
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    arpc_set_logger(NULL, NULL, ARPC_LOG_INFO);
}

/* What waits is bounded: 64 MiB of messages (and 1024 of them); one more is dropped, and said. */
static void test_oneways_held_are_bounded(void **state)
{
    (void)state;
    log_capture_start(ARPC_LOG_WARN);
    enum { SIZE = 4 << 20, SENT = 20, HELD = 15 }; /* 16 x (4 MiB + a header) pass 64 MiB */
    char addr[128];
    unix_addr(addr, sizeof(addr), "bounded");
    arpc_client *c;
    arpc_client_options co = {.connect_in_background = true, .reconnect_max_ms = 20};
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &co));
    void *big = calloc(1, SIZE);
    assert_non_null(big);
    for (int i = 0; i < SENT; i++)
        assert_int_equal(ARPC_OK, arpc_notify(c, "t.note", big, SIZE));
    free(big);
    assert_true(WAIT_UNTIL(client_stats_of(c).oneways_dropped == SENT - HELD)); /* (the drops come last) */
    assert_int_equal(1, LOG_LINES_WITH("one-way message dropped unsent: more than the one-way messages held"));
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_int_equal(1, LOG_LINES_WITH("15 one-way messages dropped unsent", "the client closed"));
    arpc_set_logger(NULL, NULL, ARPC_LOG_INFO);
}

/* A message waits for the first connection as a call does: reconnect_give_up_ms at most,
 * then it is dropped and said, and never reaches a server that comes later (where a call
 * made after it was told it never ran). */
static void test_oneways_held_give_up_as_calls_do(void **state)
{
    (void)state;
    log_capture_start(ARPC_LOG_WARN);
    char addr[128];
    unix_addr(addr, sizeof(addr), "giveup");
    atomic_store(&notes, 0);
    arpc_client *c;
    arpc_client_options co = {.connect_in_background = true, .reconnect_max_ms = 20, .reconnect_give_up_ms = 200};
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &co));
    assert_int_equal(ARPC_OK, arpc_notify(c, "t.note", "n", 1));
    assert_int_equal(ARPC_EUNREACHABLE, arpc_call(c, "t.echo", "x", 1, NULL, NULL, ARPC_FOREVER)); /* gave up */
    assert_true(WAIT_UNTIL(client_stats_of(c).oneways_dropped == 1));
    /* Waited for: the loop counts the drop first, then says it (an ASan run under load read
     * the log between the two). */
    assert_true(WAIT_UNTIL(LOG_LINES_WITH("1 one-way message dropped unsent: no connection within reconnect_give_up_ms") == 1));
    arpc_server *s = serve_notes(addr);
    assert_int_equal(ARPC_OK, arpc_call(c, "t.echo", "x", 1, NULL, NULL, 20000));
    assert_int_equal(ARPC_OK, arpc_client_close(c)); /* after a round trip on the connection */
    assert_int_equal(0, atomic_load(&notes));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    arpc_set_logger(NULL, NULL, ARPC_LOG_INFO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_that_comes_later),
        cmocka_unit_test(test_server_never_there),
        cmocka_unit_test(test_no_reconnect_ends_the_client),
        cmocka_unit_test(test_no_reconnect_calls_say_why),
        cmocka_unit_test(test_call_during_first_attempt_says_why),
        cmocka_unit_test(test_pollable_loop_not_blocked),
        cmocka_unit_test(test_oneways_wait_for_the_first_connection),
        cmocka_unit_test(test_oneways_dropped_are_said),
        cmocka_unit_test(test_oneways_held_are_bounded),
        cmocka_unit_test(test_oneways_held_give_up_as_calls_do),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
