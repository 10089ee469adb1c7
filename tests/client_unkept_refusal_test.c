/*
 * A numbered (at-most-once) call's refusal covers its earlier sends only if the server kept it:
 * a refusal marked ARPC_ERROR_UNKEPT (core/frame.h: the server's reply cache was full, it had
 * no memory for the call) speaks for the send it answers, and an earlier send, on a connection
 * since lost, that reaches the server later may still run the call. Against a scripted
 * deduplicating server: two numbered calls are read on the first connection, which is then
 * closed unanswered; on the next, their re-sends are refused ARPC_EOVERLOADED, one kept (no
 * flag), one not. The first call's caller hears ARPC_EOVERLOADED (did not run); the second's
 * ARPC_ECONNLOST with the server's words ("may have run"): before, it heard "did not run",
 * and a caller that made the call again could have it run twice. A call sent once and refused
 * unkept did not run (its only send was refused): ARPC_EOVERLOADED.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
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

enum { KEPT, UNKEPT, CALLS };

struct script {
    uint64_t sc_xid[CALLS]; /* the re-sends' xids, by letter ('K' kept, 'U' unkept) */
};

static bool refuse(struct raw_client *r, uint64_t xid, uint16_t flags)
{
    static const char why[] = "the server's reply cache is full: call not run";
    uint8_t frame[ARPC_FRAME_HEADER_SIZE + ARPC_ERROR_FIXED_SIZE + sizeof(why)];
    size_t n = arpc_frame_encode_error(frame, ARPC_FRAME_ERROR, xid, ARPC_EOVERLOADED, flags, why, sizeof(why) - 1);
    return raw_send(r, frame, n);
}

/* Reads connection conn's two numbered requests ('K' and 'U', in either order). */
static bool read_two(struct raw_client *r, void *arg, int conn)
{
    struct script *s = arg;
    for (int i = 0; i < CALLS; i++) {
        struct raw_frame f;
        if (!raw_read(r, &f, false) || f.f.f_kind != ARPC_FRAME_REQUEST || f.f.f_seq == 0 || f.f.f_payload_len != 1)
            return false;
        char c = (char)f.f.f_payload[0];
        if (c != 'K' && c != 'U')
            return false;
        if (conn == 1)
            s->sc_xid[c == 'K' ? KEPT : UNKEPT] = f.f.f_xid;
    }
    return true;
}

static bool script_run(struct raw_server *srv, void *arg)
{
    struct script *s = arg;
    struct raw_client *r = malloc(sizeof(*r));
    if (r == NULL)
        return false;
    struct raw_frame f;
    bool ok = raw_server_read_twice(srv, r, read_two, s) && refuse(r, s->sc_xid[KEPT], 0) &&
              refuse(r, s->sc_xid[UNKEPT], ARPC_ERROR_UNKEPT) &&
              /* a call sent once, after those were answered */
              raw_read(r, &f, false) && f.f.f_kind == ARPC_FRAME_REQUEST && f.f.f_seq != 0 &&
              refuse(r, f.f.f_xid, ARPC_ERROR_UNKEPT);
    if (ok)
        raw_server_read_to_end(r);
    raw_close(r);
    free(r);
    return ok;
}

static void test_unkept_refusal_of_a_resend_may_have_run(void **state)
{
    (void)state;
    struct script s = {0};
    struct raw_server srv;
    raw_server_start(&srv, script_run, &s);
    arpc_client_options o = {.reconnect_min_ms = 10, .reconnect_max_ms = 20}; /* at-most-once */
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, srv.rs_addr, &o));
    arpc_future *kept = arpc_call_async(c, "t.m", "K", 1, ARPC_FOREVER);
    arpc_future *unkept = arpc_call_async(c, "t.m", "U", 1, ARPC_FOREVER);
    assert_int_equal(ARPC_EOVERLOADED, arpc_future_wait_for(kept, TEST_WAIT_MS));
    assert_int_equal(ARPC_ECONNLOST, arpc_future_wait_for(unkept, TEST_WAIT_MS));
    const char *why = arpc_future_data(unkept, NULL);
    assert_non_null(why);
    if (strstr(why, "ARPC_EOVERLOADED") == NULL || strstr(why, "cache is full") == NULL ||
        strstr(why, "may have run") == NULL)
        fail_msg("the outcome does not say why: \"%s\"", why);
    arpc_future_release(kept);
    arpc_future_release(unkept);
    arpc_future *once = arpc_call_async(c, "t.m", "O", 1, ARPC_FOREVER);
    assert_int_equal(ARPC_EOVERLOADED, arpc_future_wait_for(once, TEST_WAIT_MS));
    arpc_future_release(once);
    arpc_client_close(c);
    assert_true(raw_server_join(&srv));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unkept_refusal_of_a_resend_may_have_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
