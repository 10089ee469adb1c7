/*
 * How deep arpc unpacks nested messages (ARPC_PROTOBUF_MAX_DEPTH, core/protobuf_depth.c), with
 * the recursive tests/proto/tree.proto: protobuf-c unpacks by recursion with no limit of its
 * own, so a request of nested Nodes a million deep (4.4 MB, under max_frame) overflowed the
 * handler thread's stack and killed the server. Now: the limit is served, one more level is
 * answered with an error and the method does not run, a million levels likewise, and the
 * server goes on; a reply nested too deep is ARPC_EDECODE at the client. Other fields
 * (bytes, unknown ones) are skipped over, not descended into. And a request that would swell
 * when unpacked (a repeated field of empty messages) is refused the same way.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "arpc/arpc.h"
#include "arpc/protobuf.h"
#include "core/protobuf_internal.h"
#include "support/test_util.h"
#include "tree.pb-c.h"

#define WAIT_MS 30000

static atomic_int depth_runs;

static void tree_depth(Tree__Tree_Service *svc, const Tree__Node *in, Tree__Node_Closure closure, void *data)
{
    (void)svc;
    atomic_fetch_add(&depth_runs, 1);
    Tree__Node out = TREE__NODE__INIT;
    for (const Tree__Node *n = in; n != NULL; n = n->child)
        out.value++;
    closure(&out, data);
}

static void tree_count(Tree__Tree_Service *svc, const Tree__Forest *in, Tree__Node_Closure closure, void *data)
{
    (void)svc;
    atomic_fetch_add(&depth_runs, 1);
    Tree__Node out = TREE__NODE__INIT;
    out.value = (int32_t)in->n_trees;
    closure(&out, data);
}

static void tree_gather(Tree__Tree_Service *svc, const Tree__Holder *in, Tree__Node_Closure closure, void *data)
{
    (void)svc;
    atomic_fetch_add(&depth_runs, 1);
    Tree__Node out = TREE__NODE__INIT;
    out.value = in->bag != NULL ? (int32_t)in->bag->n_xs : -1;
    closure(&out, data);
}

static Tree__Tree_Service tree_service = TREE__TREE__INIT(tree_);

/* depth Nodes, each the child of the one before, packed: built from the innermost out, each
 * level a tag (field 1, length-delimited) and the length of what it holds. *len its size. */
static uint8_t *nested(size_t depth, size_t *len)
{
    size_t cap = depth * 6 + 16;
    uint8_t *buf = malloc(cap), *p = buf + cap;
    assert_non_null(buf);
    for (size_t i = 1; i < depth; i++) {
        size_t inner = (size_t)(buf + cap - p);
        uint8_t v[10];
        size_t n = 0;
        do {
            v[n] = (uint8_t)(inner & 0x7f);
            inner >>= 7;
            v[n] |= inner != 0 ? 0x80 : 0;
            n++;
        } while (inner != 0);
        p -= n;
        memcpy(p, v, n);
        *--p = 0x0a;
    }
    *len = (size_t)(buf + cap - p);
    memmove(buf, p, *len);
    return buf;
}

/* Calls method (it answers a Node) with req and frees req; returns the outcome: *value the
 * Node's value when it is ARPC_OK, else *text the server's words (arpc_free). */
static int call_for_node(arpc_client *c, const char *method, uint8_t *req, size_t len, int *value, char **text)
{
    void *reply = NULL;
    size_t reply_len = 0;
    int rc = arpc_call(c, method, req, len, &reply, &reply_len, WAIT_MS);
    free(req);
    *value = -1;
    *text = NULL;
    if (rc == ARPC_OK) {
        Tree__Node *n = tree__node__unpack(NULL, reply_len, reply);
        assert_non_null(n);
        *value = n->value;
        tree__node__free_unpacked(n, NULL);
        arpc_free(reply);
    } else {
        *text = reply;
    }
    return rc;
}

/* Calls tree.Tree.Depth with depth nested Nodes; returns the outcome, *value the Nodes counted. */
static int call_depth(arpc_client *c, size_t depth, int *value, char **text)
{
    size_t len;
    uint8_t *req = nested(depth, &len);
    return call_for_node(c, "tree.Tree.Depth", req, len, value, text);
}

