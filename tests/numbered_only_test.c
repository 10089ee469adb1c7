/*
 * A method registered numbered_only (arpc_method_options) takes at-most-once calls only: an
 * unnumbered call (seq 0, or a client without an id) is refused ARPC_EREJECTED and does not
 * run, a one-way message to it is dropped, a numbered call runs. Frames go by hand
 * (support/raw_client.h) so the test chooses the numbering; the library's client is tried
 * with each semantics too.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <string.h>

#include "arpc/arpc.h"
#include "support/raw_client.h"
#include "support/test_util.h"

static atomic_int runs;

static void h_count(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&runs, 1);
    arpc_reply(req, "ran", 3);
}

static arpc_server *make_server(char *addr, size_t addrlen)
{
    atomic_store(&runs, 0);
    arpc_server *s;
    arpc_server_options so = {.workers = 1};
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    arpc_method_options mo = {.numbered_only = true};
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.once", h_count, NULL, &mo));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, addrlen));
    return s;
}

static void expect(struct raw_client *r, uint64_t xid, uint8_t kind, int code)
{
    struct raw_frame f;
    assert_true(raw_read(r, &f, false));
    assert_int_equal(xid, f.f.f_xid);
    assert_int_equal(kind, f.f.f_kind);
    if (kind == ARPC_FRAME_ERROR) {
        assert_int_equal(code, f.f.f_code);
        assert_non_null(memmem(f.body, f.body_len, "t.once takes at-most-once calls only", 36));
    }
}

static void test_wire(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = make_server(addr, sizeof(addr));
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0x5eed));
    assert_true(raw_request(&r, 1, 0, 0, 0, "t.once", "x", 1)); /* not numbered */
    expect(&r, 1, ARPC_FRAME_ERROR, ARPC_EREJECTED);
    assert_true(raw_request(&r, 2, 1, 0, 0, "t.once", "x", 1)); /* numbered */
    expect(&r, 2, ARPC_FRAME_REPLY, 0);
    raw_close(&r);
    /* A client without an id numbers nothing. */
    assert_true(raw_connect(&r, addr, 0));
    assert_true(raw_request(&r, 1, 7, 0, 0, "t.once", "x", 1));
    expect(&r, 1, ARPC_FRAME_ERROR, ARPC_EREJECTED);
    raw_close(&r);
    assert_int_equal(1, atomic_load(&runs));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

static void test_client_semantics(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = make_server(addr, sizeof(addr));
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, NULL));
    const enum arpc_call_semantics sem[] = {ARPC_AT_MOST_ONCE, ARPC_AT_LEAST_ONCE, ARPC_NO_RETRY};
    const int want[] = {ARPC_OK, ARPC_EREJECTED, ARPC_EREJECTED};
    for (size_t i = 0; i < 3; i++) {
        arpc_call_options o = {.semantics = sem[i]};
        void *reply = NULL;
        size_t len = 0;
        assert_int_equal(want[i], arpc_call_opts(c, "t.once", "x", 1, &reply, &len, &o));
        arpc_free(reply);
    }
    /* A one-way message is dropped: the echo behind it is answered, and nothing ran. */
    assert_int_equal(ARPC_OK, arpc_notify(c, "t.once", "x", 1));
    void *reply = NULL;
    size_t len = 0;
    assert_int_equal(ARPC_OK, arpc_call(c, "t.echo", "e", 1, &reply, &len, 0));
    arpc_free(reply);
    assert_int_equal(1, atomic_load(&runs));
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wire),
        cmocka_unit_test(test_client_semantics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
