/*
 * CRC32C, two ways (base/crc32c.h).
 *
 * Design notes
 * - Portable: slice-by-8. table[0] is the classic byte-at-a-time table; table[k][b] is the
 *   CRC of byte b followed by k zero bytes, so eight input bytes are folded in with eight
 *   independent lookups XORed together instead of eight dependent steps. Input bytes are
 *   read one by one (no unaligned or host-order loads), so it is correct on any host.
 * - Hardware: SSE4.2's crc32 instruction computes the same polynomial, 8 bytes per
 *   instruction. Only this function is compiled for SSE4.2 (target attribute), and it is
 *   chosen at run time, so the library still runs on CPUs without it.
 * - Both keep the CRC in its inverted form internally (the standard pre- and
 *   post-conditioning), which is what makes chaining through the crc argument work.
 */
#include "base/crc32c.h"

#include <pthread.h>
#include <string.h>

#include "base/le.h"

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#define CRC32C_POLY 0x82F63B78u /* reflected Castagnoli */

static uint32_t crc_table[8][256];
static bool crc_use_hw;
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t c = b;
        for (int bit = 0; bit < 8; bit++)
            c = (c & 1) ? (c >> 1) ^ CRC32C_POLY : c >> 1;
        crc_table[0][b] = c;
    }
    /* One more zero byte after b: shift out the low byte and fold it back in. */
    for (int k = 1; k < 8; k++)
        for (uint32_t b = 0; b < 256; b++) {
            uint32_t prev = crc_table[k - 1][b];
            crc_table[k][b] = (prev >> 8) ^ crc_table[0][prev & 0xff];
        }
#if defined(__x86_64__)
    crc_use_hw = __builtin_cpu_supports("sse4.2");
#endif
}

static uint32_t crc_portable(uint32_t crc, const uint8_t *p, size_t n)
{
    uint32_t c = ~crc;
    while (n >= 8) {
        uint32_t lo = c ^ le_ld32(p);
        uint32_t hi = le_ld32(p + 4);
        c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
            crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^
            crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff] ^
            crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n-- > 0)
        c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xff];
    return ~c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc_sse42(uint32_t crc, const uint8_t *p, size_t n)
{
    uint64_t c = ~crc;
    /* Single bytes up to an 8-byte boundary, so the wide loads below are aligned. */
    while (n > 0 && ((uintptr_t)p & 7) != 0) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        n--;
    }
    while (n >= 8) {
        uint64_t word;
        memcpy(&word, p, sizeof(word)); /* x86 is little-endian: the byte order crc32 wants */
        c = _mm_crc32_u64(c, word);
        p += 8;
        n -= 8;
    }
    while (n-- > 0)
        c = _mm_crc32_u8((uint32_t)c, *p++);
    return ~(uint32_t)c;
}
#endif

uint32_t arpc_crc32c_portable(uint32_t crc, const void *p, size_t n)
{
    pthread_once(&crc_once, crc_init);
    return crc_portable(crc, p, n);
}

bool arpc_crc32c_hw_available(void)
{
    pthread_once(&crc_once, crc_init);
    return crc_use_hw;
}

uint32_t arpc_crc32c_hw(uint32_t crc, const void *p, size_t n)
{
#if defined(__x86_64__)
    if (arpc_crc32c_hw_available())
        return crc_sse42(crc, p, n);
#endif
    return arpc_crc32c_portable(crc, p, n); /* no hardware path here: never reached by callers */
}

uint32_t arpc_crc32c(uint32_t crc, const void *p, size_t n)
{
    pthread_once(&crc_once, crc_init);
#if defined(__x86_64__)
    if (crc_use_hw)
        return crc_sse42(crc, p, n);
#endif
    return crc_portable(crc, p, n);
}