static void test_depth_limit_served(void **state)
{
    (void)state;
    arpc_server *s;
    arpc_client *c;
    assert_int_equal(arpc_server_create(&s, NULL), ARPC_OK);
    assert_int_equal(arpc_server_register_protobuf(s, &tree_service.base, NULL), ARPC_OK);
    assert_int_equal(arpc_server_listen(s, "inproc://pb-depth", NULL, 0), ARPC_OK);
    assert_int_equal(arpc_client_connect(&c, "inproc://pb-depth", NULL), ARPC_OK);
    int value;
    char *text;
    assert_int_equal(call_depth(c, ARPC_PROTOBUF_MAX_DEPTH, &value, &text), ARPC_OK);
    assert_int_equal(value, ARPC_PROTOBUF_MAX_DEPTH);
    static const size_t too_deep[] = {ARPC_PROTOBUF_MAX_DEPTH + 1, 1000000};
    for (size_t i = 0; i < sizeof(too_deep) / sizeof(too_deep[0]); i++) {
        int runs = atomic_load(&depth_runs);
        assert_int_equal(call_depth(c, too_deep[i], &value, &text), ARPC_EHANDLER);
        assert_non_null(text);
        assert_string_equal(text, "tree.Tree.Depth: the request nests messages more than 100 deep");
        arpc_free(text);
        assert_int_equal(atomic_load(&depth_runs), runs); /* the method did not run */
    }
    assert_int_equal(call_depth(c, 3, &value, &text), ARPC_OK); /* the server goes on */
    assert_int_equal(value, 3);
    assert_int_equal(arpc_client_close(c), ARPC_OK);
    assert_int_equal(arpc_server_destroy(s), ARPC_OK);
}

/* A Forest of n trees, each `unit` (a packed Node) after its tag and length. */
static uint8_t *forest(size_t n, const uint8_t *unit, uint8_t unit_len, size_t *len)
{
    uint8_t *buf = malloc(n * (2u + unit_len)), *w = buf;
    assert_non_null(buf);
    for (size_t i = 0; i < n; i++) {
        *w++ = 0x0a;
        *w++ = unit_len;
        if (unit_len > 0)
            memcpy(w, unit, unit_len);
        w += unit_len;
    }
    *len = (size_t)(w - buf);
    return buf;
}

/* A million empty Nodes in a repeated field (2 MB; 24 x that to unpack, measured) is answered
 * with an error and not unpacked; Nodes that carry a value are served. (Before, unpacked:
 * ~50 MB for this request, 400 MB for one of 16 MiB.) */
static void test_costly_request_refused(void **state)
{
    (void)state;
    arpc_server *s;
    arpc_client *c;
    assert_int_equal(arpc_server_create(&s, NULL), ARPC_OK);
    assert_int_equal(arpc_server_register_protobuf(s, &tree_service.base, NULL), ARPC_OK);
    assert_int_equal(arpc_server_listen(s, "inproc://pb-costly", NULL, 0), ARPC_OK);
    assert_int_equal(arpc_client_connect(&c, "inproc://pb-costly", NULL), ARPC_OK);
    size_t len;
    uint8_t *req = forest(1000000, NULL, 0, &len);
    void *reply = NULL;
    size_t reply_len = 0;
    int runs = atomic_load(&depth_runs);
    assert_int_equal(arpc_call(c, "tree.Tree.Count", req, len, &reply, &reply_len, WAIT_MS), ARPC_EHANDLER);
    free(req);
    assert_string_equal(reply, "tree.Tree.Count: the request would take more than 16 x its size of memory to unpack");
    arpc_free(reply);
    assert_int_equal(atomic_load(&depth_runs), runs);
    static const uint8_t valued[] = {0x10, 0x96, 0x01}; /* value 150 */
    req = forest(100000, valued, sizeof(valued), &len);
    assert_int_equal(arpc_call(c, "tree.Tree.Count", req, len, &reply, &reply_len, WAIT_MS), ARPC_OK);
    free(req);
    Tree__Node *n = tree__node__unpack(NULL, reply_len, reply);
    assert_non_null(n);
    assert_int_equal(n->value, 100000);
    tree__node__free_unpacked(n, NULL);
    arpc_free(reply);
    assert_int_equal(arpc_client_close(c), ARPC_OK);
    assert_int_equal(arpc_server_destroy(s), ARPC_OK);
}

/* A Holder whose bag comes n times, each holding one element (a Bag {xs: 0}): protobuf-c
 * merges each into the ones before, copying every element gathered so far, n^2 / 2 copies
 * (40,000 copies in 160 KB took a server's thread 15 s under ASan; helper 241). Refused before
 * unpacking, as too costly; a few copies (a concatenation of packed messages) are merged. */
