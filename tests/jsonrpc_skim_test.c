/*
 * Tests of the oversized JSON-RPC request skimmer (core/jsonrpc_skim.c): the object's end
 * found as jsonrpc_scan finds it, in every split, and the outer "id" value kept exactly; ids
 * elsewhere (nested, escaped, too long) not taken; what is refused. Each piece is copied into
 * a buffer of exactly its length, so ASan catches a read past it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arpc/error.h"
#include "core/jsonrpc_scan.h"
#include "core/jsonrpc_skim.h"

/* Skims text cut at `cut` (0: whole). Returns the bytes that were the object's (the OK
 * result), -1 for ARPC_EPROTO, -2 if still incomplete; *sk holds the id. */
static long skim_cut(const char *text, size_t cut, struct jsonrpc_skim *sk)
{
    size_t len = strlen(text), done = 0;
    jsonrpc_skim_reset(sk);
    size_t pieces[2] = {cut ? cut : len, cut ? len - cut : 0};
    for (int i = 0; i < 2; i++) {
        if (pieces[i] == 0)
            continue;
        uint8_t *exact = malloc(pieces[i]);
        memcpy(exact, text + done, pieces[i]);
        size_t used = 0;
        int rc = jsonrpc_skim(sk, exact, pieces[i], &used);
        free(exact);
        if (rc == ARPC_EPROTO)
            return -1;
        if (rc == ARPC_OK) {
            assert_int_equal(sk->sk_skipped, done + used);
            return (long)(done + used);
        }
        assert_int_equal(rc, ARPC_EAGAIN);
        assert_int_equal(used, pieces[i]);
        done += used;
    }
    return -2;
}

/* In every split: the object's length is what jsonrpc_scan says, and the id is want (NULL:
 * none kept, with state). */
static void expect_id(const char *text, const char *want, enum jsonrpc_skim_id state)
{
    struct jsonrpc_scan st;
    jsonrpc_scan_reset(&st);
    size_t obj = 0;
    assert_int_equal(jsonrpc_scan(&st, (const uint8_t *)text, strlen(text), &obj), ARPC_OK);
    for (size_t cut = 0; cut < strlen(text); cut++) {
        struct jsonrpc_skim sk;
        assert_int_equal(skim_cut(text, cut, &sk), (long)obj);
        assert_int_equal(sk.sk_id_state, state);
        if (want != NULL) {
            assert_int_equal(sk.sk_id_len, strlen(want));
            assert_memory_equal(sk.sk_id, want, strlen(want));
        }
    }
}

static void test_id_kept(void **state)
{
    (void)state;
    expect_id("{\"method\":\"KV.Put\",\"params\":[\"xxxx\"],\"id\":17}\n", "17", JSONRPC_SKIM_ID_KEPT);
    expect_id("{\"id\":\"a}\\\"[b\",\"method\":\"M.N\"}", "\"a}\\\"[b\"", JSONRPC_SKIM_ID_KEPT);
    expect_id("{ \"id\" : 5 , \"params\":[] }", "5", JSONRPC_SKIM_ID_KEPT);
    expect_id("{\"id\":null}", "null", JSONRPC_SKIM_ID_KEPT);
    expect_id("{\"id\":[1,{\"x\":\"}\"}]}", "[1,{\"x\":\"}\"}]", JSONRPC_SKIM_ID_KEPT);
    /* Twice: parsers disagree on which counts (jansson the last, others the first), so neither
     * (before, the last was kept: a front end reading the first saw another call's id). */
    expect_id("{\"id\":1,\"id\":2}", NULL, JSONRPC_SKIM_ID_TWICE);
    expect_id("{\"id\":1,\"m\":0,\"\\u0069d\":2,\"p\":[]}", NULL, JSONRPC_SKIM_ID_TWICE);
    expect_id("{\"id\":\"0123456789012345678901234567890123456789012345678901234567890123456789\",\"id\":2}", NULL,
              JSONRPC_SKIM_ID_TWICE);
    expect_id("{\"id\":1,\"p\":{\"id\":2}}", "1", JSONRPC_SKIM_ID_KEPT); /* nested: another object's */
    /* A key spelled with escapes is the key a parser reads (jansson answers by it too). */
    expect_id("{\"\\u0069d\":90,\"x\":1}", "90", JSONRPC_SKIM_ID_KEPT);
    expect_id("{\"i\\u0064\":7}", "7", JSONRPC_SKIM_ID_KEPT);
    expect_id("{\"\\u0069\\u0044\":7}", NULL, JSONRPC_SKIM_ID_NONE); /* "iD" */
    expect_id("{\"\\u0049\\u0064\":\"s\"}", NULL, JSONRPC_SKIM_ID_NONE); /* "Id" */
    expect_id("{\"\\u0069\\u0064\":\"s\"}", "\"s\"", JSONRPC_SKIM_ID_KEPT);
}

