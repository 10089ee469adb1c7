/*
 * base/utf8.h against a decoder written from the definition (code point from the bits, then
 * the ranges RFC 3629 allows), over every sequence of up to three bytes and a sweep of four;
 * and the encoder, every code point read back by that decoder.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/utf8.h"

/* What arpc_utf8_multibyte_len must say of p (NUL-terminated). */
static size_t reference_len(const unsigned char *p)
{
    size_t n = p[0] >= 0xf0 && p[0] < 0xf8 ? 4 : p[0] >= 0xe0 && p[0] < 0xf0 ? 3 : p[0] >= 0xc0 && p[0] < 0xe0 ? 2 : 0;
    if (n == 0)
        return 0;
    uint32_t cp = p[0] & (0x7f >> n);
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    static const uint32_t least[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < least[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

static void test_every_three_bytes(void **state)
{
    (void)state;
    unsigned char s[5] = {0};
    for (unsigned a = 0x80; a < 0x100; a++)
        for (unsigned b = 0; b < 0x100; b++)
            for (unsigned c = 0; c < 0x100; c++) {
                s[0] = (unsigned char)a, s[1] = (unsigned char)b, s[2] = (unsigned char)c, s[3] = 0x80;
                size_t want = reference_len(s), got = arpc_utf8_multibyte_len(s);
                if (want != got)
                    fail_msg("%02x %02x %02x 80: %zu, not %zu", a, b, c, got, want);
            }
}

static void test_four_bytes(void **state)
{
    (void)state;
    unsigned char s[5] = {0};
    for (unsigned a = 0xf0; a < 0x100; a++)
        for (unsigned b = 0; b < 0x100; b++)
            for (unsigned d = 0; d < 0x100; d++) {
                s[0] = (unsigned char)a, s[1] = (unsigned char)b, s[2] = 0x80, s[3] = (unsigned char)d;
                assert_int_equal(reference_len(s), arpc_utf8_multibyte_len(s));
            }
}

static void test_named_cases(void **state)
{
    (void)state;
    assert_int_equal(2, arpc_utf8_multibyte_len((const unsigned char *)"\xc3\xa9"));         /* é */
    assert_int_equal(3, arpc_utf8_multibyte_len((const unsigned char *)"\xe2\x82\xac"));     /* € */
    assert_int_equal(4, arpc_utf8_multibyte_len((const unsigned char *)"\xf0\x9f\x98\x80")); /* 😀 */
    assert_int_equal(0, arpc_utf8_multibyte_len((const unsigned char *)"a"));
    assert_int_equal(0, arpc_utf8_multibyte_len((const unsigned char *)"\xc0\xaf"));     /* overlong '/' */
    assert_int_equal(0, arpc_utf8_multibyte_len((const unsigned char *)"\xed\xa0\x80")); /* a surrogate */
    assert_int_equal(0, arpc_utf8_multibyte_len((const unsigned char *)"\xf4\x90\x80\x80")); /* > U+10FFFF */
    assert_int_equal(0, arpc_utf8_multibyte_len((const unsigned char *)"\xe2\x82"));     /* cut by the NUL */
    assert_int_equal(0, arpc_utf8_multibyte_len((const unsigned char *)"\xff"));
}

/* Every code point written out is read back by the reference decoder as that code point, at
 * the length its range takes (the shortest form). */
static void test_put_every_code_point(void **state)
{
    (void)state;
    for (uint32_t cp = 0; cp <= 0x10ffff; cp++) {
        if (cp >= 0xd800 && cp <= 0xdfff)
            continue;
        unsigned char s[5] = {0};
        size_t n = arpc_utf8_put(cp, s);
        size_t want = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
        if (n != want)
            fail_msg("U+%04X: %zu bytes, not %zu", (unsigned)cp, n, want);
        if (n == 1)
            continue;
        uint32_t back = s[0] & (0x7f >> n);
        for (size_t i = 1; i < n; i++)
            back = back << 6 | (s[i] & 0x3f);
        if (reference_len(s) != n || back != cp)
            fail_msg("U+%04X written as %02x %02x %02x %02x", (unsigned)cp, s[0], s[1], s[2], s[3]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_three_bytes),
        cmocka_unit_test(test_four_bytes),
        cmocka_unit_test(test_named_cases),
        cmocka_unit_test(test_put_every_code_point),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
