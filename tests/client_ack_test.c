/*
 * The ack an at-most-once client sends is the highest seq below which every call of its has
 * finished: it is what lets the server drop the replies it keeps for retries. Calls that
 * finish out of order count once the gap below them closes. A scripted server reads two
 * calls, answers the later seq first, then the earlier; the client's next call must carry the
 * later seq as its ack. (A client whose ack stopped at the gap is not seen by its callers:
 * the server only keeps every later reply of it, until its cache is full.)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "arpc/client.h"
#include "arpc/error.h"
#include "arpc/future.h"
#include "core/frame.h"
#include "support/raw_client.h"
#include "support/raw_server.h"
#include "support/test_util.h"

struct seen {
    uint64_t lo, hi;       /* the two calls' seqs */
    uint64_t first_acks;   /* their acks, or'ed: nothing had finished */
    uint64_t third_seq, third_ack;
};

/* Reads two calls, answers the later seq first, then reads the third call and answers it. */
static bool answer_out_of_order(struct raw_server *s, void *arg)
{
    struct seen *seen = arg;
    struct raw_client *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return false;
    struct raw_frame f = {0};
    bool ok = raw_server_accept_call(s, r, &f);
    uint64_t xa = f.f.f_xid, sa = f.f.f_seq, acks = f.f.f_ack;
    ok = ok && raw_read(r, &f, false) && f.f.f_kind == ARPC_FRAME_REQUEST;
    uint64_t xb = f.f.f_xid, sb = f.f.f_seq;
    acks |= f.f.f_ack;
    if (!ok || sa == 0 || sb == 0 || sa == sb)
        ok = false;
    seen->lo = sa < sb ? sa : sb;
    seen->hi = sa < sb ? sb : sa;
    seen->first_acks = acks;
    ok = ok && raw_server_reply_byte(r, sa < sb ? xb : xa, 'h'); /* the later seq first */
    ok = ok && raw_server_reply_byte(r, sa < sb ? xa : xb, 'l');
    ok = ok && raw_read(r, &f, false) && f.f.f_kind == ARPC_FRAME_REQUEST;
    if (ok) {
        seen->third_seq = f.f.f_seq;
        seen->third_ack = f.f.f_ack;
        ok = raw_server_reply_byte(r, f.f.f_xid, 't');
    }
    if (ok)
        raw_server_read_to_end(r);
    raw_close(r);
    free(r);
    return ok;
}

static void test_ack_closes_the_gap(void **state)
{
    (void)state;
    struct seen seen = {0};
    struct raw_server s;
    raw_server_start(&s, answer_out_of_order, &seen);
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, s.rs_addr, NULL));
    arpc_future *a = arpc_call_async(c, "t.m", "A", 1, ARPC_FOREVER);
    arpc_future *b = arpc_call_async(c, "t.m", "B", 1, ARPC_FOREVER);
    assert_non_null(a);
    assert_non_null(b);
    /* Both ended (their seqs counted finished) before the third call is stamped. */
    assert_int_equal(ARPC_OK, arpc_future_wait_for(a, TEST_WAIT_MS));
    assert_int_equal(ARPC_OK, arpc_future_wait_for(b, TEST_WAIT_MS));
    arpc_future *t = arpc_call_async(c, "t.m", "C", 1, ARPC_FOREVER);
    assert_non_null(t);
    assert_int_equal(ARPC_OK, arpc_future_wait_for(t, TEST_WAIT_MS));
    arpc_future_release(a);
    arpc_future_release(b);
    arpc_future_release(t);
    arpc_client_close(c);
    assert_true(raw_server_join(&s));
    assert_int_equal(0, seen.first_acks);
    assert_int_equal(seen.lo + 1, seen.hi);
    assert_int_equal(seen.hi + 1, seen.third_seq);
    assert_int_equal(seen.hi, seen.third_ack); /* not seen.lo: the answer above the gap counts */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ack_closes_the_gap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
