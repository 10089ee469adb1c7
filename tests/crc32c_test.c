/* CRC32C: known vectors, chaining, and the table and instruction paths against a bit-at-a-time
 * reference on random buffers and on every short length and alignment. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/crc32c.h"
#include "support/test_util.h"

/* The definition, one bit at a time: slow, obviously right. */
static uint32_t crc_bitwise(uint32_t crc, const uint8_t *p, size_t n)
{
    uint32_t c = ~crc;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int bit = 0; bit < 8; bit++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
    }
    return ~c;
}

static void test_known_vectors(void **state)
{
    (void)state;
    static const uint8_t zeros[32];
    assert_int_equal(0xE3069283u, arpc_crc32c(0, "123456789", 9));
    assert_int_equal(0x8A9136AAu, arpc_crc32c(0, zeros, sizeof(zeros)));
    assert_int_equal(0xE3069283u, arpc_crc32c_portable(0, "123456789", 9));
    assert_int_equal(0x8A9136AAu, arpc_crc32c_portable(0, zeros, sizeof(zeros)));
    assert_int_equal(0xE3069283u, arpc_crc32c_hw(0, "123456789", 9));
    assert_int_equal(0x8A9136AAu, arpc_crc32c_hw(0, zeros, sizeof(zeros)));
    assert_int_equal(0, arpc_crc32c(0, NULL, 0));
    print_message("crc32c instruction: %s\n", arpc_crc32c_hw_available() ? "used" : "not available");
}

static void test_chaining(void **state)
{
    (void)state;
    const char *s = "123456789";
    for (size_t cut = 0; cut <= 9; cut++) {
        uint32_t c = arpc_crc32c(0, s, cut);
        assert_int_equal(0xE3069283u, arpc_crc32c(c, s + cut, 9 - cut));
        c = arpc_crc32c_portable(0, s, cut);
        assert_int_equal(0xE3069283u, arpc_crc32c_portable(c, s + cut, 9 - cut));
    }
}

/* Every length 0..64 at every alignment 0..7, and a non-zero starting crc. */
static void test_short_lengths_every_alignment(void **state)
{
    (void)state;
    uint8_t buf[64 + 8 + 8];
    uint64_t seed = 42;
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)rng_next(&seed);
    for (size_t align = 0; align < 8; align++)
        for (size_t len = 0; len <= 64; len++)
            for (uint32_t start = 0; start < 2; start++) {
                uint32_t init = start ? 0xDEADBEEFu : 0;
                uint32_t want = crc_bitwise(init, buf + align, len);
                assert_int_equal(want, arpc_crc32c_portable(init, buf + align, len));
                assert_int_equal(want, arpc_crc32c_hw(init, buf + align, len));
                assert_int_equal(want, arpc_crc32c(init, buf + align, len));
            }
}

static void test_random_buffers(void **state)
{
    (void)state;
    enum { MAX = 70000, ROUNDS = 200 };
    uint8_t *buf = malloc(MAX);
    uint64_t seed = 7;
    for (size_t i = 0; i < MAX; i++)
        buf[i] = (uint8_t)rng_next(&seed);
    for (int r = 0; r < ROUNDS; r++) {
        size_t off = rng_next(&seed) % 64;
        size_t len = rng_next(&seed) % (MAX - 64);
        uint32_t want = arpc_crc32c_portable(0, buf + off, len);
        assert_int_equal(want, arpc_crc32c_hw(0, buf + off, len));
        if (r < 10)
            assert_int_equal(want, crc_bitwise(0, buf + off, len));
        /* Split anywhere: chaining gives the same answer on both paths. */
        size_t cut = len ? rng_next(&seed) % len : 0;
        assert_int_equal(want, arpc_crc32c_hw(arpc_crc32c_portable(0, buf + off, cut), buf + off + cut,
                                              len - cut));
    }
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_vectors),
        cmocka_unit_test(test_chaining),
        cmocka_unit_test(test_short_lengths_every_alignment),
        cmocka_unit_test(test_random_buffers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
