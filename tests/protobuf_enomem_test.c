/*
 * A typed (protobuf-c) server out of memory around its method says whether the method ran.
 * Before the method (no memory to unpack the request): ARPC_EREJECTED, "did not run", as the
 * server refuses any call it has no memory to take. After it (no memory to pack the reply,
 * the method's effects done): ARPC_EABANDONED, "may have run". Both were ARPC_EHANDLER, "the
 * method failed", which says neither (helper 241).
 *
 * One allocation is aimed at by its size (unique in the test: support/test_alloc.c's sized
 * allocator fails the next allocation of that many bytes).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <string.h>

#include "arpc/arpc.h"
#include "arpc/protobuf.h"
#include "kv.pb-c.h"
#include "support/test_util.h"

#define WAIT_MS 30000
#define VALUE_LEN 700 /* a Get's reply: packed in a block of its own (over 512 bytes) */
#define KEY_LEN 333   /* a Put's key: unpacked into a block of KEY_LEN + 1 */

static atomic_int put_runs, get_runs;
static uint8_t value[VALUE_LEN];

static void kv_put(Kv__KV_Service *svc, const Kv__PutRequest *in, Kv__PutReply_Closure closure, void *data)
{
    (void)svc;
    (void)in;
    atomic_fetch_add(&put_runs, 1);
    Kv__PutReply out = KV__PUT_REPLY__INIT;
    closure(&out, data);
}

static void kv_get(Kv__KV_Service *svc, const Kv__GetRequest *in, Kv__GetReply_Closure closure, void *data)
{
    (void)svc;
    (void)in;
    atomic_fetch_add(&get_runs, 1);
    Kv__GetReply out = KV__GET_REPLY__INIT;
    out.found = true;
    out.value.data = value;
    out.value.len = sizeof(value);
    closure(&out, data);
}

static Kv__KV_Service kv_service = KV__KV__INIT(kv_);

/* Calls method index i with input; returns the outcome, *text the server's words (or NULL). */
static int call(arpc_client *c, unsigned i, const ProtobufCMessage *input, char *text, size_t textlen)
{
    arpc_future *f = arpc_protobuf_call_async(c, &kv__kv__descriptor, i, input, WAIT_MS);
    assert_non_null(f);
    ProtobufCMessage *msg = NULL;
    int rc = arpc_protobuf_unpack_reply(f, kv__kv__descriptor.methods[i].output, &msg);
    text[0] = '\0';
    size_t len = 0;
    const void *data = arpc_future_data(f, &len);
    if (rc != ARPC_OK && data != NULL) {
        size_t n = len < textlen - 1 ? len : textlen - 1;
        memcpy(text, data, n);
        text[n] = '\0';
    }
    arpc_protobuf_free(msg);
    arpc_future_release(f);
    return rc;
}

static void test_typed_server_out_of_memory(void **state)
{
    (void)state;
    arpc_server *s;
    arpc_client *c;
    assert_int_equal(arpc_server_create(&s, NULL), ARPC_OK);
    assert_int_equal(arpc_server_register_protobuf(s, &kv_service.base, NULL), ARPC_OK);
    assert_int_equal(arpc_server_listen(s, "inproc://pb-enomem", NULL, 0), ARPC_OK);
    assert_int_equal(arpc_client_connect(&c, "inproc://pb-enomem", NULL), ARPC_OK);
    char text[256];

    /* No memory for the request's key: the method does not run. */
    char key[KEY_LEN + 1];
    memset(key, 'k', KEY_LEN);
    key[KEY_LEN] = '\0';
    Kv__PutRequest put = KV__PUT_REQUEST__INIT;
    put.key = key;
    test_alloc_fail_next(KEY_LEN + 1, KEY_LEN + 2);
    assert_int_equal(ARPC_EREJECTED, call(c, 0, &put.base, text, sizeof(text)));
    assert_int_equal(1, test_alloc_sized_failed());
    assert_int_equal(0, atomic_load(&put_runs));
    assert_non_null(strstr(text, "kv.KV.Put: server out of memory unpacking the request; the method did not run"));
    assert_int_equal(ARPC_OK, call(c, 0, &put.base, text, sizeof(text))); /* and then it does */
    assert_int_equal(1, atomic_load(&put_runs));

    /* No memory to pack the reply: the method ran. */
    Kv__GetRequest get = KV__GET_REQUEST__INIT;
    get.key = "k";
    Kv__GetReply reply = KV__GET_REPLY__INIT;
    reply.found = true;
    reply.value.data = value;
    reply.value.len = sizeof(value);
    size_t packed = protobuf_c_message_get_packed_size(&reply.base);
    test_alloc_fail_next(packed, packed + 1);
    assert_int_equal(ARPC_EABANDONED, call(c, 1, &get.base, text, sizeof(text)));
    assert_int_equal(2, test_alloc_sized_failed());
    assert_int_equal(1, atomic_load(&get_runs));
    assert_non_null(strstr(text, "kv.KV.Get: the server had no memory to pack the reply; the method ran"));
    assert_int_equal(ARPC_OK, call(c, 1, &get.base, text, sizeof(text)));
    assert_int_equal(2, atomic_load(&get_runs));

    assert_int_equal(arpc_client_close(c), ARPC_OK);
    assert_int_equal(arpc_server_destroy(s), ARPC_OK);
}

int main(void)
{
    test_alloc_sized_install();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_typed_server_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
