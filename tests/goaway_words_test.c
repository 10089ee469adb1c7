/*
 * What a client says of a server's GOAWAY that is not a stop: before the server's HELLO the
 * server refused the connection; after it, the server ended a connection in use (calls had
 * been sent on it). A new user was told "refused the connection" of a connection that had
 * been set up and had carried a call.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "arpc/client.h"
#include "arpc/error.h"
#include "arpc/future.h"
#include "core/frame.h"
#include "support/raw_client.h"
#include "support/raw_server.h"
#include "support/test_util.h"

/* A GOAWAY saying ARPC_EPROTO "bad frame" into buf; its length. */
static size_t goaway_bad_frame(uint8_t *buf)
{
    static const char msg[] = "bad frame";
    return arpc_frame_encode_error(buf, ARPC_FRAME_GOAWAY, 0, ARPC_EPROTO, 0, msg, (uint16_t)strlen(msg));
}

/* Says HELLO, reads the call, then sends the GOAWAY instead of a reply and closes, as an arpc
 * server does. */
static bool goaway_after_call(struct raw_server *s, void *arg)
{
    (void)arg;
    struct raw_client *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return false;
    struct raw_frame f;
    uint8_t bye[ARPC_FRAME_HEADER_SIZE + 64];
    bool ok = raw_server_accept_call(s, r, &f) && raw_send(r, bye, goaway_bad_frame(bye));
    raw_close(r);
    free(r);
    return ok;
}

static void test_goaway_after_hello_ended_the_connection(void **state)
{
    (void)state;
    struct raw_server s;
    raw_server_start(&s, goaway_after_call, NULL);
    arpc_client *c = NULL;
    arpc_client_options o = {.no_reconnect = true};
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, s.rs_addr, &o));
    arpc_future *f = arpc_call_async(c, "t.m", "A", 1, ARPC_FOREVER);
    assert_int_not_equal(ARPC_OK, arpc_future_wait_for(f, TEST_WAIT_MS)); /* the connection went */
    arpc_future_release(f);
    /* The connection's loss says the GOAWAY's words, not "closed by the server, or the
     * network failed". */
    char why[ARPC_ERRBUF_SIZE];
    assert_int_equal(ARPC_ECONNLOST, arpc_client_last_error(c, why, sizeof(why)));
    char want[ARPC_ERRBUF_SIZE];
    snprintf(want, sizeof(want), "connection to %s lost: server %s ended the connection: bad frame", s.rs_addr,
             s.rs_addr);
    assert_string_equal(want, why);
    arpc_client_close(c);
    assert_true(raw_server_join(&s));
}

/* Reads the client's HELLO and answers with the GOAWAY, then waits for the client to close
 * (true if it did): a refused client must not wait for the server to. */
static bool goaway_for_hello(struct raw_server *s, void *arg)
{
    (void)arg;
    struct raw_client *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return false;
    uint8_t bye[ARPC_FRAME_HEADER_SIZE + 64];
    int pings = 0;
    bool ok = raw_server_accept(s, r, bye, goaway_bad_frame(bye)) && raw_wait_eof(r, &pings);
    raw_close(r);
    free(r);
    return ok;
}

static void test_goaway_before_hello_refused_the_connection(void **state)
{
    (void)state;
    struct raw_server s;
    raw_server_start(&s, goaway_for_hello, NULL);
    arpc_client *c = NULL;
    char why[ARPC_ERRBUF_SIZE] = "";
    arpc_client_options o = {.no_reconnect = true, .errbuf = why, .errbuf_len = sizeof(why)};
    /* (Before, the connect timeout, 5 s, ended it: ARPC_ETIMEDOUT.) */
    assert_int_equal(ARPC_EPROTO, arpc_client_connect(&c, s.rs_addr, &o));
    assert_null(c);
    char want[ARPC_ERRBUF_SIZE];
    snprintf(want, sizeof(want), "server %s refused the connection: bad frame", s.rs_addr);
    assert_string_equal(want, why);
    assert_true(raw_server_join(&s));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_goaway_after_hello_ended_the_connection),
        cmocka_unit_test(test_goaway_before_hello_refused_the_connection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
