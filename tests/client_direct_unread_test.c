/*
 * A call its caller wrote (core/client_direct.c) on a connection whose server then said it
 * read none of the calls it left unanswered (GOAWAY with ARPC_GOAWAY_LAST) did not run, as
 * any call pending there: the client sends it again, or ends it ARPC_EUNREACHABLE. Such a
 * call without a deadline reaches the client's loop only when something needs it, here the
 * connection's loss, and that late arrival counted it as reached, whatever the server said:
 * "may have run" (ARPC_ECONNLOST once the client gave up reconnecting; at once with
 * no_reconnect, where the call is ended as it arrives). stop_unread_call_test met it by chance
 * (a call with a deadline that reached the loop late on a loaded machine).
 *
 * A scripted server says HELLO, reads the call whole, closes its listener (no reconnect
 * succeeds), sends the last GOAWAY and closes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>

#include "arpc/client.h"
#include "arpc/error.h"
#include "arpc/future.h"
#include "base/stat.h"
#include "core/client_internal.h"
#include "core/frame.h"
#include "support/raw_client.h"
#include "support/raw_server.h"
#include "support/test_util.h"

static bool read_call_then_last_goaway(struct raw_server *s, void *arg)
{
    (void)arg;
    struct raw_client *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return false;
    struct raw_frame f;
    bool ok = raw_server_accept_call(s, r, &f);
    close(s->rs_listen); /* the client's reconnects are refused */
    s->rs_listen = -1;
    static const char msg[] = "server stopped: a call not answered was not read";
    uint8_t goaway[ARPC_FRAME_HEADER_SIZE + 64];
    size_t n = arpc_frame_encode_error(goaway, ARPC_FRAME_GOAWAY, 0, ARPC_ESHUTDOWN, ARPC_GOAWAY_LAST, msg, sizeof(msg) - 1);
    ok = ok && raw_send(r, goaway, n);
    raw_close(r);
    free(r);
    return ok;
}

/* One round: true if the call took the path under test: written by its caller, and taken up
 * by the loop only at the loss (a caller's call counts its bytes when the loop takes it up
 * with its connection open; the reconnects after are refused and send nothing). */
static bool unread_call_round(const arpc_client_options *co)
{
    struct raw_server s;
    raw_server_start(&s, read_call_then_last_goaway, NULL);
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, s.rs_addr, co));
    (void)loop_idle_within(c->cl_loop, TEST_WAIT_MS); /* asleep: its caller writes the call */
    uint64_t before = CLIENT_STAT(c, bytes_out);
    arpc_future *f = arpc_call_async(c, "t.m", "A", 1, ARPC_FOREVER);
    assert_non_null(f);
    int rc = arpc_future_wait_for(f, TEST_WAIT_MS);
    if (rc != ARPC_EUNREACHABLE)
        print_message("unread call: %s\n", arpc_errname(rc));
    assert_int_equal(ARPC_EUNREACHABLE, rc);
    bool at_loss = arpc_stat_get(&c->cl_direct.cd_written) != 0 && CLIENT_STAT(c, bytes_out) == before;
    arpc_future_release(f);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_true(raw_server_join(&s));
    return at_loss;
}

static void rounds_until_at_loss(const arpc_client_options *co)
{
    bool at_loss = false;
    for (int i = 0; i < 20 && !at_loss; i++)
        at_loss = unread_call_round(co);
    assert_true(at_loss);
}

/* The client reconnects: the call waits to be sent again, and ends when the client gives up
 * (a sent call would end ARPC_ECONNLOST then). */
static void test_written_call_unread_did_not_run(void **state)
{
    (void)state;
    arpc_client_options co = {.reconnect_give_up_ms = 200};
    rounds_until_at_loss(&co);
}

/* The client is down for good with the loss: the call ends as it arrives. It ended
 * ARPC_ECONNLOST there even once the pending calls were settled by the last word. */
static void test_written_call_unread_no_reconnect(void **state)
{
    (void)state;
    arpc_client_options co = {.no_reconnect = true};
    rounds_until_at_loss(&co);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_written_call_unread_did_not_run),
        cmocka_unit_test(test_written_call_unread_no_reconnect),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
