/*
 * A reply's xid is the server's to write: one no call of the client's has (both top bits set,
 * ARPC_XID_CALLER_BIT and ARPC_XID_SEQ_BIT) is dropped as no call's, and the call's own reply
 * still ends it. A scripted server says HELLO, reads the call, sends a REPLY under xid
 * 0xC000000000000001 (with the call's low bits), then the real reply. Before, the pending
 * table picked its ring by the top two bits and read past its three rings (ASan/UBSan: a
 * misaligned read of code bytes as a call); client_stream_fuzz found it first.
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

/* Says HELLO, reads the call, sends the stray reply, then the call's own. */
static bool stray_then_reply(struct raw_server *s, void *arg)
{
    (void)arg;
    struct raw_client *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return false;
    struct raw_frame f;
    bool ok = raw_server_accept_call(s, r, &f);
    uint64_t xid = f.f.f_xid;
    ok = ok && raw_server_reply_byte(r, 0xC000000000000001ull | (xid & 0xffff), 'x'); /* the stray one: both top bits */
    ok = ok && raw_server_reply_byte(r, xid, 'r');
    if (ok)
        raw_server_read_to_end(r);
    raw_close(r);
    free(r);
    return ok;
}

static void test_reply_with_both_top_bits(void **state)
{
    (void)state;
    struct raw_server s;
    raw_server_start(&s, stray_then_reply, NULL);
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, s.rs_addr, NULL));
    arpc_future *f = arpc_call_async(c, "t.m", "A", 1, ARPC_FOREVER);
    assert_int_equal(ARPC_OK, arpc_future_wait_for(f, TEST_WAIT_MS));
    size_t len = 0;
    const char *got = arpc_future_data(f, &len);
    assert_int_equal(1, len);
    assert_int_equal('r', got[0]); /* the call's own reply, not the stray one */
    arpc_future_release(f);
    arpc_client_close(c);
    assert_true(raw_server_join(&s));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reply_with_both_top_bits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