static void test_id_not_taken(void **state)
{
    (void)state;
    /* Nested ids, keys only starting or ending like it (escaped too), a string value "id". */
    expect_id("{\"params\":[{\"id\":5}],\"x\":{\"id\":6}}", NULL, JSONRPC_SKIM_ID_NONE);
    expect_id("{\"idx\":1,\"i\":2,\"xid\":3,\"m\":\"id\"}", NULL, JSONRPC_SKIM_ID_NONE);
    expect_id("{\"\\u0069dd\":7,\"i\\n\":1,\"\\\"id\":2}", NULL, JSONRPC_SKIM_ID_NONE);
    expect_id("{}", NULL, JSONRPC_SKIM_ID_NONE);
    char text[256];
    snprintf(text, sizeof(text), "{\"id\":\"%0*d\"}", JSONRPC_SKIM_ID_MAX, 0);
    expect_id(text, NULL, JSONRPC_SKIM_ID_TOO_LONG);
    snprintf(text, sizeof(text), "{\"id\":\"%0*d\"}", JSONRPC_SKIM_ID_MAX - 2, 0); /* exactly the max */
    expect_id(text, NULL, JSONRPC_SKIM_ID_KEPT);
    /* Spaces after it do not count toward the bound; between tokens they stay (one each). */
    snprintf(text, sizeof(text), "{\"id\":\"%0*d\"    \n }", JSONRPC_SKIM_ID_MAX - 2, 0);
    expect_id(text, NULL, JSONRPC_SKIM_ID_KEPT);
    expect_id("{\"id\": 1 \t 2 ,\"x\":0}", "1   2", JSONRPC_SKIM_ID_KEPT);
    expect_id("{\"id\":[ 1 , 2 ] }", "[ 1 , 2 ]", JSONRPC_SKIM_ID_KEPT);
}

static void test_refused_and_incomplete(void **state)
{
    (void)state;
    struct jsonrpc_skim sk;
    assert_int_equal(skim_cut("[1]", 0, &sk), -1);
    assert_int_equal(skim_cut("\"id\"", 0, &sk), -1);
    assert_int_equal(skim_cut("{\"id\":1", 0, &sk), -2);
    assert_int_equal(skim_cut("{\"a\":\"}", 3, &sk), -2);
    char *deep = malloc(JSONRPC_SCAN_MAX_DEPTH + 2);
    deep[0] = '{';
    memset(deep + 1, '[', JSONRPC_SCAN_MAX_DEPTH);
    deep[JSONRPC_SCAN_MAX_DEPTH] = '\0';
    assert_int_equal(skim_cut(deep, 0, &sk), -2);
    deep[JSONRPC_SCAN_MAX_DEPTH] = '[';
    deep[JSONRPC_SCAN_MAX_DEPTH + 1] = '\0';
    assert_int_equal(skim_cut(deep, 0, &sk), -1);
    free(deep);
}

/* Byte by byte, as a slow sender would have it skimmed. */
static void test_byte_by_byte(void **state)
{
    (void)state;
    const char *text = "{\"params\":[\"}{\"],\"id\":\"q\"}{\"next\":1}";
    struct jsonrpc_skim sk;
    jsonrpc_skim_reset(&sk);
    size_t i = 0, used = 0;
    int rc = ARPC_EAGAIN;
    for (; rc == ARPC_EAGAIN; i++)
        rc = jsonrpc_skim(&sk, (const uint8_t *)text + i, 1, &used);
    assert_int_equal(rc, ARPC_OK);
    assert_int_equal(used, 1);
    assert_int_equal(i, strlen("{\"params\":[\"}{\"],\"id\":\"q\"}"));
    assert_int_equal(sk.sk_id_state, JSONRPC_SKIM_ID_KEPT);
    assert_int_equal(sk.sk_id_len, 3);
    assert_memory_equal(sk.sk_id, "\"q\"", 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_id_kept),
        cmocka_unit_test(test_id_not_taken),
        cmocka_unit_test(test_refused_and_incomplete),
        cmocka_unit_test(test_byte_by_byte),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
