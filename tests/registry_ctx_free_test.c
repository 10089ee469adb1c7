/*
 * Registration contexts with a destructor (arpc_method_options.ctx_free): run exactly once per
 * registration when the server is freed, whether it listened or not; not run for a
 * registration that failed (the ctx is still the caller's); and at destroy even when a handler
 * still holds a request: the stop answered it and let go of the server (its late reply finds
 * the request's tombstone, core/request_tomb.c, which refers to no method).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>

#include "arpc/arpc.h"
#include "support/test_util.h"

struct counted_ctx {
    atomic_int freed; /* times ctx_free ran on this ctx */
};

static void counted_free(void *ctx) { atomic_fetch_add(&((struct counted_ctx *)ctx)->freed, 1); }

static arpc_request *held_req;

static void hold(arpc_request *req, void *ctx)
{
    (void)ctx;
    held_req = req;
    latch_add();
}

static const arpc_method_options counted = {.ctx_free = counted_free};

static void test_freed_once_without_listening(void **state)
{
    (void)state;
    struct counted_ctx a = {0}, b = {0};
    arpc_server *s;
    assert_int_equal(arpc_server_create(&s, NULL), ARPC_OK);
    assert_int_equal(arpc_server_register(s, "T.A", test_echo, &a, &counted), ARPC_OK);
    assert_int_equal(arpc_server_register(s, "T.B", test_echo, &b, &counted), ARPC_OK);
    assert_int_equal(atomic_load(&a.freed), 0);
    assert_int_equal(arpc_server_destroy(s), ARPC_OK);
    assert_int_equal(atomic_load(&a.freed), 1);
    assert_int_equal(atomic_load(&b.freed), 1);
}

static void test_freed_once_after_serving(void **state)
{
    (void)state;
    struct counted_ctx a = {0};
    arpc_server *s;
    assert_int_equal(arpc_server_create(&s, NULL), ARPC_OK);
    assert_int_equal(arpc_server_register(s, "T.A", test_echo, &a, &counted), ARPC_OK);
    assert_int_equal(arpc_server_listen(s, "inproc://ctx-free-serving", NULL, 0), ARPC_OK);
    arpc_client *c;
    assert_int_equal(arpc_client_connect(&c, "inproc://ctx-free-serving", NULL), ARPC_OK);
    void *reply = NULL;
    size_t len = 0;
    assert_int_equal(arpc_call(c, "T.A", "x", 1, &reply, &len, ARPC_FOREVER), ARPC_OK);
    assert_int_equal(len, 1);
    arpc_free(reply);
    assert_int_equal(arpc_client_close(c), ARPC_OK);
    assert_int_equal(arpc_server_stop(s, ARPC_FOREVER), ARPC_OK);
    assert_int_equal(atomic_load(&a.freed), 0); /* stopped is not freed */
    assert_int_equal(arpc_server_destroy(s), ARPC_OK);
    assert_int_equal(atomic_load(&a.freed), 1);
}

static void test_not_freed_when_registration_fails(void **state)
{
    (void)state;
    struct counted_ctx first = {0}, dup = {0}, builtin = {0};
    arpc_server *s;
    assert_int_equal(arpc_server_create(&s, NULL), ARPC_OK);
    assert_int_equal(arpc_server_register(s, "T.A", test_echo, &first, &counted), ARPC_OK);
    assert_int_equal(arpc_server_register(s, "T.A", test_echo, &dup, &counted), ARPC_EBUSY);
    assert_int_equal(arpc_server_register(s, "arpc.mine", test_echo, &builtin, &counted), ARPC_EINVAL);
    assert_int_equal(arpc_server_destroy(s), ARPC_OK);
    assert_int_equal(atomic_load(&first.freed), 1);
    assert_int_equal(atomic_load(&dup.freed), 0);
    assert_int_equal(atomic_load(&builtin.freed), 0);
}

/* A handler that still holds its request at destroy does not keep the registry alive: the stop
 * answered the call and freed all of it but the handle, so the ctx is freed at destroy, and
 * the late reply touches neither. */
static void test_freed_at_destroy_though_a_handler_holds_its_request(void **state)
{
    (void)state;
    struct counted_ctx a = {0};
    latch_reset();
    arpc_server *s;
    assert_int_equal(arpc_server_create(&s, NULL), ARPC_OK);
    assert_int_equal(arpc_server_register(s, "T.Hold", hold, &a, &counted), ARPC_OK);
    assert_int_equal(arpc_server_listen(s, "inproc://ctx-free-late", NULL, 0), ARPC_OK);
    arpc_client *c;
    assert_int_equal(arpc_client_connect(&c, "inproc://ctx-free-late", NULL), ARPC_OK);
    arpc_future *f = arpc_call_async(c, "T.Hold", "x", 1, ARPC_FOREVER);
    assert_non_null(f);
    assert_true(latch_wait(1, 30000));
    assert_int_equal(arpc_server_stop(s, 0), ARPC_OK);
    assert_int_equal(arpc_future_wait(f), ARPC_EABANDONED);
    arpc_future_release(f);
    assert_int_equal(arpc_server_destroy(s), ARPC_OK);
    assert_int_equal(atomic_load(&a.freed), 1);
    assert_int_equal(arpc_reply(held_req, "late", 4), ARPC_ESHUTDOWN); /* dropped; frees the handle */
    assert_int_equal(atomic_load(&a.freed), 1);
    assert_int_equal(arpc_client_close(c), ARPC_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_freed_once_without_listening),
        cmocka_unit_test(test_freed_once_after_serving),
        cmocka_unit_test(test_not_freed_when_registration_fails),
        cmocka_unit_test(test_freed_at_destroy_though_a_handler_holds_its_request),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