static void test_merged_copies_refused(void **state)
{
    (void)state;
    arpc_server *s;
    arpc_client *c;
    assert_int_equal(arpc_server_create(&s, NULL), ARPC_OK);
    assert_int_equal(arpc_server_register_protobuf(s, &tree_service.base, NULL), ARPC_OK);
    assert_int_equal(arpc_server_listen(s, "inproc://pb-merged", NULL, 0), ARPC_OK);
    assert_int_equal(arpc_client_connect(&c, "inproc://pb-merged", NULL), ARPC_OK);
    static const uint8_t one_x[] = {0x08, 0x00}; /* Bag {xs: 0} */
    size_t len;
    uint8_t *req = forest(40000, one_x, sizeof(one_x), &len); /* field 1, length-delimited: the bag */
    int runs = atomic_load(&depth_runs), value;
    char *text;
    int64_t t0 = now_ms();
    assert_int_equal(call_for_node(c, "tree.Tree.Gather", req, len, &value, &text), ARPC_EHANDLER);
    assert_string_equal(text, "tree.Tree.Gather: the request would take more than 16 x its size of memory to unpack");
    arpc_free(text);
    assert_int_equal(atomic_load(&depth_runs), runs);
    print_message("40,000 merged copies refused in %lld ms\n", (long long)(now_ms() - t0));
    req = forest(4, one_x, sizeof(one_x), &len);
    assert_int_equal(call_for_node(c, "tree.Tree.Gather", req, len, &value, &text), ARPC_OK);
    assert_int_equal(value, 4); /* merged: the four bags' elements in one */
    /* A large bytes field before such copies is not what a merge copies: served (a first
     * version charged every byte before a copy, and refused this). */
    size_t blob_len = 100000;
    uint8_t *big = malloc(4 + blob_len + 16);
    assert_non_null(big);
    size_t at = 0;
    big[at++] = 0x12; /* field 2 (blob), length-delimited, length 100000 as a varint */
    big[at++] = (uint8_t)(0x80 | (blob_len & 0x7f));
    big[at++] = (uint8_t)(0x80 | ((blob_len >> 7) & 0x7f));
    big[at++] = (uint8_t)(blob_len >> 14);
    memset(big + at, 'b', blob_len);
    at += blob_len;
    for (int copy = 0; copy < 4; copy++) {
        big[at++] = 0x0a;
        big[at++] = sizeof(one_x);
        memcpy(big + at, one_x, sizeof(one_x));
        at += sizeof(one_x);
    }
    assert_int_equal(call_for_node(c, "tree.Tree.Gather", big, at, &value, &text), ARPC_OK);
    assert_int_equal(value, 4);
    assert_int_equal(arpc_client_close(c), ARPC_OK);
    assert_int_equal(arpc_server_destroy(s), ARPC_OK);
}

/* A server (plain arpc, no stubs) answering a million nested Nodes. */
static void deep_reply(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len;
    uint8_t *bytes = nested(1000000, &len);
    arpc_reply(req, bytes, len);
    free(bytes);
}

static void test_reply_too_deep(void **state)
{
    (void)state;
    arpc_server *s;
    arpc_client *c;
    assert_int_equal(arpc_server_create(&s, NULL), ARPC_OK);
    assert_int_equal(arpc_server_register(s, "tree.Tree.Depth", deep_reply, NULL, NULL), ARPC_OK);
    assert_int_equal(arpc_server_listen(s, "inproc://pb-deep-reply", NULL, 0), ARPC_OK);
    assert_int_equal(arpc_client_connect(&c, "inproc://pb-deep-reply", NULL), ARPC_OK);
    Tree__Node in = TREE__NODE__INIT;
    arpc_future *f = arpc_protobuf_call_async(c, &tree__tree__descriptor, 0, &in.base, WAIT_MS);
    assert_non_null(f);
    ProtobufCMessage *out = NULL;
    assert_int_equal(arpc_protobuf_unpack_reply(f, &tree__node__descriptor, &out), ARPC_EDECODE);
    assert_null(out);
    arpc_future_release(f);
    assert_int_equal(arpc_client_close(c), ARPC_OK);
    assert_int_equal(arpc_server_destroy(s), ARPC_OK);
}

/* The walk descends only into message fields: deep-looking bytes in a bytes field or an
 * unknown field are skipped whole, and malformed bytes are left for protobuf-c to refuse. */
static void test_walk_follows_message_fields_only(void **state)
{
    (void)state;
    size_t len;
    uint8_t *deep = nested(1000, &len);
    assert_false(protobuf_depth_ok(&tree__node__descriptor, deep, len, ARPC_PROTOBUF_MAX_DEPTH));
    assert_true(protobuf_depth_ok(&tree__node__descriptor, deep, len, 1000));
    assert_false(protobuf_depth_ok(&tree__node__descriptor, deep, len, 999));
    deep[0] = 0x1a; /* field 3: unknown to Node, length-delimited: skipped whole */
    assert_true(protobuf_depth_ok(&tree__node__descriptor, deep, len, 2));
    free(deep);
    static const uint8_t cut[] = {0x0a, 0x05, 0x0a}; /* a length past the end */
    assert_true(protobuf_depth_ok(&tree__node__descriptor, cut, sizeof(cut), 2));
    static const uint8_t scalars[] = {0x10, 0x96, 0x01, 0x0a, 0x00}; /* value 150, an empty child */
    assert_true(protobuf_depth_ok(&tree__node__descriptor, scalars, sizeof(scalars), 2));
    assert_false(protobuf_depth_ok(&tree__node__descriptor, scalars, sizeof(scalars), 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_walk_follows_message_fields_only),
        cmocka_unit_test(test_depth_limit_served),
        cmocka_unit_test(test_reply_too_deep),
        cmocka_unit_test(test_costly_request_refused),
        cmocka_unit_test(test_merged_copies_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
