/*
 * What a client does with a server's frames that no arpc server sends, each found by trying
 * the client against a scripted server as an attacker would:
 *  - an ERROR whose code is ARPC_EPENDING (a future's "not complete yet", never an outcome):
 *    the call ends ARPC_EPROTO, as for code 0 or one past the enum. It ended ARPC_EINVAL
 *    ("argument refused, not sent"), because the future refuses EPENDING as a result;
 *  - a HELLO announcing a frame limit under ARPC_MAX_FRAME_MIN: the server is refused at
 *    connect (ARPC_EPROTO, its words saying why). The client used to take it, and every call
 *    then failed ETOOLARGE "over the server's frame limit (1 bytes)", its goodbye too.
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

/* Answers the client's calls in turn with ERROR frames of the codes in arg (an array ending
 * with ARPC_OK), then reads to the end. */
static bool answer_codes(struct raw_server *s, void *arg)
{
    const uint32_t *codes = arg;
    struct raw_client *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return false;
    struct raw_frame f;
    bool ok = raw_server_accept_call(s, r, &f);
    for (unsigned i = 0; ok && codes[i] != ARPC_OK; i++) {
        if (i > 0) {
            do
                ok = raw_read(r, &f, false);
            while (ok && f.f.f_kind != ARPC_FRAME_REQUEST);
        }
        uint8_t err[ARPC_FRAME_HEADER_SIZE + ARPC_ERROR_FIXED_SIZE + 8];
        ok = ok && raw_send(r, err, arpc_frame_encode_error(err, ARPC_FRAME_ERROR, f.f.f_xid, codes[i], 0, "odd", 3));
    }
    if (ok)
        raw_server_read_to_end(r);
    raw_close(r);
    free(r);
    return ok;
}

static void test_error_codes_no_server_sends(void **state)
{
    (void)state;
    static uint32_t codes[] = {ARPC_EPENDING, 0xffffffffu, ARPC_EEXPIRED, ARPC_OK};
    static const int want[] = {ARPC_EPROTO, ARPC_EPROTO, ARPC_EEXPIRED}; /* the last: passed through */
    struct raw_server s;
    raw_server_start(&s, answer_codes, codes);
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, s.rs_addr, NULL));
    for (unsigned i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        arpc_future *f = arpc_call_async(c, "t.m", "A", 1, ARPC_FOREVER);
        assert_non_null(f);
        assert_int_equal(want[i], arpc_future_wait_for(f, TEST_WAIT_MS));
        arpc_future_release(f);
    }
    arpc_client_close(c);
    assert_true(raw_server_join(&s));
}

/* Says a HELLO announcing a 1-byte frame limit, then waits for the client to leave. */
static bool tiny_hello(struct raw_server *s, void *arg)
{
    (void)arg;
    struct raw_client *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return false;
    uint8_t hello[ARPC_FRAME_HEADER_SIZE + ARPC_HELLO_BODY_SIZE_EXT];
    int pings = 0;
    bool ok = raw_server_accept(s, r, hello, arpc_frame_encode_hello(hello, 42, ARPC_HELLO_CANCEL | ARPC_HELLO_DEDUP, 1, 600)) &&
              raw_wait_eof(r, &pings);
    raw_close(r);
    free(r);
    return ok;
}

static void test_hello_with_a_tiny_frame_limit(void **state)
{
    (void)state;
    struct raw_server s;
    raw_server_start(&s, tiny_hello, NULL);
    arpc_client *c = NULL;
    char why[ARPC_ERRBUF_SIZE] = "";
    arpc_client_options o = {.no_reconnect = true, .errbuf = why, .errbuf_len = sizeof(why)};
    assert_int_equal(ARPC_EPROTO, arpc_client_connect(&c, s.rs_addr, &o));
    assert_null(c);
    if (strstr(why, "a frame limit of 1 bytes") == NULL)
        fail_msg("the refusal does not say why: \"%s\"", why);
    assert_true(raw_server_join(&s));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_codes_no_server_sends),
        cmocka_unit_test(test_hello_with_a_tiny_frame_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
