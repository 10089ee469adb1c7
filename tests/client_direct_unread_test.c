/*
 * A call its caller wrote (core/client_direct.c) on a connection whose server then said it
 * read none of the calls it left unanswered (GOAWAY with ARPC_GOAWAY_LAST) did not run, as
 * any call pending there: the client sends it again, or ends it ARPC_EUNREACHABLE. Such a
 * call without a deadline reaches the client's loop only when something needs it, here the
 * connection's loss, and that late arrival counted it as reached, whatever the server said:
 * "may have run" (ARPC_ECONNLOST once the client gave up reconnecting). stop_unread_call_test
 * met it by chance (a call with a deadline that reached the loop late on a loaded machine).
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
    bool ok = raw_server_accept_dedup(s, r) && raw_read(r, &f, false) && f.f.f_kind == ARPC_FRAME_REQUEST;
    close(s->rs_listen); /* the client's reconnects are refused */
    s->rs_listen = -1;
    static const char msg[] = "server stopped: a call not answered was not read";
    uint8_t goaway[ARPC_FRAME_HEADER_SIZE + 64];
    size_t n = arpc_frame_encode_goaway(goaway, ARPC_ESHUTDOWN, ARPC_GOAWAY_LAST, msg, sizeof(msg) - 1);
    ok = ok && raw_send(r, goaway, n);
    if (r->rc_fd >= 0)
        close(r->rc_fd);
    free(r);
    return ok;
}

/* One round: true if the call was written by its caller (the path under test). */
static bool unread_call_round(void)
{
    struct raw_server s;
    raw_server_start(&s, read_call_then_last_goaway, NULL);
    arpc_client_options co = {.reconnect_give_up_ms = 200};
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, s.rs_addr, &co));
    (void)loop_idle_within(c->cl_loop, TEST_WAIT_MS); /* asleep: its caller writes the call */
    arpc_future *f = arpc_call_async(c, "t.m", "A", 1, ARPC_FOREVER);
    assert_non_null(f);
    int rc = arpc_future_wait_for(f, TEST_WAIT_MS);
    if (rc != ARPC_EUNREACHABLE)
        print_message("unread call: %s\n", arpc_errname(rc));
    assert_int_equal(ARPC_EUNREACHABLE, rc);
    bool by_caller = arpc_stat_get(&c->cl_direct.cd_written) != 0;
    arpc_future_release(f);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_true(raw_server_join(&s));
    return by_caller;
}

static void test_written_call_unread_did_not_run(void **state)
{
    (void)state;
    bool by_caller = false;
    for (int i = 0; i < 20 && !by_caller; i++)
        by_caller = unread_call_round();
    assert_true(by_caller);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_written_call_unread_did_not_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
