/*
 * Tests of the member lookup by raw text (core/jsonrpc_member.c): a key is found as a JSON
 * parser reads it, its escapes decoded ("res\u0075lt" is "result"), and never by a key that
 * only looks like it as written. Each object is copied into a buffer of exactly its length,
 * so ASan catches a read past it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "core/jsonrpc_member.h"

/* The text of obj's member key, or NULL when it has none (a static buffer). */
static const char *member(const char *obj, const char *key)
{
    static char text[256];
    size_t len = strlen(obj), at = 0, vlen = 0;
    uint8_t *exact = malloc(len);
    memcpy(exact, obj, len);
    bool found = jsonrpc_member_text(exact, len, key, &at, &vlen);
    if (found) {
        assert_true(at + vlen <= len && vlen < sizeof(text));
        memcpy(text, exact + at, vlen);
        text[vlen] = '\0';
    }
    free(exact);
    return found ? text : NULL;
}

static void expect_member(const char *obj, const char *key, const char *want)
{
    const char *got = member(obj, key);
    if (got == NULL)
        fail_msg("%s: no member %s", obj, key);
    assert_string_equal(got, want);
}

static void test_keys_as_written(void **state)
{
    (void)state;
    expect_member("{\"id\":1,\"result\":[1, 99999999999999999999],\"error\":null}", "result",
                  "[1, 99999999999999999999]");
    expect_member(" { \"a\" : \"}\\\"\" , \"result\" : 18446744073709551615 } ", "result", "18446744073709551615");
    assert_null(member("{\"results\":1,\"resul\":2,\"x\":{\"result\":3}}", "result")); /* nested: not top-level */
    assert_null(member("{}", "result"));
}

/* The same key spelled with escapes: each is "result" to jansson, so to the lookup. (Before,
 * keys were compared as written: none of these was found.) */
static void test_escaped_keys_found(void **state)
{
    (void)state;
    expect_member("{\"id\":1,\"res\\u0075lt\":99999999999999999999}", "result", "99999999999999999999");
    expect_member("{\"\\u0072\\u0065\\u0073\\u0075\\u006C\\u0074\":7}", "result", "7");
    expect_member("{\"a\\/b\":1}", "a/b", "1");
    expect_member("{\"q\\\"\\\\\\b\\f\\n\\r\\t\":2}", "q\"\\\b\f\n\r\t", "2");
    expect_member("{\"caf\\u00e9\":3}", "caf\xc3\xa9", "3"); /* 2 bytes of UTF-8 */
    expect_member("{\"\\u20ac\":4}", "\xe2\x82\xac", "4"); /* 3 */
    expect_member("{\"\\ud83d\\ude00\":5}", "\xf0\x9f\x98\x80", "5"); /* a surrogate pair: 4 */
    expect_member("{\"\xf0\x9f\x98\x80\":6}", "\xf0\x9f\x98\x80", "6"); /* the same, raw */
}

/* Keys that only look like the one asked for, as written or decoded. */
static void test_lookalike_keys_not_found(void **state)
{
    (void)state;
    assert_null(member("{\"res\\u0075lts\":1}", "result"));
    assert_null(member("{\"res\\u0055lt\":1}", "result")); /* "resUlt" */
    assert_null(member("{\"res\\\\u0075lt\":1}", "result")); /* a backslash, then "u0075lt" */
    /* Valid JSON, though jansson refuses a key holding \u0000: never a C string's key. */
    assert_null(member("{\"result\\u0000\":1}", "result"));
    assert_null(member("{\"\\u0000\":1}", "")); /* "" is not "\u0000" */
    expect_member("{\"\\u0000\":1,\"\":2}", "", "2");
    assert_null(member("{\"\\u0172esult\":1}", "result")); /* a code unit whose low byte is 'r' */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys_as_written),
        cmocka_unit_test(test_escaped_keys_found),
        cmocka_unit_test(test_lookalike_keys_not_found),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
