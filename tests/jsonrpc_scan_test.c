/*
 * Tests of the JSON-RPC stream framer (core/jsonrpc_scan.c): objects found whole, byte by byte
 * and in every two-piece split; brackets and quotes inside strings and escapes; several objects
 * in one buffer; what is refused. Each input is copied into a buffer of exactly its length, so
 * ASan catches a read past it.
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

/* Scans text fed in pieces of `step` bytes (0: whole); returns the object length found, or
 * -1 for ARPC_EPROTO, -2 if it is still incomplete at the end. */
static long scan_in_steps(const char *text, size_t step)
{
    size_t len = strlen(text);
    struct jsonrpc_scan st;
    jsonrpc_scan_reset(&st);
    for (size_t have = step ? step : len;; have += step ? step : len) {
        if (have > len)
            have = len;
        uint8_t *exact = malloc(have ? have : 1);
        memcpy(exact, text, have);
        size_t obj = 0;
        int rc = jsonrpc_scan(&st, exact, have, &obj);
        free(exact);
        if (rc == ARPC_OK)
            return (long)obj;
        if (rc == ARPC_EPROTO)
            return -1;
        assert_int_equal(rc, ARPC_EAGAIN);
        if (have == len)
            return -2;
    }
}

static void expect_everywhere(const char *text, long want)
{
    assert_int_equal(scan_in_steps(text, 0), want);
    assert_int_equal(scan_in_steps(text, 1), want);
    assert_int_equal(scan_in_steps(text, 3), want);
}

static void test_whole_objects(void **state)
{
    (void)state;
    expect_everywhere("{}", 2);
    const char *req = "{\"method\":\"A.B\",\"params\":[{\"k\":[1,{}]}],\"id\":1}";
    expect_everywhere(req, (long)strlen(req));
    /* Brackets, quotes and backslashes inside strings do not count. */
    expect_everywhere("{\"a\":\"}]\\\"{[\\\\\"}", 16);
    expect_everywhere("{\"a\":\"\\\\\"}", 10);
    expect_everywhere("{\"a\":\"\\u007d\"}", 14);
}

static void test_first_of_several(void **state)
{
    (void)state;
    expect_everywhere("{\"id\":1}\n{\"id\":2}\n", 8);
    expect_everywhere("{}{}", 2);
}

static void test_incomplete(void **state)
{
    (void)state;
    expect_everywhere("{", -2);
    expect_everywhere("{\"a\":\"}", -2);
    expect_everywhere("{\"a\":[1,2}", -2); /* mismatched kinds are jansson's to refuse */
    expect_everywhere("{\"a\":\"\\", -2);
}

static void test_refused(void **state)
{
    (void)state;
    expect_everywhere("[1]", -1);
    expect_everywhere("\"s\"", -1);
    expect_everywhere("1", -1);
    expect_everywhere("}", -1);
    /* Too deep: refused as soon as the depth passes the bound, not when the object ends. */
    char *deep = malloc(JSONRPC_SCAN_MAX_DEPTH + 2);
    deep[0] = '{';
    memset(deep + 1, '[', JSONRPC_SCAN_MAX_DEPTH);
    deep[JSONRPC_SCAN_MAX_DEPTH] = '\0'; /* depth JSONRPC_SCAN_MAX_DEPTH: fine so far */
    assert_int_equal(scan_in_steps(deep, 0), -2);
    deep[JSONRPC_SCAN_MAX_DEPTH] = '[';
    deep[JSONRPC_SCAN_MAX_DEPTH + 1] = '\0'; /* one more */
    assert_int_equal(scan_in_steps(deep, 0), -1);
    assert_int_equal(scan_in_steps(deep, 7), -1);
    free(deep);
}

/* Every split of one request into two pieces finds the same end. */
static void test_every_split(void **state)
{
    (void)state;
    const char *text = "{\"method\":\"KV.Put\",\"params\":[{\"key\":\"}\",\"value\":\"\\\"]\"}],\"id\":\"x\"} {";
    size_t want = strlen(text) - 2;
    for (size_t cut = 1; cut < strlen(text); cut++) {
        struct jsonrpc_scan st;
        jsonrpc_scan_reset(&st);
        size_t obj = 0;
        int rc = jsonrpc_scan(&st, (const uint8_t *)text, cut, &obj);
        if (rc == ARPC_EAGAIN)
            rc = jsonrpc_scan(&st, (const uint8_t *)text, strlen(text), &obj);
        assert_int_equal(rc, ARPC_OK);
        assert_int_equal(obj, want);
    }
}

/* The memory bound (jsonrpc_next): an object cheap in bytes but costly to parse (empty
 * objects) is refused as too large, costly, whether it comes whole or a byte at a time; the
 * same bytes of numbers are taken. */
static void test_costly_refused(void **state)
{
    (void)state;
    char text[512];
    size_t n = (size_t)snprintf(text, sizeof(text), "{\"p\":[{}");
    while (n < 300)
        n += (size_t)snprintf(text + n, sizeof(text) - n, ",{}");
    n += (size_t)snprintf(text + n, sizeof(text) - n, "]}");
    /* max 512: the bound is 8 x 512 + 4096 = 8192; 100 objects cost about 25,600 */
    for (size_t step = 1; step <= n; step += n - 1) {
        struct jsonrpc_scan st;
        jsonrpc_scan_reset(&st);
        size_t start = 0, len = 0, end = 0;
        int rc = ARPC_EAGAIN;
        while (rc == ARPC_EAGAIN && end < n) {
            end = end + step < n ? end + step : n;
            rc = jsonrpc_next(&st, (const uint8_t *)text, &start, end, 512, &len);
        }
        assert_int_equal(rc, ARPC_ETOOLARGE);
        assert_true(st.js_costly);
    }
    memset(text + 6, '0', n - 8); /* {"p":[000...0]}: one number, same length */
    struct jsonrpc_scan st;
    jsonrpc_scan_reset(&st);
    size_t start = 0, len = 0;
    assert_int_equal(jsonrpc_next(&st, (const uint8_t *)text, &start, n, 512, &len), ARPC_OK);
    assert_int_equal(len, n);
}

static void test_skip_space(void **state)
{
    (void)state;
    assert_int_equal(jsonrpc_skip_space((const uint8_t *)" \t\r\n{", 5), 4);
    assert_int_equal(jsonrpc_skip_space((const uint8_t *)"\v{", 2), 0); /* not JSON whitespace */
    assert_int_equal(jsonrpc_skip_space((const uint8_t *)"", 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_objects), cmocka_unit_test(test_first_of_several),
        cmocka_unit_test(test_incomplete),    cmocka_unit_test(test_refused),
        cmocka_unit_test(test_every_split),   cmocka_unit_test(test_skip_space),
        cmocka_unit_test(test_costly_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
